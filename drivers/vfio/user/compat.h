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
#include <linux/eventfd.h>
#include <linux/mm.h>
#include <linux/net.h>
#include <linux/socket.h>
#include <linux/un.h>
#include <linux/vfio.h>

/*
 * iommufd: the emulated-IOMMU helpers exist since 6.2. Without
 * CONFIG_IOMMUFD, <linux/vfio.h> defines them as NULL function pointers,
 * so the initialisers below are valid either way.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0) && IS_ENABLED(CONFIG_IOMMUFD)
/* device.c's wrappers note the backend for window.c */
#define VFIO_USER_IOMMUFD_OPS					\
	.bind_iommufd	= vfio_user_bind_iommufd,		\
	.unbind_iommufd	= vfio_user_unbind_iommufd,		\
	.attach_ioas	= vfio_iommufd_emulated_attach_ioas,	\
	.detach_ioas	= vfio_iommufd_emulated_detach_ioas,
#define VFIO_USER_HAVE_IOMMUFD	1
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
#define VFIO_USER_IOMMUFD_OPS					\
	.bind_iommufd	= vfio_iommufd_emulated_bind,		\
	.unbind_iommufd	= vfio_iommufd_emulated_unbind,		\
	.attach_ioas	= vfio_iommufd_emulated_attach_ioas,	\
	.detach_ioas	= vfio_iommufd_emulated_detach_ioas,
#else
#define VFIO_USER_IOMMUFD_OPS
#endif

/*
 * Since 6.19 the VFIO core answers VFIO_DEVICE_GET_REGION_INFO itself and
 * asks the driver through get_region_info_caps; before, the driver's ioctl
 * does the whole job (vfio_user_ioctl_region_info()).
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 19, 0)
#define VFIO_USER_REGION_INFO_OPS				\
	.get_region_info_caps = vfio_user_get_region_info_caps,
#else
#define VFIO_USER_REGION_INFO_OPS
#endif

/* eventfd_signal() lost its count argument in 6.8. */
static inline void vfio_user_eventfd_signal(struct eventfd_ctx *ctx)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 8, 0)
	eventfd_signal(ctx);
#else
	eventfd_signal(ctx, 1);
#endif
}

/*
 * kernel_connect() takes a struct sockaddr_unsized since 6.19. Non-blocking:
 * a full listen backlog is -EAGAIN at once, never a sleep a signal breaks.
 */
static inline int vfio_user_kernel_connect(struct socket *sock,
					   struct sockaddr_un *addr, int len)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 19, 0)
	return kernel_connect(sock, (struct sockaddr_unsized *)addr, len,
			      O_NONBLOCK);
#else
	return kernel_connect(sock, (struct sockaddr *)addr, len, O_NONBLOCK);
#endif
}

/*
 * Since 6.5 a kernel sender can hand a socket pages by reference
 * (MSG_SPLICE_PAGES); before, the same send copies them.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
#define VFIO_USER_MSG_SPLICE	MSG_SPLICE_PAGES
#else
#define VFIO_USER_MSG_SPLICE	0
#endif

/*
 * A fault handler that drops the fault's lock before it returns
 * VM_FAULT_RETRY: release_fault_lock() (6.6) knows whether that is the VMA
 * lock or the mmap lock; before, a file fault holds the mmap lock.
 */
static inline void vfio_user_release_fault_lock(struct vm_fault *vmf)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 6, 0)
	release_fault_lock(vmf);
#else
	mmap_read_unlock(vmf->vma->vm_mm);
#endif
}

/* vma->vm_flags is written through vm_flags_set() since 6.3. */
static inline void vfio_user_vm_flags_set(struct vm_area_struct *vma,
					  unsigned long flags)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_set(vma, flags);
#else
	vma->vm_flags |= flags;
#endif
}

static inline void vfio_user_vm_flags_clear(struct vm_area_struct *vma,
					    unsigned long flags)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_clear(vma, flags);
#else
	vma->vm_flags &= ~flags;
#endif
}

/*
 * migration_get_data_size and VFIO_DEVICE_FEATURE_MIG_DATA_SIZE came with
 * PRE_COPY (6.2). Before, the device_feature op answers feature 9 itself:
 * QEMU asks it by number whatever the kernel.
 */
#ifdef VFIO_DEVICE_FEATURE_MIG_DATA_SIZE
#define VFIO_USER_HAVE_MIG_DATA_SIZE	1
#define VFIO_USER_MIG_FEATURE_OPS
#else
#define VFIO_USER_MIG_DATA_SIZE_FEATURE	9
#define VFIO_USER_MIG_FEATURE_OPS				\
	.device_feature = vfio_user_device_feature,
#endif

/*
 * The DMA logging ops (6.1) write the consumer's bitmap with
 * iova_bitmap_set(): exported by vfio.ko until 6.6; since 6.7 by iommufd,
 * in namespace IOMMUFD (a string since 6.13), and only when something
 * selects CONFIG_IOMMUFD_DRIVER (an IOMMU driver with dirty tracking built
 * with IOMMUFD, or a variant driver); without it the core's
 * DMA_LOGGING_REPORT cannot work, so the log is not offered.
 */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 7, 0)
#define VFIO_USER_HAVE_DIRTY_LOG	1
#elif IS_ENABLED(CONFIG_IOMMUFD_DRIVER)
#define VFIO_USER_HAVE_DIRTY_LOG	1
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 13, 0)
#define VFIO_USER_DIRTY_LOG_NS		"IOMMUFD"
#else
#define VFIO_USER_DIRTY_LOG_NS		IOMMUFD
#endif
#else
#define VFIO_USER_HAVE_DIRTY_LOG	0
#endif

/*
 * PRE_COPY (6.2): the core's FSM has PRE_COPY and PRE_COPY_P2P, and the
 * data fd's VFIO_MIG_GET_PRECOPY_INFO. 6.1's vfio_mig_get_next_state()
 * knows neither state: PRE_COPY is not offered there.
 */
#ifdef VFIO_MIG_GET_PRECOPY_INFO
#define VFIO_USER_HAVE_PRE_COPY		1
#endif

/* SO_PASSPIDFD's control message (6.5); never received before. */
#ifdef SCM_PIDFD
#define VFIO_USER_SCM_PIDFD	SCM_PIDFD
#else
#define VFIO_USER_SCM_PIDFD	0x04
#endif

/* __assign_str() of a trace event takes only the field since 6.10. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 10, 0)
#define vfio_user_assign_str(dst, src)	__assign_str(dst)
#else
#define vfio_user_assign_str(dst, src)	__assign_str(dst, src)
#endif

#endif /* _VFIO_USER_COMPAT_H */
