// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libvfio-user-server: DMA (layer 3). The table of DMA regions the client
 * mapped (DMA_MAP/DMA_UNMAP change it through vus_dma_add() and
 * vus_dma_remove()), pointers into our mappings of fd-backed regions
 * (vus_dev__dma_ptr()), and server-initiated DMA: vus_dev__dma_read() and
 * vus_dev__dma_write() copy through such a mapping (guarded against
 * SIGBUS) or send DMA_READ/DMA_WRITE messages, on the twin socket when the
 * client negotiated one; vus_dev__dma_stats() says which. Calls msg.c,
 * sigbus.c and util.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include "vus-internal.h"

/* ---- the DMA region table ------------------------------------------------ */

_Static_assert(VUS_DMA_READ == VFIO_USER_F_DMA_REGION_READ &&
	       VUS_DMA_WRITE == VFIO_USER_F_DMA_REGION_WRITE, "dma prot");

/*
 * Map @size bytes of the client's @fd at @offset with the rights of @flags
 * into *@vaddr. An offset mmap() can never take is the client's mistake:
 * -EINVAL, the DMA_MAP fails. Any other failure (ENOMEM for a huge
 * region, ENODEV for an fd without mmap, EACCES for an fd opened without
 * the rights, no SIGBUS handler) is no error: *@vaddr stays NULL and the
 * region is served with DMA_READ/DMA_WRITE messages, which is logged once
 * per device.
 */
static int vus_dma_mmap(struct vus_dev *dev, uint64_t iova, uint64_t size,
			uint32_t flags, int fd, uint64_t offset, void **vaddr)
{
	int prot = PROT_NONE, err;
	void *p;

	*vaddr = NULL;
	if (offset > (uint64_t)INT64_MAX ||
	    offset % (uint64_t)sysconf(_SC_PAGESIZE))
		return -EINVAL;
	if (flags & VFIO_USER_F_DMA_REGION_READ)
		prot |= PROT_READ;
	if (flags & VFIO_USER_F_DMA_REGION_WRITE)
		prot |= PROT_WRITE;
	/* our copies through the mapping must survive its disappearance */
	err = vus_sigbus_init();
	if (!err && size > SIZE_MAX)
		err = -ENOMEM;
	if (!err) {
		/* the mapping keeps what it needs; the message closes the fd */
		p = mmap(NULL, size, prot, MAP_SHARED, fd, offset);
		if (p != MAP_FAILED) {
			*vaddr = p;
			return 0;
		}
		err = -errno;
	}
	vus_pr(dev->dma_mmap_warned ? VUS_DEBUG : VUS_WARN,
	       "vus: DMA region [%#llx, +%#llx): cannot map the client's fd (%s), using DMA_READ/DMA_WRITE messages\n",
	       (unsigned long long)iova, (unsigned long long)size,
	       strerror(-err));
	dev->dma_mmap_warned = true;
	return 0;
}

/*
 * Add the client's DMA region [@iova, @iova + @size) with
 * VFIO_USER_F_DMA_REGION_* @flags (checked by the caller). With @fd >= 0
 * (borrowed) the region is mapped from file offset @offset and accessed
 * directly, if it can be (vus_dma_mmap()). The device's dma_map callback
 * may refuse it.
 */
int vus_dma_add(struct vus_dev *dev, uint64_t iova, uint64_t size,
		uint32_t flags, int fd, uint64_t offset)
{
	struct vus_dma_region *dr, *regions;
	void *vaddr = NULL;
	unsigned int i;
	int err;

	for (i = 0; i < dev->nr_dma; i++) {
		dr = &dev->dma[i];
		if (iova < dr->iova + dr->size && dr->iova < iova + size)
			return -EEXIST;
	}
	if (dev->nr_dma >= dev->max_dma_maps)
		return -ENOSPC;

	if (fd >= 0) {
		err = vus_dma_mmap(dev, iova, size, flags, fd, offset, &vaddr);
		if (err)
			return err;
	}
	if (dev->ops.dma_map) {
		err = dev->ops.dma_map(dev, dev->priv, iova, size, flags, vaddr);
		if (err)
			goto err_unmap;
	}
	regions = realloc(dev->dma, (dev->nr_dma + 1) * sizeof(*regions));
	if (!regions) {
		err = -ENOMEM;
		if (dev->ops.dma_unmap)
			dev->ops.dma_unmap(dev, dev->priv, iova, size);
		goto err_unmap;
	}
	dev->dma = regions;
	dev->dma[dev->nr_dma++] = (struct vus_dma_region) {
		.iova = iova, .size = size, .prot = flags, .vaddr = vaddr,
	};
	pr_debug("DMA map [%#llx, +%#llx) flags %#x%s\n",
		 (unsigned long long)iova, (unsigned long long)size, flags,
		 vaddr ? " (mapped)" : fd >= 0 ? " (fd, messages)" : "");
	return 0;

err_unmap:
	if (vaddr)
		munmap(vaddr, size);
	return err < 0 ? err : -EINVAL;
}

/* Find the region holding @iova; NULL if none. */
static struct vus_dma_region *vus_dma_find(struct vus_dev *dev, uint64_t iova)
{
	unsigned int i;

	for (i = 0; i < dev->nr_dma; i++)
		if (iova >= dev->dma[i].iova &&
		    iova - dev->dma[i].iova < dev->dma[i].size)
			return &dev->dma[i];
	return NULL;
}

static int vus_dma_check(struct vus_dev *dev, uint64_t iova, size_t len,
			 uint32_t prot)
{
	uint64_t pos = 0;

	if (iova + len < iova)
		return -EFAULT;
	while (pos < len) {
		struct vus_dma_region *r = vus_dma_find(dev, iova + pos);

		if (!r || (r->prot & prot) != prot)
			return -EFAULT;
		pos += VUS_MIN(len - pos, r->size - (iova + pos - r->iova));
	}
	return 0;
}

/* Remove the region that is exactly [@iova, @iova + @size): 0 or -ENOENT. */
int vus_dma_remove(struct vus_dev *dev, uint64_t iova, uint64_t size)
{
	unsigned int i;

	for (i = 0; i < dev->nr_dma; i++)
		if (dev->dma[i].iova == iova && dev->dma[i].size == size)
			break;
	if (i == dev->nr_dma)
		return -ENOENT;
	if (dev->ops.dma_unmap)
		dev->ops.dma_unmap(dev, dev->priv, iova, size);
	if (dev->dma[i].vaddr)
		munmap(dev->dma[i].vaddr, size);
	dev->dma[i] = dev->dma[--dev->nr_dma];
	return 0;
}

/* Forget every region, telling the device (DMA_UNMAP_ALL, disconnect). */
void vus_dma_drop_all(struct vus_dev *dev)
{
	while (dev->nr_dma) {
		struct vus_dma_region *r = &dev->dma[--dev->nr_dma];

		if (dev->ops.dma_unmap)
			dev->ops.dma_unmap(dev, dev->priv, r->iova, r->size);
		if (r->vaddr)
			munmap(r->vaddr, r->size);
	}
}

unsigned int vus_dev__nr_dma_regions(const struct vus_dev *dev)
{
	return dev ? dev->nr_dma : 0;
}

void *vus_dev__dma_ptr(struct vus_dev *dev, uint64_t iova, size_t len,
		       uint32_t prot)
{
	struct vus_dma_region *r;
	uint64_t roff;

	if (!dev || !len || !prot || (prot & ~(VUS_DMA_READ | VUS_DMA_WRITE)))
		return vus_err_ptr(-EINVAL);
	if (!vus_conn_ready(dev))
		return vus_err_ptr(-ENOTCONN);
	if (!vus_dev_running(dev))
		return vus_err_ptr(-EBUSY);
	r = vus_dma_find(dev, iova);
	if (!r)
		return vus_err_ptr(-EFAULT);
	roff = iova - r->iova;
	if (len > r->size - roff)
		return vus_err_ptr(-EFAULT);
	if ((r->prot & prot) != prot)
		return vus_err_ptr(-EACCES);
	if (!r->vaddr)
		return vus_err_ptr(-EOPNOTSUPP);
	return (uint8_t *)r->vaddr + roff;
}

int vus_dev__dma_stats(const struct vus_dev *dev, struct vus_dma_stats *stats)
{
	struct vus_dma_stats st;

	if (!dev || !stats || stats->sz < sizeof(stats->sz))
		return vus_err(-EINVAL);
	st = dev->dma_stats;
	st.sz = stats->sz;
	memcpy(stats, &st, VUS_MIN(stats->sz, sizeof(st)));
	return 0;
}

/* ---- server-initiated DMA ------------------------------------------------ */

/*
 * Server DMA through messages. Up to VUS_DMA_WINDOW DMA_READ/DMA_WRITE
 * commands are in flight at once, so that the client serves one while the
 * next travels; replies are matched by msg_id in whatever order they come
 * (a DMA_READ reply's data lands straight in the caller's buffer).
 *
 * They go on the twin socket when VERSION negotiated one, and the replies
 * are taken from it alone: client commands stay unread in the main socket
 * meanwhile. Without it they share the main socket with the client's
 * commands, which a wait queues (or, with strict_dma_reply, refuses).
 */
#define VUS_DMA_WINDOW	4

/* The socket server DMA travels on: the twin socket if negotiated. */
static struct vus_chan *vus_dma_chan(struct vus_dev *dev)
{
	return dev->twin.fd >= 0 ? &dev->twin : &dev->conn;
}

struct vus_dma_pend {
	struct vus_rx_sink sink;	/* id, cmd; buf, len for a read */
	bool write;
	uint64_t iova;
	size_t count;
	struct vus_msg *reply;		/* received, not yet checked */
};

static int vus_dma_send(struct vus_dev *dev, struct vus_dma_pend *p,
			void *buf)
{
	struct vfio_user_dma_access a = {
		.addr = htole64(p->iova),
		.count = htole64(p->count),
	};
	struct vfio_user_hdr h;
	struct iovec iov[3] = {
		{ .iov_base = &h, .iov_len = HDR },
		{ .iov_base = &a, .iov_len = sizeof(a) },
		{ .iov_base = buf, .iov_len = p->count },
	};
	int err;

	p->sink.id = dev->next_msg_id++;
	p->sink.cmd = p->write ? VFIO_USER_DMA_WRITE : VFIO_USER_DMA_READ;
	p->sink.skip = sizeof(a);
	p->sink.buf = buf;
	/* only a read's reply carries data; a write's never matches the sink */
	p->sink.len = p->write ? 0 : p->count;
	p->sink.used = p->write;
	p->reply = NULL;
	vus_fill_hdr(&h, p->sink.id, p->sink.cmd,
		     HDR + sizeof(a) + (p->write ? p->count : 0),
		     VFIO_USER_F_TYPE_COMMAND, 0);
	err = vus_xmit(dev, vus_dma_chan(dev), iov, p->write ? 3 : 2, -1);
	if (!err) {
		if (p->write)
			dev->dma_stats.dma_write_msgs++;
		else
			dev->dma_stats.dma_read_msgs++;
	}
	return err;
}

/*
 * A client command @m (consumed) arrived where a DMA reply was awaited, on
 * @ch: on the main socket it is queued, or with strict_dma_reply refused
 * as libvfio-user refuses it; on the twin socket it has no business.
 * Returns 0 (queued, or refused with EBUSY) or -EPROTO (connection
 * dropped).
 */
static int vus_dma_client_cmd(struct vus_dev *dev, struct vus_chan *ch,
			      struct vus_msg *m)
{
	if (ch == &dev->conn && !dev->opts.strict_dma_reply) {
		if (!vus_enqueue(dev, m))
			return 0;
		vus_conn_broken(dev, "too many commands during a DMA wait",
				-EPROTO);
		return -EPROTO;
	}
	if (ch == &dev->conn) {
		pr_warn("msg_id %u command %u arrived while a DMA reply was awaited (strict_dma_reply)\n",
			m->msg_id, m->command);
		vus_conn_broken(dev, "client command in place of a DMA reply",
				-EPROTO);
	} else {
		pr_warn("twin socket: msg_id %u command %u: a client command\n",
			m->msg_id, m->command);
		vus_conn_broken(dev, "client command on the twin socket",
				-EPROTO);
	}
	vus_msg_free(m);
	return -EPROTO;
}

/*
 * Receive until @want has its reply; replies to the other commands in
 * @pend are kept with them, client commands queued (main socket only).
 * Any failure drops the connection.
 */
static int vus_dma_wait(struct vus_dev *dev, struct vus_dma_pend *pend,
			unsigned int nr, struct vus_dma_pend *want)
{
	struct vus_chan *ch = vus_dma_chan(dev);
	struct pollfd pfd[2] = {
		{ .fd = ch->fd, .events = POLLIN },
		/* with a twin socket, only whether the main one hung up */
		{ .fd = ch == &dev->twin ? dev->conn.fd : -1 },
	};
	struct vus_rx_sink sinks[VUS_DMA_WINDOW];
	size_t limit = vus_msg_limit(dev);
	unsigned int i;

	for (i = 0; i < nr; i++)
		limit = VUS_MAX(limit, HDR + sizeof(struct vfio_user_dma_access) +
				(pend[i].write ? 0 : pend[i].count));
	while (!want->reply) {
		struct vus_dma_pend *p = NULL;
		struct vus_msg *m;
		int n, err;

		pfd[0].revents = pfd[1].revents = 0;
		n = vus_rx_avail(ch) ? 1 : poll(pfd, 2, dev->timeout_ms);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n ? -errno : -ETIMEDOUT;
			vus_conn_broken(dev, "waiting for a DMA reply", err);
			return err;
		}
		if (!vus_rx_avail(ch) && !pfd[0].revents) {
			/* the client closed the main socket: it is gone */
			pr_debug("client closed the connection\n");
			dev->conn_dead = true;
			return -ENOTCONN;
		}
		for (i = 0; i < nr; i++)
			sinks[i] = pend[i].sink;
		err = vus_recv_msg(dev, ch, &m, limit, sinks, nr, false);
		for (i = 0; i < nr; i++)
			pend[i].sink.used = sinks[i].used;
		if (err)
			return err == -ECONNRESET ? -ENOTCONN : err;
		if ((m->flags & VFIO_USER_F_TYPE_MASK) == VFIO_USER_F_TYPE_COMMAND) {
			err = vus_dma_client_cmd(dev, ch, m);
			if (err)
				return err;
			continue;
		}
		for (i = 0; i < nr; i++)
			if (!pend[i].reply && pend[i].sink.id == m->msg_id)
				p = &pend[i];
		if ((m->flags & VFIO_USER_F_TYPE_MASK) != VFIO_USER_F_TYPE_REPLY ||
		    !p || m->command != p->sink.cmd || m->nr_fds) {
			pr_warn("%sDMA reply msg_id %u command %u flags %#x fds %u matches no DMA command in flight\n",
				ch == &dev->twin ? "twin socket: " : "",
				m->msg_id, m->command, m->flags, m->nr_fds);
			vus_msg_free(m);
			vus_conn_broken(dev, "bad DMA reply", -EPROTO);
			return -EPROTO;
		}
		p->reply = m;
	}
	return 0;
}

/* Checks the reply of @p: 0, -EIO (the client refused), or -EPROTO. */
static int vus_dma_check_reply(struct vus_dev *dev, struct vus_dma_pend *p)
{
	size_t reply_size = HDR + sizeof(struct vfio_user_dma_access) +
			    (p->write ? 0 : p->count);
	struct vfio_user_dma_access ra;
	struct vus_msg *m = p->reply;
	int err = 0;

	p->reply = NULL;
	if (m->flags & VFIO_USER_F_ERROR) {
		pr_debug("DMA %s [%#llx, +%zu): client error %u\n",
			 p->write ? "write" : "read",
			 (unsigned long long)p->iova, p->count, m->error_no);
		err = -EIO;
		goto out;
	}
	if (m->size == reply_size) {
		memcpy(&ra, m->buf + HDR, sizeof(ra));
		/* (a DMA_READ reply of the right size went straight to buf) */
		if (le64toh(ra.addr) == p->iova && le64toh(ra.count) == p->count &&
		    p->sink.used) {
			dev->dma_stats.msg_bytes += p->count;
			goto out;
		}
	}
	pr_warn("DMA %s reply: size %u, expected %zu\n",
		p->write ? "write" : "read", m->size, reply_size);
	vus_conn_broken(dev, "bad DMA reply", -EPROTO);
	err = -EPROTO;
out:
	vus_msg_free(m);
	return err;
}

/*
 * Copy @n bytes between @buf and offset @roff of mapped region @r. -EFAULT
 * if the client took the memory away under the copy (SIGBUS).
 */
static int vus_dma_copy_mapped(struct vus_dev *dev, struct vus_dma_region *r,
			       uint64_t roff, void *buf, size_t n, bool write)
{
	uint8_t *map = (uint8_t *)r->vaddr + roff;
	int err;

	if (write)
		err = vus_copy_guarded(map, buf, n, true, false);
	else
		err = vus_copy_guarded(buf, map, n, false, true);
	if (err) {
		dev->dma_stats.faults++;
		pr_debug("DMA %s [%#llx, +%zu): the client's mapping is gone (SIGBUS)\n",
			 write ? "write" : "read",
			 (unsigned long long)(r->iova + roff), n);
		return err;
	}
	dev->dma_stats.mmap_bytes += n;
	return 0;
}

static int vus_dma_xfer(struct vus_dev *dev, uint64_t iova, void *buf,
			size_t len, bool write)
{
	uint32_t prot = write ? VFIO_USER_F_DMA_REGION_WRITE :
				VFIO_USER_F_DMA_REGION_READ;
	struct vus_dma_pend pend[VUS_DMA_WINDOW];
	unsigned int nr = 0, i;
	bool mapped = false, sent = false;
	size_t pos = 0;
	int err, first = 0;

	if (!dev || (!buf && len))
		return -EINVAL;
	if (!vus_conn_ready(dev))
		return -ENOTCONN;
	if (!vus_dev_running(dev))
		return -EBUSY;		/* migration: stopped or quiesced */
	err = vus_dma_check(dev, iova, len, prot);
	if (err)
		return err;
	while (pos < len && !first) {
		struct vus_dma_region *r = vus_dma_find(dev, iova + pos);
		uint64_t roff, n;

		if (!r) {
			first = -EFAULT;
			break;
		}
		roff = iova + pos - r->iova;
		n = VUS_MIN(len - pos, r->size - roff);
		if (r->vaddr) {
			err = vus_dma_copy_mapped(dev, r, roff,
						  (uint8_t *)buf + pos, n,
						  write);
			if (err) {
				first = err;
				break;
			}
			mapped = true;
		} else {
			/*
			 * At most what either side announced: the spec has
			 * the client's value bound what we send, while
			 * QEMU's vfio-user-pci (E2BIG) and vfio_user_mdev
			 * (drops the connection) hold server DMA messages
			 * to the server's own max_data_xfer_size.
			 */
			uint64_t max = VUS_MIN(VUS_MIN(dev->peer.max_data_xfer_size,
						       dev->max_xfer),
					       VUS_MAX_XFER_LIMIT);
			struct vus_dma_pend *p;

			if (nr == VUS_DMA_WINDOW) {
				/* the oldest is done before the next goes */
				err = vus_dma_wait(dev, pend, nr, &pend[0]);
				if (!err)
					err = vus_dma_check_reply(dev, &pend[0]);
				if (err)
					first = err;
				memmove(&pend[0], &pend[1],
					--nr * sizeof(pend[0]));
				if (first)
					break;
			}
			p = &pend[nr];
			p->write = write;
			p->iova = iova + pos;
			p->count = n = VUS_MIN(n, max);
			err = vus_dma_send(dev, p, (uint8_t *)buf + pos);
			if (err) {
				first = err;
				break;
			}
			sent = true;
			nr++;
		}
		pos += n;
	}
	/* Every reply still due is taken off the stream, in order. */
	for (i = 0; i < nr && vus_conn_ok(dev); i++) {
		err = vus_dma_wait(dev, pend + i, nr - i, &pend[i]);
		if (!err)
			err = vus_dma_check_reply(dev, &pend[i]);
		if (err && !first)
			first = err;
	}
	for (i = 0; i < nr; i++)
		vus_msg_free(pend[i].reply);
	dev->dma_stats.mmap_ops += mapped;
	dev->dma_stats.msg_ops += sent;
	/* every reply is in: more bytes on the twin socket answer nothing */
	if (vus_conn_ok(dev) && dev->twin.fd >= 0 && vus_rx_avail(&dev->twin)) {
		pr_warn("twin socket: %zu bytes after the last DMA reply\n",
			vus_rx_avail(&dev->twin));
		vus_conn_broken(dev, "unsolicited message on the twin socket",
				-EPROTO);
		if (!first)
			first = -EPROTO;
	}
	/*
	 * A client command read ahead of the socket with a reply waits in
	 * the receive buffer: wake the loop for it (the socket will not).
	 */
	if (vus_conn_ok(dev) && vus_rx_avail(&dev->conn))
		vus_kick_queue(dev);
	return first;
}

int vus_dev__dma_read(struct vus_dev *dev, uint64_t iova, void *buf,
		      size_t len)
{
	return vus_err(vus_dma_xfer(dev, iova, buf, len, false));
}

int vus_dev__dma_write(struct vus_dev *dev, uint64_t iova, const void *buf,
		       size_t len)
{
	return vus_err(vus_dma_xfer(dev, iova, (void *)buf, len, true));
}
