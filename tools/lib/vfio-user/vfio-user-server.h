/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvfio-user-server (vus): a small library for writing vfio-user servers.
 *
 * A vfio-user server is a process that implements a device model; a
 * vfio-user client (QEMU's vfio-user-pci, the vfio_user_mdev kernel module)
 * drives it over an AF_UNIX stream socket with the messages specified in
 * QEMU's docs/interop/vfio-user.rst.
 *
 * Model
 * -----
 * One &struct vus_dev is one device served to one client at a time. The
 * caller describes the device (regions, IRQ indexes, optionally a PCI
 * config space with BARs and an MSI-X capability), then either listens on
 * a socket path (vus_dev__listen()) or hands over a connected socket
 * (vus_dev__attach_fd()), and drives the device from its event loop:
 *
 *	fd = vus_dev__fd(dev);			(one fd, stable for the
 *	loop: poll(fd, POLLIN) ...		 lifetime of the device)
 *		vus_dev__process(dev);		(never blocks for long
 *						 unless a client stalls
 *						 mid-message: bounded by
 *						 opts.timeout_ms)
 *
 * or simply vus_dev__run(dev), which loops until an error or until
 * vus_dev__stop() is called (e.g. from a callback).
 *
 * Many devices in one process: a &struct vus_loop is one epoll set over
 * the fds of any number of devices. One thread serves them all with
 * vus_loop__run(), or an application's own loop (an SPDK poller, a
 * GLib/epoll main loop) polls the one fd vus_loop__fd() and calls
 * vus_loop__process(); a server that wants several threads makes one
 * loop per thread and puts each device in one of them.
 *
 * When the client goes away the library forgets its DMA regions and IRQ
 * eventfds (as the spec asks), keeps the device state, and accepts the next
 * client (listen mode) or waits for the next vus_dev__attach_fd().
 *
 * Threads: the library is single-threaded per device. Every vus_dev__*()
 * call on one device must come from the thread that runs
 * vus_dev__process()/run() (or the vus_loop serving it), or be serialised
 * with it by the caller. Callbacks run in that thread. Different devices
 * share no state: they may be served by different threads at once.
 *
 * Errors: calls returning int return >= 0 on success and -errno on failure
 * (errno is set too); calls returning a pointer return NULL and set errno.
 * Nothing in the library prints unless a print callback is installed with
 * vus_set_print(), and nothing exits or aborts on bad caller or peer input.
 *
 * Signals: the first time a client maps a DMA region with an fd, the
 * library installs a process-wide SIGBUS handler (and keeps it), so that
 * its own copies through such a mapping return -EFAULT when the client
 * took the memory away instead of killing the process. Every other SIGBUS
 * goes on to the action it replaced (see vus_dev__dma_read()). An
 * application that installs a SIGBUS handler later must chain to the
 * action it replaces, as the library does.
 *
 * Wire format: include/uapi/linux/vfio_user.h; constants of the VFIO ioctl
 * interface (VFIO_PCI_*_REGION_INDEX, VFIO_IRQ_SET_*, ...) come from
 * <linux/vfio.h>.
 */
#ifndef __VFIO_USER_SERVER_H
#define __VFIO_USER_SERVER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <linux/vfio.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef VUS_API
#define VUS_API __attribute__((visibility("default")))
#endif

/**
 * VUS_OPTS() - declare and initialise an opts struct
 * @TYPE: struct tag, e.g. vus_dev_opts
 * @NAME: variable name
 *
 * Zeroes the whole struct (padding included), sets ->sz and then the given
 * designated initialisers: ``VUS_OPTS(vus_dev_opts, o, .priv = p);``.
 * Every opts struct starts with ``size_t sz``; the library rejects with
 * -EINVAL an opts struct whose bytes past the fields it knows are not zero,
 * so binaries built against a newer header fail cleanly.
 */
#define VUS_OPTS(TYPE, NAME, ...)					\
	struct TYPE NAME = ({						\
		memset(&NAME, 0, sizeof(struct TYPE));			\
		(struct TYPE) {						\
			.sz = sizeof(struct TYPE),			\
			__VA_ARGS__					\
		};							\
	})

/* ---- messages ----------------------------------------------------------- */

enum vus_print_level {
	VUS_WARN,
	VUS_INFO,
	VUS_DEBUG,
};

/**
 * typedef vus_print_fn_t - message callback
 * @level: severity
 * @fmt: printf format; the text ends with a newline
 * @ap: arguments
 */
typedef int (*vus_print_fn_t)(enum vus_print_level level, const char *fmt,
			      va_list ap);

/**
 * vus_set_print() - install the library-wide message callback
 * @fn: new callback, or NULL to silence the library (the default)
 *
 * One callback for the whole process, read without a lock by every
 * thread that serves a device: set it before the first device is created
 * (or while none is being served), not while other threads may print.
 * The callback itself may run in several threads at once.
 *
 * Return: the previous callback.
 */
VUS_API vus_print_fn_t vus_set_print(vus_print_fn_t fn);

/* ---- device ------------------------------------------------------------- */

struct vus_dev;

/**
 * struct vus_dev_ops - device model callbacks, all optional
 * @connect: a client completed VERSION negotiation.
 * @disconnect: the client went away (or was dropped for a protocol
 *	violation); its DMA regions and eventfds are already forgotten.
 * @reset: DEVICE_RESET; the library has already reset the PCI config
 *	header it manages and, with migration set up, ended any migration
 *	session and put the migration state to RUNNING, whatever it was
 *	(ERROR included): the device must be running again afterwards.
 *	Return 0 or -errno (sent to the client).
 * @dma_map: the client added a DMA region. @vaddr is the server mapping
 *	when the client passed an fd and the library could map it, NULL
 *	otherwise (the region is then reached with DMA_READ/DMA_WRITE
 *	messages). Return 0 or -errno to refuse (the region is then not
 *	added).
 * @dma_unmap: the client removed a DMA region (also called for every region
 *	on disconnect). The device must stop using it before returning.
 * @irq_state: SET_IRQS changed the eventfd of vectors [@start, @start +
 *	@count) of IRQ index @index; @enabled tells whether they now have
 *	one. Lets a device see e.g. that MSI-X was enabled.
 * @config_write: a client write to the PCI config space, after the
 *	library applied it to its copy (see vus_dev__setup_pci()). Also
 *	called while the device is stopped for migration: it must not
 *	change the device's state then.
 *
 * @dev is the device, @priv is &vus_dev_opts.priv.
 */
struct vus_dev_ops {
	void (*connect)(struct vus_dev *dev, void *priv);
	void (*disconnect)(struct vus_dev *dev, void *priv);
	int (*reset)(struct vus_dev *dev, void *priv);
	int (*dma_map)(struct vus_dev *dev, void *priv, uint64_t iova,
		       uint64_t size, uint32_t prot, void *vaddr);
	void (*dma_unmap)(struct vus_dev *dev, void *priv, uint64_t iova,
			  uint64_t size);
	void (*irq_state)(struct vus_dev *dev, void *priv, unsigned int index,
			  unsigned int start, unsigned int count, bool enabled);
	void (*config_write)(struct vus_dev *dev, void *priv, uint64_t offset,
			     const void *buf, size_t count);
};

/**
 * struct vus_dev_opts - options of vus_dev__new()
 * @sz: sizeof(struct vus_dev_opts); use VUS_OPTS()
 * @ops: callbacks (may be NULL); the library copies *@ops, so it
 *	need not outlive the call
 * @priv: passed to every callback, see also vus_dev__priv()
 * @max_data_xfer_size: largest REGION_READ/WRITE count we accept,
 *	advertised in VERSION; 0: 1 MiB. At most 64 MiB.
 * @max_msg_fds: most fds we accept in one message, advertised; 0: 8.
 *	At most 253 (SCM_MAX_FD).
 * @max_dma_maps: most DMA regions at once, advertised; 0: 65535.
 * @pgsizes: DMA page sizes, advertised; 0: 4096.
 * @timeout_ms: bound on the wait for the rest of a started message, for a
 *	DMA reply and for a send; 0: 10000. On expiry the client is dropped.
 * @twin_socket: offer the twin socket to a client that asks for it in
 *	VERSION (see "Twin socket" below): the device's DMA_READ/DMA_WRITE
 *	and their replies then travel on a socket of their own. Default off.
 * @strict_dma_reply: for tests of clients: while a DMA reply is awaited on
 *	the main socket (no twin socket), a client command arriving in its
 *	place is a protocol violation that drops the client (the DMA call
 *	returns -EPROTO), as in libvfio-user, instead of being queued.
 *	Never applies with a twin socket. Default off.
 */
struct vus_dev_opts {
	size_t sz;
	const struct vus_dev_ops *ops;
	void *priv;
	uint32_t max_data_xfer_size;
	uint32_t max_msg_fds;
	uint32_t max_dma_maps;
	uint64_t pgsizes;
	unsigned int timeout_ms;
	bool twin_socket;
	bool strict_dma_reply;
	size_t :0;
};
#define vus_dev_opts__last_field strict_dma_reply

/**
 * vus_dev__new() - create a device
 * @opts: options, NULL for all defaults
 *
 * The device starts with no regions and no IRQs; describe it before a
 * client connects (changing it while a client is attached is allowed but
 * the client may have cached the old description).
 *
 * Return: the device, or NULL with errno set.
 */
VUS_API struct vus_dev *vus_dev__new(const struct vus_dev_opts *opts);

/**
 * vus_dev__delete() - drop the client, close everything the library opened,
 * unlink the socket path created by vus_dev__listen(), free the device
 * @dev: device or NULL
 */
VUS_API void vus_dev__delete(struct vus_dev *dev);

/** vus_dev__priv() - &vus_dev_opts.priv of @dev */
VUS_API void *vus_dev__priv(const struct vus_dev *dev);

/* ---- regions ------------------------------------------------------------ */

/**
 * typedef vus_access_fn_t - region access callback
 * @dev: device
 * @priv: &vus_region_opts.priv
 * @offset: offset in the region; @offset + @count <= region size (checked)
 * @buf: data to write, or room for the data read
 * @count: bytes, 1 ... max_data_xfer_size; exactly what the client asked,
 *	never widened or merged
 * @is_write: direction
 *
 * May call vus_dev__dma_read()/vus_dev__dma_write() and
 * vus_dev__trigger_irq(): the reply to this access is sent after it returns.
 *
 * Return: 0 or -errno (sent to the client as an error reply).
 */
typedef int (*vus_access_fn_t)(struct vus_dev *dev, void *priv,
			       uint64_t offset, void *buf, size_t count,
			       bool is_write);

/** struct vus_sparse_area - one mmap-able area of a region */
struct vus_sparse_area {
	uint64_t offset;
	uint64_t size;
};

/* Region flags (&vus_region_opts.flags) */
#define VUS_REGION_READ		(1U << 0)	/* client may read */
#define VUS_REGION_WRITE	(1U << 1)	/* client may write */
#define VUS_REGION_MMAP		(1U << 2)	/* memory backed, fd sent */
#define VUS_REGION_BAR_IO	(1U << 8)	/* PCI BAR: I/O space */
#define VUS_REGION_BAR_MEM64	(1U << 9)	/* PCI BAR: 64-bit memory */
#define VUS_REGION_BAR_PREFETCH	(1U << 10)	/* PCI BAR: prefetchable */

/**
 * struct vus_region_opts - options of vus_dev__add_region()
 * @sz: sizeof(struct vus_region_opts); use VUS_OPTS()
 * @size: region size in bytes (> 0)
 * @flags: VUS_REGION_*; READ|WRITE if 0
 * @access: access callback; NULL: the library backs the region with
 *	zeroed shared memory (a memfd) that vus_dev__region_mem() returns
 * @priv: passed to @access
 * @sparse: mmap-able areas, announced with a SPARSE_MMAP capability
 *	(copied); needs a memory-backed region with VUS_REGION_MMAP
 * @nr_sparse: number of @sparse entries
 * @type: VFIO region type for a CAP_TYPE capability (device-specific
 *	regions, index >= VFIO_PCI_NUM_REGIONS); 0 with @subtype 0: none
 * @subtype: VFIO region subtype
 */
struct vus_region_opts {
	size_t sz;
	uint64_t size;
	uint32_t flags;
	vus_access_fn_t access;
	void *priv;
	const struct vus_sparse_area *sparse;
	unsigned int nr_sparse;
	uint32_t type;
	uint32_t subtype;
	size_t :0;
};
#define vus_region_opts__last_field subtype

/**
 * vus_dev__add_region() - describe region @index
 * @dev: device
 * @index: region index (VFIO_PCI_BAR0_REGION_INDEX ...); below 64
 * @opts: region options
 *
 * For a PCI device (vus_dev__setup_pci()) indexes 0-5 are BARs: the
 * library sizes them in config space (the size must be a power of two,
 * >= 16 for memory, >= 4 for I/O BARs; a 64-bit BAR also takes the next
 * BAR slot). The config region (index 7) belongs to the library.
 * Replacing an existing region is allowed.
 *
 * Return: 0 or -errno (-EINVAL bad index/size/flags/opts, -EBUSY config
 * region of a PCI device or the slot after a 64-bit BAR, -ENOMEM).
 */
VUS_API int vus_dev__add_region(struct vus_dev *dev, unsigned int index,
				const struct vus_region_opts *opts);

/**
 * vus_dev__region_mem() - the memory behind a library-backed region
 * @dev: device
 * @index: region index
 *
 * Return: the mapping (size of the region), or NULL (errno ENOENT) when the
 * region does not exist or has an access callback.
 */
VUS_API void *vus_dev__region_mem(struct vus_dev *dev, unsigned int index);

/* ---- interrupts --------------------------------------------------------- */

/**
 * vus_dev__set_irq_count() - number of vectors of IRQ index @index
 * @dev: device
 * @index: VFIO_PCI_INTX_IRQ_INDEX ... VFIO_PCI_REQ_IRQ_INDEX (or any
 *	index below 16 for non-PCI layouts)
 * @count: vectors, 0 to remove the index; at most 2048
 *
 * GET_IRQ_INFO reports EVENTFD | MASKABLE for every index with vectors,
 * plus AUTOMASKED for INTx. Setting a count drops eventfds of that index.
 *
 * Return: 0 or -EINVAL.
 */
VUS_API int vus_dev__set_irq_count(struct vus_dev *dev, unsigned int index,
				   unsigned int count);

/**
 * vus_dev__trigger_irq() - raise vector @vector of IRQ index @index
 * @dev: device
 * @index: IRQ index
 * @vector: vector
 *
 * Writes 1 to the trigger eventfd the client gave. A masked vector is
 * left pending and fires on unmask. INTx is automasked: after it fires
 * the client must unmask it (SET_IRQS ACTION_UNMASK). While the device is
 * not running for migration (vus_dev__running() false) the device must
 * raise none; the library refuses them, and holds back what the client's
 * own SET_IRQS would fire (an unmask of a pending vector, a trigger)
 * until the device runs again.
 *
 * Return: 0 fired; 1 masked, left pending; -ENOENT no eventfd assigned;
 * -EINVAL bad index or vector; -EBUSY not running (migration); other
 * -errno from write().
 */
VUS_API int vus_dev__trigger_irq(struct vus_dev *dev, unsigned int index,
				 unsigned int vector);

/**
 * vus_dev__irq_enabled() - whether the client assigned a trigger eventfd
 * @dev: device
 * @index: IRQ index
 * @vector: vector
 */
VUS_API bool vus_dev__irq_enabled(struct vus_dev *dev, unsigned int index,
				  unsigned int vector);

/**
 * vus_dev__irq_masked() - whether vector @vector of @index is masked
 * @dev: device
 * @index: IRQ index
 * @vector: vector
 */
VUS_API bool vus_dev__irq_masked(struct vus_dev *dev, unsigned int index,
				 unsigned int vector);

/* ---- PCI helper --------------------------------------------------------- */

/**
 * struct vus_pci_opts - options of vus_dev__setup_pci()
 * @sz: sizeof(struct vus_pci_opts); use VUS_OPTS()
 * @vendor_id: PCI vendor ID
 * @device_id: PCI device ID
 * @subsys_vendor_id: subsystem vendor ID
 * @subsys_id: subsystem ID
 * @revision: revision ID
 * @class_code: 24-bit class code (base << 16 | sub << 8 | prog-if)
 * @irq_pin: interrupt pin (0 none, 1 INTA ...); if non-zero the INTx
 *	index gets one vector
 */
struct vus_pci_opts {
	size_t sz;
	uint16_t vendor_id;
	uint16_t device_id;
	uint16_t subsys_vendor_id;
	uint16_t subsys_id;
	uint8_t revision;
	uint32_t class_code;
	uint8_t irq_pin;
	size_t :0;
};
#define vus_pci_opts__last_field irq_pin

/**
 * vus_dev__setup_pci() - make @dev a PCI device with a type-0 config header
 * @dev: device
 * @opts: IDs
 *
 * The library then owns the config region (index 7, 256 bytes): it answers
 * reads, applies writes to the writable bits only (command, cache line,
 * latency timer, interrupt line, BAR addresses with sizing, MSI-X control),
 * and tells the device model through &vus_dev_ops.config_write.
 * DEVICE_GET_INFO reports VFIO_DEVICE_FLAGS_PCI and at least 9 regions and
 * 5 IRQ indexes.
 *
 * Return: 0 or -EINVAL.
 */
VUS_API int vus_dev__setup_pci(struct vus_dev *dev,
			       const struct vus_pci_opts *opts);

/**
 * vus_dev__add_pci_cap() - append a capability to the config space list
 * @dev: PCI device
 * @cap: capability bytes; byte 0 is the ID, byte 1 (next) is filled in
 * @len: length, 2 ... 64; rounded up to a multiple of 4
 *
 * The bytes after the 2-byte header are read-only to the client.
 *
 * Return: the config offset of the capability, or -errno (-ENOSPC no room).
 */
VUS_API int vus_dev__add_pci_cap(struct vus_dev *dev, const void *cap,
				 size_t len);

/**
 * vus_dev__add_msix() - add an MSI-X capability with its table and PBA
 * @dev: PCI device
 * @nr_vectors: 1 ... 2048
 * @bar: BAR index holding table and PBA (the BAR must exist already)
 * @table_offset: offset of the table in the BAR (8-byte aligned)
 * @pba_offset: offset of the PBA in the BAR (8-byte aligned)
 *
 * Sets the MSI-X IRQ index count to @nr_vectors. Client accesses to the
 * table and PBA ranges of @bar are served by the library from its own
 * copy (the PBA reads as zero) and never reach the device model.
 *
 * Return: config offset of the capability, or -errno.
 */
VUS_API int vus_dev__add_msix(struct vus_dev *dev, unsigned int nr_vectors,
			      unsigned int bar, uint32_t table_offset,
			      uint32_t pba_offset);

/**
 * vus_dev__config() - the device's copy of its PCI config space
 * @dev: PCI device
 *
 * Return: 256 bytes the device model may read (and write, e.g. the status
 * register), or NULL if @dev is not a PCI device.
 */
VUS_API uint8_t *vus_dev__config(struct vus_dev *dev);

/* ---- connection --------------------------------------------------------- */

/**
 * vus_dev__listen() - listen on a UNIX socket path
 * @dev: device
 * @path: socket path; an existing socket file there is replaced
 *
 * The library owns the listening socket and unlinks @path in
 * vus_dev__delete(). One client is served at a time; while one is
 * attached, the next connection waits in the backlog.
 *
 * Return: 0 or -errno.
 */
VUS_API int vus_dev__listen(struct vus_dev *dev, const char *path);

/**
 * vus_dev__attach_fd() - serve a client on an already connected socket
 * @dev: device
 * @fd: connected AF_UNIX stream socket; the library owns it from now on
 *	(also on failure) and closes it when the client is dropped
 *
 * Return: 0, -EBUSY when a client is attached (fd closed), -errno.
 */
VUS_API int vus_dev__attach_fd(struct vus_dev *dev, int fd);

/**
 * vus_dev__fd() - the one fd to poll for POLLIN
 * @dev: device
 *
 * An epoll fd owned by the library; stable for the device's lifetime.
 */
VUS_API int vus_dev__fd(const struct vus_dev *dev);

/**
 * vus_dev__process() - handle whatever is ready, without waiting for more
 * @dev: device
 *
 * Accepts a client, handles the messages that have arrived, notices a
 * client that went away. A message that has started to arrive is read
 * to its end (bounded by timeout_ms).
 *
 * Return: number of events handled (>= 0) or -errno on a fatal error of
 * the library itself (client errors just drop the client).
 */
VUS_API int vus_dev__process(struct vus_dev *dev);

/**
 * vus_dev__run() - poll and process until stopped
 * @dev: device
 *
 * Return: 0 after vus_dev__stop(), -EINTR when a signal interrupted the
 * wait (the caller checks its own flags and calls again), or -errno.
 */
VUS_API int vus_dev__run(struct vus_dev *dev);

/**
 * vus_dev__stop() - make vus_dev__run() return 0 once it is back
 * @dev: device
 *
 * Only vus_dev__run() looks at it: a device a vus_loop serves goes on
 * being served (stop the loop with vus_loop__stop(), or take the device
 * out of it with vus_loop__remove()).
 */
VUS_API void vus_dev__stop(struct vus_dev *dev);

/** vus_dev__connected() - whether a client completed VERSION */
VUS_API bool vus_dev__connected(const struct vus_dev *dev);

/**
 * vus_dev__twin_socket() - whether the current client uses the twin socket
 * @dev: device
 *
 * Return: true while a client that negotiated the twin socket in VERSION
 * is connected (already in the &vus_dev_ops.connect callback), false
 * with no client, or when the client did not ask for it or
 * &vus_dev_opts.twin_socket did not offer it.
 */
VUS_API bool vus_dev__twin_socket(const struct vus_dev *dev);

/**
 * vus_dev__disconnect() - drop the current client (if any)
 * @dev: device
 */
VUS_API void vus_dev__disconnect(struct vus_dev *dev);

/**
 * struct vus_peer_caps - what the client announced in VERSION
 * @major: protocol major (0)
 * @minor: negotiated minor
 * @max_msg_fds: fds the client accepts per message
 * @max_data_xfer_size: largest DMA_READ/WRITE count we may send
 * @max_dma_maps: client's value or default
 * @pgsizes: client's value or default
 */
struct vus_peer_caps {
	uint16_t major;
	uint16_t minor;
	uint32_t max_msg_fds;
	uint32_t max_data_xfer_size;
	uint32_t max_dma_maps;
	uint64_t pgsizes;
};

/**
 * vus_dev__peer_caps() - capabilities negotiated with the current client
 * @dev: device
 * @caps: filled in
 *
 * Return: 0 or -ENOTCONN.
 */
VUS_API int vus_dev__peer_caps(const struct vus_dev *dev,
			       struct vus_peer_caps *caps);

/* ---- many devices: the loop --------------------------------------------- */

struct vus_loop;

/**
 * struct vus_loop_opts - options of vus_loop__new()
 * @sz: sizeof(struct vus_loop_opts); use VUS_OPTS()
 * @max_events: most ready devices taken from one epoll_wait() and served
 *	in one round; 0: 64, at most 256. The others are served next round.
 */
struct vus_loop_opts {
	size_t sz;
	unsigned int max_events;
	size_t :0;
};
#define vus_loop_opts__last_field max_events

/**
 * vus_loop__new() - create an empty loop
 * @opts: options, NULL for all defaults
 *
 * A loop serves its devices from one thread: each ready device gets one
 * vus_dev__process() per round, in the order epoll reports them (a device
 * that stays ready goes to the back), so a busy client cannot starve the
 * others. A device that waits for its client inside a callback (DMA by
 * message, vus_dev__dma_read()) holds up the loop's other devices until
 * the reply, at most &vus_dev_opts.timeout_ms. So does a client that has
 * started a message and sends the rest slowly: each read of the rest may
 * wait timeout_ms, and a client that trickles one byte at a time within
 * it holds the loop for as long as it keeps doing so. A server whose
 * clients may stall or are not trusted spreads its devices over several
 * loops, one thread each.
 *
 * A loop follows the rules of a device: every call but vus_loop__stop()
 * comes from the thread that runs it, or is serialised with it.
 *
 * Return: the loop, or NULL with errno set (EINVAL: bad opts).
 */
VUS_API struct vus_loop *vus_loop__new(const struct vus_loop_opts *opts);

/**
 * vus_loop__delete() - remove every device (devices are not deleted) and
 * free the loop
 * @loop: loop or NULL; not from a callback of one of its devices (ignored
 *	there, with a warning: the round in progress still uses the loop)
 */
VUS_API void vus_loop__delete(struct vus_loop *loop);

/**
 * vus_loop__add() - serve @dev from @loop
 * @loop: loop
 * @dev: device, in no loop; it keeps its listening socket or client
 *
 * From now on the loop's thread processes the device: do not call
 * vus_dev__process() or vus_dev__run() on it meanwhile.
 * vus_dev__delete() removes a device from its loop first, so a device may
 * be deleted before or after its loop, also from a callback of another
 * device of the loop (never from one of its own, loop or not).
 *
 * Return: 0, -EEXIST already in @loop, -EBUSY in another loop,
 * -EINVAL, -ENOMEM, or -errno from epoll_ctl().
 */
VUS_API int vus_loop__add(struct vus_loop *loop, struct vus_dev *dev);

/**
 * vus_loop__remove() - stop serving @dev from @loop
 * @loop: loop
 * @dev: device
 *
 * Allowed from a callback, also of @dev itself or of another device of
 * the loop: a removed device is not processed again by the round in
 * progress. The device keeps its client.
 *
 * Return: 0, -ENOENT not in @loop, -EINVAL.
 */
VUS_API int vus_loop__remove(struct vus_loop *loop, struct vus_dev *dev);

/** vus_loop__nr_devs() - number of devices in @loop (0 for NULL) */
VUS_API unsigned int vus_loop__nr_devs(const struct vus_loop *loop);

/**
 * vus_loop__fd() - the one fd to poll for POLLIN
 * @loop: loop
 *
 * An epoll fd owned by the loop, readable while any of its devices has
 * work; stable for the loop's lifetime. An application with its own event
 * loop watches it and calls vus_loop__process().
 *
 * Return: the fd, or -EINVAL for a NULL @loop.
 */
VUS_API int vus_loop__fd(const struct vus_loop *loop);

/**
 * vus_loop__process() - one round without waiting
 * @loop: loop
 *
 * Serves every device that is ready now (up to &vus_loop_opts.max_events)
 * with vus_dev__process().
 *
 * Return: devices served (>= 0), -EBUSY from a callback of one of the
 * loop's devices (a round is in progress), or the first -errno of
 * vus_dev__process() (a fatal error of the library itself; the round
 * ends there).
 */
VUS_API int vus_loop__process(struct vus_loop *loop);

/**
 * vus_loop__run() - serve the loop's devices until stopped
 * @loop: loop
 *
 * Blocks in epoll_wait() while no device has work.
 *
 * Return: 0 after vus_loop__stop(), -EINTR when a signal interrupted the
 * wait (the caller checks its own flags and calls again), -EBUSY from a
 * callback of one of the loop's devices, or -errno as vus_loop__process().
 */
VUS_API int vus_loop__run(struct vus_loop *loop);

/**
 * vus_loop__stop() - make vus_loop__run() return 0
 * @loop: loop
 *
 * Safe from any thread and from a signal handler: it sets a flag and
 * wakes the loop. The running (or, if none runs, the next)
 * vus_loop__run() returns 0 after the round in progress.
 */
VUS_API void vus_loop__stop(struct vus_loop *loop);

/* ---- DMA ---------------------------------------------------------------- */

/*
 * DMA regions. A client maps IOVA ranges with DMA_MAP, with or without an
 * fd (SCM_RIGHTS). The library mmaps (MAP_SHARED) a region that comes with
 * an fd at the file offset the client gives (a multiple of the page size,
 * else the DMA_MAP fails with EINVAL), with the rights of the region's
 * READ/WRITE flags, and the device reaches it directly. If the mmap fails
 * (ENOMEM for a huge region, ENODEV for an fd without mmap, EACCES for an
 * fd opened without the rights), the region is kept and served with
 * DMA_READ/DMA_WRITE messages like a region without fd; the first such
 * region of a device is logged as a warning.
 *
 * Twin socket. DMA_READ and DMA_WRITE are commands the server sends; the
 * client's replies to them share the main socket with the client's own
 * commands, so a client command may arrive while the server waits for a
 * DMA reply. The library queues such commands and handles them after
 * the current one, in order (libvfio-user instead fails the DMA: its
 * issue #279). With &vus_dev_opts.twin_socket the library also offers the
 * twin socket, which libvfio-user's clients know: a client that sends
 *
 *	"capabilities": {..., "twin_socket": {"supported": true}}
 *
 * in VERSION, with max_msg_fds >= 1, gets a connected AF_UNIX stream
 * socket as fd 0 of the VERSION reply, announced there as
 *
 *	"twin_socket": {"supported": true, "fd_index": 0}
 *
 * From then on the library sends DMA_READ/DMA_WRITE on that socket and
 * takes the client's replies from it alone; client commands and their
 * replies stay on the main socket. A DMA wait then never meets a client
 * command: those wait in the main socket until the current one has been
 * answered. Anything else on the twin socket (a command, a reply that
 * matches no DMA command in flight, fds, data while no DMA is in flight,
 * its closing) drops the client. Both sockets close on disconnect; each
 * client negotiates afresh. vus_dev__twin_socket() tells whether the
 * current client uses it. Without it (not offered or not asked for)
 * nothing changes. Device models need no change either way: the choice
 * is the library's and the client's.
 */

/* Access rights (vus_dev__dma_ptr() @prot) */
#define VUS_DMA_READ		(1U << 0)	/* the device reads */
#define VUS_DMA_WRITE		(1U << 1)	/* the device writes */

/**
 * vus_dev__dma_read() - read client memory (device → reads guest RAM)
 * @dev: device
 * @iova: client DMA address
 * @buf: destination
 * @len: bytes
 *
 * [@iova, @iova + @len) must lie in DMA regions the client mapped readable.
 * Regions the library mapped (see above) are read directly with memcpy();
 * should the client take the memory away under the copy (SIGBUS), the copy
 * ends there and the call returns -EFAULT. Other regions are read with
 * DMA_READ messages of at most max_data_xfer_size each (the smaller of the
 * client's and ours: QEMU's client holds us to ours), up to four in flight
 * at once (replies matched by msg_id, in any order). Waits for every reply
 * (bounded by timeout_ms each); client commands that arrive meanwhile are
 * queued and handled, in order, after the current one: any 64, more while
 * they hold at most 16 MiB; beyond that a command is refused with EBUSY,
 * and one that takes no reply (a posted write) drops the client (with
 * the twin socket they stay in the main socket until then; with
 * &vus_dev_opts.strict_dma_reply and no twin socket they drop the client
 * instead).
 * Callable from an access callback (e.g. on a doorbell write) before the
 * reply to that access is sent, or from the application's own context.
 *
 * Return: 0; -EFAULT range not mapped or not readable, or a mapping
 * vanished under the copy; -ENOTCONN no client; -EBUSY the device is not
 * running (migration: see vus_dev__running()); -EIO the client replied
 * with an error; -EPROTO bad reply, or a client command in its place with
 * strict_dma_reply (client dropped); -ETIMEDOUT (client dropped).
 */
VUS_API int vus_dev__dma_read(struct vus_dev *dev, uint64_t iova, void *buf,
			      size_t len);

/**
 * vus_dev__dma_write() - write client memory
 * @dev: device
 * @iova: client DMA address
 * @buf: source
 * @len: bytes
 *
 * As vus_dev__dma_read(), with DMA_WRITE messages and writable regions.
 * When the client refuses one message (-EIO), the up to three sent after
 * it may still have been written.
 */
VUS_API int vus_dev__dma_write(struct vus_dev *dev, uint64_t iova,
			       const void *buf, size_t len);

/**
 * vus_dev__dma_ptr() - a pointer to client memory, for zero-copy access
 * @dev: device
 * @iova: client DMA address
 * @len: bytes the device will access, > 0
 * @prot: VUS_DMA_READ, VUS_DMA_WRITE or both: how it will access them
 *
 * When [@iova, @iova + @len) lies in one DMA region the library mapped
 * (the client passed an fd) with the rights @prot asks for, the device may
 * access client memory through the returned pointer, without any message.
 * Anything else (a range crossing a region boundary, even into an adjacent
 * mapped region, or one in a region without fd) goes through
 * vus_dev__dma_read()/vus_dev__dma_write().
 *
 * The pointer is valid only while the region is mapped: at most until the
 * &vus_dev_ops.dma_unmap callback for the region or the client's
 * disconnect, and the client may take the memory away before it says so.
 * The vfio_user_mdev module zaps the server's mapping as soon as its
 * consumer unmaps the IOVA range, and sends DMA_UNMAP afterwards: an access
 * through the pointer after that raises SIGBUS, which the library does not
 * catch (its handler catches only its own copies and vus_dma_memcpy()'s),
 * so by default the process dies. Copy with vus_dma_memcpy(), or handle
 * SIGBUS yourself.
 *
 * While the device is not running for migration it must not access
 * client memory through pointers it got earlier either.
 *
 * Return: the pointer, or NULL with errno set: EINVAL bad @len or @prot;
 * ENOTCONN no client; EBUSY the device is not running (migration);
 * EFAULT the range is not inside one DMA region;
 * EACCES the region lacks a right @prot asks for; EOPNOTSUPP the region is
 * not mapped into this process (no fd, or the mmap failed).
 */
VUS_API void *vus_dev__dma_ptr(struct vus_dev *dev, uint64_t iova, size_t len,
			       uint32_t prot);

/**
 * vus_dma_memcpy() - memcpy() that survives a vanished client mapping
 * @dst: destination
 * @src: source
 * @len: bytes
 *
 * For copies to, from or between pointers from vus_dev__dma_ptr(): a
 * SIGBUS raised by reading @src or writing @dst (the client took the
 * memory away under the copy) ends the copy; the bytes before the fault
 * may have been copied. Costs no system call beyond memcpy(). Not
 * counted in vus_dev__dma_stats().
 *
 * Return: 0, -EFAULT (SIGBUS), -EINVAL (NULL pointer), or -errno if the
 * SIGBUS handler could not be installed.
 */
VUS_API int vus_dma_memcpy(void *dst, const void *src, size_t len);

/**
 * struct vus_dma_stats - how a device's DMA went
 * @sz: sizeof(struct vus_dma_stats), set by the caller (VUS_OPTS())
 * @mmap_ops: vus_dev__dma_read()/write() calls that copied through the
 *	library's mapping of a region
 * @mmap_bytes: bytes they copied that way
 * @msg_ops: calls that sent DMA_READ/DMA_WRITE messages (a call that
 *	crosses both kinds of region counts in both)
 * @msg_bytes: bytes moved by DMA_READ/DMA_WRITE messages the client
 *	answered with success
 * @dma_read_msgs: DMA_READ messages sent
 * @dma_write_msgs: DMA_WRITE messages sent
 * @faults: copies through a mapping ended by SIGBUS (-EFAULT)
 *
 * Counted since vus_dev__new(), across clients. Accesses the device makes
 * through vus_dev__dma_ptr() pointers are its own and not counted.
 */
struct vus_dma_stats {
	size_t sz;
	uint64_t mmap_ops;
	uint64_t mmap_bytes;
	uint64_t msg_ops;
	uint64_t msg_bytes;
	uint64_t dma_read_msgs;
	uint64_t dma_write_msgs;
	uint64_t faults;
	size_t :0;
};

/**
 * vus_dev__dma_stats() - read the DMA statistics of @dev
 * @dev: device
 * @stats: filled in, at most @stats->sz bytes (a caller built against an
 *	older header gets the fields it knows)
 *
 * Return: 0 or -EINVAL.
 */
VUS_API int vus_dev__dma_stats(const struct vus_dev *dev,
			       struct vus_dma_stats *stats);

/**
 * vus_dev__nr_dma_regions() - how many DMA regions the client has mapped
 * @dev: device
 */
VUS_API unsigned int vus_dev__nr_dma_regions(const struct vus_dev *dev);

/* ---- migration ---------------------------------------------------------- */

/*
 * Live migration (vfio-user DEVICE_FEATURE, MIG_DATA_READ, MIG_DATA_WRITE;
 * VFIO migration v2). A device that calls vus_dev__setup_migration() gets
 * the whole protocol from the library:
 *
 * - GET MIGRATION answers STOP_COPY | P2P, plus PRE_COPY when the device
 *   opts in; GET/SET/PROBE MIG_DEVICE_STATE runs the VFIO state machine:
 *   a SET walks the shortest path of single arcs to the target (as the
 *   kernel's vfio_mig_get_next_state() does), calling
 *   &vus_mig_ops.transition once per arc; a target that no path reaches
 *   (ERROR, STOP_COPY -> PRE_COPY, PRE_COPY without the opt-in, anything
 *   from ERROR) gets EINVAL before any arc is taken. GET MIG_DATA_SIZE
 *   (feature 9, beyond the spec's list) says how many bytes a STOP_COPY
 *   would stream now.
 * - Entering STOP_COPY the library asks the device for its state
 *   (&vus_mig_ops.save, final) and keeps the stream; entering PRE_COPY it
 *   asks for a first round (save, not final); MIG_DATA_READ serves the
 *   stream in pieces of at most max_data_xfer_size, a short reply ending
 *   it. In RESUMING, MIG_DATA_WRITE appends to a buffer (at most
 *   &vus_mig_opts.max_stream bytes); RESUMING -> STOP checks the whole
 *   stream (framing, lengths, CRC, device IDs and version) and only then
 *   hands it to &vus_mig_ops.load. A stream the library refuses leaves
 *   the device in RESUMING, untouched (more data may follow); a load the
 *   device refuses puts it in ERROR.
 * - DEVICE_RESET returns to RUNNING from any state. A client that goes
 *   away ends the session: PRE_COPY -> RUNNING, PRE_COPY_P2P ->
 *   RUNNING_P2P, STOP_COPY -> STOP (through the callback), RESUMING ->
 *   ERROR; STOP and the others stay.
 *
 * States, as the device model sees them:
 *
 *   running  (RUNNING, PRE_COPY): everything allowed.
 *   quiesced (RUNNING_P2P, PRE_COPY_P2P): region accesses are served as
 *	when running, but the device initiates nothing: no DMA, no
 *	interrupt. It may latch work (a doorbell) and start it when running.
 *   stopped  (STOP, STOP_COPY, RESUMING, ERROR): the device must not
 *	change its state. The library refuses client writes to the device's
 *	regions (EBUSY error reply; reads are still served and must have no
 *	side effect) and serves config space, the MSI-X table, SET_IRQS,
 *	DMA_MAP/UNMAP and DEVICE_RESET as always, as VFIO requires.
 *
 * While not running, vus_dev__dma_read(), vus_dev__dma_write(),
 * vus_dev__dma_ptr() and vus_dev__trigger_irq() fail with EBUSY, and
 * interrupts the client's own SET_IRQS would fire are held until the
 * device runs again. What the library cannot stop is the device's own
 * activity (threads, timers, pointers from vus_dev__dma_ptr()) and a
 * client writing through an mmap of a region: the first is the device's
 * contract (stop it in ->transition, or check vus_dev__running()), the
 * second the client's (VFIO: the user must not touch a stopped device).
 *
 * The stream is a sequence of frames: one per pre-copy round, then one
 * final frame. Each frame is a 32-byte header (little endian: u32 magic
 * "VUSM", u16 format 1, u16 flags (bit 0: final), u16 PCI vendor ID,
 * u16 device ID (0 for a non-PCI device), u32 device version, u32 length
 * of the library section, u32 CRC-32 (IEEE, zlib's crc32()) of header,
 * with this field 0, and both sections, u64 length of the device
 * section), then the library section (final frames only: the PCI config
 * space, the MSI-X table and which vectors are pending), then the device
 * section: what &vus_mig_ops.save put, in the device's own versioned
 * format.
 */

/**
 * enum vus_mig_state - migration states (the wire numbers)
 * @VUS_MIG_ERROR: failed; left only by DEVICE_RESET
 * @VUS_MIG_STOP: stopped
 * @VUS_MIG_RUNNING: running (also without migration set up)
 * @VUS_MIG_STOP_COPY: stopped, the state is being read
 * @VUS_MIG_RESUMING: stopped, a state is being written
 * @VUS_MIG_RUNNING_P2P: quiesced
 * @VUS_MIG_PRE_COPY: running, a first state is being read
 * @VUS_MIG_PRE_COPY_P2P: quiesced, a first state is being read
 */
enum vus_mig_state {
	VUS_MIG_ERROR = 0,
	VUS_MIG_STOP = 1,
	VUS_MIG_RUNNING = 2,
	VUS_MIG_STOP_COPY = 3,
	VUS_MIG_RESUMING = 4,
	VUS_MIG_RUNNING_P2P = 5,
	VUS_MIG_PRE_COPY = 6,
	VUS_MIG_PRE_COPY_P2P = 7,
};

/*
 * struct vus_mig_stream - the device's part of the migration stream: an
 * append-only writer in &vus_mig_ops.save, a bounds-checked reader in
 * &vus_mig_ops.load. Owned by the library, valid during the callback only.
 */
struct vus_mig_stream;

/**
 * struct vus_mig_ops - migration callbacks
 * @transition: one arc of the state machine, @from -> @to (optional).
 *	While it runs, vus_dev__mig_state() is still @from, so the device
 *	may finish outstanding DMA and interrupts on an arc out of a running
 *	state. Entering a quiesced or stopped state it must stop initiating
 *	work before returning (the library does not wait for threads of the
 *	device's own); entering a running state it may resume. Return 0, or
 *	-errno: the arc is not taken, the SET fails with that errno and the
 *	state stays @from. Except RESUMING -> STOP: the state is already
 *	loaded then, so a refusal puts the device in ERROR instead.
 * @save: append the device's state to @out with vus_mig_stream__put*()
 *	(required). @final is true for the STOP_COPY frame (the device is
 *	stopped: the whole state), false for a pre-copy round (the device
 *	runs: what can be sent ahead). Also called to measure the stream for
 *	MIG_DATA_SIZE, in any state (vus_mig_stream__measuring() says so):
 *	it must not change the device. Return 0 or -errno (the SET fails;
 *	the device goes back to the state it came from, or to ERROR when no
 *	arc leads back).
 * @load: read one frame's device section from @in with
 *	vus_mig_stream__get*() (required): @version is the device version
 *	the source saved it with (1 ... &vus_mig_opts.version), @final as
 *	for @save. Called at RESUMING -> STOP, frame by frame in stream
 *	order, after the library checked the whole stream and restored its
 *	own section. Check everything: a short read fails with -EINVAL, and
 *	bytes left unread fail the load. Return 0 or -errno: the SET fails
 *	and the device goes to ERROR (it may be half loaded).
 *
 * @dev is the device, @priv is &vus_dev_opts.priv.
 */
struct vus_mig_ops {
	int (*transition)(struct vus_dev *dev, void *priv,
			  enum vus_mig_state from, enum vus_mig_state to);
	int (*save)(struct vus_dev *dev, void *priv, struct vus_mig_stream *out,
		    bool final);
	int (*load)(struct vus_dev *dev, void *priv, struct vus_mig_stream *in,
		    uint32_t version, bool final);
};

/**
 * struct vus_mig_opts - options of vus_dev__setup_migration()
 * @sz: sizeof(struct vus_mig_opts); use VUS_OPTS()
 * @ops: callbacks; the library copies *@ops, so it need not outlive
 *	the call
 * @version: version of the device section's format, written into every
 *	frame; streams of versions 1 ... @version are loaded. 0: 1
 * @pre_copy: offer PRE_COPY (and PRE_COPY_P2P)
 * @max_stream: most bytes a client may write in one RESUMING session
 *	(EFBIG beyond); 0: 1 GiB
 */
struct vus_mig_opts {
	size_t sz;
	const struct vus_mig_ops *ops;
	uint32_t version;
	bool pre_copy;
	uint64_t max_stream;
	size_t :0;
};
#define vus_mig_opts__last_field max_stream

/**
 * vus_dev__setup_migration() - make @dev migratable
 * @dev: device
 * @opts: callbacks and options
 *
 * Call once, before a client connects. Without it the device answers
 * DEVICE_FEATURE, MIG_DATA_READ and MIG_DATA_WRITE with EOPNOTSUPP.
 *
 * Return: 0; -EINVAL no save or load callback, bad opts; -EBUSY already
 * set up.
 */
VUS_API int vus_dev__setup_migration(struct vus_dev *dev,
				     const struct vus_mig_opts *opts);

/** vus_dev__mig_state() - the migration state (RUNNING without migration) */
VUS_API enum vus_mig_state vus_dev__mig_state(const struct vus_dev *dev);

/**
 * vus_dev__running() - whether the device may DMA and raise interrupts
 * @dev: device
 *
 * Return: true in RUNNING and PRE_COPY (and always without migration).
 */
VUS_API bool vus_dev__running(const struct vus_dev *dev);

/**
 * vus_dev__stopped() - whether the device must keep its state as it is
 * @dev: device
 *
 * Return: true in STOP, STOP_COPY, RESUMING and ERROR.
 */
VUS_API bool vus_dev__stopped(const struct vus_dev *dev);

/**
 * vus_mig_stream__put() - append bytes to the device section
 * @s: stream given to &vus_mig_ops.save
 * @buf: bytes
 * @len: length
 *
 * Return: 0; -EINVAL not a save stream; -ENOMEM.
 */
VUS_API int vus_mig_stream__put(struct vus_mig_stream *s, const void *buf,
				size_t len);

/** vus_mig_stream__put_u32() - append @v, little endian */
VUS_API int vus_mig_stream__put_u32(struct vus_mig_stream *s, uint32_t v);

/** vus_mig_stream__put_u64() - append @v, little endian */
VUS_API int vus_mig_stream__put_u64(struct vus_mig_stream *s, uint64_t v);

/**
 * vus_mig_stream__put_region() - append the memory of a library-backed
 * region
 * @s: stream given to &vus_mig_ops.save
 * @index: region added without an access callback
 *
 * Sparse: only the non-zero pages, found without touching the holes of
 * the region's memory (a large BAR nobody wrote costs nothing). Encoded
 * as u32 index, u32 0, u64 size, u64 number of extents, then per extent
 * u64 offset, u64 length and the bytes, in ascending order.
 *
 * Return: 0; -EINVAL not a save stream, or no such region or not backed
 * by the library; -ENOMEM.
 */
VUS_API int vus_mig_stream__put_region(struct vus_mig_stream *s,
				       unsigned int index);

/**
 * vus_mig_stream__measuring() - whether @s only counts bytes
 * @s: stream given to &vus_mig_ops.save
 *
 * True when the library measures the stream (MIG_DATA_SIZE): puts are
 * counted, nothing is copied. The device must put exactly what it would
 * otherwise.
 */
VUS_API bool vus_mig_stream__measuring(const struct vus_mig_stream *s);

/**
 * vus_mig_stream__get() - take bytes from the device section
 * @s: stream given to &vus_mig_ops.load
 * @buf: destination
 * @len: bytes wanted
 *
 * Return: 0; -EINVAL fewer than @len bytes left (nothing taken) or not a
 * load stream.
 */
VUS_API int vus_mig_stream__get(struct vus_mig_stream *s, void *buf,
				size_t len);

/** vus_mig_stream__get_u32() - take a little-endian u32 (see __get()) */
VUS_API int vus_mig_stream__get_u32(struct vus_mig_stream *s, uint32_t *v);

/** vus_mig_stream__get_u64() - take a little-endian u64 (see __get()) */
VUS_API int vus_mig_stream__get_u64(struct vus_mig_stream *s, uint64_t *v);

/**
 * vus_mig_stream__get_region() - restore a region put by
 * vus_mig_stream__put_region()
 * @s: stream given to &vus_mig_ops.load
 * @index: the region, which must be the one saved there
 *
 * Checks the whole record first (index, size equal to this region's,
 * extents in order, inside the region, within the stream); then the
 * region's memory becomes the saved one, zero outside the extents.
 *
 * Return: 0; -EINVAL bad record (the region is untouched) or not a load
 * stream or no such library-backed region.
 */
VUS_API int vus_mig_stream__get_region(struct vus_mig_stream *s,
				       unsigned int index);

/** vus_mig_stream__remaining() - bytes of the device section not yet taken */
VUS_API size_t vus_mig_stream__remaining(const struct vus_mig_stream *s);

#ifdef __cplusplus
}
#endif

#endif /* __VFIO_USER_SERVER_H */
