/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * vfio_user_mdev - VFIO mediated devices backed by vfio-user servers.
 *
 * Shared definitions of the module's objects:
 *
 *   struct vfio_user_device  one mdev; embeds the struct vfio_device
 *   struct vfio_user_conn    one attach of that mdev to a server: socket,
 *                            receiver thread, in-flight requests, caps
 *   struct vfio_user_req     one message sent to the server and its reply
 */
#ifndef _VFIO_USER_MDEV_H
#define _VFIO_USER_MDEV_H

#include <linux/bits.h>
#include <linux/bvec.h>
#include <linux/completion.h>
#include <linux/idr.h>
#include <linux/kref.h>
#include <linux/mdev.h>
#include <linux/mutex.h>
#include <linux/rwsem.h>
#include <linux/spinlock.h>
#include <linux/un.h>
#include <linux/vfio.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <linux/vfio_user.h>

#define VFIO_USER_NAME			"vfio_user"
#define VFIO_USER_TYPE_PCI		"pci"

#define VFIO_USER_REASON_LEN		96

/* Default and bounds of the per-device timeout_ms attribute. */
#define VFIO_USER_DEF_TIMEOUT_MS	5000
#define VFIO_USER_MAX_TIMEOUT_MS	600000

/* What we accept from a server, whatever it announces. */
#define VFIO_USER_MAX_REGIONS		32
#define VFIO_USER_MAX_IRQS		16
#define VFIO_USER_MAX_IRQ_COUNT		2048
#define VFIO_USER_MAX_VERSION_JSON	4096
#define VFIO_USER_MAX_REGION_INFO	4096
/*
 * Largest data payload of one REGION_READ/WRITE or DMA_READ/WRITE we
 * announce: the max_data_xfer_size module parameter (default 1 MiB, the
 * spec's default), read at each attach, within these bounds.
 */
#define VFIO_USER_MAX_XFER_LIMIT	(16U << 20)
#define VFIO_USER_MIN_XFER		512
extern unsigned int vfio_user_max_xfer;
/* The poll_us parameter: a consumer's busy-poll before it sleeps, in us. */
#define VFIO_USER_MAX_POLL_US		1000000
extern unsigned int vfio_user_poll_us;
/* Server commands queued for the DMA worker before we call it a flood. */
#define VFIO_USER_MAX_PENDING_CMDS	64
/* Biggest DMA region a server must accept (libvfio-user: 8 TiB). */
#define VFIO_USER_DMA_CHUNK		(8ULL << 40)
#define VFIO_USER_DEF_DMA_WINDOW	BIT_ULL(48)

/* Region index in the consumer's file offset, as vfio-pci does it. */
#define VFIO_USER_OFFSET_SHIFT		40
#define VFIO_USER_OFFSET_TO_INDEX(off)	((off) >> VFIO_USER_OFFSET_SHIFT)
#define VFIO_USER_INDEX_TO_OFFSET(idx)	((u64)(idx) << VFIO_USER_OFFSET_SHIFT)
#define VFIO_USER_OFFSET_MASK		(BIT_ULL(VFIO_USER_OFFSET_SHIFT) - 1)

/**
 * enum vfio_user_state - attach state of one mdev
 * @VFIO_USER_DETACHED: no server; consumer calls fail with -ENOTCONN
 * @VFIO_USER_CONNECTING: an attach is negotiating with a server
 * @VFIO_USER_READY: attached; consumer calls are forwarded. The device
 *	reads "broken" while its connection is dead (vfio_user_conn.dead)
 */
enum vfio_user_state {
	VFIO_USER_DETACHED,
	VFIO_USER_CONNECTING,
	VFIO_USER_READY,
};

/**
 * struct vfio_user_caps - what VERSION negotiated
 * @minor: protocol minor version in use
 * @max_msg_fds: most fds the server takes in one message
 * @max_xfer: largest data payload of one message, both ways
 * @max_dma_maps: most DMA regions the server keeps
 * @pgsizes: page sizes the server supports for DMA
 */
struct vfio_user_caps {
	u16 minor;
	u32 max_msg_fds;
	u32 max_xfer;
	u32 max_dma_maps;
	u64 pgsizes;
};

/**
 * struct vfio_user_req - one command sent to the server
 * @ref: the tag table holds one reference while the request is in it, the
 *	sender holds one until it returns; freed with the last one
 * @msg_id: tag, unique among the connection's requests in flight
 * @command: &enum vfio_user_command
 * @done: completed once, by the receiver or by vfio_user_conn_broken()
 * @status: 0 or a negative errno, valid after @done
 * @reply_min: shortest acceptable reply payload
 * @reply_max: longest acceptable reply payload, the size of @reply
 * @reply_len: reply payload received, valid after @done
 * @reply: reply payload buffer
 */
struct vfio_user_req {
	struct kref ref;
	u16 msg_id;
	u16 command;
	struct completion done;
	int status;
	size_t reply_min;
	size_t reply_max;
	size_t reply_len;
	u8 reply[];
};

/**
 * struct vfio_user_cmd - a command from the server (DMA_READ/DMA_WRITE)
 * @node: in vfio_user_conn.cmds
 * @msg_id: the server's msg_id, echoed in our reply
 * @command: VFIO_USER_DMA_READ or VFIO_USER_DMA_WRITE
 * @no_reply: the server asked for no reply
 * @len: payload length
 * @data: a DMA_WRITE's data, the payload after the access, in pages;
 *	NULL when @payload holds all of it
 * @payload: the payload (of a DMA_WRITE with @data, the access only),
 *	validated by the receiver
 *
 * Allocated by the receiver, freed with vfio_user_cmd_free() by
 * vfio_user_cmd_work() or when the connection is torn down.
 */
struct vfio_user_cmd {
	struct list_head node;
	u16 msg_id;
	u16 command;
	bool no_reply;
	size_t len;
	struct vfio_user_dma_pages *data;
	u8 payload[];
};

/**
 * struct vfio_user_dma_pages - DMA data in pages of the module's own
 * @nr: entries used in @bv
 * @bv: each a compound page (or an order-0 one) holding its own reference
 */
struct vfio_user_dma_pages {
	unsigned int nr;
	struct bio_vec bv[];
};

/**
 * struct vfio_user_conn - one attach of a device to a server
 * @udev: the device; outlives the connection
 * @sock: connected AF_UNIX stream socket, released in vfio_user_conn_free()
 * @caps: negotiated capabilities, constant once the receiver runs
 * @max_xfer: the max_data_xfer_size we announced (module parameter)
 * @timeout: bound on every wait for the server, in jiffies
 * @lock: protects @reqs, @dead, @reason, @cmds and @nr_cmds
 * @reqs: in-flight requests by msg_id
 * @dead: set once by vfio_user_conn_broken(); no new request is accepted
 * @reason: why the connection died
 * @send_mutex: serialises whole messages onto @sock
 * @recv_mutex: one reader of @sock at a time: a waiting consumer or
 *	@recv_work
 * @rx_wait: consumers waiting for their reply (and for data to read)
 * @rx_pollers: number of consumers waiting on @rx_wait
 * @recv_work: reads @sock when data comes and no consumer waits
 * @last_rx: jiffies of the last message from the server
 * @max_payload: largest payload accepted from the server
 * @saved_data_ready: the socket's callback before ours
 * @saved_state_change: the socket's callback before ours
 * @cmds: server commands (DMA_READ/WRITE) waiting for @cmd_work
 * @nr_cmds: length of @cmds
 * @cmd_work: serves @cmds, on vfio_user_wq
 *
 * Created by vfio_user_conn_connect() in the sysfs writer's context and
 * published in vfio_user_device.conn. Torn down by vfio_user_conn_stop()
 * once it is dead and unpublished: the socket callbacks are taken back and
 * @recv_work and @cmd_work cancelled before the memory goes, so neither
 * needs a reference.
 */
struct vfio_user_conn {
	struct vfio_user_device *udev;
	struct socket *sock;
	struct vfio_user_caps caps;
	u32 max_xfer;
	unsigned long timeout;

	spinlock_t lock;		/* reqs, dead, reason, cmds */
	struct idr reqs;
	bool dead;
	char reason[VFIO_USER_REASON_LEN];
	struct list_head cmds;
	unsigned int nr_cmds;

	struct mutex send_mutex;	/* whole messages on sock */
	struct mutex recv_mutex;	/* one reader of sock */
	wait_queue_head_t rx_wait;
	atomic_t rx_pollers;
	struct work_struct recv_work;
	unsigned long last_rx;
	size_t max_payload;
	void (*saved_data_ready)(struct sock *sk);
	void (*saved_state_change)(struct sock *sk);
	struct work_struct cmd_work;
};

/**
 * struct vfio_user_region - cached DEVICE_GET_REGION_INFO reply
 * @flags: VFIO_REGION_INFO_FLAG_*, mmap cleared
 * @size: region size
 * @caps: capability chain as the server gave it, validated; offsets in it
 *	are relative to the start of struct vfio_region_info
 * @caps_len: length of @caps
 */
struct vfio_user_region {
	u32 flags;
	u64 size;
	void *caps;
	u32 caps_len;
};

/**
 * struct vfio_user_irq - the consumer's view of one IRQ index
 * @flags: VFIO_IRQ_INFO_* from the server
 * @count: vectors, from the server
 * @triggers: eventfd file per vector the consumer set, NULL if none;
 *	replayed to a re-attached server; @count entries
 */
struct vfio_user_irq {
	u32 flags;
	u32 count;
	struct file **triggers;
};

/**
 * struct vfio_user_device - one mediated device
 * @vdev: the VFIO device; its refcount owns this struct
 *	(vfio_alloc_device() in probe, freed by the core after .release)
 * @mdev: the mdev this device is bound to
 * @lock: protects @state, @socket_path, @timeout_ms, and the attach,
 *	detach and re-attach sequence; consumer calls never take it
 * @state: &enum vfio_user_state
 * @socket_path: path of the attached server's socket
 * @timeout_ms: bound on each wait for the server
 * @conn_sem: readers: consumer calls using @conn; writer: attach/detach
 *	swapping it
 * @conn: current connection or NULL, under @conn_sem
 * @info_flags: VFIO_DEVICE_FLAGS_* from the server, under @conn_sem
 * @num_regions: regions the server has, under @conn_sem
 * @regions: cached region info, @num_regions entries, under @conn_sem
 * @num_irqs: IRQ indexes the server has, under @conn_sem
 * @irqs: cached IRQ info and the consumer's eventfds, under @irq_lock
 * @irq_lock: protects @irqs' triggers and orders SET_IRQS messages
 * @dma_sem: readers: DMA served to the server; writer: open/close
 * @dma_enabled: a consumer has the device open, DMA may be served;
 *	under @dma_sem
 * @open: the consumer has the device open, under @conn_sem (write)
 */
struct vfio_user_device {
	struct vfio_device vdev;
	struct mdev_device *mdev;

	struct mutex lock;		/* state, socket_path, attach */
	enum vfio_user_state state;
	char socket_path[UNIX_PATH_MAX];
	unsigned int timeout_ms;
	bool open;

	struct rw_semaphore conn_sem;
	struct vfio_user_conn *conn;
	u32 info_flags;
	u32 num_regions;
	struct vfio_user_region *regions;
	u32 num_irqs;

	struct mutex irq_lock;		/* irqs, SET_IRQS order */
	struct vfio_user_irq *irqs;

	struct rw_semaphore dma_sem;
	bool dma_enabled;
};

static inline struct vfio_user_device *
to_vfio_user_device(struct vfio_device *vdev)
{
	return container_of(vdev, struct vfio_user_device, vdev);
}

static inline struct device *vfio_user_dev(struct vfio_user_device *udev)
{
	return &udev->mdev->dev;
}

extern struct workqueue_struct *vfio_user_wq;

/* device.c */
extern const struct vfio_device_ops vfio_user_dev_ops;
int vfio_user_attach(struct vfio_user_device *udev, const char *path);
void vfio_user_detach(struct vfio_user_device *udev);

/* transport.c */
struct vfio_user_conn *vfio_user_conn_connect(struct vfio_user_device *udev,
					      const char *path,
					      unsigned int timeout_ms);
void vfio_user_conn_start(struct vfio_user_conn *conn);
void vfio_user_conn_broken(struct vfio_user_conn *conn, const char *fmt, ...)
	__printf(2, 3);
void vfio_user_conn_stop(struct vfio_user_conn *conn);
void vfio_user_conn_stop_waiters(struct vfio_user_conn *conn);
bool vfio_user_conn_dead(struct vfio_user_conn *conn, char *reason, size_t len);
int vfio_user_send_sync(struct vfio_user_conn *conn, u16 command,
			const void *payload, size_t len,
			const void *data, size_t data_len,
			const int *fds, unsigned int nr_fds,
			void *reply, size_t reply_min, size_t reply_max);
int vfio_user_send_reply(struct vfio_user_conn *conn, u16 msg_id, u16 command,
			 int error, const void *payload, size_t len,
			 const void *data, size_t data_len);
int vfio_user_send_reply_pages(struct vfio_user_conn *conn, u16 msg_id,
			       u16 command, struct bio_vec *bv,
			       unsigned int nr_bv, size_t size);

/* dma.c */
struct vfio_user_dma_pages *vfio_user_dma_pages_alloc(size_t size);
void vfio_user_cmd_free(struct vfio_user_cmd *cmd);
void vfio_user_cmd_work(struct work_struct *work);
int vfio_user_dma_announce(struct vfio_user_conn *conn);

/* irq.c */
long vfio_user_set_irqs(struct vfio_user_device *udev, unsigned long arg);
int vfio_user_irqs_replay(struct vfio_user_device *udev,
			  struct vfio_user_conn *conn);
void vfio_user_irqs_release(struct vfio_user_device *udev);
void vfio_user_irqs_free(struct vfio_user_device *udev);

/* sysfs.c */
extern const struct attribute_group *vfio_user_dev_groups[];

#endif /* _VFIO_USER_MDEV_H */
