/* SPDX-License-Identifier: GPL-2.0-only */
/* Stand-in for the kernel's <linux/errno.h>: the uapi numbers are the same. */
#ifndef _VFIO_USER_JSON_SHIM_ERRNO_H
#define _VFIO_USER_JSON_SHIM_ERRNO_H

#include_next <linux/errno.h>

#endif
