// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio_user_mdev - the per-device sysfs group vfio_user/.
 *
 * /sys/bus/mdev/devices/UUID/vfio_user/state reads detached, connecting,
 * ready or "broken: <reason>".
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/device.h>
#include <linux/sysfs.h>

#include "vfio_user_mdev.h"

static const char * const vfio_user_state_names[] = {
	[VFIO_USER_DETACHED]	= "detached",
	[VFIO_USER_CONNECTING]	= "connecting",
	[VFIO_USER_READY]	= "ready",
	[VFIO_USER_BROKEN]	= "broken",
};

static ssize_t state_show(struct device *dev, struct device_attribute *attr,
			  char *buf)
{
	struct vfio_user_device *udev = dev_get_drvdata(dev);
	ssize_t ret;

	mutex_lock(&udev->lock);
	if (udev->state == VFIO_USER_BROKEN)
		ret = sysfs_emit(buf, "%s: %s\n",
				 vfio_user_state_names[udev->state],
				 udev->reason);
	else
		ret = sysfs_emit(buf, "%s\n", vfio_user_state_names[udev->state]);
	mutex_unlock(&udev->lock);
	return ret;
}
static DEVICE_ATTR_RO(state);

static struct attribute *vfio_user_dev_attrs[] = {
	&dev_attr_state.attr,
	NULL,
};

static const struct attribute_group vfio_user_dev_group = {
	.name = VFIO_USER_NAME,
	.attrs = vfio_user_dev_attrs,
};

const struct attribute_group *vfio_user_dev_groups[] = {
	&vfio_user_dev_group,
	NULL,
};
