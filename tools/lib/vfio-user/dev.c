// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libvfio-user-server: device object, regions, interrupts, messages.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include "vus-internal.h"

static vus_print_fn_t vus_print;

vus_print_fn_t vus_set_print(vus_print_fn_t fn)
{
	vus_print_fn_t old = vus_print;

	vus_print = fn;
	return old;
}

void vus_pr(enum vus_print_level level, const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	if (!vus_print)
		return;
	va_start(ap, fmt);
	vus_print(level, fmt, ap);
	va_end(ap);
	errno = saved;
}

int vus_opts_copy(void *dst, size_t dst_sz, size_t known_end, const void *src)
{
	size_t src_sz, i;

	memset(dst, 0, dst_sz);
	if (!src)
		return 0;
	src_sz = *(const size_t *)src;
	if (src_sz < sizeof(size_t))
		return -EINVAL;
	for (i = known_end; i < src_sz; i++)
		if (((const uint8_t *)src)[i])
			return -EINVAL;
	memcpy(dst, src, VUS_MIN(src_sz, known_end));
	*(size_t *)dst = dst_sz;
	return 0;
}

bool vus_range_ok(uint64_t off, uint64_t count, uint64_t size)
{
	return off <= size && count <= size - off;
}

struct vus_dev *vus_dev__new(const struct vus_dev_opts *uopts)
{
	struct vus_dev *dev;
	struct epoll_event ev = { .events = EPOLLIN };
	int err;

	dev = calloc(1, sizeof(*dev));
	if (!dev)
		return vus_err_ptr(-ENOMEM);
	dev->epfd = dev->listen_fd = dev->queue_efd = dev->conn_fd = -1;
	dev->queue_tail = &dev->queue_head;

	err = VUS_OPTS_COPY(&dev->opts, uopts, vus_dev_opts);
	if (err)
		goto err_free;
	if (dev->opts.ops)
		dev->ops = *dev->opts.ops;
	dev->priv = dev->opts.priv;
	dev->max_xfer = dev->opts.max_data_xfer_size ?: VFIO_USER_DEF_MAX_XFER_SIZE;
	dev->max_fds = dev->opts.max_msg_fds ?: 8;
	dev->max_dma_maps = dev->opts.max_dma_maps ?: VFIO_USER_DEF_MAX_DMA_MAPS;
	dev->pgsizes = dev->opts.pgsizes ?: 4096;
	dev->timeout_ms = dev->opts.timeout_ms ?: 10000;
	err = -EINVAL;
	if (dev->max_xfer > VUS_MAX_XFER_LIMIT || dev->max_fds > VUS_SCM_MAX_FD)
		goto err_free;

	dev->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (dev->epfd < 0)
		goto err_errno;
	dev->queue_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (dev->queue_efd < 0)
		goto err_errno;
	ev.data.fd = dev->queue_efd;
	if (epoll_ctl(dev->epfd, EPOLL_CTL_ADD, dev->queue_efd, &ev))
		goto err_errno;
	return dev;

err_errno:
	err = -errno;
err_free:
	vus_dev__delete(dev);
	return vus_err_ptr(err);
}

static void vus_region_free(struct vus_region *r)
{
	if (r->mem)
		munmap(r->mem, r->size);
	if (r->memfd >= 0)
		close(r->memfd);
	free(r->sparse);
	memset(r, 0, sizeof(*r));
	r->memfd = -1;
}

static void vus_irq_free(struct vus_irq *irq)
{
	unsigned int i;

	for (i = 0; i < irq->count; i++) {
		if (irq->vec[i].trigger_fd >= 0)
			close(irq->vec[i].trigger_fd);
		if (irq->vec[i].mask_fd >= 0)
			close(irq->vec[i].mask_fd);
		if (irq->vec[i].unmask_fd >= 0)
			close(irq->vec[i].unmask_fd);
	}
	free(irq->vec);
	irq->vec = NULL;
	irq->count = 0;
}

void vus_dev__delete(struct vus_dev *dev)
{
	unsigned int i;

	if (!dev)
		return;
	vus_dev__disconnect(dev);
	for (i = 0; i < VUS_MAX_REGIONS; i++)
		if (dev->regions[i].present)
			vus_region_free(&dev->regions[i]);
	for (i = 0; i < VUS_MAX_IRQ_INDEXES; i++)
		vus_irq_free(&dev->irqs[i]);
	vus_rx_reset(dev);
	free(dev->rx.buf);
	vus_pci_free(dev);
	if (dev->listen_fd >= 0)
		close(dev->listen_fd);
	if (dev->listen_path) {
		unlink(dev->listen_path);
		free(dev->listen_path);
	}
	if (dev->queue_efd >= 0)
		close(dev->queue_efd);
	if (dev->epfd >= 0)
		close(dev->epfd);
	free(dev->dma);
	free(dev);
}

void *vus_dev__priv(const struct vus_dev *dev)
{
	return dev ? dev->priv : NULL;
}

static bool is_pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

int vus_dev__add_region(struct vus_dev *dev, unsigned int index,
			const struct vus_region_opts *uopts)
{
	struct vus_region_opts o;
	struct vus_region r = { .memfd = -1 };
	unsigned int i;
	int err;

	if (!dev || !uopts || index >= VUS_MAX_REGIONS)
		return vus_err(-EINVAL);
	err = VUS_OPTS_COPY(&o, uopts, vus_region_opts);
	if (err)
		return vus_err(err);
	if (!o.size || o.nr_sparse > VUS_MAX_SPARSE || (o.nr_sparse && !o.sparse))
		return vus_err(-EINVAL);
	if (!o.flags)
		o.flags = VUS_REGION_READ | VUS_REGION_WRITE;
	if (o.flags & ~(VUS_REGION_READ | VUS_REGION_WRITE | VUS_REGION_MMAP |
			VUS_REGION_BAR_IO | VUS_REGION_BAR_MEM64 |
			VUS_REGION_BAR_PREFETCH))
		return vus_err(-EINVAL);
	if ((o.flags & VUS_REGION_MMAP) && o.access)
		return vus_err(-EINVAL);
	if (o.nr_sparse && !(o.flags & VUS_REGION_MMAP))
		return vus_err(-EINVAL);
	for (i = 0; i < o.nr_sparse; i++)
		if (!vus_range_ok(o.sparse[i].offset, o.sparse[i].size, o.size))
			return vus_err(-EINVAL);

	if (dev->pci.enabled) {
		if (index == VFIO_PCI_CONFIG_REGION_INDEX)
			return vus_err(-EBUSY);
		if (index <= VFIO_PCI_BAR5_REGION_INDEX) {
			bool io = o.flags & VUS_REGION_BAR_IO;

			if (!is_pow2(o.size) || o.size < (io ? 4 : 16))
				return vus_err(-EINVAL);
			if (io && (o.flags & (VUS_REGION_BAR_MEM64 |
					      VUS_REGION_BAR_PREFETCH)))
				return vus_err(-EINVAL);
			if (io && o.size > 256)
				return vus_err(-EINVAL);
			if (!io && !(o.flags & VUS_REGION_BAR_MEM64) &&
			    o.size > (1ULL << 31))
				return vus_err(-EINVAL);
			if ((o.flags & VUS_REGION_BAR_MEM64) &&
			    index == VFIO_PCI_BAR5_REGION_INDEX)
				return vus_err(-EINVAL);
			if (index > 0 && dev->regions[index - 1].present &&
			    (dev->regions[index - 1].flags & VUS_REGION_BAR_MEM64))
				return vus_err(-EBUSY);
		}
	}

	r.present = true;
	r.size = o.size;
	r.flags = o.flags;
	r.access = o.access;
	r.priv = o.priv;
	r.type = o.type;
	r.subtype = o.subtype;
	if (o.nr_sparse) {
		r.sparse = calloc(o.nr_sparse, sizeof(*r.sparse));
		if (!r.sparse)
			return vus_err(-ENOMEM);
		memcpy(r.sparse, o.sparse, o.nr_sparse * sizeof(*r.sparse));
		r.nr_sparse = o.nr_sparse;
	}
	if (!o.access) {
		r.memfd = memfd_create("vus-region", MFD_CLOEXEC);
		if (r.memfd < 0)
			goto err_errno;
		if (ftruncate(r.memfd, o.size))
			goto err_errno;
		r.mem = mmap(NULL, o.size, PROT_READ | PROT_WRITE, MAP_SHARED,
			     r.memfd, 0);
		if (r.mem == MAP_FAILED) {
			r.mem = NULL;
			goto err_errno;
		}
	}

	if (dev->regions[index].present)
		vus_region_free(&dev->regions[index]);
	dev->regions[index] = r;
	if (index + 1 > dev->nr_regions)
		dev->nr_regions = index + 1;
	if (dev->pci.enabled && index <= VFIO_PCI_BAR5_REGION_INDEX)
		vus_pci_bar_added(dev, index);
	return 0;

err_errno:
	err = -errno;
	vus_region_free(&r);
	return vus_err(err);
}

void *vus_dev__region_mem(struct vus_dev *dev, unsigned int index)
{
	if (!dev || index >= VUS_MAX_REGIONS || !dev->regions[index].present ||
	    !dev->regions[index].mem)
		return vus_err_ptr(-ENOENT);
	return dev->regions[index].mem;
}

int vus_dev__set_irq_count(struct vus_dev *dev, unsigned int index,
			   unsigned int count)
{
	struct vus_irq_vec *vec = NULL;
	unsigned int i;

	if (!dev || index >= VUS_MAX_IRQ_INDEXES || count > VUS_MAX_IRQ_VECTORS)
		return vus_err(-EINVAL);
	if (count) {
		vec = calloc(count, sizeof(*vec));
		if (!vec)
			return vus_err(-ENOMEM);
		for (i = 0; i < count; i++)
			vec[i].trigger_fd = vec[i].mask_fd = vec[i].unmask_fd = -1;
	}
	vus_irq_free(&dev->irqs[index]);
	dev->irqs[index].vec = vec;
	dev->irqs[index].count = count;
	return 0;
}

static void vus_signal(int fd)
{
	uint64_t one = 1;

	if (fd >= 0 && write(fd, &one, sizeof(one)) < 0)
		pr_debug("eventfd write: %s\n", strerror(errno));
}

static struct vus_irq_vec *vus_vec(struct vus_dev *dev, unsigned int index,
				   unsigned int vector)
{
	if (!dev || index >= VUS_MAX_IRQ_INDEXES ||
	    vector >= dev->irqs[index].count)
		return NULL;
	return &dev->irqs[index].vec[vector];
}

static int vus_fire(struct vus_dev *dev, unsigned int index,
		    struct vus_irq_vec *v)
{
	uint64_t one = 1;

	if (v->masked) {
		v->pending = true;
		return 1;
	}
	if (v->trigger_fd < 0)
		return -ENOENT;
	v->pending = false;
	if (write(v->trigger_fd, &one, sizeof(one)) < 0)
		return -errno;
	if (index == VFIO_PCI_INTX_IRQ_INDEX) {
		/* automasked, like a level interrupt behind vfio-pci */
		v->masked = true;
		vus_signal(v->mask_fd);
	}
	return 0;
}

int vus_dev__trigger_irq(struct vus_dev *dev, unsigned int index,
			 unsigned int vector)
{
	struct vus_irq_vec *v = vus_vec(dev, index, vector);

	if (!v)
		return vus_err(-EINVAL);
	return vus_err(vus_fire(dev, index, v));
}

bool vus_dev__irq_enabled(struct vus_dev *dev, unsigned int index,
			  unsigned int vector)
{
	struct vus_irq_vec *v = vus_vec(dev, index, vector);

	return v && v->trigger_fd >= 0;
}

bool vus_dev__irq_masked(struct vus_dev *dev, unsigned int index,
			 unsigned int vector)
{
	struct vus_irq_vec *v = vus_vec(dev, index, vector);

	return v && v->masked;
}

/* Mask or unmask one vector on the client's request. */
void vus_irq_set_masked(struct vus_dev *dev, unsigned int index,
			unsigned int vector, bool mask)
{
	struct vus_irq_vec *v = vus_vec(dev, index, vector);

	if (!v || v->masked == mask)
		return;
	v->masked = mask;
	vus_signal(mask ? v->mask_fd : v->unmask_fd);
	if (!mask && v->pending)
		vus_fire(dev, index, v);
}

/* Client-requested trigger (SET_IRQS DATA_NONE/BOOL + ACTION_TRIGGER). */
void vus_irq_client_trigger(struct vus_dev *dev, unsigned int index,
			    unsigned int vector)
{
	struct vus_irq_vec *v = vus_vec(dev, index, vector);

	if (v)
		vus_fire(dev, index, v);
}

/* Replace one eventfd of a vector; takes ownership of @fd (may be -1). */
void vus_irq_set_fd(struct vus_dev *dev, unsigned int index,
		    unsigned int vector, uint32_t action, int fd)
{
	struct vus_irq_vec *v = vus_vec(dev, index, vector);
	int *slot;

	if (!v) {
		if (fd >= 0)
			close(fd);
		return;
	}
	if (action == VFIO_IRQ_SET_ACTION_TRIGGER)
		slot = &v->trigger_fd;
	else if (action == VFIO_IRQ_SET_ACTION_MASK)
		slot = &v->mask_fd;
	else
		slot = &v->unmask_fd;
	if (*slot >= 0)
		close(*slot);
	*slot = fd;
	if (action == VFIO_IRQ_SET_ACTION_TRIGGER && fd < 0) {
		v->masked = false;
		v->pending = false;
	}
}

/* Forget every eventfd the client gave (disconnect). */
void vus_irq_drop_all(struct vus_dev *dev)
{
	unsigned int i, j;

	for (i = 0; i < VUS_MAX_IRQ_INDEXES; i++) {
		struct vus_irq *irq = &dev->irqs[i];

		for (j = 0; j < irq->count; j++) {
			vus_irq_set_fd(dev, i, j, VFIO_IRQ_SET_ACTION_TRIGGER, -1);
			vus_irq_set_fd(dev, i, j, VFIO_IRQ_SET_ACTION_MASK, -1);
			vus_irq_set_fd(dev, i, j, VFIO_IRQ_SET_ACTION_UNMASK, -1);
		}
	}
}
