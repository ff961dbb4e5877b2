// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libvfio-user-server: helpers every other file uses (layer 0): the
 * message callback, opts structs, range checks, CRC-32. Calls nothing else
 * of the library.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>

#include "vus-internal.h"

static vus_print_fn_t vus_print;

vus_print_fn_t vus_set_print(vus_print_fn_t fn)
{
	vus_print_fn_t old = vus_print;

	vus_print = fn;
	return old;
}

void vus_pr(enum vus_print_level level, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	if (!vus_print)
		return;
	va_start(ap, fmt);
	vus_print(level, fmt, ap);
	va_end(ap);
	errno = saved;
}

int vus_opts_copy(void *dst, size_t dst_sz, size_t known_end, const void *src)
{
	size_t src_sz, i;

	memset(dst, 0, dst_sz);
	if (!src)
		return 0;
	src_sz = *(const size_t *)src;
	if (src_sz < sizeof(size_t))
		return -EINVAL;
	for (i = known_end; i < src_sz; i++)
		if (((const uint8_t *)src)[i])
			return -EINVAL;
	memcpy(dst, src, VUS_MIN(src_sz, known_end));
	*(size_t *)dst = dst_sz;
	return 0;
}

bool vus_range_ok(uint64_t off, uint64_t count, uint64_t size)
{
	return off <= size && count <= size - off;
}

/* CRC-32 (IEEE 802.3, reflected, polynomial 0xedb88320), as zlib's crc32() */
static uint32_t vus_crc_table[256];
static pthread_once_t vus_crc_once = PTHREAD_ONCE_INIT;

static void vus_crc_init(void)
{
	uint32_t i, k, c;

	for (i = 0; i < 256; i++) {
		c = i;
		for (k = 0; k < 8; k++)
			c = c & 1 ? 0xedb88320U ^ (c >> 1) : c >> 1;
		vus_crc_table[i] = c;
	}
}

/* Continue CRC @crc (0 to start) over @len bytes of @buf. */
uint32_t vus_crc32(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	pthread_once(&vus_crc_once, vus_crc_init);
	crc = ~crc;
	while (len--)
		crc = vus_crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}
