// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio_user_mdev - what attach learns from the server: device info,
 * region info with its capability chain, IRQ info. Every value is checked
 * before it is cached; a violation breaks the connection.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/file.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/overflow.h>
#include <linux/slab.h>
#include <linux/vfio.h>

#include "vfio_user_mdev.h"

/* Capabilities one region may chain, kept or not. */
#define VFIO_USER_MAX_REGION_CAPS	64

/* The VFIO_IRQ_INFO_* flags a consumer can be given. */
#define VFIO_USER_IRQ_INFO_FLAGS	(VFIO_IRQ_INFO_EVENTFD |	\
					 VFIO_IRQ_INFO_MASKABLE |	\
					 VFIO_IRQ_INFO_AUTOMASKED |	\
					 VFIO_IRQ_INFO_NORESIZE)

/**
 * vfio_user_free_regions() - free cached region info
 * @regions: array from vfio_user_fetch_info(), or NULL
 * @n: entries in @regions
 *
 * Context: any context that may free memory.
 */
void vfio_user_free_regions(struct vfio_user_region *regions, u32 n)
{
	u32 i;

	if (!regions)
		return;
	for (i = 0; i < n; i++) {
		kfree(regions[i].caps);
		kfree(regions[i].areas);
		if (regions[i].file)
			fput(regions[i].file);
	}
	kfree(regions);
}

/*
 * A sparse mmap capability: the areas are checked, and kept when the
 * region is backed by a file the consumer can map (see
 * vfio_user_rebuild_cap()). A server that describes areas outside its own
 * region, or more areas than it sent, is not to be believed on anything
 * else either. Areas that are not page aligned cannot be mapped: the
 * region is then reached by message only. Returns the bytes of the
 * rebuilt capability at @dst, 0 when it is dropped, or -EPROTO.
 */
static int vfio_user_check_sparse(struct vfio_user_conn *conn, u32 index,
				  struct vfio_user_region *region,
				  const u8 *cap, u32 off, u32 span, u8 *dst)
{
	struct vfio_region_info_cap_sparse_mmap *out = (void *)dst;
	struct vfio_user_region_info_cap_sparse_mmap wire;
	struct vfio_user_sparse_mmap_area area;
	struct vfio_user_area *areas = NULL;
	bool aligned = true;
	u32 nr, i;

	if (span < sizeof(wire)) {
		vfio_user_conn_broken(conn,
				      "region %u: capability 1 at %u is %u bytes, expected at least %zu",
				      index, off, span, sizeof(wire));
		return -EPROTO;
	}
	memcpy(&wire, cap, sizeof(wire));
	nr = le32_to_cpu(wire.nr_areas);
	if (nr > (span - sizeof(wire)) / sizeof(area) ||
	    span != sizeof(wire) + nr * sizeof(area)) {
		vfio_user_conn_broken(conn,
				      "region %u: sparse mmap at %u has %u areas in %u bytes",
				      index, off, nr, span);
		return -EPROTO;
	}
	if (wire.reserved) {
		vfio_user_conn_broken(conn,
				      "region %u: sparse mmap at %u has reserved %#x",
				      index, off, le32_to_cpu(wire.reserved));
		return -EPROTO;
	}
	if (region->areas) {
		vfio_user_conn_broken(conn,
				      "region %u: a second sparse mmap capability at %u",
				      index, off);
		return -EPROTO;
	}
	if (region->file && nr) {
		areas = kcalloc(nr, sizeof(*areas), GFP_KERNEL);
		if (!areas)
			return -ENOMEM;
	}
	for (i = 0; i < nr; i++) {
		u64 start, size, end;

		memcpy(&area, cap + sizeof(wire) + i * sizeof(area),
		       sizeof(area));
		start = le64_to_cpu(area.offset);
		size = le64_to_cpu(area.size);
		if (check_add_overflow(start, size, &end) || end > region->size) {
			vfio_user_conn_broken(conn,
					      "region %u: sparse area %u %#llx+%#llx outside size %#llx",
					      index, i, start, size, region->size);
			kfree(areas);
			return -EPROTO;
		}
		if (!PAGE_ALIGNED(start) || !PAGE_ALIGNED(size))
			aligned = false;
		if (areas) {
			areas[i].start = start;
			areas[i].end = end;
		}
	}
	if (!region->file)
		return 0;
	if (!aligned) {
		dev_warn(vfio_user_dev(conn->udev),
			 "region %u: sparse mmap areas not page aligned; accessed by message\n",
			 index);
		kfree(areas);
		fput(region->file);
		region->file = NULL;
		return 0;
	}
	/* An empty list: nothing may be mapped (areas stays NULL). */
	region->areas = areas ? areas : ZERO_SIZE_PTR;
	region->nr_areas = nr;

	BUILD_BUG_ON(sizeof(*out) != sizeof(wire));
	BUILD_BUG_ON(sizeof(out->areas[0]) != sizeof(area));
	out->header.id = VFIO_REGION_INFO_CAP_SPARSE_MMAP;
	out->header.version = 1;
	out->header.next = 0;
	out->nr_areas = nr;
	out->reserved = 0;
	for (i = 0; i < nr; i++) {
		out->areas[i].offset = areas[i].start;
		out->areas[i].size = areas[i].end - areas[i].start;
	}
	return span;
}

/*
 * Checks one capability, @span bytes at @off of the reply (@cap), and
 * writes what is passed on of it to @dst, in host byte order with next 0.
 * Returns the bytes written (never more than @span), 0 if the capability
 * is dropped, or -EPROTO (the connection is broken then).
 *
 * A capability's span is the distance to the next one, or to the end of
 * the reply for the last. Known capabilities (version 1) must span exactly
 * their structure: all are multiples of 8 bytes, so no alignment padding
 * is ever due, and neither vfio-pci nor libvfio-user sends any.
 *
 *  - VFIO_REGION_INFO_CAP_TYPE: kept, type and subtype converted.
 *  - VFIO_REGION_INFO_CAP_MSIX_MAPPABLE: a bare header; kept.
 *  - VFIO_REGION_INFO_CAP_SPARSE_MMAP: checked; kept, areas converted,
 *    when the region is backed by a file the consumer may map
 *    (@region->file), whose mappings are then limited to the areas;
 *    dropped otherwise (consumers read the areas only for a region with
 *    the MMAP flag).
 *  - Any other ID, or another version of one of those: dropped, since we
 *    cannot check a layout we do not know.
 */
static int vfio_user_rebuild_cap(struct vfio_user_conn *conn, u32 index,
				 struct vfio_user_region *region,
				 const u8 *cap, u32 off, u32 span, u8 *dst)
{
	struct vfio_info_cap_header *hdr = (void *)dst;
	struct vfio_user_region_info_cap_type type;
	struct vfio_user_cap_header wire;
	struct vfio_region_info_cap_type *t;
	size_t expect;
	u16 id, version;
	int ret;

	memcpy(&wire, cap, sizeof(wire));
	id = le16_to_cpu(wire.id);
	version = le16_to_cpu(wire.version);
	if (version != 1)
		goto drop;

	switch (id) {
	case VFIO_REGION_INFO_CAP_SPARSE_MMAP:
		ret = vfio_user_check_sparse(conn, index, region, cap, off,
					     span, dst);
		if (ret)
			return ret;
		goto drop;
	case VFIO_REGION_INFO_CAP_TYPE:
		expect = sizeof(type);
		break;
	case VFIO_REGION_INFO_CAP_MSIX_MAPPABLE:
		expect = sizeof(wire);
		break;
	default:
		goto drop;
	}
	if (span != expect) {
		vfio_user_conn_broken(conn,
				      "region %u: capability %u at %u is %u bytes, expected %zu",
				      index, id, off, span, expect);
		return -EPROTO;
	}

	hdr->id = id;
	hdr->version = version;
	hdr->next = 0;
	if (id == VFIO_REGION_INFO_CAP_MSIX_MAPPABLE)
		return sizeof(*hdr);

	BUILD_BUG_ON(sizeof(*t) != sizeof(type));
	memcpy(&type, cap, sizeof(type));
	t = (void *)dst;
	t->type = le32_to_cpu(type.type);
	t->subtype = le32_to_cpu(type.subtype);
	return sizeof(*t);

drop:
	dev_dbg(vfio_user_dev(conn->udev),
		"region %u: capability %u version %u at %u (%u bytes) not passed on\n",
		index, id, version, off, span);
	return 0;
}

/*
 * Walks a region's capability chain as the server sent it (offsets from
 * the start of the info struct, little endian) and keeps the capabilities
 * vfio_user_rebuild_cap() passes on, rebuilt back to back from offset 0 of
 * region->caps in host byte order, each next offset relative to that copy
 * and 0 ending it. Each capability spans from its offset to the next one
 * or to the end of the reply. The chain must go forward and stay in the
 * reply, so it ends: a loop or an outside pointer is a protocol violation.
 * If nothing is kept, region->caps stays NULL.
 */
static int vfio_user_copy_caps(struct vfio_user_conn *conn, u32 index,
			       const u8 *reply, u32 len, u32 first,
			       struct vfio_user_region *region)
{
	const u32 hsz = sizeof(struct vfio_user_cap_header);
	struct vfio_info_cap_header *prev = NULL;
	u32 off = first, kept = 0, n = 0;
	u8 *caps;
	int ret;

	if (first < sizeof(struct vfio_user_region_info) || first > len - hsz) {
		vfio_user_conn_broken(conn,
				      "region %u: cap_offset %u outside the %u-byte reply",
				      index, first, len);
		return -EPROTO;
	}
	/* What is kept is never longer than what it was rebuilt from. */
	caps = kzalloc(len - first, GFP_KERNEL);
	if (!caps)
		return -ENOMEM;

	do {
		struct vfio_user_cap_header wire;
		u32 next;

		memcpy(&wire, reply + off, sizeof(wire));
		next = le32_to_cpu(wire.next);
		if (next && (next < off + hsz || next > len - hsz)) {
			vfio_user_conn_broken(conn,
					      "region %u: capability at %u points to %u (reply %u bytes)",
					      index, off, next, len);
			ret = -EPROTO;
			goto err_caps;
		}
		if (++n > VFIO_USER_MAX_REGION_CAPS) {
			vfio_user_conn_broken(conn,
					      "region %u: more than %u capabilities",
					      index, VFIO_USER_MAX_REGION_CAPS);
			ret = -EPROTO;
			goto err_caps;
		}
		ret = vfio_user_rebuild_cap(conn, index, region, reply + off,
					    off, (next ? next : len) - off,
					    caps + kept);
		if (ret < 0)
			goto err_caps;
		if (ret) {
			if (prev)
				prev->next = kept;
			prev = (void *)(caps + kept);
			kept += ret;
		}
		off = next;
	} while (off);

	if (!kept) {
		kfree(caps);
		return 0;
	}
	region->caps = caps;
	region->caps_len = kept;
	return 0;

err_caps:
	kfree(caps);
	return ret;
}

/*
 * The fd a server passed with an mmap-able region: kept (returned) when
 * the module can map its pages for the consumer, else dropped and NULL
 * (the region is then reached by message, as without an fd).
 */
static struct file *vfio_user_region_file(struct vfio_user_conn *conn,
					  u32 index,
					  struct vfio_user_region *region,
					  struct file *file, u64 offset)
{
	struct device *dev = vfio_user_dev(conn->udev);
	u64 end;

	if (!vfio_user_mmap_file_ok(file)) {
		dev_info(dev,
			 "region %u: the server's fd is not a memfd or tmpfs file; accessed by message\n",
			 index);
	} else if (!PAGE_ALIGNED(offset) ||
		   check_add_overflow(offset, region->size, &end) ||
		   end > MAX_LFS_FILESIZE) {
		dev_warn(dev,
			 "region %u: file offset %#llx (size %#llx) cannot be mapped; accessed by message\n",
			 index, offset, region->size);
	} else {
		region->file_offset = offset;
		return file;
	}
	fput(file);
	return NULL;
}

static int vfio_user_fetch_region(struct vfio_user_conn *conn, u32 index,
				  struct vfio_user_region *region)
{
	struct vfio_user_region_info req = {
		.argsz = cpu_to_le32(VFIO_USER_MAX_REGION_INFO),
		.index = cpu_to_le32(index),
	};
	struct vfio_user_call call = {
		.command = VFIO_USER_DEVICE_GET_REGION_INFO,
		.payload = &req,
		.len = sizeof(req),
		.reply_min = sizeof(struct vfio_user_region_info),
		.reply_max = VFIO_USER_MAX_REGION_INFO,
	};
	struct vfio_user_region_info *rep;
	struct file *file = NULL;
	u32 flags, first;
	int len, ret = 0;

	rep = kmalloc(VFIO_USER_MAX_REGION_INFO, GFP_KERNEL);
	if (!rep)
		return -ENOMEM;
	call.reply = rep;
	call.rx_files = &file;
	call.rx_max_files = 1;
	len = vfio_user_call(conn, &call);
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
	/* The consumer reaches region @index at offset index << 40. */
	if (region->size > BIT_ULL(VFIO_USER_OFFSET_SHIFT)) {
		vfio_user_conn_broken(conn,
				      "region %u: size %#llx exceeds the %#llx-byte offset window",
				      index, region->size,
				      BIT_ULL(VFIO_USER_OFFSET_SHIFT));
		ret = -EPROTO;
		goto out;
	}
	region->flags = flags & (VFIO_REGION_INFO_FLAG_READ |
				 VFIO_REGION_INFO_FLAG_WRITE);
	if (file && (flags & VFIO_REGION_INFO_FLAG_MMAP))
		region->file = vfio_user_region_file(conn, index, region, file,
						     le64_to_cpu(rep->offset));
	else if (file)
		fput(file);
	file = NULL;
	first = le32_to_cpu(rep->cap_offset);
	if ((flags & VFIO_REGION_INFO_FLAG_CAPS) && first)
		ret = vfio_user_copy_caps(conn, index, (u8 *)rep, len, first,
					  region);
	/* Without a sparse mmap capability the whole region is mapped. */
	if (!ret && region->file && !region->areas &&
	    !PAGE_ALIGNED(region->size)) {
		dev_warn(vfio_user_dev(conn->udev),
			 "region %u: size %#llx is not page aligned; accessed by message\n",
			 index, region->size);
		fput(region->file);
		region->file = NULL;
	}
	if (region->file) {
		region->flags |= VFIO_REGION_INFO_FLAG_MMAP;
		region->file_write = (flags & VFIO_REGION_INFO_FLAG_WRITE) &&
				     (region->file->f_mode & FMODE_WRITE);
	}
out:
	if (file)
		fput(file);
	kfree(rep);
	return ret;
}

/**
 * vfio_user_info_free() - free what vfio_user_fetch_info() allocated
 * @info: the info; its regions and IRQ trigger arrays are freed, @info
 *	itself is the caller's
 *
 * Safe on a partly filled @info (a failed fetch) and on a zeroed one.
 *
 * Context: any context that may free memory.
 */
void vfio_user_info_free(struct vfio_user_info *info)
{
	u32 i;

	vfio_user_free_regions(info->regions, info->num_regions);
	for (i = 0; i < VFIO_PCI_NUM_IRQS; i++)
		kfree(info->irqs[i].triggers);
}

/**
 * vfio_user_fetch_info() - ask the server for device, region and IRQ info
 * @conn: the connection being attached, not yet published
 * @info: zeroed by the caller; filled, to be freed with
 *	vfio_user_info_free() whatever this returns
 *
 * Sends DEVICE_GET_INFO, then DEVICE_GET_REGION_INFO per region and
 * DEVICE_GET_IRQ_INFO per IRQ index below VFIO_PCI_REQ_IRQ_INDEX (the REQ
 * index is the module's own), and checks every reply before keeping it:
 * counts within the VFIO_USER_MAX_* bounds, indexes as asked, regions that
 * fit the 2^VFIO_USER_OFFSET_SHIFT offset window, capability chains (see
 * vfio_user_copy_caps()). Device and IRQ flags are masked to what VFIO
 * defines; region flags to READ and WRITE, plus MMAP for a region the
 * server backs with a memfd or tmpfs file (passed with the reply, taken
 * when the attach receives fds: vfio_user_conn_fds_begin()).
 *
 * Context: process context, may sleep. Each message waits at most the
 * connection's timeout for its reply.
 * Return: 0; -EPROTO after a protocol violation (the connection is then
 * broken); -ENOMEM; or the error of a message (vfio_user_call()).
 */
int vfio_user_fetch_info(struct vfio_user_conn *conn,
			 struct vfio_user_info *info)
{
	struct vfio_user_device_info dreq = { .argsz = cpu_to_le32(sizeof(dreq)) };
	struct vfio_user_device_info drep;
	struct vfio_user_call call = {
		.command = VFIO_USER_DEVICE_GET_INFO,
		.payload = &dreq,
		.len = sizeof(dreq),
		.reply = &drep,
		.reply_min = sizeof(drep),
		.reply_max = sizeof(drep),
	};
	u32 i, num_irqs;
	int ret;

	ret = vfio_user_call(conn, &call);
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
		u32 flags;

		call = (struct vfio_user_call) {
			.command = VFIO_USER_DEVICE_GET_IRQ_INFO,
			.payload = &ireq,
			.len = sizeof(ireq),
			.reply = &irep,
			.reply_min = sizeof(irep),
			.reply_max = sizeof(irep),
		};
		ret = vfio_user_call(conn, &call);
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
		flags = le32_to_cpu(irep.flags);
		if (flags & ~VFIO_USER_IRQ_INFO_FLAGS)
			dev_dbg(vfio_user_dev(conn->udev),
				"IRQ index %u: flags %#x, undefined ones dropped\n",
				i, flags);
		info->irqs[i].flags = flags & VFIO_USER_IRQ_INFO_FLAGS;
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

/**
 * vfio_user_same_shape() - whether a server offers the open device's shape
 * @udev: the device, with a consumer holding it open
 * @info: what the new server answered
 *
 * A re-attach under an open consumer must find the same number of
 * regions, the same region sizes and mmap-able areas, and the same IRQ
 * counts: the consumer has mapped its view of them (a mapping the new
 * server does not back would be SIGBUS, which ends a KVM guest).
 *
 * Context: process context; the caller holds udev->conn_sem for writing.
 * Return: true if the shapes match.
 */
bool vfio_user_same_shape(struct vfio_user_device *udev,
			  struct vfio_user_info *info)
{
	u32 i;

	if (info->num_regions != udev->num_regions)
		return false;
	for (i = 0; i < info->num_regions; i++) {
		const struct vfio_user_region *a = &info->regions[i];
		const struct vfio_user_region *b = &udev->regions[i];

		if (a->size != b->size ||
		    (a->flags ^ b->flags) & VFIO_REGION_INFO_FLAG_MMAP ||
		    a->nr_areas != b->nr_areas ||
		    (a->nr_areas &&
		     memcmp(a->areas, b->areas, a->nr_areas * sizeof(*a->areas))))
			return false;
	}
	for (i = 0; i < VFIO_PCI_NUM_IRQS; i++)
		if (info->irqs[i].count != udev->irqs[i].count)
			return false;
	return true;
}
