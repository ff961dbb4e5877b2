/* SPDX-License-Identifier: GPL-2.0-only */
/* Stand-in for the kernel's <linux/minmax.h>: min_t() and max_t() only. */
#ifndef _VFIO_USER_JSON_SHIM_MINMAX_H
#define _VFIO_USER_JSON_SHIM_MINMAX_H

#define min_t(type, x, y) ({			\
	type __x = (x);				\
	type __y = (y);				\
	__x < __y ? __x : __y; })

#define max_t(type, x, y) ({			\
	type __x = (x);				\
	type __y = (y);				\
	__x > __y ? __x : __y; })

#endif
