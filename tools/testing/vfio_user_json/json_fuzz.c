// SPDX-License-Identifier: GPL-2.0-only
/*
 * libFuzzer target for the VERSION JSON parser, drivers/vfio/user/json.c.
 * Built by `make fuzz` (clang), not run by `make check`; `make fuzz-run`
 * starts it on json_test's vectors with json.dict. libFuzzer hands each
 * input over in a heap buffer of exactly its size, so ASan sees any read
 * past the end. Beyond that, the parser's contract: 0 or one of its
 * errnos, and max_msg_fds clamped.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "caps.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vfio_user_caps caps = { .max_msg_fds = 1 };
	int ret;

	ret = vfio_user_parse_version_json((const char *)data, size, &caps);
	if (ret && ret != -EINVAL && ret != -ERANGE && ret != -E2BIG)
		abort();
	if (!ret && caps.max_msg_fds > 253)
		abort();
	return 0;
}
