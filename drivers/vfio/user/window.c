// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio_user_mdev - the shared-memory DMA window.
 *
 * Servers that DMA through shared memory (SPDK's NVMe target, rust-vmm
 * servers, libvfio-user's direct DMA) want DMA regions backed by an fd they
 * can mmap. VFIO never tells an mdev what the consumer maps, so the module
 * serves the consumer's memory itself: each attach makes a file (an inode
 * of the module's own pseudo filesystem, so that its mappings can be zapped
 * without touching anybody else's), announces [0, dma_window) as DMA
 * regions backed by it, file offset = IOVA, and the server mmaps it.
 *
 * A fault in the server's mapping pins the consumer's page behind the IOVA
 * with vfio_pin_pages() (type1 accounts it, as for any mdev; iommufd too)
 * and maps it with a PFN mapping, no page reference and no rmap: the pin
 * keeps the page, and the module zaps the mapping before it unpins.
 * Pinning takes the consumer's mmap lock and IOMMU locks, so it never runs
 * under the server's mmap lock: the fault drops that lock, pins a batch
 * (the 2 MiB around the fault, in one vfio_pin_pages() call) and asks the
 * core to retry; the retry finds the batch pinned and maps all of it under
 * the server's mmap lock (fault-around), so that touching 1 GiB takes 512
 * pin calls, not 262,144. An IOVA the consumer has not mapped gets SIGBUS,
 * as does a write to one it mapped read-only.
 *
 * The dma_unmap op invalidates the range: it keeps new pins and mappings
 * out of it, zaps the server's mappings, waits for pins in progress (which
 * drop what they got: they never wait on the server) and unpins before it
 * returns; the range stays closed for VFIO_USER_REOPEN_MS more, until type1
 * has let go of it. A fault in a closed range waits until it opens and is
 * retried: a page the consumer still maps (of a batch the unmap cut) is
 * pinned again, an unmapped one gets SIGBUS. The same runs for everything
 * when the consumer closes the device, and, for good, when the connection
 * is detached or broken (the window is revoked: later faults get SIGBUS,
 * whatever the server still maps).
 *
 * Locking: the server's mmap lock > @lock; @dma_sem (read) > @lock;
 * udev->window_mutex > @lock; udev->log_lock (dirty.c) > window_mutex
 * (a DMA log report); the consumer's mmap lock and the IOMMU
 * driver's locks are taken with none of ours held but @dma_sem (read) and
 * window_mutex (unpinning). An invalidation waits, with window_mutex held,
 * for pins in progress; those wait for the IOMMU driver's lock only (see
 * vfio_user_window_unpin() for what that means with type1).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/file.h>
#include <linux/fs.h>
#include <linux/iommu.h>
#include <linux/lockdep.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mount.h>
#include <linux/pseudo_fs.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/vfio.h>
#include <linux/wait.h>
#include <linux/xarray.h>

#include "compat.h"
#include "vfio_user_mdev.h"

#define VFIO_USER_WINDOW_MAGIC	0x76667577	/* "vfuw" */

/* Pages pinned and mapped per fault: 2 MiB (one vfio_pin_pages() call). */
#define VFIO_USER_PIN_BATCH	(SZ_2M >> PAGE_SHIFT)

/*
 * How long a range the consumer unmapped stays closed to new pins after
 * the dma_unmap op returned: type1 checks for pins once more and calls the
 * op again if it finds one (BUG() after ten times), so a server must not
 * pin the range again before type1 has let go of it.
 */
#define VFIO_USER_REOPEN_MS	10

static struct vfsmount *vfio_user_window_mnt;

/**
 * struct vfio_user_pin - pages pinned by one vfio_pin_pages() call
 * @index: first page (IOVA >> PAGE_SHIFT)
 * @npages: pages, at most VFIO_USER_PIN_BATCH
 * @ro: pinned for reading only (the consumer mapped the IOVA read-only)
 * @pages: the pinned pages
 *
 * Unpinned as a whole, with the IOVA range it was pinned with (iommufd
 * wants exactly that).
 */
struct vfio_user_pin {
	u64 index;
	unsigned int npages;
	bool ro;
	struct page *pages[];
};

/**
 * struct vfio_user_pinner - a pin in progress, on the window's list
 * @node: in &vfio_user_window.pinners, under its lock
 * @first: first page index it may pin
 * @last: end of its range, exclusive
 * @stale: an invalidation overlapped it: it drops what it pinned; under
 *	the window's lock
 */
struct vfio_user_pinner {
	struct list_head node;
	u64 first;
	u64 last;
	bool stale;
};

/**
 * struct vfio_user_window - the DMA window of one attach
 * @file: the file the server maps; holds the window (private_data)
 * @conn: the connection whose DMA_MAP announced it; alive while the
 *	window is the device's (revoked before the connection goes)
 * @pages: window size in pages, from IOVA 0
 * @lock: protects everything below
 * @udev: the device, NULL once the window is revoked
 * @pins: page index -> struct vfio_user_pin covering it
 * @failed: pid -> page index whose pin just failed in that thread: its
 *	retry of the fault gets SIGBUS
 * @pinners: pins in progress (struct vfio_user_pinner)
 * @inval_first: start of the range closed to pins and mappings: being
 *	invalidated, or unmapped a moment ago (page index)
 * @inval_last: its end, exclusive; equal to @inval_first when none
 * @invalidating: an invalidation is in progress
 * @reopen: opens the range again VFIO_USER_REOPEN_MS after an unmap
 * @nr_stale: pinners an invalidation has made stale, still running
 * @wq: an invalidation waits here for @nr_stale to reach 0, a fault for
 *	the invalidation of its page to end
 * @nr_pinned: pages pinned now
 */
struct vfio_user_window {
	struct file *file;
	struct vfio_user_conn *conn;
	u64 pages;

	struct mutex lock;	/* everything below */
	struct vfio_user_device *udev;
	struct xarray pins;
	struct xarray failed;
	struct list_head pinners;
	u64 inval_first;
	u64 inval_last;
	bool invalidating;
	struct delayed_work reopen;
	unsigned int nr_stale;
	wait_queue_head_t wq;
	unsigned long nr_pinned;
};

/* Under @lock, or, for a wait condition, without it. */
static bool vfio_user_window_inval(struct vfio_user_window *w, u64 index)
{
	return index >= READ_ONCE(w->inval_first) &&
	       index < READ_ONCE(w->inval_last);
}

static bool vfio_user_window_inval_overlaps(struct vfio_user_window *w,
					    u64 first, u64 last)
{
	return first < w->inval_last && w->inval_first < last;
}

/* Maps what is pinned of [first, last), under the server's mmap lock. */
static vm_fault_t vfio_user_window_map(struct vfio_user_window *w,
				       struct vm_fault *vmf, u64 first,
				       u64 last)
{
	struct vm_area_struct *vma = vmf->vma;
	u64 index = vmf->pgoff, i;
	vm_fault_t ret = VM_FAULT_NOPAGE;

	lockdep_assert_held(&w->lock);

	for (i = first; i < last; i++) {
		struct vfio_user_pin *pin = xa_load(&w->pins, i);
		unsigned long addr;
		vm_fault_t r;
		pgprot_t prot;

		if (!pin || vfio_user_window_inval(w, i))
			continue;
		prot = vm_get_page_prot(pin->ro ? vma->vm_flags & ~VM_WRITE :
					vma->vm_flags);
		addr = vma->vm_start + ((i - vma->vm_pgoff) << PAGE_SHIFT);
		r = vmf_insert_pfn_prot(vma, addr,
					page_to_pfn(pin->pages[i - pin->index]),
					prot);
		if ((r & VM_FAULT_ERROR) && i == index)
			ret = r;
		if (r & VM_FAULT_OOM)
			break;
	}
	return ret;
}

/* Pins @n pages from @index, read-only or read and write. */
static struct vfio_user_pin *
vfio_user_window_pin_pages(struct vfio_user_device *udev, u64 index,
			   unsigned int n, bool ro)
{
	struct vfio_user_pin *pin;
	int ret;

	pin = kvzalloc(struct_size(pin, pages, n), GFP_KERNEL);
	if (!pin)
		return ERR_PTR(-ENOMEM);
	pin->index = index;
	pin->npages = n;
	pin->ro = ro;
	ret = vfio_pin_pages(&udev->vdev, index << PAGE_SHIFT, n,
			     ro ? IOMMU_READ : IOMMU_READ | IOMMU_WRITE,
			     pin->pages);
	if (ret != n) {
		kvfree(pin);
		return ERR_PTR(ret < 0 ? ret : -EFAULT);
	}
	return pin;
}

/*
 * vfio_iommu_type1 calls dma_unmap with its device_list_lock held and its
 * iommu->lock dropped, and vfio_unpin_pages() takes iommu->lock again: the
 * reverse of the order in which type1 itself takes them (registering or
 * unregistering a device, and the notify of another VFIO_IOMMU_UNMAP_DMA).
 * Every mdev driver that unpins in dma_unmap makes that inversion (kvmgt,
 * vfio-ccw, vfio-ap), and what such a driver holds or waits for across it
 * extends it: our window_mutex (held across unpins in close and revoke
 * too) and an invalidation's wait for pins in progress, which may wait for
 * iommu->lock. It can deadlock only when a device of the same container
 * is opened or closed, or a second unmap of the container notifies, at
 * that very moment. lockdep reports it at the first unpin and is then off
 * for the rest of the boot. So with the container our unpins are hidden
 * from lockdep (with what type1 takes inside, the consumer's mmap lock for
 * the locked_vm accounting included), and nothing else; iommufd has no
 * such inversion and stays checked.
 */
static void vfio_user_window_unpin(struct vfio_user_device *udev,
				   struct vfio_user_pin *pin)
{
	bool container = !READ_ONCE(udev->iommufd_bound);

	/* written through the server's mapping up to now, for all we know */
	if (!pin->ro)
		vfio_user_dirty_mark(udev, pin->index << PAGE_SHIFT,
				     (u64)pin->npages << PAGE_SHIFT);
	if (container)
		lockdep_off();
	vfio_unpin_pages(&udev->vdev, pin->index << PAGE_SHIFT, pin->npages);
	if (container)
		lockdep_on();
	kvfree(pin);
}

/* Makes @pin the window's for its pages; false if any is taken. */
static bool vfio_user_window_add(struct vfio_user_window *w,
				 struct vfio_user_pin *pin)
{
	u64 i;

	lockdep_assert_held(&w->lock);

	for (i = 0; i < pin->npages; i++)
		if (xa_insert(&w->pins, pin->index + i, pin, GFP_KERNEL))
			break;
	if (i == pin->npages) {
		WRITE_ONCE(w->nr_pinned, w->nr_pinned + pin->npages);
		return true;
	}
	while (i--)
		xa_erase(&w->pins, pin->index + i);
	return false;
}

/*
 * The slow half of a fault, with the server's mmap lock dropped: pins the
 * run of unpinned pages around @index within [first, last), in one call,
 * else @index alone. On failure leaves a note that the retry of this
 * fault gets SIGBUS.
 */
static void vfio_user_window_pin(struct vfio_user_window *w, u64 index,
				 u64 first, u64 last, bool write)
{
	struct vfio_user_pinner me = { };
	struct vfio_user_device *udev;
	struct vfio_user_pin *pin = ERR_PTR(-ENODEV);
	bool added = false;
	u64 i;

	mutex_lock(&w->lock);
	udev = w->udev;
	if (!udev)
		goto fail;
	if (vfio_user_window_inval(w, index)) {
		/*
		 * Being unmapped, or only unpinned (a batch the unmap cut):
		 * the retry after it finds out which.
		 */
		mutex_unlock(&w->lock);
		wait_event_killable(w->wq, !vfio_user_window_inval(w, index));
		return;
	}
	if (xa_load(&w->pins, index)) {
		/* Pinned meanwhile: the retry maps it. */
		mutex_unlock(&w->lock);
		return;
	}
	for (i = index; i > first && !xa_load(&w->pins, i - 1); i--)
		;
	me.first = i;
	for (i = index + 1; i < last && !xa_load(&w->pins, i); i++)
		;
	me.last = i;
	if (vfio_user_window_inval_overlaps(w, me.first, me.last)) {
		me.first = index;
		me.last = index + 1;
	}
	list_add(&me.node, &w->pinners);
	mutex_unlock(&w->lock);

	/* The consumer closing the device waits for us, not we for it. */
	down_read(&udev->dma_sem);
	if (udev->dma_enabled) {
		pin = vfio_user_window_pin_pages(udev, me.first,
						 me.last - me.first, false);
		if (IS_ERR(pin) && me.last - me.first > 1)
			pin = vfio_user_window_pin_pages(udev, index, 1, false);
		/* Read-only IOVA: this page alone, for a read. */
		if (PTR_ERR_OR_ZERO(pin) == -EPERM && !write)
			pin = vfio_user_window_pin_pages(udev, index, 1, true);
	}
	mutex_lock(&w->lock);
	if (!IS_ERR(pin) && !me.stale && w->udev)
		added = vfio_user_window_add(w, pin);
	if (!IS_ERR(pin) && !added) {
		/* Raced with an invalidation, or another pin of the page. */
		mutex_unlock(&w->lock);
		vfio_user_window_unpin(udev, pin);
		mutex_lock(&w->lock);
		/* The retry pins again, or fails if the IOVA is gone. */
		pin = NULL;
	}
	mutex_unlock(&w->lock);
	up_read(&udev->dma_sem);

	mutex_lock(&w->lock);
	list_del(&me.node);
	if (me.stale && !--w->nr_stale)
		wake_up_all(&w->wq);
	if (!IS_ERR(pin))
		goto out;
fail:
	/* A thread has one fault in flight: its note is for that one. */
	if (xa_err(xa_store(&w->failed, current->pid, xa_mk_value(index),
			    GFP_KERNEL)))
		pr_warn_ratelimited("cannot note a failed DMA window fault\n");
out:
	mutex_unlock(&w->lock);
}

/**
 * vfio_user_window_fault() - vm_operations_struct.fault of the window
 * @vmf: the fault
 *
 * Maps the pinned pages around the fault; when the faulting page is not
 * pinned, drops the mmap lock, pins and has the fault retried.
 *
 * Context: the server's mmap lock (or VMA lock) held.
 * Return: VM_FAULT_NOPAGE, VM_FAULT_RETRY (lock dropped), or
 * VM_FAULT_SIGBUS for an IOVA the module cannot pin.
 */
static vm_fault_t vfio_user_window_fault(struct vm_fault *vmf)
{
	struct vm_area_struct *vma = vmf->vma;
	struct vfio_user_window *w = vma->vm_file->private_data;
	bool write = vmf->flags & FAULT_FLAG_WRITE;
	u64 index = vmf->pgoff, first, last;
	struct vfio_user_pin *pin;
	struct file *file;
	vm_fault_t ret = VM_FAULT_SIGBUS;
	void *failed;

	if (index >= w->pages)
		return VM_FAULT_SIGBUS;
	first = max_t(u64, ALIGN_DOWN(index, VFIO_USER_PIN_BATCH),
		      vma->vm_pgoff);
	last = min3(ALIGN_DOWN(index, VFIO_USER_PIN_BATCH) + VFIO_USER_PIN_BATCH,
		    (u64)vma->vm_pgoff + vma_pages(vma), w->pages);

	mutex_lock(&w->lock);
	if (!w->udev)
		goto out_unlock;
	pin = vfio_user_window_inval(w, index) ? NULL :
	      xa_load(&w->pins, index);
	if (pin) {
		if (!(write && pin->ro))
			ret = vfio_user_window_map(w, vmf, first, last);
		goto out_unlock;
	}
	/* The retry of a fault whose pin failed: SIGBUS. */
	failed = xa_erase(&w->failed, current->pid);
	if (failed && xa_to_value(failed) == index)
		goto out_unlock;
	mutex_unlock(&w->lock);

	/* Pinning takes the consumer's mmap lock: never under ours. */
	if (!(vmf->flags & FAULT_FLAG_ALLOW_RETRY))
		return VM_FAULT_SIGBUS;
	if (vmf->flags & FAULT_FLAG_RETRY_NOWAIT)
		return VM_FAULT_RETRY;
	file = get_file(vma->vm_file);
	vfio_user_release_fault_lock(vmf);
	vfio_user_window_pin(w, index, first, last, write);
	fput(file);
	return VM_FAULT_RETRY;

out_unlock:
	mutex_unlock(&w->lock);
	return ret;
}

/*
 * A write to a page mapped read-only: the consumer mapped its IOVA
 * read-only (else the page was mapped writable at the fault), or the
 * server made its mapping writable again with mprotect().
 */
static vm_fault_t vfio_user_window_pfn_mkwrite(struct vm_fault *vmf)
{
	struct vfio_user_window *w = vmf->vma->vm_file->private_data;
	struct vfio_user_pin *pin;
	vm_fault_t ret = VM_FAULT_SIGBUS;

	mutex_lock(&w->lock);
	pin = w->udev ? xa_load(&w->pins, vmf->pgoff) : NULL;
	if (pin && vfio_user_window_inval(w, vmf->pgoff))
		ret = VM_FAULT_NOPAGE;	/* the zap comes; then a new fault */
	else if (pin && !pin->ro)
		ret = 0;
	mutex_unlock(&w->lock);
	return ret;
}

static const struct vm_operations_struct vfio_user_window_vm_ops = {
	.fault		= vfio_user_window_fault,
	.pfn_mkwrite	= vfio_user_window_pfn_mkwrite,
};

static int vfio_user_window_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct vfio_user_window *w = file->private_data;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (vma->vm_pgoff >= w->pages ||
	    vma_pages(vma) > w->pages - vma->vm_pgoff)
		return -EINVAL;
	vfio_user_vm_flags_set(vma, VM_PFNMAP | VM_IO | VM_DONTEXPAND |
			       VM_DONTDUMP);
	vma->vm_ops = &vfio_user_window_vm_ops;
	return 0;
}

static int vfio_user_window_release(struct inode *inode, struct file *file)
{
	struct vfio_user_window *w = file->private_data;

	/* The device revoked the window before it let go of the file. */
	WARN_ON_ONCE(w->udev || !xa_empty(&w->pins));
	cancel_delayed_work_sync(&w->reopen);
	xa_destroy(&w->pins);
	xa_destroy(&w->failed);
	mutex_destroy(&w->lock);
	kfree(w);
	return 0;
}

static const struct file_operations vfio_user_window_fops = {
	.owner		= THIS_MODULE,
	.mmap		= vfio_user_window_mmap,
	.release	= vfio_user_window_release,
	.llseek		= noop_llseek,
};

/*
 * Keeps pins and mappings out of [first, last) (page indexes, widened to
 * the pins it cuts), zaps the server's mappings, waits for the pins in
 * progress there and unpins. With @revoke the window is done for;
 * @unmapped (the dma_unmap op): the range stays closed a moment after.
 */
static void vfio_user_window_invalidate(struct vfio_user_window *w,
					struct vfio_user_device *udev,
					u64 first, u64 last, bool revoke,
					bool unmapped)
{
	struct vfio_user_pinner *p;
	struct vfio_user_pin *pin;
	unsigned long index;

	mutex_lock(&w->lock);
	pin = first < last ? xa_load(&w->pins, first) : NULL;
	if (pin)
		first = pin->index;
	pin = first < last ? xa_load(&w->pins, last - 1) : NULL;
	if (pin)
		last = pin->index + pin->npages;
	/* A range unmapped a moment ago stays closed too. */
	if (w->inval_first < w->inval_last) {
		first = min(first, w->inval_first);
		last = max(last, w->inval_last);
	}
	w->invalidating = true;
	WRITE_ONCE(w->inval_first, first);
	WRITE_ONCE(w->inval_last, last);
	if (revoke)
		w->udev = NULL;
	list_for_each_entry(p, &w->pinners, node) {
		if (p->stale || !(revoke || (p->first < last && first < p->last)))
			continue;
		p->stale = true;
		w->nr_stale++;
	}
	mutex_unlock(&w->lock);

	if (first < last)
		unmap_mapping_range(w->file->f_mapping,
				    (loff_t)first << PAGE_SHIFT,
				    (loff_t)(last - first) << PAGE_SHIFT, 1);

	/* Pins in progress end without waiting on anything of ours. */
	wait_event(w->wq, !READ_ONCE(w->nr_stale));

	for (;;) {
		u64 i;

		mutex_lock(&w->lock);
		index = first;
		pin = first < last ? xa_find(&w->pins, &index, last - 1,
					     XA_PRESENT) : NULL;
		if (pin) {
			for (i = 0; i < pin->npages; i++)
				xa_erase(&w->pins, pin->index + i);
			WRITE_ONCE(w->nr_pinned, w->nr_pinned - pin->npages);
		}
		mutex_unlock(&w->lock);
		if (!pin)
			break;
		vfio_user_window_unpin(udev, pin);
		cond_resched();
	}

	mutex_lock(&w->lock);
	w->invalidating = false;
	if (!unmapped) {
		WRITE_ONCE(w->inval_first, 0);
		WRITE_ONCE(w->inval_last, 0);
	}
	mutex_unlock(&w->lock);
	if (unmapped)
		mod_delayed_work(vfio_user_wq, &w->reopen,
				 msecs_to_jiffies(VFIO_USER_REOPEN_MS));
	else
		wake_up_all(&w->wq);
}

/* Opens the range of the last unmap again; its faults retry. */
static void vfio_user_window_reopen(struct work_struct *work)
{
	struct vfio_user_window *w = container_of(to_delayed_work(work),
						  struct vfio_user_window,
						  reopen);

	mutex_lock(&w->lock);
	if (!w->invalidating) {
		WRITE_ONCE(w->inval_first, 0);
		WRITE_ONCE(w->inval_last, 0);
	}
	mutex_unlock(&w->lock);
	wake_up_all(&w->wq);
}

/**
 * vfio_user_window_create() - make the DMA window of an attach
 * @udev: the device, with no window
 * @conn: the connection that announces it
 * @size: bytes from IOVA 0, a multiple of 2 MiB
 *
 * The device holds the file until vfio_user_window_revoke(); the server
 * gets it with its DMA_MAP (vfio_user_window_install()).
 *
 * Context: process context.
 * Return: 0 or a negative errno.
 */
int vfio_user_window_create(struct vfio_user_device *udev,
			    struct vfio_user_conn *conn, u64 size)
{
	struct vfio_user_window *w;
	struct file *file;
	int ret;

	w = kzalloc(sizeof(*w), GFP_KERNEL);
	if (!w)
		return -ENOMEM;
	mutex_init(&w->lock);
	xa_init(&w->pins);
	xa_init(&w->failed);
	INIT_LIST_HEAD(&w->pinners);
	init_waitqueue_head(&w->wq);
	INIT_DELAYED_WORK(&w->reopen, vfio_user_window_reopen);
	w->pages = size >> PAGE_SHIFT;
	w->udev = udev;
	w->conn = conn;

	file = vfio_user_pseudo_file("[vfio-user-dma]", &vfio_user_window_fops,
				     w);
	if (IS_ERR(file)) {
		ret = PTR_ERR(file);
		goto err_free;
	}
	w->file = file;

	mutex_lock(&udev->window_mutex);
	WARN_ON_ONCE(udev->window);
	udev->window = w;
	mutex_unlock(&udev->window_mutex);
	return 0;

err_free:
	mutex_destroy(&w->lock);
	kfree(w);
	return ret;
}

/**
 * vfio_user_pseudo_file() - a file of its own inode on the module's fs
 * @name: its name in /proc/PID/maps
 * @fops: its operations, with .owner set: the file holds the module
 * @priv: its private_data
 *
 * Each file has an inode of its own, so that unmap_mapping_range() on
 * its mapping zaps its mappings and nobody else's.
 *
 * Context: process context.
 * Return: the file (O_RDWR), or an ERR_PTR.
 */
struct file *vfio_user_pseudo_file(const char *name,
				   const struct file_operations *fops,
				   void *priv)
{
	struct inode *inode;
	struct file *file;

	/* The file's last fput drops the module reference its fops hold. */
	if (!try_module_get(THIS_MODULE))
		return ERR_PTR(-ENODEV);
	inode = alloc_anon_inode(vfio_user_window_mnt->mnt_sb);
	if (IS_ERR(inode)) {
		module_put(THIS_MODULE);
		return ERR_CAST(inode);
	}
	file = alloc_file_pseudo(inode, vfio_user_window_mnt, name, O_RDWR,
				 fops);
	if (IS_ERR(file)) {
		iput(inode);
		module_put(THIS_MODULE);
		return file;
	}
	file->private_data = priv;
	return file;
}

/**
 * vfio_user_window_install() - put the window's file in the caller's fd table
 * @udev: the device
 *
 * For the DMA_MAP messages that hand it to the server (SCM_RIGHTS takes fd
 * numbers); the caller closes the fd with close_fd() once they are sent.
 *
 * Context: process context of the attaching writer.
 * Return: the fd, or a negative errno.
 */
int vfio_user_window_install(struct vfio_user_device *udev)
{
	int fd;

	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0)
		return fd;
	mutex_lock(&udev->window_mutex);
	if (udev->window) {
		fd_install(fd, get_file(udev->window->file));
	} else {
		put_unused_fd(fd);
		fd = -ENODEV;
	}
	mutex_unlock(&udev->window_mutex);
	return fd;
}

/**
 * vfio_user_window_unmap() - the consumer unmapped [@iova, @iova + @length)
 * @udev: the device
 * @iova: start
 * @length: bytes
 *
 * Zaps the server's mappings of the range and unpins it before it returns;
 * never waits on the server.
 *
 * Context: process context (the dma_unmap op).
 */
void vfio_user_window_unmap(struct vfio_user_device *udev, u64 iova,
			    u64 length)
{
	struct vfio_user_window *w;
	u64 end, last;

	if (!length)
		return;
	if (check_add_overflow(iova, length, &end))
		end = U64_MAX;
	last = (end >> PAGE_SHIFT) + !!offset_in_page(end);
	mutex_lock(&udev->window_mutex);
	w = udev->window;
	if (w && iova >> PAGE_SHIFT < w->pages)
		vfio_user_window_invalidate(w, udev, iova >> PAGE_SHIFT,
					    min(last, w->pages), false, true);
	mutex_unlock(&udev->window_mutex);
}

/**
 * vfio_user_window_mark_pinned() - log the window's writable pins as dirty
 * @udev: the device
 * @iova: start of the range reported
 * @len: its length
 *
 * The server writes them through its own mapping, unseen: while a page
 * stays pinned writable it counts as written at every DMA log report.
 *
 * Context: process context (a DMA log report, dirty.c's log_lock held).
 */
void vfio_user_window_mark_pinned(struct vfio_user_device *udev, u64 iova,
				  u64 len)
{
	struct vfio_user_window *w;
	struct vfio_user_pin *pin;
	unsigned long index;
	u64 last;

	lockdep_assert_held(&udev->log_lock);
	if (!len || check_add_overflow(iova, len - 1, &last))
		return;
	mutex_lock(&udev->window_mutex);
	w = udev->window;
	if (w) {
		mutex_lock(&w->lock);
		xa_for_each_range(&w->pins, index, pin, iova >> PAGE_SHIFT,
				  last >> PAGE_SHIFT) {
			if (!pin->ro)
				vfio_user_dirty_mark(udev,
						     pin->index << PAGE_SHIFT,
						     (u64)pin->npages << PAGE_SHIFT);
			/* xa_find_after() goes on past the pin's last page */
			index = pin->index + pin->npages - 1;
		}
		mutex_unlock(&w->lock);
	}
	mutex_unlock(&udev->window_mutex);
}

/**
 * vfio_user_window_close() - the consumer closed the device: unpin all
 * @udev: the device, DMA already disabled (no new pins)
 *
 * Context: process context (the close_device op).
 */
void vfio_user_window_close(struct vfio_user_device *udev)
{
	struct vfio_user_window *w;

	mutex_lock(&udev->window_mutex);
	w = udev->window;
	if (w)
		vfio_user_window_invalidate(w, udev, 0, w->pages, false, false);
	mutex_unlock(&udev->window_mutex);
}

/* Revokes the device's window; with @dead only a broken connection's. */
static void vfio_user_window_end(struct vfio_user_device *udev, bool dead)
{
	struct vfio_user_window *w;

	mutex_lock(&udev->window_mutex);
	w = udev->window;
	if (w && dead && !vfio_user_conn_dead(w->conn, NULL, 0))
		w = NULL;
	if (w) {
		udev->window = NULL;
		vfio_user_window_invalidate(w, udev, 0, w->pages, true, false);
	}
	mutex_unlock(&udev->window_mutex);
	if (w)
		fput(w->file);
}

/**
 * vfio_user_window_revoke() - end the device's DMA window for good
 * @udev: the device
 *
 * Zaps the server's mappings and unpins; later faults get SIGBUS, even
 * while the server keeps the file.
 *
 * Context: process context (detach, failed attach, broken connection).
 */
void vfio_user_window_revoke(struct vfio_user_device *udev)
{
	vfio_user_window_end(udev, false);
}

/**
 * vfio_user_window_work() - revoke a broken connection's shared memory
 * @work: &vfio_user_device.window_work, queued by the broken transition
 *
 * A dead server's pins go at once, not at the next detach or close, and
 * so do the consumer's mappings of its memory.
 *
 * Context: vfio_user_wq.
 */
void vfio_user_window_work(struct work_struct *work)
{
	struct vfio_user_device *udev = container_of(work,
						     struct vfio_user_device,
						     window_work);

	vfio_user_window_end(udev, true);
	vfio_user_mmap_unpublish(udev, true);
}

/**
 * vfio_user_window_pinned() - pages the device's window has pinned now
 * @udev: the device
 *
 * Context: process context; takes window_mutex.
 * Return: the number of pages, 0 without a window.
 */
unsigned long vfio_user_window_pinned(struct vfio_user_device *udev)
{
	unsigned long n = 0;

	mutex_lock(&udev->window_mutex);
	if (udev->window)
		n = READ_ONCE(udev->window->nr_pinned);
	mutex_unlock(&udev->window_mutex);
	return n;
}

static int vfio_user_window_init_fs_context(struct fs_context *fc)
{
	return init_pseudo(fc, VFIO_USER_WINDOW_MAGIC) ? 0 : -ENOMEM;
}

/*
 * No .owner: the mount lives from module init to exit and would pin the
 * module for ever; each window file holds the module through its fops.
 */
static struct file_system_type vfio_user_window_fs_type = {
	.name			= "vfio_user_dma",
	.init_fs_context	= vfio_user_window_init_fs_context,
	.kill_sb		= kill_anon_super,
};

/**
 * vfio_user_window_init() - mount the windows' pseudo filesystem
 *
 * Context: module init.
 * Return: 0 or a negative errno.
 */
int __init vfio_user_window_init(void)
{
	vfio_user_window_mnt = kern_mount(&vfio_user_window_fs_type);
	return PTR_ERR_OR_ZERO(vfio_user_window_mnt);
}

/**
 * vfio_user_window_exit() - unmount it
 *
 * Context: module exit (no window file is left: each holds the module).
 */
void vfio_user_window_exit(void)
{
	kern_unmount(vfio_user_window_mnt);
}
