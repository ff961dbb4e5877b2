// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio_user_mdev - the connection to a vfio-user server.
 *
 * One AF_UNIX stream socket per attached device. Consumer calls build a
 * message, take a tag (msg_id) from the connection's table, send it under
 * send_mutex and wait, bounded by the device's timeout, for the reply
 * matched by msg_id. There is no receiver thread: a waiting consumer takes
 * what arrives off the socket itself (recv_mutex makes one reader at a
 * time), so a reply wakes the thread that wants it and nobody else; when
 * no consumer waits, the socket's data_ready callback queues recv_work.
 * Commands from the server (DMA_READ, DMA_WRITE) are handed to a work item
 * (dma.c) so that serving them never waits for a reply the server has not
 * sent yet.
 *
 * Nothing from the socket is trusted: every header and length is checked
 * before use; a violation, a timeout or a closed socket kills the
 * connection once (vfio_user_conn_broken()), which fails every request in
 * flight and every later one with -EIO until a re-attach.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bvec.h>
#include <linux/ctype.h>
#include <linux/file.h>
#include <linux/sizes.h>
#include <linux/net.h>
#include <linux/sched/clock.h>
#include <linux/sched/signal.h>
#include <linux/sched/stat.h>
#include <linux/slab.h>
#include <linux/socket.h>
#include <linux/string.h>
#include <linux/uio.h>
#include <net/net_namespace.h>
#include <net/sock.h>

#include "compat.h"
#include "vfio_user_mdev.h"

/* Longest error payload we read and drop. */
#define VFIO_USER_MAX_ERROR_PAYLOAD	4096
/* Most bytes handed to the socket at once (one socket buffer). */
#define VFIO_USER_XMIT_CHUNK		SZ_16K

/*
 * A server's errno must be a user-visible one: 1..511. From ERESTARTSYS
 * (512) on they are kernel-internal; returned from a syscall they restart
 * it or leak a meaningless number.
 */
static bool vfio_user_errno_ok(u32 err)
{
	return err && err < ERESTARTSYS;
}

static int vfio_user_wait_reply(struct vfio_user_conn *conn,
				struct vfio_user_req *req);

static void vfio_user_req_release(struct kref *ref)
{
	kfree(container_of(ref, struct vfio_user_req, ref));
}

static void vfio_user_req_put(struct vfio_user_req *req)
{
	kref_put(&req->ref, vfio_user_req_release);
}

/*
 * Completes @req once with @status and drops the reference the tag table
 * held; the caller has removed it from the table under conn->lock. Its
 * sender waits on conn->rx_wait.
 */
static void vfio_user_req_complete(struct vfio_user_conn *conn,
				   struct vfio_user_req *req, int status)
{
	req->status = status;
	complete(&req->done);
	vfio_user_req_put(req);
	wake_up_all(&conn->rx_wait);
}

/* The one way a connection dies; @expected ends it without an error. */
static __printf(3, 0)
void vfio_user_conn_kill(struct vfio_user_conn *conn, bool expected,
			 const char *fmt, va_list args)
{
	struct vfio_user_req *req;
	int id;

	spin_lock(&conn->lock);
	if (conn->dead) {
		spin_unlock(&conn->lock);
		return;
	}
	conn->dead = true;
	vsnprintf(conn->reason, sizeof(conn->reason), fmt, args);
	idr_for_each_entry(&conn->reqs, req, id) {
		idr_remove(&conn->reqs, id);
		req->status = -EIO;
		complete(&req->done);
		vfio_user_req_put(req);
	}
	spin_unlock(&conn->lock);

	if (expected)
		dev_dbg(vfio_user_dev(conn->udev), "connection closed: %s\n",
			conn->reason);
	else
		dev_err(vfio_user_dev(conn->udev),
			"connection to server broken: %s\n", conn->reason);
	kernel_sock_shutdown(conn->sock, SHUT_RDWR);
	wake_up_all(&conn->rx_wait);
}

/**
 * vfio_user_conn_broken() - kill a connection, once
 * @conn: the connection
 * @fmt: printf format of the reason, shown in sysfs state and logged
 *
 * Idempotent: the first call records the reason, logs it, shuts the socket
 * down so the receiver and any sender wake up, and completes every request
 * in flight with -EIO. Later consumer calls fail at once. The sleeping
 * teardown is left to vfio_user_conn_stop().
 *
 * Context: any process context; takes conn->lock.
 */
void vfio_user_conn_broken(struct vfio_user_conn *conn, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	vfio_user_conn_kill(conn, false, fmt, args);
	va_end(args);
}

/* The same for a deliberate end (detach, remove): logged at debug level. */
static __printf(2, 3)
void vfio_user_conn_close(struct vfio_user_conn *conn, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	vfio_user_conn_kill(conn, true, fmt, args);
	va_end(args);
}

/**
 * vfio_user_conn_stop_waiters() - end a connection on purpose
 * @conn: the connection
 *
 * As vfio_user_conn_broken() with the reason "detached", logged at debug
 * level: every request in flight fails with -EIO at once.
 *
 * Context: any process context.
 */
void vfio_user_conn_stop_waiters(struct vfio_user_conn *conn)
{
	vfio_user_conn_close(conn, "detached");
}

/**
 * vfio_user_conn_dead() - whether a connection is dead, and why
 * @conn: the connection
 * @reason: buffer for the reason, or NULL
 * @len: size of @reason
 *
 * Context: any; takes conn->lock.
 * Return: true if vfio_user_conn_broken() was called.
 */
bool vfio_user_conn_dead(struct vfio_user_conn *conn, char *reason, size_t len)
{
	bool dead;

	spin_lock(&conn->lock);
	dead = conn->dead;
	if (dead && reason)
		strscpy(reason, conn->reason, len);
	spin_unlock(&conn->lock);
	return dead;
}

/*
 * Sends the whole of @msg's iterator. A stream cannot resynchronise after
 * a partial message, so anything short of all of it is an error the caller
 * turns into a broken connection.
 */
static int vfio_user_xmit(struct vfio_user_conn *conn, struct msghdr *msg,
			  size_t *sent)
{
	unsigned long deadline = jiffies + conn->timeout;
	struct sock *sk = conn->sock->sk;
	size_t left;
	long timeo;
	int ret;

	lockdep_assert_held(&conn->send_mutex);

	msg->msg_flags |= MSG_NOSIGNAL;
	while ((left = msg_data_left(msg))) {
		/*
		 * The socket arms sk_sndtimeo afresh for every buffer it
		 * waits for, so a server draining the socket a trickle at a
		 * time could stretch one message without bound: send in
		 * chunks, each allowed only what is left of the timeout.
		 */
		timeo = (long)(deadline - jiffies);
		if (timeo <= 0)
			return -ETIMEDOUT;
		WRITE_ONCE(sk->sk_sndtimeo, timeo);
		iov_iter_truncate(&msg->msg_iter, VFIO_USER_XMIT_CHUNK);
		ret = sock_sendmsg(conn->sock, msg);
		iov_iter_reexpand(&msg->msg_iter, left - max(ret, 0));
		if (ret <= 0)
			return ret ? ret : -EPIPE;
		*sent += ret;
		/* Control data goes with the first bytes only. */
		msg->msg_control = NULL;
		msg->msg_controllen = 0;
	}
	return 0;
}

/*
 * Receives exactly @len bytes; 0 bytes means the server closed. With a
 * @deadline (jiffies; 0 for none) the whole of it must come by then,
 * -EAGAIN otherwise: sk_rcvtimeo alone bounds each wait for data, and a
 * server sending a byte at a time would never trip it.
 */
static int vfio_user_recv_msg(struct vfio_user_conn *conn, struct msghdr *msg,
			      unsigned long deadline)
{
	long timeo;
	int ret;

	while (msg_data_left(msg)) {
		if (deadline) {
			timeo = (long)(deadline - jiffies);
			if (timeo <= 0)
				return -EAGAIN;
			WRITE_ONCE(conn->sock->sk->sk_rcvtimeo, timeo);
		}
		ret = sock_recvmsg(conn->sock, msg, MSG_WAITALL);
		if (ret <= 0)
			return ret ? ret : -EPIPE;
		/*
		 * A server that sends fds (MSG_CTRUNC): the core has dropped
		 * them, we never asked for any.
		 */
		if (msg->msg_flags & MSG_CTRUNC)
			dev_dbg_ratelimited(vfio_user_dev(conn->udev),
					    "dropped fds the server sent\n");
		msg->msg_flags = 0;
	}
	return 0;
}

static int __vfio_user_recv(struct vfio_user_conn *conn, void *buf,
			    size_t len, unsigned long deadline)
{
	struct kvec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr msg = { };

	iov_iter_kvec(&msg.msg_iter, ITER_DEST, &iov, 1, len);
	return vfio_user_recv_msg(conn, &msg, deadline);
}

/* Receives into @dp, exactly as many bytes as its pieces hold. */
static int vfio_user_recv_pages(struct vfio_user_conn *conn,
				struct vfio_user_dma_pages *dp, size_t len)
{
	struct msghdr msg = { };

	iov_iter_bvec(&msg.msg_iter, ITER_DEST, dp->bv, dp->nr, len);
	return vfio_user_recv_msg(conn, &msg, 0);
}

static int vfio_user_recv(struct vfio_user_conn *conn, void *buf, size_t len)
{
	return __vfio_user_recv(conn, buf, len, 0);
}

/* Reads and drops @len bytes of a payload nobody wants. */
static int vfio_user_recv_discard(struct vfio_user_conn *conn, size_t len)
{
	u8 buf[64];
	int ret;

	while (len) {
		size_t n = min(len, sizeof(buf));

		ret = vfio_user_recv(conn, buf, n);
		if (ret)
			return ret;
		len -= n;
	}
	return 0;
}

static void vfio_user_fill_hdr(struct vfio_user_hdr *hdr, u16 msg_id,
			       u16 command, size_t size, u32 flags, u32 error)
{
	hdr->msg_id = cpu_to_le16(msg_id);
	hdr->command = cpu_to_le16(command);
	hdr->size = cpu_to_le32(size);
	hdr->flags = cpu_to_le32(flags);
	hdr->error_no = cpu_to_le32(error);
}

/*
 * Sends one message: header, @payload, @data, with @fds as SCM_RIGHTS.
 * The fds are numbers in current->files (the consumer's, or the attaching
 * writer's); the socket core takes its own references to the files.
 */
static int vfio_user_send_msg(struct vfio_user_conn *conn,
			      struct vfio_user_hdr *hdr,
			      const void *payload, size_t len,
			      const void *data, size_t data_len,
			      const int *fds, unsigned int nr_fds)
{
	struct kvec iov[3] = {
		{ .iov_base = hdr, .iov_len = sizeof(*hdr) },
		{ .iov_base = (void *)payload, .iov_len = len },
		{ .iov_base = (void *)data, .iov_len = data_len },
	};
	size_t total = sizeof(*hdr) + len + data_len;
	struct msghdr msg = { };
	void *cbuf = NULL;
	size_t sent = 0;
	int ret;

	if (nr_fds) {
		struct cmsghdr *cmsg;
		size_t clen = CMSG_SPACE(nr_fds * sizeof(int));

		cbuf = kzalloc(clen, GFP_KERNEL);
		if (!cbuf)
			return -ENOMEM;
		msg.msg_control = cbuf;
		msg.msg_controllen = clen;
		cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(nr_fds * sizeof(int));
		memcpy(CMSG_DATA(cmsg), fds, nr_fds * sizeof(int));
	}
	iov_iter_kvec(&msg.msg_iter, ITER_SOURCE, iov, 3, total);

	mutex_lock(&conn->send_mutex);
	ret = vfio_user_xmit(conn, &msg, &sent);
	mutex_unlock(&conn->send_mutex);
	kfree(cbuf);

	/*
	 * Fds the consumer closed (or never had) fail the send before a
	 * byte goes out: the stream is intact, the caller gets the errno.
	 */
	if (ret && !sent && nr_fds && (ret == -EBADF || ret == -EINVAL))
		return ret;
	if (ret)
		vfio_user_conn_broken(conn, "send of command %u failed (%d)",
				      le16_to_cpu(hdr->command), ret);
	return ret;
}

/**
 * vfio_user_send_reply() - answer a command from the server
 * @conn: the connection
 * @msg_id: the server's msg_id
 * @command: the command answered
 * @error: 0, or a positive errno for an error reply (no payload then)
 * @payload: reply payload
 * @len: length of @payload
 * @data: data following @payload
 * @data_len: length of @data
 *
 * Context: process context, may sleep on the socket (bounded by the
 * socket's send timeout).
 * Return: 0 or a negative errno (the connection is then broken).
 */
int vfio_user_send_reply(struct vfio_user_conn *conn, u16 msg_id, u16 command,
			 int error, const void *payload, size_t len,
			 const void *data, size_t data_len)
{
	struct vfio_user_hdr hdr;
	u32 flags = VFIO_USER_F_TYPE_REPLY;

	if (error) {
		flags |= VFIO_USER_F_ERROR;
		len = 0;
		data_len = 0;
	}
	vfio_user_fill_hdr(&hdr, msg_id, command, sizeof(hdr) + len + data_len,
			   flags, error);
	return vfio_user_send_msg(conn, &hdr, payload, len, data, data_len,
				  NULL, 0);
}

/**
 * vfio_user_send_reply_pages() - answer a command with a reply built in pages
 * @conn: the connection
 * @msg_id: the server's msg_id
 * @command: the command answered
 * @bv: the whole message: its first sizeof(struct vfio_user_hdr) bytes are
 *	room for the header, filled in here; the payload follows
 * @nr_bv: number of entries in @bv
 * @size: bytes in @bv
 *
 * Where the kernel can (6.5 on), the socket takes its own references to the
 * pages of a reply of a page or more instead of copying them
 * (MSG_SPLICE_PAGES), and the server's read is the only copy: the caller
 * must not write the pages after the call, only drop its references. The
 * pages must come from the page allocator. A shorter reply is copied, so
 * a server that stops reading holds no page per small reply.
 *
 * Context: process context, may sleep on the socket (bounded by the
 * connection's timeout).
 * Return: 0 or a negative errno (the connection is then broken).
 */
int vfio_user_send_reply_pages(struct vfio_user_conn *conn, u16 msg_id,
			       u16 command, struct bio_vec *bv,
			       unsigned int nr_bv, size_t size)
{
	struct vfio_user_hdr *hdr = page_address(bv[0].bv_page) +
				    bv[0].bv_offset;
	struct msghdr msg = {
		.msg_flags = size >= PAGE_SIZE ? VFIO_USER_MSG_SPLICE : 0,
	};
	size_t sent = 0;
	int ret;

	if (WARN_ON_ONCE(bv[0].bv_len < sizeof(*hdr))) {
		vfio_user_conn_broken(conn, "reply to command %u built wrong",
				      command);
		return -EINVAL;
	}
	vfio_user_fill_hdr(hdr, msg_id, command, size, VFIO_USER_F_TYPE_REPLY,
			   0);
	iov_iter_bvec(&msg.msg_iter, ITER_SOURCE, bv, nr_bv, size);

	mutex_lock(&conn->send_mutex);
	ret = vfio_user_xmit(conn, &msg, &sent);
	mutex_unlock(&conn->send_mutex);
	if (ret)
		vfio_user_conn_broken(conn, "send of reply to command %u failed (%d)",
				      command, ret);
	return ret;
}

/**
 * vfio_user_send_sync() - send a command and wait for its reply
 * @conn: the connection
 * @command: &enum vfio_user_command
 * @payload: fixed part of the payload
 * @len: length of @payload
 * @data: variable data following @payload (a REGION_WRITE's bytes), or NULL
 * @data_len: length of @data
 * @fds: fds (in current->files) to pass with SCM_RIGHTS, or NULL
 * @nr_fds: number of @fds
 * @reply: buffer for the reply payload, or NULL when @reply_max is 0
 * @reply_min: shortest reply payload accepted
 * @reply_max: longest reply payload accepted, the size of @reply
 *
 * A reply outside [@reply_min, @reply_max], with another command, or an
 * error number outside 1..4095 is a protocol violation. Waits at most the
 * connection's timeout; a timeout breaks the connection.
 *
 * Context: process context; sleeps. Killable: a fatal signal returns
 * -EINTR at once (the tag stays taken until the reply comes or the
 * connection dies).
 * Return: length of the reply payload, or -EIO (connection dead or broken
 * meanwhile), -ETIMEDOUT, -EINTR, -ENOMEM, or the server's -errno.
 */
int vfio_user_send_sync(struct vfio_user_conn *conn, u16 command,
			const void *payload, size_t len,
			const void *data, size_t data_len,
			const int *fds, unsigned int nr_fds,
			void *reply, size_t reply_min, size_t reply_max)
{
	struct vfio_user_req *req;
	struct vfio_user_hdr hdr;
	int id, ret;

	req = kmalloc(struct_size(req, reply, reply_max), GFP_KERNEL);
	if (!req)
		return -ENOMEM;
	kref_init(&req->ref);
	init_completion(&req->done);
	req->command = command;
	req->status = -EIO;
	req->reply_min = reply_min;
	req->reply_max = reply_max;
	req->reply_len = 0;

	idr_preload(GFP_KERNEL);
	spin_lock(&conn->lock);
	if (conn->dead) {
		id = -EIO;
	} else {
		id = idr_alloc_cyclic(&conn->reqs, req, 0, U16_MAX + 1,
				      GFP_NOWAIT);
		if (id >= 0)
			kref_get(&req->ref);	/* the table's */
		else if (id == -ENOSPC)
			id = -EBUSY;
	}
	spin_unlock(&conn->lock);
	idr_preload_end();
	if (id < 0) {
		vfio_user_req_put(req);
		return id;
	}
	req->msg_id = id;

	vfio_user_fill_hdr(&hdr, id, command, sizeof(hdr) + len + data_len,
			   VFIO_USER_F_TYPE_COMMAND, 0);
	ret = vfio_user_send_msg(conn, &hdr, payload, len, data, data_len,
				 fds, nr_fds);
	if (ret == -EBADF || ret == -EINVAL) {
		/* Never sent, connection intact: take the tag back. */
		spin_lock(&conn->lock);
		if (idr_find(&conn->reqs, id) == req) {
			idr_remove(&conn->reqs, id);
			vfio_user_req_put(req);		/* the table's */
		}
		spin_unlock(&conn->lock);
		vfio_user_req_put(req);
		return ret;
	}
	if (ret) {
		/* Broken: the table's reference is gone with the request. */
		vfio_user_req_put(req);
		return -EIO;
	}

	ret = vfio_user_wait_reply(conn, req);
	if (!ret) {
		ret = req->status;
		if (!ret) {
			if (reply_max)
				memcpy(reply, req->reply, req->reply_len);
			ret = req->reply_len;
		}
	} else if (ret == -ETIMEDOUT) {
		vfio_user_conn_broken(conn,
				      "no reply to msg_id %u (command %u) within %u ms",
				      id, command,
				      jiffies_to_msecs(conn->timeout));
	}
	vfio_user_req_put(req);
	return ret;
}

/* Takes a reply off the socket and completes its request. */
static int vfio_user_handle_reply(struct vfio_user_conn *conn,
				  const struct vfio_user_hdr *hdr, size_t len)
{
	u16 msg_id = le16_to_cpu(hdr->msg_id);
	u16 command = le16_to_cpu(hdr->command);
	u32 flags = le32_to_cpu(hdr->flags);
	struct vfio_user_req *req;
	u16 sent = 0;
	int ret;

	spin_lock(&conn->lock);
	req = idr_find(&conn->reqs, msg_id);
	/*
	 * A request left in the table is not ours to touch after the
	 * unlock: a timed-out waiter may free it. Read what we need here.
	 */
	if (req) {
		sent = req->command;
		if (sent == command)
			idr_remove(&conn->reqs, msg_id);	/* its ref is ours now */
	}
	spin_unlock(&conn->lock);

	if (!req) {
		vfio_user_conn_broken(conn,
				      "reply with unknown msg_id %u (command %u)",
				      msg_id, command);
		return -EPROTO;
	}
	if (sent != command) {
		vfio_user_conn_broken(conn,
				      "reply to msg_id %u is for command %u, sent %u",
				      msg_id, command, sent);
		return -EPROTO;
	}

	if (flags & VFIO_USER_F_ERROR) {
		u32 err = le32_to_cpu(hdr->error_no);

		if (!vfio_user_errno_ok(err) ||
		    len > VFIO_USER_MAX_ERROR_PAYLOAD) {
			vfio_user_req_complete(conn, req, -EPROTO);
			vfio_user_conn_broken(conn,
					      "error reply to msg_id %u (command %u) with errno %u, %zu bytes",
					      msg_id, command, err, len);
			return -EPROTO;
		}
		ret = vfio_user_recv_discard(conn, len);
		vfio_user_req_complete(conn, req, ret ? -EIO : -(int)err);
		return ret;
	}

	if (len < req->reply_min || len > req->reply_max) {
		vfio_user_req_complete(conn, req, -EPROTO);
		vfio_user_conn_broken(conn,
				      "reply to msg_id %u (command %u) has %zu bytes, expected %zu..%zu",
				      msg_id, command, len, req->reply_min,
				      req->reply_max);
		return -EPROTO;
	}
	ret = vfio_user_recv(conn, req->reply, len);
	if (ret) {
		vfio_user_req_complete(conn, req, -EIO);
		return ret;
	}
	req->reply_len = len;
	vfio_user_req_complete(conn, req, 0);
	return 0;
}

/* Takes a command (DMA_READ/DMA_WRITE) off the socket and queues it. */
static int vfio_user_handle_cmd(struct vfio_user_conn *conn,
				const struct vfio_user_hdr *hdr, size_t len)
{
	u16 command = le16_to_cpu(hdr->command);
	struct vfio_user_cmd *cmd;
	size_t max, head;
	int ret;

	switch (command) {
	case VFIO_USER_DMA_READ:
		max = sizeof(struct vfio_user_dma_access);
		break;
	case VFIO_USER_DMA_WRITE:
		max = sizeof(struct vfio_user_dma_access) + conn->caps.max_xfer;
		break;
	default:
		vfio_user_conn_broken(conn, "server sent command %u to the client",
				      command);
		return -EPROTO;
	}
	if (len < sizeof(struct vfio_user_dma_access) || len > max) {
		vfio_user_conn_broken(conn,
				      "command %u from server has %zu bytes, expected %zu..%zu",
				      command, len,
				      sizeof(struct vfio_user_dma_access), max);
		return -EPROTO;
	}

	/*
	 * A DMA_WRITE's data goes into pages, straight from the socket:
	 * vfio_dma_rw() copies it on from there.
	 */
	head = command == VFIO_USER_DMA_WRITE ?
	       sizeof(struct vfio_user_dma_access) : len;
	cmd = kvmalloc(struct_size(cmd, payload, head), GFP_KERNEL);
	if (cmd) {
		cmd->data = NULL;
		if (len > head) {
			cmd->data = vfio_user_dma_pages_alloc(len - head);
			if (!cmd->data) {
				kvfree(cmd);
				cmd = NULL;
			}
		}
	}
	if (!cmd) {
		vfio_user_conn_broken(conn, "out of memory for a %zu-byte command",
				      len);
		return -ENOMEM;
	}
	ret = vfio_user_recv(conn, cmd->payload, head);
	if (!ret && cmd->data)
		ret = vfio_user_recv_pages(conn, cmd->data, len - head);
	if (ret) {
		vfio_user_cmd_free(cmd);
		return ret;
	}
	cmd->msg_id = le16_to_cpu(hdr->msg_id);
	cmd->command = command;
	cmd->no_reply = le32_to_cpu(hdr->flags) & VFIO_USER_F_NO_REPLY;
	cmd->len = len;

	spin_lock(&conn->lock);
	if (conn->nr_cmds >= VFIO_USER_MAX_PENDING_CMDS) {
		spin_unlock(&conn->lock);
		vfio_user_cmd_free(cmd);
		vfio_user_conn_broken(conn, "more than %u server commands pending",
				      VFIO_USER_MAX_PENDING_CMDS);
		return -EPROTO;
	}
	list_add_tail(&cmd->node, &conn->cmds);
	conn->nr_cmds++;
	spin_unlock(&conn->lock);
	queue_work(vfio_user_wq, &conn->cmd_work);
	return 0;
}

/*
 * Reads and checks one header, by @deadline if not 0; returns the payload
 * length or -errno.
 */
static int vfio_user_recv_hdr(struct vfio_user_conn *conn,
			      struct vfio_user_hdr *hdr, size_t max_payload,
			      unsigned long deadline)
{
	u32 size, flags;
	int ret;

	ret = __vfio_user_recv(conn, hdr, sizeof(*hdr), deadline);
	if (ret)
		return ret;
	size = le32_to_cpu(hdr->size);
	flags = le32_to_cpu(hdr->flags);
	if (size < sizeof(*hdr) || size - sizeof(*hdr) > max_payload) {
		vfio_user_conn_broken(conn,
				      "message msg_id %u command %u has size %u, allowed 16..%zu",
				      le16_to_cpu(hdr->msg_id),
				      le16_to_cpu(hdr->command), size,
				      max_payload + sizeof(*hdr));
		return -EPROTO;
	}
	if ((flags & VFIO_USER_F_TYPE_MASK) > VFIO_USER_F_TYPE_REPLY) {
		vfio_user_conn_broken(conn,
				      "message msg_id %u command %u has type %u",
				      le16_to_cpu(hdr->msg_id),
				      le16_to_cpu(hdr->command),
				      flags & VFIO_USER_F_TYPE_MASK);
		return -EPROTO;
	}
	return size - sizeof(*hdr);
}

/* Whether the socket has something for a reader: data, EOF or an error. */
static bool vfio_user_rx_pending(struct vfio_user_conn *conn)
{
	struct sock *sk = conn->sock->sk;

	return !skb_queue_empty_lockless(&sk->sk_receive_queue) ||
	       (READ_ONCE(sk->sk_shutdown) & RCV_SHUTDOWN) ||
	       READ_ONCE(sk->sk_err) || READ_ONCE(conn->dead);
}

/*
 * Reads and dispatches every message the socket holds. It never waits for
 * a message to start; once one has started, the rest of it is waited for,
 * bounded by the socket's receive timeout. Any failure breaks the
 * connection. Callers hold recv_mutex, so one reader works at a time and
 * never takes send_mutex: a sender waiting for a reply cannot block it.
 */
static int vfio_user_recv_ready(struct vfio_user_conn *conn)
{
	struct vfio_user_hdr hdr;
	int len, ret = 0;

	lockdep_assert_held(&conn->recv_mutex);

	while (!ret && vfio_user_rx_pending(conn)) {
		if (READ_ONCE(conn->dead))
			return -EIO;
		len = vfio_user_recv_hdr(conn, &hdr, conn->max_payload, 0);
		if (len < 0) {
			ret = len;
			break;
		}
		if ((le32_to_cpu(hdr.flags) & VFIO_USER_F_TYPE_MASK) ==
		    VFIO_USER_F_TYPE_REPLY)
			ret = vfio_user_handle_reply(conn, &hdr, len);
		else
			ret = vfio_user_handle_cmd(conn, &hdr, len);
		WRITE_ONCE(conn->last_rx, jiffies);
	}

	if (ret == -EPIPE || ret == -ECONNRESET)
		vfio_user_conn_broken(conn, "server closed the connection");
	else if (ret == -EAGAIN)
		vfio_user_conn_broken(conn, "message cut short for %u ms",
				      jiffies_to_msecs(conn->timeout));
	else if (ret)
		vfio_user_conn_broken(conn, "receive failed (%d)", ret);
	return ret;
}

/* The reader when no consumer waits: queued by the data_ready callback. */
static void vfio_user_recv_work(struct work_struct *work)
{
	struct vfio_user_conn *conn = container_of(work, struct vfio_user_conn,
						   recv_work);

	mutex_lock(&conn->recv_mutex);
	vfio_user_recv_ready(conn);
	mutex_unlock(&conn->recv_mutex);
}

/*
 * Socket callbacks, in the server's send (or close) path: wake the
 * consumers waiting for replies, who read themselves, or else queue
 * recv_work. A consumer that stops waiting re-checks the socket (see
 * vfio_user_wait_reply()), so nothing is left unread in between.
 */
static void vfio_user_rx_kick(struct sock *sk, bool state)
{
	struct vfio_user_conn *conn;

	read_lock_bh(&sk->sk_callback_lock);
	conn = sk->sk_user_data;
	if (conn) {
		/* A reader blocked in the middle of a message sleeps there. */
		if (state)
			conn->saved_state_change(sk);
		else
			conn->saved_data_ready(sk);
		/*
		 * A sync wakeup, as AF_UNIX gives its own readers: the
		 * server that sent is about to wait for its next message.
		 */
		if (atomic_read(&conn->rx_pollers))
			wake_up_sync(&conn->rx_wait);
		else
			queue_work(vfio_user_wq, &conn->recv_work);
	}
	read_unlock_bh(&sk->sk_callback_lock);
}

static void vfio_user_data_ready(struct sock *sk)
{
	vfio_user_rx_kick(sk, false);
}

static void vfio_user_state_change(struct sock *sk)
{
	vfio_user_rx_kick(sk, true);
}

/*
 * Spins, at most poll_us microseconds and never past @left jiffies, until
 * the socket has something for @req's waiter: a server that answers
 * within that time is read without a sleep and a wakeup (the same trade
 * as net.core.busy_read). Gives up at once when another task is runnable
 * on this CPU, such as a server sharing it, which the spin would only
 * delay, or a signal is pending. Returns true if there is something to
 * read. Called once per wait: a wait that has read a server command
 * (DMA behind a doorbell) sleeps for the rest.
 */
static bool vfio_user_poll_reply(struct vfio_user_conn *conn,
				 struct vfio_user_req *req, long left)
{
	u64 us = min_t(u64, READ_ONCE(vfio_user_poll_us),
		       jiffies_to_usecs(left));
	u64 end;

	if (!us)
		return false;
	end = local_clock() + us * NSEC_PER_USEC;
	while (!completion_done(&req->done) && !vfio_user_rx_pending(conn)) {
		if (need_resched() || !single_task_running() ||
		    signal_pending(current) || local_clock() > end)
			return false;
		cpu_relax();
	}
	return true;
}

/*
 * Waits for @req's reply, reading the socket meanwhile. The deadline is
 * the timeout after the later of the send and the last message from the
 * server: a server busy sending DMA commands is not a hung one.
 * Returns 0 when @req is complete, -ETIMEDOUT or -EINTR.
 */
static int vfio_user_wait_reply(struct vfio_user_conn *conn,
				struct vfio_user_req *req)
{
	unsigned long start = jiffies, last, deadline;
	bool polled = false;
	int ret = 0;
	long left;

	atomic_inc(&conn->rx_pollers);
	while (!completion_done(&req->done)) {
		if (mutex_lock_killable(&conn->recv_mutex)) {
			ret = -EINTR;
			break;
		}
		vfio_user_recv_ready(conn);
		mutex_unlock(&conn->recv_mutex);

		last = READ_ONCE(conn->last_rx);
		deadline = (time_after(last, start) ? last : start) + conn->timeout;
		left = (long)(deadline - jiffies);
		if (left <= 0) {
			ret = completion_done(&req->done) ? 0 : -ETIMEDOUT;
			break;
		}
		if (!polled) {
			polled = true;
			if (vfio_user_poll_reply(conn, req, left))
				continue;
		}
		left = wait_event_killable_timeout(conn->rx_wait,
						   completion_done(&req->done) ||
						   vfio_user_rx_pending(conn),
						   left);
		if (left < 0) {
			ret = -EINTR;
			break;
		}
	}
	atomic_dec(&conn->rx_pollers);
	/* What arrived after our last read, with nobody left to read it. */
	if (vfio_user_rx_pending(conn) && !READ_ONCE(conn->dead))
		queue_work(vfio_user_wq, &conn->recv_work);
	return ret;
}

/*
 * VERSION JSON: a small bounded parser. It walks one object, descends
 * into "capabilities" and reads the unsigned integers we care about;
 * everything else is skipped, with nesting bounded.
 */
struct vfio_user_json {
	const char *p;
	const char *end;
};

#define VFIO_USER_JSON_MAX_DEPTH	8

static void vfio_user_json_ws(struct vfio_user_json *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' ||
				 *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static bool vfio_user_json_eat(struct vfio_user_json *j, char c)
{
	vfio_user_json_ws(j);
	if (j->p < j->end && *j->p == c) {
		j->p++;
		return true;
	}
	return false;
}

/* A string; copied (escapes kept verbatim, truncated) into @out if given. */
static int vfio_user_json_string(struct vfio_user_json *j, char *out,
				 size_t outlen)
{
	size_t n = 0;

	if (!vfio_user_json_eat(j, '"'))
		return -EINVAL;
	while (j->p < j->end && *j->p != '"') {
		if (*j->p == '\\') {
			if (++j->p >= j->end)
				return -EINVAL;
		} else if ((unsigned char)*j->p < 0x20) {
			return -EINVAL;
		}
		if (out && n + 1 < outlen)
			out[n++] = *j->p;
		j->p++;
	}
	if (j->p >= j->end)
		return -EINVAL;
	j->p++;
	if (out)
		out[n] = '\0';
	return 0;
}

static int vfio_user_json_u64(struct vfio_user_json *j, u64 *val)
{
	const char *start;
	u64 v = 0;

	vfio_user_json_ws(j);
	start = j->p;
	while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
		if (check_mul_overflow(v, 10ULL, &v) ||
		    check_add_overflow(v, (u64)(*j->p - '0'), &v))
			return -ERANGE;
		j->p++;
	}
	if (j->p == start)
		return -EINVAL;
	/* Fractions and exponents are not integers. */
	if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
		return -EINVAL;
	*val = v;
	return 0;
}

static int vfio_user_json_skip(struct vfio_user_json *j, int depth)
{
	char close;

	if (depth > VFIO_USER_JSON_MAX_DEPTH)
		return -E2BIG;
	vfio_user_json_ws(j);
	if (j->p >= j->end)
		return -EINVAL;
	switch (*j->p) {
	case '"':
		return vfio_user_json_string(j, NULL, 0);
	case '{':
	case '[':
		close = *j->p == '{' ? '}' : ']';
		j->p++;
		if (vfio_user_json_eat(j, close))
			return 0;
		do {
			if (close == '}') {
				if (vfio_user_json_string(j, NULL, 0) ||
				    !vfio_user_json_eat(j, ':'))
					return -EINVAL;
			}
			if (vfio_user_json_skip(j, depth + 1))
				return -EINVAL;
		} while (vfio_user_json_eat(j, ','));
		return vfio_user_json_eat(j, close) ? 0 : -EINVAL;
	default:
		/* numbers, true, false, null */
		if (!strchr("-0123456789tfn", *j->p))
			return -EINVAL;
		while (j->p < j->end && (isalnum(*j->p) || *j->p == '-' ||
					 *j->p == '+' || *j->p == '.'))
			j->p++;
		return 0;
	}
}

static int vfio_user_json_caps(struct vfio_user_json *j,
			       struct vfio_user_caps *caps)
{
	char key[32];
	u64 val;
	int ret;

	if (!vfio_user_json_eat(j, '{'))
		return -EINVAL;
	if (vfio_user_json_eat(j, '}'))
		return 0;
	do {
		if (vfio_user_json_string(j, key, sizeof(key)) ||
		    !vfio_user_json_eat(j, ':'))
			return -EINVAL;
		if (!strcmp(key, "max_msg_fds") ||
		    !strcmp(key, "max_data_xfer_size") ||
		    !strcmp(key, "max_dma_maps") || !strcmp(key, "pgsizes")) {
			ret = vfio_user_json_u64(j, &val);
			if (ret)
				return ret;
			if (!strcmp(key, "max_msg_fds"))
				caps->max_msg_fds = min_t(u64, val, 253);
			else if (!strcmp(key, "max_data_xfer_size"))
				caps->max_xfer = min_t(u64, val, U32_MAX);
			else if (!strcmp(key, "max_dma_maps"))
				caps->max_dma_maps = min_t(u64, val, U32_MAX);
			else
				caps->pgsizes = val;
		} else if (vfio_user_json_skip(j, 2)) {
			return -EINVAL;
		}
	} while (vfio_user_json_eat(j, ','));
	return vfio_user_json_eat(j, '}') ? 0 : -EINVAL;
}

static int vfio_user_parse_version_json(const char *s, size_t len,
					struct vfio_user_caps *caps)
{
	struct vfio_user_json j = { .p = s, .end = s + len };
	char key[32];
	int ret;

	if (!vfio_user_json_eat(&j, '{'))
		return -EINVAL;
	if (!vfio_user_json_eat(&j, '}')) {
		do {
			if (vfio_user_json_string(&j, key, sizeof(key)) ||
			    !vfio_user_json_eat(&j, ':'))
				return -EINVAL;
			if (!strcmp(key, "capabilities"))
				ret = vfio_user_json_caps(&j, caps);
			else
				ret = vfio_user_json_skip(&j, 1);
			if (ret)
				return ret;
		} while (vfio_user_json_eat(&j, ','));
		if (!vfio_user_json_eat(&j, '}'))
			return -EINVAL;
	}
	vfio_user_json_ws(&j);
	return j.p == j.end ? 0 : -EINVAL;
}

/* VERSION, before the receiver runs: send ours, read and check theirs. */
static int vfio_user_negotiate(struct vfio_user_conn *conn)
{
	struct device *dev = vfio_user_dev(conn->udev);
	struct vfio_user_version ver = {
		.major = cpu_to_le16(VFIO_USER_MAJOR),
		.minor = cpu_to_le16(VFIO_USER_MINOR),
	};
	struct vfio_user_version *rver;
	struct vfio_user_hdr hdr;
	unsigned long deadline;
	char json[160];
	int len, jlen, ret;
	u32 flags;

	jlen = scnprintf(json, sizeof(json),
			 "{\"capabilities\":{\"max_msg_fds\":0,\"max_data_xfer_size\":%u,\"pgsizes\":%lu}}",
			 conn->max_xfer, PAGE_SIZE) + 1;
	vfio_user_fill_hdr(&hdr, 0, VFIO_USER_VERSION,
			   sizeof(hdr) + sizeof(ver) + jlen,
			   VFIO_USER_F_TYPE_COMMAND, 0);
	ret = vfio_user_send_msg(conn, &hdr, &ver, sizeof(ver), json, jlen,
				 NULL, 0);
	if (ret)
		return ret;

	/* The whole reply within the timeout, however it trickles in. */
	deadline = jiffies + conn->timeout;
	len = vfio_user_recv_hdr(conn, &hdr,
				 sizeof(*rver) + VFIO_USER_MAX_VERSION_JSON,
				 deadline);
	if (len == -EAGAIN) {
		vfio_user_conn_broken(conn, "no VERSION reply within %u ms",
				      jiffies_to_msecs(conn->timeout));
		return -ETIMEDOUT;
	}
	if (len < 0)
		return len == -EPIPE ? -ECONNRESET : len;

	flags = le32_to_cpu(hdr.flags);
	if (le16_to_cpu(hdr.command) != VFIO_USER_VERSION || le16_to_cpu(hdr.msg_id) ||
	    (flags & VFIO_USER_F_TYPE_MASK) != VFIO_USER_F_TYPE_REPLY) {
		vfio_user_conn_broken(conn,
				      "expected VERSION reply, got command %u msg_id %u flags %#x",
				      le16_to_cpu(hdr.command),
				      le16_to_cpu(hdr.msg_id), flags);
		return -EPROTO;
	}
	if (flags & VFIO_USER_F_ERROR) {
		u32 err = le32_to_cpu(hdr.error_no);

		vfio_user_conn_broken(conn, "server refused VERSION (errno %u)",
				      err);
		return vfio_user_errno_ok(err) ? -(int)err : -EPROTO;
	}
	if (len < sizeof(*rver)) {
		vfio_user_conn_broken(conn, "VERSION reply of %d bytes", len);
		return -EPROTO;
	}

	rver = kmalloc(len + 1, GFP_KERNEL);
	if (!rver)
		return -ENOMEM;
	ret = __vfio_user_recv(conn, rver, len, deadline);
	if (ret == -EAGAIN) {
		vfio_user_conn_broken(conn, "no VERSION reply within %u ms",
				      jiffies_to_msecs(conn->timeout));
		ret = -ETIMEDOUT;
	}
	if (ret)
		goto out;

	if (le16_to_cpu(rver->major) != VFIO_USER_MAJOR) {
		dev_err(dev, "server speaks vfio-user %u.%u, we speak %u.x\n",
			le16_to_cpu(rver->major), le16_to_cpu(rver->minor),
			VFIO_USER_MAJOR);
		vfio_user_conn_broken(conn, "incompatible major version %u",
				      le16_to_cpu(rver->major));
		ret = -EPROTONOSUPPORT;
		goto out;
	}
	conn->caps.minor = min_t(u16, le16_to_cpu(rver->minor), VFIO_USER_MINOR);

	jlen = len - sizeof(*rver);
	if (jlen) {
		/* The JSON must end with its NUL, and have no other NUL. */
		if (rver->data[jlen - 1] != '\0' ||
		    strnlen(rver->data, jlen) != jlen - 1 ||
		    vfio_user_parse_version_json(rver->data, jlen - 1,
						 &conn->caps)) {
			vfio_user_conn_broken(conn,
					      "malformed VERSION capabilities (%d bytes)",
					      jlen);
			ret = -EPROTO;
			goto out;
		}
	}
	/* The smaller of what each side announced (the server's default: 1 MiB). */
	conn->caps.max_xfer = min(conn->caps.max_xfer, conn->max_xfer);
	if (conn->caps.max_xfer < VFIO_USER_MIN_XFER) {
		vfio_user_conn_broken(conn, "max_data_xfer_size %u is too small",
				      conn->caps.max_xfer);
		ret = -EPROTO;
	}
out:
	kfree(rver);
	return ret;
}

/**
 * vfio_user_conn_connect() - connect to a server and negotiate VERSION
 * @udev: the device
 * @path: the server's socket path, resolved in the caller's context
 * @timeout_ms: bound on every wait for the server
 *
 * Context: process context of the sysfs writer; sleeps, at most
 * @timeout_ms for the connect and again for the VERSION reply.
 * Return: a connection whose receiver is not yet running, or an ERR_PTR:
 * -ENOENT/-ECONNREFUSED/-ENOTSOCK... from connect, -ETIMEDOUT,
 * -EPROTONOSUPPORT (major version), -EPROTO (malformed reply).
 */
struct vfio_user_conn *vfio_user_conn_connect(struct vfio_user_device *udev,
					      const char *path,
					      unsigned int timeout_ms)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct vfio_user_conn *conn;
	size_t plen = strlen(path);
	int ret;

	if (!plen || plen >= sizeof(addr.sun_path))
		return ERR_PTR(-EINVAL);
	memcpy(addr.sun_path, path, plen);

	conn = kzalloc(sizeof(*conn), GFP_KERNEL);
	if (!conn)
		return ERR_PTR(-ENOMEM);
	conn->udev = udev;
	conn->timeout = msecs_to_jiffies(timeout_ms);
	conn->caps.max_msg_fds = VFIO_USER_DEF_MAX_MSG_FDS;
	conn->max_xfer = READ_ONCE(vfio_user_max_xfer);	/* what we announce */
	conn->caps.max_xfer = VFIO_USER_DEF_MAX_XFER_SIZE;
	conn->caps.max_dma_maps = VFIO_USER_DEF_MAX_DMA_MAPS;
	conn->caps.pgsizes = PAGE_SIZE;
	spin_lock_init(&conn->lock);
	idr_init(&conn->reqs);
	INIT_LIST_HEAD(&conn->cmds);
	mutex_init(&conn->send_mutex);
	INIT_WORK(&conn->cmd_work, vfio_user_cmd_work);
	INIT_WORK(&conn->recv_work, vfio_user_recv_work);
	mutex_init(&conn->recv_mutex);
	init_waitqueue_head(&conn->rx_wait);

	ret = sock_create_kern(&init_net, AF_UNIX, SOCK_STREAM, 0, &conn->sock);
	if (ret)
		goto err_free;
	conn->sock->sk->sk_sndtimeo = conn->timeout;
	conn->sock->sk->sk_rcvtimeo = conn->timeout;

	ret = vfio_user_kernel_connect(conn->sock, &addr,
				       offsetof(struct sockaddr_un, sun_path) + plen);
	if (ret) {
		dev_err(vfio_user_dev(udev), "cannot connect to %s: %d\n", path,
			ret);
		goto err_sock;
	}

	ret = vfio_user_negotiate(conn);
	if (ret) {
		dev_err(vfio_user_dev(udev), "VERSION negotiation with %s failed: %d\n",
			path, ret);
		goto err_sock;
	}
	/* Replies carry at most max_xfer bytes of data after a region header. */
	conn->max_payload = max_t(size_t, conn->caps.max_xfer +
				  sizeof(struct vfio_user_dma_access),
				  VFIO_USER_MAX_REGION_INFO);
	/* Negotiation shortened it: it bounds the wait for the rest of a message. */
	WRITE_ONCE(conn->sock->sk->sk_rcvtimeo, conn->timeout);
	return conn;

err_sock:
	sock_release(conn->sock);
err_free:
	idr_destroy(&conn->reqs);
	kfree(conn);
	return ERR_PTR(ret);
}

/**
 * vfio_user_conn_start() - start receiving on a negotiated connection
 * @conn: the connection from vfio_user_conn_connect()
 *
 * Installs the socket callbacks that wake waiting consumers or queue
 * recv_work, and reads anything that came before them.
 *
 * Context: process context.
 */
void vfio_user_conn_start(struct vfio_user_conn *conn)
{
	struct sock *sk = conn->sock->sk;

	write_lock_bh(&sk->sk_callback_lock);
	conn->saved_data_ready = sk->sk_data_ready;
	conn->saved_state_change = sk->sk_state_change;
	sk->sk_user_data = conn;
	sk->sk_data_ready = vfio_user_data_ready;
	sk->sk_state_change = vfio_user_state_change;
	write_unlock_bh(&sk->sk_callback_lock);
	queue_work(vfio_user_wq, &conn->recv_work);
}

/**
 * vfio_user_conn_stop() - tear a connection down and free it
 * @conn: the connection, no longer published in the device
 *
 * Breaks the connection if it is not yet broken, takes the socket
 * callbacks back, cancels the receive and DMA work, drops queued server commands and releases the
 * socket. Never waits on the server: the socket is shut down first.
 *
 * Context: process context; sleeps until the receive and DMA work have
 * finished (the DMA work may be in vfio_dma_rw()).
 */
void vfio_user_conn_stop(struct vfio_user_conn *conn)
{
	struct vfio_user_cmd *cmd, *tmp;

	struct sock *sk = conn->sock->sk;

	vfio_user_conn_close(conn, "detached");
	write_lock_bh(&sk->sk_callback_lock);
	if (sk->sk_user_data == conn) {
		sk->sk_user_data = NULL;
		sk->sk_data_ready = conn->saved_data_ready;
		sk->sk_state_change = conn->saved_state_change;
	}
	write_unlock_bh(&sk->sk_callback_lock);
	cancel_work_sync(&conn->recv_work);
	cancel_work_sync(&conn->cmd_work);
	list_for_each_entry_safe(cmd, tmp, &conn->cmds, node) {
		list_del(&cmd->node);
		vfio_user_cmd_free(cmd);
	}
	sock_release(conn->sock);
	WARN_ON_ONCE(!idr_is_empty(&conn->reqs));
	idr_destroy(&conn->reqs);
	mutex_destroy(&conn->recv_mutex);
	mutex_destroy(&conn->send_mutex);
	kfree(conn);
}
