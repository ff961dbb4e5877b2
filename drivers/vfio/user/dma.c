// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio_user_mdev - DMA for the server.
 *
 * VFIO tells an mdev only about unmaps, never about the consumer's maps.
 * So after VERSION the client announces one IOVA window to the server, as
 * fd-less DMA_MAP regions of at most 8 TiB each, and the server reaches
 * the consumer's memory with DMA_READ / DMA_WRITE messages, which a work
 * item serves with vfio_dma_rw(). vfio_dma_rw() checks every access
 * against the consumer's current IOMMU mappings, so an IOVA the consumer
 * has not mapped, or has just unmapped, gets an error reply: the dma_unmap
 * op has nothing to wait for.
 *
 * A DMA_READ reply is built in pages of its own, header included, which
 * the socket takes by reference where it can (see
 * vfio_user_send_reply_pages()): the consumer's memory is copied once in
 * the kernel, by vfio_dma_rw(), and once more by the server's read. The
 * consumer's pages are never pinned, so an unmap never waits for the
 * server.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bvec.h>
#include <linux/fdtable.h>
#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/sizes.h>
#include <linux/uio.h>
#include <linux/slab.h>
#include <linux/vfio.h>

#include "vfio_user_mdev.h"
#include "trace.h"

/* Pieces of DMA data: 64 KiB where they come easily, else single pages. */
#define VFIO_USER_DMA_PIECE		SZ_64K

/**
 * vfio_user_dma_pages_free() - free DMA data pages
 * @dp: the pages, or NULL
 */
void vfio_user_dma_pages_free(struct vfio_user_dma_pages *dp)
{
	unsigned int i;

	if (!dp)
		return;
	for (i = 0; i < dp->nr; i++)
		put_page(dp->bv[i].bv_page);
	kvfree(dp);
}

/**
 * vfio_user_dma_pages_alloc() - pages for DMA data
 * @size: bytes, at least 1
 *
 * In pieces of up to 64 KiB while they come without direct reclaim or
 * compaction, single pages from the first failure on: never one large
 * vmalloc area to map and tear down per message. Every piece has its own
 * reference, so a socket may keep some (MSG_SPLICE_PAGES) after they are
 * freed here.
 *
 * Context: process context; sleeps.
 * Return: the pages, or NULL.
 */
struct vfio_user_dma_pages *vfio_user_dma_pages_alloc(size_t size)
{
	const gfp_t large = (GFP_KERNEL & ~__GFP_DIRECT_RECLAIM) | __GFP_COMP |
			    __GFP_NORETRY | __GFP_NOWARN;
	struct vfio_user_dma_pages *dp;
	size_t piece = VFIO_USER_DMA_PIECE;
	size_t done = 0;

	dp = kvmalloc(struct_size(dp, bv, DIV_ROUND_UP(size, PAGE_SIZE)),
		      GFP_KERNEL);
	if (!dp)
		return NULL;
	dp->nr = 0;
	while (done < size) {
		size_t len = min_t(size_t, size - done, piece);
		unsigned int order = get_order(len);
		struct page *page = NULL;

		if (order) {
			page = alloc_pages(large, order);
			if (!page) {
				piece = PAGE_SIZE;
				len = PAGE_SIZE;
			}
		}
		if (!page)
			page = alloc_page(GFP_KERNEL);
		if (!page) {
			vfio_user_dma_pages_free(dp);
			return NULL;
		}
		bvec_set_page(&dp->bv[dp->nr++], page, len, 0);
		done += len;
	}
	return dp;
}

/* Writes the data of a DMA_WRITE received into pages to @addr. */
static int vfio_user_dma_write_pages(struct vfio_user_device *udev, u64 addr,
				     struct vfio_user_dma_pages *dp)
{
	unsigned int i;

	for (i = 0; i < dp->nr; i++) {
		int ret = vfio_dma_rw(&udev->vdev, addr,
				      page_address(dp->bv[i].bv_page),
				      dp->bv[i].bv_len, true);

		/* after the write, even a failed one (it may have written part) */
		vfio_user_dirty_mark(udev, addr, dp->bv[i].bv_len);
		if (ret)
			return -EFAULT;
		addr += dp->bv[i].bv_len;
	}
	return 0;
}

/*
 * Reads the consumer's memory at @addr into @dp, after the first @skip
 * bytes (the reply's header and access). The first piece is at least
 * min(size, PAGE_SIZE) bytes, more than @skip.
 */
static int vfio_user_dma_read_pages(struct vfio_user_device *udev, u64 addr,
				    struct vfio_user_dma_pages *dp, size_t skip)
{
	unsigned int i;

	for (i = 0; i < dp->nr; i++) {
		size_t len = dp->bv[i].bv_len - skip;
		u8 *p = page_address(dp->bv[i].bv_page) + skip;

		if (vfio_dma_rw(&udev->vdev, addr, p, len, false))
			return -EFAULT;
		addr += len;
		skip = 0;
	}
	return 0;
}

/*
 * Serves one DMA_READ or DMA_WRITE. The receiver has checked the payload
 * length against the command and max_xfer; here the count is checked
 * against the payload and the address range against overflow.
 */
static void vfio_user_serve_cmd(struct vfio_user_conn *conn,
				struct vfio_user_cmd *cmd)
{
	struct vfio_user_device *udev = conn->udev;
	struct vfio_user_dma_access *acc = (void *)cmd->payload;
	u64 addr = le64_to_cpu(acc->addr);
	u64 count = le64_to_cpu(acc->count);
	bool write = cmd->command == VFIO_USER_DMA_WRITE;
	const size_t head = sizeof(struct vfio_user_hdr) + sizeof(*acc);
	struct vfio_user_dma_pages *dp = NULL;
	u64 end;
	int err = 0;

	if (write ? count != cmd->len - sizeof(*acc) :
		    count > conn->caps.max_xfer) {
		vfio_user_conn_broken(conn,
				      "DMA_%s msg_id %u: count %llu with %zu payload bytes",
				      write ? "WRITE" : "READ", cmd->msg_id,
				      count, cmd->len);
		return;
	}
	if (!count || check_add_overflow(addr, count - 1, &end)) {
		err = EINVAL;
		goto reply;
	}

	if (!write) {
		dp = vfio_user_dma_pages_alloc(head + count);
		if (!dp) {
			err = ENOMEM;
			goto reply;
		}
	}

	down_read(&udev->dma_sem);
	if (!udev->dma_enabled)
		err = EFAULT;
	else if (write)
		/* count > 0 is the data after the access: the receiver's pages */
		err = cmd->data ? -vfio_user_dma_write_pages(udev, addr, cmd->data) :
		      EINVAL;
	else
		err = -vfio_user_dma_read_pages(udev, addr, dp, head);
	up_read(&udev->dma_sem);

	if (err)
		dev_dbg_ratelimited(vfio_user_dev(udev),
				    "DMA_%s of %llu bytes at %#llx refused\n",
				    write ? "WRITE" : "READ", count, addr);
reply:
	trace_vfio_user_dma(vfio_user_dev(udev), write, addr, count, err);
	if (err)
		this_cpu_inc(udev->stats->dma_errors);
	else if (write)
		this_cpu_add(udev->stats->dma_write_bytes, count);
	else
		this_cpu_add(udev->stats->dma_read_bytes, count);
	if (cmd->no_reply)
		goto out;
	if (err) {
		vfio_user_send_reply(conn, cmd->msg_id, cmd->command, err,
				     NULL, 0);
	} else if (write) {
		vfio_user_send_reply(conn, cmd->msg_id, cmd->command, 0, acc,
				     sizeof(*acc));
	} else {
		memcpy(page_address(dp->bv[0].bv_page) +
		       sizeof(struct vfio_user_hdr), acc, sizeof(*acc));
		/* The reply owns the pages now. */
		vfio_user_send_reply_pages(conn, cmd->msg_id, cmd->command,
					   dp, head + count);
		dp = NULL;
	}
out:
	vfio_user_dma_pages_free(dp);
}

/* What a queued command costs, for the backpressure bound. */
static size_t vfio_user_cmd_cost(size_t len)
{
	return sizeof(struct vfio_user_cmd) + max_t(size_t, len, SZ_256);
}

/* Frees a command and gives its bytes back; may let the receiver go on. */
static void vfio_user_cmd_done(struct vfio_user_conn *conn,
			       struct vfio_user_cmd *cmd)
{
	bool was_full;

	spin_lock(&conn->lock);
	was_full = conn->cmd_bytes >= VFIO_USER_CMD_QUEUE_XFERS * conn->caps.max_xfer;
	conn->cmd_bytes -= vfio_user_cmd_cost(cmd->len);
	spin_unlock(&conn->lock);
	vfio_user_cmd_free(cmd);
	if (was_full && !vfio_user_cmds_full(conn))
		vfio_user_conn_queue(conn, &conn->recv_work);
}

/*
 * Serves the server's queued DMA commands, one at a time: each reply is
 * on the wire before the next command is served. Runs on vfio_user_wq, so
 * vfio_dma_rw() borrows the consumer's mm; never depends on a reply the
 * server owes a consumer.
 */
static void vfio_user_cmd_work(struct work_struct *work)
{
	struct vfio_user_conn *conn = container_of(work, struct vfio_user_conn,
						   cmd_work);
	struct vfio_user_cmd *cmd;

	for (;;) {
		spin_lock(&conn->lock);
		cmd = list_first_entry_or_null(&conn->cmds, struct vfio_user_cmd,
					       node);
		if (cmd)
			list_del(&cmd->node);
		spin_unlock(&conn->lock);
		if (!cmd)
			return;
		if (!vfio_user_conn_dead(conn, NULL, 0))
			vfio_user_serve_cmd(conn, cmd);
		vfio_user_cmd_done(conn, cmd);
		cond_resched();
	}
}

/**
 * vfio_user_cmds_init() - set up a connection's server command queue
 * @conn: a new connection
 */
void vfio_user_cmds_init(struct vfio_user_conn *conn)
{
	INIT_LIST_HEAD(&conn->cmds);
	INIT_WORK(&conn->cmd_work, vfio_user_cmd_work);
}

/**
 * vfio_user_cmds_full() - whether the receiver should stop reading
 * @conn: the connection
 *
 * Backpressure: the commands queued (and the one being read) hold
 * VFIO_USER_CMD_QUEUE_XFERS times max_data_xfer_size or more, so the
 * receiver leaves the socket alone until the DMA work has served some.
 *
 * Context: any.
 * Return: true while the receiver should not start a new message.
 */
bool vfio_user_cmds_full(struct vfio_user_conn *conn)
{
	return READ_ONCE(conn->cmd_bytes) >=
	       VFIO_USER_CMD_QUEUE_XFERS * (size_t)conn->caps.max_xfer;
}

/**
 * vfio_user_cmd_alloc() - a server command whose header the receiver read
 * @conn: the connection
 * @hdr: the command's header, checked for size and flags
 * @len: payload length
 *
 * Checks the command and its length; a DMA_WRITE's data gets pages of its
 * own, straight from the socket (vfio_dma_rw() copies it on from there).
 * The command's bytes count against the backpressure bound until it is
 * served or dropped.
 *
 * Context: the receiver (recv_mutex held); sleeps.
 * Return: the command, or an ERR_PTR (the connection is then broken).
 */
struct vfio_user_cmd *vfio_user_cmd_alloc(struct vfio_user_conn *conn,
					  const struct vfio_user_hdr *hdr,
					  size_t len)
{
	u16 command = le16_to_cpu(hdr->command);
	struct vfio_user_cmd *cmd;
	size_t max, head;

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
		return ERR_PTR(-EPROTO);
	}
	if (len < sizeof(struct vfio_user_dma_access) || len > max) {
		vfio_user_conn_broken(conn,
				      "command %u from server has %zu bytes, expected %zu..%zu",
				      command, len,
				      sizeof(struct vfio_user_dma_access), max);
		return ERR_PTR(-EPROTO);
	}

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
		return ERR_PTR(-ENOMEM);
	}
	cmd->msg_id = le16_to_cpu(hdr->msg_id);
	cmd->command = command;
	cmd->no_reply = le32_to_cpu(hdr->flags) & VFIO_USER_F_NO_REPLY;
	cmd->len = len;

	spin_lock(&conn->lock);
	conn->cmd_bytes += vfio_user_cmd_cost(len);
	spin_unlock(&conn->lock);
	return cmd;
}

/**
 * vfio_user_cmd_iter() - where the next bytes of a command's payload go
 * @cmd: the command being read
 * @got: payload bytes already read
 * @iter: set to the rest of the payload (the access, or a DMA_WRITE's
 *	data pages after it)
 * @kv: storage for @iter's kvec
 */
void vfio_user_cmd_iter(struct vfio_user_cmd *cmd, size_t got,
			struct iov_iter *iter, struct kvec *kv)
{
	size_t head = cmd->data ? sizeof(struct vfio_user_dma_access) : cmd->len;

	if (got < head) {
		kv->iov_base = cmd->payload + got;
		kv->iov_len = head - got;
		iov_iter_kvec(iter, ITER_DEST, kv, 1, kv->iov_len);
		return;
	}
	iov_iter_bvec(iter, ITER_DEST, cmd->data->bv, cmd->data->nr,
		      cmd->len - head);
	iov_iter_advance(iter, got - head);
}

/**
 * vfio_user_cmd_queue() - hand a received command to the DMA work
 * @conn: the connection
 * @cmd: from vfio_user_cmd_alloc(), its payload read in full
 */
void vfio_user_cmd_queue(struct vfio_user_conn *conn,
			 struct vfio_user_cmd *cmd)
{
	spin_lock(&conn->lock);
	list_add_tail(&cmd->node, &conn->cmds);
	spin_unlock(&conn->lock);
	vfio_user_conn_queue(conn, &conn->cmd_work);
}

/**
 * vfio_user_cmd_free() - free a server command and its data
 * @cmd: the command
 *
 * For a command whose bytes the caller accounts itself (the receiver's,
 * while the connection is torn down).
 */
void vfio_user_cmd_free(struct vfio_user_cmd *cmd)
{
	vfio_user_dma_pages_free(cmd->data);
	kvfree(cmd);
}

/**
 * vfio_user_cmds_stop() - stop serving a dead connection's commands
 * @conn: the connection, dead
 *
 * Context: process context; waits for a command being served (it may be
 * in vfio_dma_rw()), drops the queued ones.
 */
void vfio_user_cmds_stop(struct vfio_user_conn *conn)
{
	struct vfio_user_cmd *cmd, *tmp;
	LIST_HEAD(drop);

	cancel_work_sync(&conn->cmd_work);
	spin_lock(&conn->lock);
	list_splice_init(&conn->cmds, &drop);
	spin_unlock(&conn->lock);
	list_for_each_entry_safe(cmd, tmp, &drop, node) {
		list_del(&cmd->node);
		vfio_user_cmd_done(conn, cmd);
	}
}

/* One DMA_MAP of [iova, iova + size): backed by the window file at @fd. */
static int vfio_user_dma_map(struct vfio_user_conn *conn, u64 iova, u64 size,
			     int fd)
{
	struct vfio_user_dma_map map = {
		.argsz = cpu_to_le32(sizeof(map)),
		.flags = cpu_to_le32(VFIO_USER_F_DMA_REGION_READ |
				     VFIO_USER_F_DMA_REGION_WRITE),
		.offset = cpu_to_le64(fd >= 0 ? iova : 0),
		.addr = cpu_to_le64(iova),
		.size = cpu_to_le64(size),
	};
	struct vfio_user_call call = {
		.command = VFIO_USER_DMA_MAP,
		.payload = &map,
		.len = sizeof(map),
		.fds = fd >= 0 ? &fd : NULL,
		.nr_fds = fd >= 0,
	};
	int ret;

	ret = vfio_user_call(conn, &call);
	if (ret < 0)
		dev_err(vfio_user_dev(conn->udev),
			"DMA_MAP of [%#llx, +%#llx)%s failed: %d\n", iova, size,
			fd >= 0 ? " (shared memory)" : "", ret);
	return ret < 0 ? ret : 0;
}

/*
 * Announces [0, @window) backed by a new window file, in regions of
 * @chunk bytes. A server that refuses the first one (it takes no fds)
 * gets the whole space by message: *@window is then 0.
 */
static int vfio_user_dma_announce_window(struct vfio_user_conn *conn,
					 u64 *window, u64 chunk)
{
	struct vfio_user_device *udev = conn->udev;
	u64 iova;
	int fd, ret;

	ret = vfio_user_window_create(udev, conn, *window);
	if (ret)
		return ret;
	fd = vfio_user_window_install(udev);
	if (fd < 0) {
		vfio_user_window_revoke(udev);
		return fd;
	}
	for (iova = 0; iova < *window; iova += chunk) {
		ret = vfio_user_dma_map(conn, iova, min(chunk, *window - iova), fd);
		if (ret && !iova && !vfio_user_conn_dead(conn, NULL, 0)) {
			dev_warn(vfio_user_dev(udev),
				 "server refused the shared-memory DMA window (%d): all DMA by message\n",
				 ret);
			vfio_user_window_revoke(udev);
			*window = 0;
			ret = 0;
			break;
		}
		if (ret)
			break;
	}
	close_fd(fd);
	return ret;
}

/**
 * vfio_user_dma_announce() - tell the server about the IOVA space
 * @conn: a negotiated connection whose receiver runs
 *
 * Announces [0, dma_window) as read/write DMA regions of dma_window_chunk
 * bytes backed by the device's new window file (window.c), when the
 * server takes fds, and the rest of [0, 2^48) as fd-less regions of at most
 * VFIO_USER_DMA_CHUNK bytes, reached with DMA_READ/DMA_WRITE.
 *
 * Context: process context of the attaching writer (the window's fd is
 * passed from its fd table); sleeps, each message bounded by the timeout.
 * Return: 0 or a negative errno.
 */
int vfio_user_dma_announce(struct vfio_user_conn *conn)
{
	struct vfio_user_device *udev = conn->udev;
	u64 window, chunk, iova, maps;
	int ret;

	spin_lock(&udev->state_lock);
	window = udev->dma_window;
	chunk = udev->dma_window_chunk;
	spin_unlock(&udev->state_lock);
	if (window && !conn->caps.max_msg_fds) {
		dev_info(vfio_user_dev(udev),
			 "server takes no fds: no shared-memory DMA window\n");
		window = 0;
	}

	maps = (window ? DIV64_U64_ROUND_UP(window, chunk) : 0) +
	       DIV64_U64_ROUND_UP(VFIO_USER_DMA_SPACE - window, VFIO_USER_DMA_CHUNK);
	if (maps > conn->caps.max_dma_maps) {
		dev_err(vfio_user_dev(udev),
			"server takes only %u DMA regions, the IOVA space needs %llu\n",
			conn->caps.max_dma_maps, maps);
		return -ENOSPC;
	}

	if (window) {
		ret = vfio_user_dma_announce_window(conn, &window, chunk);
		if (ret)
			return ret;
	}
	for (iova = window; iova < VFIO_USER_DMA_SPACE; iova += VFIO_USER_DMA_CHUNK) {
		ret = vfio_user_dma_map(conn, iova,
					min(VFIO_USER_DMA_CHUNK,
					    VFIO_USER_DMA_SPACE - iova), -1);
		if (ret)
			return ret;
	}
	return 0;
}
