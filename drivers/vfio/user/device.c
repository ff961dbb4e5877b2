// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio_user_mdev - the VFIO device operations of one mdev.
 *
 * Until a server is attached (sysfs vfio_user/socket) the device cannot be
 * opened: open_device fails at once with -ENOTCONN, so a consumer never
 * blocks on a device that has nobody behind it.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/device.h>
#include <linux/mdev.h>
#include <linux/module.h>
#include <linux/vfio.h>

#include "compat.h"
#include "vfio_user_mdev.h"

/**
 * vfio_user_init_dev() - vfio_device_ops.init: set up a new device
 * @vdev: the VFIO device, allocated by vfio_alloc_device()
 *
 * Context: process context, from vfio_alloc_device(). May sleep.
 * Return: 0.
 */
static int vfio_user_init_dev(struct vfio_device *vdev)
{
	struct vfio_user_device *udev = to_vfio_user_device(vdev);

	mutex_init(&udev->lock);
	udev->state = VFIO_USER_DETACHED;
	return 0;
}

/**
 * vfio_user_release_dev() - vfio_device_ops.release: undo init
 * @vdev: the VFIO device; its last reference is being dropped
 *
 * Context: process context. May sleep.
 */
static void vfio_user_release_dev(struct vfio_device *vdev)
{
	struct vfio_user_device *udev = to_vfio_user_device(vdev);

	mutex_destroy(&udev->lock);
}

/**
 * vfio_user_open_device() - vfio_device_ops.open_device
 * @vdev: the VFIO device
 *
 * Context: process context, the VFIO core's dev_set lock held. Never waits
 * on a server.
 * Return: 0 when a server is attached; -ENOTCONN when none is attached;
 * -EIO when the attached server broke the connection.
 */
static int vfio_user_open_device(struct vfio_device *vdev)
{
	struct vfio_user_device *udev = to_vfio_user_device(vdev);
	int ret;

	mutex_lock(&udev->lock);
	switch (udev->state) {
	case VFIO_USER_READY:
		ret = 0;
		break;
	case VFIO_USER_BROKEN:
		ret = -EIO;
		break;
	default:
		ret = -ENOTCONN;
		break;
	}
	mutex_unlock(&udev->lock);

	if (ret)
		dev_dbg(&udev->mdev->dev, "open refused: no server attached (%d)\n",
			ret);
	return ret;
}

/**
 * vfio_user_close_device() - vfio_device_ops.close_device
 * @vdev: the VFIO device
 *
 * Context: process context, the VFIO core's dev_set lock held.
 */
static void vfio_user_close_device(struct vfio_device *vdev)
{
}

/**
 * vfio_user_dma_unmap() - vfio_device_ops.dma_unmap
 * @vdev: the VFIO device
 * @iova: start of the range the consumer unmapped
 * @length: length of the range
 *
 * Context: process context, called by vfio_iommu_type1 with its lock held.
 * Never waits on the server.
 */
static void vfio_user_dma_unmap(struct vfio_device *vdev, u64 iova, u64 length)
{
}

const struct vfio_device_ops vfio_user_dev_ops = {
	.name		= "vfio-user-mdev",
	.init		= vfio_user_init_dev,
	.release	= vfio_user_release_dev,
	.open_device	= vfio_user_open_device,
	.close_device	= vfio_user_close_device,
	.dma_unmap	= vfio_user_dma_unmap,
	VFIO_USER_IOMMUFD_OPS
};
