// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio_user_mdev - per-device statistics, in debugfs:
 * /sys/kernel/debug/vfio_user_mdev/<UUID>/stats.
 *
 * Per-CPU counters, added to without a lock or an atomic operation on the
 * hot path and summed when the file is read. One "name value" line per
 * counter: messages and bytes (header included) per command each way,
 * errors by kind, DMA bytes each way, eventfds sent, and a log2 histogram
 * of the time requests waited for their reply once the device was
 * attached (consumer calls). Debugfs, not sysfs: it is a table of some
 * hundred values read by people and scripts, where sysfs wants one value
 * per file, and it is not a stable ABI.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/debugfs.h>
#include <linux/log2.h>
#include <linux/percpu.h>
#include <linux/seq_file.h>

#include "vfio_user_mdev.h"

static struct dentry *vfio_user_debugfs;

static const char * const vfio_user_cmd_names[VFIO_USER_MAX_COMMAND] = {
	[VFIO_USER_VERSION]			= "VERSION",
	[VFIO_USER_DMA_MAP]			= "DMA_MAP",
	[VFIO_USER_DMA_UNMAP]			= "DMA_UNMAP",
	[VFIO_USER_DEVICE_GET_INFO]		= "DEVICE_GET_INFO",
	[VFIO_USER_DEVICE_GET_REGION_INFO]	= "DEVICE_GET_REGION_INFO",
	[VFIO_USER_DEVICE_GET_REGION_IO_FDS]	= "DEVICE_GET_REGION_IO_FDS",
	[VFIO_USER_DEVICE_GET_IRQ_INFO]		= "DEVICE_GET_IRQ_INFO",
	[VFIO_USER_DEVICE_SET_IRQS]		= "DEVICE_SET_IRQS",
	[VFIO_USER_REGION_READ]			= "REGION_READ",
	[VFIO_USER_REGION_WRITE]		= "REGION_WRITE",
	[VFIO_USER_DMA_READ]			= "DMA_READ",
	[VFIO_USER_DMA_WRITE]			= "DMA_WRITE",
	[VFIO_USER_DEVICE_RESET]		= "DEVICE_RESET",
	[VFIO_USER_REGION_WRITE_MULTI]		= "REGION_WRITE_MULTI",
	[VFIO_USER_DEVICE_FEATURE]		= "DEVICE_FEATURE",
	[VFIO_USER_MIG_DATA_READ]		= "MIG_DATA_READ",
	[VFIO_USER_MIG_DATA_WRITE]		= "MIG_DATA_WRITE",
};

/**
 * vfio_user_stat_msg() - count a message sent or received whole
 * @udev: the device
 * @sent: sent by us (else received)
 * @command: its command; unknown ones are not counted
 * @size: its size, header included
 *
 * Context: any.
 */
void vfio_user_stat_msg(struct vfio_user_device *udev, bool sent, u16 command,
			u32 size)
{
	struct vfio_user_stats __percpu *s = udev->stats;

	if (command >= VFIO_USER_MAX_COMMAND)
		return;
	if (sent) {
		this_cpu_inc(s->sent_msgs[command]);
		this_cpu_add(s->sent_bytes[command], size);
	} else {
		this_cpu_inc(s->recv_msgs[command]);
		this_cpu_add(s->recv_bytes[command], size);
	}
}

/**
 * vfio_user_stat_latency() - count a request's wait for its reply
 * @udev: the device
 * @ns: from queueing to completion
 *
 * Context: any.
 */
void vfio_user_stat_latency(struct vfio_user_device *udev, u64 ns)
{
	unsigned int b = ns ? ilog2(ns) : 0;

	this_cpu_inc(udev->stats->latency[min_t(unsigned int, b,
						VFIO_USER_LATENCY_BUCKETS - 1)]);
}

static u64 vfio_user_stat_sum(struct vfio_user_device *udev, size_t off)
{
	u64 sum = 0;
	int cpu;

	for_each_possible_cpu(cpu)
		sum += *(u64 *)((u8 *)per_cpu_ptr(udev->stats, cpu) + off);
	return sum;
}

#define VFIO_USER_STAT(udev, field) \
	vfio_user_stat_sum(udev, offsetof(struct vfio_user_stats, field))

static int vfio_user_stats_show(struct seq_file *m, void *v)
{
	struct vfio_user_device *udev = m->private;
	static const struct {
		const char *name;
		size_t off;
	} singles[] = {
#define S(f) { #f, offsetof(struct vfio_user_stats, f) }
		S(error_replies), S(timeouts), S(violations), S(broken),
		S(dma_read_bytes), S(dma_write_bytes), S(dma_errors),
		S(irq_fds_sent), S(posted),
#undef S
	};
	unsigned int i;

	for (i = 0; i < VFIO_USER_MAX_COMMAND; i++) {
		if (!vfio_user_cmd_names[i])
			continue;
		seq_printf(m, "sent_msgs.%s %llu\n", vfio_user_cmd_names[i],
			   VFIO_USER_STAT(udev, sent_msgs[i]));
		seq_printf(m, "sent_bytes.%s %llu\n", vfio_user_cmd_names[i],
			   VFIO_USER_STAT(udev, sent_bytes[i]));
		seq_printf(m, "recv_msgs.%s %llu\n", vfio_user_cmd_names[i],
			   VFIO_USER_STAT(udev, recv_msgs[i]));
		seq_printf(m, "recv_bytes.%s %llu\n", vfio_user_cmd_names[i],
			   VFIO_USER_STAT(udev, recv_bytes[i]));
	}
	for (i = 0; i < ARRAY_SIZE(singles); i++)
		seq_printf(m, "%s %llu\n", singles[i].name,
			   vfio_user_stat_sum(udev, singles[i].off));
	/* latency_ns.N: waits of 2^N to 2^(N+1) - 1 ns */
	for (i = 0; i < VFIO_USER_LATENCY_BUCKETS; i++)
		seq_printf(m, "latency_ns.%u %llu\n", i,
			   VFIO_USER_STAT(udev, latency[i]));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(vfio_user_stats);

/**
 * vfio_user_stats_add() - a new device's counters and stats file
 * @udev: the device, with its name set
 *
 * The file is a convenience: failing to make it fails nothing.
 *
 * Context: process context (probe).
 * Return: 0 or -ENOMEM.
 */
int vfio_user_stats_add(struct vfio_user_device *udev)
{
	struct dentry *dir;

	udev->stats = alloc_percpu(struct vfio_user_stats);
	if (!udev->stats)
		return -ENOMEM;
	dir = debugfs_create_dir(dev_name(vfio_user_dev(udev)),
				 vfio_user_debugfs);
	debugfs_create_file("stats", 0400, dir, udev, &vfio_user_stats_fops);
	udev->debugfs = dir;
	return 0;
}

/**
 * vfio_user_stats_remove() - remove the stats file; waits for its readers
 * @udev: the device
 *
 * Context: process context (remove, before the device is freed).
 */
void vfio_user_stats_remove(struct vfio_user_device *udev)
{
	debugfs_remove(udev->debugfs);
	udev->debugfs = NULL;
}

/**
 * vfio_user_stats_free() - free the counters
 * @udev: the device, released
 *
 * Context: process context.
 */
void vfio_user_stats_free(struct vfio_user_device *udev)
{
	free_percpu(udev->stats);
	udev->stats = NULL;
}

/**
 * vfio_user_stats_init() - the module's debugfs directory
 *
 * Context: module init.
 */
void __init vfio_user_stats_init(void)
{
	vfio_user_debugfs = debugfs_create_dir(KBUILD_MODNAME, NULL);
}

/**
 * vfio_user_stats_exit() - remove it
 *
 * Context: module exit.
 */
void vfio_user_stats_exit(void)
{
	debugfs_remove(vfio_user_debugfs);
}
