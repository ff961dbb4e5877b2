// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libvfio-user-server: the connection (layer 6). Listening, accepting or
 * attaching a client socket, the event loop (vus_dev__process(),
 * vus_dev__run()) that reads client messages in stream order and answers
 * each, and the teardown when a client goes away (both sockets, when the
 * twin socket was negotiated). Calls handlers.c, migration.c, dma.c, irq.c,
 * msg.c, util.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "vus-internal.h"

static int vus_epoll_add(struct vus_dev *dev, int fd)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };

	if (epoll_ctl(dev->epfd, EPOLL_CTL_ADD, fd, &ev))
		return -errno;
	return 0;
}

void vus_dev__disconnect(struct vus_dev *dev)
{
	bool was = dev && dev->negotiated;

	if (!dev || dev->conn.fd < 0)
		return;
	if (dev->in_handler) {
		/* torn down once the current handler returns */
		dev->conn_dead = true;
		return;
	}
	epoll_ctl(dev->epfd, EPOLL_CTL_DEL, dev->conn.fd, NULL);
	close(dev->conn.fd);
	dev->conn.fd = -1;
	vus_rx_reset(&dev->conn);
	vus_twin_close(dev);
	vus_queue_drop_all(dev);
	vus_dma_drop_all(dev);
	vus_irq_drop_all(dev);
	vus_mig_disconnect(dev);
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
	int err;

	if (!dev || fd < 0) {
		if (fd >= 0)
			close(fd);
		return vus_err(-EINVAL);
	}
	if (dev->conn.fd >= 0) {
		close(fd);
		return vus_err(-EBUSY);
	}
	err = vus_sock_set_timeouts(dev, fd);
	if (err) {
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
	dev->conn.fd = fd;
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
	if (dev->conn.fd < 0) {
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
	return dev && vus_conn_ready(dev);
}

bool vus_dev__twin_socket(const struct vus_dev *dev)
{
	return vus_dev__connected(dev) && dev->twin.fd >= 0;
}

int vus_dev__peer_caps(const struct vus_dev *dev, struct vus_peer_caps *caps)
{
	if (!vus_dev__connected(dev) || !caps)
		return vus_err(-ENOTCONN);
	*caps = dev->peer;
	return 0;
}

/* ---- the loop ------------------------------------------------------------ */

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
	[VFIO_USER_REGION_WRITE_MULTI] = "REGION_WRITE_MULTI",
	[VFIO_USER_DEVICE_FEATURE] = "DEVICE_FEATURE",
	[VFIO_USER_MIG_DATA_READ] = "MIG_DATA_READ",
	[VFIO_USER_MIG_DATA_WRITE] = "MIG_DATA_WRITE",
};

static const char *vus_cmd_name(unsigned int cmd)
{
	if (cmd < VUS_ARRAY_SIZE(vus_cmd_names) && vus_cmd_names[cmd])
		return vus_cmd_names[cmd];
	return "?";
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
	if (r.close_fd && r.fd >= 0)
		close(r.fd);
	free(r.buf);
	vus_msg_free(m);
}

static void vus_drain_queue(struct vus_dev *dev)
{
	struct vus_msg *m;

	while (!dev->conn_dead && (m = vus_queue_pop(dev)))
		vus_handle_msg(dev, m);
}

static int vus_accept(struct vus_dev *dev)
{
	int fd = accept4(dev->listen_fd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -errno;
	if (dev->conn.fd >= 0) {
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
		if (dev->conn_dead || dev->conn.fd < 0 ||
		    vus_recv_msg(dev, &dev->conn, &m, vus_msg_limit(dev), NULL,
				 0, true))
			break;
		vus_handle_msg(dev, m);
	} while (!dev->conn_dead && dev->conn.fd >= 0 &&
		 vus_rx_avail(&dev->conn));
	vus_drain_queue(dev);
}

/*
 * The twin socket woke the loop, outside any DMA wait. Every reply to our
 * DMA commands has been taken by then, so anything the client sends there
 * now is a violation, and its closing the twin socket ends the connection
 * as closing the main one does. An event whose data a DMA wait has since
 * taken finds nothing and is no error.
 */
static void vus_twin_event(struct vus_dev *dev)
{
	ssize_t n;
	char c;

	n = recv(dev->twin.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (!n) {
		pr_debug("client closed the twin socket\n");
		dev->conn_dead = true;
	} else if (n < 0) {
		vus_conn_broken(dev, "receive on the twin socket", -errno);
	} else {
		pr_warn("twin socket: data while no DMA command is in flight\n");
		vus_conn_broken(dev, "unsolicited message on the twin socket",
				-EPROTO);
	}
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
			if (dev->conn.fd >= 0 && !dev->conn_dead &&
			    vus_rx_avail(&dev->conn))
				vus_serve_conn(dev);
		} else if (fd == dev->listen_fd && dev->conn.fd < 0) {
			int err = vus_accept(dev);

			if (err)
				pr_warn("accept: %s\n", strerror(-err));
		} else if (fd == dev->conn.fd && dev->conn.fd >= 0 &&
			   !dev->conn_dead) {
			vus_serve_conn(dev);
		} else if (fd == dev->twin.fd && dev->twin.fd >= 0 &&
			   !dev->conn_dead) {
			vus_twin_event(dev);
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

