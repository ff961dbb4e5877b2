// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libvfio-user-server: interrupts (layer 1). IRQ indexes and their
 * vectors, the eventfds the client assigned with SET_IRQS, masking and
 * pending state. Calls only util.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vus-internal.h"

/* Close every eventfd of @irq and free its vectors (count 0 after). */
void vus_irq_free(struct vus_irq *irq)
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

/*
 * Deliver vector @v, or leave it pending while it is masked or the device
 * is not running for migration (vus_irq_fire_held() delivers those).
 */
static int vus_fire(struct vus_dev *dev, unsigned int index,
		    struct vus_irq_vec *v)
{
	uint64_t one = 1;

	if (v->masked || !vus_dev_running(dev)) {
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
	if (!vus_dev_running(dev))
		return vus_err(-EBUSY);
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

/*
 * The device runs again (migration): deliver what the client's SET_IRQS
 * fired meanwhile on unmasked vectors.
 */
void vus_irq_fire_held(struct vus_dev *dev)
{
	unsigned int i, j;

	for (i = 0; i < VUS_MAX_IRQ_INDEXES; i++) {
		struct vus_irq *irq = &dev->irqs[i];

		for (j = 0; j < irq->count; j++)
			if (irq->vec[j].pending && !irq->vec[j].masked &&
			    irq->vec[j].trigger_fd >= 0)
				vus_fire(dev, i, &irq->vec[j]);
	}
}

/*
 * DEVICE_RESET: forget every held interrupt, so one raised while the
 * device was stopped does not fire after the reset.
 */
void vus_irq_clear_pending(struct vus_dev *dev)
{
	unsigned int i, j;

	for (i = 0; i < VUS_MAX_IRQ_INDEXES; i++)
		for (j = 0; j < dev->irqs[i].count; j++)
			dev->irqs[i].vec[j].pending = false;
}
