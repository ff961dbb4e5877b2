/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internal definitions of libvfio-user-server; not installed.
 *
 * Layers. A file calls only files of lower layers (and the device model's
 * callbacks, which may call the public API again); nothing calls upwards,
 * so there is no call circle. tests/layers.sh checks it on the objects.
 *
 *   8  dev.c       vus_dev__new()/__delete(): builds and tears down all below
 *   7  loop.c      vus_loop: one thread (epoll set) serving many devices
 *   6  conn.c      listen/accept/attach, the event loop, disconnect
 *   5  handlers.c  vus_dispatch() and the client-command handlers
 *   4  version.c   VERSION negotiation
 *      migration.c migration state machine, stream, DEVICE_FEATURE and
 *                  MIG_DATA_READ/WRITE
 *   3  dma.c       DMA region table; server DMA (DMA_READ/DMA_WRITE)
 *      region.c    device regions and the REGION_READ/WRITE access path
 *   2  pci.c       PCI config space, BARs, capabilities, MSI-X table
 *   1  msg.c       message framing and fd passing, receive buffer, queue,
 *                  the twin socket
 *      irq.c       IRQ vectors and their eventfds
 *   0  util.c      print callback, opts structs, range checks, CRC-32
 *      sigbus.c    copies that turn a SIGBUS into -EFAULT
 *
 * The prototypes below are grouped by file, lowest layer first.
 */
#ifndef __VUS_INTERNAL_H
#define __VUS_INTERNAL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <endian.h>
#include <sys/uio.h>
#include <linux/vfio_user.h>

#include "vfio-user-server.h"

#define VUS_HIDDEN __attribute__((visibility("hidden")))

#define VUS_MAX_REGIONS		64
#define VUS_MAX_IRQ_INDEXES	16
#define VUS_MAX_IRQ_VECTORS	2048
#define VUS_MAX_XFER_LIMIT	(64U << 20)
#define VUS_SCM_MAX_FD		253
/*
 * Client commands a DMA wait queues: any up to VUS_MAX_QUEUED, more without
 * fds while all hold at most VUS_MAX_QUEUED_BYTES (struct and buffer; a
 * client posting writes, which need no reply, may send many in one wait).
 */
#define VUS_MAX_QUEUED		64
#define VUS_MAX_QUEUED_BYTES	(16U << 20)
#define VUS_MAX_SPARSE		64
#define VUS_VERSION_JSON_MAX	4096
#define VUS_PCI_CFG_SIZE	256

#define HDR			VFIO_USER_HDR_SIZE

#define VUS_ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))
#define VUS_MIN(a, b)		((a) < (b) ? (a) : (b))
#define VUS_MAX(a, b)		((a) > (b) ? (a) : (b))

/*
 * Copy a caller's opts struct (of possibly different size) into a zeroed
 * local one. Bytes beyond the fields we know must be zero (-EINVAL).
 */
VUS_HIDDEN int vus_opts_copy(void *dst, size_t dst_sz, size_t known_end,
			     const void *src);
#define VUS_OPTS_COPY(dst, src, type)					\
	vus_opts_copy(dst, sizeof(struct type),				\
		      offsetof(struct type, type##__last_field) +	\
		      sizeof(((struct type *)0)->type##__last_field), src)

VUS_HIDDEN void vus_pr(enum vus_print_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
#define pr_warn(fmt, ...)	vus_pr(VUS_WARN, "vus: " fmt, ##__VA_ARGS__)
#define pr_info(fmt, ...)	vus_pr(VUS_INFO, "vus: " fmt, ##__VA_ARGS__)
#define pr_debug(fmt, ...)	vus_pr(VUS_DEBUG, "vus: " fmt, ##__VA_ARGS__)

/* Set errno from a -errno return and pass it through (libbpf_err()). */
static inline int vus_err(int ret)
{
	if (ret < 0)
		errno = -ret;
	return ret;
}

static inline void *vus_err_ptr(int err)
{
	errno = -err;
	return NULL;
}

/*
 * struct vus_region - one region of the device.
 * Owned by its vus_dev; @mem/@memfd are the library's (library-backed
 * regions), unmapped/closed when the region is replaced or the device freed.
 */
struct vus_region {
	bool present;
	uint64_t size;
	uint32_t flags;
	vus_access_fn_t access;
	void *priv;
	void *mem;
	int memfd;
	struct vus_sparse_area *sparse;
	unsigned int nr_sparse;
	uint32_t type;
	uint32_t subtype;
};

/*
 * struct vus_irq_vec - one vector. Eventfds come from the client via
 * SCM_RIGHTS and are the library's: closed on reassignment or disconnect.
 */
struct vus_irq_vec {
	int trigger_fd;
	int mask_fd;
	int unmask_fd;
	bool masked;
	bool pending;
};

struct vus_irq {
	unsigned int count;
	struct vus_irq_vec *vec;
};

/*
 * struct vus_dma_region - one DMA_MAP of the client. @vaddr is our mmap of
 * the client's fd, NULL without fd or when the mmap failed (the region is
 * then served with messages); unmapped on DMA_UNMAP or disconnect.
 */
struct vus_dma_region {
	uint64_t iova;
	uint64_t size;
	uint32_t prot;
	void *vaddr;
};

/*
 * struct vus_msg - one received message, header fields in host order.
 * @buf holds the whole message (header included), @fds the fds that came
 * with it, owned by the message until a handler takes them (sets -1).
 */
struct vus_msg {
	uint16_t msg_id;
	uint16_t command;
	uint32_t size;
	uint32_t flags;
	uint32_t error_no;
	uint8_t *buf;
	int *fds;
	unsigned int nr_fds;
	int fds_err;		/* too many fds / truncated control data */
	struct vus_msg *next;
};

/*
 * struct vus_rx_fds - fds that one recvmsg() returned. The socket stops a
 * read at the end of the data the fds came with, so they belong to the
 * message holding the last byte of that read, at stream offset @end - 1.
 */
struct vus_rx_fds {
	uint64_t end;
	int *fds;
	unsigned int nr;
	bool truncated;		/* MSG_CTRUNC */
};

#define VUS_RX_BUF	(64 * 1024)
#define VUS_RX_MAX_FDS	8	/* batches pending at once */

/*
 * struct vus_rx - the receive buffer: one recvmsg() takes a small message
 * whole (and whatever follows it); payloads larger than the buffer are
 * read straight into the message. Bytes [@head, @tail) of @buf are
 * unparsed; @off is the stream offset of @buf[@head].
 */
struct vus_rx {
	uint8_t *buf;
	size_t head, tail;
	uint64_t off;
	struct vus_rx_fds fds[VUS_RX_MAX_FDS];
	unsigned int nr_fds;
};

/*
 * struct vus_chan - one socket of the connection with its receive buffer.
 * &vus_dev.conn is the main socket: client commands and our replies, and,
 * without a twin socket, our DMA_READ/DMA_WRITE and the client's replies
 * to them. &vus_dev.twin exists when VERSION negotiated the twin socket
 * and then carries only our DMA commands and their replies, so a DMA wait
 * reads nothing but DMA replies. Both fds are the library's, -1 when
 * absent, closed on disconnect (vus_dev__disconnect()).
 */
struct vus_chan {
	int fd;
	struct vus_rx rx;
};

struct vus_pci {
	bool enabled;
	uint8_t cfg[VUS_PCI_CFG_SIZE];
	uint8_t wmask[VUS_PCI_CFG_SIZE];	/* writable bits */
	uint8_t reset_cfg[VUS_PCI_CFG_SIZE];	/* state after reset */
	uint8_t cap_next;			/* where the next cap goes */
	uint8_t last_cap;			/* offset of the last cap, 0 */
	/* MSI-X */
	unsigned int msix_bar;
	uint32_t msix_table_off;
	uint32_t msix_pba_off;
	unsigned int msix_nr;
	uint8_t *msix_table;
	uint8_t msix_cap;
};

/*
 * struct vus_mig_buf - a growing byte buffer (the migration stream of a
 * saving or resuming session); @data is malloc'd, freed by vus_mig_buf_free().
 */
struct vus_mig_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
};

/*
 * struct vus_mig - migration state of a device (migration.c). @state is
 * VUS_MIG_RUNNING without migration (@enabled false) as well. @out holds
 * the stream of a saving session (PRE_COPY*, STOP_COPY), @out_pos what
 * MIG_DATA_READ has served of it; @in what MIG_DATA_WRITE brought in
 * RESUMING. Both are dropped when their session ends.
 */
struct vus_mig {
	bool enabled;
	struct vus_mig_ops ops;
	uint32_t version;
	bool pre_copy;
	uint64_t max_stream;
	enum vus_mig_state state;
	struct vus_mig_buf out;
	size_t out_pos;
	struct vus_mig_buf in;
};

/*
 * One frame of the migration stream: this header (little endian on the
 * wire), the library section (@lib_len bytes; final frames only), the
 * device section (@dev_len bytes). @crc is the CRC-32 of header (with
 * @crc 0) and both sections. Documented in vfio-user-server.h.
 */
struct vus_mig_hdr {
	uint32_t magic;
	uint16_t format;
	uint16_t flags;
	uint16_t vendor_id;
	uint16_t device_id;
	uint32_t dev_version;
	uint32_t lib_len;
	uint32_t crc;
	uint64_t dev_len;
};

#define VUS_MIG_MAGIC		0x4d535556	/* "VUSM" */
#define VUS_MIG_FORMAT		1
#define VUS_MIG_F_FINAL		0x1

struct vus_dev {
	struct vus_dev_opts opts;
	struct vus_dev_ops ops;
	void *priv;
	uint32_t max_xfer;
	uint32_t max_fds;
	uint32_t max_dma_maps;
	uint64_t pgsizes;
	unsigned int timeout_ms;

	struct vus_region regions[VUS_MAX_REGIONS];
	unsigned int nr_regions;	/* highest present index + 1 */
	struct vus_irq irqs[VUS_MAX_IRQ_INDEXES];
	struct vus_pci pci;

	int epfd;
	int listen_fd;
	char *listen_path;
	int queue_efd;

	/* connection */
	struct vus_chan conn;		/* the main socket */
	struct vus_chan twin;		/* server DMA, if negotiated */
	bool negotiated;
	bool conn_dead;			/* drop after the current handler */
	struct vus_peer_caps peer;
	uint16_t next_msg_id;		/* server-to-client commands */
	struct vus_msg *queue_head;	/* commands received during a DMA */
	struct vus_msg **queue_tail;
	unsigned int nr_queued;
	size_t queued_bytes;
	unsigned int in_handler;
	bool stop;
	struct vus_loop *loop;		/* the loop serving it, or NULL */
	struct vus_loop_entry *loop_entry;	/* its place there (loop.c) */

	struct vus_dma_region *dma;
	unsigned int nr_dma;
	bool dma_mmap_warned;		/* a failed mmap was logged */
	struct vus_dma_stats dma_stats;	/* (sz unused) */

	struct vus_mig mig;
};

/*
 * struct vus_reply - the reply a handler builds: payload in @buf (malloc'd
 * or NULL, freed by the caller of vus_dispatch()), @len bytes, and one fd,
 * sent with SCM_RIGHTS if >= 0: borrowed, or, with @close_fd, closed by
 * the caller of vus_dispatch() once the reply is sent or failed (the twin
 * socket's client end).
 */
struct vus_reply {
	void *buf;
	size_t len;
	int fd;
	bool close_fd;
};

/*
 * struct vus_rx_sink - where the payload of one expected reply goes instead
 * of a malloc'd copy: bytes [@skip, @skip + @len) of the payload of the
 * reply to @id/@cmd land in @buf if the reply is a success of exactly that
 * size (DMA_READ data); @used says it did.
 */
struct vus_rx_sink {
	uint16_t id;
	uint16_t cmd;
	size_t skip;
	void *buf;
	size_t len;
	bool used;
};

/* A client socket is attached and not condemned. */
static inline bool vus_conn_ok(const struct vus_dev *dev)
{
	return dev->conn.fd >= 0 && !dev->conn_dead;
}

/* ... and it completed VERSION. */
static inline bool vus_conn_ready(const struct vus_dev *dev)
{
	return vus_conn_ok(dev) && dev->negotiated;
}

/*
 * Migration state classes (see vfio-user-server.h): running devices may
 * DMA and raise interrupts; stopped ones keep their state, and the library
 * refuses client writes to their regions. Quiesced ones are neither.
 */
static inline bool vus_mig_state_running(enum vus_mig_state s)
{
	return s == VUS_MIG_RUNNING || s == VUS_MIG_PRE_COPY;
}

static inline bool vus_mig_state_stopped(enum vus_mig_state s)
{
	return s == VUS_MIG_STOP || s == VUS_MIG_STOP_COPY ||
	       s == VUS_MIG_RESUMING || s == VUS_MIG_ERROR;
}

static inline bool vus_dev_running(const struct vus_dev *dev)
{
	return !dev->mig.enabled || vus_mig_state_running(dev->mig.state);
}

static inline bool vus_dev_stopped(const struct vus_dev *dev)
{
	return dev->mig.enabled && vus_mig_state_stopped(dev->mig.state);
}

/* util.c */
VUS_HIDDEN bool vus_range_ok(uint64_t off, uint64_t count, uint64_t size);
VUS_HIDDEN uint32_t vus_crc32(uint32_t crc, const void *buf, size_t len);

/* sigbus.c */
VUS_HIDDEN int vus_sigbus_init(void);
VUS_HIDDEN int vus_copy_guarded(void *dst, const void *src, size_t len,
				bool dst_may_fault, bool src_may_fault);

/* irq.c */
VUS_HIDDEN void vus_irq_free(struct vus_irq *irq);
VUS_HIDDEN void vus_irq_set_masked(struct vus_dev *dev, unsigned int index,
				   unsigned int vector, bool mask);
VUS_HIDDEN void vus_irq_client_trigger(struct vus_dev *dev, unsigned int index,
				       unsigned int vector);
VUS_HIDDEN void vus_irq_set_fd(struct vus_dev *dev, unsigned int index,
			       unsigned int vector, uint32_t action, int fd);
VUS_HIDDEN void vus_irq_drop_all(struct vus_dev *dev);
VUS_HIDDEN void vus_irq_fire_held(struct vus_dev *dev);
VUS_HIDDEN void vus_irq_clear_pending(struct vus_dev *dev);

/*
 * msg.c. Any send or receive error marks the connection dead
 * (vus_conn_broken()); the loop drops it once the current handler returns.
 */
VUS_HIDDEN void vus_msg_free(struct vus_msg *m);
VUS_HIDDEN void vus_conn_broken(struct vus_dev *dev, const char *why, int err);
VUS_HIDDEN int vus_xmit(struct vus_dev *dev, struct vus_chan *ch,
			struct iovec *iov, int iovcnt, int fd);
VUS_HIDDEN void vus_fill_hdr(struct vfio_user_hdr *h, uint16_t id,
			     uint16_t cmd, uint32_t size, uint32_t flags,
			     uint32_t error_no);
VUS_HIDDEN int vus_send_reply(struct vus_dev *dev, const struct vus_msg *m,
			      const void *payload, size_t len, int fd);
VUS_HIDDEN int vus_send_error(struct vus_dev *dev, const struct vus_msg *m,
			      int err);
VUS_HIDDEN size_t vus_rx_avail(const struct vus_chan *ch);
VUS_HIDDEN void vus_rx_reset(struct vus_chan *ch);
VUS_HIDDEN int vus_recv_msg(struct vus_dev *dev, struct vus_chan *ch,
			    struct vus_msg **out, size_t limit,
			    struct vus_rx_sink *sinks, unsigned int nr_sinks,
			    bool idle_ok);
VUS_HIDDEN size_t vus_msg_limit(const struct vus_dev *dev);
VUS_HIDDEN void vus_kick_queue(struct vus_dev *dev);
VUS_HIDDEN int vus_enqueue(struct vus_dev *dev, struct vus_msg *m);
VUS_HIDDEN struct vus_msg *vus_queue_pop(struct vus_dev *dev);
VUS_HIDDEN void vus_queue_drop_all(struct vus_dev *dev);
VUS_HIDDEN int vus_sock_set_timeouts(const struct vus_dev *dev, int fd);
VUS_HIDDEN int vus_twin_open(struct vus_dev *dev, int *peer_fd);
VUS_HIDDEN void vus_twin_close(struct vus_dev *dev);

/* pci.c */
VUS_HIDDEN int vus_pci_config_access(struct vus_dev *dev, uint64_t off,
				     void *buf, size_t count, bool is_write);
VUS_HIDDEN bool vus_pci_msix_access(struct vus_dev *dev, unsigned int index,
				    uint64_t off, void *buf, size_t count,
				    bool is_write);
VUS_HIDDEN void vus_pci_reset(struct vus_dev *dev);
VUS_HIDDEN void vus_pci_bar_added(struct vus_dev *dev, unsigned int index);
VUS_HIDDEN void vus_pci_free(struct vus_dev *dev);

/* region.c */
VUS_HIDDEN void vus_region_free(struct vus_region *r);
VUS_HIDDEN int vus_region_access(struct vus_dev *dev, unsigned int index,
				 uint64_t off, void *buf, size_t count,
				 bool is_write);

/* dma.c */
VUS_HIDDEN int vus_dma_add(struct vus_dev *dev, uint64_t iova, uint64_t size,
			   uint32_t flags, int fd, uint64_t offset);
VUS_HIDDEN int vus_dma_remove(struct vus_dev *dev, uint64_t iova,
			      uint64_t size);
VUS_HIDDEN void vus_dma_drop_all(struct vus_dev *dev);

/* version.c */
VUS_HIDDEN int vus_handle_version(struct vus_dev *dev, struct vus_msg *m,
				  struct vus_reply *r);

/* migration.c */
VUS_HIDDEN int vus_mig_handle_feature(struct vus_dev *dev, struct vus_msg *m,
				      struct vus_reply *r);
VUS_HIDDEN int vus_mig_handle_data_read(struct vus_dev *dev,
					struct vus_msg *m,
					struct vus_reply *r);
VUS_HIDDEN int vus_mig_handle_data_write(struct vus_dev *dev,
					 struct vus_msg *m);
VUS_HIDDEN void vus_mig_reset(struct vus_dev *dev);
VUS_HIDDEN void vus_mig_disconnect(struct vus_dev *dev);
VUS_HIDDEN void vus_mig_free(struct vus_dev *dev);

/* loop.c */
struct vus_loop_entry;
VUS_HIDDEN void vus_loop_forget(struct vus_dev *dev);

/* handlers.c */
VUS_HIDDEN int vus_dispatch(struct vus_dev *dev, struct vus_msg *m,
			    struct vus_reply *r);

#endif /* __VUS_INTERNAL_H */
