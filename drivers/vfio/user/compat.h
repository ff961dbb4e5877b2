/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Kernel-version shims for vfio_user_mdev.
 *
 * One source tree builds for Debian's 6.1, 6.12 and 7.3 kernels. Every
 * LINUX_VERSION_CODE test of the module lives in this file.
 */
#ifndef _VFIO_USER_COMPAT_H
#define _VFIO_USER_COMPAT_H

#include <linux/version.h>
#include <linux/vfio.h>

/*
 * iommufd: the emulated-IOMMU helpers exist since 6.2. Without
 * CONFIG_IOMMUFD, <linux/vfio.h> defines them as NULL function pointers,
 * so the initialisers below are valid either way.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
#define VFIO_USER_IOMMUFD_OPS					\
	.bind_iommufd	= vfio_iommufd_emulated_bind,		\
	.unbind_iommufd	= vfio_iommufd_emulated_unbind,		\
	.attach_ioas	= vfio_iommufd_emulated_attach_ioas,	\
	.detach_ioas	= vfio_iommufd_emulated_detach_ioas,
#else
#define VFIO_USER_IOMMUFD_OPS
#endif

#endif /* _VFIO_USER_COMPAT_H */
