/* SPDX-License-Identifier: GPL-2.0-only */
/* Stand-in for the kernel's <linux/string.h>: the C library's. */
#ifndef _VFIO_USER_JSON_SHIM_STRING_H
#define _VFIO_USER_JSON_SHIM_STRING_H

#include <string.h>

#endif
