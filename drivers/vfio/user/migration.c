// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio_user_mdev - VFIO migration v2, spoken as vfio-user migration.
 *
 * The consumer's migration FSM (struct vfio_user_mig) lives here; every arc
 * the VFIO core hands us becomes at most one DEVICE_FEATURE SET of
 * MIG_DEVICE_STATE. The device offers STOP_COPY and P2P when its server
 * offers STOP_COPY, and PRE_COPY when the server offers it too;
 * RUNNING_P2P is the server's STOP and PRE_COPY_P2P its STOP_COPY when the
 * server has no P2P of its own (vfio-user servers may stop all DMA there,
 * as VFIO allows). The data fd of a session reads with MIG_DATA_READ and
 * writes with MIG_DATA_WRITE, in chunks of max_data_xfer_size; one saving
 * fd serves PRE_COPY, PRE_COPY_P2P and STOP_COPY.
 *
 * Locking: mig.lock (the FSM) -> mig_file.lock (the data fd) -> conn_sem
 * (read, one request at a time). Every wait under them is one request,
 * bounded by timeout_ms. A server that dies, is detached or replaced while
 * a session is open leaves the FSM in ERROR, noticed by the next call;
 * VFIO_DEVICE_RESET brings it back to RUNNING.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/kref.h>
#include <linux/module.h>
#include <linux/sched/signal.h>
#include <linux/sizes.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vfio.h>

#include "compat.h"
#include "vfio_user_mdev.h"

static unsigned long long vfio_user_mig_max_bytes = 1ULL << 30;
module_param_named(mig_max_bytes, vfio_user_mig_max_bytes, ullong, 0644);
MODULE_PARM_DESC(mig_max_bytes,
		 "Most bytes of device state one saving session (PRE_COPY* and STOP_COPY) reads from a server before it fails with EFBIG (default 1 GiB)");

static bool vfio_user_mig_pre_copy = true;
module_param_named(mig_pre_copy, vfio_user_mig_pre_copy, bool, 0644);
MODULE_PARM_DESC(mig_pre_copy,
		 "Offer PRE_COPY where the server offers it (default Y; read at attach)");

/* get_data_size when the server does not say: 1 MiB */
#define VFIO_USER_MIG_DEF_SIZE		SZ_1M

static const char *const vfio_user_mig_names[] = {
	[VFIO_DEVICE_STATE_ERROR] = "ERROR",
	[VFIO_DEVICE_STATE_STOP] = "STOP",
	[VFIO_DEVICE_STATE_RUNNING] = "RUNNING",
	[VFIO_DEVICE_STATE_STOP_COPY] = "STOP_COPY",
	[VFIO_DEVICE_STATE_RESUMING] = "RESUMING",
	[VFIO_DEVICE_STATE_RUNNING_P2P] = "RUNNING_P2P",
	[VFIO_USER_DEVICE_STATE_PRE_COPY] = "PRE_COPY",
	[VFIO_USER_DEVICE_STATE_PRE_COPY_P2P] = "PRE_COPY_P2P",
};

static const char *vfio_user_mig_name(u32 state)
{
	return state < ARRAY_SIZE(vfio_user_mig_names) ?
	       vfio_user_mig_names[state] : "?";
}

/*
 * DEVICE_FEATURE messages
 */

struct vfio_user_feature_msg {
	struct vfio_user_device_feature f;
	__le64 data[2];
};

/*
 * One DEVICE_FEATURE: @flags the operation and feature, @in (@in_len
 * bytes, a SET's data), the data of a GET's reply in @out (@out_len bytes,
 * all of which the reply must carry).
 */
static int vfio_user_feature(struct vfio_user_conn *conn, u32 flags,
			     const void *in, size_t in_len, void *out,
			     size_t out_len)
{
	struct vfio_user_feature_msg msg = { }, rep = { };
	struct vfio_user_call call = {
		.command = VFIO_USER_DEVICE_FEATURE,
		.payload = &msg,
		.len = sizeof(msg.f) + in_len,
		.reply = &rep,
		.reply_min = out ? sizeof(rep.f) + out_len : 0,
		.reply_max = sizeof(rep),
	};
	int ret;

	msg.f.argsz = cpu_to_le32(sizeof(msg.f) + max(in_len, out_len));
	msg.f.flags = cpu_to_le32(flags);
	if (in_len)
		memcpy(msg.data, in, in_len);
	ret = vfio_user_call(conn, &call);
	if (ret < 0)
		return ret;
	if (out)
		memcpy(out, rep.data, out_len);
	return 0;
}

static int vfio_user_mig_srv_get(struct vfio_user_conn *conn, u32 *state)
{
	struct vfio_user_device_feature_mig_state st;
	int ret;

	ret = vfio_user_feature(conn, VFIO_USER_DEVICE_FEATURE_GET |
				VFIO_USER_DEVICE_FEATURE_MIG_DEVICE_STATE,
				NULL, 0, &st, sizeof(st));
	if (ret)
		return ret;
	*state = le32_to_cpu(st.device_state);
	if (*state > VFIO_USER_DEVICE_STATE_PRE_COPY_P2P) {
		vfio_user_conn_broken(conn, "server reports migration state %u",
				      *state);
		return -EIO;
	}
	return 0;
}

static int vfio_user_mig_srv_set(struct vfio_user_device *udev,
				 struct vfio_user_conn *conn, u32 state)
{
	struct vfio_user_device_feature_mig_state st = {
		.device_state = cpu_to_le32(state),
	};
	int ret;

	ret = vfio_user_feature(conn, VFIO_USER_DEVICE_FEATURE_SET |
				VFIO_USER_DEVICE_FEATURE_MIG_DEVICE_STATE,
				&st, sizeof(st), NULL, 0);
	/* after a failure the server's state is unknown: asked again */
	WRITE_ONCE(udev->mig.srv_state,
		   ret ? VFIO_USER_DEVICE_STATE_ERROR : state);
	return ret;
}

/**
 * vfio_user_mig_query() - what migration a new server offers
 * @conn: the connection being attached, negotiated
 * @info: where the answer goes (@mig_flags, @mig_srv_flags,
 *	@mig_srv_state)
 *
 * DEVICE_FEATURE GET MIGRATION: any error reply, or no STOP_COPY, means
 * no migration (libvfio-user answers EINVAL without callbacks). A server
 * that offers it is asked its state. The device offers STOP_COPY and P2P,
 * and PRE_COPY where the server offers it, the kernel's FSM has it (6.2
 * on) and mig_pre_copy allows it (libvfio-user announces PRE_COPY for
 * every migratable device, whether its callbacks do pre-copy or not).
 *
 * Context: process context, attaching; bounded by the attach's deadline.
 * Return: 0, or -errno when the connection failed (not for a refusal).
 */
int vfio_user_mig_query(struct vfio_user_conn *conn,
			struct vfio_user_info *info)
{
	struct vfio_user_device_feature_migration m;
	u64 flags;
	int ret;

	info->mig_flags = 0;
	info->mig_srv_flags = 0;
	info->mig_srv_state = VFIO_USER_DEVICE_STATE_RUNNING;
	ret = vfio_user_feature(conn, VFIO_USER_DEVICE_FEATURE_GET |
				VFIO_USER_DEVICE_FEATURE_MIGRATION,
				NULL, 0, &m, sizeof(m));
	if (ret)
		return vfio_user_conn_dead(conn, NULL, 0) ? ret : 0;
	flags = le64_to_cpu(m.flags);
	if (!(flags & VFIO_USER_MIGRATION_STOP_COPY))
		return 0;
	ret = vfio_user_mig_srv_get(conn, &info->mig_srv_state);
	if (ret) {
		if (vfio_user_conn_dead(conn, NULL, 0))
			return ret;
		dev_warn(vfio_user_dev(conn->udev),
			 "server offers migration but does not tell its state (%d): not offered\n",
			 ret);
		return 0;
	}
	info->mig_srv_flags = flags;
	info->mig_flags = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P;
#ifdef VFIO_USER_HAVE_PRE_COPY
	if ((flags & VFIO_USER_MIGRATION_PRE_COPY) &&
	    READ_ONCE(vfio_user_mig_pre_copy))
		info->mig_flags |= VFIO_MIGRATION_PRE_COPY;
#endif
	return 0;
}

/* PRE_COPY or PRE_COPY_P2P: running (or quiesced), the data fd reading */
static bool vfio_user_mig_precopy(u32 state)
{
	return state == VFIO_USER_DEVICE_STATE_PRE_COPY ||
	       state == VFIO_USER_DEVICE_STATE_PRE_COPY_P2P;
}

/* A saving session: PRE_COPY, PRE_COPY_P2P, STOP_COPY share one data fd. */
static bool vfio_user_mig_saving(u32 state)
{
	return state == VFIO_USER_DEVICE_STATE_STOP_COPY ||
	       vfio_user_mig_precopy(state);
}

/* A session of either kind: the FSM owns a data fd. */
static bool vfio_user_mig_session(u32 state)
{
	return vfio_user_mig_saving(state) ||
	       state == VFIO_USER_DEVICE_STATE_RESUMING;
}

/*
 * The server's state for one of ours. Without the server's P2P, each P2P
 * state is the nearest server state that also initiates no DMA:
 * RUNNING_P2P is STOP, PRE_COPY_P2P is STOP_COPY (the session goes on, the
 * server stops; what it sends from then on is its final state). The one
 * arc that cannot follow, PRE_COPY_P2P -> PRE_COPY (a server cannot leave
 * STOP_COPY for PRE_COPY), is refused in vfio_user_mig_step().
 */
static u32 vfio_user_mig_wire(struct vfio_user_device *udev,
			      enum vfio_device_mig_state state)
{
	if (udev->mig.srv_flags & VFIO_USER_MIGRATION_P2P)
		return state;
	if (state == VFIO_DEVICE_STATE_RUNNING_P2P)
		return VFIO_USER_DEVICE_STATE_STOP;
	if ((u32)state == VFIO_USER_DEVICE_STATE_PRE_COPY_P2P)
		return VFIO_USER_DEVICE_STATE_STOP_COPY;
	return state;
}

/*
 * The data fd
 */

/**
 * struct vfio_user_mig_file - the data fd of one migration session
 * @filp: the anon file; the device holds a reference until it disables it
 * @lock: serialises reads, writes, GET_PRECOPY_INFO and the disable
 * @udev: the device; used only while !@disabled
 * @conn: the session's connection (a reference), NULL once disabled
 * @disabling: a disable waits for @lock: a read or write in flight stops
 *	after its current request
 * @disabled: the session ended: every call fails with -ENODEV
 * @saving: a saving session (read: PRE_COPY*, STOP_COPY), else RESUMING
 * @arc: an arc within the saving session waits for @lock: a read in
 *	flight returns what it has after its current request
 * @srv_precopy: the server is in PRE_COPY or PRE_COPY_P2P (set by the
 *	arcs, under @lock): a short MIG_DATA_READ is its end for now, not the
 *	end of the stream; without the server's P2P our PRE_COPY_P2P is its
 *	STOP_COPY, where a short reply is the end
 * @precopy: the FSM is in PRE_COPY or PRE_COPY_P2P (set by the arcs,
 *	under @lock): GET_PRECOPY_INFO answers, a read that finds the server
 *	dry for now fails with -ENOMSG,
 *	not the end of the stream
 * @eof: the server ended its data (in STOP_COPY)
 * @bytes: bytes received from the server so far
 * @ahead: a MIG_DATA_READ reply not yet all read, or NULL; its data is
 *	served before anything else (GET_PRECOPY_INFO reads ahead into it,
 *	a read() the user buffer could not take keeps the rest)
 * @ahead_len: bytes of device state in @ahead
 * @ahead_pos: of which read() has returned this many
 */
struct vfio_user_mig_file {
	struct file *filp;
	struct mutex lock;	/* reads, writes, precopy info, disable */
	struct vfio_user_device *udev;
	struct vfio_user_conn *conn;
	bool disabling;
	bool disabled;
	bool arc;
	bool saving;
	bool srv_precopy;
	bool precopy;
	bool eof;
	u64 bytes;
	struct vfio_user_req *ahead;
	u32 ahead_len;
	u32 ahead_pos;
};

/*
 * The session's connection with conn_sem held for reading, or an errno:
 * -ENODEV (session over), -EIO (server lost, detached or replaced).
 */
static int vfio_user_mig_file_conn(struct vfio_user_mig_file *migf,
				   struct vfio_user_conn **connp)
{
	int ret;

	if (migf->disabled)
		return -ENODEV;
	ret = vfio_user_get_conn(migf->udev, connp);
	if (ret)
		return ret == -ENOTCONN ? -EIO : ret;
	if (*connp != migf->conn) {
		vfio_user_put_conn(migf->udev);
		return -EIO;
	}
	return 0;
}

static void vfio_user_mig_drop_ahead(struct vfio_user_mig_file *migf)
{
	if (migf->ahead)
		vfio_user_req_put(migf->ahead);
	migf->ahead = NULL;
	migf->ahead_len = 0;
	migf->ahead_pos = 0;
}

/**
 * vfio_user_mig_fetch() - one MIG_DATA_READ into @migf->ahead
 * @migf: the data fd, @lock held, @ahead empty
 * @len: bytes wanted; at most max_data_xfer_size are asked for
 * @dry: set when the server sent fewer than asked: in STOP_COPY the end of
 *	the stream (@eof is set), in PRE_COPY* its end for now
 *
 * A reply with data becomes @ahead (@ahead_len bytes); one without leaves
 * @ahead NULL. The reply's length is checked against what was asked (a
 * violation breaks the connection); mig_max_bytes bounds the stream.
 *
 * Context: process context; waits on the server at most timeout_ms.
 * Return: 0, -EFBIG, -ENODEV, -EIO, -ETIMEDOUT, -EINTR, -ENOMEM or the
 * server's errno.
 */
static int vfio_user_mig_fetch(struct vfio_user_mig_file *migf, size_t len,
			       bool *dry)
{
	struct vfio_user_device *udev = migf->udev;
	struct vfio_user_mig_data d, *rep;
	struct vfio_user_call call = {
		.command = VFIO_USER_MIG_DATA_READ,
		.payload = &d,
		.len = sizeof(d),
		.reply_min = sizeof(d),
	};
	struct vfio_user_conn *conn;
	struct vfio_user_req *req;
	u64 room;
	u32 n, m = 0;
	int ret;

	lockdep_assert_held(&migf->lock);
	*dry = false;
	ret = vfio_user_mig_file_conn(migf, &conn);
	if (ret)
		return ret;
	if (migf->bytes > READ_ONCE(vfio_user_mig_max_bytes)) {
		vfio_user_put_conn(udev);
		dev_err_ratelimited(vfio_user_dev(udev),
				    "migration: the server's device state goes on past %llu bytes (mig_max_bytes); read fails\n",
				    migf->bytes);
		return -EFBIG;
	}
	n = min_t(size_t, len, conn->caps.max_xfer);
	/* at most one byte past the bound: a stream of exactly it ends */
	room = READ_ONCE(vfio_user_mig_max_bytes) - migf->bytes;
	if (room < n)
		n = room + 1;
	d.argsz = cpu_to_le32(sizeof(d) + n);
	d.size = cpu_to_le32(n);
	call.reply_max = sizeof(d) + n;
	req = vfio_user_req_alloc(&call);
	if (!req) {
		vfio_user_put_conn(udev);
		return -ENOMEM;
	}
	ret = vfio_user_req_run(conn, req);
	if (ret >= 0) {
		rep = req->reply;
		m = le32_to_cpu(rep->size);
		/* (libvfio-user pads its reply to what was asked) */
		if (m > n || ret < sizeof(*rep) + m) {
			vfio_user_conn_broken(conn,
					      "MIG_DATA_READ reply of %u bytes for %u in %d bytes",
					      m, n, ret);
			ret = -EIO;
		}
	}
	vfio_user_put_conn(udev);
	if (ret < 0)
		goto out;
	migf->bytes += m;
	if (migf->bytes > READ_ONCE(vfio_user_mig_max_bytes)) {
		dev_err_ratelimited(vfio_user_dev(udev),
				    "migration: the server's device state goes on past %llu bytes (mig_max_bytes); read fails\n",
				    READ_ONCE(vfio_user_mig_max_bytes));
		ret = -EFBIG;
		goto out;
	}
	if (m < n) {
		*dry = true;
		if (!migf->srv_precopy) {
			migf->eof = true;
			WRITE_ONCE(udev->mig.size_hint, migf->bytes);
		}
	}
	if (m) {
		migf->ahead = req;
		migf->ahead_len = m;
		migf->ahead_pos = 0;
		return 0;
	}
	ret = 0;
out:
	vfio_user_req_put(req);
	return ret;
}

/*
 * read(): what @ahead holds first, then MIG_DATA_READs until @len bytes,
 * the end of the stream or, in PRE_COPY*, the server's end for now. That
 * temporary end with nothing read is -ENOMSG (include/uapi/linux/vfio.h);
 * read() again, or poll GET_PRECOPY_INFO, for what the device adds.
 */
static ssize_t vfio_user_mig_read(struct file *filp, char __user *buf,
				  size_t len, loff_t *pos)
{
	struct vfio_user_mig_file *migf = filp->private_data;
	struct vfio_user_mig_data *rep;
	ssize_t ret = 0, done = 0;
	bool dry = false;
	size_t c;

	if (pos)
		return -ESPIPE;
	if (mutex_lock_killable(&migf->lock))
		return -EINTR;
	while (done < len && !READ_ONCE(migf->disabling) &&
	       !(done && READ_ONCE(migf->arc))) {
		if (!migf->ahead) {
			if (migf->eof || dry)
				break;
			ret = vfio_user_mig_fetch(migf, len - done, &dry);
			if (ret < 0 || !migf->ahead)
				break;
		}
		rep = migf->ahead->reply;
		c = min_t(size_t, len - done,
			  migf->ahead_len - migf->ahead_pos);
		if (copy_to_user(buf + done, rep->data + migf->ahead_pos, c)) {
			ret = -EFAULT;
			break;
		}
		done += c;
		migf->ahead_pos += c;
		if (migf->ahead_pos == migf->ahead_len)
			vfio_user_mig_drop_ahead(migf);
	}
	if (migf->disabled || (!done && READ_ONCE(migf->disabling)))
		ret = -ENODEV;
	else if (!done && !ret && dry && migf->srv_precopy)
		ret = -ENOMSG;
	mutex_unlock(&migf->lock);
	return done ? done : ret;
}

#ifdef VFIO_USER_HAVE_PRE_COPY
/*
 * VFIO_MIG_GET_PRECOPY_INFO. vfio-user has no message for it (MIG_DATA_SIZE
 * estimates a whole STOP_COPY stream, not what pre-copy has ready), so the
 * answer is a bounded read-ahead: with nothing held, one MIG_DATA_READ of
 * max_data_xfer_size bytes is kept in the file and served first by the
 * next read(). initial_bytes is what the file holds: more than 0 while
 * the server has pre-copy data, 0 at its end for now; a lower bound, not a
 * total. dirty_bytes is always 0: the protocol does not tell first-pass
 * from re-sent state.
 */
static long vfio_user_mig_precopy_info(struct vfio_user_mig_file *migf,
				       unsigned long arg)
{
	unsigned long minsz = offsetofend(struct vfio_precopy_info,
					  dirty_bytes);
	struct vfio_precopy_info info;
	bool dry;
	int ret = 0;

	if (copy_from_user(&info, (void __user *)arg, minsz))
		return -EFAULT;
	if (info.argsz < minsz)
		return -EINVAL;
	if (mutex_lock_killable(&migf->lock))
		return -EINTR;
	if (migf->disabled) {
		ret = -ENODEV;
		goto out;
	}
	if (!migf->precopy) {
		ret = -EINVAL;
		goto out;
	}
	if (!migf->ahead)
		ret = vfio_user_mig_fetch(migf, U32_MAX, &dry);
	if (ret)
		goto out;
	info.flags = 0;
	info.initial_bytes = migf->ahead_len - migf->ahead_pos;
	info.dirty_bytes = 0;
	if (copy_to_user((void __user *)arg, &info, minsz))
		ret = -EFAULT;
out:
	mutex_unlock(&migf->lock);
	return ret;
}
#endif

static long vfio_user_mig_ioctl(struct file *filp, unsigned int cmd,
				unsigned long arg)
{
#ifdef VFIO_USER_HAVE_PRE_COPY
	if (cmd == VFIO_MIG_GET_PRECOPY_INFO)
		return vfio_user_mig_precopy_info(filp->private_data, arg);
#endif
	return -ENOTTY;
}

/* One MIG_DATA_WRITE of at most @len bytes from @ubuf: bytes written. */
static ssize_t vfio_user_mig_write_chunk(struct vfio_user_mig_file *migf,
					 const char __user *ubuf, size_t len)
{
	struct vfio_user_device *udev = migf->udev;
	struct vfio_user_mig_data d;
	struct vfio_user_call call = {
		.command = VFIO_USER_MIG_DATA_WRITE,
		.payload = &d,
		.len = sizeof(d),
		.reply_max = sizeof(d),
	};
	struct vfio_user_conn *conn;
	struct vfio_user_req *req;
	u32 n;
	int ret;

	if (migf->disabled)
		return -ENODEV;
	/* (the session's reference keeps the caps; copied outside conn_sem) */
	n = min_t(size_t, len, migf->conn->caps.max_xfer);
	d.argsz = cpu_to_le32(sizeof(d) + n);
	d.size = cpu_to_le32(n);
	call.data_len = n;
	req = vfio_user_req_alloc(&call);
	if (!req)
		return -ENOMEM;
	if (copy_from_user(vfio_user_req_data(req), ubuf, n)) {
		ret = -EFAULT;
		goto out;
	}
	ret = vfio_user_mig_file_conn(migf, &conn);
	if (ret)
		goto out;
	ret = vfio_user_req_run(conn, req);
	vfio_user_put_conn(udev);
	if (ret >= 0) {
		migf->bytes += n;
		ret = n;
	}
out:
	vfio_user_req_put(req);
	return ret;
}

static ssize_t vfio_user_mig_write(struct file *filp, const char __user *buf,
				   size_t len, loff_t *pos)
{
	struct vfio_user_mig_file *migf = filp->private_data;
	ssize_t ret = 0, done = 0;

	if (pos)
		return -ESPIPE;
	if (mutex_lock_killable(&migf->lock))
		return -EINTR;
	while (done < len && !READ_ONCE(migf->disabling)) {
		ret = vfio_user_mig_write_chunk(migf, buf + done, len - done);
		if (ret <= 0)
			break;
		done += ret;
	}
	if (migf->disabled || (!done && READ_ONCE(migf->disabling)))
		ret = -ENODEV;
	mutex_unlock(&migf->lock);
	return done ? done : ret;
}

static int vfio_user_mig_release(struct inode *inode, struct file *filp)
{
	struct vfio_user_mig_file *migf = filp->private_data;

	/* the device dropped its reference at disable: the session is over */
	WARN_ON_ONCE(migf->conn || migf->ahead);
	mutex_destroy(&migf->lock);
	kfree(migf);
	return 0;
}

static const struct file_operations vfio_user_mig_save_fops = {
	.owner		= THIS_MODULE,
	.read		= vfio_user_mig_read,
	.unlocked_ioctl	= vfio_user_mig_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.release	= vfio_user_mig_release,
};

static const struct file_operations vfio_user_mig_resume_fops = {
	.owner		= THIS_MODULE,
	.write		= vfio_user_mig_write,
	.unlocked_ioctl	= vfio_user_mig_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.release	= vfio_user_mig_release,
};

static struct vfio_user_mig_file *
vfio_user_mig_file_new(struct vfio_user_device *udev,
		       struct vfio_user_conn *conn,
		       enum vfio_device_mig_state state)
{
	bool saving = state != VFIO_DEVICE_STATE_RESUMING;
	struct vfio_user_mig_file *migf;
	struct file *filp;

	migf = kzalloc(sizeof(*migf), GFP_KERNEL);
	if (!migf)
		return ERR_PTR(-ENOMEM);
	mutex_init(&migf->lock);
	migf->udev = udev;
	migf->saving = saving;
	migf->precopy = vfio_user_mig_precopy(state);
	migf->srv_precopy = vfio_user_mig_precopy(vfio_user_mig_wire(udev, state));
	filp = anon_inode_getfile("vfio_user_mig", saving ?
				  &vfio_user_mig_save_fops :
				  &vfio_user_mig_resume_fops,
				  migf, saving ? O_RDONLY : O_WRONLY);
	if (IS_ERR(filp)) {
		mutex_destroy(&migf->lock);
		kfree(migf);
		return ERR_CAST(filp);
	}
	stream_open(filp->f_inode, filp);
	kref_get(&conn->ref);
	migf->conn = conn;
	migf->filp = filp;
	return migf;
}

/* Ends the session's data fd: waits for a read or write in flight. */
static void vfio_user_mig_file_disable(struct vfio_user_device *udev)
{
	struct vfio_user_mig_file *migf = udev->mig.file;
	struct vfio_user_conn *conn;

	lockdep_assert_held(&udev->mig.lock);
	if (!migf)
		return;
	WRITE_ONCE(migf->disabling, true);
	mutex_lock(&migf->lock);
	migf->disabled = true;
	conn = migf->conn;
	migf->conn = NULL;
	vfio_user_mig_drop_ahead(migf);
	mutex_unlock(&migf->lock);
	vfio_user_conn_put(conn);
	udev->mig.file = NULL;
	fput(migf->filp);
}

/*
 * The FSM
 */

/* The FSM goes to ERROR: session over, with the cause in the log. */
static void vfio_user_mig_fail(struct vfio_user_device *udev, int err,
			       const char *fmt, ...)
{
	struct vfio_user_mig *mig = &udev->mig;
	struct va_format vaf;
	va_list args;

	lockdep_assert_held(&mig->lock);
	va_start(args, fmt);
	vaf.fmt = fmt;
	vaf.va = &args;
	dev_err(vfio_user_dev(udev), "migration: %pV in %s (%d); device state ERROR until reset\n",
		&vaf, vfio_user_mig_name(mig->state), err);
	va_end(args);
	vfio_user_mig_file_disable(udev);
	mig->state = VFIO_DEVICE_STATE_ERROR;
	if (mig->conn) {
		vfio_user_conn_put(mig->conn);
		mig->conn = NULL;
	}
}

/*
 * Outside RUNNING the FSM belongs to the connection it started on: that
 * connection dead, or another one published, puts it in ERROR.
 */
static void vfio_user_mig_check(struct vfio_user_device *udev)
{
	struct vfio_user_mig *mig = &udev->mig;
	char reason[VFIO_USER_REASON_LEN];
	struct vfio_user_conn *cur;

	if (!mig->conn)
		return;
	spin_lock(&udev->state_lock);
	cur = udev->conn;
	spin_unlock(&udev->state_lock);
	if (vfio_user_conn_dead(mig->conn, reason, sizeof(reason)))
		vfio_user_mig_fail(udev, -EIO, "server lost: %s", reason);
	else if (cur != mig->conn)
		vfio_user_mig_fail(udev, -EIO, "server %s",
				   cur ? "replaced" : "detached");
}

/* One arc of the core's FSM: the new data fd, NULL, or an ERR_PTR. */
static struct file *vfio_user_mig_step(struct vfio_user_device *udev,
				       enum vfio_device_mig_state next)
{
	struct vfio_user_mig *mig = &udev->mig;
	enum vfio_device_mig_state cur = mig->state;
	struct vfio_user_mig_file *migf = NULL;
	struct vfio_user_conn *conn;
	u32 from = vfio_user_mig_wire(udev, cur);
	u32 to = vfio_user_mig_wire(udev, next);
	u32 now;
	int ret;

	if (from == VFIO_USER_DEVICE_STATE_STOP_COPY &&
	    vfio_user_mig_precopy(to)) {
		dev_warn_ratelimited(vfio_user_dev(udev),
				     "migration: %s -> %s needs a server with P2P (its STOP_COPY cannot go back to PRE_COPY)\n",
				     vfio_user_mig_name(cur),
				     vfio_user_mig_name(next));
		return ERR_PTR(-EOPNOTSUPP);
	}
	ret = vfio_user_get_conn(udev, &conn);
	if (ret == -EINTR)
		return ERR_PTR(ret);
	if (ret) {
		vfio_user_mig_fail(udev, ret, "no server for %s -> %s",
				   vfio_user_mig_name(cur),
				   vfio_user_mig_name(next));
		return ERR_PTR(-EIO);
	}
	if (mig->conn && conn != mig->conn) {
		vfio_user_put_conn(udev);
		vfio_user_mig_fail(udev, -EIO, "server replaced");
		return ERR_PTR(-EIO);
	}
	if (from != to) {
		ret = vfio_user_mig_srv_set(udev, conn, to);
		if (ret && !vfio_user_conn_dead(conn, NULL, 0) &&
		    !fatal_signal_pending(current) &&
		    !vfio_user_mig_srv_get(conn, &now) && now == from) {
			/*
			 * Refused, the server where it was: the consumer may
			 * go on or back; a session keeps its data fd.
			 */
			WRITE_ONCE(udev->mig.srv_state, from);
			vfio_user_put_conn(udev);
			dev_warn_ratelimited(vfio_user_dev(udev),
					     "migration: server refused %s -> %s (%d)\n",
					     vfio_user_mig_name(from),
					     vfio_user_mig_name(to), ret);
			return ERR_PTR(ret);
		}
		if (ret) {
			vfio_user_put_conn(udev);
			vfio_user_mig_fail(udev, ret, "%s -> %s failed",
					   vfio_user_mig_name(cur),
					   vfio_user_mig_name(next));
			return ERR_PTR(ret);
		}
	}
	if (!mig->conn && next != VFIO_DEVICE_STATE_RUNNING) {
		kref_get(&conn->ref);
		mig->conn = conn;
	}
	vfio_user_put_conn(udev);

	/*
	 * Leaving a session: its data fd ends. After conn_sem: a read or
	 * write holds the file's lock, then takes conn_sem. PRE_COPY,
	 * PRE_COPY_P2P and STOP_COPY are one saving session: within it the
	 * fd stays (the core hands out none for PRE_COPY* -> STOP_COPY) and
	 * learns whether a short read is the end for now or for good.
	 */
	if (vfio_user_mig_saving(cur) && vfio_user_mig_saving(next)) {
		if (WARN_ON_ONCE(!mig->file)) {
			vfio_user_mig_fail(udev, -EIO, "no data fd for %s",
					   vfio_user_mig_name(next));
			return ERR_PTR(-EIO);
		}
		/* a read in flight returns what it has after its request */
		WRITE_ONCE(mig->file->arc, true);
		mutex_lock(&mig->file->lock);
		mig->file->precopy = vfio_user_mig_precopy(next);
		mig->file->srv_precopy = vfio_user_mig_precopy(to);
		WRITE_ONCE(mig->file->arc, false);
		mutex_unlock(&mig->file->lock);
	} else {
		if (vfio_user_mig_session(cur))
			vfio_user_mig_file_disable(udev);
		if (vfio_user_mig_session(next))
			migf = vfio_user_mig_file_new(udev, mig->conn, next);
		if (IS_ERR(migf)) {
			vfio_user_mig_fail(udev, PTR_ERR(migf),
					   "no data fd for %s",
					   vfio_user_mig_name(next));
			return ERR_CAST(migf);
		}
		if (migf)
			mig->file = migf;
	}
	mig->state = next;
	if (next == VFIO_DEVICE_STATE_RUNNING && mig->conn) {
		vfio_user_conn_put(mig->conn);
		mig->conn = NULL;
	}
	return migf ? get_file(migf->filp) : NULL;
}

/**
 * vfio_user_mig_set_state() - vfio_migration_ops.migration_set_state
 * @vdev: the VFIO device
 * @new_state: the state the consumer asks for
 *
 * Walks the core's FSM one arc at a time; arcs the core refuses (ERROR,
 * PRE_COPY* when not offered, ...) fail with -EINVAL before anything
 * reaches the server.
 *
 * Context: process context; each arc waits on the server at most
 * timeout_ms.
 * Return: the data fd's file when @new_state starts a session, NULL, or
 * an ERR_PTR: -EINVAL, -ENOTTY (no migration), -EIO (server lost: the
 * state is ERROR), -EINTR, -EOPNOTSUPP (PRE_COPY_P2P -> PRE_COPY on a
 * server without P2P), or the server's errno (the arcs before the refused
 * one taken, the state where they led).
 */
static struct file *
vfio_user_mig_set_state(struct vfio_device *vdev,
			enum vfio_device_mig_state new_state)
{
	struct vfio_user_device *udev = to_vfio_user_device(vdev);
	struct vfio_user_mig *mig = &udev->mig;
	enum vfio_device_mig_state next;
	struct file *res = NULL;
	int ret;

	if (!vdev->migration_flags)
		return ERR_PTR(-ENOTTY);
	if (mutex_lock_killable(&mig->lock))
		return ERR_PTR(-EINTR);
	vfio_user_mig_check(udev);
	while (mig->state != new_state) {
		/* (the core WARNs for ERROR as the current state) */
		if (mig->state == VFIO_DEVICE_STATE_ERROR) {
			res = ERR_PTR(-EINVAL);
			break;
		}
		ret = vfio_mig_get_next_state(vdev, mig->state, new_state,
					      &next);
		if (ret) {
			res = ERR_PTR(ret);
			break;
		}
		res = vfio_user_mig_step(udev, next);
		if (IS_ERR(res))
			break;
		if (WARN_ON(res && next != new_state)) {
			fput(res);
			res = ERR_PTR(-EINVAL);
			break;
		}
	}
	mutex_unlock(&mig->lock);
	return res;
}

/**
 * vfio_user_mig_get_state() - vfio_migration_ops.migration_get_state
 * @vdev: the VFIO device
 * @state: the current state
 *
 * Context: process context; sends nothing to the server, may wait for an
 * arc or a data fd request in flight (each bounded).
 * Return: 0, -ENOTTY (no migration) or -EINTR.
 */
static int vfio_user_mig_get_state(struct vfio_device *vdev,
				   enum vfio_device_mig_state *state)
{
	struct vfio_user_device *udev = to_vfio_user_device(vdev);

	if (!vdev->migration_flags)
		return -ENOTTY;
	if (mutex_lock_killable(&udev->mig.lock))
		return -EINTR;
	vfio_user_mig_check(udev);
	*state = udev->mig.state;
	mutex_unlock(&udev->mig.lock);
	return 0;
}

/**
 * vfio_user_mig_get_data_size() - vfio_migration_ops.migration_get_data_size
 * @vdev: the VFIO device
 * @stop_copy_length: bytes a STOP_COPY session would stream now
 *
 * The server's DEVICE_FEATURE GET MIG_DATA_SIZE where it answers one,
 * else the size of the last stream read, else 1 MiB; never 0 (QEMU sizes
 * its buffer by it).
 *
 * Context: process context; waits on the server at most timeout_ms.
 * Return: 0, -ENOTTY (no migration), -ENOTCONN, -EIO or -EINTR.
 */
static int vfio_user_mig_get_data_size(struct vfio_device *vdev,
				       unsigned long *stop_copy_length)
{
	struct vfio_user_device *udev = to_vfio_user_device(vdev);
	struct vfio_user_device_feature_mig_data_size ds;
	struct vfio_user_conn *conn;
	u64 size;
	int ret;

	if (!vdev->migration_flags)
		return -ENOTTY;
	ret = vfio_user_get_conn(udev, &conn);
	if (ret)
		return ret;
	ret = vfio_user_feature(conn, VFIO_USER_DEVICE_FEATURE_GET |
				VFIO_USER_DEVICE_FEATURE_MIG_DATA_SIZE,
				NULL, 0, &ds, sizeof(ds));
	if (ret && (vfio_user_conn_dead(conn, NULL, 0) ||
		    fatal_signal_pending(current))) {
		vfio_user_put_conn(udev);
		return ret;
	}
	vfio_user_put_conn(udev);
	size = ret ? 0 : le64_to_cpu(ds.stop_copy_length);
	if (!size)
		size = READ_ONCE(udev->mig.size_hint) ?: VFIO_USER_MIG_DEF_SIZE;
	*stop_copy_length = max_t(u64, size, PAGE_SIZE);
	return 0;
}

#ifndef VFIO_USER_HAVE_MIG_DATA_SIZE
/**
 * vfio_user_device_feature() - vfio_device_ops.device_feature (before 6.2)
 * @vdev: the VFIO device
 * @flags: the feature and operation
 * @arg: the feature's data in user memory
 * @argsz: its size
 *
 * Answers VFIO_DEVICE_FEATURE_MIG_DATA_SIZE (9), which these kernels do
 * not know, from vfio_user_mig_get_data_size().
 *
 * Context: process context; waits on the server at most timeout_ms.
 * Return: 0, -ENOTTY (another feature, or no migration), or a negative
 * errno.
 */
int vfio_user_device_feature(struct vfio_device *vdev, u32 flags,
			     void __user *arg, size_t argsz)
{
	unsigned long length;
	u64 v;
	int ret;

	if ((flags & VFIO_DEVICE_FEATURE_MASK) != VFIO_USER_MIG_DATA_SIZE_FEATURE)
		return -ENOTTY;
	ret = vfio_check_feature(flags, argsz, VFIO_DEVICE_FEATURE_GET,
				 sizeof(v));
	if (ret != 1)
		return ret;
	ret = vfio_user_mig_get_data_size(vdev, &length);
	if (ret)
		return ret;
	v = length;
	return copy_to_user(arg, &v, sizeof(v)) ? -EFAULT : 0;
}
#endif

const struct vfio_migration_ops vfio_user_mig_ops = {
	.migration_set_state	= vfio_user_mig_set_state,
	.migration_get_state	= vfio_user_mig_get_state,
#ifdef VFIO_USER_HAVE_MIG_DATA_SIZE
	.migration_get_data_size = vfio_user_mig_get_data_size,
#endif
};

/*
 * Device lifecycle
 */

/**
 * vfio_user_mig_reset_locked() - the consumer's FSM back to RUNNING
 * @udev: the device, mig.lock held
 *
 * For VFIO_DEVICE_RESET and close_device: ends a session, forgets its
 * connection. The server is not told here (see vfio_user_mig_resume()).
 *
 * Context: process context; waits for a data fd's request in flight.
 * Return: whether the FSM was elsewhere than RUNNING.
 */
bool vfio_user_mig_reset_locked(struct vfio_user_device *udev)
{
	struct vfio_user_mig *mig = &udev->mig;
	bool was = mig->state != VFIO_DEVICE_STATE_RUNNING;

	lockdep_assert_held(&mig->lock);
	vfio_user_mig_file_disable(udev);
	mig->state = VFIO_DEVICE_STATE_RUNNING;
	if (mig->conn) {
		vfio_user_conn_put(mig->conn);
		mig->conn = NULL;
	}
	return was;
}

/**
 * vfio_user_mig_reset() - vfio_user_mig_reset_locked(), for close_device
 * @udev: the device
 */
void vfio_user_mig_reset(struct vfio_user_device *udev)
{
	mutex_lock(&udev->mig.lock);
	vfio_user_mig_reset_locked(udev);
	mutex_unlock(&udev->mig.lock);
}

/* A server in @state (not RUNNING) to RUNNING: up to three requests. */
static int vfio_user_mig_run(struct vfio_user_device *udev,
			     struct vfio_user_conn *conn, u32 state)
{
	struct vfio_user_call reset = { .command = VFIO_USER_DEVICE_RESET };
	int ret = 0;

	/*
	 * Out of ERROR, and out of a session whose way to RUNNING could fail
	 * (RESUMING -> STOP loads what was written): DEVICE_RESET ends it.
	 * Its error is not final: a server may refuse it while stopped.
	 */
	if (state != VFIO_USER_DEVICE_STATE_RUNNING &&
	    state != VFIO_USER_DEVICE_STATE_STOP &&
	    state != VFIO_USER_DEVICE_STATE_RUNNING_P2P) {
		ret = vfio_user_call(conn, &reset);
		if (ret < 0 && vfio_user_conn_dead(conn, NULL, 0))
			return ret;
		ret = vfio_user_mig_srv_get(conn, &state);
		if (ret)
			return ret;
	}
	if (state != VFIO_USER_DEVICE_STATE_RUNNING)
		ret = vfio_user_mig_srv_set(udev, conn,
					    VFIO_USER_DEVICE_STATE_RUNNING);
	else
		WRITE_ONCE(udev->mig.srv_state, state);
	if (ret)
		dev_err(vfio_user_dev(udev),
			"migration: the server stays in %s: SET RUNNING failed (%d)\n",
			vfio_user_mig_name(state), ret);
	return ret;
}

/**
 * vfio_user_mig_resume() - a server left stopped back to RUNNING
 * @udev: the device
 * @conn: its live connection, conn_sem held for reading
 *
 * A server stays where the last consumer left it (a migrated source
 * stays stopped); the next open, or a reset, runs it again. ERROR and an
 * unfinished session are left by DEVICE_RESET (the spec: reset returns to
 * RUNNING), then SET RUNNING for servers whose reset keeps the migration
 * state (libvfio-user).
 *
 * Context: process context; at most four requests, each bounded.
 * Return: 0 or a negative errno.
 */
int vfio_user_mig_resume(struct vfio_user_device *udev,
			 struct vfio_user_conn *conn)
{
	u32 state;
	int ret;

	if (!udev->vdev.migration_flags ||
	    READ_ONCE(udev->mig.srv_state) == VFIO_USER_DEVICE_STATE_RUNNING)
		return 0;
	ret = vfio_user_mig_srv_get(conn, &state);
	if (ret)
		return ret;
	return vfio_user_mig_run(udev, conn, state);
}

/**
 * vfio_user_mig_attach() - a new server left stopped runs again
 * @udev: the device
 * @conn: the connection being attached, not yet published
 * @info: what vfio_user_mig_query() found; @mig_srv_state updated
 *
 * A server the last client left outside RUNNING (a client that went away
 * in STOP_COPY leaves our library's server in STOP) runs again before a
 * consumer whose FSM is RUNNING gets it back. One in the middle of a
 * session is left alone: that session ends in ERROR.
 *
 * Context: process context, attaching (attach_mutex held, not conn_sem).
 * Return: 0 or a negative errno (the attach fails).
 */
int vfio_user_mig_attach(struct vfio_user_device *udev,
			 struct vfio_user_conn *conn,
			 struct vfio_user_info *info)
{
	enum vfio_device_mig_state state;
	int ret;

	if (!info->mig_flags ||
	    info->mig_srv_state == VFIO_USER_DEVICE_STATE_RUNNING)
		return 0;
	if (mutex_lock_killable(&udev->mig.lock))
		return -EINTR;
	state = udev->mig.state;
	mutex_unlock(&udev->mig.lock);
	if (state != VFIO_DEVICE_STATE_RUNNING)
		return 0;
	ret = vfio_user_mig_run(udev, conn, info->mig_srv_state);
	if (!ret)
		info->mig_srv_state = VFIO_USER_DEVICE_STATE_RUNNING;
	return ret;
}

/**
 * vfio_user_mig_publish() - a new server's migration offer becomes ours
 * @udev: the device, conn_sem held for writing
 * @info: what vfio_user_mig_query() found
 *
 * The flags change only while no consumer has the device open; one that
 * has must find the same (vfio_user_publish() checks).
 *
 * Context: process context, attaching.
 */
void vfio_user_mig_publish(struct vfio_user_device *udev,
			   struct vfio_user_info *info)
{
	lockdep_assert_held_write(&udev->conn_sem);
	udev->mig.srv_flags = info->mig_srv_flags;
	WRITE_ONCE(udev->mig.srv_state, info->mig_srv_state);
	if (!udev->open)
		udev->vdev.migration_flags = info->mig_flags;
}

/**
 * vfio_user_mig_init() - set up the FSM of a new device
 * @udev: the device
 */
void vfio_user_mig_init(struct vfio_user_device *udev)
{
	mutex_init(&udev->mig.lock);
	udev->mig.state = VFIO_DEVICE_STATE_RUNNING;
	udev->mig.srv_state = VFIO_USER_DEVICE_STATE_RUNNING;
}

/**
 * vfio_user_mig_exit() - undo vfio_user_mig_init()
 * @udev: the device, closed
 */
void vfio_user_mig_exit(struct vfio_user_device *udev)
{
	WARN_ON_ONCE(udev->mig.file || udev->mig.conn);
	mutex_destroy(&udev->mig.lock);
}
