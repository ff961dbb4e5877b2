// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio_user_mdev - interrupts.
 *
 * VFIO_DEVICE_SET_IRQS is forwarded as SET_IRQS; eventfds travel to the
 * server with SCM_RIGHTS, in batches of at most max_msg_fds, and the server
 * then signals the consumer's eventfds directly: no message and no hop
 * through the module per interrupt. A consumer's -1 entries (unassign)
 * become separate fd-less runs, since a server pairs each fd with a vector.
 *
 * The module keeps a reference to every eventfd file so that a re-attach
 * can replay them to the new server. The REQ index is the module's own:
 * the kernel, not the server, asks the consumer to release the device.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/eventfd.h>
#include <linux/fdtable.h>
#include <linux/file.h>
#include <linux/nospec.h>
#include <linux/poll.h>
#include <linux/slab.h>
#include <linux/vfio.h>

#include "vfio_user_mdev.h"

/* Sends one SET_IRQS run; @fds are numbers in current->files. */
static int vfio_user_send_irq_set(struct vfio_user_conn *conn, u32 flags,
				  u32 index, u32 start, u32 count,
				  const void *data, size_t data_len,
				  const int *fds, unsigned int nr_fds)
{
	struct vfio_user_irq_set set = {
		.argsz = cpu_to_le32(sizeof(set) + data_len),
		.flags = cpu_to_le32(flags),
		.index = cpu_to_le32(index),
		.start = cpu_to_le32(start),
		.count = cpu_to_le32(count),
	};
	struct vfio_user_call call = {
		.command = VFIO_USER_DEVICE_SET_IRQS,
		.payload = &set,
		.len = sizeof(set),
		.data = data,
		.data_len = data_len,
		.fds = fds,
		.nr_fds = nr_fds,
	};
	int ret;

	ret = vfio_user_call(conn, &call);
	return ret < 0 ? ret : 0;
}

/* Most fds in one SET_IRQS: the server's limit and ours. */
static u32 vfio_user_max_fds(struct vfio_user_conn *conn)
{
	return min_t(u32, conn->caps.max_msg_fds, VFIO_USER_MAX_MSG_FDS);
}

/*
 * Forwards DATA_EVENTFD for [start, start + count): runs of valid fds in
 * batches of max_msg_fds, runs of -1 as fd-less unassigns.
 */
static int vfio_user_send_eventfds(struct vfio_user_conn *conn, u32 flags,
				   u32 index, u32 start, u32 count,
				   const s32 *fds)
{
	u32 i = 0, n, max = vfio_user_max_fds(conn);
	int ret;

	while (i < count) {
		bool assign = fds[i] >= 0;

		for (n = 1; i + n < count && (fds[i + n] >= 0) == assign; n++)
			if (assign && n == max)
				break;
		if (assign && !max)
			return -EOPNOTSUPP;
		ret = vfio_user_send_irq_set(conn, flags, index, start + i, n,
					     NULL, 0, assign ? fds + i : NULL,
					     assign ? n : 0);
		if (ret)
			return ret;
		i += n;
	}
	return 0;
}

/*
 * Replaces the trigger files of [start, start + count) with @files (NULL:
 * none), under trig_lock, and drops the old ones.
 */
static void vfio_user_set_triggers(struct vfio_user_device *udev,
				   struct vfio_user_irq *irq, u32 start,
				   u32 count, struct file **files)
{
	struct file *old;
	u32 i;

	for (i = 0; i < count; i++) {
		spin_lock(&udev->trig_lock);
		old = irq->triggers[start + i];
		irq->triggers[start + i] = files ? files[i] : NULL;
		udev->irq_gen++;
		spin_unlock(&udev->trig_lock);
		if (old)
			fput(old);
	}
}

static void vfio_user_drop_triggers(struct vfio_user_device *udev,
				    struct vfio_user_irq *irq, u32 start,
				    u32 count)
{
	vfio_user_set_triggers(udev, irq, start, count, NULL);
}

/* The REQ index lives in the module: keep the consumer's eventfd. */
static int vfio_user_set_req(struct vfio_user_device *udev,
			     struct vfio_irq_set *hdr, const s32 *fds)
{
	struct vfio_user_irq *irq = &udev->irqs[VFIO_PCI_REQ_IRQ_INDEX];
	u32 type = hdr->flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
	struct file *file;

	if (!(hdr->flags & VFIO_IRQ_SET_ACTION_TRIGGER))
		return -EINVAL;
	if (type == VFIO_IRQ_SET_DATA_NONE && !hdr->count) {
		vfio_user_drop_triggers(udev, irq, 0, irq->count);
		return 0;
	}
	/* One vector: no eventfd to read with count 0 (data is NULL then). */
	if (type != VFIO_IRQ_SET_DATA_EVENTFD || hdr->count != 1)
		return -EINVAL;
	if (fds[0] < 0) {
		vfio_user_drop_triggers(udev, irq, 0, 1);
		return 0;
	}
	file = eventfd_fget(fds[0]);
	if (IS_ERR(file))
		return PTR_ERR(file);
	vfio_user_set_triggers(udev, irq, 0, 1, &file);
	return 0;
}

/*
 * INTx unmask eventfds. In VFIO the consumer signals an unmask eventfd
 * (KVM's resamplefd, at the guest's EOI) and the device unmasks INTx; the
 * vfio-user spec has the server signal such an eventfd instead, and
 * libvfio-user ignores it. So the module keeps VFIO's meaning itself: it
 * waits on the consumer's eventfd and, each time it is signalled, sends
 * the server an fd-less SET_IRQS ACTION_UNMASK for INTx vector 0.
 */
/**
 * struct vfio_user_unmask - the module's wait on an INTx unmask eventfd
 * @ref: one for vfio_user_device.unmask, one per queued @work; the device
 *	reference taken with it keeps @udev
 * @udev: the device
 * @ctx: the consumer's eventfd
 * @wait: on @ctx's wait queue
 * @pt: registers @wait through vfs_poll()
 * @work: sends the UNMASK, on vfio_user_wq
 */
struct vfio_user_unmask {
	struct kref ref;
	struct vfio_user_device *udev;
	struct eventfd_ctx *ctx;
	wait_queue_entry_t wait;
	poll_table pt;
	struct work_struct work;
};

static void vfio_user_unmask_release(struct kref *ref)
{
	struct vfio_user_unmask *um = container_of(ref, struct vfio_user_unmask,
						   ref);

	eventfd_ctx_put(um->ctx);
	put_device(&um->udev->vdev.device);
	kfree(um);
}

/* Sends the unmask; never takes irq_lock, never waits for a writer. */
static void vfio_user_unmask_work(struct work_struct *work)
{
	struct vfio_user_unmask *um = container_of(work, struct vfio_user_unmask,
						   work);
	struct vfio_user_device *udev = um->udev;

	struct vfio_user_conn *conn = NULL;

	/* A reference, not conn_sem, across the wait: close never waits. */
	if (down_read_trylock(&udev->conn_sem)) {
		conn = udev->conn;
		if (conn)
			kref_get(&conn->ref);
		up_read(&udev->conn_sem);
	}
	if (conn) {
		if (!vfio_user_conn_dead(conn, NULL, 0))
			vfio_user_send_irq_set(conn, VFIO_IRQ_SET_DATA_NONE |
					       VFIO_IRQ_SET_ACTION_UNMASK,
					       VFIO_PCI_INTX_IRQ_INDEX, 0, 1,
					       NULL, 0, NULL, 0);
		vfio_user_conn_put(conn);
	}
	kref_put(&um->ref, vfio_user_unmask_release);
}

static void vfio_user_unmask_kick(struct vfio_user_unmask *um)
{
	kref_get(&um->ref);
	if (!queue_work(vfio_user_wq, &um->work))
		kref_put(&um->ref, vfio_user_unmask_release);
}

/* The eventfd's wakeup, with its wait queue's lock held: atomic. */
static int vfio_user_unmask_wakeup(wait_queue_entry_t *wait, unsigned int mode,
				   int sync, void *key)
{
	struct vfio_user_unmask *um = container_of(wait, struct vfio_user_unmask,
						   wait);
	u64 cnt;

	if (key_to_poll(key) & EPOLLIN) {
		eventfd_ctx_do_read(um->ctx, &cnt);
		vfio_user_unmask_kick(um);
	}
	return 0;
}

static void vfio_user_unmask_queue(struct file *file, wait_queue_head_t *wqh,
				   poll_table *pt)
{
	struct vfio_user_unmask *um = container_of(pt, struct vfio_user_unmask,
						   pt);

	add_wait_queue(wqh, &um->wait);
}

/* Stops waiting on the consumer's unmask eventfd; irq_lock held. */
static void vfio_user_unmask_stop(struct vfio_user_device *udev)
{
	struct vfio_user_unmask *um = udev->unmask;
	u64 cnt;

	lockdep_assert_held(&udev->irq_lock);

	if (!um)
		return;
	spin_lock(&udev->trig_lock);
	udev->unmask = NULL;
	spin_unlock(&udev->trig_lock);
	eventfd_ctx_remove_wait_queue(um->ctx, &um->wait, &cnt);
	if (cancel_work(&um->work))
		kref_put(&um->ref, vfio_user_unmask_release);
	kref_put(&um->ref, vfio_user_unmask_release);
}

/* Waits on @fd, the consumer's INTx unmask eventfd; irq_lock held. */
static int vfio_user_unmask_start(struct vfio_user_device *udev, s32 fd)
{
	struct vfio_user_unmask *um;
	struct file *file;
	__poll_t events;
	int ret = 0;

	lockdep_assert_held(&udev->irq_lock);

	vfio_user_unmask_stop(udev);
	if (fd < 0)
		return 0;
	file = fget(fd);
	if (!file)
		return -EBADF;
	um = kzalloc(sizeof(*um), GFP_KERNEL_ACCOUNT);
	if (!um) {
		ret = -ENOMEM;
		goto out;
	}
	um->ctx = eventfd_ctx_fileget(file);
	if (IS_ERR(um->ctx)) {
		ret = PTR_ERR(um->ctx);
		kfree(um);
		goto out;
	}
	kref_init(&um->ref);
	um->udev = udev;
	get_device(&udev->vdev.device);
	INIT_WORK(&um->work, vfio_user_unmask_work);
	init_waitqueue_func_entry(&um->wait, vfio_user_unmask_wakeup);
	init_poll_funcptr(&um->pt, vfio_user_unmask_queue);
	spin_lock(&udev->trig_lock);
	udev->unmask = um;
	spin_unlock(&udev->trig_lock);
	events = vfs_poll(file, &um->pt);
	/* Signalled before we looked: an unmask is due now. */
	if (events & EPOLLIN)
		vfio_user_unmask_kick(um);
out:
	fput(file);
	return ret;
}

/**
 * vfio_user_irqs_unmask_kick() - send an INTx unmask after a re-attach
 * @udev: the device
 *
 * The consumer may have signalled its unmask eventfd while no server was
 * there to tell. Unmasking an unmasked INTx is harmless.
 *
 * Context: any; never waits.
 */
void vfio_user_irqs_unmask_kick(struct vfio_user_device *udev)
{
	spin_lock(&udev->trig_lock);
	if (udev->unmask)
		vfio_user_unmask_kick(udev->unmask);
	spin_unlock(&udev->trig_lock);
}

/*
 * DATA_EVENTFD with ACTION_TRIGGER: the files are taken first (the consumer
 * may close the fds), kept for a re-attach once the server has them.
 */
static int vfio_user_set_trigger_fds(struct vfio_user_device *udev,
				     struct vfio_user_conn *conn,
				     struct vfio_irq_set *hdr, const s32 *fds)
{
	struct vfio_user_irq *irq = &udev->irqs[hdr->index];
	struct file **files;
	int ret = 0;
	u32 i;

	files = kcalloc(hdr->count, sizeof(*files), GFP_KERNEL);
	if (!files)
		return -ENOMEM;
	for (i = 0; i < hdr->count; i++) {
		if (fds[i] < 0)
			continue;
		files[i] = eventfd_fget(fds[i]);
		if (IS_ERR(files[i])) {
			ret = PTR_ERR(files[i]);
			files[i] = NULL;
			break;
		}
	}
	if (!ret)
		ret = vfio_user_send_eventfds(conn, hdr->flags, hdr->index,
					      hdr->start, hdr->count, fds);
	if (!ret) {
		vfio_user_set_triggers(udev, irq, hdr->start, hdr->count, files);
	} else {
		for (i = 0; i < hdr->count; i++)
			if (files[i])
				fput(files[i]);
	}
	kfree(files);
	return ret;
}

/*
 * DATA_EVENTFD with ACTION_MASK or _UNMASK: as vfio-pci, only an INTx
 * unmask eventfd exists; it stays in the module (see above).
 */
static int vfio_user_set_mask_fds(struct vfio_user_device *udev,
				  struct vfio_irq_set *hdr, const s32 *fds)
{
	if (hdr->index != VFIO_PCI_INTX_IRQ_INDEX ||
	    !(hdr->flags & VFIO_IRQ_SET_ACTION_UNMASK))
		return -ENOTTY;
	if (hdr->start || hdr->count != 1)
		return -EINVAL;
	return vfio_user_unmask_start(udev, fds[0]);
}

/**
 * vfio_user_set_irqs() - VFIO_DEVICE_SET_IRQS
 * @udev: the device
 * @arg: user pointer to struct vfio_irq_set
 *
 * Context: process context of the consumer (its fds are sent); caller
 * holds conn_sem for reading. Sleeps, each message bounded by the timeout.
 * Return: 0 or a negative errno.
 */
long vfio_user_set_irqs(struct vfio_user_device *udev, unsigned long arg)
{
	unsigned long minsz = offsetofend(struct vfio_irq_set, count);
	struct vfio_user_conn *conn = udev->conn;
	struct vfio_irq_set hdr;
	struct vfio_user_irq *irq;
	size_t data_size = 0;
	u32 type, index;
	u8 *data = NULL;
	int ret;

	if (copy_from_user(&hdr, (void __user *)arg, minsz))
		return -EFAULT;
	if (hdr.argsz < minsz || hdr.index >= VFIO_PCI_NUM_IRQS)
		return -EINVAL;
	index = array_index_nospec(hdr.index, VFIO_PCI_NUM_IRQS);
	hdr.index = index;
	irq = &udev->irqs[index];
	ret = vfio_set_irqs_validate_and_prepare(&hdr, irq->count,
						 VFIO_PCI_NUM_IRQS, &data_size);
	if (ret)
		return ret;
	if (!irq->count)
		return -EINVAL;
	if (data_size) {
		data = memdup_user((void __user *)(arg + minsz), data_size);
		if (IS_ERR(data))
			return PTR_ERR(data);
	}
	type = hdr.flags & VFIO_IRQ_SET_DATA_TYPE_MASK;

	if (mutex_lock_killable(&udev->irq_lock)) {
		kfree(data);
		return -EINTR;
	}
	if (index == VFIO_PCI_REQ_IRQ_INDEX) {
		ret = vfio_user_set_req(udev, &hdr, (s32 *)data);
		goto out;
	}

	if (type == VFIO_IRQ_SET_DATA_EVENTFD &&
	    (hdr.flags & VFIO_IRQ_SET_ACTION_TRIGGER)) {
		ret = vfio_user_set_trigger_fds(udev, conn, &hdr,
						(const s32 *)data);
	} else if (type == VFIO_IRQ_SET_DATA_EVENTFD) {
		ret = vfio_user_set_mask_fds(udev, &hdr, (const s32 *)data);
	} else {
		ret = vfio_user_send_irq_set(conn, hdr.flags, index, hdr.start,
					     hdr.count, data, data_size, NULL, 0);
		if (!ret && type == VFIO_IRQ_SET_DATA_NONE && !hdr.count &&
		    (hdr.flags & VFIO_IRQ_SET_ACTION_TRIGGER)) {
			vfio_user_drop_triggers(udev, irq, 0, irq->count);
			if (index == VFIO_PCI_INTX_IRQ_INDEX)
				vfio_user_unmask_stop(udev);
		}
	}
out:
	mutex_unlock(&udev->irq_lock);
	kfree(data);
	return ret;
}

/* Drops a table's trigger files and frees it. */
static void vfio_user_irqs_put(struct vfio_user_irq *irqs)
{
	u32 index, i;

	if (!irqs)
		return;
	for (index = 0; index < VFIO_PCI_NUM_IRQS; index++) {
		for (i = 0; irqs[index].triggers && i < irqs[index].count; i++)
			if (irqs[index].triggers[i])
				fput(irqs[index].triggers[i]);
		kfree(irqs[index].triggers);
	}
	kfree(irqs);
}

/*
 * Sends the eventfds in @files[0, n) for vectors [start, start + n) in one
 * SET_IRQS: they are installed in the caller's (the attaching writer's) fd
 * table for the time of the send, since SCM_RIGHTS takes fd numbers.
 */
static int vfio_user_replay_run(struct vfio_user_conn *conn, u32 index,
				u32 start, struct file **files, u32 n)
{
	int fds[VFIO_USER_MAX_MSG_FDS];
	u32 i, got;
	int ret = 0;

	for (got = 0; got < n; got++) {
		fds[got] = get_unused_fd_flags(O_CLOEXEC);
		if (fds[got] < 0) {
			ret = fds[got];
			break;
		}
		fd_install(fds[got], get_file(files[got]));
	}
	if (!ret)
		ret = vfio_user_send_irq_set(conn, VFIO_IRQ_SET_DATA_EVENTFD |
					     VFIO_IRQ_SET_ACTION_TRIGGER,
					     index, start, n, NULL, 0, fds, n);
	for (i = 0; i < got; i++)
		close_fd(fds[i]);
	return ret;
}

/* Takes a reference to every trigger file of @index, under trig_lock. */
static struct file **vfio_user_snapshot(struct vfio_user_device *udev,
					u32 index, u32 *count)
{
	struct file **files;
	u32 i, n;

	spin_lock(&udev->trig_lock);
	n = udev->irqs[index].count;
	spin_unlock(&udev->trig_lock);
	files = kcalloc(max(n, 1U), sizeof(*files), GFP_KERNEL);
	if (!files)
		return NULL;
	spin_lock(&udev->trig_lock);
	for (i = 0; i < n; i++) {
		files[i] = udev->irqs[index].triggers[i];
		if (files[i])
			get_file(files[i]);
	}
	spin_unlock(&udev->trig_lock);
	*count = n;
	return files;
}

/**
 * vfio_user_irqs_replay() - send the consumer's eventfds to a new server
 * @udev: the device, open by a consumer
 * @conn: the new connection, not yet published
 *
 * Takes a reference to each eventfd (no lock held while the server is
 * asked), then sends each run of consecutive vectors in SET_IRQS messages
 * of up to max_msg_fds fds. The attach checks vfio_user_irqs_gen() before
 * it publishes, so a consumer changing its eventfds meanwhile is noticed.
 *
 * Context: process context of the sysfs writer; sleeps killably, each
 * message bounded by the timeout.
 * Return: 0 or a negative errno.
 */
int vfio_user_irqs_replay(struct vfio_user_device *udev,
			  struct vfio_user_conn *conn)
{
	u32 max = vfio_user_max_fds(conn);
	u32 index, i, n, count;
	struct file **files;
	int ret = 0;

	for (index = 0; index < VFIO_PCI_REQ_IRQ_INDEX && !ret; index++) {
		files = vfio_user_snapshot(udev, index, &count);
		if (!files)
			return -ENOMEM;
		for (i = 0; i < count && !ret; i += n) {
			if (!files[i]) {
				n = 1;
				continue;
			}
			if (!max) {
				dev_err(vfio_user_dev(udev),
					"server takes no fds (max_msg_fds 0): cannot replay eventfds\n");
				ret = -EOPNOTSUPP;
				break;
			}
			for (n = 1; i + n < count && files[i + n] && n < max; n++)
				;
			ret = vfio_user_replay_run(conn, index, i, files + i, n);
		}
		for (i = 0; i < count; i++)
			if (files[i])
				fput(files[i]);
		kfree(files);
	}
	return ret;
}

/**
 * vfio_user_irqs_gen() - the generation of the consumer's eventfds
 * @udev: the device
 *
 * Return: a number that changes with every change of the trigger files.
 */
u64 vfio_user_irqs_gen(struct vfio_user_device *udev)
{
	u64 gen;

	spin_lock(&udev->trig_lock);
	gen = udev->irq_gen;
	spin_unlock(&udev->trig_lock);
	return gen;
}

/**
 * vfio_user_irqs_take() - install a new server's IRQ info
 * @udev: the device, not open
 * @irqs: VFIO_PCI_NUM_IRQS entries from vfio_user_fetch_info(); their
 *	trigger arrays move to the device, @irqs is left empty
 *
 * Context: process context; caller holds conn_sem for writing.
 * Return: 0 or -ENOMEM.
 */
int vfio_user_irqs_take(struct vfio_user_device *udev,
			struct vfio_user_irq *irqs)
{
	struct vfio_user_irq *new, *old;

	new = kmemdup(irqs, VFIO_PCI_NUM_IRQS * sizeof(*irqs), GFP_KERNEL);
	if (!new)
		return -ENOMEM;
	memset(irqs, 0, VFIO_PCI_NUM_IRQS * sizeof(*irqs));
	mutex_lock(&udev->irq_lock);
	spin_lock(&udev->trig_lock);
	old = udev->irqs;
	udev->irqs = new;
	udev->irq_gen++;
	spin_unlock(&udev->trig_lock);
	mutex_unlock(&udev->irq_lock);
	vfio_user_irqs_put(old);
	return 0;
}

/**
 * vfio_user_irqs_release() - drop every eventfd of a closing consumer
 * @udev: the device
 *
 * Asks the server (when there is a live one) to disable what it has, then
 * drops the module's references.
 *
 * Context: process context; caller holds conn_sem for reading.
 */
void vfio_user_irqs_release(struct vfio_user_device *udev)
{
	struct vfio_user_conn *conn = udev->conn;
	u32 index, i;

	mutex_lock(&udev->irq_lock);
	for (index = 0; index < VFIO_PCI_NUM_IRQS; index++) {
		struct vfio_user_irq *irq = &udev->irqs[index];
		bool any = false;

		for (i = 0; i < irq->count; i++)
			any |= !!irq->triggers[i];
		if (!any)
			continue;
		if (index != VFIO_PCI_REQ_IRQ_INDEX && conn &&
		    !vfio_user_conn_dead(conn, NULL, 0))
			vfio_user_send_irq_set(conn, VFIO_IRQ_SET_DATA_NONE |
					       VFIO_IRQ_SET_ACTION_TRIGGER,
					       index, 0, 0, NULL, 0, NULL, 0);
		vfio_user_drop_triggers(udev, irq, 0, irq->count);
	}
	vfio_user_unmask_stop(udev);
	mutex_unlock(&udev->irq_lock);
}

/**
 * vfio_user_irqs_free() - free the IRQ table
 * @udev: the device
 *
 * Context: process context; no consumer has the device open.
 */
void vfio_user_irqs_free(struct vfio_user_device *udev)
{
	mutex_lock(&udev->irq_lock);
	vfio_user_unmask_stop(udev);
	mutex_unlock(&udev->irq_lock);
	vfio_user_irqs_put(udev->irqs);
	udev->irqs = NULL;
}
