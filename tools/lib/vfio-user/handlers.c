// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libvfio-user-server: client-command handlers (layer 5). vus_dispatch()
 * checks the header and hands each command to its handler, which checks
 * every field before use — the payload size against what the command
 * needs, every index, count and offset against the device — and fills a
 * &struct vus_reply. A bad command gets an error reply and the connection
 * stays. Calls version.c, migration.c (DEVICE_FEATURE, MIG_DATA_READ/WRITE,
 * and the migration side of DEVICE_RESET), dma.c, region.c, pci.c, irq.c,
 * util.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vus-internal.h"

/* ---- DMA_MAP / DMA_UNMAP ------------------------------------------------- */

static int vus_handle_dma_map(struct vus_dev *dev, struct vus_msg *m,
			      struct vus_reply *r)
{
	struct vfio_user_dma_map map;
	uint64_t iova, size, offset;
	uint32_t flags;

	(void)r;
	if (m->size - HDR != sizeof(map) || m->nr_fds > 1)
		return -EINVAL;
	memcpy(&map, m->buf + HDR, sizeof(map));
	flags = le32toh(map.flags);
	iova = le64toh(map.addr);
	size = le64toh(map.size);
	offset = le64toh(map.offset);
	if (le32toh(map.argsz) < sizeof(map) ||
	    flags & ~(VFIO_USER_F_DMA_REGION_READ | VFIO_USER_F_DMA_REGION_WRITE) ||
	    !size || iova + size < iova || iova + size - 1 < iova)
		return -EINVAL;
	return vus_dma_add(dev, iova, size, flags, m->nr_fds ? m->fds[0] : -1,
			   offset);
}

static int vus_handle_dma_unmap(struct vus_dev *dev, struct vus_msg *m,
				struct vus_reply *r)
{
	struct vfio_user_dma_unmap um;
	uint64_t iova, size;
	uint32_t flags;
	int err;

	if (m->size - HDR != sizeof(um))
		return -EINVAL;
	memcpy(&um, m->buf + HDR, sizeof(um));
	flags = le32toh(um.flags);
	iova = le64toh(um.addr);
	size = le64toh(um.size);
	if (le32toh(um.argsz) < sizeof(um) ||
	    (flags & ~VFIO_USER_F_DMA_UNMAP_ALL))
		return -EINVAL;
	if (flags & VFIO_USER_F_DMA_UNMAP_ALL) {
		if (iova || size)
			return -EINVAL;
		vus_dma_drop_all(dev);
	} else {
		err = vus_dma_remove(dev, iova, size);
		if (err)
			return err;
	}
	um.argsz = htole32(sizeof(um));
	r->buf = malloc(sizeof(um));
	if (!r->buf)
		return -ENOMEM;
	memcpy(r->buf, &um, sizeof(um));
	r->len = sizeof(um);
	return 0;
}

/* ---- device, region and IRQ info ----------------------------------------- */

static unsigned int vus_num_regions(const struct vus_dev *dev)
{
	return dev->pci.enabled ? VUS_MAX(dev->nr_regions, VFIO_PCI_NUM_REGIONS) :
				  dev->nr_regions;
}

static unsigned int vus_num_irqs(const struct vus_dev *dev)
{
	unsigned int i, n = 0;

	for (i = 0; i < VUS_MAX_IRQ_INDEXES; i++)
		if (dev->irqs[i].count)
			n = i + 1;
	return dev->pci.enabled ? VUS_MAX(n, VFIO_PCI_NUM_IRQS) : n;
}

static void *vus_reply_alloc(struct vus_reply *r, size_t len)
{
	r->buf = calloc(1, len ?: 1);
	r->len = len;
	return r->buf;
}

static int vus_handle_device_info(struct vus_dev *dev, struct vus_msg *m,
				  struct vus_reply *r)
{
	struct vfio_user_device_info in, *out;

	if (m->size - HDR != sizeof(in))
		return -EINVAL;
	memcpy(&in, m->buf + HDR, sizeof(in));
	if (le32toh(in.argsz) < sizeof(in))
		return -EINVAL;
	out = vus_reply_alloc(r, sizeof(*out));
	if (!out)
		return -ENOMEM;
	out->argsz = htole32(sizeof(*out));
	out->flags = htole32(VFIO_DEVICE_FLAGS_RESET |
			     (dev->pci.enabled ? VFIO_DEVICE_FLAGS_PCI : 0));
	out->num_regions = htole32(vus_num_regions(dev));
	out->num_irqs = htole32(vus_num_irqs(dev));
	return 0;
}

static int vus_handle_region_info(struct vus_dev *dev, struct vus_msg *m,
				  struct vus_reply *r)
{
	struct vfio_user_region_info in, *out;
	const struct vus_region *reg;
	uint32_t argsz, index, flags = 0, caps_len = 0, full;
	bool mmap_ok;
	uint8_t *p;
	unsigned int i;

	if (m->size - HDR != sizeof(in))
		return -EINVAL;
	memcpy(&in, m->buf + HDR, sizeof(in));
	argsz = le32toh(in.argsz);
	index = le32toh(in.index);
	if (argsz < sizeof(in) || index >= vus_num_regions(dev))
		return -EINVAL;
	reg = &dev->regions[index];
	if (reg->present) {
		if (reg->flags & VUS_REGION_READ)
			flags |= VFIO_REGION_INFO_FLAG_READ;
		if (reg->flags & VUS_REGION_WRITE)
			flags |= VFIO_REGION_INFO_FLAG_WRITE;
	}
	mmap_ok = reg->present && (reg->flags & VUS_REGION_MMAP) &&
		  reg->memfd >= 0 && dev->peer.max_msg_fds >= 1;
	if (mmap_ok)
		flags |= VFIO_REGION_INFO_FLAG_MMAP;
	if (reg->present && reg->nr_sparse)
		caps_len += sizeof(struct vfio_user_region_info_cap_sparse_mmap) +
			    reg->nr_sparse *
			    sizeof(struct vfio_user_sparse_mmap_area);
	if (reg->present && (reg->type || reg->subtype))
		caps_len += sizeof(struct vfio_user_region_info_cap_type);
	full = sizeof(*out) + caps_len;

	/*
	 * Too small for the caps: argsz = full tells the client to ask again.
	 * FLAG_CAPS goes only with caps in the reply (the spec: "capabilities
	 * found in the reply"); the kernel sets it with cap_offset 0 here,
	 * but QEMU's vfio-user client refuses that reply (-EINVAL) before it
	 * looks at argsz.
	 */
	if (argsz < full)
		caps_len = 0;
	if (caps_len)
		flags |= VFIO_REGION_INFO_FLAG_CAPS;
	out = vus_reply_alloc(r, sizeof(*out) + caps_len);
	if (!out)
		return -ENOMEM;
	out->argsz = htole32(full);
	out->flags = htole32(flags);
	out->index = htole32(index);
	out->cap_offset = htole32(caps_len ? sizeof(*out) : 0);
	out->size = htole64(reg->present ? reg->size : 0);
	out->offset = 0;
	p = (uint8_t *)(out + 1);
	if (caps_len && reg->nr_sparse) {
		struct vfio_user_region_info_cap_sparse_mmap sp = { 0 };
		size_t len = sizeof(sp) + reg->nr_sparse *
			     sizeof(struct vfio_user_sparse_mmap_area);
		uint32_t next = (reg->type || reg->subtype) ?
				(uint32_t)(p - (uint8_t *)out + len) : 0;

		sp.header.id = htole16(VFIO_REGION_INFO_CAP_SPARSE_MMAP);
		sp.header.version = htole16(1);
		sp.header.next = htole32(next);
		sp.nr_areas = htole32(reg->nr_sparse);
		memcpy(p, &sp, sizeof(sp));
		p += sizeof(sp);
		for (i = 0; i < reg->nr_sparse; i++) {
			struct vfio_user_sparse_mmap_area a = {
				.offset = htole64(reg->sparse[i].offset),
				.size = htole64(reg->sparse[i].size),
			};

			memcpy(p, &a, sizeof(a));
			p += sizeof(a);
		}
	}
	if (caps_len && (reg->type || reg->subtype)) {
		struct vfio_user_region_info_cap_type t = {
			.header.id = htole16(VFIO_REGION_INFO_CAP_TYPE),
			.header.version = htole16(1),
			.header.next = 0,
			.type = htole32(reg->type),
			.subtype = htole32(reg->subtype),
		};

		memcpy(p, &t, sizeof(t));
	}
	/* the fd travels only with a reply that carries the full info */
	if (mmap_ok && argsz >= full)
		r->fd = reg->memfd;
	return 0;
}

static int vus_handle_irq_info(struct vus_dev *dev, struct vus_msg *m,
			       struct vus_reply *r)
{
	struct vfio_user_irq_info in, *out;
	uint32_t index, flags = 0;

	if (m->size - HDR != sizeof(in))
		return -EINVAL;
	memcpy(&in, m->buf + HDR, sizeof(in));
	index = le32toh(in.index);
	if (le32toh(in.argsz) < sizeof(in) || index >= vus_num_irqs(dev))
		return -EINVAL;
	if (dev->irqs[index].count) {
		flags = VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE;
		if (dev->pci.enabled && index == VFIO_PCI_INTX_IRQ_INDEX)
			flags |= VFIO_IRQ_INFO_AUTOMASKED;
	}
	out = vus_reply_alloc(r, sizeof(*out));
	if (!out)
		return -ENOMEM;
	out->argsz = htole32(sizeof(*out));
	out->flags = htole32(flags);
	out->index = htole32(index);
	out->count = htole32(dev->irqs[index].count);
	return 0;
}

static int vus_handle_set_irqs(struct vus_dev *dev, struct vus_msg *m,
			       struct vus_reply *r)
{
	struct vfio_user_irq_set s;
	uint32_t flags, index, start, count, data, action, i;
	size_t len = m->size - HDR;
	const uint8_t *bools;

	(void)r;
	if (len < sizeof(s))
		return -EINVAL;
	memcpy(&s, m->buf + HDR, sizeof(s));
	flags = le32toh(s.flags);
	index = le32toh(s.index);
	start = le32toh(s.start);
	count = le32toh(s.count);
	data = flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
	action = flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
	bools = m->buf + HDR + sizeof(s);

	if (le32toh(s.argsz) < sizeof(s) ||
	    (flags & ~(VFIO_IRQ_SET_DATA_TYPE_MASK |
		       VFIO_IRQ_SET_ACTION_TYPE_MASK)) ||
	    __builtin_popcount(data) != 1 || __builtin_popcount(action) != 1)
		return -EINVAL;
	if (index >= vus_num_irqs(dev))
		return -EINVAL;
	if (len != sizeof(s) + (data == VFIO_IRQ_SET_DATA_BOOL ? count : 0))
		return -EINVAL;
	if (data != VFIO_IRQ_SET_DATA_EVENTFD && m->nr_fds)
		return -EINVAL;
	if (data == VFIO_IRQ_SET_DATA_EVENTFD && m->nr_fds &&
	    m->nr_fds != count)
		return -EINVAL;

	if (!count) {
		/* DATA_NONE with count (and start) 0: disable the index */
		if (data != VFIO_IRQ_SET_DATA_NONE || start ||
		    action != VFIO_IRQ_SET_ACTION_TRIGGER)
			return -EINVAL;
		count = dev->irqs[index].count;
		for (i = 0; i < count; i++)
			vus_irq_set_fd(dev, index, i, action, -1);
		if (count && dev->ops.irq_state)
			dev->ops.irq_state(dev, dev->priv, index, 0, count,
					   false);
		return 0;
	}
	if (start >= dev->irqs[index].count ||
	    count > dev->irqs[index].count - start)
		return -EINVAL;

	for (i = 0; i < count; i++) {
		if (data == VFIO_IRQ_SET_DATA_EVENTFD) {
			int fd = m->nr_fds ? m->fds[i] : -1;

			if (m->nr_fds)
				m->fds[i] = -1;
			vus_irq_set_fd(dev, index, start + i, action, fd);
			continue;
		}
		if (data == VFIO_IRQ_SET_DATA_BOOL && !bools[i])
			continue;
		if (action == VFIO_IRQ_SET_ACTION_TRIGGER)
			vus_irq_client_trigger(dev, index, start + i);
		else
			vus_irq_set_masked(dev, index, start + i,
					   action == VFIO_IRQ_SET_ACTION_MASK);
	}
	if (data == VFIO_IRQ_SET_DATA_EVENTFD &&
	    action == VFIO_IRQ_SET_ACTION_TRIGGER && dev->ops.irq_state)
		dev->ops.irq_state(dev, dev->priv, index, start, count,
				   m->nr_fds != 0);
	return 0;
}

/* ---- region access ------------------------------------------------------- */

static int vus_check_access(struct vus_dev *dev, const struct vfio_user_region_access *a,
			    bool is_write, uint64_t *off, uint32_t *index,
			    uint32_t *count)
{
	const struct vus_region *reg;

	*off = le64toh(a->offset);
	*index = le32toh(a->region);
	*count = le32toh(a->count);
	if (*index >= VUS_MAX_REGIONS || !dev->regions[*index].present)
		return -EINVAL;
	reg = &dev->regions[*index];
	if (*count > dev->max_xfer)
		return -E2BIG;
	if (!(reg->flags & (is_write ? VUS_REGION_WRITE : VUS_REGION_READ)))
		return -EACCES;
	if (!vus_range_ok(*off, *count, reg->size))
		return -EINVAL;
	return 0;
}

static int vus_handle_region_read(struct vus_dev *dev, struct vus_msg *m,
				  struct vus_reply *r)
{
	struct vfio_user_region_access a;
	uint64_t off;
	uint32_t index, count;
	int err;

	if (m->size - HDR != sizeof(a))
		return -EINVAL;
	memcpy(&a, m->buf + HDR, sizeof(a));
	err = vus_check_access(dev, &a, false, &off, &index, &count);
	if (err)
		return err;
	if (!count)
		return 0;	/* header-only reply */
	if (!vus_reply_alloc(r, sizeof(a) + count))
		return -ENOMEM;
	err = vus_region_access(dev, index, off, (uint8_t *)r->buf + sizeof(a),
				count, false);
	if (err)
		return err;
	memcpy(r->buf, &a, sizeof(a));
	return 0;
}

static int vus_handle_region_write(struct vus_dev *dev, struct vus_msg *m,
				   struct vus_reply *r)
{
	struct vfio_user_region_access a;
	uint64_t off;
	uint32_t index, count;
	int err;

	if (m->size - HDR < sizeof(a))
		return -EINVAL;
	memcpy(&a, m->buf + HDR, sizeof(a));
	if (m->size - HDR - sizeof(a) != le32toh(a.count))
		return -EINVAL;
	err = vus_check_access(dev, &a, true, &off, &index, &count);
	if (err)
		return err;
	if (!count)
		return 0;
	err = vus_region_access(dev, index, off, m->buf + HDR + sizeof(a),
				count, true);
	if (err)
		return err;
	if (!vus_reply_alloc(r, sizeof(a)))
		return -ENOMEM;
	memcpy(r->buf, &a, sizeof(a));
	return 0;
}

static int vus_handle_reset(struct vus_dev *dev, struct vus_msg *m,
			    struct vus_reply *r)
{
	(void)r;
	if (m->size != HDR)
		return -EINVAL;
	vus_pci_reset(dev);
	vus_irq_clear_pending(dev);
	vus_mig_reset(dev);
	if (dev->ops.reset)
		return dev->ops.reset(dev, dev->priv);
	return 0;
}

/* ---- dispatch ------------------------------------------------------------ */

/*
 * Check the header of client command @m and run its handler. Returns 0
 * with the reply payload in @r, or -errno for an error reply.
 */
int vus_dispatch(struct vus_dev *dev, struct vus_msg *m, struct vus_reply *r)
{
	if (m->flags & ~(VFIO_USER_F_TYPE_MASK | VFIO_USER_F_NO_REPLY) ||
	    (m->flags & VFIO_USER_F_TYPE_MASK) != VFIO_USER_F_TYPE_COMMAND)
		return -EINVAL;
	if (m->fds_err)
		return m->fds_err;
	if (m->nr_fds && m->command != VFIO_USER_DMA_MAP &&
	    m->command != VFIO_USER_DEVICE_SET_IRQS)
		return -EINVAL;
	if (!dev->negotiated && m->command != VFIO_USER_VERSION)
		return -EINVAL;

	switch (m->command) {
	case VFIO_USER_VERSION:
		return vus_handle_version(dev, m, r);
	case VFIO_USER_DMA_MAP:
		return vus_handle_dma_map(dev, m, r);
	case VFIO_USER_DMA_UNMAP:
		return vus_handle_dma_unmap(dev, m, r);
	case VFIO_USER_DEVICE_GET_INFO:
		return vus_handle_device_info(dev, m, r);
	case VFIO_USER_DEVICE_GET_REGION_INFO:
		return vus_handle_region_info(dev, m, r);
	case VFIO_USER_DEVICE_GET_IRQ_INFO:
		return vus_handle_irq_info(dev, m, r);
	case VFIO_USER_DEVICE_SET_IRQS:
		return vus_handle_set_irqs(dev, m, r);
	case VFIO_USER_REGION_READ:
		return vus_handle_region_read(dev, m, r);
	case VFIO_USER_REGION_WRITE:
		return vus_handle_region_write(dev, m, r);
	case VFIO_USER_DEVICE_RESET:
		return vus_handle_reset(dev, m, r);
	case VFIO_USER_DMA_READ:
	case VFIO_USER_DMA_WRITE:
		return -EINVAL;		/* server-to-client only */
	case VFIO_USER_DEVICE_FEATURE:
		return vus_mig_handle_feature(dev, m, r);
	case VFIO_USER_MIG_DATA_READ:
		return vus_mig_handle_data_read(dev, m, r);
	case VFIO_USER_MIG_DATA_WRITE:
		return vus_mig_handle_data_write(dev, m);
	case VFIO_USER_DEVICE_GET_REGION_IO_FDS:
	case VFIO_USER_REGION_WRITE_MULTI:
		return -EOPNOTSUPP;	/* not negotiated / not offered */
	default:
		return -ENOSYS;
	}
}

