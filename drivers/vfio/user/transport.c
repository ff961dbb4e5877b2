// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio_user_mdev - the connection to a vfio-user server.
 *
 * One AF_UNIX stream socket per attached device, and the socket I/O is the
 * connection's, never a caller's: every send and every receive is
 * non-blocking and resumable, so no signal, ptrace stop or slow server can
 * cut a message in two, and whoever happens to run the I/O may leave at
 * any point without tearing the stream.
 *
 * Sending (model: nvme-tcp's io_work). A request is queued on tx_list; its
 * submitter sends inline if it gets send_mutex with a trylock, otherwise
 * send_work does. A send that fills the socket stops where it is (tx_off)
 * and the socket's write_space callback queues send_work to go on, so a
 * request finishes going out even when its submitter has left. Fds travel
 * with SCM_RIGHTS as numbers in the sender's fd table, so a request with
 * fds is started by its submitter only; the rest of it may go from
 * anywhere.
 *
 * Receiving. One reader at a time (recv_mutex) reads what the socket holds
 * into a resumable state (header, then payload straight into the request's
 * reply buffer or the server command's pages) and stops when the socket is
 * empty. A consumer waiting for a reply reads inline (no hop through a
 * worker); data that comes while nobody waits queues recv_work. Waiters
 * sleep on their own request and are woken by its completion; when data
 * comes, one waiter (an exclusive wakeup) is woken to read it.
 *
 * Waits. Every request has a deadline, timeout_ms after it was queued (and
 * never past the end of an attach); its waiter sleeps killably until then,
 * pushed back only while the server keeps sending DMA commands (a server
 * at work, up to 600 s; replies to others never push it). A timeout breaks
 * the connection. A fatal signal ends the wait: a request not yet started
 * is taken back, one already on its way is finished by the connection and
 * its reply dropped when it comes. Messages nothing answers (posted
 * writes, our replies to the server's commands) wait the same way, for
 * the wire.
 *
 * Nothing from the socket is trusted: every header and length is checked
 * before use; a violation, a timeout or a closed socket kills the
 * connection once (vfio_user_conn_broken()), which fails every request in
 * flight and every later one with -EIO until a re-attach.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bvec.h>
#include <linux/fdtable.h>
#include <linux/file.h>
#include <linux/mman.h>
#include <linux/mm.h>
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
#include "trace.h"

/* Longest error payload we read and drop. */
#define VFIO_USER_MAX_ERROR_PAYLOAD	4096
/* Header flags the spec defines: type, no_reply, error. */
#define VFIO_USER_F_KNOWN		(VFIO_USER_F_TYPE_MASK | \
					 VFIO_USER_F_NO_REPLY | \
					 VFIO_USER_F_ERROR)

/*
 * A server's errno must be a user-visible one: 1..511. From ERESTARTSYS
 * (512) on they are kernel-internal; returned from a syscall they restart
 * it or leak a meaningless number.
 */
static bool vfio_user_errno_ok(u32 err)
{
	return err && err < ERESTARTSYS;
}

/*
 * Requests
 */

/**
 * vfio_user_req_alloc() - a request for one command
 * @call: the command; its payload and data (if given) are copied, room
 *	for @call->reply_max bytes of reply is kept
 *
 * Context: process context; sleeps.
 * Return: the request with one reference (the caller's), or NULL.
 */
struct vfio_user_req *vfio_user_req_alloc(const struct vfio_user_call *call)
{
	size_t blen = call->len + call->data_len;
	struct vfio_user_req *req;

	req = kzalloc(sizeof(*req), GFP_KERNEL);
	if (!req)
		return NULL;
	kref_init(&req->ref);
	INIT_LIST_HEAD(&req->tx_node);
	req->command = call->command;
	req->status = -EIO;
	req->len = call->len;
	req->data_len = call->data_len;
	req->buf = blen <= sizeof(req->small_tx) ? req->small_tx :
		   kvmalloc(blen, GFP_KERNEL);
	req->reply = call->reply_max <= sizeof(req->small_rx) ? req->small_rx :
		     kvmalloc(call->reply_max, GFP_KERNEL);
	if (!req->buf || !req->reply) {
		vfio_user_req_put(req);
		return NULL;
	}
	if (call->payload)
		memcpy(req->buf, call->payload, call->len);
	if (call->data)
		memcpy(req->buf + call->len, call->data, call->data_len);
	req->fds = call->fds;
	req->nr_fds = call->nr_fds;
	req->reply_min = call->reply_min;
	req->reply_max = call->reply_max;
	req->tx_len = sizeof(req->hdr) + blen;
	if (call->rx_max_files) {
		req->rx_files = kcalloc(call->rx_max_files,
					sizeof(*req->rx_files), GFP_KERNEL);
		if (!req->rx_files) {
			vfio_user_req_put(req);
			return NULL;
		}
		req->rx_max_files = call->rx_max_files;
	}
	return req;
}

/**
 * vfio_user_req_data() - where the caller fills a request's data
 * @req: a request allocated with @call->data NULL and @call->data_len set
 *
 * Return: the @call->data_len bytes after the payload.
 */
void *vfio_user_req_data(struct vfio_user_req *req)
{
	return req->buf + req->len;
}

/* Drops @n received files. */
static void vfio_user_put_files(struct file **files, unsigned int n)
{
	unsigned int i;

	for (i = 0; i < n; i++)
		if (files[i])
			fput(files[i]);
}

static void vfio_user_req_release(struct kref *ref)
{
	struct vfio_user_req *req = container_of(ref, struct vfio_user_req, ref);

	if (req->rx_files) {
		vfio_user_put_files(req->rx_files, req->rx_max_files);
		kfree(req->rx_files);
	}
	if (req->buf && req->buf != req->small_tx)
		kvfree(req->buf);
	if (req->reply && req->reply != req->small_rx)
		kvfree(req->reply);
	vfio_user_dma_pages_free(req->tx_pages_owner);
	kfree(req);
}

/**
 * vfio_user_req_put() - drop a reference to a request
 * @req: the request
 *
 * Context: any process context.
 */
void vfio_user_req_put(struct vfio_user_req *req)
{
	kref_put(&req->ref, vfio_user_req_release);
}

/*
 * Completes @req once with @status; its waiter, if still there, wakes up.
 * The caller has taken it out of the table and drops the table's reference
 * after the unlock.
 */
static void vfio_user_req_finish(struct vfio_user_conn *conn,
				 struct vfio_user_req *req, int status)
{
	lockdep_assert_held(&conn->lock);

	req->status = status;
	/* Pairs with vfio_user_req_done(): status and reply before done. */
	smp_store_release(&req->done, true);
	if (req->task)
		wake_up_process(req->task);
}

/* Whether @req is complete; its status and reply are then valid. */
static bool vfio_user_req_done(struct vfio_user_req *req)
{
	/* Pairs with vfio_user_req_finish(). */
	return smp_load_acquire(&req->done);
}

/**
 * vfio_user_conn_queue() - queue one of a connection's work items
 * @conn: the connection
 * @work: its send_work, recv_work or cmd_work
 *
 * Nothing is queued once vfio_user_conn_stop() has begun: it cancels each
 * work item once, and the memory may go right after. (The socket
 * callbacks queue directly: stop takes them back before it cancels.)
 *
 * Context: process context; takes conn->lock.
 */
void vfio_user_conn_queue(struct vfio_user_conn *conn, struct work_struct *work)
{
	spin_lock(&conn->lock);
	if (!conn->stopped)
		queue_work(vfio_user_wq, work);
	spin_unlock(&conn->lock);
}

/*
 * The broken transition
 */

/*
 * The one way a connection dies: requests in flight fail with @err, -EIO
 * or, when the receiver found the server violating the protocol, -EPROTO.
 */
static __printf(3, 0)
void __vfio_user_conn_broken(struct vfio_user_conn *conn, int err,
			     const char *fmt, va_list args)
{
	struct vfio_user_req *req, *put[16];
	struct vfio_user_conn *twin;
	unsigned long id;
	unsigned int n;
	bool stopping;

	spin_lock(&conn->lock);
	if (conn->dead) {
		spin_unlock(&conn->lock);
		return;
	}
	conn->dead = true;
	stopping = conn->stopping;
	twin = conn->twin;
	vsnprintf(conn->reason, sizeof(conn->reason), fmt, args);
	spin_unlock(&conn->lock);

	/* A twin's end is its main connection's, which tells why. */
	if (!conn->main && !stopping) {
		trace_vfio_user_state(vfio_user_dev(conn->udev), "broken",
				      conn->reason);
		this_cpu_inc(conn->udev->stats->broken);
	}
	if (conn->main)
		dev_dbg(vfio_user_dev(conn->udev), "twin socket closed: %s\n",
			conn->reason);
	else if (stopping)
		dev_dbg(vfio_user_dev(conn->udev), "connection closed: %s\n",
			conn->reason);
	else
		dev_err(vfio_user_dev(conn->udev),
			"connection to server broken: %s\n", conn->reason);

	/* dead is set: nothing enters the table any more. */
	do {
		n = 0;
		spin_lock(&conn->lock);
		xa_for_each(&conn->reqs, id, req) {
			xa_erase(&conn->reqs, id);
			vfio_user_req_finish(conn, req, err);
			put[n++] = req;
			if (n == ARRAY_SIZE(put))
				break;
		}
		spin_unlock(&conn->lock);
		while (n)
			vfio_user_req_put(put[--n]);	/* the table's */
	} while (!xa_empty(&conn->reqs));

	kernel_sock_shutdown(conn->sock, SHUT_RDWR);
	wake_up_all(&conn->tx_wait);
	wake_up_all(&conn->rx_wait);
	/* One socket gone, the other goes too. */
	if (twin && stopping)
		vfio_user_conn_close(twin, conn->reason);
	else if (twin)
		vfio_user_conn_broken(twin, "%s", conn->reason);
	if (conn->main && !stopping)
		vfio_user_conn_broken(conn->main, "twin socket: %s",
				      conn->reason);
	/* A dead server's DMA window pins nothing any more. */
	queue_work(vfio_user_wq, &conn->udev->window_work);
}

/**
 * vfio_user_conn_broken() - kill a connection, once
 * @conn: the connection
 * @fmt: printf format of the reason, shown in sysfs state and logged
 *
 * Idempotent: the first call records the reason, logs it (at debug level
 * when the end is deliberate: detach, remove), completes every request
 * awaiting a reply with -EIO, shuts the socket down and wakes everyone
 * who waits on it. Later consumer calls fail at once. The sleeping
 * teardown is left to vfio_user_conn_stop().
 *
 * Context: process context; takes conn->lock.
 */
void vfio_user_conn_broken(struct vfio_user_conn *conn, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	__vfio_user_conn_broken(conn, -EIO, fmt, args);
	va_end(args);
}

/**
 * vfio_user_conn_close() - end a connection on purpose
 * @conn: the connection
 * @reason: shown in sysfs state, logged at debug level
 *
 * vfio_user_conn_broken() for a deliberate end (detach, remove, an
 * aborted attach).
 *
 * Context: process context; takes conn->lock.
 */
void vfio_user_conn_close(struct vfio_user_conn *conn, const char *reason)
{
	spin_lock(&conn->lock);
	conn->stopping = true;
	spin_unlock(&conn->lock);
	vfio_user_conn_broken(conn, "%s", reason);
}

/* The receiver found a violation: requests in flight fail with -EPROTO. */
static __printf(2, 3)
void vfio_user_rx_violation(struct vfio_user_conn *conn, const char *fmt, ...)
{
	va_list args;

	this_cpu_inc(conn->udev->stats->violations);
	va_start(args, fmt);
	__vfio_user_conn_broken(conn, -EPROTO, fmt, args);
	va_end(args);
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
 * Sending
 */

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
 * Sends what the socket takes of @req from tx_off on, never blocking.
 * Fds go with the first byte. Returns 0 when all of it is out, -EAGAIN
 * when the socket is full, or another -errno.
 */
static int vfio_user_tx_req(struct vfio_user_conn *conn,
			    struct vfio_user_req *req)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL };
	u8 cbuf[CMSG_SPACE(sizeof(int) * VFIO_USER_MAX_MSG_FDS)] __aligned(8);
	struct kvec iov[2];
	int ret;

	lockdep_assert_held(&conn->send_mutex);

	if (req->tx_pages) {
		iov_iter_bvec(&msg.msg_iter, ITER_SOURCE, req->tx_pages,
			      req->nr_pages, req->tx_len);
		/* The socket takes the pages by reference (6.5 on). */
		if (req->tx_len >= PAGE_SIZE)
			msg.msg_flags |= VFIO_USER_MSG_SPLICE;
	} else {
		iov[0].iov_base = &req->hdr;
		iov[0].iov_len = sizeof(req->hdr);
		iov[1].iov_base = req->buf;
		iov[1].iov_len = req->len + req->data_len;
		iov_iter_kvec(&msg.msg_iter, ITER_SOURCE, iov, 2, req->tx_len);
	}
	iov_iter_advance(&msg.msg_iter, req->tx_off);

	if (req->nr_fds && !req->tx_off) {
		struct cmsghdr *cmsg;

		memset(cbuf, 0, sizeof(cbuf));
		msg.msg_control = cbuf;
		msg.msg_controllen = CMSG_SPACE(req->nr_fds * sizeof(int));
		cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(req->nr_fds * sizeof(int));
		memcpy(CMSG_DATA(cmsg), req->fds, req->nr_fds * sizeof(int));
	}

	while (msg_data_left(&msg)) {
		ret = sock_sendmsg(conn->sock, &msg);
		if (ret <= 0)
			return ret ? ret : -EPIPE;
		WRITE_ONCE(req->tx_off, req->tx_off + ret);
		/* Control data goes with the first bytes only. */
		msg.msg_control = NULL;
		msg.msg_controllen = 0;
	}
	return 0;
}

/* Takes @req off tx_list once sent (or dropped); conn->lock held. */
static void vfio_user_tx_done(struct vfio_user_conn *conn,
			      struct vfio_user_req *req)
{
	lockdep_assert_held(&conn->lock);

	list_del_init(&req->tx_node);
	req->tx_state = VFIO_USER_TX_SENT;
}

/* Drops what is left to send on a dead connection. */
static void vfio_user_tx_drop(struct vfio_user_conn *conn)
{
	struct vfio_user_req *req;
	LIST_HEAD(drop);

	spin_lock(&conn->lock);
	list_for_each_entry(req, &conn->tx_list, tx_node)
		req->tx_state = VFIO_USER_TX_SENT;
	list_splice_init(&conn->tx_list, &drop);
	spin_unlock(&conn->lock);
	while (!list_empty(&drop)) {
		req = list_first_entry(&drop, struct vfio_user_req, tx_node);
		list_del_init(&req->tx_node);
		vfio_user_req_put(req);		/* the list's */
	}
	wake_up_all(&conn->tx_wait);
}

/*
 * The socket refused @req's fds before a byte went out (a consumer closed
 * them): the stream is intact, the request fails with @err.
 */
static void vfio_user_tx_refused(struct vfio_user_conn *conn,
				 struct vfio_user_req *req, int err)
{
	bool untabled;

	spin_lock(&conn->lock);
	vfio_user_tx_done(conn, req);
	untabled = xa_load(&conn->reqs, req->msg_id) == req;
	if (untabled) {
		xa_erase(&conn->reqs, req->msg_id);
		vfio_user_req_finish(conn, req, err);
	}
	spin_unlock(&conn->lock);
	if (untabled)
		vfio_user_req_put(req);		/* the table's */
	vfio_user_req_put(req);			/* the list's */
}

/* Whether the socket has taken back half of its send buffer. */
static bool vfio_user_tx_room(struct vfio_user_conn *conn)
{
	struct sock *sk = conn->sock->sk;

	return sk_wmem_alloc_get(sk) < READ_ONCE(sk->sk_sndbuf) / 2;
}

/*
 * The socket is full: write_space goes on with send_work once the server
 * has read some. Its room is looked at again after the flag is set, so a
 * read in between is not missed.
 */
static void vfio_user_tx_blocked(struct vfio_user_conn *conn)
{
	WRITE_ONCE(conn->tx_blocked, true);
	smp_mb();	/* the flag before the room; write_space: the reverse */
	if (vfio_user_tx_room(conn))
		vfio_user_conn_queue(conn, &conn->send_work);
}

/*
 * Sends what it can of tx_list, in order, never blocking. Returns 0 when
 * the list is empty, -EAGAIN when the socket is full or the next request
 * carries fds only its submitter can send, -EIO when the connection is
 * dead (the list is dropped then).
 */
static int vfio_user_tx_some(struct vfio_user_conn *conn)
{
	struct vfio_user_req *req;
	bool wake;
	int ret;

	lockdep_assert_held(&conn->send_mutex);

	WRITE_ONCE(conn->tx_blocked, false);
	for (;;) {
		spin_lock(&conn->lock);
		if (conn->dead) {
			spin_unlock(&conn->lock);
			vfio_user_tx_drop(conn);
			return -EIO;
		}
		req = list_first_entry_or_null(&conn->tx_list,
					       struct vfio_user_req, tx_node);
		if (!req) {
			spin_unlock(&conn->lock);
			return 0;
		}
		if (req->nr_fds && !req->tx_off && req->task != current) {
			/* Its fds are numbers in its submitter's table. */
			spin_unlock(&conn->lock);
			wake_up_all(&conn->tx_wait);
			return -EAGAIN;
		}
		/* From here on the connection finishes it. */
		req->tx_state = VFIO_USER_TX_SENDING;
		spin_unlock(&conn->lock);

		ret = vfio_user_tx_req(conn, req);
		if (ret == -EAGAIN) {
			/* Nothing of it out yet: a waiter may still take it back. */
			spin_lock(&conn->lock);
			if (!req->tx_off)
				req->tx_state = VFIO_USER_TX_QUEUED;
			spin_unlock(&conn->lock);
			vfio_user_tx_blocked(conn);
			return ret;
		}
		if (ret) {
			/* Fds the socket refused: nothing went out. */
			if (!req->tx_off && req->nr_fds &&
			    ret != -EPIPE && ret != -ECONNRESET) {
				vfio_user_tx_refused(conn, req, ret);
				continue;
			}
			vfio_user_conn_broken(conn, "send of command %u failed (%d)",
					      req->command, ret);
			continue;
		}
		spin_lock(&conn->lock);
		vfio_user_tx_done(conn, req);
		wake = req->no_reply;
		spin_unlock(&conn->lock);
		vfio_user_req_put(req);		/* the list's */
		if (wake)
			wake_up_all(&conn->tx_wait);
	}
}

static void vfio_user_send_work(struct work_struct *work)
{
	struct vfio_user_conn *conn = container_of(work, struct vfio_user_conn,
						   send_work);

	mutex_lock(&conn->send_mutex);
	vfio_user_tx_some(conn);
	mutex_unlock(&conn->send_mutex);
}

/* Sends inline if nobody else is sending, else leaves it to send_work. */
static void vfio_user_tx_kick(struct vfio_user_conn *conn)
{
	if (mutex_trylock(&conn->send_mutex)) {
		vfio_user_tx_some(conn);
		mutex_unlock(&conn->send_mutex);
		return;
	}
	/* The holder may have looked at the list before we joined it. */
	vfio_user_conn_queue(conn, &conn->send_work);
}

/*
 * Whether a request with fds is on its way: its first bytes (with the fds)
 * are out, so anyone may send the rest. Its submitter alone sends those.
 */
static bool vfio_user_tx_started(struct vfio_user_req *req)
{
	return READ_ONCE(req->tx_off) ||
	       READ_ONCE(req->tx_state) == VFIO_USER_TX_SENT;
}

/* Whether a blocked submitter of fds should look again. */
static bool vfio_user_tx_ready(struct vfio_user_conn *conn,
			       struct vfio_user_req *req)
{
	bool first;

	if (READ_ONCE(conn->dead) || vfio_user_tx_started(req))
		return true;
	spin_lock(&conn->lock);
	first = list_first_entry_or_null(&conn->tx_list, struct vfio_user_req,
					 tx_node) == req;
	spin_unlock(&conn->lock);
	return first && vfio_user_tx_room(conn);
}

/*
 * Starts a request that carries fds, in its submitter's context: sends
 * whatever is queued before it, then its first bytes with the fds. Waits
 * killably, until its deadline, while the socket is full.
 */
static int vfio_user_tx_start_fds(struct vfio_user_conn *conn,
				  struct vfio_user_req *req)
{
	long left;
	int ret;

	for (;;) {
		if (mutex_lock_killable(&conn->send_mutex))
			return -EINTR;
		ret = vfio_user_tx_some(conn);
		mutex_unlock(&conn->send_mutex);
		if (vfio_user_tx_started(req)) {
			if (ret == -EAGAIN)
				vfio_user_conn_queue(conn, &conn->send_work);
			return 0;
		}
		if (ret == -EIO || READ_ONCE(conn->dead))
			return -EIO;
		left = (long)(req->deadline - jiffies);
		if (left <= 0)
			return -ETIMEDOUT;
		left = wait_event_killable_timeout(conn->tx_wait,
						   vfio_user_tx_ready(conn, req),
						   left);
		if (left < 0)
			return -EINTR;
	}
}

/*
 * Receiving
 */

/* Whether the socket has something for a reader: data, EOF or an error. */
static bool vfio_user_rx_pending(struct vfio_user_conn *conn)
{
	struct sock *sk = conn->sock->sk;

	return (!skb_queue_empty_lockless(&sk->sk_receive_queue) ||
		(READ_ONCE(sk->sk_shutdown) & RCV_SHUTDOWN) ||
		READ_ONCE(sk->sk_err)) && !vfio_user_cmds_full(conn);
}

/*
 * Room for VFIO_USER_MAX_RX_FDS fds in one control message, and for what a
 * socket passed by fd may add before them (credentials, a pidfd).
 */
#define VFIO_USER_FD_BUF_LEN	(CMSG_SPACE(VFIO_USER_MAX_RX_FDS * sizeof(int)) + 128)

/* Takes the fds of one SCM_RIGHTS message (@n numbers at @fds). */
static bool vfio_user_rx_take_rights(struct vfio_user_conn *conn,
				     const int *fds, unsigned int n)
{
	bool all = true;
	unsigned int i;

	for (i = 0; i < n; i++) {
		struct file *file = fget(fds[i]);

		close_fd(fds[i]);
		if (!file)
			continue;
		if (conn->rx_nr_files < ARRAY_SIZE(conn->rx_files)) {
			conn->rx_files[conn->rx_nr_files++] = file;
		} else {
			fput(file);
			all = false;
		}
	}
	return all;
}

/*
 * The fds the core installed in fd_task's table while it read: taken as
 * files, their numbers closed at once; so is a pidfd (SO_PASSPIDFD on a
 * socket passed by fd). Counts beyond what a message may carry are a
 * violation (the core closed what did not fit the buffer).
 */
static int vfio_user_rx_take_fds(struct vfio_user_conn *conn, size_t used,
				 bool truncated)
{
	u8 buf[VFIO_USER_FD_BUF_LEN] __aligned(sizeof(size_t));
	size_t off = 0;

	if (used > sizeof(buf) || copy_from_user(buf, conn->fd_buf, used))
		return -EFAULT;
	while (used - off >= sizeof(struct cmsghdr)) {
		struct cmsghdr *cm = (void *)(buf + off);
		size_t len = cm->cmsg_len;
		int *data = (int *)CMSG_DATA(cm);

		if (len < CMSG_LEN(0) || len > used - off)
			break;
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
			truncated |= !vfio_user_rx_take_rights(conn, data,
					(len - CMSG_LEN(0)) / sizeof(int));
		else if (cm->cmsg_level == SOL_SOCKET &&
			 cm->cmsg_type == VFIO_USER_SCM_PIDFD &&
			 len >= CMSG_LEN(sizeof(int)))
			close_fd(*data);
		off += CMSG_ALIGN(len);
	}
	if (truncated) {
		vfio_user_rx_violation(conn,
				       "message msg_id %u command %u carries more than %u fds",
				       le16_to_cpu(conn->rx_hdr.msg_id),
				       le16_to_cpu(conn->rx_hdr.command),
				       VFIO_USER_MAX_RX_FDS);
		return -EPROTO;
	}
	return 0;
}

/* Drops the files received with the current message. */
static void vfio_user_rx_drop_files(struct vfio_user_conn *conn)
{
	if (conn->rx_nr_files)
		dev_dbg_ratelimited(vfio_user_dev(conn->udev),
				    "dropped %u fds the server sent with command %u\n",
				    conn->rx_nr_files,
				    le16_to_cpu(conn->rx_hdr.command));
	vfio_user_put_files(conn->rx_files, conn->rx_nr_files);
	conn->rx_nr_files = 0;
}

/*
 * One non-blocking read into @iter; 0 bytes means the server closed.
 * Only fd_task, while it is set, takes the fds a message carries (see
 * vfio_user_conn_fds_begin()); for anyone else the core drops them.
 */
static int vfio_user_rx_bytes(struct vfio_user_conn *conn,
			      struct iov_iter *iter)
{
	bool fds = READ_ONCE(conn->fd_task) == current;
	/* (the core takes O_CLOEXEC from msg_flags, as recvmsg(2) sets it) */
	struct msghdr msg = {
		.msg_iter = *iter,
		.msg_flags = fds ? MSG_CMSG_CLOEXEC : 0,
	};
	int ret, err;

	if (fds) {
		msg.msg_control_user = conn->fd_buf;
		msg.msg_control_is_user = true;
		msg.msg_controllen = VFIO_USER_FD_BUF_LEN;
	}
	ret = sock_recvmsg(conn->sock, &msg, MSG_DONTWAIT);
	if (fds && (msg.msg_controllen != VFIO_USER_FD_BUF_LEN ||
		    (msg.msg_flags & MSG_CTRUNC))) {
		err = vfio_user_rx_take_fds(conn, VFIO_USER_FD_BUF_LEN -
					    msg.msg_controllen,
					    msg.msg_flags & MSG_CTRUNC);
		if (err == -EFAULT)
			vfio_user_conn_broken(conn,
					      "cannot read the fds the server sent");
		if (err)
			return err;
	} else if (msg.msg_flags & MSG_CTRUNC) {
		dev_dbg_ratelimited(vfio_user_dev(conn->udev),
				    "dropped fds the server sent\n");
	}
	if (!ret)
		return -EPIPE;
	return ret;
}

/* A reply's header: find its request and check it against what it asked. */
static int vfio_user_rx_start_reply(struct vfio_user_conn *conn, u16 msg_id,
				    u16 command, u32 flags, size_t len)
{
	struct vfio_user_req *req;
	bool queued;
	u16 sent;

	lockdep_assert_held(&conn->recv_mutex);

	spin_lock(&conn->lock);
	req = xa_load(&conn->reqs, msg_id);
	sent = req ? req->command : 0;
	/* No sender has picked it up yet: no byte of it is out. */
	queued = req && req->tx_state == VFIO_USER_TX_QUEUED;
	/* The table keeps it; the receiver's own reference for the payload. */
	if (req && sent == command)
		kref_get(&req->ref);
	spin_unlock(&conn->lock);

	if (!req) {
		vfio_user_rx_violation(conn,
				       "reply with unknown msg_id %u (command %u)",
				       msg_id, command);
		return -EPROTO;
	}
	if (sent != command) {
		vfio_user_rx_violation(conn,
				       "reply to msg_id %u is for command %u, sent %u",
				       msg_id, command, sent);
		return -EPROTO;
	}
	conn->rx_req = req;
	if (queued) {
		vfio_user_rx_violation(conn,
				       "reply to msg_id %u (command %u) before it was sent",
				       msg_id, command);
		return -EPROTO;
	}

	if (flags & VFIO_USER_F_ERROR) {
		u32 err = le32_to_cpu(conn->rx_hdr.error_no);

		if (!vfio_user_errno_ok(err) ||
		    len > VFIO_USER_MAX_ERROR_PAYLOAD) {
			vfio_user_rx_violation(conn,
					       "error reply to msg_id %u (command %u) with errno %u, %zu bytes",
					       msg_id, command, err, len);
			return -EPROTO;
		}
		conn->rx_state = VFIO_USER_RX_DISCARD;
		return 0;
	}
	if (len < req->reply_min || len > req->reply_max) {
		vfio_user_rx_violation(conn,
				       "reply to msg_id %u (command %u) has %zu bytes, expected %zu..%zu",
				       msg_id, command, len, req->reply_min,
				       req->reply_max);
		return -EPROTO;
	}
	conn->rx_state = VFIO_USER_RX_REPLY;
	return 0;
}

/* A header is complete: check it and decide where its payload goes. */
static int vfio_user_rx_start(struct vfio_user_conn *conn)
{
	const struct vfio_user_hdr *hdr = &conn->rx_hdr;
	u16 msg_id = le16_to_cpu(hdr->msg_id);
	u16 command = le16_to_cpu(hdr->command);
	u32 size = le32_to_cpu(hdr->size);
	u32 flags = le32_to_cpu(hdr->flags);
	struct vfio_user_cmd *cmd;
	size_t len;

	lockdep_assert_held(&conn->recv_mutex);

	if (size < sizeof(*hdr) || size - sizeof(*hdr) > conn->max_payload) {
		vfio_user_rx_violation(conn,
				       "message msg_id %u command %u has size %u, allowed 16..%zu",
				       msg_id, command, size,
				       conn->max_payload + sizeof(*hdr));
		return -EPROTO;
	}
	if ((flags & VFIO_USER_F_TYPE_MASK) > VFIO_USER_F_TYPE_REPLY) {
		vfio_user_rx_violation(conn,
				       "message msg_id %u command %u has type %u",
				       msg_id, command,
				       flags & VFIO_USER_F_TYPE_MASK);
		return -EPROTO;
	}
	if (flags & ~VFIO_USER_F_KNOWN) {
		vfio_user_rx_violation(conn,
				       "message msg_id %u command %u has flags %#x (reserved bits)",
				       msg_id, command, flags);
		return -EPROTO;
	}
	if (!READ_ONCE(conn->versioned) &&
	    ((flags & VFIO_USER_F_TYPE_MASK) != VFIO_USER_F_TYPE_REPLY ||
	     command != VFIO_USER_VERSION || msg_id)) {
		vfio_user_rx_violation(conn,
				       "expected VERSION reply, got command %u msg_id %u flags %#x",
				       command, msg_id, flags);
		return -EPROTO;
	}
	len = size - sizeof(*hdr);
	conn->rx_len = len;
	conn->rx_got = 0;

	if ((flags & VFIO_USER_F_TYPE_MASK) == VFIO_USER_F_TYPE_REPLY)
		return vfio_user_rx_start_reply(conn, msg_id, command, flags,
						len);
	cmd = vfio_user_cmd_alloc(conn, hdr, len);
	if (IS_ERR(cmd))
		return PTR_ERR(cmd);
	conn->rx_cmd = cmd;
	conn->rx_state = VFIO_USER_RX_CMD;
	return 0;
}

/* A message is complete: hand it on. */
static void vfio_user_rx_finish(struct vfio_user_conn *conn)
{
	struct vfio_user_req *req = conn->rx_req;

	lockdep_assert_held(&conn->recv_mutex);

	conn->rx_state = VFIO_USER_RX_HDR;
	conn->rx_got = 0;
	if (conn->rx_cmd) {
		trace_vfio_user_recv(vfio_user_dev(conn->udev),
				     conn->rx_cmd->msg_id, conn->rx_cmd->command,
				     sizeof(conn->rx_hdr) + conn->rx_len,
				     le32_to_cpu(conn->rx_hdr.flags), 0, 0);
		vfio_user_stat_msg(conn->udev, false, conn->rx_cmd->command,
				   sizeof(conn->rx_hdr) + conn->rx_len);
		vfio_user_rx_drop_files(conn);
		WRITE_ONCE(conn->last_cmd, jiffies);
		/* The server is working: its main socket's requests wait on. */
		if (conn->main)
			WRITE_ONCE(conn->main->last_cmd, jiffies);
		vfio_user_cmd_queue(conn, conn->rx_cmd);
		conn->rx_cmd = NULL;
		return;
	}
	conn->rx_req = NULL;
	/* (the clock is read only when the event is on: a hot path) */
	if (trace_vfio_user_recv_enabled())
		trace_vfio_user_recv(vfio_user_dev(conn->udev), req->msg_id,
				     req->command,
				     sizeof(conn->rx_hdr) + conn->rx_len,
				     le32_to_cpu(conn->rx_hdr.flags),
				     le32_to_cpu(conn->rx_hdr.error_no),
				     ktime_get_ns() - req->queued_ns);
	vfio_user_stat_msg(conn->udev, false, req->command,
			   sizeof(conn->rx_hdr) + conn->rx_len);
	if (le32_to_cpu(conn->rx_hdr.flags) & VFIO_USER_F_ERROR)
		this_cpu_inc(conn->udev->stats->error_replies);
	if (conn->rx_nr_files > req->rx_max_files ||
	    (le32_to_cpu(conn->rx_hdr.flags) & VFIO_USER_F_ERROR)) {
		if (conn->rx_nr_files > req->rx_max_files)
			dev_dbg(vfio_user_dev(conn->udev),
				"reply to msg_id %u (command %u) carries %u fds, expected at most %u\n",
				req->msg_id, req->command, conn->rx_nr_files,
				req->rx_max_files);
		vfio_user_rx_drop_files(conn);
	}
	spin_lock(&conn->lock);
	/* Unless vfio_user_conn_broken() has failed it meanwhile. */
	if (xa_load(&conn->reqs, req->msg_id) == req) {
		xa_erase(&conn->reqs, req->msg_id);
		req->reply_len = conn->rx_len;
		/* The caller takes them after done (ordered by its release). */
		if (conn->rx_nr_files)
			memcpy(req->rx_files, conn->rx_files,
			       conn->rx_nr_files * sizeof(*conn->rx_files));
		conn->rx_nr_files = 0;
		if (le32_to_cpu(conn->rx_hdr.flags) & VFIO_USER_F_ERROR)
			vfio_user_req_finish(conn, req,
					     -(int)le32_to_cpu(conn->rx_hdr.error_no));
		else
			vfio_user_req_finish(conn, req, 0);
		spin_unlock(&conn->lock);
		vfio_user_req_put(req);		/* the table's */
	} else {
		spin_unlock(&conn->lock);
		vfio_user_rx_drop_files(conn);
	}
	vfio_user_req_put(req);			/* the receiver's */
}

/* Drops the message being read (the connection is being torn down). */
static void vfio_user_rx_reset(struct vfio_user_conn *conn)
{
	lockdep_assert_held(&conn->recv_mutex);

	if (conn->rx_cmd)
		vfio_user_cmd_free(conn->rx_cmd);
	if (conn->rx_req)
		vfio_user_req_put(conn->rx_req);
	vfio_user_rx_drop_files(conn);
	conn->rx_cmd = NULL;
	conn->rx_req = NULL;
	conn->rx_state = VFIO_USER_RX_HDR;
	conn->rx_got = 0;
}

/*
 * Reads and dispatches what the socket holds, resuming the message the
 * last reader left unfinished, and stops when the socket is empty (or the
 * DMA queue is full: backpressure). Never blocks. Returns -EAGAIN then;
 * -EINPROGRESS at a message boundary once @req (if any) is done, @end has
 * passed or a fatal signal is pending, so that no reader is held by a
 * server that keeps sending; or the -errno that ended the connection.
 */
static int vfio_user_rx_some(struct vfio_user_conn *conn,
			     struct vfio_user_req *req, unsigned long end)
{
	struct iov_iter iter;
	struct kvec kv;
	int ret;

	lockdep_assert_held(&conn->recv_mutex);

	for (;;) {
		if (READ_ONCE(conn->dead))
			return -EIO;
		/* Between messages: enough for this reader? */
		if (conn->rx_state == VFIO_USER_RX_HDR && !conn->rx_got &&
		    ((req && vfio_user_req_done(req)) ||
		     time_after(jiffies, end) || fatal_signal_pending(current)))
			return -EINPROGRESS;
		switch (conn->rx_state) {
		case VFIO_USER_RX_HDR:
			if (!conn->rx_got && vfio_user_cmds_full(conn))
				return -EAGAIN;
			kv.iov_base = (u8 *)&conn->rx_hdr + conn->rx_got;
			kv.iov_len = sizeof(conn->rx_hdr) - conn->rx_got;
			iov_iter_kvec(&iter, ITER_DEST, &kv, 1, kv.iov_len);
			break;
		case VFIO_USER_RX_REPLY:
			kv.iov_base = conn->rx_req->reply + conn->rx_got;
			kv.iov_len = conn->rx_len - conn->rx_got;
			iov_iter_kvec(&iter, ITER_DEST, &kv, 1, kv.iov_len);
			break;
		case VFIO_USER_RX_CMD:
			vfio_user_cmd_iter(conn->rx_cmd, conn->rx_got, &iter,
					   &kv);
			break;
		case VFIO_USER_RX_DISCARD:
			iov_iter_discard(&iter, ITER_DEST,
					 conn->rx_len - conn->rx_got);
			break;
		}

		if (iov_iter_count(&iter)) {
			ret = vfio_user_rx_bytes(conn, &iter);
			if (ret < 0)
				return ret;
			conn->rx_got += ret;
		}

		if (conn->rx_state == VFIO_USER_RX_HDR) {
			if (conn->rx_got < sizeof(conn->rx_hdr))
				continue;
			ret = vfio_user_rx_start(conn);
			if (ret)
				return ret;
		}
		if (conn->rx_got == conn->rx_len)
			vfio_user_rx_finish(conn);
	}
}

/* Whether current may read: anyone, but fd_task alone while it is set. */
static bool vfio_user_rx_mine(struct vfio_user_conn *conn)
{
	struct task_struct *task = READ_ONCE(conn->fd_task);

	return !task || task == current;
}

/*
 * Reads what the socket holds unless another reader is at it, for @req's
 * waiter (NULL: recv_work) at most a jiffy: what is left then goes to
 * recv_work. Whoever lets go of recv_mutex looks again, so nothing that
 * arrived meanwhile is left unread.
 */
static void vfio_user_rx_run(struct vfio_user_conn *conn,
			     struct vfio_user_req *req)
{
	unsigned long end = jiffies + 1;
	int ret;

	if (!vfio_user_rx_mine(conn)) {
		/* The attaching writer reads (fds): wake it, whatever came. */
		wake_up(&conn->rx_wait);
		return;
	}
	while (vfio_user_rx_pending(conn) && !READ_ONCE(conn->dead) &&
	       mutex_trylock(&conn->recv_mutex)) {
		ret = vfio_user_rx_some(conn, req, end);
		mutex_unlock(&conn->recv_mutex);
		/* The unlock before the look at the socket: see above. */
		smp_mb();
		if (ret == -EAGAIN || ret == -EIO)
			continue;
		if (ret == -EINPROGRESS) {
			if (vfio_user_rx_pending(conn))
				vfio_user_conn_queue(conn, &conn->recv_work);
			return;
		}
		if (ret == -EPIPE || ret == -ECONNRESET)
			vfio_user_conn_broken(conn, "server closed the connection");
		else if (ret != -EPROTO)
			vfio_user_conn_broken(conn, "receive failed (%d)", ret);
		return;
	}
}

static void vfio_user_recv_work(struct work_struct *work)
{
	struct vfio_user_conn *conn = container_of(work, struct vfio_user_conn,
						   recv_work);

	vfio_user_rx_run(conn, NULL);
}

/*
 * Socket callbacks, in the server's send, receive or close path. Data:
 * wake one waiting consumer to read it (sync: the server is about to wait
 * for its next message), else queue recv_work. Room: go on sending.
 */
static void vfio_user_rx_kick(struct sock *sk, bool state)
{
	struct vfio_user_conn *conn;

	read_lock_bh(&sk->sk_callback_lock);
	conn = sk->sk_user_data;
	if (conn) {
		if (state)
			conn->saved_state_change(sk);
		else
			conn->saved_data_ready(sk);
		if (atomic_read(&conn->rx_waiters))
			wake_up_sync(&conn->rx_wait);
		else
			queue_work(vfio_user_wq, &conn->recv_work);
		if (state)
			wake_up_all(&conn->tx_wait);
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

static void vfio_user_write_space(struct sock *sk)
{
	struct vfio_user_conn *conn;

	read_lock_bh(&sk->sk_callback_lock);
	conn = sk->sk_user_data;
	if (conn) {
		conn->saved_write_space(sk);
		/* (sock_wfree() has given the room back: see tx_blocked) */
		smp_mb();
		if (READ_ONCE(conn->tx_blocked))
			queue_work(vfio_user_wq, &conn->send_work);
		if (wq_has_sleeper(&conn->tx_wait))
			wake_up_all(&conn->tx_wait);
	}
	read_unlock_bh(&sk->sk_callback_lock);
}

/*
 * Waiting
 */

/*
 * Spins, at most poll_us microseconds and never past @left jiffies, until
 * @req is done or the socket has something to read: a server that answers
 * within that time is read without a sleep and a wakeup (the same trade
 * as net.core.busy_read). Gives up at once when another task is runnable
 * on this CPU, such as a server sharing it, which the spin would only
 * delay, or a signal is pending. Returns true if there is something new.
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
	while (!vfio_user_req_done(req) && !vfio_user_rx_pending(conn)) {
		if (need_resched() || !single_task_running() ||
		    signal_pending(current) || local_clock() > end)
			return false;
		cpu_relax();
	}
	return true;
}

/*
 * @req's deadline: timeout_ms after it was queued, or after the last
 * command the server sent since, if later. A server that does DMA before
 * it answers (a doorbell write whose handler copies) is working, not hung;
 * its replies to other requests do not count, and nothing extends a
 * request past VFIO_USER_MAX_TIMEOUT_MS or an attach past its end.
 */
static unsigned long vfio_user_req_deadline(struct vfio_user_conn *conn,
					    struct vfio_user_req *req)
{
	unsigned long cmd = READ_ONCE(conn->last_cmd) + conn->timeout;

	if (READ_ONCE(conn->attach_deadline) || !time_after(cmd, req->deadline))
		return req->deadline;
	if (time_after(cmd, req->queued + msecs_to_jiffies(VFIO_USER_MAX_TIMEOUT_MS)))
		return req->queued + msecs_to_jiffies(VFIO_USER_MAX_TIMEOUT_MS);
	return cmd;
}

/*
 * At the deadline: the reply may be in the socket while another reader
 * holds recv_mutex (reclaim, preemption). Wait for it, killably (readers
 * never wait on the server), and read before calling it a timeout.
 */
static int vfio_user_rx_last_look(struct vfio_user_conn *conn,
				  struct vfio_user_req *req)
{
	int ret;

	if (!vfio_user_rx_mine(conn))
		return vfio_user_req_done(req) ? 0 : -ETIMEDOUT;
	if (mutex_lock_killable(&conn->recv_mutex))
		return -EINTR;
	ret = vfio_user_rx_some(conn, req, jiffies + 1);
	mutex_unlock(&conn->recv_mutex);
	if (vfio_user_req_done(req))
		return 0;
	if (ret == -EPIPE || ret == -ECONNRESET)
		vfio_user_conn_broken(conn, "server closed the connection");
	else if (ret != -EAGAIN && ret != -EINPROGRESS && ret != -EIO &&
		 ret != -EPROTO)
		vfio_user_conn_broken(conn, "receive failed (%d)", ret);
	return vfio_user_req_done(req) ? 0 : -ETIMEDOUT;
}

/*
 * Sleeps until @req is done, its deadline passes or a fatal signal comes,
 * reading the socket meanwhile. Non-fatal signals and ptrace stops do not
 * wake it (TASK_KILLABLE). Returns 0, -ETIMEDOUT or -EINTR.
 */
static int vfio_user_wait_reply(struct vfio_user_conn *conn,
				struct vfio_user_req *req)
{
	DEFINE_WAIT(wait);
	bool polled = false;
	int ret = 0;
	long left;

	/* From here on data wakes us (or a fellow waiter), not recv_work. */
	atomic_inc(&conn->rx_waiters);
	for (;;) {
		if (vfio_user_req_done(req))
			break;
		vfio_user_rx_run(conn, req);
		if (vfio_user_req_done(req))
			break;
		left = (long)(vfio_user_req_deadline(conn, req) - jiffies);
		if (left <= 0) {
			ret = vfio_user_rx_last_look(conn, req);
			break;
		}
		if (!polled) {
			polled = true;
			if (vfio_user_poll_reply(conn, req, left))
				continue;
		}
		prepare_to_wait_exclusive(&conn->rx_wait, &wait, TASK_KILLABLE);
		if (!vfio_user_req_done(req) &&
		    !(vfio_user_rx_pending(conn) &&
		      !mutex_is_locked(&conn->recv_mutex)))
			schedule_timeout(left);
		finish_wait(&conn->rx_wait, &wait);
		if (fatal_signal_pending(current) &&
		    !vfio_user_req_done(req)) {
			ret = -EINTR;
			break;
		}
	}
	atomic_dec(&conn->rx_waiters);
	/* What arrived after our last read, maybe with our wakeup. */
	if (vfio_user_rx_pending(conn) && !READ_ONCE(conn->dead))
		vfio_user_conn_queue(conn, &conn->recv_work);
	return ret;
}

/*
 * A waiter leaves before its reply (fatal signal, timeout): a request
 * nobody has started to send is taken back; one on its way stays with the
 * connection, which sends the rest and drops the reply.
 */
static bool vfio_user_req_leave(struct vfio_user_conn *conn,
				struct vfio_user_req *req)
{
	bool unqueued = false, untabled = false, more;

	spin_lock(&conn->lock);
	req->task = NULL;
	if (!req->done && (req->tx_state == VFIO_USER_TX_QUEUED ||
			   (req->nr_fds && !req->tx_off &&
			    req->tx_state != VFIO_USER_TX_SENT))) {
		list_del_init(&req->tx_node);
		req->tx_state = VFIO_USER_TX_SENT;
		unqueued = true;
		if (xa_load(&conn->reqs, req->msg_id) == req) {
			xa_erase(&conn->reqs, req->msg_id);
			untabled = true;
		}
		req->done = true;
	}
	more = unqueued && !list_empty(&conn->tx_list);
	spin_unlock(&conn->lock);
	if (unqueued)
		vfio_user_req_put(req);		/* the list's */
	if (untabled)
		vfio_user_req_put(req);		/* the table's */
	/* It may have held up the others (a request with fds does). */
	if (more)
		vfio_user_conn_queue(conn, &conn->send_work);
	return unqueued;
}

/*
 * Takes a tag and queues @req; conn->lock is taken here. Returns 0 or
 * -EIO (dead), -EBUSY (no free tag), -ENOMEM.
 */
static int vfio_user_req_queue(struct vfio_user_conn *conn,
			       struct vfio_user_req *req)
{
	unsigned long deadline = jiffies + conn->timeout;
	unsigned long attach = READ_ONCE(conn->attach_deadline);
	u32 id = 0;
	int ret;

	if (attach && time_before(attach, deadline))
		deadline = attach;
	req->queued = jiffies;
	/* Only a reply's round trip needs it (a slow clock under TCG). */
	req->queued_ns = req->no_reply ? 0 : ktime_get_ns();
	req->deadline = deadline;
	req->task = current;

	if (!req->no_reply) {
		kref_get(&req->ref);		/* the table's */
		ret = xa_alloc_cyclic(&conn->reqs, &id, req,
				      XA_LIMIT(0, VFIO_USER_POSTED_ID - 1),
				      &conn->next_id,
				      GFP_KERNEL);
		if (ret < 0) {
			vfio_user_req_put(req);
			return ret == -EBUSY ? -EBUSY : -ENOMEM;
		}
		req->msg_id = id;
		vfio_user_fill_hdr(&req->hdr, id, req->command, req->tx_len,
				   VFIO_USER_F_TYPE_COMMAND, 0);
	}

	spin_lock(&conn->lock);
	if (conn->dead) {
		/* vfio_user_conn_broken() may have failed it already. */
		bool untabled = !req->no_reply &&
				xa_load(&conn->reqs, id) == req;

		if (untabled)
			xa_erase(&conn->reqs, id);
		req->task = NULL;
		spin_unlock(&conn->lock);
		if (untabled)
			vfio_user_req_put(req);
		return -EIO;
	}
	kref_get(&req->ref);			/* the list's */
	req->tx_state = VFIO_USER_TX_QUEUED;
	list_add_tail(&req->tx_node, &conn->tx_list);
	spin_unlock(&conn->lock);
	if (req->no_reply)
		return 0;
	trace_vfio_user_send(vfio_user_dev(conn->udev), id, req->command,
			     req->tx_len, VFIO_USER_F_TYPE_COMMAND);
	vfio_user_stat_msg(conn->udev, true, req->command, req->tx_len);
	if (req->command == VFIO_USER_DEVICE_SET_IRQS)
		this_cpu_add(conn->udev->stats->irq_fds_sent, req->nr_fds);
	return 0;
}

/**
 * vfio_user_req_run() - send a request and wait for its reply
 * @conn: the connection
 * @req: from vfio_user_req_alloc(), not yet run
 *
 * The reply lands in @req->reply (@req->reply_len bytes). A reply outside
 * [reply_min, reply_max], for another command or with an errno outside
 * 1..511 is a protocol violation. Waits at most the connection's timeout
 * from now (and never past the end of an attach); a timeout breaks the
 * connection.
 *
 * Context: process context; sleeps killably: non-fatal signals and ptrace
 * stops neither wake nor fail it. A fatal signal returns -EINTR at once
 * (a request already on its way is finished by the connection).
 * Return: length of the reply payload, or -EIO (connection dead or broken
 * meanwhile), -ETIMEDOUT, -EINTR, -EBUSY (32768 requests in flight),
 * -ENOMEM, -EBADF (a closed fd), or the server's -errno.
 */
int vfio_user_req_run(struct vfio_user_conn *conn, struct vfio_user_req *req)
{
	int ret;

	ret = vfio_user_req_queue(conn, req);
	if (ret)
		return ret;
	if (req->nr_fds)
		ret = vfio_user_tx_start_fds(conn, req);
	else
		vfio_user_tx_kick(conn);
	if (!ret)
		ret = vfio_user_wait_reply(conn, req);

	if (ret == -ETIMEDOUT)
		this_cpu_inc(conn->udev->stats->timeouts);
	else if (!ret && !READ_ONCE(conn->attach_deadline))
		vfio_user_stat_latency(conn->udev,
				       ktime_get_ns() - req->queued_ns);
	if (ret == -ETIMEDOUT && req->command == VFIO_USER_VERSION)
		vfio_user_conn_broken(conn, "no VERSION reply within %u ms",
				      jiffies_to_msecs(conn->timeout));
	else if (ret == -ETIMEDOUT)
		vfio_user_conn_broken(conn,
				      "no reply to msg_id %u (command %u) within %u ms",
				      req->msg_id, req->command,
				      jiffies_to_msecs(conn->timeout));
	vfio_user_req_leave(conn, req);
	if (ret)
		return ret;
	return req->status ? req->status : req->reply_len;
}

/**
 * vfio_user_call() - send a command and wait for its reply
 * @conn: the connection
 * @call: the command, and where its reply goes
 *
 * vfio_user_req_run() for callers with small messages: the payload and
 * data are copied into a request and the reply out of it.
 *
 * Context: process context; sleeps killably, at most the timeout.
 * Return: as vfio_user_req_run().
 */
int vfio_user_call(struct vfio_user_conn *conn,
		   const struct vfio_user_call *call)
{
	struct vfio_user_req *req;
	int ret;

	req = vfio_user_req_alloc(call);
	if (!req)
		return -ENOMEM;
	ret = vfio_user_req_run(conn, req);
	if (ret > 0 && call->reply)
		memcpy(call->reply, req->reply, ret);
	if (ret >= 0 && call->rx_files) {
		memcpy(call->rx_files, req->rx_files,
		       req->rx_max_files * sizeof(*req->rx_files));
		memset(req->rx_files, 0,
		       req->rx_max_files * sizeof(*req->rx_files));
	}
	vfio_user_req_put(req);
	return ret;
}

/*
 * Queues a message nothing answers (a reply to a server command, a posted
 * command) and waits, killably and until the request's deadline, for it to
 * be on the wire. A waiter that leaves (a fatal signal, the deadline)
 * takes back a message not yet started, so what the module holds for a
 * server that does not read is one message per waiting task and the one
 * being sent.
 */
static int vfio_user_send_noreply(struct vfio_user_conn *conn,
				  struct vfio_user_req *req, const char *what)
{
	bool taken_back;
	long left;
	int ret;

	req->no_reply = true;
	ret = vfio_user_req_queue(conn, req);
	if (ret)
		return ret;
	vfio_user_tx_kick(conn);
	for (;;) {
		if (READ_ONCE(req->tx_state) == VFIO_USER_TX_SENT ||
		    READ_ONCE(conn->dead)) {
			ret = 0;
			break;
		}
		left = (long)(vfio_user_req_deadline(conn, req) - jiffies);
		if (left <= 0) {
			ret = -ETIMEDOUT;
			break;
		}
		left = wait_event_killable_timeout(conn->tx_wait,
						   READ_ONCE(req->tx_state) == VFIO_USER_TX_SENT ||
						   READ_ONCE(conn->dead),
						   left);
		if (left < 0) {
			ret = -EINTR;
			break;
		}
	}
	/* Taken back: never sent. Else sent, or being sent by the connection. */
	taken_back = vfio_user_req_leave(conn, req);
	/* All of it went out after all, just as the deadline passed. */
	if (ret == -ETIMEDOUT && !taken_back &&
	    READ_ONCE(req->tx_state) == VFIO_USER_TX_SENT &&
	    !READ_ONCE(conn->dead))
		ret = 0;
	if (ret == -ETIMEDOUT) {
		this_cpu_inc(conn->udev->stats->timeouts);
		vfio_user_conn_broken(conn,
				      "%s %u (msg_id %u) not taken within %u ms",
				      what, req->command, req->msg_id,
				      jiffies_to_msecs(conn->timeout));
	}
	if (ret)
		return ret;
	return taken_back || READ_ONCE(conn->dead) ? -EIO : 0;
}

/**
 * vfio_user_post() - send a command the server does not answer
 * @conn: the connection
 * @req: from vfio_user_req_alloc(), without fds, not yet run
 *
 * The command goes with the no-reply flag: the server processes it in
 * order with everything else on the socket and answers nothing, not even
 * an error. This returns once the socket has the whole message, not once
 * the server has done it; the next request that waits for a reply is the
 * fence (the server answers it only after this one). A server that dies
 * meanwhile fails that next request; an error of this command is lost.
 * Its msg_id is one a request awaiting a reply never has: a reply to it
 * is a protocol violation.
 *
 * Context: process context; sleeps killably while the socket is full, until
 * the request's deadline (vfio_user_req_deadline(); then the connection is
 * broken). A non-fatal signal neither wakes nor fails it.
 * Return: 0, or -EIO (connection dead or broken meanwhile), -ETIMEDOUT,
 * -EINTR (a fatal signal; the command was not sent, unless it had
 * started), -EINVAL (@req carries fds).
 */
int vfio_user_post(struct vfio_user_conn *conn, struct vfio_user_req *req)
{
	u16 id = VFIO_USER_POSTED_ID |
		 (atomic_inc_return(&conn->posted_id) & (VFIO_USER_POSTED_ID - 1));
	int ret;

	if (WARN_ON_ONCE(req->nr_fds))
		return -EINVAL;
	vfio_user_fill_hdr(&req->hdr, id, req->command, req->tx_len,
			   VFIO_USER_F_TYPE_COMMAND | VFIO_USER_F_NO_REPLY, 0);
	req->msg_id = id;
	ret = vfio_user_send_noreply(conn, req, "posted command");
	if (ret)
		return ret;
	trace_vfio_user_send(vfio_user_dev(conn->udev), id, req->command,
			     req->tx_len, le32_to_cpu(req->hdr.flags));
	vfio_user_stat_msg(conn->udev, true, req->command, req->tx_len);
	this_cpu_inc(conn->udev->stats->posted);
	return 0;
}

/**
 * vfio_user_send_reply() - answer a command from the server
 * @conn: the connection
 * @msg_id: the server's msg_id
 * @command: the command answered
 * @error: 0, or a positive errno for an error reply (no payload then)
 * @payload: reply payload
 * @len: length of @payload
 *
 * Context: process context (dma.c's work); sleeps until the reply's
 * deadline (vfio_user_req_deadline()).
 * Return: 0 or a negative errno (the connection is then broken).
 */
int vfio_user_send_reply(struct vfio_user_conn *conn, u16 msg_id, u16 command,
			 int error, const void *payload, size_t len)
{
	struct vfio_user_call call = {
		.command = command,
		.payload = payload,
		.len = error ? 0 : len,
	};
	struct vfio_user_req *req;
	int ret;

	req = vfio_user_req_alloc(&call);
	if (!req)
		return -ENOMEM;
	vfio_user_fill_hdr(&req->hdr, msg_id, command, req->tx_len,
			   VFIO_USER_F_TYPE_REPLY | (error ? VFIO_USER_F_ERROR : 0),
			   error);
	req->msg_id = msg_id;
	trace_vfio_user_send(vfio_user_dev(conn->udev), msg_id, command,
			     req->tx_len, le32_to_cpu(req->hdr.flags));
	vfio_user_stat_msg(conn->udev, true, command, req->tx_len);
	ret = vfio_user_send_noreply(conn, req, "reply to server command");
	vfio_user_req_put(req);
	return ret;
}

/**
 * vfio_user_send_reply_pages() - answer a command with a reply built in pages
 * @conn: the connection
 * @msg_id: the server's msg_id
 * @command: the command answered
 * @dp: the whole message: its first sizeof(struct vfio_user_hdr) bytes are
 *	room for the header, filled in here; the payload follows. The
 *	request takes it over and frees it.
 * @size: bytes of the message in @dp
 *
 * Where the kernel can (6.5 on), the socket takes its own references to the
 * pages of a reply of a page or more instead of copying them
 * (MSG_SPLICE_PAGES), and the server's read is the only copy.
 *
 * Context: process context (dma.c's work); sleeps until the reply's
 * deadline (vfio_user_req_deadline()).
 * Return: 0 or a negative errno (the connection is then broken).
 */
int vfio_user_send_reply_pages(struct vfio_user_conn *conn, u16 msg_id,
			       u16 command, struct vfio_user_dma_pages *dp,
			       size_t size)
{
	struct vfio_user_call call = { .command = command };
	struct vfio_user_req *req;
	int ret;

	req = vfio_user_req_alloc(&call);
	if (!req) {
		vfio_user_dma_pages_free(dp);
		return -ENOMEM;
	}
	req->tx_pages_owner = dp;
	req->tx_pages = dp->bv;
	req->nr_pages = dp->nr;
	req->tx_len = size;
	req->msg_id = msg_id;
	vfio_user_fill_hdr(page_address(dp->bv[0].bv_page) + dp->bv[0].bv_offset,
			   msg_id, command, size, VFIO_USER_F_TYPE_REPLY, 0);
	trace_vfio_user_send(vfio_user_dev(conn->udev), msg_id, command, size,
			     VFIO_USER_F_TYPE_REPLY);
	vfio_user_stat_msg(conn->udev, true, command, size);
	ret = vfio_user_send_noreply(conn, req, "reply to server command");
	vfio_user_req_put(req);
	return ret;
}

/*
 * Fds from the server
 */

/**
 * vfio_user_conn_fds_begin() - take fds the server sends, from now on
 * @conn: a connection only its attach uses yet
 *
 * A kernel socket cannot take SCM_RIGHTS into a kernel buffer, but the
 * attaching writer can: this maps a page in its address space as control
 * buffer and makes it the connection's only reader, so that each fd a
 * message carries is installed in its table (close-on-exec), taken as a
 * file and closed again within the read. The replies that carry fds
 * (VERSION, region info) are all asked for during the attach, by the
 * writer. A writer without an address space (a kernel thread) takes no
 * fds, nor does one whose address space has no room for the buffer: the
 * server is told max_msg_fds 0.
 *
 * Context: process context of the attaching writer.
 * Return: 0.
 */
int vfio_user_conn_fds_begin(struct vfio_user_conn *conn)
{
	unsigned long addr;

	if (!current->mm || (current->flags & PF_KTHREAD))
		return 0;
	addr = vm_mmap(NULL, 0, PAGE_SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, 0);
	/* No buffer: no fds, as for a kernel thread. */
	if (IS_ERR_VALUE(addr)) {
		dev_warn(vfio_user_dev(conn->udev),
			 "cannot map a buffer to receive fds (%ld): no shared memory from the server\n",
			 (long)addr);
		return 0;
	}
	conn->fd_buf = (void __user *)addr;
	WRITE_ONCE(conn->fd_task, current);
	return 0;
}

/**
 * vfio_user_conn_fds_end() - stop taking fds; anyone reads again
 * @conn: the connection
 *
 * Later fds are dropped by the core as they come (we give no control
 * buffer). What came meanwhile is read by the receive work.
 *
 * Context: process context of the writer that called
 * vfio_user_conn_fds_begin(); no-op if it took no fds.
 */
void vfio_user_conn_fds_end(struct vfio_user_conn *conn)
{
	if (!conn->fd_task)
		return;
	/* The writer is the only reader, and it is here: nobody reads now. */
	WRITE_ONCE(conn->fd_task, NULL);
	vm_munmap((unsigned long)conn->fd_buf, PAGE_SIZE);
	conn->fd_buf = NULL;
	if (vfio_user_rx_pending(conn))
		vfio_user_conn_queue(conn, &conn->recv_work);
}

/**
 * vfio_user_conn_takes_fds() - whether the server may send us fds now
 * @conn: the connection
 *
 * Context: any.
 * Return: true between vfio_user_conn_fds_begin() and _end() in a writer
 * with an address space.
 */
bool vfio_user_conn_takes_fds(struct vfio_user_conn *conn)
{
	return READ_ONCE(conn->fd_task);
}

/*
 * Setting up and tearing down
 */

/*
 * Takes the socket's callbacks: from now on the connection reads it.
 * -EBUSY if another connection (or anyone) has hooked it: a socket passed
 * to two attaches at once, or a server that hands two devices the same
 * twin socket.
 */
static int vfio_user_conn_hook(struct vfio_user_conn *conn)
{
	struct sock *sk = conn->sock->sk;

	write_lock_bh(&sk->sk_callback_lock);
	if (sk->sk_user_data) {
		write_unlock_bh(&sk->sk_callback_lock);
		return -EBUSY;
	}
	conn->saved_data_ready = sk->sk_data_ready;
	conn->saved_state_change = sk->sk_state_change;
	conn->saved_write_space = sk->sk_write_space;
	sk->sk_user_data = conn;
	sk->sk_data_ready = vfio_user_data_ready;
	sk->sk_state_change = vfio_user_state_change;
	sk->sk_write_space = vfio_user_write_space;
	write_unlock_bh(&sk->sk_callback_lock);
	return 0;
}

static struct vfio_user_conn *vfio_user_conn_alloc(struct vfio_user_device *udev,
						   unsigned int timeout_ms)
{
	struct vfio_user_conn *conn;

	conn = kzalloc(sizeof(*conn), GFP_KERNEL);
	if (!conn)
		return NULL;
	kref_init(&conn->ref);
	conn->udev = udev;
	conn->timeout = msecs_to_jiffies(timeout_ms);
	conn->attach_deadline = jiffies +
				VFIO_USER_ATTACH_TIMEOUTS * conn->timeout;
	conn->last_cmd = jiffies - conn->timeout;
	conn->caps.max_msg_fds = VFIO_USER_DEF_MAX_MSG_FDS;
	conn->max_xfer = READ_ONCE(vfio_user_max_xfer);	/* what we announce */
	conn->caps.max_xfer = VFIO_USER_DEF_MAX_XFER_SIZE;
	conn->caps.max_dma_maps = VFIO_USER_DEF_MAX_DMA_MAPS;
	conn->caps.pgsizes = PAGE_SIZE;
	/* Until VERSION is done: a VERSION reply at most. */
	conn->max_payload = sizeof(struct vfio_user_version) +
			    VFIO_USER_MAX_VERSION_JSON;
	spin_lock_init(&conn->lock);
	xa_init_flags(&conn->reqs, XA_FLAGS_ALLOC);
	INIT_LIST_HEAD(&conn->tx_list);
	mutex_init(&conn->send_mutex);
	INIT_WORK(&conn->send_work, vfio_user_send_work);
	init_waitqueue_head(&conn->tx_wait);
	mutex_init(&conn->recv_mutex);
	INIT_WORK(&conn->recv_work, vfio_user_recv_work);
	init_waitqueue_head(&conn->rx_wait);
	vfio_user_cmds_init(conn);

	return conn;
}

/* Frees a connection that never ran: no socket of its own, no work. */
static void vfio_user_conn_free(struct vfio_user_conn *conn)
{
	xa_destroy(&conn->reqs);
	kfree(conn);
}

/*
 * Whether a socket we were handed can carry a connection: a connected
 * AF_UNIX stream socket nobody else has hooked (a BPF sockmap, another
 * device). Returns 0 or the errno that says what it is not.
 */
static int vfio_user_sock_check(struct socket *sock)
{
	if (!sock)
		return -ENOTSOCK;
	if (sock->sk->sk_family != AF_UNIX)
		return -EAFNOSUPPORT;
	if (sock->type != SOCK_STREAM)
		return -EPROTOTYPE;
	if (READ_ONCE(sock->sk->sk_state) != TCP_ESTABLISHED)
		return -ENOTCONN;
	if (READ_ONCE(sock->sk->sk_user_data))
		return -EBUSY;
	return 0;
}

/*
 * "fd:N": the connected socket behind fd N of the writer, which keeps its
 * own fd (it should close it: what it reads or writes there tears the
 * stream).
 */
static struct vfio_user_conn *vfio_user_conn_from_fd(struct vfio_user_device *udev,
						     const char *path,
						     unsigned int timeout_ms)
{
	struct vfio_user_conn *conn;
	struct file *file;
	unsigned int fd;
	int ret;

	if (kstrtouint(path + 3, 10, &fd))
		return ERR_PTR(-EINVAL);
	file = fget(fd);
	if (!file) {
		dev_err(vfio_user_dev(udev), "%s: no such fd in the writer\n",
			path);
		return ERR_PTR(-EBADF);
	}
	ret = vfio_user_sock_check(sock_from_file(file));
	if (ret) {
		dev_err(vfio_user_dev(udev),
			"%s is not a connected AF_UNIX stream socket of its own: %d\n",
			path, ret);
		goto err_put;
	}
	conn = vfio_user_conn_alloc(udev, timeout_ms);
	if (!conn) {
		ret = -ENOMEM;
		goto err_put;
	}
	conn->sock = sock_from_file(file);
	ret = vfio_user_conn_hook(conn);
	if (ret) {
		dev_err(vfio_user_dev(udev), "%s is attached already\n", path);
		vfio_user_conn_free(conn);
		goto err_put;
	}
	conn->sock_file = file;
	return conn;

err_put:
	fput(file);
	return ERR_PTR(ret);
}

/**
 * vfio_user_conn_connect() - connect to a server
 * @udev: the device
 * @path: the server's socket path, resolved in the caller's context; or
 *	"fd:N", a connected AF_UNIX stream socket the caller passes as its
 *	fd N (a socket-activated server, another mount namespace)
 * @timeout_ms: bound on every wait for the server, and on the attach
 *
 * The connection is the caller's alone until it publishes it; the whole
 * attach, this and what the caller does next on it (VERSION first), must
 * end within VFIO_USER_ATTACH_TIMEOUTS times @timeout_ms
 * (conn->attach_deadline), each request within @timeout_ms; the caller
 * clears the deadline once done.
 *
 * Context: process context of the sysfs writer; the connect does not
 * wait (a full listen backlog is -EAGAIN).
 * Return: a running connection with one reference (the caller's), or an
 * ERR_PTR: -ENOENT/-ECONNREFUSED/-ENOTSOCK/-EAGAIN... from connect,
 * -EINVAL; for "fd:N" -EBADF (no such fd), -ENOTSOCK, -EAFNOSUPPORT (not
 * AF_UNIX), -EPROTOTYPE (not a stream), -ENOTCONN, -EBUSY (already
 * attached or hooked).
 */
struct vfio_user_conn *vfio_user_conn_connect(struct vfio_user_device *udev,
					      const char *path,
					      unsigned int timeout_ms)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct vfio_user_conn *conn;
	size_t plen = strlen(path);
	int ret;

	if (str_has_prefix(path, "fd:"))
		return vfio_user_conn_from_fd(udev, path, timeout_ms);
	if (!plen || plen >= sizeof(addr.sun_path))
		return ERR_PTR(-EINVAL);
	memcpy(addr.sun_path, path, plen);

	conn = vfio_user_conn_alloc(udev, timeout_ms);
	if (!conn)
		return ERR_PTR(-ENOMEM);

	ret = sock_create_kern(&init_net, AF_UNIX, SOCK_STREAM, 0, &conn->sock);
	if (ret)
		goto err_free;

	ret = vfio_user_kernel_connect(conn->sock, &addr,
				       offsetof(struct sockaddr_un, sun_path) + plen);
	if (ret) {
		dev_err(vfio_user_dev(udev), "cannot connect to %s: %d\n", path,
			ret);
		goto err_sock;
	}

	/* Our own socket: nobody else can have hooked it. */
	WARN_ON_ONCE(vfio_user_conn_hook(conn));

	return conn;

err_sock:
	sock_release(conn->sock);
err_free:
	vfio_user_conn_free(conn);
	return ERR_PTR(ret);
}

/**
 * vfio_user_conn_twin() - take the server's twin socket
 * @conn: the main connection, its VERSION negotiated, only the attach
 *	using it
 * @file: the socket the server passed with its VERSION reply; taken over
 *
 * From now on the server's commands (DMA_READ, DMA_WRITE) come on this
 * socket, and our replies go back on it: a server waiting for the reply
 * to its DMA never sees one of our commands instead. Served like the main
 * socket's, by a connection of its own that breaks and stops with @conn.
 *
 * Context: process context of the attaching writer.
 * Return: 0; -EPROTO (the connection is then broken) when @file is not a
 * connected AF_UNIX stream socket; -ENOMEM; -EIO when @conn has died.
 */
int vfio_user_conn_twin(struct vfio_user_conn *conn, struct file *file)
{
	struct socket *sock = sock_from_file(file);
	struct vfio_user_conn *twin;
	bool dead;

	if (vfio_user_sock_check(sock)) {
		fput(file);
		vfio_user_conn_broken(conn,
				      "the twin socket is not a connected AF_UNIX stream socket");
		return -EPROTO;
	}
	twin = vfio_user_conn_alloc(conn->udev, jiffies_to_msecs(conn->timeout));
	if (!twin) {
		fput(file);
		return -ENOMEM;
	}
	twin->sock = sock;
	twin->sock_file = file;
	twin->main = conn;
	twin->caps = conn->caps;
	twin->max_xfer = conn->max_xfer;
	twin->max_payload = conn->max_payload;
	twin->versioned = true;
	twin->attach_deadline = 0;
	if (vfio_user_conn_hook(twin)) {
		vfio_user_conn_free(twin);
		fput(file);
		vfio_user_conn_broken(conn,
				      "the twin socket is another connection's");
		return -EPROTO;
	}

	spin_lock(&conn->lock);
	dead = conn->dead;
	if (!dead)
		conn->twin = twin;
	spin_unlock(&conn->lock);
	if (dead) {
		vfio_user_conn_stop(twin);
		vfio_user_conn_put(twin);
		return -EIO;
	}
	/* What the server sent before the socket was hooked. */
	vfio_user_conn_queue(twin, &twin->recv_work);
	return 0;
}

static void vfio_user_conn_release(struct kref *ref)
{
	struct vfio_user_conn *conn = container_of(ref, struct vfio_user_conn,
						   ref);

	/* Dead before it was stopped: nothing may enter the table since. */
	WARN_ON_ONCE(!xa_empty(&conn->reqs));
	WARN_ON_ONCE(work_pending(&conn->send_work) ||
		     work_pending(&conn->recv_work) ||
		     work_pending(&conn->cmd_work));
	if (conn->twin)
		vfio_user_conn_put(conn->twin);
	if (conn->sock_file)
		fput(conn->sock_file);
	else
		sock_release(conn->sock);
	xa_destroy(&conn->reqs);
	mutex_destroy(&conn->recv_mutex);
	mutex_destroy(&conn->send_mutex);
	kfree(conn);
}

/**
 * vfio_user_conn_put() - drop a reference to a connection
 * @conn: the connection, stopped by vfio_user_conn_stop() before its last
 *	reference goes
 *
 * Context: process context.
 */
void vfio_user_conn_put(struct vfio_user_conn *conn)
{
	kref_put(&conn->ref, vfio_user_conn_release);
}

/**
 * vfio_user_conn_stop() - tear a connection down
 * @conn: the connection, no longer published and used by no consumer
 *
 * Breaks the connection if it is not yet broken (quietly: a deliberate
 * end), takes the socket callbacks back, cancels the send, receive and DMA
 * work and drops everything queued. Never waits on the server: the socket
 * is shut down first. The memory goes with the last vfio_user_conn_put().
 *
 * Context: process context; sleeps until the work items have finished
 * (the DMA work may be in vfio_dma_rw()).
 */
void vfio_user_conn_stop(struct vfio_user_conn *conn)
{
	struct sock *sk = conn->sock->sk;

	vfio_user_conn_close(conn, "detached");

	write_lock_bh(&sk->sk_callback_lock);
	if (sk->sk_user_data == conn) {
		sk->sk_user_data = NULL;
		sk->sk_data_ready = conn->saved_data_ready;
		sk->sk_state_change = conn->saved_state_change;
		sk->sk_write_space = conn->saved_write_space;
	}
	write_unlock_bh(&sk->sk_callback_lock);

	/* Nothing is queued from here on; what is queued is cancelled. */
	spin_lock(&conn->lock);
	conn->stopped = true;
	spin_unlock(&conn->lock);
	cancel_work_sync(&conn->recv_work);
	vfio_user_cmds_stop(conn);
	cancel_work_sync(&conn->send_work);
	vfio_user_tx_drop(conn);
	mutex_lock(&conn->recv_mutex);
	vfio_user_rx_reset(conn);
	mutex_unlock(&conn->recv_mutex);
	/* Set only while the attach had it alone: stable now. */
	if (conn->twin)
		vfio_user_conn_stop(conn->twin);
}
