/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * vfio_user_mdev - trace events: each message sent and received, DMA
 * served, and the attach, detach and broken transitions of a device.
 *
 *   echo 1 > /sys/kernel/tracing/events/vfio_user_mdev/enable
 *   cat /sys/kernel/tracing/trace_pipe
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM vfio_user_mdev

#if !defined(_VFIO_USER_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _VFIO_USER_TRACE_H

#include <linux/device.h>
#include <linux/tracepoint.h>
#include <linux/vfio_user.h>

#include "compat.h"

#define vfio_user_show_command(c)					\
	__print_symbolic(c,						\
		{ VFIO_USER_VERSION,		"VERSION" },		\
		{ VFIO_USER_DMA_MAP,		"DMA_MAP" },		\
		{ VFIO_USER_DMA_UNMAP,		"DMA_UNMAP" },		\
		{ VFIO_USER_DEVICE_GET_INFO,	"DEVICE_GET_INFO" },	\
		{ VFIO_USER_DEVICE_GET_REGION_INFO, "DEVICE_GET_REGION_INFO" }, \
		{ VFIO_USER_DEVICE_GET_REGION_IO_FDS, "DEVICE_GET_REGION_IO_FDS" }, \
		{ VFIO_USER_DEVICE_GET_IRQ_INFO, "DEVICE_GET_IRQ_INFO" }, \
		{ VFIO_USER_DEVICE_SET_IRQS,	"DEVICE_SET_IRQS" },	\
		{ VFIO_USER_REGION_READ,	"REGION_READ" },	\
		{ VFIO_USER_REGION_WRITE,	"REGION_WRITE" },	\
		{ VFIO_USER_DMA_READ,		"DMA_READ" },		\
		{ VFIO_USER_DMA_WRITE,		"DMA_WRITE" },		\
		{ VFIO_USER_DEVICE_RESET,	"DEVICE_RESET" },	\
		{ VFIO_USER_REGION_WRITE_MULTI,	"REGION_WRITE_MULTI" },	\
		{ VFIO_USER_DEVICE_FEATURE,	"DEVICE_FEATURE" },	\
		{ VFIO_USER_MIG_DATA_READ,	"MIG_DATA_READ" },	\
		{ VFIO_USER_MIG_DATA_WRITE,	"MIG_DATA_WRITE" })

/*
 * vfio_user_send - a message queued to the server: a command of ours or a
 * reply to one of the server's. @size includes the 16-byte header.
 */
TRACE_EVENT(vfio_user_send,
	TP_PROTO(const struct device *dev, u16 msg_id, u16 command, u32 size,
		 u32 flags),
	TP_ARGS(dev, msg_id, command, size, flags),
	TP_STRUCT__entry(
		__string(dev, dev_name(dev))
		__field(u16, msg_id)
		__field(u16, command)
		__field(u32, size)
		__field(u32, flags)
	),
	TP_fast_assign(
		vfio_user_assign_str(dev, dev_name(dev));
		__entry->msg_id = msg_id;
		__entry->command = command;
		__entry->size = size;
		__entry->flags = flags;
	),
	TP_printk("%s msg_id=%u command=%s size=%u flags=%#x",
		  __get_str(dev), __entry->msg_id,
		  vfio_user_show_command(__entry->command), __entry->size,
		  __entry->flags)
);

/*
 * vfio_user_recv - a message received whole from the server: a reply
 * (with its errno, 0 for success, and the time since its request was
 * queued) or one of its commands (rtt_ns 0).
 */
TRACE_EVENT(vfio_user_recv,
	TP_PROTO(const struct device *dev, u16 msg_id, u16 command, u32 size,
		 u32 flags, u32 error, u64 rtt_ns),
	TP_ARGS(dev, msg_id, command, size, flags, error, rtt_ns),
	TP_STRUCT__entry(
		__string(dev, dev_name(dev))
		__field(u16, msg_id)
		__field(u16, command)
		__field(u32, size)
		__field(u32, flags)
		__field(u32, error)
		__field(u64, rtt_ns)
	),
	TP_fast_assign(
		vfio_user_assign_str(dev, dev_name(dev));
		__entry->msg_id = msg_id;
		__entry->command = command;
		__entry->size = size;
		__entry->flags = flags;
		__entry->error = error;
		__entry->rtt_ns = rtt_ns;
	),
	TP_printk("%s msg_id=%u command=%s size=%u flags=%#x error=%u rtt_ns=%llu",
		  __get_str(dev), __entry->msg_id,
		  vfio_user_show_command(__entry->command), __entry->size,
		  __entry->flags, __entry->error, __entry->rtt_ns)
);

/*
 * vfio_user_dma - a DMA_READ or DMA_WRITE served by message: @error is
 * the errno of the reply, 0 for success.
 */
TRACE_EVENT(vfio_user_dma,
	TP_PROTO(const struct device *dev, bool write, u64 addr, u64 count,
		 int error),
	TP_ARGS(dev, write, addr, count, error),
	TP_STRUCT__entry(
		__string(dev, dev_name(dev))
		__field(bool, write)
		__field(u64, addr)
		__field(u64, count)
		__field(int, error)
	),
	TP_fast_assign(
		vfio_user_assign_str(dev, dev_name(dev));
		__entry->write = write;
		__entry->addr = addr;
		__entry->count = count;
		__entry->error = error;
	),
	TP_printk("%s %s addr=%#llx count=%llu error=%d", __get_str(dev),
		  __entry->write ? "DMA_WRITE" : "DMA_READ", __entry->addr,
		  __entry->count, __entry->error)
);

/*
 * vfio_user_state - a device attached to a server, detached, or its
 * connection broke; @reason says why (the socket path for an attach).
 */
TRACE_EVENT(vfio_user_state,
	TP_PROTO(const struct device *dev, const char *state,
		 const char *reason),
	TP_ARGS(dev, state, reason),
	TP_STRUCT__entry(
		__string(dev, dev_name(dev))
		__string(state, state)
		__string(reason, reason)
	),
	TP_fast_assign(
		vfio_user_assign_str(dev, dev_name(dev));
		vfio_user_assign_str(state, state);
		vfio_user_assign_str(reason, reason);
	),
	TP_printk("%s %s: %s", __get_str(dev), __get_str(state),
		  __get_str(reason))
);

#endif /* _VFIO_USER_TRACE_H */

#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE trace
#include <trace/define_trace.h>
