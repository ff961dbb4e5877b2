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
#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/sizes.h>
#include <linux/slab.h>
#include <linux/vfio.h>

#include "vfio_user_mdev.h"

/* Pieces of DMA data: 64 KiB where they come easily, else single pages. */
#define VFIO_USER_DMA_PIECE		SZ_64K

static void vfio_user_dma_pages_free(struct vfio_user_dma_pages *dp)
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

/**
 * vfio_user_cmd_free() - free a server command and its data
 * @cmd: the command
 */
void vfio_user_cmd_free(struct vfio_user_cmd *cmd)
{
	vfio_user_dma_pages_free(cmd->data);
	kvfree(cmd);
}

/* Writes the data of a DMA_WRITE received into pages to @addr. */
static int vfio_user_dma_write_pages(struct vfio_user_device *udev, u64 addr,
				     struct vfio_user_dma_pages *dp)
{
	unsigned int i;

	for (i = 0; i < dp->nr; i++) {
		if (vfio_dma_rw(&udev->vdev, addr,
				page_address(dp->bv[i].bv_page),
				dp->bv[i].bv_len, true))
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
	if (cmd->no_reply)
		goto out;
	if (err) {
		vfio_user_send_reply(conn, cmd->msg_id, cmd->command, err,
				     NULL, 0, NULL, 0);
	} else if (write) {
		vfio_user_send_reply(conn, cmd->msg_id, cmd->command, 0, acc,
				     sizeof(*acc), NULL, 0);
	} else {
		memcpy(page_address(dp->bv[0].bv_page) +
		       sizeof(struct vfio_user_hdr), acc, sizeof(*acc));
		vfio_user_send_reply_pages(conn, cmd->msg_id, cmd->command,
					   dp->bv, dp->nr, head + count);
	}
out:
	vfio_user_dma_pages_free(dp);
}

/**
 * vfio_user_cmd_work() - serve the server's queued DMA commands
 * @work: vfio_user_conn.cmd_work
 *
 * Runs on vfio_user_wq, so vfio_dma_rw() borrows the consumer's mm; never
 * depends on a reply the server owes a consumer.
 *
 * Context: workqueue; sleeps.
 */
void vfio_user_cmd_work(struct work_struct *work)
{
	struct vfio_user_conn *conn = container_of(work, struct vfio_user_conn,
						   cmd_work);
	struct vfio_user_cmd *cmd;

	for (;;) {
		spin_lock(&conn->lock);
		cmd = list_first_entry_or_null(&conn->cmds, struct vfio_user_cmd,
					       node);
		if (cmd) {
			list_del(&cmd->node);
			conn->nr_cmds--;
		}
		spin_unlock(&conn->lock);
		if (!cmd)
			return;
		if (!vfio_user_conn_dead(conn, NULL, 0))
			vfio_user_serve_cmd(conn, cmd);
		vfio_user_cmd_free(cmd);
		cond_resched();
	}
}

/**
 * vfio_user_dma_announce() - tell the server about the DMA window
 * @conn: a negotiated connection whose receiver runs
 *
 * Sends [0, VFIO_USER_DEF_DMA_WINDOW) as fd-less read/write DMA_MAP
 * regions of at most VFIO_USER_DMA_CHUNK bytes.
 *
 * Context: process context; sleeps, each message bounded by the timeout.
 * Return: 0 or a negative errno.
 */
int vfio_user_dma_announce(struct vfio_user_conn *conn)
{
	u64 iova;
	int ret;

	if (VFIO_USER_DEF_DMA_WINDOW / VFIO_USER_DMA_CHUNK > conn->caps.max_dma_maps) {
		dev_err(vfio_user_dev(conn->udev),
			"server takes only %u DMA regions, the window needs %llu\n",
			conn->caps.max_dma_maps,
			VFIO_USER_DEF_DMA_WINDOW / VFIO_USER_DMA_CHUNK);
		return -ENOSPC;
	}
	for (iova = 0; iova < VFIO_USER_DEF_DMA_WINDOW; iova += VFIO_USER_DMA_CHUNK) {
		struct vfio_user_dma_map map = {
			.argsz = cpu_to_le32(sizeof(map)),
			.flags = cpu_to_le32(VFIO_USER_F_DMA_REGION_READ |
					     VFIO_USER_F_DMA_REGION_WRITE),
			.addr = cpu_to_le64(iova),
			.size = cpu_to_le64(VFIO_USER_DMA_CHUNK),
		};

		ret = vfio_user_send_sync(conn, VFIO_USER_DMA_MAP, &map,
					  sizeof(map), NULL, 0, NULL, 0, NULL,
					  0, 0);
		if (ret < 0) {
			dev_err(vfio_user_dev(conn->udev),
				"DMA_MAP of [%#llx, +%#llx) failed: %d\n", iova,
				VFIO_USER_DMA_CHUNK, ret);
			return ret;
		}
	}
	return 0;
}
