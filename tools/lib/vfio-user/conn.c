// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libvfio-user-server: connection, message framing, command handlers and
 * server-initiated DMA.
 *
 * Every field of a client message is checked before use: the header size
 * against the header and our limit, the payload size against what the
 * command needs, every index, count and offset against the device. A
 * message whose framing is broken (size < 16 or over the limit) gets an
 * error reply and the connection is closed, since a stream cannot be
 * resynchronised; any other bad message gets an error reply and the
 * connection stays.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <json-c/json.h>

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

#define HDR	VFIO_USER_HDR_SIZE

/* A reply a handler builds: payload in @buf (malloc'd or NULL), one fd. */
struct vus_reply {
	void *buf;
	size_t len;
	int fd;		/* borrowed, sent with SCM_RIGHTS if >= 0 */
};

/* ---- low-level I/O ------------------------------------------------------ */

static void vus_msg_free(struct vus_msg *m)
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

static void vus_conn_broken(struct vus_dev *dev, const char *why, int err)
{
	if (!dev->conn_dead)
		pr_warn("dropping client: %s (%s)\n", why, strerror(-err));
	dev->conn_dead = true;
}

/*
 * Send all of @iov (modified), with @fd attached to the first byte if
 * >= 0. MSG_NOSIGNAL: a dead client is -EPIPE, never SIGPIPE.
 */
static int vus_xmit(struct vus_dev *dev, struct iovec *iov, int iovcnt,
		    int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = iovcnt };
	ssize_t n;

	if (dev->conn_fd < 0 || dev->conn_dead)
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
		n = sendmsg(dev->conn_fd, &mh, MSG_NOSIGNAL);
		if (n < 0) {
			int err = errno == EAGAIN ? -ETIMEDOUT : -errno;

			if (errno == EINTR)
				continue;
			vus_conn_broken(dev, "send", err);
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

static void vus_fill_hdr(struct vfio_user_hdr *h, uint16_t id, uint16_t cmd,
			 uint32_t size, uint32_t flags, uint32_t error_no)
{
	h->msg_id = htole16(id);
	h->command = htole16(cmd);
	h->size = htole32(size);
	h->flags = htole32(flags);
	h->error_no = htole32(error_no);
}

static int vus_send_reply(struct vus_dev *dev, const struct vus_msg *m,
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
	return vus_xmit(dev, iov, len ? 2 : 1, fd);
}

static int vus_send_error(struct vus_dev *dev, const struct vus_msg *m,
			  int err)
{
	struct vfio_user_hdr h;
	struct iovec iov = { .iov_base = &h, .iov_len = HDR };

	if (m->flags & VFIO_USER_F_NO_REPLY)
		return 0;
	pr_debug("msg_id %u command %u: error %d\n", m->msg_id, m->command,
		 err);
	vus_fill_hdr(&h, m->msg_id, m->command, HDR,
		     VFIO_USER_F_TYPE_REPLY | VFIO_USER_F_ERROR, err);
	return vus_xmit(dev, &iov, 1, -1);
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
static int vus_recv_full(struct vus_dev *dev, void *buf, size_t len,
			 struct vus_msg *m)
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
		ssize_t n = recvmsg(dev->conn_fd, &mh, MSG_CMSG_CLOEXEC);

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

static size_t vus_rx_avail(const struct vus_dev *dev)
{
	return dev->rx.tail - dev->rx.head;
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
VUS_HIDDEN void vus_rx_reset(struct vus_dev *dev)
{
	struct vus_rx *rx = &dev->rx;

	while (rx->nr_fds)
		vus_rx_close_fds(&rx->fds[--rx->nr_fds]);
	rx->head = rx->tail = 0;
	rx->off = 0;
}

/* Keeps the fds of one buffered read, which ended at stream offset @end. */
static void vus_rx_note_fds(struct vus_dev *dev, struct msghdr *mh,
			    uint64_t end)
{
	struct vus_rx *rx = &dev->rx;
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
static void vus_rx_attach_fds(struct vus_dev *dev, struct vus_msg *m,
			      uint64_t end)
{
	struct vus_rx *rx = &dev->rx;
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
static int vus_rx_fill(struct vus_dev *dev, size_t want, bool idle_ok)
{
	union {
		char buf[CMSG_SPACE(VUS_SCM_MAX_FD * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct vus_rx *rx = &dev->rx;

	if (!rx->buf) {
		rx->buf = malloc(VUS_RX_BUF);
		if (!rx->buf)
			return -ENOMEM;
	}
	if (rx->head == rx->tail)
		rx->head = rx->tail = 0;
	if (VUS_RX_BUF - rx->head < want) {
		memmove(rx->buf, rx->buf + rx->head, vus_rx_avail(dev));
		rx->tail -= rx->head;
		rx->head = 0;
	}
	while (vus_rx_avail(dev) < want) {
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

		if (idle_ok && !vus_rx_avail(dev))
			flags |= MSG_DONTWAIT;
		n = recvmsg(dev->conn_fd, &mh, flags);
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
		vus_rx_note_fds(dev, &mh, rx->off + vus_rx_avail(dev));
	}
	return 0;
}

/*
 * Take the next @len bytes of the stream into @dst: what is buffered, then
 * the rest through the buffer if small, else straight into @dst (fds that
 * come with those go to @m).
 */
static int vus_rx_take(struct vus_dev *dev, void *dst, size_t len,
		       struct vus_msg *m)
{
	struct vus_rx *rx = &dev->rx;
	size_t n = VUS_MIN(len, vus_rx_avail(dev));
	int err;

	memcpy(dst, rx->buf + rx->head, n);
	rx->head += n;
	rx->off += n;
	dst = (char *)dst + n;
	len -= n;
	if (!len)
		return 0;
	if (len <= VUS_RX_BUF / 2) {
		err = vus_rx_fill(dev, len, false);
		if (err)
			return err;
		memcpy(dst, rx->buf + rx->head, len);
		rx->head += len;
	} else {
		err = vus_recv_full(dev, dst, len, m);
		if (err)
			return err;
	}
	rx->off += len;
	return 0;
}

/*
 * Where the payload of one expected reply goes instead of a malloc'd copy:
 * bytes [@skip, @skip + @len) of the payload of the reply to @id/@cmd land
 * in @buf if the reply is a success of exactly that size (DMA_READ data);
 * @used says it did.
 */
struct vus_rx_sink {
	uint16_t id;
	uint16_t cmd;
	size_t skip;
	void *buf;
	size_t len;
	bool used;
};

/*
 * Receive one message. Returns 0 with *out set, -EAGAIN when @idle_ok and
 * no message has started (nothing to do), or another negative errno after
 * which the connection must be dropped (already marked dead).
 */
static int vus_recv_msg(struct vus_dev *dev, struct vus_msg **out,
			size_t limit, struct vus_rx_sink *sinks,
			unsigned int nr_sinks, bool idle_ok)
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
	err = vus_rx_fill(dev, HDR, idle_ok);
	if (err == -EAGAIN) {
		free(m);
		return err;
	}
	if (err) {
		if (err == -ECONNRESET && !vus_rx_avail(dev))
			pr_debug("client closed the connection\n");
		else
			vus_conn_broken(dev, "receive", err);
		dev->conn_dead = true;
		goto err_free;
	}
	memcpy(&h, dev->rx.buf + dev->rx.head, HDR);
	m->msg_id = le16toh(h.msg_id);
	m->command = le16toh(h.command);
	m->size = le32toh(h.size);
	m->flags = le32toh(h.flags);
	m->error_no = le32toh(h.error_no);
	if (m->size < HDR || m->size > limit) {
		err = m->size < HDR ? -EINVAL : -E2BIG;
		pr_warn("msg_id %u command %u: size %u outside [%u, %zu]\n",
			m->msg_id, m->command, m->size, HDR, limit);
		if ((m->flags & VFIO_USER_F_TYPE_MASK) == VFIO_USER_F_TYPE_COMMAND)
			vus_send_error(dev, m, -err);
		vus_conn_broken(dev, "bad message size", err);
		goto err_free;
	}
	end = dev->rx.off + m->size;
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
	err = vus_rx_take(dev, m->buf, keep, m);
	if (!err && keep < m->size) {
		err = vus_rx_take(dev, sink->buf, sink->len, m);
		sink->used = true;
	}
	if (err) {
		vus_conn_broken(dev, "truncated message", err);
		goto err_free;
	}
	vus_rx_attach_fds(dev, m, end);
	*out = m;
	return 0;

err_free:
	vus_msg_free(m);
	return err;
}

static size_t vus_msg_limit(const struct vus_dev *dev)
{
	return VUS_MAX((size_t)dev->max_xfer + HDR + 16, 8192);
}

/* ---- connection management ---------------------------------------------- */

static int vus_epoll_add(struct vus_dev *dev, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };

	if (epoll_ctl(dev->epfd, EPOLL_CTL_ADD, fd, &ev))
		return -errno;
	return 0;
}

static void vus_dma_drop_all(struct vus_dev *dev)
{
	while (dev->nr_dma) {
		struct vus_dma_region *r = &dev->dma[--dev->nr_dma];

		if (dev->ops.dma_unmap)
			dev->ops.dma_unmap(dev, dev->priv, r->iova, r->size);
		if (r->vaddr)
			munmap(r->vaddr, r->size);
	}
}

static void vus_queue_drop_all(struct vus_dev *dev)
{
	while (dev->queue_head) {
		struct vus_msg *m = dev->queue_head;

		dev->queue_head = m->next;
		vus_msg_free(m);
	}
	dev->queue_tail = &dev->queue_head;
	dev->nr_queued = 0;
}

void vus_dev__disconnect(struct vus_dev *dev)
{
	bool was = dev && dev->negotiated;

	if (!dev || dev->conn_fd < 0)
		return;
	if (dev->in_handler) {
		/* torn down once the current handler returns */
		dev->conn_dead = true;
		return;
	}
	epoll_ctl(dev->epfd, EPOLL_CTL_DEL, dev->conn_fd, NULL);
	close(dev->conn_fd);
	dev->conn_fd = -1;
	vus_rx_reset(dev);
	vus_queue_drop_all(dev);
	vus_dma_drop_all(dev);
	vus_irq_drop_all(dev);
	dev->negotiated = false;
	dev->conn_dead = false;
	memset(&dev->peer, 0, sizeof(dev->peer));
	if (was) {
		pr_info("client disconnected\n");
		if (dev->ops.disconnect)
			dev->ops.disconnect(dev, dev->priv);
	}
	if (dev->listen_fd >= 0 && vus_epoll_add(dev, dev->listen_fd))
		pr_warn("cannot watch the listening socket: %s\n",
			strerror(errno));
}

int vus_dev__attach_fd(struct vus_dev *dev, int fd)
{
	struct timeval tv;
	int err;

	if (!dev || fd < 0) {
		if (fd >= 0)
			close(fd);
		return vus_err(-EINVAL);
	}
	if (dev->conn_fd >= 0) {
		close(fd);
		return vus_err(-EBUSY);
	}
	tv.tv_sec = dev->timeout_ms / 1000;
	tv.tv_usec = (dev->timeout_ms % 1000) * 1000;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv))) {
		err = -errno;
		close(fd);
		return vus_err(err);
	}
	err = vus_epoll_add(dev, fd);
	if (err) {
		close(fd);
		return vus_err(err);
	}
	if (dev->listen_fd >= 0)
		epoll_ctl(dev->epfd, EPOLL_CTL_DEL, dev->listen_fd, NULL);
	dev->conn_fd = fd;
	dev->conn_dead = false;
	dev->negotiated = false;
	dev->next_msg_id = 0;
	pr_debug("client attached (fd %d)\n", fd);
	return 0;
}

int vus_dev__listen(struct vus_dev *dev, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, err;

	if (!dev || !path || dev->listen_fd >= 0)
		return vus_err(-EINVAL);
	if (strlen(path) >= sizeof(sa.sun_path))
		return vus_err(-ENAMETOOLONG);
	strcpy(sa.sun_path, path);
	if (!lstat(path, &st) && S_ISSOCK(st.st_mode))
		unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return vus_err(-errno);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 4)) {
		err = -errno;
		close(fd);
		return vus_err(err);
	}
	dev->listen_path = strdup(path);
	if (!dev->listen_path) {
		unlink(path);
		close(fd);
		return vus_err(-ENOMEM);
	}
	dev->listen_fd = fd;
	if (dev->conn_fd < 0) {
		err = vus_epoll_add(dev, fd);
		if (err)
			return vus_err(err);
	}
	return 0;
}

int vus_dev__fd(const struct vus_dev *dev)
{
	return dev ? dev->epfd : vus_err(-EINVAL);
}

bool vus_dev__connected(const struct vus_dev *dev)
{
	return dev && dev->conn_fd >= 0 && dev->negotiated && !dev->conn_dead;
}

int vus_dev__peer_caps(const struct vus_dev *dev, struct vus_peer_caps *caps)
{
	if (!vus_dev__connected(dev) || !caps)
		return vus_err(-ENOTCONN);
	*caps = dev->peer;
	return 0;
}

unsigned int vus_dev__nr_dma_regions(const struct vus_dev *dev)
{
	return dev ? dev->nr_dma : 0;
}

/* ---- VERSION ------------------------------------------------------------ */

static int vus_json_u64(json_object *caps, const char *key, uint64_t min,
			uint64_t max, uint64_t *val)
{
	json_object *o;
	uint64_t v;

	if (!json_object_object_get_ex(caps, key, &o))
		return 0;
	if (!json_object_is_type(o, json_type_int))
		return -EINVAL;
	if (json_object_get_int64(o) < 0)
		return -EINVAL;
	/* above INT64_MAX json-c keeps an unsigned value */
	v = json_object_get_uint64(o);
	if (v < min || v > max)
		return -EINVAL;
	*val = v;
	return 0;
}

static int vus_parse_caps(struct vus_dev *dev, const char *json, size_t len,
			  struct vus_peer_caps *peer)
{
	struct json_tokener *tok;
	json_object *root, *caps, *o;
	uint64_t v;
	int err = -EINVAL;

	tok = json_tokener_new_ex(16);
	if (!tok)
		return -ENOMEM;
	root = json_tokener_parse_ex(tok, json, len);
	if (!root || json_tokener_get_error(tok) != json_tokener_success ||
	    (size_t)json_tokener_get_parse_end(tok) != len ||
	    !json_object_is_type(root, json_type_object))
		goto out;
	if (!json_object_object_get_ex(root, "capabilities", &caps)) {
		err = 0;
		goto out;
	}
	if (!json_object_is_type(caps, json_type_object))
		goto out;

	v = peer->max_msg_fds;
	if (vus_json_u64(caps, "max_msg_fds", 0, VUS_SCM_MAX_FD, &v))
		goto out;
	peer->max_msg_fds = v;
	v = peer->max_data_xfer_size;
	if (vus_json_u64(caps, "max_data_xfer_size", 1, UINT32_MAX, &v))
		goto out;
	peer->max_data_xfer_size = v;
	v = peer->max_dma_maps;
	if (vus_json_u64(caps, "max_dma_maps", 1, UINT32_MAX, &v))
		goto out;
	peer->max_dma_maps = v;
	v = peer->pgsizes;
	if (vus_json_u64(caps, "pgsizes", 1, UINT64_MAX, &v))
		goto out;
	peer->pgsizes = v;
	if (json_object_object_get_ex(caps, "twin_socket", &o) &&
	    !json_object_is_type(o, json_type_object))
		goto out;
	if (json_object_object_get_ex(caps, "write_multiple", &o) &&
	    !json_object_is_type(o, json_type_boolean))
		goto out;
	err = 0;
out:
	if (root)
		json_object_put(root);
	json_tokener_free(tok);
	(void)dev;
	return err;
}

static int vus_handle_version(struct vus_dev *dev, struct vus_msg *m,
			      struct vus_reply *r)
{
	const uint8_t *p = m->buf + HDR;
	size_t len = m->size - HDR;
	struct vfio_user_version v;
	struct vus_peer_caps peer = {
		.max_msg_fds = VFIO_USER_DEF_MAX_MSG_FDS,
		.max_data_xfer_size = VFIO_USER_DEF_MAX_XFER_SIZE,
		.max_dma_maps = VFIO_USER_DEF_MAX_DMA_MAPS,
		.pgsizes = 4096,
	};
	json_object *root, *caps;
	const char *json;
	size_t jlen;
	int err;

	if (dev->negotiated || len < sizeof(v))
		return -EINVAL;
	memcpy(&v, p, sizeof(v));
	if (le16toh(v.major) != VFIO_USER_MAJOR) {
		/* spec: the server closes the connection */
		vus_send_error(dev, m, ENOTSUP);
		vus_conn_broken(dev, "unsupported major version", -ENOTSUP);
		m->flags |= VFIO_USER_F_NO_REPLY;
		return -ENOTSUP;
	}
	peer.major = VFIO_USER_MAJOR;
	peer.minor = VUS_MIN(le16toh(v.minor), VFIO_USER_MINOR);

	jlen = len - sizeof(v);
	if (jlen) {
		json = (const char *)p + sizeof(v);
		if (json[jlen - 1] != '\0' || strlen(json) != jlen - 1 ||
		    jlen - 1 > VUS_VERSION_JSON_MAX)
			return -EINVAL;
		if (jlen > 1) {
			err = vus_parse_caps(dev, json, jlen - 1, &peer);
			if (err)
				return err;
		}
	}

	root = json_object_new_object();
	caps = json_object_new_object();
	if (!root || !caps) {
		json_object_put(root);
		json_object_put(caps);
		return -ENOMEM;
	}
	json_object_object_add(root, "capabilities", caps);
	json_object_object_add(caps, "max_msg_fds",
			       json_object_new_int64(dev->max_fds));
	json_object_object_add(caps, "max_data_xfer_size",
			       json_object_new_int64(dev->max_xfer));
	json_object_object_add(caps, "max_dma_maps",
			       json_object_new_int64(dev->max_dma_maps));
	json_object_object_add(caps, "pgsizes",
			       json_object_new_uint64(dev->pgsizes));
	json = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
	jlen = strlen(json) + 1;
	r->buf = malloc(sizeof(v) + jlen);
	if (!r->buf) {
		json_object_put(root);
		return -ENOMEM;
	}
	v.major = htole16(peer.major);
	v.minor = htole16(peer.minor);
	memcpy(r->buf, &v, sizeof(v));
	memcpy((char *)r->buf + sizeof(v), json, jlen);
	r->len = sizeof(v) + jlen;
	json_object_put(root);

	dev->peer = peer;
	dev->negotiated = true;
	pr_info("client connected: version %u.%u, max_data_xfer_size %u, max_msg_fds %u\n",
		peer.major, peer.minor, peer.max_data_xfer_size,
		peer.max_msg_fds);
	if (dev->ops.connect)
		dev->ops.connect(dev, dev->priv);
	return 0;
}

/* ---- DMA_MAP / DMA_UNMAP ------------------------------------------------- */

static int vus_handle_dma_map(struct vus_dev *dev, struct vus_msg *m,
			      struct vus_reply *r)
{
	struct vfio_user_dma_map map;
	struct vus_dma_region *dr, *regions;
	uint64_t iova, size, offset;
	uint32_t flags;
	void *vaddr = NULL;
	unsigned int i;
	int prot = PROT_NONE, err;

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
	for (i = 0; i < dev->nr_dma; i++) {
		dr = &dev->dma[i];
		if (iova < dr->iova + dr->size && dr->iova < iova + size)
			return -EEXIST;
	}
	if (dev->nr_dma >= dev->max_dma_maps)
		return -ENOSPC;

	if (m->nr_fds) {
		if (size > SIZE_MAX || offset > (uint64_t)INT64_MAX)
			return -EINVAL;
		if (flags & VFIO_USER_F_DMA_REGION_READ)
			prot |= PROT_READ;
		if (flags & VFIO_USER_F_DMA_REGION_WRITE)
			prot |= PROT_WRITE;
		vaddr = mmap(NULL, size, prot, MAP_SHARED, m->fds[0], offset);
		if (vaddr == MAP_FAILED)
			return -errno;
		/* the mapping keeps what it needs; the fd is not kept */
		close(m->fds[0]);
		m->fds[0] = -1;
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
		 vaddr ? " (fd)" : "");
	return 0;

err_unmap:
	if (vaddr)
		munmap(vaddr, size);
	return err < 0 ? err : -EINVAL;
}

static int vus_handle_dma_unmap(struct vus_dev *dev, struct vus_msg *m,
				struct vus_reply *r)
{
	struct vfio_user_dma_unmap um;
	uint64_t iova, size;
	uint32_t flags;
	unsigned int i;

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
	if (caps_len)
		flags |= VFIO_REGION_INFO_FLAG_CAPS;
	full = sizeof(*out) + caps_len;

	if (argsz < full)
		caps_len = 0;	/* client retries with argsz = full */
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

static int vus_region_access(struct vus_dev *dev, unsigned int index,
			     uint64_t off, void *buf, size_t count,
			     bool is_write)
{
	struct vus_region *reg = &dev->regions[index];

	if (dev->pci.enabled && index == VFIO_PCI_CONFIG_REGION_INDEX)
		return vus_pci_config_access(dev, off, buf, count, is_write);
	if (vus_pci_msix_access(dev, index, off, buf, count, is_write))
		return 0;
	if (reg->access)
		return reg->access(dev, reg->priv, off, buf, count, is_write);
	if (is_write)
		memcpy((uint8_t *)reg->mem + off, buf, count);
	else
		memcpy(buf, (uint8_t *)reg->mem + off, count);
	return 0;
}

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
	if (dev->ops.reset)
		return dev->ops.reset(dev, dev->priv);
	return 0;
}

/* ---- dispatch ------------------------------------------------------------ */

static const char *const vus_cmd_names[] = {
	[VFIO_USER_VERSION] = "VERSION",
	[VFIO_USER_DMA_MAP] = "DMA_MAP",
	[VFIO_USER_DMA_UNMAP] = "DMA_UNMAP",
	[VFIO_USER_DEVICE_GET_INFO] = "DEVICE_GET_INFO",
	[VFIO_USER_DEVICE_GET_REGION_INFO] = "DEVICE_GET_REGION_INFO",
	[VFIO_USER_DEVICE_GET_REGION_IO_FDS] = "DEVICE_GET_REGION_IO_FDS",
	[VFIO_USER_DEVICE_GET_IRQ_INFO] = "DEVICE_GET_IRQ_INFO",
	[VFIO_USER_DEVICE_SET_IRQS] = "DEVICE_SET_IRQS",
	[VFIO_USER_REGION_READ] = "REGION_READ",
	[VFIO_USER_REGION_WRITE] = "REGION_WRITE",
	[VFIO_USER_DMA_READ] = "DMA_READ",
	[VFIO_USER_DMA_WRITE] = "DMA_WRITE",
	[VFIO_USER_DEVICE_RESET] = "DEVICE_RESET",
};

static const char *vus_cmd_name(unsigned int cmd)
{
	if (cmd < VUS_ARRAY_SIZE(vus_cmd_names) && vus_cmd_names[cmd])
		return vus_cmd_names[cmd];
	return "?";
}

static int vus_dispatch(struct vus_dev *dev, struct vus_msg *m,
			struct vus_reply *r)
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
	case VFIO_USER_DEVICE_GET_REGION_IO_FDS:
	case VFIO_USER_REGION_WRITE_MULTI:
	case VFIO_USER_DEVICE_FEATURE:
	case VFIO_USER_MIG_DATA_READ:
	case VFIO_USER_MIG_DATA_WRITE:
		return -EOPNOTSUPP;	/* not negotiated / not offered */
	default:
		return -ENOSYS;
	}
}

/* Handle one client message; consumes @m. */
static void vus_handle_msg(struct vus_dev *dev, struct vus_msg *m)
{
	struct vus_reply r = { .fd = -1 };
	int err;

	if ((m->flags & VFIO_USER_F_TYPE_MASK) == VFIO_USER_F_TYPE_REPLY) {
		pr_warn("msg_id %u command %u: unexpected reply\n", m->msg_id,
			m->command);
		vus_conn_broken(dev, "unsolicited reply", -EPROTO);
		vus_msg_free(m);
		return;
	}
	pr_debug("msg_id %u %s size %u\n", m->msg_id, vus_cmd_name(m->command),
		 m->size);
	dev->in_handler++;
	err = vus_dispatch(dev, m, &r);
	dev->in_handler--;
	if (err)
		vus_send_error(dev, m, -err);
	else
		vus_send_reply(dev, m, r.buf, r.len, r.fd);
	free(r.buf);
	vus_msg_free(m);
}

static void vus_drain_queue(struct vus_dev *dev)
{
	while (dev->queue_head && !dev->conn_dead) {
		struct vus_msg *m = dev->queue_head;

		dev->queue_head = m->next;
		if (!dev->queue_head)
			dev->queue_tail = &dev->queue_head;
		dev->nr_queued--;
		vus_handle_msg(dev, m);
	}
}

static int vus_accept(struct vus_dev *dev)
{
	int fd = accept4(dev->listen_fd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -errno;
	if (dev->conn_fd >= 0) {
		close(fd);
		return 0;
	}
	return vus_dev__attach_fd(dev, fd);
}

/*
 * Handle the client's messages in stream order: first those a DMA wait
 * queued (they came before anything still buffered), then what the socket
 * has, then every message the receive buffer still holds, since the socket
 * will not wake us for those. Never waits for a message to start (the
 * event that brought us here may be stale); once one has, the rest is
 * waited for, bounded by timeout_ms.
 */
static void vus_serve_conn(struct vus_dev *dev)
{
	do {
		struct vus_msg *m;

		vus_drain_queue(dev);
		if (dev->conn_dead || dev->conn_fd < 0 ||
		    vus_recv_msg(dev, &m, vus_msg_limit(dev), NULL, 0, true))
			break;
		vus_handle_msg(dev, m);
	} while (!dev->conn_dead && dev->conn_fd >= 0 && vus_rx_avail(dev));
	vus_drain_queue(dev);
}

static int vus_process(struct vus_dev *dev, int timeout)
{
	struct epoll_event ev[4];
	int n, i, handled = 0;

	n = epoll_wait(dev->epfd, ev, VUS_ARRAY_SIZE(ev), timeout);
	if (n < 0)
		return -errno;
	for (i = 0; i < n; i++) {
		int fd = ev[i].data.fd;

		if (fd == dev->queue_efd) {
			uint64_t v;

			if (read(fd, &v, sizeof(v)) < 0)
				pr_debug("queue eventfd: %s\n", strerror(errno));
			/* queued commands, then what a DMA wait read ahead */
			vus_drain_queue(dev);
			if (dev->conn_fd >= 0 && !dev->conn_dead &&
			    vus_rx_avail(dev))
				vus_serve_conn(dev);
		} else if (fd == dev->listen_fd && dev->conn_fd < 0) {
			int err = vus_accept(dev);

			if (err)
				pr_warn("accept: %s\n", strerror(-err));
		} else if (fd == dev->conn_fd && dev->conn_fd >= 0 &&
			   !dev->conn_dead) {
			vus_serve_conn(dev);
		}
		handled++;
		vus_drain_queue(dev);
		if (dev->conn_dead)
			vus_dev__disconnect(dev);
	}
	return handled;
}

int vus_dev__process(struct vus_dev *dev)
{
	int n;

	if (!dev)
		return vus_err(-EINVAL);
	n = vus_process(dev, 0);
	if (n < 0)
		return vus_err(n == -EINTR ? 0 : n);
	return n;
}

int vus_dev__run(struct vus_dev *dev)
{
	int n;

	if (!dev)
		return vus_err(-EINVAL);
	dev->stop = false;
	while (!dev->stop) {
		/* one blocking epoll_wait() per wakeup, no poll() before it */
		n = vus_process(dev, -1);
		if (n < 0)
			return vus_err(n);
	}
	return 0;
}

void vus_dev__stop(struct vus_dev *dev)
{
	if (dev)
		dev->stop = true;
}

/* ---- server-initiated DMA ------------------------------------------------ */

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

static void vus_kick_queue(struct vus_dev *dev)
{
	uint64_t one = 1;

	if (write(dev->queue_efd, &one, sizeof(one)) < 0)
		pr_debug("queue eventfd: %s\n", strerror(errno));
}

static void vus_enqueue(struct vus_dev *dev, struct vus_msg *m)
{
	if (dev->nr_queued >= VUS_MAX_QUEUED) {
		vus_send_error(dev, m, EBUSY);
		vus_msg_free(m);
		return;
	}
	m->next = NULL;
	*dev->queue_tail = m;
	dev->queue_tail = &m->next;
	dev->nr_queued++;
	vus_kick_queue(dev);
}

/*
 * Server DMA through messages. Up to VUS_DMA_WINDOW DMA_READ/DMA_WRITE
 * commands are in flight at once, so that the client serves one while the
 * next travels; replies are matched by msg_id in whatever order they come
 * (a DMA_READ reply's data lands straight in the caller's buffer).
 */
#define VUS_DMA_WINDOW	4

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
	return vus_xmit(dev, iov, p->write ? 3 : 2, -1);
}

/*
 * Receive until @want has its reply; replies to the other commands in
 * @pend are kept with them, client commands queued. Any failure drops
 * the connection.
 */
static int vus_dma_wait(struct vus_dev *dev, struct vus_dma_pend *pend,
			unsigned int nr, struct vus_dma_pend *want)
{
	struct pollfd pfd = { .fd = dev->conn_fd, .events = POLLIN };
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

		n = vus_rx_avail(dev) ? 1 : poll(&pfd, 1, dev->timeout_ms);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n ? -errno : -ETIMEDOUT;
			vus_conn_broken(dev, "waiting for a DMA reply", err);
			return err;
		}
		for (i = 0; i < nr; i++)
			sinks[i] = pend[i].sink;
		err = vus_recv_msg(dev, &m, limit, sinks, nr, false);
		for (i = 0; i < nr; i++)
			pend[i].sink.used = sinks[i].used;
		if (err)
			return err == -ECONNRESET ? -ENOTCONN : err;
		if ((m->flags & VFIO_USER_F_TYPE_MASK) == VFIO_USER_F_TYPE_COMMAND) {
			vus_enqueue(dev, m);
			continue;
		}
		for (i = 0; i < nr; i++)
			if (!pend[i].reply && pend[i].sink.id == m->msg_id)
				p = &pend[i];
		if ((m->flags & VFIO_USER_F_TYPE_MASK) != VFIO_USER_F_TYPE_REPLY ||
		    !p || m->command != p->sink.cmd || m->nr_fds) {
			pr_warn("DMA reply msg_id %u command %u flags %#x matches no DMA command in flight\n",
				m->msg_id, m->command, m->flags);
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
		    p->sink.used)
			goto out;
	}
	pr_warn("DMA %s reply: size %u, expected %zu\n",
		p->write ? "write" : "read", m->size, reply_size);
	vus_conn_broken(dev, "bad DMA reply", -EPROTO);
	err = -EPROTO;
out:
	vus_msg_free(m);
	return err;
}

static bool vus_conn_ok(const struct vus_dev *dev)
{
	return dev->conn_fd >= 0 && !dev->conn_dead;
}

static int vus_dma_xfer(struct vus_dev *dev, uint64_t iova, void *buf,
			size_t len, bool write)
{
	uint32_t prot = write ? VFIO_USER_F_DMA_REGION_WRITE :
				VFIO_USER_F_DMA_REGION_READ;
	struct vus_dma_pend pend[VUS_DMA_WINDOW];
	unsigned int nr = 0, i;
	size_t pos = 0;
	int err, first = 0;

	if (!dev || (!buf && len))
		return -EINVAL;
	if (!vus_dev__connected(dev))
		return -ENOTCONN;
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
			if (write)
				memcpy((uint8_t *)r->vaddr + roff,
				       (const uint8_t *)buf + pos, n);
			else
				memcpy((uint8_t *)buf + pos,
				       (uint8_t *)r->vaddr + roff, n);
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
	/*
	 * A client command read ahead of the socket with a reply waits in
	 * the receive buffer: wake the loop for it (the socket will not).
	 */
	if (vus_conn_ok(dev) && vus_rx_avail(dev))
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
