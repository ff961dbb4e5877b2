// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio_user_mdev - the VFIO device operations of one mdev, and attaching
 * a device to a server.
 *
 * Consumer calls take conn_sem for reading and forward to the server; the
 * device info, region info and IRQ info are fetched once at attach and
 * answered from the cache. Until a server is attached the device cannot be
 * opened (-ENOTCONN); while its connection is broken every call fails at
 * once with -EIO. A re-attach replays what the server must know (the DMA
 * window, the consumer's eventfds) without the consumer reopening anything.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/device.h>
#include <linux/eventfd.h>
#include <linux/file.h>
#include <linux/mdev.h>
#include <linux/module.h>
#include <linux/nospec.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vfio.h>

#include "compat.h"
#include "vfio_user_mdev.h"

/*
 * Consumer side: every op starts here. Returns the live connection with
 * conn_sem held for reading, or an errno with nothing held.
 */
static int vfio_user_get_conn(struct vfio_user_device *udev,
			      struct vfio_user_conn **connp)
{
	down_read(&udev->conn_sem);
	if (!udev->conn) {
		up_read(&udev->conn_sem);
		return -ENOTCONN;
	}
	if (vfio_user_conn_dead(udev->conn, NULL, 0)) {
		up_read(&udev->conn_sem);
		return -EIO;
	}
	*connp = udev->conn;
	return 0;
}

static void vfio_user_put_conn(struct vfio_user_device *udev)
{
	up_read(&udev->conn_sem);
}

/*
 * Region accesses
 */

/* Register-sized accesses, the common case, need no allocation. */
#define VFIO_USER_SMALL_ACCESS	64

/* One REGION_READ or REGION_WRITE of at most max_xfer bytes. */
static int vfio_user_region_rw_chunk(struct vfio_user_conn *conn, u32 index,
				     u64 offset, void *buf, u32 count,
				     bool write)
{
	struct vfio_user_region_access acc = {
		.offset = cpu_to_le64(offset),
		.region = cpu_to_le32(index),
		.count = cpu_to_le32(count),
	};
	u8 small[sizeof(struct vfio_user_region_access) +
		 VFIO_USER_SMALL_ACCESS] __aligned(8);
	struct vfio_user_region_access *rep = (void *)small;
	size_t max = sizeof(*rep) + (write ? 0 : count);
	u32 done;
	int ret;

	if (max > sizeof(small)) {
		rep = kvmalloc(max, GFP_KERNEL);
		if (!rep)
			return -ENOMEM;
	}
	if (write)
		ret = vfio_user_send_sync(conn, VFIO_USER_REGION_WRITE, &acc,
					  sizeof(acc), buf, count, NULL, 0,
					  rep, sizeof(*rep), max);
	else
		ret = vfio_user_send_sync(conn, VFIO_USER_REGION_READ, &acc,
					  sizeof(acc), NULL, 0, NULL, 0,
					  rep, sizeof(*rep), max);
	if (ret < 0)
		goto out;

	done = le32_to_cpu(rep->count);
	if (le64_to_cpu(rep->offset) != offset ||
	    le32_to_cpu(rep->region) != index || done > count ||
	    (!write && ret != sizeof(*rep) + done) ||
	    (write && ret != sizeof(*rep))) {
		vfio_user_conn_broken(conn,
				      "REGION_%s reply for region %u offset %#llx count %u: offset %#llx region %u count %u in %d bytes",
				      write ? "WRITE" : "READ", index, offset,
				      count, le64_to_cpu(rep->offset),
				      le32_to_cpu(rep->region), done, ret);
		ret = -EIO;
		goto out;
	}
	if (!write)
		memcpy(buf, rep->data, done);
	ret = done;
out:
	if (rep != (void *)small)
		kvfree(rep);
	return ret;
}

static ssize_t vfio_user_rw(struct vfio_user_device *udev, char __user *ubuf,
			    size_t count, loff_t *ppos, bool write)
{
	u64 pos = *ppos, offset = pos & VFIO_USER_OFFSET_MASK, end;
	u32 index = VFIO_USER_OFFSET_TO_INDEX(pos);
	u8 small[VFIO_USER_SMALL_ACCESS] __aligned(8);
	struct vfio_user_conn *conn;
	struct vfio_user_region *region;
	size_t done = 0;
	void *buf = small;
	int ret;

	if (!count)
		return 0;
	ret = vfio_user_get_conn(udev, &conn);
	if (ret)
		return ret;

	if (index >= udev->num_regions) {
		ret = -EINVAL;
		goto out_put;
	}
	index = array_index_nospec(index, udev->num_regions);
	region = &udev->regions[index];
	if (!(region->flags & (write ? VFIO_REGION_INFO_FLAG_WRITE :
					VFIO_REGION_INFO_FLAG_READ))) {
		ret = -EINVAL;
		goto out_put;
	}
	if (check_add_overflow(offset, (u64)count, &end) || end > region->size) {
		ret = -EINVAL;
		goto out_put;
	}

	if (count > sizeof(small)) {
		buf = kvmalloc(min_t(size_t, count, conn->caps.max_xfer),
			       GFP_KERNEL);
		if (!buf) {
			ret = -ENOMEM;
			goto out_put;
		}
	}
	while (done < count) {
		u32 n = min_t(size_t, count - done, conn->caps.max_xfer);

		if (write && copy_from_user(buf, ubuf + done, n)) {
			ret = -EFAULT;
			break;
		}
		ret = vfio_user_region_rw_chunk(conn, index, offset + done, buf,
						n, write);
		if (ret < 0)
			break;
		if (!write && copy_to_user(ubuf + done, buf, ret)) {
			ret = -EFAULT;
			break;
		}
		done += ret;
		if (ret < n)	/* short access: report what was done */
			break;
	}
	if (buf != small)
		kvfree(buf);
out_put:
	vfio_user_put_conn(udev);
	if (done) {
		*ppos += done;
		return done;
	}
	return ret;
}

/**
 * vfio_user_read() - vfio_device_ops.read: REGION_READ
 * @vdev: the VFIO device
 * @buf: user buffer
 * @count: bytes to read
 * @ppos: region index << 40 | offset in the region
 *
 * Split into messages of at most max_data_xfer_size; never widened.
 *
 * Context: process context; sleeps, each message bounded by timeout_ms.
 * Return: bytes read (short if the server read less), or -ENOTCONN, -EIO,
 * -EINVAL (index, flags or range), -EFAULT, -ETIMEDOUT, -EINTR, or the
 * server's errno.
 */
static ssize_t vfio_user_read(struct vfio_device *vdev, char __user *buf,
			      size_t count, loff_t *ppos)
{
	return vfio_user_rw(to_vfio_user_device(vdev), buf, count, ppos, false);
}

/**
 * vfio_user_write() - vfio_device_ops.write: REGION_WRITE
 * @vdev: the VFIO device
 * @buf: user buffer
 * @count: bytes to write
 * @ppos: region index << 40 | offset in the region
 *
 * Context: process context; sleeps, each message bounded by timeout_ms.
 * Return: bytes written, or a negative errno as vfio_user_read().
 */
static ssize_t vfio_user_write(struct vfio_device *vdev, const char __user *buf,
			       size_t count, loff_t *ppos)
{
	return vfio_user_rw(to_vfio_user_device(vdev), (char __user *)buf,
			    count, ppos, true);
}

/*
 * ioctls
 */

static long vfio_user_ioctl_device_info(struct vfio_user_device *udev,
					unsigned long arg)
{
	unsigned long minsz = offsetofend(struct vfio_device_info, num_irqs);
	struct vfio_device_info info;

	if (copy_from_user(&info, (void __user *)arg, minsz))
		return -EFAULT;
	if (info.argsz < minsz)
		return -EINVAL;
	info.flags = udev->info_flags;
	info.num_regions = udev->num_regions;
	info.num_irqs = VFIO_PCI_NUM_IRQS;
	return copy_to_user((void __user *)arg, &info, minsz) ? -EFAULT : 0;
}

/**
 * vfio_user_get_region_info_caps() - fill a region's info and capabilities
 * @vdev: the VFIO device
 * @info: in: index; out: flags, size, offset
 * @caps: capability chain to add the server's capabilities to
 *
 * The get_region_info_caps op on kernels that have it; the ioctl path
 * below otherwise.
 *
 * Context: process context.
 * Return: 0, -ENOTCONN, -EIO, -EINVAL (index) or -ENOMEM.
 */
static int vfio_user_get_region_info_caps(struct vfio_device *vdev,
					  struct vfio_region_info *info,
					  struct vfio_info_cap *caps)
{
	struct vfio_user_device *udev = to_vfio_user_device(vdev);
	struct vfio_user_conn *conn;
	struct vfio_user_region *region;
	u32 off = 0, index;
	int ret;

	ret = vfio_user_get_conn(udev, &conn);
	if (ret)
		return ret;
	if (info->index >= udev->num_regions) {
		ret = -EINVAL;
		goto out;
	}
	index = array_index_nospec(info->index, udev->num_regions);
	region = &udev->regions[index];
	info->flags = region->flags;
	info->size = region->size;
	info->offset = VFIO_USER_INDEX_TO_OFFSET(index);

	/* The chain was validated at attach: in order, in bounds. */
	while (off < region->caps_len && !ret) {
		struct vfio_info_cap_header *hdr = region->caps + off;
		u32 next = hdr->next ? hdr->next : region->caps_len;

		ret = vfio_info_add_capability(caps, hdr, next - off);
		off = next;
	}
out:
	vfio_user_put_conn(udev);
	return ret;
}

static long vfio_user_ioctl_region_info(struct vfio_user_device *udev,
					unsigned long arg)
{
	unsigned long minsz = offsetofend(struct vfio_region_info, offset);
	struct vfio_info_cap caps = { .buf = NULL, .size = 0 };
	struct vfio_region_info info;
	int ret;

	if (copy_from_user(&info, (void __user *)arg, minsz))
		return -EFAULT;
	if (info.argsz < minsz)
		return -EINVAL;
	ret = vfio_user_get_region_info_caps(&udev->vdev, &info, &caps);
	if (ret)
		goto out;

	info.cap_offset = 0;
	if (caps.size) {
		info.flags |= VFIO_REGION_INFO_FLAG_CAPS;
		if (info.argsz < sizeof(info) + caps.size) {
			info.argsz = sizeof(info) + caps.size;
		} else {
			vfio_info_cap_shift(&caps, sizeof(info));
			if (copy_to_user((void __user *)arg + sizeof(info),
					 caps.buf, caps.size)) {
				ret = -EFAULT;
				goto out;
			}
			info.cap_offset = sizeof(info);
		}
	}
	if (copy_to_user((void __user *)arg, &info, minsz))
		ret = -EFAULT;
out:
	kfree(caps.buf);
	return ret;
}

static long vfio_user_ioctl_irq_info(struct vfio_user_device *udev,
				     unsigned long arg)
{
	unsigned long minsz = offsetofend(struct vfio_irq_info, count);
	struct vfio_irq_info info;
	u32 index;

	if (copy_from_user(&info, (void __user *)arg, minsz))
		return -EFAULT;
	if (info.argsz < minsz || info.index >= VFIO_PCI_NUM_IRQS)
		return -EINVAL;
	index = array_index_nospec(info.index, VFIO_PCI_NUM_IRQS);
	info.flags = udev->irqs[index].flags;
	info.count = udev->irqs[index].count;
	return copy_to_user((void __user *)arg, &info, minsz) ? -EFAULT : 0;
}

static long vfio_user_ioctl_reset(struct vfio_user_device *udev,
				  struct vfio_user_conn *conn)
{
	int ret;

	if (!(udev->info_flags & VFIO_DEVICE_FLAGS_RESET))
		return -EINVAL;
	ret = vfio_user_send_sync(conn, VFIO_USER_DEVICE_RESET, NULL, 0, NULL,
				  0, NULL, 0, NULL, 0, 0);
	return ret < 0 ? ret : 0;
}

/**
 * vfio_user_ioctl() - vfio_device_ops.ioctl
 * @vdev: the VFIO device
 * @cmd: VFIO_DEVICE_GET_INFO, GET_REGION_INFO, GET_IRQ_INFO, SET_IRQS,
 *	RESET
 * @arg: user pointer to the ioctl's struct
 *
 * The info ioctls are answered from what attach cached; SET_IRQS and
 * RESET are forwarded.
 *
 * Context: process context; sleeps, each message bounded by timeout_ms.
 * Return: 0 or a negative errno (-ENOTCONN, -EIO, -EINVAL, -EFAULT,
 * -ETIMEDOUT, -EINTR, -ENOTTY, or the server's errno).
 */
static long vfio_user_ioctl(struct vfio_device *vdev, unsigned int cmd,
			    unsigned long arg)
{
	struct vfio_user_device *udev = to_vfio_user_device(vdev);
	struct vfio_user_conn *conn;
	long ret;

	if (cmd == VFIO_DEVICE_GET_REGION_INFO)
		return vfio_user_ioctl_region_info(udev, arg);

	ret = vfio_user_get_conn(udev, &conn);
	if (ret)
		return ret;
	switch (cmd) {
	case VFIO_DEVICE_GET_INFO:
		ret = vfio_user_ioctl_device_info(udev, arg);
		break;
	case VFIO_DEVICE_GET_IRQ_INFO:
		ret = vfio_user_ioctl_irq_info(udev, arg);
		break;
	case VFIO_DEVICE_SET_IRQS:
		ret = vfio_user_set_irqs(udev, arg);
		break;
	case VFIO_DEVICE_RESET:
		ret = vfio_user_ioctl_reset(udev, conn);
		break;
	default:
		ret = -ENOTTY;
		break;
	}
	vfio_user_put_conn(udev);
	return ret;
}

/*
 * Lifecycle of the VFIO device
 */

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
	mutex_init(&udev->irq_lock);
	init_rwsem(&udev->conn_sem);
	init_rwsem(&udev->dma_sem);
	udev->state = VFIO_USER_DETACHED;
	udev->timeout_ms = VFIO_USER_DEF_TIMEOUT_MS;
	return 0;
}

static void vfio_user_free_regions(struct vfio_user_region *regions, u32 n)
{
	u32 i;

	if (!regions)
		return;
	for (i = 0; i < n; i++)
		kfree(regions[i].caps);
	kfree(regions);
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

	vfio_user_free_regions(udev->regions, udev->num_regions);
	vfio_user_irqs_free(udev);
	mutex_destroy(&udev->irq_lock);
	mutex_destroy(&udev->lock);
}

/**
 * vfio_user_open_device() - vfio_device_ops.open_device
 * @vdev: the VFIO device
 *
 * Context: process context, the VFIO core's dev_set lock held. Never waits
 * on a server; waits at most for an attach to publish its connection.
 * Return: 0 when a server is attached; -ENOTCONN when none is attached;
 * -EIO when the attached server broke the connection.
 */
static int vfio_user_open_device(struct vfio_device *vdev)
{
	struct vfio_user_device *udev = to_vfio_user_device(vdev);
	int ret = 0;

	/* conn_sem, not udev->lock: an attach holds that across its waits. */
	down_write(&udev->conn_sem);
	if (!udev->conn)
		ret = -ENOTCONN;
	else if (vfio_user_conn_dead(udev->conn, NULL, 0))
		ret = -EIO;
	if (!ret) {
		down_write(&udev->dma_sem);
		udev->dma_enabled = true;
		up_write(&udev->dma_sem);
		udev->open = true;
	}
	up_write(&udev->conn_sem);

	if (ret)
		dev_dbg(vfio_user_dev(udev), "open refused: %s (%d)\n",
			ret == -ENOTCONN ? "no server attached" :
			"connection broken", ret);
	return ret;
}

/**
 * vfio_user_close_device() - vfio_device_ops.close_device
 * @vdev: the VFIO device
 *
 * Stops serving DMA (waits for a DMA access in progress), asks a live
 * server to disable the interrupts and drops the consumer's eventfds.
 *
 * Context: process context, the VFIO core's dev_set lock held. Waits on
 * the server at most timeout_ms per IRQ index.
 */
static void vfio_user_close_device(struct vfio_device *vdev)
{
	struct vfio_user_device *udev = to_vfio_user_device(vdev);

	down_write(&udev->dma_sem);
	udev->dma_enabled = false;
	up_write(&udev->dma_sem);

	down_read(&udev->conn_sem);
	vfio_user_irqs_release(udev);
	up_read(&udev->conn_sem);

	down_write(&udev->conn_sem);
	udev->open = false;
	up_write(&udev->conn_sem);
}

/**
 * vfio_user_request() - vfio_device_ops.request: ask the consumer to let go
 * @vdev: the VFIO device
 * @count: how many times the core has asked
 *
 * Signals the consumer's REQ eventfd (VFIO_PCI_REQ_IRQ_INDEX), as vfio-pci
 * does; the REQ index is the module's own, the server is not involved.
 *
 * Context: process context (mdev removal), every 10 s until the consumer
 * closes the device.
 */
static void vfio_user_request(struct vfio_device *vdev, unsigned int count)
{
	struct vfio_user_device *udev = to_vfio_user_device(vdev);
	struct eventfd_ctx *ctx = NULL;
	struct file *file;

	mutex_lock(&udev->irq_lock);
	file = udev->irqs ? udev->irqs[VFIO_PCI_REQ_IRQ_INDEX].triggers[0] : NULL;
	if (file)
		ctx = eventfd_ctx_fileget(file);
	mutex_unlock(&udev->irq_lock);

	if (!IS_ERR_OR_NULL(ctx)) {
		if (!count)
			dev_info(vfio_user_dev(udev),
				 "asking the consumer to release the device\n");
		vfio_user_eventfd_signal(ctx);
		eventfd_ctx_put(ctx);
	} else if (!count) {
		dev_notice(vfio_user_dev(udev),
			   "removal waits for the consumer to close the device (no REQ eventfd)\n");
	}
}

/**
 * vfio_user_dma_unmap() - vfio_device_ops.dma_unmap
 * @vdev: the VFIO device
 * @iova: start of the range the consumer unmapped
 * @length: length of the range
 *
 * Nothing to do and nothing to wait for: the module pins no pages, and
 * every DMA it serves goes through vfio_dma_rw(), which checks the
 * consumer's mappings under the IOMMU driver's lock, so once the unmap
 * completes the server can no longer reach the range.
 *
 * Context: called by vfio_iommu_type1 (or iommufd); never waits on the
 * server.
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
	.read		= vfio_user_read,
	.write		= vfio_user_write,
	.ioctl		= vfio_user_ioctl,
	.request	= vfio_user_request,
	.dma_unmap	= vfio_user_dma_unmap,
	VFIO_USER_REGION_INFO_OPS
	VFIO_USER_IOMMUFD_OPS
};

/*
 * Attach and detach
 */

/*
 * Checks a region's capability chain (offsets relative to the start of the
 * info struct, as the server sent it) and keeps a copy rebased so that the
 * first capability is at offset 0. The chain must go forward and stay in
 * the reply: a loop or an outside pointer is a protocol violation.
 */
static int vfio_user_copy_caps(struct vfio_user_conn *conn, u32 index,
			       const u8 *reply, u32 len, u32 first,
			       struct vfio_user_region *region)
{
	const size_t hsz = sizeof(struct vfio_user_cap_header);
	u32 off = first, n = 0;
	u8 *caps;

	if (first < sizeof(struct vfio_user_region_info) || first > len - hsz) {
		vfio_user_conn_broken(conn,
				      "region %u: cap_offset %u outside the %u-byte reply",
				      index, first, len);
		return -EPROTO;
	}
	caps = kmemdup(reply + first, len - first, GFP_KERNEL);
	if (!caps)
		return -ENOMEM;

	for (;;) {
		struct vfio_user_cap_header *wire = (void *)(reply + off);
		struct vfio_info_cap_header *hdr = (void *)(caps + off - first);
		u32 next = le32_to_cpu(wire->next);

		if (next && (next < off + hsz || next > len - hsz)) {
			vfio_user_conn_broken(conn,
					      "region %u: capability at %u points to %u (reply %u bytes)",
					      index, off, next, len);
			kfree(caps);
			return -EPROTO;
		}
		hdr->id = le16_to_cpu(wire->id);
		hdr->version = le16_to_cpu(wire->version);
		hdr->next = next ? next - first : 0;
		if (!next)
			break;
		if (++n > 64) {
			vfio_user_conn_broken(conn, "region %u: too many capabilities",
					      index);
			kfree(caps);
			return -EPROTO;
		}
		off = next;
	}
	region->caps = caps;
	region->caps_len = len - first;
	return 0;
}

static int vfio_user_fetch_region(struct vfio_user_conn *conn, u32 index,
				  struct vfio_user_region *region)
{
	struct vfio_user_region_info req = {
		.argsz = cpu_to_le32(VFIO_USER_MAX_REGION_INFO),
		.index = cpu_to_le32(index),
	};
	struct vfio_user_region_info *rep;
	u32 flags, first;
	int len, ret = 0;

	rep = kmalloc(VFIO_USER_MAX_REGION_INFO, GFP_KERNEL);
	if (!rep)
		return -ENOMEM;
	len = vfio_user_send_sync(conn, VFIO_USER_DEVICE_GET_REGION_INFO, &req,
				  sizeof(req), NULL, 0, NULL, 0, rep,
				  sizeof(*rep), VFIO_USER_MAX_REGION_INFO);
	if (len < 0) {
		ret = len;
		goto out;
	}
	if (le32_to_cpu(rep->index) != index) {
		vfio_user_conn_broken(conn, "region info for %u answered for %u",
				      index, le32_to_cpu(rep->index));
		ret = -EPROTO;
		goto out;
	}
	flags = le32_to_cpu(rep->flags);
	region->size = le64_to_cpu(rep->size);
	/* No mmap until mmap passthrough exists: accesses go through us. */
	region->flags = flags & (VFIO_REGION_INFO_FLAG_READ |
				 VFIO_REGION_INFO_FLAG_WRITE);
	first = le32_to_cpu(rep->cap_offset);
	if ((flags & VFIO_REGION_INFO_FLAG_CAPS) && first)
		ret = vfio_user_copy_caps(conn, index, (u8 *)rep, len, first,
					  region);
out:
	kfree(rep);
	return ret;
}

/* What attach learns from the server before it publishes the connection. */
struct vfio_user_info {
	u32 flags;
	u32 num_regions;
	struct vfio_user_region *regions;
	struct vfio_user_irq irqs[VFIO_PCI_NUM_IRQS];
};

static void vfio_user_info_free(struct vfio_user_info *info)
{
	u32 i;

	vfio_user_free_regions(info->regions, info->num_regions);
	for (i = 0; i < VFIO_PCI_NUM_IRQS; i++)
		kfree(info->irqs[i].triggers);
}

static int vfio_user_fetch_info(struct vfio_user_conn *conn,
				struct vfio_user_info *info)
{
	struct vfio_user_device_info dreq = { .argsz = cpu_to_le32(sizeof(dreq)) };
	struct vfio_user_device_info drep;
	u32 i, num_irqs;
	int ret;

	ret = vfio_user_send_sync(conn, VFIO_USER_DEVICE_GET_INFO, &dreq,
				  sizeof(dreq), NULL, 0, NULL, 0, &drep,
				  sizeof(drep), sizeof(drep));
	if (ret < 0)
		return ret;
	info->flags = le32_to_cpu(drep.flags);
	info->num_regions = le32_to_cpu(drep.num_regions);
	num_irqs = le32_to_cpu(drep.num_irqs);
	if (info->num_regions > VFIO_USER_MAX_REGIONS ||
	    num_irqs > VFIO_USER_MAX_IRQS) {
		vfio_user_conn_broken(conn, "device has %u regions and %u IRQ indexes",
				      info->num_regions, num_irqs);
		info->num_regions = 0;
		return -EPROTO;
	}
	/* vfio-pci consumers need the PCI flag; the rest is the server's. */
	info->flags &= VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET;

	info->regions = kcalloc(info->num_regions, sizeof(*info->regions),
				GFP_KERNEL);
	if (!info->regions && info->num_regions)
		return -ENOMEM;
	for (i = 0; i < info->num_regions; i++) {
		ret = vfio_user_fetch_region(conn, i, &info->regions[i]);
		if (ret)
			return ret;
	}

	for (i = 0; i < min_t(u32, num_irqs, VFIO_PCI_REQ_IRQ_INDEX); i++) {
		struct vfio_user_irq_info ireq = {
			.argsz = cpu_to_le32(sizeof(ireq)),
			.index = cpu_to_le32(i),
		};
		struct vfio_user_irq_info irep;

		ret = vfio_user_send_sync(conn, VFIO_USER_DEVICE_GET_IRQ_INFO,
					  &ireq, sizeof(ireq), NULL, 0, NULL, 0,
					  &irep, sizeof(irep), sizeof(irep));
		if (ret < 0)
			return ret;
		if (le32_to_cpu(irep.index) != i ||
		    le32_to_cpu(irep.count) > VFIO_USER_MAX_IRQ_COUNT) {
			vfio_user_conn_broken(conn,
					      "IRQ info for %u: index %u count %u",
					      i, le32_to_cpu(irep.index),
					      le32_to_cpu(irep.count));
			return -EPROTO;
		}
		info->irqs[i].flags = le32_to_cpu(irep.flags);
		info->irqs[i].count = le32_to_cpu(irep.count);
	}
	/* REQ is the module's: one eventfd, signalled on removal. */
	info->irqs[VFIO_PCI_REQ_IRQ_INDEX].flags = VFIO_IRQ_INFO_EVENTFD |
						   VFIO_IRQ_INFO_NORESIZE;
	info->irqs[VFIO_PCI_REQ_IRQ_INDEX].count = 1;

	for (i = 0; i < VFIO_PCI_NUM_IRQS; i++) {
		info->irqs[i].triggers = kcalloc(max(info->irqs[i].count, 1U),
						 sizeof(struct file *),
						 GFP_KERNEL);
		if (!info->irqs[i].triggers)
			return -ENOMEM;
	}
	return 0;
}

/* A re-attach under an open consumer must find the same device shape. */
static bool vfio_user_same_shape(struct vfio_user_device *udev,
				 struct vfio_user_info *info)
{
	u32 i;

	if (info->num_regions != udev->num_regions)
		return false;
	for (i = 0; i < info->num_regions; i++)
		if (info->regions[i].size != udev->regions[i].size)
			return false;
	for (i = 0; i < VFIO_PCI_NUM_IRQS; i++)
		if (info->irqs[i].count != udev->irqs[i].count)
			return false;
	return true;
}

/* Unpublishes and tears down the current connection. */
static void vfio_user_drop_conn(struct vfio_user_device *udev)
{
	struct vfio_user_conn *conn;

	lockdep_assert_held(&udev->lock);

	conn = udev->conn;
	if (!conn)
		return;
	/* Fail every waiter first, so the writer lock comes quickly. */
	vfio_user_conn_stop_waiters(conn);
	down_write(&udev->conn_sem);
	udev->conn = NULL;
	up_write(&udev->conn_sem);
	vfio_user_conn_stop(conn);
}

/**
 * vfio_user_attach() - connect a device to a server, or re-connect it
 * @udev: the device
 * @path: socket path, resolved in the caller's context
 *
 * Drops the current connection if any, connects, negotiates VERSION,
 * starts the receiver, caches device, region and IRQ info, announces the
 * DMA window and, when a consumer has the device open, replays its
 * eventfds. The consumer never reopens anything.
 *
 * Context: process context of the sysfs writer (its fd table is used to
 * pass eventfds). Sleeps; each step bounded by timeout_ms.
 * Return: 0 or a negative errno; on error the device is detached.
 */
int vfio_user_attach(struct vfio_user_device *udev, const char *path)
{
	struct vfio_user_info info = { };
	struct vfio_user_conn *conn;
	int ret;

	mutex_lock(&udev->lock);
	vfio_user_drop_conn(udev);
	udev->state = VFIO_USER_CONNECTING;
	strscpy(udev->socket_path, path, sizeof(udev->socket_path));

	conn = vfio_user_conn_connect(udev, path, udev->timeout_ms);
	if (IS_ERR(conn)) {
		ret = PTR_ERR(conn);
		goto err_detached;
	}
	vfio_user_conn_start(conn);

	ret = vfio_user_fetch_info(conn, &info);
	if (ret) {
		dev_err(vfio_user_dev(udev), "cannot read device info from %s: %d\n",
			path, ret);
		goto err_conn;
	}
	ret = vfio_user_dma_announce(conn);
	if (ret)
		goto err_conn;

	down_write(&udev->conn_sem);
	if (udev->open && !vfio_user_same_shape(udev, &info)) {
		up_write(&udev->conn_sem);
		dev_err(vfio_user_dev(udev),
			"server at %s has another device shape than the open one\n",
			path);
		ret = -EBUSY;
		goto err_conn;
	}
	if (udev->open) {
		/* Keep the consumer's eventfds, take the server's new info. */
		ret = vfio_user_irqs_replay(udev, conn);
		if (ret) {
			up_write(&udev->conn_sem);
			dev_err(vfio_user_dev(udev),
				"cannot replay interrupts to %s: %d\n", path, ret);
			goto err_conn;
		}
	} else {
		mutex_lock(&udev->irq_lock);
		vfio_user_irqs_free(udev);
		udev->irqs = kmemdup(info.irqs, sizeof(info.irqs), GFP_KERNEL);
		if (udev->irqs)
			memset(info.irqs, 0, sizeof(info.irqs));
		mutex_unlock(&udev->irq_lock);
		if (!udev->irqs) {
			up_write(&udev->conn_sem);
			ret = -ENOMEM;
			goto err_conn;
		}
	}
	swap(udev->regions, info.regions);
	swap(udev->num_regions, info.num_regions);
	udev->info_flags = info.flags;
	udev->conn = conn;
	udev->state = VFIO_USER_READY;
	up_write(&udev->conn_sem);
	/*
	 * Logged under udev->lock: once it is dropped a concurrent detach
	 * may free @conn (KASAN caught the read after the unlock).
	 */
	dev_info(vfio_user_dev(udev),
		 "attached to %s: vfio-user %u.%u, %u regions, max_data_xfer_size %u, max_msg_fds %u\n",
		 path, VFIO_USER_MAJOR, conn->caps.minor, udev->num_regions,
		 conn->caps.max_xfer, conn->caps.max_msg_fds);
	mutex_unlock(&udev->lock);

	vfio_user_info_free(&info);
	return 0;

err_conn:
	vfio_user_conn_stop(conn);
err_detached:
	vfio_user_info_free(&info);
	udev->state = VFIO_USER_DETACHED;
	udev->socket_path[0] = '\0';
	mutex_unlock(&udev->lock);
	return ret;
}

/**
 * vfio_user_detach() - disconnect a device from its server
 * @udev: the device
 *
 * Consumer calls fail with -ENOTCONN afterwards; an open consumer keeps
 * its fds, and a later attach brings the device back.
 *
 * Context: process context. Never waits on the server.
 */
void vfio_user_detach(struct vfio_user_device *udev)
{
	mutex_lock(&udev->lock);
	vfio_user_drop_conn(udev);
	udev->state = VFIO_USER_DETACHED;
	udev->socket_path[0] = '\0';
	mutex_unlock(&udev->lock);
}
