/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A minimal vfio-user *client* for the library's unit tests: raw message
 * I/O with fds, and a request helper that serves the server's DMA_READ /
 * DMA_WRITE from a buffer standing in for guest memory while it waits for
 * its own reply, on the main socket or, once negotiated, on the twin
 * socket. Every helper returns 0 or -errno; the tests assert.
 */
#ifndef __VUS_CLIENT_H
#define __VUS_CLIENT_H

#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <linux/vfio_user.h>

#define CL_MAX_FDS	253
#define CL_MAX_MSG	(64U << 20)
#define CL_TIMEOUT_MS	5000

/* One received message; @buf holds header and payload, host order fields. */
struct cl_msg {
	uint16_t msg_id;
	uint16_t command;
	uint32_t size;
	uint32_t flags;
	uint32_t error_no;
	uint8_t *buf;
	uint8_t *payload;
	size_t len;		/* payload length */
	int fds[CL_MAX_FDS];
	unsigned int nr_fds;
	int sock;		/* the socket it came on */
};

/*
 * Client state: socket, twin socket (@twin_fd valid with @twin), msg_id
 * counter, fake guest memory for DMA.
 */
struct cl {
	int fd;
	bool twin;
	int twin_fd;
	uint16_t next_id;
	uint8_t *mem;		/* guest memory at IOVA @mem_iova */
	uint64_t mem_iova;
	uint64_t mem_len;
	unsigned int dma_reads, dma_writes;
	unsigned int dma_on_main, dma_on_twin;	/* where they came */
	uint64_t max_dma_count;
	int dma_reply_error;	/* reply DMA with this errno if non-zero */
	bool dma_bad_reply;	/* reply DMA_READ with a short payload */
	unsigned int last_server_id;
	/* hook: called when a DMA command arrives, before the reply */
	void (*on_dma)(struct cl *cl, const struct cl_msg *m);
};

static inline void cl_msg_free(struct cl_msg *m)
{
	unsigned int i;

	for (i = 0; i < m->nr_fds; i++)
		close(m->fds[i]);
	m->nr_fds = 0;
	free(m->buf);
	m->buf = NULL;
}

static inline int cl_send_raw(int fd, const void *buf, size_t len,
			      const int *fds, unsigned int nr_fds)
{
	union {
		char b[CMSG_SPACE(CL_MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	size_t done = 0;

	if (nr_fds) {
		struct cmsghdr *c;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.b;
		mh.msg_controllen = CMSG_SPACE(nr_fds * sizeof(int));
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(nr_fds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, nr_fds * sizeof(int));
	}
	while (done < len) {
		ssize_t n;

		iov.iov_base = (char *)buf + done;
		iov.iov_len = len - done;
		n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		mh.msg_control = NULL;
		mh.msg_controllen = 0;
		done += n;
	}
	return 0;
}

static inline void cl_hdr(void *buf, uint16_t id, uint16_t cmd, uint32_t size,
			  uint32_t flags, uint32_t error_no)
{
	struct vfio_user_hdr h = {
		.msg_id = htole16(id),
		.command = htole16(cmd),
		.size = htole32(size),
		.flags = htole32(flags),
		.error_no = htole32(error_no),
	};

	memcpy(buf, &h, sizeof(h));
}

/* Send header + payload; returns the msg_id used, or -errno. */
static inline int cl_send(struct cl *cl, uint16_t cmd, uint32_t flags,
			  const void *payload, size_t len, const int *fds,
			  unsigned int nr_fds)
{
	uint8_t *buf = malloc(VFIO_USER_HDR_SIZE + len);
	uint16_t id = cl->next_id++;
	int err;

	if (!buf)
		return -ENOMEM;
	cl_hdr(buf, id, cmd, VFIO_USER_HDR_SIZE + len, flags, 0);
	if (len)
		memcpy(buf + VFIO_USER_HDR_SIZE, payload, len);
	err = cl_send_raw(cl->fd, buf, VFIO_USER_HDR_SIZE + len, fds, nr_fds);
	free(buf);
	return err ? err : id;
}

static inline int cl_recv_full(int fd, void *buf, size_t len,
			       struct cl_msg *m)
{
	union {
		char b[CMSG_SPACE(CL_MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} u;
	size_t done = 0;

	while (done < len) {
		struct iovec iov = {
			.iov_base = (char *)buf + done, .iov_len = len - done,
		};
		struct msghdr mh = {
			.msg_iov = &iov, .msg_iovlen = 1,
			.msg_control = u.b, .msg_controllen = sizeof(u.b),
		};
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		struct cmsghdr *c;
		ssize_t n;

		if (poll(&pfd, 1, CL_TIMEOUT_MS) == 0)
			return -ETIMEDOUT;
		n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			unsigned int k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			if (c->cmsg_type != SCM_RIGHTS || m->nr_fds + k > CL_MAX_FDS)
				return -EPROTO;
			memcpy(m->fds + m->nr_fds, CMSG_DATA(c), k * sizeof(int));
			m->nr_fds += k;
		}
		if (n == 0)
			return -ECONNRESET;
		done += n;
	}
	return 0;
}

/*
 * Receive one message (any type) from socket @fd. -ECONNRESET when the
 * server closed it.
 */
static inline int cl_recv_on(int fd, struct cl_msg *m)
{
	struct vfio_user_hdr h;
	int err;

	memset(m, 0, offsetof(struct cl_msg, fds));
	m->nr_fds = 0;
	m->sock = fd;
	err = cl_recv_full(fd, &h, sizeof(h), m);
	if (err)
		return err;
	m->msg_id = le16toh(h.msg_id);
	m->command = le16toh(h.command);
	m->size = le32toh(h.size);
	m->flags = le32toh(h.flags);
	m->error_no = le32toh(h.error_no);
	if (m->size < sizeof(h) || m->size > CL_MAX_MSG)
		return -EPROTO;
	m->buf = malloc(m->size);
	if (!m->buf)
		return -ENOMEM;
	memcpy(m->buf, &h, sizeof(h));
	m->payload = m->buf + sizeof(h);
	m->len = m->size - sizeof(h);
	return cl_recv_full(fd, m->payload, m->len, m);
}

/* Receive one message from the main socket. */
static inline int cl_recv(struct cl *cl, struct cl_msg *m)
{
	return cl_recv_on(cl->fd, m);
}

/*
 * Receive the next message from whichever socket has one (main or twin,
 * when negotiated), bounded by CL_TIMEOUT_MS.
 */
static inline int cl_recv_any(struct cl *cl, struct cl_msg *m)
{
	struct pollfd pfd[2] = {
		{ .fd = cl->fd, .events = POLLIN },
		{ .fd = cl->twin_fd, .events = POLLIN },
	};
	int n;

	if (!cl->twin)
		return cl_recv(cl, m);
	do
		n = poll(pfd, 2, CL_TIMEOUT_MS);
	while (n < 0 && errno == EINTR);
	if (n <= 0) {
		memset(m, 0, offsetof(struct cl_msg, fds));
		m->nr_fds = 0;
		return n ? -errno : -ETIMEDOUT;
	}
	return cl_recv_on(pfd[1].revents ? cl->twin_fd : cl->fd, m);
}

/* Serve one DMA_READ / DMA_WRITE command from the server. */
static inline int cl_serve_dma(struct cl *cl, struct cl_msg *m)
{
	struct vfio_user_dma_access a;
	uint64_t addr, count;
	uint8_t *reply;
	size_t rlen;
	int err;

	if (m->len < sizeof(a))
		return -EPROTO;
	memcpy(&a, m->payload, sizeof(a));
	addr = le64toh(a.addr);
	count = le64toh(a.count);
	cl->last_server_id = m->msg_id;
	if (count > cl->max_dma_count)
		cl->max_dma_count = count;
	if (cl->on_dma)
		cl->on_dma(cl, m);
	if (m->command == VFIO_USER_DMA_READ)
		cl->dma_reads++;
	else
		cl->dma_writes++;
	if (cl->twin && m->sock == cl->twin_fd)
		cl->dma_on_twin++;
	else
		cl->dma_on_main++;
	if (cl->dma_reply_error || addr < cl->mem_iova ||
	    addr - cl->mem_iova > cl->mem_len ||
	    count > cl->mem_len - (addr - cl->mem_iova) ||
	    (m->command == VFIO_USER_DMA_WRITE && m->len != sizeof(a) + count) ||
	    (m->command == VFIO_USER_DMA_READ && m->len != sizeof(a))) {
		uint8_t h[VFIO_USER_HDR_SIZE];

		cl_hdr(h, m->msg_id, m->command, sizeof(h),
		       VFIO_USER_F_TYPE_REPLY | VFIO_USER_F_ERROR,
		       cl->dma_reply_error ?: EFAULT);
		return cl_send_raw(m->sock, h, sizeof(h), NULL, 0);
	}
	if (m->command == VFIO_USER_DMA_WRITE) {
		memcpy(cl->mem + (addr - cl->mem_iova), m->payload + sizeof(a),
		       count);
		count = 0;
	}
	rlen = VFIO_USER_HDR_SIZE + sizeof(a) + count;
	if (cl->dma_bad_reply)
		rlen -= 1;
	reply = malloc(VFIO_USER_HDR_SIZE + sizeof(a) + count);
	if (!reply)
		return -ENOMEM;
	cl_hdr(reply, m->msg_id, m->command, rlen, VFIO_USER_F_TYPE_REPLY, 0);
	memcpy(reply + VFIO_USER_HDR_SIZE, &a, sizeof(a));
	if (count)
		memcpy(reply + VFIO_USER_HDR_SIZE + sizeof(a),
		       cl->mem + (addr - cl->mem_iova), count);
	/* on the socket it came on */
	err = cl_send_raw(m->sock, reply, rlen, NULL, 0);
	free(reply);
	return err;
}

/*
 * Wait for the reply to @id, serving DMA commands meanwhile (on either
 * socket). Returns 0 with @r filled (check r->flags for VFIO_USER_F_ERROR),
 * or -errno; -EPROTO for anything else on the twin socket.
 */
static inline int cl_wait(struct cl *cl, int id, struct cl_msg *r)
{
	for (;;) {
		int err = cl_recv_any(cl, r);

		if (err) {
			cl_msg_free(r);
			return err;
		}
		if ((r->flags & VFIO_USER_F_TYPE_MASK) == VFIO_USER_F_TYPE_COMMAND &&
		    (r->command == VFIO_USER_DMA_READ ||
		     r->command == VFIO_USER_DMA_WRITE)) {
			err = cl_serve_dma(cl, r);
			cl_msg_free(r);
			if (err)
				return err;
			continue;
		}
		if ((r->flags & VFIO_USER_F_TYPE_MASK) != VFIO_USER_F_TYPE_REPLY ||
		    r->msg_id != id || r->sock != cl->fd) {
			cl_msg_free(r);
			return -EPROTO;
		}
		return 0;
	}
}

/*
 * Send a command and wait for its reply. Returns the reply's positive
 * error_no negated when the error flag is set (-EIO if error_no is 0),
 * 0 on success (reply in @r, free with cl_msg_free()), or -errno.
 */
static inline int cl_cmd(struct cl *cl, uint16_t cmd, const void *payload,
			 size_t len, const int *fds, unsigned int nr_fds,
			 struct cl_msg *r)
{
	int id = cl_send(cl, cmd, 0, payload, len, fds, nr_fds);
	int err;

	if (id < 0)
		return id;
	err = cl_wait(cl, id, r);
	if (err)
		return err;
	if (r->command != cmd) {
		cl_msg_free(r);
		return -EPROTO;
	}
	if (r->flags & VFIO_USER_F_ERROR) {
		err = r->error_no ? -(int)r->error_no : -EIO;
		if (r->size != VFIO_USER_HDR_SIZE)
			err = -EPROTO;	/* error replies are header only */
		cl_msg_free(r);
		return err;
	}
	return 0;
}

/* cl_cmd() for callers that only want the status. */
static inline int cl_cmd0(struct cl *cl, uint16_t cmd, const void *payload,
			  size_t len)
{
	struct cl_msg r;
	int err = cl_cmd(cl, cmd, payload, len, NULL, 0, &r);

	if (!err)
		cl_msg_free(&r);
	return err;
}

/* VERSION with @json (NULL: none); reply in @r on success. */
static inline int cl_version(struct cl *cl, uint16_t major, uint16_t minor,
			     const char *json, struct cl_msg *r)
{
	size_t jlen = json ? strlen(json) + 1 : 0;
	uint8_t *p = malloc(4 + jlen);
	struct vfio_user_version v = {
		.major = htole16(major), .minor = htole16(minor),
	};
	int err;

	if (!p)
		return -ENOMEM;
	memcpy(p, &v, 4);
	if (jlen)
		memcpy(p + 4, json, jlen);
	err = cl_cmd(cl, VFIO_USER_VERSION, p, 4 + jlen, NULL, 0, r);
	free(p);
	return err;
}

static inline int cl_region_write(struct cl *cl, uint32_t region,
				  uint64_t off, const void *data, uint32_t count)
{
	uint8_t *p = malloc(sizeof(struct vfio_user_region_access) + count);
	struct vfio_user_region_access a = {
		.offset = htole64(off), .region = htole32(region),
		.count = htole32(count),
	};
	struct cl_msg r;
	int err;

	if (!p)
		return -ENOMEM;
	memcpy(p, &a, sizeof(a));
	memcpy(p + sizeof(a), data, count);
	err = cl_cmd(cl, VFIO_USER_REGION_WRITE, p, sizeof(a) + count, NULL, 0,
		     &r);
	free(p);
	if (err)
		return err;
	if (r.len != sizeof(a) || memcmp(r.payload, &a, sizeof(a)))
		err = -EPROTO;
	cl_msg_free(&r);
	return err;
}

static inline int cl_region_read(struct cl *cl, uint32_t region,
				 uint64_t off, void *data, uint32_t count)
{
	struct vfio_user_region_access a = {
		.offset = htole64(off), .region = htole32(region),
		.count = htole32(count),
	};
	struct cl_msg r;
	int err;

	err = cl_cmd(cl, VFIO_USER_REGION_READ, &a, sizeof(a), NULL, 0, &r);
	if (err)
		return err;
	if (r.len != sizeof(a) + count || memcmp(r.payload, &a, sizeof(a)))
		err = -EPROTO;
	else
		memcpy(data, r.payload + sizeof(a), count);
	cl_msg_free(&r);
	return err;
}

static inline int cl_dma_map(struct cl *cl, uint64_t iova, uint64_t size,
			     uint32_t flags, int fd, uint64_t offset)
{
	struct vfio_user_dma_map m = {
		.argsz = htole32(sizeof(m)), .flags = htole32(flags),
		.offset = htole64(offset), .addr = htole64(iova),
		.size = htole64(size),
	};
	struct cl_msg r;
	int err = cl_cmd(cl, VFIO_USER_DMA_MAP, &m, sizeof(m), &fd,
			 fd >= 0 ? 1 : 0, &r);

	if (err)
		return err;
	err = r.len ? -EPROTO : 0;
	cl_msg_free(&r);
	return err;
}

static inline int cl_dma_unmap(struct cl *cl, uint64_t iova, uint64_t size,
			       uint32_t flags)
{
	struct vfio_user_dma_unmap u = {
		.argsz = htole32(sizeof(u)), .flags = htole32(flags),
		.addr = htole64(iova), .size = htole64(size),
	};
	struct cl_msg r;
	int err = cl_cmd(cl, VFIO_USER_DMA_UNMAP, &u, sizeof(u), NULL, 0, &r);

	if (err)
		return err;
	err = (r.len != sizeof(u) || memcmp(r.payload, &u, sizeof(u))) ?
	      -EPROTO : 0;
	cl_msg_free(&r);
	return err;
}

/* SET_IRQS; @bools (count bytes) for DATA_BOOL, @fds for DATA_EVENTFD. */
static inline int cl_set_irqs(struct cl *cl, uint32_t flags, uint32_t index,
			      uint32_t start, uint32_t count,
			      const uint8_t *bools, const int *fds,
			      unsigned int nr_fds)
{
	size_t blen = (flags & VFIO_IRQ_SET_DATA_BOOL) ? count : 0;
	uint8_t *p = malloc(sizeof(struct vfio_user_irq_set) + blen + 1);
	struct vfio_user_irq_set s = {
		.argsz = htole32(sizeof(s) + blen), .flags = htole32(flags),
		.index = htole32(index), .start = htole32(start),
		.count = htole32(count),
	};
	struct cl_msg r;
	int err;

	if (!p)
		return -ENOMEM;
	memcpy(p, &s, sizeof(s));
	if (blen)
		memcpy(p + sizeof(s), bools, blen);
	err = cl_cmd(cl, VFIO_USER_DEVICE_SET_IRQS, p, sizeof(s) + blen, fds,
		     nr_fds, &r);
	free(p);
	if (err)
		return err;
	err = r.len ? -EPROTO : 0;
	cl_msg_free(&r);
	return err;
}

#endif /* __VUS_CLIENT_H */
