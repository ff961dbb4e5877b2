// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio_user_mdev - the device's DMA dirty-page log.
 *
 * VFIO_DEVICE_FEATURE_DMA_LOGGING_{START,STOP,REPORT} (struct
 * vfio_log_ops): during a live migration the consumer asks which of its
 * pages the device wrote since the last report, so that they are sent
 * again. A type1 container answers that itself from the pages mdevs pin
 * and the vfio_dma_rw() writes it sees; iommufd has no such log for an
 * emulated-IOMMU device, so without this one QEMU counts every page dirty
 * in every round. Every byte the server writes into the consumer's memory
 * passes through the module, so the module keeps the log:
 *
 *  - message DMA: each DMA_WRITE marks its range once vfio_dma_rw() has
 *    written it (or failed: it may have written part), before the reply
 *    tells the server it is done, so a server that waits for its DMA
 *    replies (our library, libvfio-user) has nothing left unmarked once
 *    it has stopped (STOP, STOP_COPY). A DMA_WRITE sent without waiting
 *    for its reply (the no-reply flag) just before stopping may be served
 *    after the consumer's last sync: a server must not do that;
 *  - the shared-memory window: the server writes through its own mapping,
 *    which the module never sees written. A page it pinned writable counts
 *    as dirty in every report while it stays pinned (as type1 reports
 *    pinned pages) and is marked once more when it is unpinned, for the
 *    writes between the last report and the unpin.
 *
 * The log is one bitmap per range the consumer named at START, at the
 * page size it asked for or coarser (at most VFIO_USER_DIRTY_MAX_BITS bits
 * in all; a coarser page is reported whole). Marking is lock-free (RCU for
 * the log's lifetime, atomic bit operations); START, STOP and REPORT are
 * serialised by &vfio_user_device.log_lock. A REPORT takes the bits it
 * reports and clears them in one atomic operation per word, so a
 * DMA_WRITE marking meanwhile is either in this report or in the next;
 * since a write is marked after it lands, a report that sees the mark
 * sends the page's new contents.
 *
 * Offered where the kernel hands drivers an iova_bitmap (compat.h): 6.1
 * to 6.6 always, since 6.7 only with CONFIG_IOMMUFD_DRIVER (Debian's 6.12
 * and 7.3 have none; the test VM's debug kernel has it). The log outlives a server's re-attach: it
 * is the device's, not the connection's. The server's own dirty log
 * (vfio-user DEVICE_FEATURE DMA_LOGGING_*) is not used: the module sees
 * every write it could report but the window's.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/bitmap.h>
#include <linux/interval_tree.h>
#include <linux/iova_bitmap.h>
#include <linux/module.h>
#include <linux/mm.h>
#include <linux/overflow.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
#include <linux/vfio.h>

#include "compat.h"
#include "vfio_user_mdev.h"

/* Bits of all ranges' bitmaps together: 32 MiB, 1 TiB at 4 KiB pages. */
#define VFIO_USER_DIRTY_MAX_BITS	BIT(28)

/**
 * struct vfio_user_dirty_range - the log of one range named at START
 * @first: its first byte (IOVA)
 * @last: its last byte
 * @bits: one bit per log page, from the page holding @first
 */
struct vfio_user_dirty_range {
	unsigned long first;
	unsigned long last;
	unsigned long *bits;
};

/**
 * struct vfio_user_dirty - a started log
 * @shift: log page size, log2
 * @nr: number of @ranges
 * @ranges: in ascending order, disjoint (the core checked)
 *
 * Allocated by log_start and published in &vfio_user_device.dirty under
 * its log_lock; read by vfio_user_dirty_mark() under RCU and by REPORT
 * under log_lock; unpublished under log_lock and freed after an RCU grace
 * period by vfio_user_dirty_stop().
 */
struct vfio_user_dirty {
	unsigned int shift;
	unsigned int nr;
	struct vfio_user_dirty_range ranges[];
};

/* Bit of @iova in @r's bitmap; @iova is inside @r. */
static unsigned long vfio_user_dirty_bit(const struct vfio_user_dirty *d,
					 const struct vfio_user_dirty_range *r,
					 unsigned long iova)
{
	return (iova >> d->shift) - (r->first >> d->shift);
}

/* The first range whose end is at or after @iova, or @d->nr. */
static unsigned int vfio_user_dirty_find(const struct vfio_user_dirty *d,
					 unsigned long iova)
{
	unsigned int lo = 0, hi = d->nr;

	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;

		if (d->ranges[mid].last < iova)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void vfio_user_dirty_free(struct vfio_user_dirty *d)
{
	unsigned int i;

	for (i = 0; i < d->nr; i++)
		kvfree(d->ranges[i].bits);
	kfree(d);
}

/**
 * vfio_user_dirty_mark() - note that the device wrote [@iova, @iova + @len)
 * @udev: the device
 * @iova: first byte written
 * @len: bytes
 *
 * Called after the write. A no-op while no log is started; bytes outside
 * the log's ranges are not recorded (the consumer did not ask about them).
 *
 * Context: any context; does not sleep.
 */
void vfio_user_dirty_mark(struct vfio_user_device *udev, u64 iova, u64 len)
{
	struct vfio_user_dirty *d;
	u64 last;
	unsigned int i;

	if (!len || check_add_overflow(iova, len - 1, &last))
		return;

	rcu_read_lock();
	d = rcu_dereference(udev->dirty);
	if (!d)
		goto out;
	for (i = vfio_user_dirty_find(d, iova); i < d->nr; i++) {
		struct vfio_user_dirty_range *r = &d->ranges[i];
		unsigned long b, e;

		if (r->first > last)
			break;
		b = vfio_user_dirty_bit(d, r, max_t(u64, iova, r->first));
		e = vfio_user_dirty_bit(d, r, min_t(u64, last, r->last));
		/* the data written before the mark a REPORT takes */
		smp_mb__before_atomic();
		for (; b <= e; b++)
			set_bit(b, r->bits);
	}
out:
	rcu_read_unlock();
}

/**
 * vfio_user_dirty_stop() - stop the device's log, if started
 * @udev: the device
 *
 * vfio_log_ops.log_stop and close_device: stopping a log never started
 * is not an error.
 *
 * Context: process context. Waits for an RCU grace period.
 */
void vfio_user_dirty_stop(struct vfio_user_device *udev)
{
	struct vfio_user_dirty *d;

	mutex_lock(&udev->log_lock);
	d = rcu_replace_pointer(udev->dirty, NULL,
				lockdep_is_held(&udev->log_lock));
	mutex_unlock(&udev->log_lock);
	if (d) {
		synchronize_rcu();
		vfio_user_dirty_free(d);
		dev_dbg(vfio_user_dev(udev), "DMA logging stopped\n");
	}
}

#if VFIO_USER_HAVE_DIRTY_LOG

/**
 * vfio_user_log_start() - vfio_log_ops.log_start
 * @vdev: the VFIO device
 * @ranges: the IOVA ranges to log, disjoint, aligned to *@page_size
 * @nnodes: number of @ranges
 * @page_size: the page size asked for; set to the one the log uses: at
 *	least PAGE_SIZE, and doubled until the bitmaps of all ranges hold at
 *	most VFIO_USER_DIRTY_MAX_BITS bits
 *
 * A second START before a STOP fails with -EBUSY (the log exists; mlx5 and
 * pds say -EINVAL, which here means a bad argument).
 *
 * Context: process context. May sleep (allocates the bitmaps).
 * Return: 0; -EBUSY a log is already started; -EINVAL @page_size is not a
 * power of two; -ENOMEM.
 */
static int vfio_user_log_start(struct vfio_device *vdev,
			       struct rb_root_cached *ranges, u32 nnodes,
			       u64 *page_size)
{
	struct vfio_user_device *udev = to_vfio_user_device(vdev);
	struct interval_tree_node *node;
	struct vfio_user_dirty *d;
	unsigned long total;
	unsigned int shift, i;
	int ret = -ENOMEM;

	if (!*page_size || !is_power_of_2(*page_size))
		return -EINVAL;
	shift = max_t(unsigned int, ilog2(*page_size), PAGE_SHIFT);

	d = kzalloc(struct_size(d, ranges, nnodes), GFP_KERNEL_ACCOUNT);
	if (!d)
		return -ENOMEM;
	for (node = interval_tree_iter_first(ranges, 0, ULONG_MAX);
	     node && d->nr < nnodes;
	     node = interval_tree_iter_next(node, 0, ULONG_MAX)) {
		d->ranges[d->nr].first = node->start;
		d->ranges[d->nr].last = node->last;
		d->nr++;
	}

	/* A coarser page until the bitmaps fit the bound. */
	for (;; shift++) {
		total = 0;
		for (i = 0; i < d->nr; i++)
			total += (d->ranges[i].last >> shift) -
				 (d->ranges[i].first >> shift) + 1;
		if (total <= VFIO_USER_DIRTY_MAX_BITS)
			break;
	}
	d->shift = shift;
	for (i = 0; i < d->nr; i++) {
		struct vfio_user_dirty_range *r = &d->ranges[i];

		r->bits = kvcalloc(BITS_TO_LONGS(vfio_user_dirty_bit(d, r, r->last) + 1),
				   sizeof(unsigned long), GFP_KERNEL_ACCOUNT);
		if (!r->bits)
			goto err;
	}

	mutex_lock(&udev->log_lock);
	if (rcu_access_pointer(udev->dirty)) {
		mutex_unlock(&udev->log_lock);
		ret = -EBUSY;
		goto err;
	}
	rcu_assign_pointer(udev->dirty, d);
	mutex_unlock(&udev->log_lock);

	*page_size = 1ULL << shift;
	dev_dbg(vfio_user_dev(udev),
		"DMA logging started: %u ranges, %lu pages of %llu bytes\n",
		d->nr, total, *page_size);
	return 0;

err:
	vfio_user_dirty_free(d);
	return ret;
}

/*
 * Takes the bits of @r for [@first, @last] (a part of @r), clears them and
 * sets them in @dirty, one iova_bitmap_set() per run of dirty pages. A log
 * page partly outside [@first, @last] and partly inside @r (a log page
 * coarser than the report's, or a report of part of a range) is reported
 * but left set, so that the call with its other part reports it too: a
 * page reported twice is sent twice, a page not reported is lost.
 */
static void vfio_user_dirty_take(const struct vfio_user_dirty *d,
				 struct vfio_user_dirty_range *r,
				 unsigned long first, unsigned long last,
				 struct iova_bitmap *dirty)
{
	unsigned long b = vfio_user_dirty_bit(d, r, first);
	unsigned long e = vfio_user_dirty_bit(d, r, last);
	unsigned long mask = BIT(d->shift) - 1;
	unsigned long run_first = 0, run_last = 0;
	bool run = false;
	unsigned long w;

	for (w = BIT_WORD(b); w <= BIT_WORD(e); w++) {
		unsigned long want = ~0UL, keep = 0, got;

		if (w == BIT_WORD(b)) {
			want &= BITMAP_FIRST_WORD_MASK(b);
			if (first != r->first && (first & mask))
				keep |= BIT(b % BITS_PER_LONG);
		}
		if (w == BIT_WORD(e)) {
			want &= BITMAP_LAST_WORD_MASK(e + 1);
			if (last != r->last && (last & mask) != mask)
				keep |= BIT(e % BITS_PER_LONG);
		}
		got = atomic_long_fetch_andnot(want & ~keep,
					       (atomic_long_t *)&r->bits[w]);
		got &= want;
		while (got) {
			unsigned long bit = w * BITS_PER_LONG + __ffs(got);
			unsigned long page = ((r->first >> d->shift) + bit) <<
					     d->shift;
			unsigned long start = max(page, first);

			if (run && start != run_last + 1) {
				iova_bitmap_set(dirty, run_first,
						run_last - run_first + 1);
				run = false;
			}
			if (!run)
				run_first = start;
			run_last = min(page | mask, last);
			run = true;
			got &= got - 1;
		}
		if (!(w % 256))
			cond_resched();
	}
	if (run)
		iova_bitmap_set(dirty, run_first, run_last - run_first + 1);
}

/**
 * vfio_user_log_read_and_clear() - vfio_log_ops.log_read_and_clear
 * @vdev: the VFIO device
 * @iova: start of the part of the report asked now
 * @length: its length
 * @dirty: the consumer's bitmap
 *
 * Reports what the device wrote in [@iova, @iova + @length) since the
 * last report (or START) and clears it; the window's writable pins count
 * as written.
 *
 * Context: process context. May sleep.
 * Return: 0; -EINVAL no log started.
 */
static int vfio_user_log_read_and_clear(struct vfio_device *vdev,
					unsigned long iova,
					unsigned long length,
					struct iova_bitmap *dirty)
{
	struct vfio_user_device *udev = to_vfio_user_device(vdev);
	struct vfio_user_dirty *d;
	unsigned long last;
	unsigned int i;
	int ret = 0;

	if (!length || check_add_overflow(iova, length - 1, &last))
		return -EINVAL;

	mutex_lock(&udev->log_lock);
	d = rcu_dereference_protected(udev->dirty,
				      lockdep_is_held(&udev->log_lock));
	if (!d) {
		ret = -EINVAL;
		goto out;
	}
	vfio_user_window_mark_pinned(udev, iova, length);
	for (i = vfio_user_dirty_find(d, iova); i < d->nr; i++) {
		struct vfio_user_dirty_range *r = &d->ranges[i];

		if (r->first > last)
			break;
		vfio_user_dirty_take(d, r, max(iova, r->first),
				     min(last, r->last), dirty);
	}
out:
	mutex_unlock(&udev->log_lock);
	return ret;
}

/**
 * vfio_user_log_stop() - vfio_log_ops.log_stop
 * @vdev: the VFIO device
 *
 * Context: process context. Waits for an RCU grace period.
 * Return: 0, also when no log was started.
 */
static int vfio_user_log_stop(struct vfio_device *vdev)
{
	vfio_user_dirty_stop(to_vfio_user_device(vdev));
	return 0;
}

#ifdef VFIO_USER_DIRTY_LOG_NS
MODULE_IMPORT_NS(VFIO_USER_DIRTY_LOG_NS);
#endif

const struct vfio_log_ops vfio_user_log_ops = {
	.log_start		= vfio_user_log_start,
	.log_stop		= vfio_user_log_stop,
	.log_read_and_clear	= vfio_user_log_read_and_clear,
};
#endif
