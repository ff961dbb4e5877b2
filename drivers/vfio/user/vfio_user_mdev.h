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
#include <linux/kref.h>
#include <linux/mdev.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/rwsem.h>
#include <linux/spinlock.h>
#include <linux/uio.h>
#include <linux/un.h>
#include <linux/vfio.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <linux/xarray.h>
#include <linux/vfio_user.h>

#include "caps.h"

#define VFIO_USER_NAME			"vfio_user"
#define VFIO_USER_TYPE_PCI		"pci"

#define VFIO_USER_REASON_LEN		96

/* Default and bounds of the per-device timeout_ms attribute. */
#define VFIO_USER_DEF_TIMEOUT_MS	5000
#define VFIO_USER_MAX_TIMEOUT_MS	600000
/* An attach (some 40 requests, more to replay eventfds): this many timeouts. */
#define VFIO_USER_ATTACH_TIMEOUTS	10

/* What we accept from a server, whatever it announces. */
#define VFIO_USER_MAX_REGIONS		32
#define VFIO_USER_MAX_IRQS		16
#define VFIO_USER_MAX_IRQ_COUNT		2048
#define VFIO_USER_MAX_VERSION_JSON	4096
/* Most fds we attach to one message, whatever the server takes. */
#define VFIO_USER_MAX_MSG_FDS		64
/* Most fds we take from a server with one message (max_msg_fds we offer). */
#define VFIO_USER_MAX_RX_FDS		8
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
/*
 * Server commands (DMA_READ/WRITE) the receiver queues for the DMA work
 * before it stops reading the socket: this many times max_data_xfer_size.
 */
#define VFIO_USER_CMD_QUEUE_XFERS	4
/* Biggest DMA region a server must accept (libvfio-user: 8 TiB). */
#define VFIO_USER_DMA_CHUNK		(8ULL << 40)
/* The IOVA space announced to the server: [0, 2^48). */
#define VFIO_USER_DMA_SPACE		BIT_ULL(48)
/*
 * The shared-memory part of it, [0, dma_window), in DMA regions of
 * dma_window_chunk bytes backed by the window file: 1 TiB of a server's
 * 128 TiB of address space per device, so one server can map 64 and more
 * devices' windows; guests with more memory than that reach the rest by
 * message. Both 2 MiB aligned (SPDK wants that).
 */
#define VFIO_USER_DEF_DMA_WINDOW	BIT_ULL(40)
#define VFIO_USER_DMA_WINDOW_ALIGN	SZ_2M

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
 * struct vfio_user_call - one command for vfio_user_call()
 * @command: &enum vfio_user_command
 * @payload: fixed part of the payload, copied into the request
 * @len: length of @payload
 * @data: variable data following @payload (a REGION_WRITE's bytes), copied
 *	into the request; NULL with @data_len set leaves room for the caller
 *	to fill (vfio_user_req_data())
 * @data_len: length of @data
 * @fds: fds (numbers in current->files) passed with SCM_RIGHTS, or NULL
 * @nr_fds: number of @fds, at most the server's max_msg_fds
 * @reply: buffer for the reply payload (vfio_user_call() only), or NULL
 * @reply_min: shortest reply payload accepted
 * @reply_max: longest reply payload accepted; room the request keeps
 * @rx_files: where vfio_user_call() puts the files the server passed with
 *	its reply (the caller fputs them), or NULL: none expected
 * @rx_max_files: room in @rx_files; a reply with more has them all dropped
 */
struct vfio_user_call {
	u16 command;
	const void *payload;
	size_t len;
	const void *data;
	size_t data_len;
	const int *fds;
	unsigned int nr_fds;
	void *reply;
	size_t reply_min;
	size_t reply_max;
	struct file **rx_files;
	unsigned int rx_max_files;
};

/*
 * msg_ids from here up are posted commands' (vfio_user_post()); requests
 * awaiting a reply have those below.
 */
#define VFIO_USER_POSTED_ID		0x8000

/* Register-sized messages and replies live inside the request. */
#define VFIO_USER_REQ_SMALL		48

/**
 * enum vfio_user_tx_state - where a request is on its way out
 * @VFIO_USER_TX_NEW: not yet queued
 * @VFIO_USER_TX_QUEUED: on vfio_user_conn.tx_list, no byte sent; a waiter
 *	that leaves may take it back
 * @VFIO_USER_TX_SENDING: first bytes on the wire; the connection finishes
 *	it whoever waits for it
 * @VFIO_USER_TX_SENT: all of it on the wire (or dropped: connection dead)
 */
enum vfio_user_tx_state {
	VFIO_USER_TX_NEW,
	VFIO_USER_TX_QUEUED,
	VFIO_USER_TX_SENDING,
	VFIO_USER_TX_SENT,
};

/**
 * struct vfio_user_req - one message to the server, and its reply
 * @ref: the caller holds one; vfio_user_conn.reqs (awaiting a reply) and
 *	vfio_user_conn.tx_list (being sent) one each while it is in them;
 *	freed with the last, so a waiter that leaves early never frees what
 *	the sender still sends or the receiver still writes into
 * @msg_id: tag, unique among the connection's requests awaiting a reply
 *	(below %VFIO_USER_POSTED_ID); a posted command's, or the server's for a
 *	reply we send
 * @command: &enum vfio_user_command
 * @no_reply: nothing comes back: a reply we send to a server command, or a
 *	command sent with the no-reply flag (vfio_user_post())
 * @tx_node: in vfio_user_conn.tx_list, under vfio_user_conn.lock
 * @tx_state: &enum vfio_user_tx_state, under vfio_user_conn.lock
 * @tx_off: bytes of the message sent, under vfio_user_conn.send_mutex
 * @tx_len: length of the whole message, header included
 * @fds: fds to attach to the first byte; such a request is started only by
 *	its submitter (@task), in whose fd table the numbers are
 * @nr_fds: number of @fds
 * @task: the waiting task, woken by the completion; NULL once it left;
 *	under vfio_user_conn.lock
 * @done: set once, by the receiver or by vfio_user_conn_broken(), under
 *	vfio_user_conn.lock
 * @status: 0 or a negative errno, valid after @done
 * @queued: jiffies when it was queued
 * @queued_ns: ktime_get_ns() when it was queued (trace events, latency
 *	stats); 0 for a message nothing answers
 * @deadline: jiffies by which the reply must have come, unless the server
 *	keeps sending commands meanwhile (vfio_user_req_deadline())
 * @reply_min: shortest acceptable reply payload
 * @reply_max: longest acceptable reply payload, the size of @reply
 * @reply_len: reply payload received, valid after @done
 * @reply: reply payload buffer, owned by the request
 * @rx_files: files the server passed with the reply (vfio_user_conn.fd_task
 *	receives them), owned by the request until taken; @rx_max_files
 *	entries, NULL if none expected
 * @rx_max_files: most files the reply may carry
 * @hdr: the message header
 * @tx_pages: the message after @hdr, in pages (a DMA_READ reply), or NULL
 * @nr_pages: entries in @tx_pages
 * @tx_pages_owner: freed with the request (dma.c's pages)
 * @buf: payload then data, owned by the request (@small_tx when it fits)
 * @len: length of the payload in @buf
 * @data_len: length of the data after it
 * @small_tx: room for a register-sized message, no allocation
 * @small_rx: room for a register-sized reply, no allocation
 */
struct vfio_user_req {
	struct kref ref;
	u16 msg_id;
	u16 command;
	bool no_reply;

	struct list_head tx_node;
	enum vfio_user_tx_state tx_state;
	size_t tx_off;
	size_t tx_len;
	const int *fds;
	unsigned int nr_fds;

	struct task_struct *task;
	bool done;
	int status;
	unsigned long queued;
	u64 queued_ns;
	unsigned long deadline;

	size_t reply_min;
	size_t reply_max;
	size_t reply_len;
	void *reply;
	struct file **rx_files;
	unsigned int rx_max_files;

	struct vfio_user_hdr hdr;
	struct bio_vec *tx_pages;
	unsigned int nr_pages;
	struct vfio_user_dma_pages *tx_pages_owner;
	void *buf;
	size_t len;
	size_t data_len;
	u8 small_tx[VFIO_USER_REQ_SMALL] __aligned(8);
	u8 small_rx[VFIO_USER_REQ_SMALL] __aligned(8);
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
 * @payload: the payload (of a DMA_WRITE with @data, the access only)
 *
 * Allocated by vfio_user_cmd_alloc() when the receiver meets its header,
 * filled by the receiver, handed to dma.c with vfio_user_cmd_queue(),
 * freed there once served or when the connection is torn down.
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
 * enum vfio_user_rx_state - where the receiver is in the current message
 * @VFIO_USER_RX_HDR: reading a header
 * @VFIO_USER_RX_REPLY: reading a reply's payload into its request
 * @VFIO_USER_RX_CMD: reading a server command's payload
 * @VFIO_USER_RX_DISCARD: reading an error reply's payload, dropped
 */
enum vfio_user_rx_state {
	VFIO_USER_RX_HDR,
	VFIO_USER_RX_REPLY,
	VFIO_USER_RX_CMD,
	VFIO_USER_RX_DISCARD,
};

/**
 * struct vfio_user_conn - one attach of a device to a server
 * @ref: the attach (or the device, once published) holds one; a detach
 *	aborting an attach holds another while it breaks it; the last frees
 *	the socket and the memory
 * @udev: the device; outlives the connection
 * @sock: connected AF_UNIX stream socket, released with the connection
 * @sock_file: the file of @sock when the server passed it (the twin
 *	socket), released with the connection; NULL for a socket we created
 * @twin: the connection on the server's twin socket, which carries the
 *	server's commands and our replies to them, or NULL; breaks and stops
 *	with this one, freed with it
 * @main: on a twin connection, the main connection it belongs to (which
 *	outlives it); NULL otherwise
 * @caps: negotiated capabilities, constant once VERSION is done
 * @max_xfer: the max_data_xfer_size we announced (module parameter)
 * @timeout: bound on every request's wait for the server, in jiffies
 * @attach_deadline: while attaching, the end of the whole attach; 0 after
 * @lock: protects @dead, @stopping, @stopped, @reason, @tx_list, @cmds,
 *	@cmd_bytes, the requests' @tx_state, @done and @task, and changes
 *	of @reqs (which has its own lock for lookups)
 * @reqs: requests awaiting a reply, by msg_id
 * @next_id: where the search for a free msg_id starts
 * @dead: set once by vfio_user_conn_broken(); no new request is accepted
 * @stopping: the end is deliberate (detach, remove): logged at debug level
 * @stopped: vfio_user_conn_stop() has begun: no work item is queued
 * @reason: why the connection died
 * @versioned: VERSION is done; until then only its reply is accepted
 * @tx_list: requests to send, in order; the first may be partly sent
 * @send_mutex: held by whoever writes to @sock: a submitter (trylock),
 *	@send_work, or a submitter starting a request with fds. Never held
 *	across a wait: every send is non-blocking
 * @tx_blocked: a send found the socket full; write_space queues
 *	@send_work then (and only then)
 * @send_work: sends what the submitters could not, when the socket has
 *	room again
 * @tx_wait: submitters of fds waiting for room on the socket
 * @recv_mutex: held by whoever reads @sock: @recv_work or a waiting
 *	consumer (trylock); every read is non-blocking and resumes where the
 *	last one stopped
 * @recv_work: reads @sock when data comes and no consumer reads
 * @rx_wait: consumers waiting for replies, woken one at a time when data
 *	comes so that one of them reads
 * @rx_waiters: number of tasks on @rx_wait
 * @posted_id: counts commands sent with the no-reply flag, for their msg_id
 * @rx_state: &enum vfio_user_rx_state; the rx_* members are under
 *	@recv_mutex
 * @rx_hdr: the header being read, or of the message being read
 * @rx_got: bytes of the header or payload read so far
 * @rx_len: payload length of the current message
 * @rx_req: the request whose reply is being read (the table's reference)
 * @rx_cmd: the server command being read
 * @rx_files: files received with the current message, moved to its
 *	request when it is a reply that may carry them, else dropped
 * @rx_nr_files: entries in @rx_files
 * @fd_task: while an attach asks for replies that carry fds (VERSION,
 *	region info), the attaching writer: it alone reads @sock then, with
 *	@fd_buf as control buffer, so that the core installs the fds in its
 *	table, whence they are taken as files (vfio_user_conn_fds_begin())
 * @fd_buf: a page mapped in @fd_task's address space for that
 * @last_cmd: jiffies when the last server command was received
 * @max_payload: largest payload accepted from the server
 * @saved_data_ready: the socket's callback before ours
 * @saved_state_change: the socket's callback before ours
 * @saved_write_space: the socket's callback before ours
 * @cmds: server commands (DMA_READ/WRITE) waiting for @cmd_work; dma.c's,
 *	under @lock
 * @cmd_bytes: bytes held by @cmds and the command being served; dma.c's
 * @cmd_work: serves @cmds, on vfio_user_wq; dma.c's
 *
 * Created by vfio_user_conn_connect() in the sysfs writer's context,
 * negotiated and filled while only the attach sees it, then published in
 * vfio_user_device.conn. Torn down by vfio_user_conn_stop() once it is
 * unpublished: the socket callbacks are taken back and the work items
 * cancelled before the memory goes, so none needs a reference.
 */
struct vfio_user_conn {
	struct kref ref;
	struct vfio_user_device *udev;
	struct socket *sock;
	struct file *sock_file;
	struct vfio_user_conn *twin;
	struct vfio_user_conn *main;
	struct vfio_user_caps caps;
	u32 max_xfer;
	unsigned long timeout;
	unsigned long attach_deadline;

	spinlock_t lock;	/* reqs, dead, reason, tx_list, req states */
	struct xarray reqs;
	u32 next_id;
	bool dead;
	bool stopping;
	bool stopped;
	char reason[VFIO_USER_REASON_LEN];
	bool versioned;

	/* send state */
	struct list_head tx_list;
	struct mutex send_mutex;	/* whoever writes to sock */
	bool tx_blocked;
	struct work_struct send_work;
	wait_queue_head_t tx_wait;

	/* recv state */
	struct mutex recv_mutex;
	struct work_struct recv_work;
	wait_queue_head_t rx_wait;
	atomic_t rx_waiters;
	atomic_t posted_id;
	enum vfio_user_rx_state rx_state;
	struct vfio_user_hdr rx_hdr;
	size_t rx_got;
	size_t rx_len;
	struct vfio_user_req *rx_req;
	struct vfio_user_cmd *rx_cmd;
	struct file *rx_files[VFIO_USER_MAX_RX_FDS];
	unsigned int rx_nr_files;
	struct task_struct *fd_task;
	void __user *fd_buf;
	unsigned long last_cmd;
	size_t max_payload;

	void (*saved_data_ready)(struct sock *sk);
	void (*saved_state_change)(struct sock *sk);
	void (*saved_write_space)(struct sock *sk);

	/* server commands, dma.c's */
	struct list_head cmds;
	size_t cmd_bytes;
	struct work_struct cmd_work;
};

/**
 * struct vfio_user_area - a part of a region the consumer may mmap
 * @start: offset in the region, page aligned
 * @end: end offset, exclusive, page aligned
 */
struct vfio_user_area {
	u64 start;
	u64 end;
};

/**
 * struct vfio_user_region - cached DEVICE_GET_REGION_INFO reply
 * @flags: VFIO_REGION_INFO_FLAG_READ and _WRITE, and _MMAP when the server
 *	backs the region with memory the module can map (@file)
 * @size: region size, at most 2^VFIO_USER_OFFSET_SHIFT
 * @caps: the capabilities passed on to the consumer, or NULL: checked and
 *	rebuilt by info.c in host byte order, back to back from offset 0;
 *	each next is an offset in @caps, 0 ends the chain
 * @caps_len: length of @caps
 * @file: the shmem file (memfd, tmpfs) the server passed for the region,
 *	or NULL; its pages are what a consumer mmap of the region maps.
 *	Handed over to mmap.c when the connection is published
 * @file_offset: where the region starts in @file, page aligned
 * @file_write: the consumer may map it writable (the server's WRITE flag
 *	and an fd open for writing)
 * @areas: the mmap-able parts (sparse mmap capability), or NULL: all of it
 * @nr_areas: entries in @areas
 */
struct vfio_user_region {
	u32 flags;
	u64 size;
	void *caps;
	u32 caps_len;
	struct file *file;
	u64 file_offset;
	bool file_write;
	struct vfio_user_area *areas;
	u32 nr_areas;
};

/**
 * struct vfio_user_irq - the consumer's view of one IRQ index
 * @flags: VFIO_IRQ_INFO_* from the server, reduced to those VFIO defines
 * @count: vectors, from the server
 * @triggers: eventfd file per vector the consumer set, NULL if none;
 *	replayed to a re-attached server; @count entries
 */
struct vfio_user_irq {
	u32 flags;
	u32 count;
	struct file **triggers;
};

/* log2 buckets of the request latency histogram: up to 2^31 ns and more */
#define VFIO_USER_LATENCY_BUCKETS	32

/**
 * struct vfio_user_stats - one CPU's share of a device's counters (stats.c)
 * @sent_msgs: messages sent, by command
 * @sent_bytes: their bytes, headers included
 * @recv_msgs: messages received whole, by command
 * @recv_bytes: their bytes, headers included
 * @error_replies: replies of the server with the error flag
 * @timeouts: requests that got no reply in time
 * @violations: protocol violations found in what the server sent
 * @broken: connections that broke (not detached on purpose)
 * @dma_read_bytes: bytes the server read by DMA_READ
 * @dma_write_bytes: bytes the server wrote by DMA_WRITE
 * @dma_errors: DMA_READ/DMA_WRITE refused with an error reply
 * @irq_fds_sent: eventfds passed with DEVICE_SET_IRQS
 * @posted: commands sent with the no-reply flag (posted BAR writes)
 * @latency: requests by log2 of their wait in ns, once attached
 */
struct vfio_user_stats {
	u64 sent_msgs[VFIO_USER_MAX_COMMAND];
	u64 sent_bytes[VFIO_USER_MAX_COMMAND];
	u64 recv_msgs[VFIO_USER_MAX_COMMAND];
	u64 recv_bytes[VFIO_USER_MAX_COMMAND];
	u64 error_replies;
	u64 timeouts;
	u64 violations;
	u64 broken;
	u64 dma_read_bytes;
	u64 dma_write_bytes;
	u64 dma_errors;
	u64 irq_fds_sent;
	u64 posted;
	u64 latency[VFIO_USER_LATENCY_BUCKETS];
};

struct vfio_user_mig_file;

/**
 * struct vfio_user_mig - the consumer's migration FSM (migration.c)
 * @lock: protects the members but @srv_state and @size_hint; held across
 *	one bounded request at a time
 * @state: &enum vfio_device_mig_state, the consumer's view
 * @srv_flags: VFIO_USER_MIGRATION_* the server offers (at publish)
 * @srv_state: the server's state as last known (READ_ONCE/WRITE_ONCE)
 * @conn: the connection a session outside RUNNING runs on (a reference)
 * @file: the data fd of the session in STOP_COPY or RESUMING, or NULL
 * @size_hint: bytes of the last complete STOP_COPY stream
 */
struct vfio_user_mig {
	struct mutex lock;	/* the FSM */
	enum vfio_device_mig_state state;
	u32 srv_flags;
	u32 srv_state;
	struct vfio_user_conn *conn;
	struct vfio_user_mig_file *file;
	u64 size_hint;
};

/**
 * struct vfio_user_device - one mediated device
 * @vdev: the VFIO device; its refcount owns this struct
 *	(vfio_alloc_device() in probe, freed by the core after .release)
 * @mdev: the mdev this device is bound to
 * @attach_mutex: serialises attach, detach and re-attach; held across an
 *	attach's waits on the server, so nothing else takes it but those,
 *	and a detach aborts the attach (@attaching) before it waits for it
 * @state_lock: protects @state, @socket_path, @timeout_ms, @posted_writes,
 *	@attaching and the @conn pointer for sysfs readers; never held
 *	across a wait
 * @state: &enum vfio_user_state
 * @socket_path: path of the attached server's socket
 * @timeout_ms: bound on each wait for the server, read at each attach
 * @attaching: the connection an attach is negotiating, or NULL
 * @aborts: counts detaches and removals, so that an attach that has not
 *	yet set @attaching sees one that came meanwhile
 * @removed: the device is being removed; no attach any more; under
 *	@state_lock
 * @open: a consumer has the device open, under @conn_sem (write)
 * @conn_sem: readers: consumer calls using @conn; writer: publishing or
 *	unpublishing it, which waits only for calls on a dead or no
 *	connection, which return at once
 * @conn: current connection or NULL, under @conn_sem (and @state_lock)
 * @info_flags: VFIO_DEVICE_FLAGS_* from the server, under @conn_sem
 * @num_regions: regions the server has, under @conn_sem
 * @regions: cached region info, @num_regions entries, under @conn_sem
 * @post_bars: BIT(index) for each BAR whose writes are posted, under
 *	@conn_sem
 * @posted_writes: post BAR writes where it is safe (sysfs; @state_lock), read
 *	at each attach
 * @irq_lock: orders SET_IRQS messages and changes to @irqs; held across
 *	waits only by consumer calls on a live connection
 * @trig_lock: protects the @irqs pointer and the trigger files against
 *	readers that must not sleep (vfio_user_request())
 * @irqs: cached IRQ info and the consumer's eventfds, under @irq_lock
 *	(writers also take @trig_lock)
 * @unmask: the module's wait on the consumer's INTx unmask eventfd, or
 *	NULL; changed under @irq_lock and @trig_lock
 * @irq_gen: bumped by every change of the consumer's eventfds, under
 *	@trig_lock; an attach replaying them checks it before publishing
 * @dma_sem: readers: DMA served to the server; writer: open/close
 * @dma_enabled: a consumer has the device open, DMA may be served;
 *	under @dma_sem
 * @dma_window: size of the shared-memory DMA window, read at each attach;
 *	0: none, message DMA only; under @state_lock
 * @dma_window_chunk: size of each DMA region of the window; under
 *	@state_lock
 * @window_mutex: protects @window; held by an invalidation while it zaps
 *	and unpins, which never waits on the server
 * @window: the shared-memory DMA window of the current or attaching
 *	connection, or NULL (window.c)
 * @window_work: revokes the window of a broken connection
 * @iommufd_bound: the consumer reaches the device through iommufd, not a
 *	type1 container (vfio_user_bind_iommufd())
 * @mmap: the consumer's mappings of server memory (mmap.c)
 * @stats: per-CPU counters (stats.c)
 * @debugfs: the device's debugfs directory, or an error/NULL
 * @mig: migration (migration.c)
 * @log_lock: serialises DMA logging START, STOP and REPORT (dirty.c)
 * @dirty: the started DMA log or NULL; RCU, written under @log_lock
 */
struct vfio_user_device {
	struct vfio_device vdev;
	struct mdev_device *mdev;

	struct mutex attach_mutex;	/* attach, detach, re-attach */
	spinlock_t state_lock;		/* state, socket_path, attaching */
	enum vfio_user_state state;
	char socket_path[UNIX_PATH_MAX];
	unsigned int timeout_ms;
	struct vfio_user_conn *attaching;
	unsigned int aborts;
	bool removed;
	bool open;

	struct rw_semaphore conn_sem;
	struct vfio_user_conn *conn;
	u32 info_flags;
	u32 num_regions;
	struct vfio_user_region *regions;
	u8 post_bars;
	bool posted_writes;

	struct mutex irq_lock;		/* irqs, SET_IRQS order */
	spinlock_t trig_lock;		/* irqs pointer, triggers, irq_gen */
	struct vfio_user_irq *irqs;
	u64 irq_gen;
	struct vfio_user_unmask *unmask;

	struct rw_semaphore dma_sem;
	bool dma_enabled;

	u64 dma_window;
	u64 dma_window_chunk;
	struct mutex window_mutex;	/* window */
	struct vfio_user_window *window;
	struct work_struct window_work;
	bool iommufd_bound;
	struct vfio_user_mmap *mmap;
	struct vfio_user_stats __percpu *stats;
	struct dentry *debugfs;
	struct vfio_user_mig mig;
	struct mutex log_lock;		/* dirty */
	struct vfio_user_dirty __rcu *dirty;
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
int vfio_user_detach(struct vfio_user_device *udev, bool remove);
int vfio_user_get_conn(struct vfio_user_device *udev,
		       struct vfio_user_conn **connp);
void vfio_user_put_conn(struct vfio_user_device *udev);
void vfio_user_abort_attach(struct vfio_user_device *udev, bool remove);

/* transport.c */
struct vfio_user_conn *vfio_user_conn_connect(struct vfio_user_device *udev,
					      const char *path,
					      unsigned int timeout_ms);
void vfio_user_conn_start(struct vfio_user_conn *conn);
int vfio_user_conn_fds_begin(struct vfio_user_conn *conn);
void vfio_user_conn_fds_end(struct vfio_user_conn *conn);
bool vfio_user_conn_takes_fds(struct vfio_user_conn *conn);
int vfio_user_conn_twin(struct vfio_user_conn *conn, struct file *file);
void vfio_user_conn_broken(struct vfio_user_conn *conn, const char *fmt, ...)
	__printf(2, 3);
void vfio_user_conn_close(struct vfio_user_conn *conn, const char *reason);
void vfio_user_conn_stop(struct vfio_user_conn *conn);
void vfio_user_conn_put(struct vfio_user_conn *conn);
void vfio_user_conn_queue(struct vfio_user_conn *conn, struct work_struct *work);
bool vfio_user_conn_dead(struct vfio_user_conn *conn, char *reason, size_t len);
struct vfio_user_req *vfio_user_req_alloc(const struct vfio_user_call *call);
void *vfio_user_req_data(struct vfio_user_req *req);
int vfio_user_req_run(struct vfio_user_conn *conn, struct vfio_user_req *req);
void vfio_user_req_put(struct vfio_user_req *req);
int vfio_user_post(struct vfio_user_conn *conn, struct vfio_user_req *req);
int vfio_user_call(struct vfio_user_conn *conn,
		   const struct vfio_user_call *call);
int vfio_user_send_reply(struct vfio_user_conn *conn, u16 msg_id, u16 command,
			 int error, const void *payload, size_t len);
int vfio_user_send_reply_pages(struct vfio_user_conn *conn, u16 msg_id,
			       u16 command, struct vfio_user_dma_pages *dp,
			       size_t size);

/* version.c; vfio_user_parse_version_json() (json.c) is in caps.h */
int vfio_user_negotiate(struct vfio_user_conn *conn);

/* info.c */
/**
 * struct vfio_user_info - what attach learns from the server before it
 * publishes the connection
 * @flags: VFIO_DEVICE_FLAGS_* we pass on
 * @num_regions: entries in @regions
 * @regions: region info and validated capability chains
 * @irqs: IRQ info per VFIO PCI index
 * @mig_flags: VFIO_MIGRATION_* the device offers with this server, or 0
 * @mig_srv_flags: VFIO_USER_MIGRATION_* the server offers
 * @mig_srv_state: the server's migration state at attach
 * @post_bars: BIT(index) for each BAR whose writes are posted
 */
struct vfio_user_info {
	u32 flags;
	u32 num_regions;
	struct vfio_user_region *regions;
	struct vfio_user_irq irqs[VFIO_PCI_NUM_IRQS];
	u32 mig_flags;
	u32 mig_srv_flags;
	u32 mig_srv_state;
	u8 post_bars;
};

void vfio_user_free_regions(struct vfio_user_region *regions, u32 n);
int vfio_user_fetch_info(struct vfio_user_conn *conn,
			 struct vfio_user_info *info);
void vfio_user_info_free(struct vfio_user_info *info);
bool vfio_user_same_shape(struct vfio_user_device *udev,
			  struct vfio_user_info *info);

/* dirty.c */
struct vfio_user_dirty;
void vfio_user_dirty_mark(struct vfio_user_device *udev, u64 iova, u64 len);
void vfio_user_dirty_stop(struct vfio_user_device *udev);
extern const struct vfio_log_ops vfio_user_log_ops;

/* window.c */
int vfio_user_window_init(void);
struct file *vfio_user_pseudo_file(const char *name,
				   const struct file_operations *fops,
				   void *priv);
void vfio_user_window_exit(void);
int vfio_user_window_create(struct vfio_user_device *udev,
			    struct vfio_user_conn *conn, u64 size);
int vfio_user_window_install(struct vfio_user_device *udev);
void vfio_user_window_unmap(struct vfio_user_device *udev, u64 iova,
			    u64 length);
void vfio_user_window_close(struct vfio_user_device *udev);
void vfio_user_window_revoke(struct vfio_user_device *udev);
void vfio_user_window_mark_pinned(struct vfio_user_device *udev, u64 iova,
				  u64 len);
void vfio_user_window_work(struct work_struct *work);
unsigned long vfio_user_window_pinned(struct vfio_user_device *udev);

/* stats.c */
void vfio_user_stat_msg(struct vfio_user_device *udev, bool sent, u16 command,
			u32 size);
void vfio_user_stat_latency(struct vfio_user_device *udev, u64 ns);
int vfio_user_stats_add(struct vfio_user_device *udev);
void vfio_user_stats_remove(struct vfio_user_device *udev);
void vfio_user_stats_free(struct vfio_user_device *udev);
void vfio_user_stats_init(void);
void vfio_user_stats_exit(void);

/* mmap.c */
int vfio_user_mmap_init(struct vfio_user_device *udev);
void vfio_user_mmap_exit(struct vfio_user_device *udev);
int vfio_user_mmap(struct vfio_device *vdev, struct vm_area_struct *vma);
void vfio_user_mmap_publish(struct vfio_user_device *udev,
			    struct vfio_user_conn *conn);
void vfio_user_mmap_unpublish(struct vfio_user_device *udev, bool dead);
void vfio_user_mmap_open(struct vfio_user_device *udev, bool open);
void vfio_user_mmap_zap(struct vfio_user_device *udev);
unsigned long vfio_user_mmap_pages(struct vfio_user_device *udev);
bool vfio_user_mmap_file_ok(struct file *file);

/* dma.c */
struct vfio_user_dma_pages *vfio_user_dma_pages_alloc(size_t size);
void vfio_user_dma_pages_free(struct vfio_user_dma_pages *dp);
void vfio_user_cmds_init(struct vfio_user_conn *conn);
struct vfio_user_cmd *vfio_user_cmd_alloc(struct vfio_user_conn *conn,
					  const struct vfio_user_hdr *hdr,
					  size_t len);
void vfio_user_cmd_iter(struct vfio_user_cmd *cmd, size_t got,
			struct iov_iter *iter, struct kvec *kv);
void vfio_user_cmd_queue(struct vfio_user_conn *conn,
			 struct vfio_user_cmd *cmd);
bool vfio_user_cmds_full(struct vfio_user_conn *conn);
void vfio_user_cmd_free(struct vfio_user_cmd *cmd);
void vfio_user_cmds_stop(struct vfio_user_conn *conn);
int vfio_user_dma_announce(struct vfio_user_conn *conn);

/* irq.c */
long vfio_user_set_irqs(struct vfio_user_device *udev, unsigned long arg);
int vfio_user_irqs_replay(struct vfio_user_device *udev,
			  struct vfio_user_conn *conn);
u64 vfio_user_irqs_gen(struct vfio_user_device *udev);
void vfio_user_irqs_unmask_kick(struct vfio_user_device *udev);
int vfio_user_irqs_take(struct vfio_user_device *udev,
			struct vfio_user_irq *irqs);
void vfio_user_irqs_release(struct vfio_user_device *udev);
void vfio_user_irqs_free(struct vfio_user_device *udev);

/* migration.c */
extern const struct vfio_migration_ops vfio_user_mig_ops;
int vfio_user_mig_query(struct vfio_user_conn *conn,
			struct vfio_user_info *info);
void vfio_user_mig_publish(struct vfio_user_device *udev,
			   struct vfio_user_info *info);
bool vfio_user_mig_reset_locked(struct vfio_user_device *udev);
void vfio_user_mig_reset(struct vfio_user_device *udev);
int vfio_user_mig_resume(struct vfio_user_device *udev,
			 struct vfio_user_conn *conn);
int vfio_user_mig_attach(struct vfio_user_device *udev,
			 struct vfio_user_conn *conn,
			 struct vfio_user_info *info);
int vfio_user_device_feature(struct vfio_device *vdev, u32 flags,
			     void __user *arg, size_t argsz);
void vfio_user_mig_init(struct vfio_user_device *udev);
void vfio_user_mig_exit(struct vfio_user_device *udev);

/* sysfs.c */
extern const struct attribute_group *vfio_user_dev_groups[];

#endif /* _VFIO_USER_MDEV_H */
