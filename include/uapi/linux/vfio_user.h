/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * vfio-user wire format.
 *
 * The protocol is specified in QEMU's docs/interop/vfio-user.rst. Every
 * message is a 16-byte little-endian header followed by a command-specific
 * payload; the payload structs below reuse the layout of the VFIO ioctl
 * structs where the specification does.
 *
 * This header is shared by the kernel client (vfio_user_mdev) and the
 * userspace server library in tools/lib/vfio-user.
 */
#ifndef _UAPI_LINUX_VFIO_USER_H
#define _UAPI_LINUX_VFIO_USER_H

#include <linux/types.h>

#define VFIO_USER_MAJOR			0
#define VFIO_USER_MINOR			2

/* Message header size and upper bound on any message we accept. */
#define VFIO_USER_HDR_SIZE		16

/* Defaults of the VERSION capabilities (spec: "Version" section). */
#define VFIO_USER_DEF_MAX_MSG_FDS	1
#define VFIO_USER_DEF_MAX_XFER_SIZE	(1U << 20)
#define VFIO_USER_DEF_MAX_DMA_MAPS	65535

/**
 * enum vfio_user_command - command numbers
 * @VFIO_USER_VERSION: protocol version and capabilities, first message
 * @VFIO_USER_DMA_MAP: client tells the server about a DMA region
 * @VFIO_USER_DMA_UNMAP: client withdraws a DMA region
 * @VFIO_USER_DEVICE_GET_INFO: device flags, number of regions and IRQs
 * @VFIO_USER_DEVICE_GET_REGION_INFO: one region's size, flags, capabilities
 * @VFIO_USER_DEVICE_GET_REGION_IO_FDS: ioeventfds/ioregionfds of a region
 * @VFIO_USER_DEVICE_GET_IRQ_INFO: one IRQ index's count and flags
 * @VFIO_USER_DEVICE_SET_IRQS: eventfds, masks and triggers of IRQs
 * @VFIO_USER_REGION_READ: read from a region
 * @VFIO_USER_REGION_WRITE: write to a region
 * @VFIO_USER_DMA_READ: server reads client memory
 * @VFIO_USER_DMA_WRITE: server writes client memory
 * @VFIO_USER_DEVICE_RESET: reset the device
 * @VFIO_USER_REGION_WRITE_MULTI: several posted region writes at once
 * @VFIO_USER_DEVICE_FEATURE: VFIO device features (migration, dirty pages)
 * @VFIO_USER_MIG_DATA_READ: read migration data
 * @VFIO_USER_MIG_DATA_WRITE: write migration data
 * @VFIO_USER_MAX_COMMAND: one past the highest command number
 */
enum vfio_user_command {
	VFIO_USER_VERSION			= 1,
	VFIO_USER_DMA_MAP			= 2,
	VFIO_USER_DMA_UNMAP			= 3,
	VFIO_USER_DEVICE_GET_INFO		= 4,
	VFIO_USER_DEVICE_GET_REGION_INFO	= 5,
	VFIO_USER_DEVICE_GET_REGION_IO_FDS	= 6,
	VFIO_USER_DEVICE_GET_IRQ_INFO		= 7,
	VFIO_USER_DEVICE_SET_IRQS		= 8,
	VFIO_USER_REGION_READ			= 9,
	VFIO_USER_REGION_WRITE			= 10,
	VFIO_USER_DMA_READ			= 11,
	VFIO_USER_DMA_WRITE			= 12,
	VFIO_USER_DEVICE_RESET			= 13,
	VFIO_USER_REGION_WRITE_MULTI		= 15,
	VFIO_USER_DEVICE_FEATURE		= 16,
	VFIO_USER_MIG_DATA_READ			= 17,
	VFIO_USER_MIG_DATA_WRITE		= 18,
	VFIO_USER_MAX_COMMAND,
};

/* Header flags: bits 0-3 message type, then no_reply and error. */
#define VFIO_USER_F_TYPE_MASK		0xf
#define VFIO_USER_F_TYPE_COMMAND	0x0
#define VFIO_USER_F_TYPE_REPLY		0x1
#define VFIO_USER_F_NO_REPLY		0x10
#define VFIO_USER_F_ERROR		0x20

/**
 * struct vfio_user_hdr - header of every message
 * @msg_id: chosen by the sender of a command, echoed in its reply
 * @command: &enum vfio_user_command
 * @size: size of the whole message, header included
 * @flags: VFIO_USER_F_*
 * @error_no: errno (positive) when VFIO_USER_F_ERROR is set in a reply
 */
struct vfio_user_hdr {
	__le16 msg_id;
	__le16 command;
	__le32 size;
	__le32 flags;
	__le32 error_no;
};

/**
 * struct vfio_user_version - VERSION payload, both directions
 * @major: protocol major version; must match
 * @minor: protocol minor version; the lower of both sides is used
 * @data: NUL-terminated JSON object with the capabilities (optional)
 */
struct vfio_user_version {
	__le16 major;
	__le16 minor;
	__u8 data[];
};

/* DMA_MAP / DMA_UNMAP flags */
#define VFIO_USER_F_DMA_REGION_READ	(1 << 0)
#define VFIO_USER_F_DMA_REGION_WRITE	(1 << 1)
#define VFIO_USER_F_DMA_UNMAP_ALL	(1 << 1)

/**
 * struct vfio_user_dma_map - DMA_MAP payload
 * @argsz: size of this struct
 * @flags: VFIO_USER_F_DMA_REGION_*
 * @offset: offset into the fd that comes with the message (if any)
 * @addr: IOVA of the region
 * @size: size of the region
 */
struct vfio_user_dma_map {
	__le32 argsz;
	__le32 flags;
	__le64 offset;
	__le64 addr;
	__le64 size;
};

/**
 * struct vfio_user_dma_unmap - DMA_UNMAP payload
 * @argsz: size of this struct
 * @flags: VFIO_USER_F_DMA_UNMAP_ALL or 0
 * @addr: IOVA of the region, exactly as mapped
 * @size: size of the region, exactly as mapped
 */
struct vfio_user_dma_unmap {
	__le32 argsz;
	__le32 flags;
	__le64 addr;
	__le64 size;
};

/**
 * struct vfio_user_device_info - DEVICE_GET_INFO payload
 * @argsz: size the client can take
 * @flags: VFIO_DEVICE_FLAGS_* (PCI, RESET, ...)
 * @num_regions: number of regions
 * @num_irqs: number of IRQ indexes
 */
struct vfio_user_device_info {
	__le32 argsz;
	__le32 flags;
	__le32 num_regions;
	__le32 num_irqs;
};

/**
 * struct vfio_user_region_info - DEVICE_GET_REGION_INFO payload
 * @argsz: request: room the client has for the reply; reply: size needed
 * @flags: VFIO_REGION_INFO_FLAG_*
 * @index: region index
 * @cap_offset: offset of the first capability from the start of this
 *	struct, 0 if none
 * @size: region size
 * @offset: offset to use with REGION_IO_FDS/mmap
 *
 * Capabilities use the VFIO layout: struct vfio_info_cap_header
 * (__u16 id, __u16 version, __u32 next), little endian.
 */
struct vfio_user_region_info {
	__le32 argsz;
	__le32 flags;
	__le32 index;
	__le32 cap_offset;
	__le64 size;
	__le64 offset;
};

/**
 * struct vfio_user_cap_header - capability chain element
 * @id: VFIO_REGION_INFO_CAP_* id
 * @version: capability version
 * @next: offset of the next capability from the start of the info
 *	struct, 0 for the last one
 */
struct vfio_user_cap_header {
	__le16 id;
	__le16 version;
	__le32 next;
};

/**
 * struct vfio_user_sparse_mmap_area - one area of a sparse mmap capability
 * @offset: offset in the region
 * @size: size of the area
 */
struct vfio_user_sparse_mmap_area {
	__le64 offset;
	__le64 size;
};

/**
 * struct vfio_user_region_info_cap_sparse_mmap - sparse mmap capability
 * @header: capability header (VFIO_REGION_INFO_CAP_SPARSE_MMAP)
 * @nr_areas: number of areas
 * @reserved: zero
 * @areas: the areas
 */
struct vfio_user_region_info_cap_sparse_mmap {
	struct vfio_user_cap_header header;
	__le32 nr_areas;
	__le32 reserved;
	struct vfio_user_sparse_mmap_area areas[];
};

/**
 * struct vfio_user_region_info_cap_type - region type capability
 * @header: capability header (VFIO_REGION_INFO_CAP_TYPE)
 * @type: region type
 * @subtype: region subtype
 */
struct vfio_user_region_info_cap_type {
	struct vfio_user_cap_header header;
	__le32 type;
	__le32 subtype;
};

/**
 * struct vfio_user_irq_info - DEVICE_GET_IRQ_INFO payload
 * @argsz: size of this struct
 * @flags: VFIO_IRQ_INFO_*
 * @index: IRQ index
 * @count: number of vectors
 */
struct vfio_user_irq_info {
	__le32 argsz;
	__le32 flags;
	__le32 index;
	__le32 count;
};

/**
 * struct vfio_user_irq_set - DEVICE_SET_IRQS payload
 * @argsz: size of this struct plus its data
 * @flags: VFIO_IRQ_SET_DATA_* | VFIO_IRQ_SET_ACTION_*
 * @index: IRQ index
 * @start: first vector
 * @count: number of vectors
 * @data: u8 per vector for DATA_BOOL; nothing for DATA_NONE; for
 *	DATA_EVENTFD the fds travel as SCM_RIGHTS, one per vector
 */
struct vfio_user_irq_set {
	__le32 argsz;
	__le32 flags;
	__le32 index;
	__le32 start;
	__le32 count;
	__u8 data[];
};

/**
 * struct vfio_user_region_access - REGION_READ / REGION_WRITE payload
 * @offset: offset in the region
 * @region: region index
 * @count: number of bytes
 * @data: REGION_WRITE command and REGION_READ reply: @count bytes
 */
struct vfio_user_region_access {
	__le64 offset;
	__le32 region;
	__le32 count;
	__u8 data[];
};

/**
 * struct vfio_user_dma_access - DMA_READ / DMA_WRITE payload (server to client)
 * @addr: IOVA
 * @count: number of bytes
 * @data: DMA_WRITE command and DMA_READ reply: @count bytes
 */
struct vfio_user_dma_access {
	__le64 addr;
	__le64 count;
	__u8 data[];
};

/*
 * DEVICE_FEATURE flags: bits 0-15 the feature index, then the operation,
 * as in VFIO's struct vfio_device_feature.
 */
#define VFIO_USER_DEVICE_FEATURE_MASK		0xffff
#define VFIO_USER_DEVICE_FEATURE_GET		(1 << 16)
#define VFIO_USER_DEVICE_FEATURE_SET		(1 << 17)
#define VFIO_USER_DEVICE_FEATURE_PROBE		(1 << 18)

/*
 * Feature indexes (VFIO's numbers). MIG_DATA_SIZE is not in the spec's
 * list; the server library answers it, other servers may refuse it.
 */
#define VFIO_USER_DEVICE_FEATURE_MIGRATION		1
#define VFIO_USER_DEVICE_FEATURE_MIG_DEVICE_STATE	2
#define VFIO_USER_DEVICE_FEATURE_DMA_LOGGING_START	6
#define VFIO_USER_DEVICE_FEATURE_DMA_LOGGING_STOP	7
#define VFIO_USER_DEVICE_FEATURE_DMA_LOGGING_REPORT	8
#define VFIO_USER_DEVICE_FEATURE_MIG_DATA_SIZE		9

/* VFIO_USER_DEVICE_FEATURE_MIGRATION flags */
#define VFIO_USER_MIGRATION_STOP_COPY		(1 << 0)
#define VFIO_USER_MIGRATION_P2P			(1 << 1)
#define VFIO_USER_MIGRATION_PRE_COPY		(1 << 2)

/**
 * enum vfio_user_device_state - migration states on the wire
 * @VFIO_USER_DEVICE_STATE_ERROR: failed, left only by DEVICE_RESET
 * @VFIO_USER_DEVICE_STATE_STOP: no DMA, no interrupts, no state change
 * @VFIO_USER_DEVICE_STATE_RUNNING: running normally
 * @VFIO_USER_DEVICE_STATE_STOP_COPY: stopped, state read with MIG_DATA_READ
 * @VFIO_USER_DEVICE_STATE_RESUMING: stopped, state written with
 *	MIG_DATA_WRITE
 * @VFIO_USER_DEVICE_STATE_RUNNING_P2P: running, but initiating no DMA
 *	(with VFIO_USER_MIGRATION_P2P)
 * @VFIO_USER_DEVICE_STATE_PRE_COPY: running, state read with
 *	MIG_DATA_READ (with VFIO_USER_MIGRATION_PRE_COPY)
 * @VFIO_USER_DEVICE_STATE_PRE_COPY_P2P: PRE_COPY, initiating no DMA
 *	(with both)
 *
 * The numbers of VFIO's enum vfio_device_mig_state, defined here because
 * older kernel headers lack 6 and 7.
 */
enum vfio_user_device_state {
	VFIO_USER_DEVICE_STATE_ERROR		= 0,
	VFIO_USER_DEVICE_STATE_STOP		= 1,
	VFIO_USER_DEVICE_STATE_RUNNING		= 2,
	VFIO_USER_DEVICE_STATE_STOP_COPY	= 3,
	VFIO_USER_DEVICE_STATE_RESUMING		= 4,
	VFIO_USER_DEVICE_STATE_RUNNING_P2P	= 5,
	VFIO_USER_DEVICE_STATE_PRE_COPY		= 6,
	VFIO_USER_DEVICE_STATE_PRE_COPY_P2P	= 7,
};

/**
 * struct vfio_user_device_feature - DEVICE_FEATURE payload
 * @argsz: request: the largest reply payload the client takes; reply:
 *	the size of the reply payload
 * @flags: VFIO_USER_DEVICE_FEATURE_* operation | feature index
 * @data: feature data (SET request, GET reply); a SET or PROBE reply
 *	repeats the request
 */
struct vfio_user_device_feature {
	__le32 argsz;
	__le32 flags;
	__u8 data[];
};

/**
 * struct vfio_user_device_feature_migration - GET MIGRATION data
 * @flags: VFIO_USER_MIGRATION_*; STOP_COPY is always set
 */
struct vfio_user_device_feature_migration {
	__le64 flags;
};

/**
 * struct vfio_user_device_feature_mig_state - MIG_DEVICE_STATE data
 * @device_state: &enum vfio_user_device_state: the state to go to (SET)
 *	or the current one (GET)
 * @data_fd: unused in vfio-user (0)
 */
struct vfio_user_device_feature_mig_state {
	__le32 device_state;
	__le32 data_fd;
};

/**
 * struct vfio_user_device_feature_mig_data_size - GET MIG_DATA_SIZE data
 * @stop_copy_length: bytes a STOP_COPY session would still stream now
 */
struct vfio_user_device_feature_mig_data_size {
	__le64 stop_copy_length;
};

/**
 * struct vfio_user_mig_data - MIG_DATA_READ / MIG_DATA_WRITE payload
 * @argsz: request: the largest reply payload (READ: 8 + @size); READ
 *	reply: 8 + the bytes returned
 * @size: request: bytes to read or written; READ reply: bytes returned,
 *	fewer than asked at the end of the data
 * @data: MIG_DATA_WRITE request and MIG_DATA_READ reply: @size bytes
 */
struct vfio_user_mig_data {
	__le32 argsz;
	__le32 size;
	__u8 data[];
};

#endif /* _UAPI_LINUX_VFIO_USER_H */
