// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio_user_mdev - the consumer's mappings of server memory.
 *
 * A server may back a region, or the areas of it named by a sparse mmap
 * capability, with a memfd or tmpfs file it passes with the region info
 * (info.c keeps it). The region then has the MMAP flag, and a consumer
 * mmap of it maps the pages of that file, so that doorbell writes and
 * queue accesses reach the server's memory with no message at all.
 *
 * The consumer's mapping must outlive neither the server nor the attach:
 * a detach, a broken connection, a re-attach, a reset and the close of
 * the device revoke it. So the mapping is the module's, not the server
 * file's: mmap moves the VMA to a file of the device's own (an inode of
 * the module's pseudo filesystem, window.c; made at the first mmap after
 * an open and let go at the close, so that it pins the module only while
 * the device is open or a mapping of it is left), and a fault maps the
 * server file's page with a PFN mapping while the module holds a
 * reference to the page. Revoking zaps every mapping of that inode and drops the page
 * references; a later fault maps the page of whatever server is attached
 * then, or gets SIGBUS when there is none, the connection is dead, or the
 * new server does not back the region.
 *
 * Forwarded accesses of a device with server memory are never posted
 * (vfio_user_post_bars()): each REGION_WRITE has been answered before the
 * consumer's write returns, so accesses through the mapping and through
 * the device fd stay in the consumer's order.
 *
 * Locking: the consumer's mmap lock > @lock. Publishing, revoking and
 * faults take @lock only; none of them waits on the server.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/file.h>
#include <linux/fs.h>
#include <linux/kref.h>
#include <linux/magic.h>
#include <linux/mm.h>
#include <linux/nospec.h>
#include <linux/overflow.h>
#include <linux/shmem_fs.h>
#include <linux/slab.h>
#include <linux/xarray.h>

#include "compat.h"
#include "vfio_user_mdev.h"

/* A page that was mapped writable: dirtied when it is let go. */
#define VFIO_USER_PAGE_WRITTEN	XA_MARK_1

/**
 * struct vfio_user_mmap_bar - what a consumer may map of one region
 * @file: the server's shmem file, or NULL: the region cannot be mapped
 * @offset: where the region starts in @file
 * @size: the region's size
 * @write: may be mapped writable
 * @areas: the mmap-able parts, or NULL: all of it
 * @nr_areas: entries in @areas
 */
struct vfio_user_mmap_bar {
	struct file *file;
	u64 offset;
	u64 size;
	bool write;
	struct vfio_user_area *areas;
	u32 nr_areas;
};

/**
 * struct vfio_user_mmap - a device's mappings of server memory
 * @ref: the device holds one, and each file it made (private_data) one:
 *	a consumer may keep a mapping after the device is gone
 * @lock: protects everything below
 * @file: the file the consumer's VMAs of this open are moved to, or NULL
 *	before the first mmap and after the close; holds a reference to it.
 *	VMAs of an earlier open keep their own file, and get SIGBUS
 * @open: a consumer has the device open
 * @conn: the published connection the bars are from, or NULL
 * @nr: regions in @bars
 * @bars: what the server backs, per region
 * @pages: page offset (the consumer's file offset >> PAGE_SHIFT) -> the
 *	server file's page mapped there, with a reference
 * @nr_pages: entries in @pages
 */
struct vfio_user_mmap {
	struct kref ref;
	struct mutex lock;	/* everything below */
	struct file *file;
	bool open;
	struct vfio_user_conn *conn;
	u32 nr;
	struct vfio_user_mmap_bar bars[VFIO_USER_MAX_REGIONS];
	struct xarray pages;
	unsigned long nr_pages;
};

/**
 * vfio_user_mmap_file_ok() - whether the module can map a server's fd
 * @file: the file passed with a region
 *
 * A regular file of tmpfs (which memfds are too), open for reading: its
 * pages are found with shmem_read_mapping_page(). hugetlbfs, device
 * files and files of other filesystems are refused; such a region is
 * reached by message.
 *
 * Context: any.
 * Return: true if it can be mapped.
 */
bool vfio_user_mmap_file_ok(struct file *file)
{
	struct inode *inode = file_inode(file);

	return S_ISREG(inode->i_mode) && inode->i_sb->s_magic == TMPFS_MAGIC &&
	       (file->f_mode & FMODE_READ);
}

/* Whether [off, off + len) of @bar may be mapped. */
static bool vfio_user_mmap_allowed(const struct vfio_user_mmap_bar *bar,
				   u64 off, u64 len)
{
	u64 end;
	u32 i;

	if (!bar->file || check_add_overflow(off, len, &end) ||
	    end > bar->size)
		return false;
	if (!bar->areas)
		return true;
	for (i = 0; i < bar->nr_areas; i++)
		if (off >= bar->areas[i].start && end <= bar->areas[i].end)
			return true;
	return false;
}

/* Zaps the consumer's mappings and lets go of the pages. */
static void vfio_user_mmap_drop(struct vfio_user_mmap *m)
{
	unsigned long index;
	struct page *page;

	lockdep_assert_held(&m->lock);

	if (!m->nr_pages)
		return;
	/* Pages are mapped through the current file only. */
	unmap_mapping_range(m->file->f_mapping, 0, 0, 1);
	xa_for_each(&m->pages, index, page) {
		if (xa_get_mark(&m->pages, index, VFIO_USER_PAGE_WRITTEN))
			set_page_dirty_lock(page);
		xa_erase(&m->pages, index);
		put_page(page);
	}
	m->nr_pages = 0;
}

static void vfio_user_mmap_clear_bars(struct vfio_user_mmap *m)
{
	u32 i;

	lockdep_assert_held(&m->lock);

	for (i = 0; i < m->nr; i++) {
		if (m->bars[i].file)
			fput(m->bars[i].file);
		kfree(m->bars[i].areas);
	}
	memset(m->bars, 0, sizeof(m->bars));
	m->nr = 0;
	m->conn = NULL;
}

/*
 * A fault maps the page of the attached server's file behind the offset,
 * if the device is open, its connection alive and the offset one the
 * server backs now; anything else is SIGBUS.
 */
static vm_fault_t vfio_user_mmap_fault(struct vm_fault *vmf)
{
	struct vm_area_struct *vma = vmf->vma;
	struct vfio_user_mmap *m = vma->vm_file->private_data;
	u64 pos = (u64)vmf->pgoff << PAGE_SHIFT;
	u32 index = VFIO_USER_OFFSET_TO_INDEX(pos);
	u64 off = pos & VFIO_USER_OFFSET_MASK;
	struct vfio_user_mmap_bar *bar;
	vm_fault_t ret = VM_FAULT_SIGBUS;
	struct page *page;
	int err;

	mutex_lock(&m->lock);
	if (vma->vm_file != m->file || !m->open || !m->conn ||
	    READ_ONCE(m->conn->dead) || index >= m->nr)
		goto out;
	bar = &m->bars[array_index_nospec(index, m->nr)];
	if (!vfio_user_mmap_allowed(bar, off, PAGE_SIZE) ||
	    ((vma->vm_flags & VM_WRITE) && !bar->write))
		goto out;

	page = xa_load(&m->pages, vmf->pgoff);
	if (!page) {
		page = shmem_read_mapping_page(bar->file->f_mapping,
					       (bar->offset + off) >> PAGE_SHIFT);
		if (IS_ERR(page)) {
			ret = PTR_ERR(page) == -ENOMEM ? VM_FAULT_OOM :
							 VM_FAULT_SIGBUS;
			goto out;
		}
		err = xa_err(xa_store(&m->pages, vmf->pgoff, page,
				      GFP_KERNEL));
		if (err) {
			put_page(page);
			ret = VM_FAULT_OOM;
			goto out;
		}
		m->nr_pages++;
	}
	/* mprotect() can make the PTE writable without another fault. */
	if (bar->write)
		xa_set_mark(&m->pages, vmf->pgoff, VFIO_USER_PAGE_WRITTEN);
	ret = vmf_insert_pfn(vma, vmf->address, page_to_pfn(page));
out:
	mutex_unlock(&m->lock);
	return ret;
}

static const struct vm_operations_struct vfio_user_mmap_vm_ops = {
	.fault	= vfio_user_mmap_fault,
};

/* The file's own mmap: the VMAs come to it from the device's only. */
static int vfio_user_mmap_file_mmap(struct file *file,
				    struct vm_area_struct *vma)
{
	return -ENODEV;
}

static void vfio_user_mmap_free(struct kref *ref)
{
	struct vfio_user_mmap *m = container_of(ref, struct vfio_user_mmap,
						ref);

	/* The device dropped everything before its last reference. */
	WARN_ON_ONCE(m->nr || m->nr_pages || m->file);
	xa_destroy(&m->pages);
	mutex_destroy(&m->lock);
	kfree(m);
}

static int vfio_user_mmap_release(struct inode *inode, struct file *file)
{
	struct vfio_user_mmap *m = file->private_data;

	kref_put(&m->ref, vfio_user_mmap_free);
	return 0;
}

static const struct file_operations vfio_user_mmap_fops = {
	.owner		= THIS_MODULE,
	.mmap		= vfio_user_mmap_file_mmap,
	.release	= vfio_user_mmap_release,
	.llseek		= noop_llseek,
};

/**
 * vfio_user_mmap() - vfio_device_ops.mmap: map a region the server backs
 * @vdev: the VFIO device
 * @vma: a shared mapping at the region's offset (index << 40), within the
 *	region and, with a sparse mmap capability, within one of its areas
 *
 * The VMA moves to the device's own file (made at the first mmap after an
 * open); its pages are mapped by faults.
 *
 * Context: process context, the consumer's mmap lock held for writing;
 * the device is open (the consumer maps its fd).
 * Return: 0; -EINVAL for a private mapping, an index, range or protection
 * the server does not offer; -ENOTCONN when no server is attached; -EIO
 * when its connection broke; -ENOMEM.
 */
int vfio_user_mmap(struct vfio_device *vdev, struct vm_area_struct *vma)
{
	struct vfio_user_mmap *m = to_vfio_user_device(vdev)->mmap;
	u64 pos = (u64)vma->vm_pgoff << PAGE_SHIFT;
	u32 index = VFIO_USER_OFFSET_TO_INDEX(pos);
	const struct vfio_user_mmap_bar *bar;
	struct file *file;
	bool write = false;
	int ret = 0;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	mutex_lock(&m->lock);
	if (!m->conn) {
		ret = -ENOTCONN;
	} else if (vfio_user_conn_dead(m->conn, NULL, 0)) {
		ret = -EIO;
	} else if (index >= m->nr) {
		ret = -EINVAL;
	} else {
		bar = &m->bars[array_index_nospec(index, m->nr)];
		write = bar->write;
		if (!vfio_user_mmap_allowed(bar, pos & VFIO_USER_OFFSET_MASK,
					    vma->vm_end - vma->vm_start) ||
		    ((vma->vm_flags & VM_WRITE) && !write))
			ret = -EINVAL;
	}
	if (!ret && !m->file) {
		file = vfio_user_pseudo_file("[vfio-user-region]",
					     &vfio_user_mmap_fops, m);
		if (IS_ERR(file)) {
			ret = PTR_ERR(file);
		} else {
			kref_get(&m->ref);	/* the file's */
			m->file = file;
		}
	}
	if (!ret) {
		if (!write)
			vfio_user_vm_flags_clear(vma, VM_MAYWRITE);
		vfio_user_vm_flags_set(vma, VM_PFNMAP | VM_IO | VM_DONTEXPAND |
				       VM_DONTDUMP);
		vma->vm_ops = &vfio_user_mmap_vm_ops;
		vma_set_file(vma, m->file);
	}
	mutex_unlock(&m->lock);
	return ret;
}

/**
 * vfio_user_mmap_publish() - the regions a new connection backs
 * @udev: the device, its new connection just published
 * @conn: that connection
 *
 * Later faults map the new server's pages.
 *
 * Context: process context, under udev->attach_mutex.
 */
void vfio_user_mmap_publish(struct vfio_user_device *udev,
			    struct vfio_user_conn *conn)
{
	struct vfio_user_mmap *m = udev->mmap;
	u32 i;

	mutex_lock(&m->lock);
	vfio_user_mmap_drop(m);
	vfio_user_mmap_clear_bars(m);
	for (i = 0; i < udev->num_regions; i++) {
		struct vfio_user_region *r = &udev->regions[i];
		struct vfio_user_mmap_bar *bar = &m->bars[i];

		bar->size = r->size;
		if (!r->file)
			continue;
		bar->areas = r->areas;
		if (r->areas && r->areas != ZERO_SIZE_PTR) {
			bar->areas = kmemdup(r->areas,
					     r->nr_areas * sizeof(*r->areas),
					     GFP_KERNEL);
			/* Without its areas the region is not mapped. */
			if (!bar->areas)
				continue;
		}
		bar->nr_areas = r->nr_areas;
		/* Ours now: let go of when this server is, not at the next. */
		bar->file = r->file;
		r->file = NULL;
		bar->offset = r->file_offset;
		bar->write = r->file_write;
	}
	m->nr = udev->num_regions;
	m->conn = conn;
	/* Broken before we got here: the broken work found nothing to drop. */
	if (vfio_user_conn_dead(conn, NULL, 0))
		vfio_user_mmap_clear_bars(m);
	mutex_unlock(&m->lock);
}

/**
 * vfio_user_mmap_unpublish() - revoke the mappings of a connection
 * @udev: the device
 * @dead: only if the connection they are from is dead (the broken
 *	connection's work: a re-attach may have published another)
 *
 * Zaps the consumer's mappings and drops the server's files and pages;
 * later faults get SIGBUS until another server is published.
 *
 * Context: process context.
 */
void vfio_user_mmap_unpublish(struct vfio_user_device *udev, bool dead)
{
	struct vfio_user_mmap *m = udev->mmap;

	mutex_lock(&m->lock);
	if (!dead || (m->conn && vfio_user_conn_dead(m->conn, NULL, 0))) {
		vfio_user_mmap_drop(m);
		vfio_user_mmap_clear_bars(m);
	}
	mutex_unlock(&m->lock);
}

/**
 * vfio_user_mmap_open() - the consumer opened or closed the device
 * @udev: the device
 * @open: opened; closing zaps what the consumer still maps
 *
 * Context: process context.
 */
void vfio_user_mmap_open(struct vfio_user_device *udev, bool open)
{
	struct vfio_user_mmap *m = udev->mmap;
	struct file *file = NULL;

	mutex_lock(&m->lock);
	m->open = open;
	if (!open) {
		vfio_user_mmap_drop(m);
		/* Mappings left behind keep it: their faults are SIGBUS. */
		file = m->file;
		m->file = NULL;
	}
	mutex_unlock(&m->lock);
	if (file)
		fput(file);
}

/**
 * vfio_user_mmap_zap() - zap the consumer's mappings (device reset)
 * @udev: the device
 *
 * Later accesses fault the pages in again.
 *
 * Context: process context.
 */
void vfio_user_mmap_zap(struct vfio_user_device *udev)
{
	struct vfio_user_mmap *m = udev->mmap;

	mutex_lock(&m->lock);
	vfio_user_mmap_drop(m);
	mutex_unlock(&m->lock);
}

/**
 * vfio_user_mmap_pages() - server pages the consumer maps now
 * @udev: the device
 *
 * Context: process context.
 * Return: the number of pages.
 */
unsigned long vfio_user_mmap_pages(struct vfio_user_device *udev)
{
	unsigned long n;

	mutex_lock(&udev->mmap->lock);
	n = udev->mmap->nr_pages;
	mutex_unlock(&udev->mmap->lock);
	return n;
}

/**
 * vfio_user_mmap_init() - set up a new device's mappings
 * @udev: the device
 *
 * Context: process context (init_dev).
 * Return: 0 or a negative errno.
 */
int vfio_user_mmap_init(struct vfio_user_device *udev)
{
	struct vfio_user_mmap *m;

	m = kzalloc(sizeof(*m), GFP_KERNEL);
	if (!m)
		return -ENOMEM;
	kref_init(&m->ref);
	mutex_init(&m->lock);
	xa_init(&m->pages);
	udev->mmap = m;
	return 0;
}

/**
 * vfio_user_mmap_exit() - let go of a released device's mappings
 * @udev: the device, detached
 *
 * Mappings the consumer still has (it closed the device with them) stay
 * SIGBUS; the memory goes with the last of them.
 *
 * Context: process context (release_dev).
 */
void vfio_user_mmap_exit(struct vfio_user_device *udev)
{
	struct vfio_user_mmap *m = udev->mmap;

	if (!m)
		return;
	vfio_user_mmap_open(udev, false);
	mutex_lock(&m->lock);
	vfio_user_mmap_clear_bars(m);
	mutex_unlock(&m->lock);
	udev->mmap = NULL;
	kref_put(&m->ref, vfio_user_mmap_free);
}
