// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio_user_mdev - VERSION negotiation.
 *
 * The first message on a new connection: we send our version and
 * capabilities, the server answers with its own (json.c parses them), and
 * the connection runs with the smaller of each limit.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/file.h>
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "vfio_user_mdev.h"

/*
 * Our capabilities: the fds we take with one message and the twin socket
 * (neither when the attaching writer cannot receive fds), our
 * max_data_xfer_size.
 */
static int vfio_user_version_json(struct vfio_user_conn *conn, char *buf,
				  size_t len)
{
	bool fds = vfio_user_conn_takes_fds(conn);

	return scnprintf(buf, len,
			 "{\"capabilities\":{\"max_msg_fds\":%u,\"max_data_xfer_size\":%u,\"pgsizes\":%lu%s}}",
			 fds ? VFIO_USER_MAX_RX_FDS : 0, conn->max_xfer,
			 PAGE_SIZE,
			 fds ? ",\"twin_socket\":{\"supported\":true}" : "") + 1;
}

/*
 * The fds of the VERSION reply: the twin socket if the server offers one
 * and passed it; any other fd is dropped.
 */
static int vfio_user_version_twin(struct vfio_user_conn *conn,
				  struct file **files)
{
	u32 index = conn->caps.twin_fd_index;
	struct file *file;

	/* What we did not offer, we do not take. */
	if (!conn->caps.twin_socket || !vfio_user_conn_takes_fds(conn)) {
		conn->caps.twin_socket = false;
		return 0;
	}
	if (index >= VFIO_USER_MAX_RX_FDS || !files[index]) {
		dev_warn(vfio_user_dev(conn->udev),
			 "server offers a twin socket (fd %u) but passed no such fd; its commands come on the main socket\n",
			 index);
		conn->caps.twin_socket = false;
		return 0;
	}
	file = files[index];
	files[index] = NULL;
	return vfio_user_conn_twin(conn, file);
}

/* Checks the server's reply of @len bytes and takes its capabilities. */
static int vfio_user_version_check(struct vfio_user_conn *conn,
				   struct vfio_user_version *rver, int len)
{
	struct device *dev = vfio_user_dev(conn->udev);
	int jlen = len - sizeof(*rver);

	if (le16_to_cpu(rver->major) != VFIO_USER_MAJOR) {
		dev_err(dev, "server speaks vfio-user %u.%u, we speak %u.x\n",
			le16_to_cpu(rver->major), le16_to_cpu(rver->minor),
			VFIO_USER_MAJOR);
		vfio_user_conn_broken(conn, "incompatible major version %u",
				      le16_to_cpu(rver->major));
		return -EPROTONOSUPPORT;
	}
	conn->caps.minor = min_t(u16, le16_to_cpu(rver->minor), VFIO_USER_MINOR);

	/* The JSON must end with its NUL, and have no other NUL. */
	if (jlen && (rver->data[jlen - 1] != '\0' ||
		     strnlen(rver->data, jlen) != jlen - 1 ||
		     vfio_user_parse_version_json(rver->data, jlen - 1,
						  &conn->caps))) {
		vfio_user_conn_broken(conn,
				      "malformed VERSION capabilities (%d bytes)",
				      jlen);
		return -EPROTO;
	}
	/* The smaller of what each side announced (the server's default: 1 MiB). */
	conn->caps.max_xfer = min(conn->caps.max_xfer, conn->max_xfer);
	if (conn->caps.max_xfer < VFIO_USER_MIN_XFER) {
		vfio_user_conn_broken(conn, "max_data_xfer_size %u is too small",
				      conn->caps.max_xfer);
		return -EPROTO;
	}
	return 0;
}

/**
 * vfio_user_negotiate() - VERSION, the first message on a connection
 * @conn: a connected connection nobody else uses yet
 *
 * Sends our version and capabilities and takes the server's: minor
 * version, max_msg_fds, max_data_xfer_size (the smaller of both sides),
 * max_dma_maps, pgsizes, and the twin socket if it offers one.
 *
 * Context: process context; sleeps killably, at most until the attach's
 * deadline.
 * Return: 0, or -ETIMEDOUT, -EPROTONOSUPPORT (major version), -EPROTO
 * (malformed reply), -ECONNRESET, -EINTR, -ENOMEM, the server's -errno.
 */
int vfio_user_negotiate(struct vfio_user_conn *conn)
{
	struct vfio_user_version ver = {
		.major = cpu_to_le16(VFIO_USER_MAJOR),
		.minor = cpu_to_le16(VFIO_USER_MINOR),
	};
	struct vfio_user_call call = {
		.command = VFIO_USER_VERSION,
		.payload = &ver,
		.len = sizeof(ver),
		.reply_min = sizeof(struct vfio_user_version),
		.reply_max = sizeof(struct vfio_user_version) +
			     VFIO_USER_MAX_VERSION_JSON,
	};
	struct file *files[VFIO_USER_MAX_RX_FDS] = { };
	struct vfio_user_version *rver;
	char json[192];
	unsigned int i;
	int len, ret;

	call.data = json;
	call.data_len = vfio_user_version_json(conn, json, sizeof(json));
	rver = kmalloc(call.reply_max + 1, GFP_KERNEL);
	if (!rver)
		return -ENOMEM;
	call.reply = rver;
	call.rx_files = files;
	call.rx_max_files = ARRAY_SIZE(files);

	len = vfio_user_call(conn, &call);
	if (len < 0) {
		ret = len;
		goto out;
	}
	ret = vfio_user_version_check(conn, rver, len);
	if (ret)
		goto out;
	WRITE_ONCE(conn->versioned, true);
	/* Replies carry at most max_xfer bytes of data after a region header. */
	WRITE_ONCE(conn->max_payload,
		   max_t(size_t, conn->caps.max_xfer +
			 sizeof(struct vfio_user_dma_access),
			 VFIO_USER_MAX_REGION_INFO));
	ret = vfio_user_version_twin(conn, files);
out:
	for (i = 0; i < ARRAY_SIZE(files); i++)
		if (files[i])
			fput(files[i]);
	kfree(rver);
	return ret;
}
