// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libvfio-user-server: the device object (top layer): vus_dev__new() and
 * vus_dev__delete(), which tears down what every other file set up.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "vus-internal.h"

struct vus_dev *vus_dev__new(const struct vus_dev_opts *uopts)
{
	struct vus_dev *dev;
	struct epoll_event ev = { .events = EPOLLIN };
	int err;

	dev = calloc(1, sizeof(*dev));
	if (!dev)
		return vus_err_ptr(-ENOMEM);
	dev->epfd = dev->listen_fd = dev->queue_efd = -1;
	dev->conn.fd = dev->twin.fd = -1;
	dev->queue_tail = &dev->queue_head;
	dev->mig.state = VUS_MIG_RUNNING;

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

void vus_dev__delete(struct vus_dev *dev)
{
	unsigned int i;

	if (!dev)
		return;
	vus_loop_forget(dev);
	vus_dev__disconnect(dev);
	for (i = 0; i < VUS_MAX_REGIONS; i++)
		if (dev->regions[i].present)
			vus_region_free(&dev->regions[i]);
	for (i = 0; i < VUS_MAX_IRQ_INDEXES; i++)
		vus_irq_free(&dev->irqs[i]);
	vus_rx_reset(&dev->conn);
	free(dev->conn.rx.buf);
	free(dev->twin.rx.buf);
	vus_pci_free(dev);
	vus_mig_free(dev);
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
