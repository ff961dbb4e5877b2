// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio_user_mdev - the per-device sysfs attributes, at the top level of
 * the mdev's directory and again in the group vfio_user/ (an alias: the
 * same attributes, for definitions written before they moved up):
 *
 *   socket      write a server's socket path to attach (or re-attach),
 *               an empty line to detach; reads the attached path
 *   state       detached, connecting, ready or "broken: <reason>"
 *   timeout_ms  bound on every wait for the server, 1..600000
 *   posted_writes
 *               0 (default) or 1: writes to memory BARs go without
 *               waiting for their reply, on a device without mappable
 *               server memory; read at each attach
 *   dma_window  bytes of IOVA space, from 0, the server reaches through
 *               shared memory (0: none); a multiple of 2 MiB, <= 2^48
 *   dma_window_chunk
 *               size of each DMA region of the window, a multiple of
 *               2 MiB, at most 8 TiB
 *   dma_window_pinned
 *               pages the server's mappings of the window have pinned
 *   mmap_pages  pages of server memory the consumer's mappings hold
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/device.h>
#include <linux/overflow.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/sysfs.h>

#include "vfio_user_mdev.h"

static const char * const vfio_user_state_names[] = {
	[VFIO_USER_DETACHED]	= "detached",
	[VFIO_USER_CONNECTING]	= "connecting",
	[VFIO_USER_READY]	= "ready",
};

/* Never blocks: nothing here waits on a server with state_lock held. */
static ssize_t state_show(struct device *dev, struct device_attribute *attr,
			  char *buf)
{
	struct vfio_user_device *udev = dev_get_drvdata(dev);
	char reason[VFIO_USER_REASON_LEN];
	enum vfio_user_state state;
	bool dead = false;

	spin_lock(&udev->state_lock);
	state = udev->state;
	if (state == VFIO_USER_READY && udev->conn)
		dead = vfio_user_conn_dead(udev->conn, reason, sizeof(reason));
	spin_unlock(&udev->state_lock);

	if (dead)
		return sysfs_emit(buf, "broken: %s\n", reason);
	return sysfs_emit(buf, "%s\n", vfio_user_state_names[state]);
}
static DEVICE_ATTR_RO(state);

static ssize_t socket_show(struct device *dev, struct device_attribute *attr,
			   char *buf)
{
	struct vfio_user_device *udev = dev_get_drvdata(dev);
	char path[UNIX_PATH_MAX];

	spin_lock(&udev->state_lock);
	strscpy(path, udev->socket_path, sizeof(path));
	spin_unlock(&udev->state_lock);
	return sysfs_emit(buf, "%s\n", path);
}

/*
 * Attaching runs in the writer's context: the path resolves in its mount
 * namespace and root, and its fd table carries eventfds on a re-attach.
 */
static ssize_t socket_store(struct device *dev, struct device_attribute *attr,
			    const char *buf, size_t count)
{
	struct vfio_user_device *udev = dev_get_drvdata(dev);
	char *copy, *path;
	int ret;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	copy = kstrndup(buf, count, GFP_KERNEL);
	if (!copy)
		return -ENOMEM;
	path = strim(copy);
	if (!*path)
		ret = vfio_user_detach(udev, false);
	else if (strlen(path) >= UNIX_PATH_MAX)
		ret = -ENAMETOOLONG;
	else
		ret = vfio_user_attach(udev, path);
	kfree(copy);
	return ret ? ret : count;
}
static DEVICE_ATTR_RW(socket);

static ssize_t timeout_ms_show(struct device *dev,
			       struct device_attribute *attr, char *buf)
{
	struct vfio_user_device *udev = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%u\n", READ_ONCE(udev->timeout_ms));
}

/* Takes effect at the next attach. */
static ssize_t timeout_ms_store(struct device *dev,
				struct device_attribute *attr,
				const char *buf, size_t count)
{
	struct vfio_user_device *udev = dev_get_drvdata(dev);
	unsigned int val;
	int ret;

	/* As for socket: only the admin decides how long we wait. */
	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	ret = kstrtouint(buf, 0, &val);
	if (ret)
		return ret;
	if (!val || val > VFIO_USER_MAX_TIMEOUT_MS)
		return -EINVAL;
	spin_lock(&udev->state_lock);
	udev->timeout_ms = val;
	spin_unlock(&udev->state_lock);
	return count;
}
static DEVICE_ATTR_RW(timeout_ms);

static ssize_t posted_writes_show(struct device *dev,
				  struct device_attribute *attr, char *buf)
{
	struct vfio_user_device *udev = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%d\n", READ_ONCE(udev->posted_writes));
}

/* Takes effect at the next attach, which finds the BARs it may post. */
static ssize_t posted_writes_store(struct device *dev,
				   struct device_attribute *attr,
				   const char *buf, size_t count)
{
	struct vfio_user_device *udev = dev_get_drvdata(dev);
	bool val;
	int ret;

	/* A posted write's errors are lost: the admin's choice. */
	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	ret = kstrtobool(buf, &val);
	if (ret)
		return ret;
	spin_lock(&udev->state_lock);
	WRITE_ONCE(udev->posted_writes, val);
	spin_unlock(&udev->state_lock);
	return count;
}
static DEVICE_ATTR_RW(posted_writes);

/* A byte count, with an optional K, M, G, T or P suffix; no overflow. */
static int vfio_user_parse_size(const char *buf, u64 *val)
{
	size_t len = strcspn(buf, "\n");
	unsigned int shift = 0;
	char num[24];
	int ret;

	if (!len || len >= sizeof(num))
		return -EINVAL;
	memcpy(num, buf, len);
	num[len] = '\0';
	switch (num[len - 1]) {
	case 'K': case 'k':
		shift = 10;
		break;
	case 'M': case 'm':
		shift = 20;
		break;
	case 'G': case 'g':
		shift = 30;
		break;
	case 'T': case 't':
		shift = 40;
		break;
	case 'P': case 'p':
		shift = 50;
		break;
	}
	if (shift)
		num[len - 1] = '\0';
	ret = kstrtoull(num, 0, val);
	if (ret)
		return ret;
	if (check_shl_overflow(*val, shift, val))
		return -EINVAL;
	return 0;
}

/* Both take effect at the next attach, as timeout_ms does. */
static ssize_t vfio_user_window_store(struct device *dev, const char *buf,
				      size_t count, bool chunk)
{
	struct vfio_user_device *udev = dev_get_drvdata(dev);
	u64 val;
	int ret;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	ret = vfio_user_parse_size(buf, &val);
	if (ret)
		return -EINVAL;
	if (!IS_ALIGNED(val, VFIO_USER_DMA_WINDOW_ALIGN))
		return -EINVAL;
	if (chunk ? !val || val > VFIO_USER_DMA_CHUNK : val > VFIO_USER_DMA_SPACE)
		return -EINVAL;
	spin_lock(&udev->state_lock);
	if (chunk)
		udev->dma_window_chunk = val;
	else
		udev->dma_window = val;
	spin_unlock(&udev->state_lock);
	return count;
}

static ssize_t vfio_user_window_show(struct device *dev, char *buf,
				     bool chunk)
{
	struct vfio_user_device *udev = dev_get_drvdata(dev);
	u64 val;

	spin_lock(&udev->state_lock);
	val = chunk ? udev->dma_window_chunk : udev->dma_window;
	spin_unlock(&udev->state_lock);
	return sysfs_emit(buf, "%llu\n", val);
}

static ssize_t dma_window_show(struct device *dev,
			       struct device_attribute *attr, char *buf)
{
	return vfio_user_window_show(dev, buf, false);
}

static ssize_t dma_window_store(struct device *dev,
				struct device_attribute *attr,
				const char *buf, size_t count)
{
	return vfio_user_window_store(dev, buf, count, false);
}
static DEVICE_ATTR_RW(dma_window);

static ssize_t dma_window_chunk_show(struct device *dev,
				     struct device_attribute *attr, char *buf)
{
	return vfio_user_window_show(dev, buf, true);
}

static ssize_t dma_window_chunk_store(struct device *dev,
				      struct device_attribute *attr,
				      const char *buf, size_t count)
{
	return vfio_user_window_store(dev, buf, count, true);
}
static DEVICE_ATTR_RW(dma_window_chunk);

static ssize_t dma_window_pinned_show(struct device *dev,
				      struct device_attribute *attr, char *buf)
{
	struct vfio_user_device *udev = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%lu\n", vfio_user_window_pinned(udev));
}
static DEVICE_ATTR_RO(dma_window_pinned);

static ssize_t mmap_pages_show(struct device *dev,
			       struct device_attribute *attr, char *buf)
{
	struct vfio_user_device *udev = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%lu\n", vfio_user_mmap_pages(udev));
}
static DEVICE_ATTR_RO(mmap_pages);

static struct attribute *vfio_user_dev_attrs[] = {
	&dev_attr_state.attr,
	&dev_attr_socket.attr,
	&dev_attr_timeout_ms.attr,
	&dev_attr_posted_writes.attr,
	&dev_attr_dma_window.attr,
	&dev_attr_dma_window_chunk.attr,
	&dev_attr_dma_window_pinned.attr,
	&dev_attr_mmap_pages.attr,
	NULL,
};

/*
 * Top level, where mdevctl and libvirt look for an mdev's attributes (a
 * name of theirs is a path below /sys/bus/mdev/devices/UUID); none of
 * the names is one of the mdev core's (remove, mdev_type, iommu_group,
 * driver, subsystem, power, uevent, vfio-dev).
 */
static const struct attribute_group vfio_user_dev_top_group = {
	.attrs = vfio_user_dev_attrs,
};

/* The same files under vfio_user/, as mdevctl definitions name them. */
static const struct attribute_group vfio_user_dev_alias_group = {
	.name = VFIO_USER_NAME,
	.attrs = vfio_user_dev_attrs,
};

/*
 * Created by probe and removed by remove itself, after it has aborted an
 * attach in progress: removing a group waits for a socket write to
 * return, through either name, which an aborted attach does at once.
 * Not the driver's dev_groups: the driver core removes those before it
 * calls remove, so a removal would wait for the attach instead.
 */
const struct attribute_group *vfio_user_dev_groups[] = {
	&vfio_user_dev_top_group,
	&vfio_user_dev_alias_group,
	NULL,
};
