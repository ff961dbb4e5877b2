/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Stand-in for the kernel's <linux/types.h>: the uapi header (__u16...)
 * plus the kernel's short names, with u64 an unsigned long long as in the
 * kernel (asm-generic/int-ll64.h).
 */
#ifndef _VFIO_USER_JSON_SHIM_TYPES_H
#define _VFIO_USER_JSON_SHIM_TYPES_H

#include_next <linux/types.h>
#include <stdbool.h>
#include <stddef.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s8 s8;
typedef __s16 s16;
typedef __s32 s32;
typedef __s64 s64;

#endif
