/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * vfio_user_mdev - VFIO mediated devices backed by vfio-user servers.
 *
 * Shared definitions of the module's objects.
 */
#ifndef _VFIO_USER_MDEV_H
#define _VFIO_USER_MDEV_H

#include <linux/mdev.h>
#include <linux/mutex.h>
#include <linux/vfio.h>

#define VFIO_USER_NAME			"vfio_user"
#define VFIO_USER_TYPE_PCI		"pci"

/**
 * enum vfio_user_state - connection state of one mdev
 * @VFIO_USER_DETACHED: no server; consumer calls fail with -ENOTCONN
 * @VFIO_USER_CONNECTING: an attach is negotiating with a server
 * @VFIO_USER_READY: attached; consumer calls are forwarded
 * @VFIO_USER_BROKEN: the server died, timed out or violated the protocol;
 *	consumer calls fail with -EIO until a re-attach
 */
enum vfio_user_state {
	VFIO_USER_DETACHED,
	VFIO_USER_CONNECTING,
	VFIO_USER_READY,
	VFIO_USER_BROKEN,
};

#define VFIO_USER_REASON_LEN		64

/**
 * struct vfio_user_device - one mediated device
 * @vdev: the VFIO device; its refcount owns this struct
 *	(vfio_alloc_device() in probe, freed by the core after .release)
 * @mdev: the mdev this device is bound to
 * @lock: protects @state and @reason
 * @state: &enum vfio_user_state
 * @reason: why the device is broken, shown in sysfs
 *
 * Allocated in vfio_user_probe(), unregistered in vfio_user_remove(); the
 * memory goes away with the last vfio_put_device().
 */
struct vfio_user_device {
	struct vfio_device vdev;
	struct mdev_device *mdev;

	struct mutex lock;		/* state, reason */
	enum vfio_user_state state;
	char reason[VFIO_USER_REASON_LEN];
};

static inline struct vfio_user_device *
to_vfio_user_device(struct vfio_device *vdev)
{
	return container_of(vdev, struct vfio_user_device, vdev);
}

/* device.c */
extern const struct vfio_device_ops vfio_user_dev_ops;

/* sysfs.c */
extern const struct attribute_group *vfio_user_dev_groups[];

#endif /* _VFIO_USER_MDEV_H */
