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
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/vfio.h>

#include "vfio_user_mdev.h"

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
	void *buf = NULL;
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
		buf = kvmalloc(count, GFP_KERNEL);
		if (!buf) {
			err = ENOMEM;
			goto reply;
		}
	}

	down_read(&udev->dma_sem);
	if (!udev->dma_enabled)
		err = EFAULT;
	else if (vfio_dma_rw(&udev->vdev, addr, write ? acc->data : buf, count,
			     write))
		err = EFAULT;
	up_read(&udev->dma_sem);

	if (err)
		dev_dbg_ratelimited(vfio_user_dev(udev),
				    "DMA_%s of %llu bytes at %#llx refused\n",
				    write ? "WRITE" : "READ", count, addr);
reply:
	if (cmd->no_reply)
		goto out;
	if (err)
		vfio_user_send_reply(conn, cmd->msg_id, cmd->command, err,
				     NULL, 0, NULL, 0);
	else
		vfio_user_send_reply(conn, cmd->msg_id, cmd->command, 0, acc,
				     sizeof(*acc), buf, write ? 0 : count);
out:
	kvfree(buf);
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
		kvfree(cmd);
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
