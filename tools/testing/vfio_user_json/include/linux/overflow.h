/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Stand-in for the kernel's <linux/overflow.h>: the checked arithmetic as
 * 6.1 to 7.3 define it, the compiler's builtins behind a result that must
 * be used.
 */
#ifndef _VFIO_USER_JSON_SHIM_OVERFLOW_H
#define _VFIO_USER_JSON_SHIM_OVERFLOW_H

#include <stdbool.h>

static inline bool __attribute__((warn_unused_result))
__must_check_overflow(bool overflow)
{
	return __builtin_expect(overflow, 0);
}

#define check_add_overflow(a, b, d) \
	__must_check_overflow(__builtin_add_overflow(a, b, d))
#define check_sub_overflow(a, b, d) \
	__must_check_overflow(__builtin_sub_overflow(a, b, d))
#define check_mul_overflow(a, b, d) \
	__must_check_overflow(__builtin_mul_overflow(a, b, d))

#endif
