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
#include <linux/pci_regs.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vfio.h>

#include "compat.h"
#include "vfio_user_mdev.h"
#include "trace.h"

/**
 * vfio_user_get_conn() - the live connection, for a consumer call
 * @udev: the device
 * @connp: the connection
 *
 * Every consumer op starts here; vfio_user_put_conn() ends it.
 *
 * Context: process context; sleeps killably for an attach publishing.
 * Return: 0 with conn_sem held for reading, or -EINTR, -ENOTCONN (no
 * server), -EIO (connection broken) with nothing held.
 */
int vfio_user_get_conn(struct vfio_user_device *udev,
		       struct vfio_user_conn **connp)
{
	if (down_read_killable(&udev->conn_sem))
		return -EINTR;
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

/**
 * vfio_user_put_conn() - end what vfio_user_get_conn() began
 * @udev: the device
 */
void vfio_user_put_conn(struct vfio_user_device *udev)
{
	up_read(&udev->conn_sem);
}

/*
 * Region accesses
 */

/*
 * Checks the @len-byte reply @rep to a REGION_READ or REGION_WRITE of
 * @count bytes at @offset of region @index; a reply for another access
 * breaks the connection. Returns the count the server did, or -EIO.
 */
static int vfio_user_region_reply(struct vfio_user_conn *conn,
				  const struct vfio_user_region_access *rep,
				  int len, u32 index, u64 offset, u32 count,
				  bool write)
{
	u32 done = le32_to_cpu(rep->count);

	if (le64_to_cpu(rep->offset) == offset &&
	    le32_to_cpu(rep->region) == index && done <= count &&
	    len == sizeof(*rep) + (write ? 0 : done))
		return done;
	vfio_user_conn_broken(conn,
			      "REGION_%s reply for region %u offset %#llx count %u: offset %#llx region %u count %u in %d bytes",
			      write ? "WRITE" : "READ", index, offset, count,
			      le64_to_cpu(rep->offset), le32_to_cpu(rep->region),
			      done, len);
	return -EIO;
}

/*
 * One REGION_READ or REGION_WRITE of at most max_xfer bytes, straight
 * between the user's buffer and the request: the data is copied once
 * each way in the module. A posted write returns once it is on the wire.
 */
static int vfio_user_region_rw_chunk(struct vfio_user_conn *conn, u32 index,
				     u64 offset, char __user *ubuf, u32 count,
				     bool write, bool post)
{
	struct vfio_user_region_access acc = {
		.offset = cpu_to_le64(offset),
		.region = cpu_to_le32(index),
		.count = cpu_to_le32(count),
	};
	struct vfio_user_call call = {
		.command = write ? VFIO_USER_REGION_WRITE : VFIO_USER_REGION_READ,
		.payload = &acc,
		.len = sizeof(acc),
		.data_len = write ? count : 0,
		.reply_min = sizeof(acc),
		.reply_max = sizeof(acc) + (write ? 0 : count),
	};
	struct vfio_user_region_access *rep;
	struct vfio_user_req *req;
	int ret;

	req = vfio_user_req_alloc(&call);
	if (!req)
		return -ENOMEM;
	if (write && copy_from_user(vfio_user_req_data(req), ubuf, count)) {
		ret = -EFAULT;
		goto out;
	}
	if (post) {
		ret = vfio_user_post(conn, req);
		if (!ret)
			ret = count;
		goto out;
	}
	ret = vfio_user_req_run(conn, req);
	if (ret < 0)
		goto out;

	rep = req->reply;
	ret = vfio_user_region_reply(conn, rep, ret, index, offset, count,
				     write);
	if (ret > 0 && !write && copy_to_user(ubuf, rep->data, ret))
		ret = -EFAULT;
out:
	vfio_user_req_put(req);
	return ret;
}

/*
 * Whether a write to region @index is posted: a memory BAR the attach
 * found postable (vfio_user_post_bars()).
 */
static bool vfio_user_may_post(struct vfio_user_device *udev, u32 index)
{
	lockdep_assert_held(&udev->conn_sem);

	return index <= VFIO_PCI_BAR5_REGION_INDEX &&
	       (udev->post_bars & BIT(index));
}

static ssize_t vfio_user_rw(struct vfio_user_device *udev, char __user *ubuf,
			    size_t count, loff_t *ppos, bool write)
{
	u64 pos = *ppos, offset = pos & VFIO_USER_OFFSET_MASK, end;
	u32 index = VFIO_USER_OFFSET_TO_INDEX(pos);
	struct vfio_user_conn *conn;
	struct vfio_user_region *region;
	size_t done = 0;
	bool post;
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

	post = write && vfio_user_may_post(udev, index);
	while (done < count) {
		u32 n = min_t(size_t, count - done, conn->caps.max_xfer);

		ret = vfio_user_region_rw_chunk(conn, index, offset + done,
						ubuf + done, n, write, post);
		if (ret < 0)
			break;
		done += ret;
		if (ret < n)	/* short access: report what was done */
			break;
	}
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
 * A write to a memory BAR the attach found postable (posted_writes set,
 * no mappable server memory) is posted: all of it counts as written once
 * it is on the wire; the server's error, if any, is lost, as a PCI posted
 * write's is, and a dead server fails the next access instead.
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

/*
 * VFIO_DEVICE_RESET: the migration FSM back to RUNNING first (QEMU resets
 * a device to leave ERROR), a server left stopped running again, then
 * DEVICE_RESET when the server offers reset. With the server gone, a
 * reset that left ERROR succeeds: the device is merely broken, as when a
 * server dies outside a migration (QEMU aborts when a reset fails).
 */
static long vfio_user_ioctl_reset(struct vfio_user_device *udev)
{
	struct vfio_user_call call = { .command = VFIO_USER_DEVICE_RESET };
	bool mig = udev->vdev.migration_flags, left_mig = false;
	struct vfio_user_conn *conn;
	bool lost = false;
	int ret;

	/* The whole reset under mig.lock: no arc in between. */
	if (mig) {
		if (mutex_lock_killable(&udev->mig.lock))
			return -EINTR;
		left_mig = vfio_user_mig_reset_locked(udev);
	}
	ret = vfio_user_get_conn(udev, &conn);
	if (ret)
		goto out_unlock;
	if (!mig && !(udev->info_flags & VFIO_DEVICE_FLAGS_RESET)) {
		ret = -EINVAL;
		goto out_put;
	}
	if (mig)
		ret = vfio_user_mig_resume(udev, conn);
	if (!ret && (udev->info_flags & VFIO_DEVICE_FLAGS_RESET))
		ret = vfio_user_call(conn, &call);
	/* What the consumer maps faults in again, after the reset. */
	vfio_user_mmap_zap(udev);
	lost = ret < 0 && vfio_user_conn_dead(conn, NULL, 0);
out_put:
	vfio_user_put_conn(udev);
out_unlock:
	if (left_mig && (lost || ret == -EIO || ret == -ENOTCONN)) {
		dev_warn(vfio_user_dev(udev),
			 "reset out of a migration with no server (%d): state RUNNING, device broken\n",
			 ret);
		ret = 0;
	}
	if (mig)
		mutex_unlock(&udev->mig.lock);
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
	if (cmd == VFIO_DEVICE_RESET)
		return vfio_user_ioctl_reset(udev);

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
 * Return: 0 or -ENOMEM.
 */
static int vfio_user_init_dev(struct vfio_device *vdev)
{
	struct vfio_user_device *udev = to_vfio_user_device(vdev);

	mutex_init(&udev->attach_mutex);
	spin_lock_init(&udev->state_lock);
	mutex_init(&udev->irq_lock);
	spin_lock_init(&udev->trig_lock);
	init_rwsem(&udev->conn_sem);
	init_rwsem(&udev->dma_sem);
	mutex_init(&udev->window_mutex);
	mutex_init(&udev->log_lock);
	INIT_WORK(&udev->window_work, vfio_user_window_work);
	vfio_user_mig_init(udev);
	udev->state = VFIO_USER_DETACHED;
	udev->timeout_ms = VFIO_USER_DEF_TIMEOUT_MS;
	udev->dma_window = VFIO_USER_DEF_DMA_WINDOW;
	udev->dma_window_chunk = VFIO_USER_DEF_DMA_WINDOW;
	return vfio_user_mmap_init(udev);
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

	cancel_work_sync(&udev->window_work);
	WARN_ON_ONCE(udev->window);
	vfio_user_mmap_exit(udev);
	vfio_user_stats_free(udev);
	vfio_user_free_regions(udev->regions, udev->num_regions);
	vfio_user_irqs_free(udev);
	vfio_user_mig_exit(udev);
	mutex_destroy(&udev->log_lock);
	mutex_destroy(&udev->window_mutex);
	mutex_destroy(&udev->irq_lock);
	mutex_destroy(&udev->attach_mutex);
}

/**
 * vfio_user_open_device() - vfio_device_ops.open_device
 * @vdev: the VFIO device
 *
 * Context: process context, the VFIO core's dev_set lock held. Waits on
 * the server only when it was left outside RUNNING (a migrated source):
 * at most four requests, each bounded by timeout_ms.
 * Return: 0 when a server is attached; -ENOTCONN when none is attached;
 * -EIO when the attached server broke the connection; the server's errno
 * when it stays stopped.
 */
static int vfio_user_open_device(struct vfio_device *vdev)
{
	struct vfio_user_device *udev = to_vfio_user_device(vdev);
	struct vfio_user_conn *conn;
	int ret;

	/* A server the last consumer left stopped (migrated away) runs. */
	ret = vfio_user_get_conn(udev, &conn);
	if (!ret) {
		ret = vfio_user_mig_resume(udev, conn);
		vfio_user_put_conn(udev);
		if (ret)
			return ret;
	}

	down_write(&udev->conn_sem);
	ret = 0;
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
	if (!ret)
		vfio_user_mmap_open(udev, true);

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
 * Stops serving DMA (waits for a DMA access in progress), unpins what the
 * server's shared-memory mappings pinned (zapping them), asks a live
 * server to disable the interrupts, drops the consumer's eventfds and
 * stops a DMA log the consumer left started.
 *
 * Context: process context, the VFIO core's dev_set lock held. Waits on
 * the server at most timeout_ms per IRQ index.
 */
static void vfio_user_close_device(struct vfio_device *vdev)
{
	struct vfio_user_device *udev = to_vfio_user_device(vdev);

	/* A session's data fd ends; the server stays where it is. */
	vfio_user_mig_reset(udev);
	vfio_user_mmap_open(udev, false);
	down_write(&udev->dma_sem);
	udev->dma_enabled = false;
	up_write(&udev->dma_sem);
	vfio_user_window_close(udev);

	down_read(&udev->conn_sem);
	vfio_user_irqs_release(udev);
	up_read(&udev->conn_sem);

	down_write(&udev->conn_sem);
	udev->open = false;
	up_write(&udev->conn_sem);
	vfio_user_dirty_stop(udev);
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

	spin_lock(&udev->trig_lock);
	file = udev->irqs ? udev->irqs[VFIO_PCI_REQ_IRQ_INDEX].triggers[0] : NULL;
	if (file)
		ctx = eventfd_ctx_fileget(file);
	spin_unlock(&udev->trig_lock);

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
 * Message DMA needs nothing: it goes through vfio_dma_rw(), which checks
 * the consumer's mappings under the IOMMU driver's lock. The shared-memory
 * window zaps the server's mappings of the range and unpins it, so once
 * the unmap completes the server can no longer reach the range.
 *
 * Context: called by vfio_iommu_type1 (or iommufd); never waits on the
 * server.
 */
static void vfio_user_dma_unmap(struct vfio_device *vdev, u64 iova, u64 length)
{
	vfio_user_window_unmap(to_vfio_user_device(vdev), iova, length);
}

#ifdef VFIO_USER_HAVE_IOMMUFD
/**
 * vfio_user_bind_iommufd() - vfio_device_ops.bind_iommufd
 * @vdev: the VFIO device
 * @ictx: the consumer's iommufd
 * @out_device_id: the device's ID in @ictx
 *
 * The emulated-IOMMU bind, noting that the consumer uses iommufd.
 *
 * Context: process context, the VFIO core's dev_set lock held.
 * Return: 0 or a negative errno.
 */
static int vfio_user_bind_iommufd(struct vfio_device *vdev,
				  struct iommufd_ctx *ictx, u32 *out_device_id)
{
	int ret = vfio_iommufd_emulated_bind(vdev, ictx, out_device_id);

	if (!ret)
		WRITE_ONCE(to_vfio_user_device(vdev)->iommufd_bound, true);
	return ret;
}

/**
 * vfio_user_unbind_iommufd() - vfio_device_ops.unbind_iommufd
 * @vdev: the VFIO device
 *
 * Context: process context, the VFIO core's dev_set lock held.
 */
static void vfio_user_unbind_iommufd(struct vfio_device *vdev)
{
	vfio_iommufd_emulated_unbind(vdev);
	WRITE_ONCE(to_vfio_user_device(vdev)->iommufd_bound, false);
}
#endif

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
	.mmap		= vfio_user_mmap,
	VFIO_USER_REGION_INFO_OPS
	VFIO_USER_IOMMUFD_OPS
	VFIO_USER_MIG_FEATURE_OPS
};

/*
 * Attach and detach
 */

/*
 * Unpublishes and tears down the current connection: broken first, so
 * that consumer calls on it return at once and the writer lock comes at
 * once; stopped once no consumer is inside.
 */
static void vfio_user_unpublish(struct vfio_user_device *udev)
{
	struct vfio_user_conn *conn = udev->conn;

	lockdep_assert_held(&udev->attach_mutex);

	if (!conn)
		return;
	trace_vfio_user_state(vfio_user_dev(udev), "detached",
			      udev->socket_path);
	vfio_user_conn_close(conn, "detached");
	down_write(&udev->conn_sem);
	spin_lock(&udev->state_lock);
	udev->conn = NULL;
	spin_unlock(&udev->state_lock);
	up_write(&udev->conn_sem);
	vfio_user_mmap_unpublish(udev, false);
	vfio_user_conn_stop(conn);
	vfio_user_window_revoke(udev);
	vfio_user_conn_put(conn);
}

static void vfio_user_set_state(struct vfio_user_device *udev,
				enum vfio_user_state state, const char *path)
{
	spin_lock(&udev->state_lock);
	udev->state = state;
	strscpy(udev->socket_path, path, sizeof(udev->socket_path));
	spin_unlock(&udev->state_lock);
}

/*
 * The BARs whose writes are posted, with posted_writes set at attach: the
 * memory BARs (a PCI I/O write is not posted), of a PCI device without
 * server memory the consumer may map (its loads and stores through the
 * mapping could overtake a write still in the socket, where everything
 * sent by message stays in order). Config space, the ROM and the
 * device-specific regions (migration's) are never posted. The BARs' types
 * are read from config space, one REGION_READ; a server that refuses it
 * (an error reply) gets no posted write. Returns 0, or the error of a
 * connection that failed meanwhile (the attach fails with it).
 */
static int vfio_user_post_bars(struct vfio_user_device *udev,
			       struct vfio_user_conn *conn,
			       struct vfio_user_info *info)
{
	struct vfio_user_region_access acc = {
		.offset = cpu_to_le64(PCI_BASE_ADDRESS_0),
		.region = cpu_to_le32(VFIO_PCI_CONFIG_REGION_INDEX),
		.count = cpu_to_le32(6 * sizeof(__le32)),
	};
	u8 buf[sizeof(acc) + 6 * sizeof(__le32)] __aligned(8);
	struct vfio_user_region_access *rep = (void *)buf;
	struct vfio_user_call call = {
		.command = VFIO_USER_REGION_READ,
		.payload = &acc,
		.len = sizeof(acc),
		.reply = buf,
		.reply_min = sizeof(acc),
		.reply_max = sizeof(buf),
	};
	const struct vfio_user_region *cfg;
	u32 i, bar;
	int ret;

	info->post_bars = 0;
	if (!READ_ONCE(udev->posted_writes) ||
	    !(info->flags & VFIO_DEVICE_FLAGS_PCI) ||
	    info->num_regions <= VFIO_PCI_CONFIG_REGION_INDEX)
		return 0;
	for (i = 0; i < info->num_regions; i++)
		if (info->regions[i].file)
			return 0;
	cfg = &info->regions[VFIO_PCI_CONFIG_REGION_INDEX];
	if (!(cfg->flags & VFIO_REGION_INFO_FLAG_READ) ||
	    cfg->size < PCI_BASE_ADDRESS_5 + 4)
		return 0;
	ret = vfio_user_call(conn, &call);
	if (ret < 0 && (vfio_user_conn_dead(conn, NULL, 0) || ret == -EINTR ||
			ret == -ENOMEM))
		return ret;
	if (ret < 0) {
		dev_warn(vfio_user_dev(udev),
			 "server refused to read the BARs from config space (%d): no write is posted\n",
			 ret);
		return 0;
	}
	ret = vfio_user_region_reply(conn, rep, ret,
				     VFIO_PCI_CONFIG_REGION_INDEX,
				     PCI_BASE_ADDRESS_0, 6 * sizeof(__le32),
				     false);
	if (ret < 0)
		return ret;
	if (ret < 6 * sizeof(__le32)) {
		dev_warn(vfio_user_dev(udev),
			 "server read %d of the BARs' 24 bytes of config space: no write is posted\n",
			 ret);
		return 0;
	}
	for (i = 0; i <= VFIO_PCI_BAR5_REGION_INDEX; i++) {
		bar = le32_to_cpu(((__le32 *)rep->data)[i]);
		if (bar & PCI_BASE_ADDRESS_SPACE_IO)
			continue;
		info->post_bars |= BIT(i);
		/* The upper half of a 64-bit BAR is no BAR of its own. */
		if ((bar & PCI_BASE_ADDRESS_MEM_TYPE_MASK) ==
		    PCI_BASE_ADDRESS_MEM_TYPE_64)
			i++;
	}
	return 0;
}

/*
 * Makes the negotiated connection the device's: checks that an open
 * consumer finds the same device shape, takes the new info. Waits only for
 * consumer calls on no connection, which return at once.
 */
static int vfio_user_publish(struct vfio_user_device *udev,
			     struct vfio_user_conn *conn,
			     struct vfio_user_info *info, u64 irq_gen)
{
	int ret = 0;

	down_write(&udev->conn_sem);
	if (udev->open && !vfio_user_same_shape(udev, info)) {
		dev_err(vfio_user_dev(udev),
			"server has another device shape than the open one\n");
		ret = -EBUSY;
	} else if (udev->open &&
		   info->mig_flags != udev->vdev.migration_flags) {
		dev_err(vfio_user_dev(udev),
			"server's migration flags %#x differ from the open device's %#x\n",
			info->mig_flags, udev->vdev.migration_flags);
		ret = -EBUSY;
	} else if (irq_gen != vfio_user_irqs_gen(udev)) {
		/* Closed, or its eventfds changed, while we replayed them. */
		dev_err(vfio_user_dev(udev),
			"the consumer changed its interrupts during the attach; attach again\n");
		ret = -EAGAIN;
	} else if (!udev->open) {
		ret = vfio_user_irqs_take(udev, info->irqs);
	}
	/* Aborted (or broken) since the last request: not worth publishing. */
	if (!ret && vfio_user_conn_dead(conn, NULL, 0))
		ret = -EIO;
	if (!ret) {
		/* Consumer requests from now on get their own deadline. */
		WRITE_ONCE(conn->attach_deadline, 0);
		swap(udev->regions, info->regions);
		swap(udev->num_regions, info->num_regions);
		udev->post_bars = info->post_bars;
		udev->info_flags = info->flags;
		vfio_user_mig_publish(udev, info);
		spin_lock(&udev->state_lock);
		udev->conn = conn;
		udev->attaching = NULL;
		udev->state = VFIO_USER_READY;
		spin_unlock(&udev->state_lock);
	}
	up_write(&udev->conn_sem);
	return ret;
}

/* Everything an attach asks of the server before it publishes. */
static int vfio_user_attach_conn(struct vfio_user_device *udev,
				 struct vfio_user_conn *conn,
				 struct vfio_user_info *info, u64 *irq_gen)
{
	bool open;
	int ret;

	/* The replies that may carry fds: VERSION and region info. */
	ret = vfio_user_conn_fds_begin(conn);
	if (ret) {
		dev_err(vfio_user_dev(udev),
			"cannot map a buffer to receive fds: %d\n", ret);
		return ret;
	}
	ret = vfio_user_negotiate(conn);
	if (ret) {
		dev_err(vfio_user_dev(udev), "VERSION negotiation failed: %d\n",
			ret);
	} else {
		ret = vfio_user_fetch_info(conn, info);
		if (ret)
			dev_err(vfio_user_dev(udev),
				"cannot read device info: %d\n", ret);
	}
	vfio_user_conn_fds_end(conn);
	if (ret)
		return ret;
	ret = vfio_user_dma_announce(conn);
	if (ret)
		return ret;
	ret = vfio_user_mig_query(conn, info);
	if (ret) {
		dev_err(vfio_user_dev(udev),
			"cannot ask the server about migration: %d\n", ret);
		return ret;
	}
	ret = vfio_user_mig_attach(udev, conn, info);
	if (ret)
		return ret;
	ret = vfio_user_post_bars(udev, conn, info);
	if (ret)
		return ret;

	down_read(&udev->conn_sem);
	open = udev->open;
	up_read(&udev->conn_sem);
	*irq_gen = vfio_user_irqs_gen(udev);
	if (!open)
		return 0;
	/* Keep the consumer's eventfds, take the server's new info. */
	ret = vfio_user_irqs_replay(udev, conn);
	if (ret)
		dev_err(vfio_user_dev(udev), "cannot replay interrupts: %d\n",
			ret);
	return ret;
}

/**
 * vfio_user_attach() - connect a device to a server, or re-connect it
 * @udev: the device
 * @path: socket path, resolved in the caller's context
 *
 * Drops the current connection if any, connects, and on a connection
 * nobody else sees yet negotiates VERSION, caches device, region and IRQ
 * info, announces the DMA window and, when a consumer has the device
 * open, replays its eventfds; then publishes it. The consumer never
 * reopens anything. The whole attach is bounded by timeout_ms, and
 * vfio_user_detach() aborts it at once.
 *
 * Context: process context of the sysfs writer (its fd table is used to
 * pass eventfds). Sleeps killably.
 * Return: 0 or a negative errno; on error the device is detached:
 * -ECANCELED when a detach aborted it, -ENODEV when the device is being
 * removed.
 */
int vfio_user_attach(struct vfio_user_device *udev, const char *path)
{
	struct vfio_user_info info = { };
	struct vfio_user_conn *conn;
	unsigned int timeout_ms, aborts;
	bool aborted;
	u64 irq_gen;
	int ret;

	if (mutex_lock_killable(&udev->attach_mutex))
		return -EINTR;
	spin_lock(&udev->state_lock);
	ret = udev->removed ? -ENODEV : 0;
	aborts = udev->aborts;
	spin_unlock(&udev->state_lock);
	if (ret)
		goto out_unlock;
	vfio_user_unpublish(udev);
	vfio_user_set_state(udev, VFIO_USER_CONNECTING, path);
	timeout_ms = READ_ONCE(udev->timeout_ms);

	conn = vfio_user_conn_connect(udev, path, timeout_ms);
	if (IS_ERR(conn)) {
		ret = PTR_ERR(conn);
		goto err_detached;
	}
	spin_lock(&udev->state_lock);
	/* A detach or remove since we started: as if it had aborted us. */
	if (udev->aborts != aborts) {
		conn->stopping = true;
		ret = -ECANCELED;
	} else {
		udev->attaching = conn;
	}
	spin_unlock(&udev->state_lock);

	if (!ret)
		ret = vfio_user_attach_conn(udev, conn, &info, &irq_gen);
	if (!ret)
		ret = vfio_user_publish(udev, conn, &info, irq_gen);
	if (ret)
		goto err_conn;
	vfio_user_mmap_publish(udev, conn);
	trace_vfio_user_state(vfio_user_dev(udev), "attached", path);
	/* An EOI the consumer signalled while no server was there. */
	vfio_user_irqs_unmask_kick(udev);
	dev_info(vfio_user_dev(udev),
		 "attached to %s: vfio-user %u.%u, %u regions, max_data_xfer_size %u, max_msg_fds %u%s\n",
		 path, VFIO_USER_MAJOR, conn->caps.minor, udev->num_regions,
		 conn->caps.max_xfer, conn->caps.max_msg_fds,
		 conn->twin ? ", twin socket" : "");
	vfio_user_info_free(&info);
	mutex_unlock(&udev->attach_mutex);
	return 0;

err_conn:
	spin_lock(&udev->state_lock);
	udev->attaching = NULL;
	spin_unlock(&udev->state_lock);
	spin_lock(&conn->lock);
	aborted = conn->stopping;
	spin_unlock(&conn->lock);
	vfio_user_conn_stop(conn);
	vfio_user_window_revoke(udev);
	vfio_user_conn_put(conn);
	if (aborted) {
		spin_lock(&udev->state_lock);
		ret = udev->removed ? -ENODEV : -ECANCELED;
		spin_unlock(&udev->state_lock);
		dev_info(vfio_user_dev(udev), "attach to %s aborted by a %s\n",
			 path, ret == -ENODEV ? "removal" : "detach");
	}
err_detached:
	vfio_user_info_free(&info);
	vfio_user_set_state(udev, VFIO_USER_DETACHED, "");
out_unlock:
	mutex_unlock(&udev->attach_mutex);
	return ret;
}

/**
 * vfio_user_abort_attach() - end an attach in progress at once
 * @udev: the device
 * @remove: the device is going away: later attaches fail with -ENODEV
 *
 * The attach's waits fail, and it cleans up and returns -ECANCELED.
 *
 * Context: process context; never waits.
 */
void vfio_user_abort_attach(struct vfio_user_device *udev, bool remove)
{
	struct vfio_user_conn *conn;

	spin_lock(&udev->state_lock);
	udev->aborts++;
	if (remove)
		udev->removed = true;
	conn = udev->attaching;
	if (conn)
		kref_get(&conn->ref);
	spin_unlock(&udev->state_lock);
	if (!conn)
		return;
	vfio_user_conn_close(conn, "attach aborted");
	vfio_user_conn_put(conn);
}

/**
 * vfio_user_detach() - disconnect a device from its server
 * @udev: the device
 * @remove: the device is going away: later attaches fail with -ENODEV
 *
 * Aborts an attach in progress, then drops the connection. Consumer calls
 * fail with -ENOTCONN afterwards; an open consumer keeps its fds, and a
 * later attach brings the device back.
 *
 * Context: process context. Never waits on the server; waits for an
 * aborted attach to clean up, which it does at once.
 * Return: 0, or -EINTR when a fatal signal came first (not for @remove).
 */
int vfio_user_detach(struct vfio_user_device *udev, bool remove)
{
	vfio_user_abort_attach(udev, remove);
	if (remove)
		mutex_lock(&udev->attach_mutex);
	else if (mutex_lock_killable(&udev->attach_mutex))
		return -EINTR;
	vfio_user_unpublish(udev);
	vfio_user_set_state(udev, VFIO_USER_DETACHED, "");
	mutex_unlock(&udev->attach_mutex);
	return 0;
}
