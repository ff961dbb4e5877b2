// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libvfio-user-server: message framing and fd passing (layer 1).
 *
 * Sends whole messages (vus_xmit(): MSG_NOSIGNAL, EINTR and short writes
 * retried, one fd with SCM_RIGHTS), receives them through a buffer that
 * takes a small message and whatever follows it in one recvmsg(), hands
 * each message the fds that came with it, and queues client commands that
 * arrive while the server waits for a DMA reply. Each of it works on one
 * &struct vus_chan: the main socket or the twin socket, which this file
 * also creates (vus_twin_open()) and closes. Knows the header, not the
 * commands. Calls only util.c.
 *
 * A message whose framing is broken (size < 16 or over the limit) gets an
 * error reply and the connection is closed, since a stream cannot be
 * resynchronised.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "vus-internal.h"

_Static_assert(sizeof(struct vfio_user_hdr) == VFIO_USER_HDR_SIZE, "hdr");
_Static_assert(sizeof(struct vfio_user_version) == 4, "version");
_Static_assert(sizeof(struct vfio_user_dma_map) == 32, "dma_map");
_Static_assert(sizeof(struct vfio_user_dma_unmap) == 24, "dma_unmap");
_Static_assert(sizeof(struct vfio_user_device_info) == 16, "device_info");
_Static_assert(sizeof(struct vfio_user_region_info) == 32, "region_info");
_Static_assert(sizeof(struct vfio_user_cap_header) == 8, "cap_header");
_Static_assert(sizeof(struct vfio_user_region_info_cap_sparse_mmap) == 16,
	       "sparse");
_Static_assert(sizeof(struct vfio_user_sparse_mmap_area) == 16, "area");
_Static_assert(sizeof(struct vfio_user_region_info_cap_type) == 16, "type");
_Static_assert(sizeof(struct vfio_user_irq_info) == 16, "irq_info");
_Static_assert(sizeof(struct vfio_user_irq_set) == 20, "irq_set");
_Static_assert(sizeof(struct vfio_user_region_access) == 16, "region_access");
_Static_assert(sizeof(struct vfio_user_dma_access) == 16, "dma_access");

/* ---- low-level I/O ------------------------------------------------------ */

void vus_msg_free(struct vus_msg *m)
{
	unsigned int i;

	if (!m)
		return;
	for (i = 0; i < m->nr_fds; i++)
		if (m->fds[i] >= 0)
			close(m->fds[i]);
	free(m->fds);
	free(m->buf);
	free(m);
}

void vus_conn_broken(struct vus_dev *dev, const char *why, int err)
{
	if (!dev->conn_dead)
		pr_warn("dropping client: %s (%s)\n", why, strerror(-err));
	dev->conn_dead = true;
}

/* vus_conn_broken() for a failure on @ch, naming the twin socket. */
static void vus_chan_broken(struct vus_dev *dev, const struct vus_chan *ch,
			    const char *why, int err)
{
	char buf[96];

	if (ch != &dev->twin) {
		vus_conn_broken(dev, why, err);
		return;
	}
	snprintf(buf, sizeof(buf), "%s on the twin socket", why);
	vus_conn_broken(dev, buf, err);
}

/*
 * Send all of @iov (modified) on @ch, with @fd attached to the first byte
 * if >= 0. MSG_NOSIGNAL: a dead client is -EPIPE, never SIGPIPE.
 */
int vus_xmit(struct vus_dev *dev, struct vus_chan *ch, struct iovec *iov,
	     int iovcnt, int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = iovcnt };
	ssize_t n;

	if (ch->fd < 0 || dev->conn_dead)
		return -ENOTCONN;
	if (fd >= 0) {
		struct cmsghdr *c;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof(u.buf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	while (mh.msg_iovlen) {
		n = sendmsg(ch->fd, &mh, MSG_NOSIGNAL);
		if (n < 0) {
			int err = errno == EAGAIN ? -ETIMEDOUT : -errno;

			if (errno == EINTR)
				continue;
			vus_chan_broken(dev, ch, "send", err);
			return err;
		}
		mh.msg_control = NULL;
		mh.msg_controllen = 0;
		while (mh.msg_iovlen && (size_t)n >= mh.msg_iov->iov_len) {
			n -= mh.msg_iov->iov_len;
			mh.msg_iov++;
			mh.msg_iovlen--;
		}
		if (mh.msg_iovlen) {
			mh.msg_iov->iov_base = (char *)mh.msg_iov->iov_base + n;
			mh.msg_iov->iov_len -= n;
		}
	}
	return 0;
}

void vus_fill_hdr(struct vfio_user_hdr *h, uint16_t id, uint16_t cmd,
		  uint32_t size, uint32_t flags, uint32_t error_no)
{
	h->msg_id = htole16(id);
	h->command = htole16(cmd);
	h->size = htole32(size);
	h->flags = htole32(flags);
	h->error_no = htole32(error_no);
}

int vus_send_reply(struct vus_dev *dev, const struct vus_msg *m,
		   const void *payload, size_t len, int fd)
{
	struct vfio_user_hdr h;
	struct iovec iov[2] = {
		{ .iov_base = &h, .iov_len = HDR },
		{ .iov_base = (void *)payload, .iov_len = len },
	};

	if (m->flags & VFIO_USER_F_NO_REPLY)
		return 0;
	vus_fill_hdr(&h, m->msg_id, m->command, HDR + len,
		     VFIO_USER_F_TYPE_REPLY, 0);
	return vus_xmit(dev, &dev->conn, iov, len ? 2 : 1, fd);
}

int vus_send_error(struct vus_dev *dev, const struct vus_msg *m, int err)
{
	struct vfio_user_hdr h;
	struct iovec iov = { .iov_base = &h, .iov_len = HDR };

	if (m->flags & VFIO_USER_F_NO_REPLY)
		return 0;
	pr_debug("msg_id %u command %u: error %d\n", m->msg_id, m->command,
		 err);
	vus_fill_hdr(&h, m->msg_id, m->command, HDR,
		     VFIO_USER_F_TYPE_REPLY | VFIO_USER_F_ERROR, err);
	return vus_xmit(dev, &dev->conn, &iov, 1, -1);
}

static int vus_add_fds(struct vus_dev *dev, struct vus_msg *m,
		       struct msghdr *mh)
{
	struct cmsghdr *c;

	if (mh->msg_flags & MSG_CTRUNC)
		m->fds_err = -EINVAL;
	for (c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		unsigned int n, i;
		int *fds;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		fds = realloc(m->fds, (m->nr_fds + n) * sizeof(int));
		if (!fds) {
			/* cannot keep them: close, fail the message */
			for (i = 0; i < n; i++) {
				int fd;

				memcpy(&fd, CMSG_DATA(c) + i * sizeof(int),
				       sizeof(int));
				close(fd);
			}
			m->fds_err = -ENOMEM;
			continue;
		}
		m->fds = fds;
		memcpy(m->fds + m->nr_fds, CMSG_DATA(c), n * sizeof(int));
		m->nr_fds += n;
	}
	if (m->nr_fds > dev->max_fds)
		m->fds_err = -EINVAL;
	return 0;
}

/*
 * Read exactly @len bytes straight into @buf (a payload larger than the
 * receive buffer), collecting fds into @m. Waits at most timeout_ms for
 * each read (SO_RCVTIMEO).
 */
static int vus_recv_full(struct vus_dev *dev, struct vus_chan *ch, void *buf,
			 size_t len, struct vus_msg *m)
{
	union {
		char buf[CMSG_SPACE(VUS_SCM_MAX_FD * sizeof(int))];
		struct cmsghdr align;
	} u;
	size_t done = 0;

	while (done < len) {
		struct iovec iov = {
			.iov_base = (char *)buf + done,
			.iov_len = len - done,
		};
		struct msghdr mh = {
			.msg_iov = &iov,
			.msg_iovlen = 1,
			.msg_control = u.buf,
			.msg_controllen = sizeof(u.buf),
		};
		ssize_t n = recvmsg(ch->fd, &mh, MSG_CMSG_CLOEXEC);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		}
		vus_add_fds(dev, m, &mh);
		if (n == 0)
			return -ECONNRESET;
		done += n;
	}
	return 0;
}

/* ---- the receive buffer --------------------------------------------------- */

size_t vus_rx_avail(const struct vus_chan *ch)
{
	return ch->rx.tail - ch->rx.head;
}

static void vus_rx_close_fds(struct vus_rx_fds *b)
{
	unsigned int i;

	for (i = 0; i < b->nr; i++)
		close(b->fds[i]);
	free(b->fds);
	memset(b, 0, sizeof(*b));
}

/* Drops buffered bytes and pending fds (disconnect). */
void vus_rx_reset(struct vus_chan *ch)
{
	struct vus_rx *rx = &ch->rx;

	while (rx->nr_fds)
		vus_rx_close_fds(&rx->fds[--rx->nr_fds]);
	rx->head = rx->tail = 0;
	rx->off = 0;
}

/* Keeps the fds of one buffered read, which ended at stream offset @end. */
static void vus_rx_note_fds(struct vus_dev *dev, struct vus_chan *ch,
			    struct msghdr *mh, uint64_t end)
{
	struct vus_rx *rx = &ch->rx;
	struct vus_rx_fds *b;
	struct vus_msg tmp = { 0 };

	if (!CMSG_FIRSTHDR(mh) && !(mh->msg_flags & MSG_CTRUNC))
		return;
	vus_add_fds(dev, &tmp, mh);	/* (closes what it cannot keep) */
	if (rx->nr_fds == VUS_RX_MAX_FDS) {
		/*
		 * Cannot happen with a sane peer: a read that returns fds ends
		 * with them, and we read on only for an incomplete message.
		 * The message these came with fails as if truncated.
		 */
		b = &rx->fds[rx->nr_fds - 1];
		b->truncated = true;
		b->end = end;
		while (tmp.nr_fds)
			close(tmp.fds[--tmp.nr_fds]);
		free(tmp.fds);
		return;
	}
	b = &rx->fds[rx->nr_fds++];
	b->end = end;
	b->fds = tmp.fds;
	b->nr = tmp.nr_fds;
	b->truncated = tmp.fds_err != 0;
}

/* Hands the fds of reads that ended inside a message [.., @end) to @m. */
static void vus_rx_attach_fds(struct vus_dev *dev, struct vus_chan *ch,
			      struct vus_msg *m, uint64_t end)
{
	struct vus_rx *rx = &ch->rx;
	unsigned int i, n = 0;

	while (n < rx->nr_fds && rx->fds[n].end <= end) {
		struct vus_rx_fds *b = &rx->fds[n++];
		int *fds;

		if (b->truncated)
			m->fds_err = -EINVAL;
		fds = b->nr ? realloc(m->fds, (m->nr_fds + b->nr) * sizeof(int)) : m->fds;
		if (b->nr && !fds) {
			m->fds_err = -ENOMEM;
			vus_rx_close_fds(b);
			continue;
		}
		m->fds = fds;
		memcpy(m->fds + m->nr_fds, b->fds, b->nr * sizeof(int));
		m->nr_fds += b->nr;
		free(b->fds);
		memset(b, 0, sizeof(*b));
	}
	for (i = n; i < rx->nr_fds; i++)
		rx->fds[i - n] = rx->fds[i];
	rx->nr_fds -= n;
	if (m->nr_fds > dev->max_fds)
		m->fds_err = -EINVAL;
}

/*
 * Have at least @want (<= VUS_RX_BUF) bytes buffered: one recvmsg() for as
 * much as fits, so a small message and whatever follows it come in one
 * system call. Each read waits at most timeout_ms (SO_RCVTIMEO); with
 * @idle_ok and nothing buffered, the first does not wait at all (-EAGAIN:
 * no message has started, which is no error).
 */
static int vus_rx_fill(struct vus_dev *dev, struct vus_chan *ch, size_t want,
		       bool idle_ok)
{
	union {
		char buf[CMSG_SPACE(VUS_SCM_MAX_FD * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct vus_rx *rx = &ch->rx;

	if (!rx->buf) {
		rx->buf = malloc(VUS_RX_BUF);
		if (!rx->buf)
			return -ENOMEM;
	}
	if (rx->head == rx->tail)
		rx->head = rx->tail = 0;
	if (VUS_RX_BUF - rx->head < want) {
		memmove(rx->buf, rx->buf + rx->head, vus_rx_avail(ch));
		rx->tail -= rx->head;
		rx->head = 0;
	}
	while (vus_rx_avail(ch) < want) {
		struct iovec iov = {
			.iov_base = rx->buf + rx->tail,
			.iov_len = VUS_RX_BUF - rx->tail,
		};
		struct msghdr mh = {
			.msg_iov = &iov,
			.msg_iovlen = 1,
			.msg_control = u.buf,
			.msg_controllen = sizeof(u.buf),
		};
		int flags = MSG_CMSG_CLOEXEC;
		ssize_t n;

		if (idle_ok && !vus_rx_avail(ch))
			flags |= MSG_DONTWAIT;
		n = recvmsg(ch->fd, &mh, flags);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN && (flags & MSG_DONTWAIT))
				return -EAGAIN;
			return errno == EAGAIN ? -ETIMEDOUT : -errno;
		}
		if (n == 0)
			return -ECONNRESET;
		rx->tail += n;
		vus_rx_note_fds(dev, ch, &mh, rx->off + vus_rx_avail(ch));
	}
	return 0;
}

/*
 * Take the next @len bytes of the stream into @dst: what is buffered, then
 * the rest through the buffer if small, else straight into @dst (fds that
 * come with those go to @m).
 */
static int vus_rx_take(struct vus_dev *dev, struct vus_chan *ch, void *dst,
		       size_t len, struct vus_msg *m)
{
	struct vus_rx *rx = &ch->rx;
	size_t n = VUS_MIN(len, vus_rx_avail(ch));
	int err;

	memcpy(dst, rx->buf + rx->head, n);
	rx->head += n;
	rx->off += n;
	dst = (char *)dst + n;
	len -= n;
	if (!len)
		return 0;
	if (len <= VUS_RX_BUF / 2) {
		err = vus_rx_fill(dev, ch, len, false);
		if (err)
			return err;
		memcpy(dst, rx->buf + rx->head, len);
		rx->head += len;
	} else {
		err = vus_recv_full(dev, ch, dst, len, m);
		if (err)
			return err;
	}
	rx->off += len;
	return 0;
}

/*
 * Receive one message from @ch. Returns 0 with *out set, -EAGAIN when
 * @idle_ok and no message has started (nothing to do), or another negative
 * errno after which the connection must be dropped (already marked dead).
 * A command with a bad size gets an error reply on the main socket only:
 * on the twin socket a command is a violation anyway.
 */
int vus_recv_msg(struct vus_dev *dev, struct vus_chan *ch, struct vus_msg **out,
		 size_t limit, struct vus_rx_sink *sinks, unsigned int nr_sinks,
		 bool idle_ok)
{
	struct vus_rx_sink *sink = NULL;
	struct vfio_user_hdr h;
	unsigned int i;
	struct vus_msg *m;
	uint64_t end;
	size_t keep;
	int err;

	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	err = vus_rx_fill(dev, ch, HDR, idle_ok);
	if (err == -EAGAIN) {
		free(m);
		return err;
	}
	if (err) {
		if (err == -ECONNRESET && !vus_rx_avail(ch))
			pr_debug("client closed the %s\n", ch == &dev->twin ?
				 "twin socket" : "connection");
		else
			vus_chan_broken(dev, ch, "receive", err);
		dev->conn_dead = true;
		goto err_free;
	}
	memcpy(&h, ch->rx.buf + ch->rx.head, HDR);
	m->msg_id = le16toh(h.msg_id);
	m->command = le16toh(h.command);
	m->size = le32toh(h.size);
	m->flags = le32toh(h.flags);
	m->error_no = le32toh(h.error_no);
	if (m->size < HDR || m->size > limit) {
		err = m->size < HDR ? -EINVAL : -E2BIG;
		pr_warn("%smsg_id %u command %u: size %u outside [%u, %zu]\n",
			ch == &dev->twin ? "twin socket: " : "", m->msg_id,
			m->command, m->size, HDR, limit);
		if (ch == &dev->conn && (m->flags & VFIO_USER_F_TYPE_MASK) ==
		    VFIO_USER_F_TYPE_COMMAND)
			vus_send_error(dev, m, -err);
		vus_chan_broken(dev, ch, "bad message size", err);
		goto err_free;
	}
	end = ch->rx.off + m->size;
	keep = m->size;
	for (i = 0; i < nr_sinks; i++) {
		struct vus_rx_sink *k = &sinks[i];

		if (!k->used && m->msg_id == k->id && m->command == k->cmd &&
		    (m->flags & (VFIO_USER_F_TYPE_MASK | VFIO_USER_F_ERROR)) ==
		    VFIO_USER_F_TYPE_REPLY && m->size == HDR + k->skip + k->len) {
			sink = k;
			keep = HDR + k->skip;
			break;
		}
	}
	m->buf = malloc(keep);
	if (!m->buf) {
		err = -ENOMEM;
		vus_conn_broken(dev, "message allocation", err);
		goto err_free;
	}
	err = vus_rx_take(dev, ch, m->buf, keep, m);
	if (!err && keep < m->size) {
		err = vus_rx_take(dev, ch, sink->buf, sink->len, m);
		sink->used = true;
	}
	if (err) {
		vus_chan_broken(dev, ch, "truncated message", err);
		goto err_free;
	}
	vus_rx_attach_fds(dev, ch, m, end);
	*out = m;
	return 0;

err_free:
	vus_msg_free(m);
	return err;
}

/* Largest client message we take: a maximal REGION_WRITE, at least 8 KiB. */
size_t vus_msg_limit(const struct vus_dev *dev)
{
	return VUS_MAX((size_t)dev->max_xfer + HDR + 16, 8192);
}

/* ---- commands received during a DMA wait --------------------------------- */

/* Wake the loop: queued commands or buffered bytes the socket won't signal. */
void vus_kick_queue(struct vus_dev *dev)
{
	uint64_t one = 1;

	if (write(dev->queue_efd, &one, sizeof(one)) < 0)
		pr_debug("queue eventfd: %s\n", strerror(errno));
}

/* What a queued command holds: its buffer, fds and the struct. */
static size_t vus_msg_charge(const struct vus_msg *m)
{
	return sizeof(*m) + m->size + m->nr_fds * sizeof(int);
}

/*
 * Queue client command @m (consumed). Past VUS_MAX_QUEUED commands, one
 * with fds or one past VUS_MAX_QUEUED_BYTES is refused with EBUSY, and
 * -ENOBUFS is returned for one that takes no reply (the caller drops the
 * client).
 */
int vus_enqueue(struct vus_dev *dev, struct vus_msg *m)
{
	/* Past the count, only fd-less commands, by what they hold. */
	if (dev->nr_queued >= VUS_MAX_QUEUED &&
	    (m->nr_fds ||
	     dev->queued_bytes + vus_msg_charge(m) > VUS_MAX_QUEUED_BYTES)) {
		if (m->flags & VFIO_USER_F_NO_REPLY) {
			/* Nothing to refuse it with: dropping it loses a write. */
			pr_warn("msg_id %u command %u: %u commands (%zu bytes) already queued during a DMA wait\n",
				m->msg_id, m->command, dev->nr_queued,
				dev->queued_bytes);
			vus_msg_free(m);
			return -ENOBUFS;
		}
		vus_send_error(dev, m, EBUSY);
		vus_msg_free(m);
		return 0;
	}
	m->next = NULL;
	*dev->queue_tail = m;
	dev->queue_tail = &m->next;
	dev->nr_queued++;
	dev->queued_bytes += vus_msg_charge(m);
	vus_kick_queue(dev);
	return 0;
}

/* Take the oldest queued command, NULL if none. */
struct vus_msg *vus_queue_pop(struct vus_dev *dev)
{
	struct vus_msg *m = dev->queue_head;

	if (!m)
		return NULL;
	dev->queue_head = m->next;
	if (!dev->queue_head)
		dev->queue_tail = &dev->queue_head;
	dev->nr_queued--;
	dev->queued_bytes -= vus_msg_charge(m);
	return m;
}

/* Free every queued command (disconnect). */
void vus_queue_drop_all(struct vus_dev *dev)
{
	while (dev->queue_head) {
		struct vus_msg *m = dev->queue_head;

		dev->queue_head = m->next;
		vus_msg_free(m);
	}
	dev->queue_tail = &dev->queue_head;
	dev->nr_queued = 0;
	dev->queued_bytes = 0;
}

/* ---- sockets ------------------------------------------------------------- */

/* Bound each send on @fd, and each read of a started message, by timeout_ms. */
int vus_sock_set_timeouts(const struct vus_dev *dev, int fd)
{
	struct timeval tv = {
		.tv_sec = dev->timeout_ms / 1000,
		.tv_usec = (dev->timeout_ms % 1000) * 1000,
	};

	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)))
		return -errno;
	return 0;
}

/*
 * Create the twin socket: a connected AF_UNIX stream pair. The library
 * keeps one end in &vus_dev.twin (watched by the loop too, which notices
 * anything the client sends there outside a DMA wait) and returns the
 * other in *@peer_fd, for the caller to send to the client and close.
 * Returns 0, or -errno with nothing kept.
 */
int vus_twin_open(struct vus_dev *dev, int *peer_fd)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int sv[2], err;

	if (dev->twin.fd >= 0)
		return -EBUSY;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return -errno;
	err = vus_sock_set_timeouts(dev, sv[0]);
	if (err)
		goto err_close;
	ev.data.fd = sv[0];
	if (epoll_ctl(dev->epfd, EPOLL_CTL_ADD, sv[0], &ev)) {
		err = -errno;
		goto err_close;
	}
	dev->twin.fd = sv[0];
	*peer_fd = sv[1];
	return 0;

err_close:
	close(sv[0]);
	close(sv[1]);
	return err;
}

/* Close our end of the twin socket and drop what it buffered, if open. */
void vus_twin_close(struct vus_dev *dev)
{
	if (dev->twin.fd < 0)
		return;
	epoll_ctl(dev->epfd, EPOLL_CTL_DEL, dev->twin.fd, NULL);
	close(dev->twin.fd);
	dev->twin.fd = -1;
	vus_rx_reset(&dev->twin);
}
