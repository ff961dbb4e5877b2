/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * vfio-user-sample: back ends (device models) behind one ops struct.
 */
#ifndef __VFIO_USER_SAMPLE_H
#define __VFIO_USER_SAMPLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vfio-user-server.h"

/* Test PCI IDs of the samples (not assigned by the PCI-SIG). */
#define SAMPLE_VENDOR_ID	0x4e58
#define SAMPLE_DMA_DEVICE_ID	0x0001
#define SAMPLE_NULL_DEVICE_ID	0x0002
#define SAMPLE_CLASS_CODE	0xff0000	/* unassigned class */

/*
 * --device dma: BAR0 registers (4 KiB BAR, little endian, 4- or 8-byte
 * aligned accesses; 64-bit registers may be accessed as two halves).
 * Every counter (COUNT, BYTES, SHM_BYTES, RD_MSGS, WR_MSGS) is zeroed by a
 * device reset. TWIN_SOCKET reads 1 while the current client uses the
 * twin socket (the sample runs with --twin-socket and the client asked for
 * it in VERSION): the DMA_READ/DMA_WRITE messages counted by RD_MSGS and
 * WR_MSGS then go on it. --strict-dma-reply changes no register: a client
 * command in place of a DMA reply drops the client, and the copy fails
 * with ERROR EPROTO.
 */
#define DMA_REG_MAGIC		0x00	/* u32 RO 'DMA1' = 0x31414d44 */
#define DMA_REG_VERSION		0x04	/* u32 RO 1 */
#define DMA_REG_SRC		0x08	/* u64 RW source IOVA */
#define DMA_REG_DST		0x10	/* u64 RW destination IOVA */
#define DMA_REG_LEN		0x18	/* u64 RW bytes to copy */
#define DMA_REG_DOORBELL	0x20	/* u32 WO any write starts the copy */
#define DMA_REG_STATUS		0x24	/* u32 RO DMA_STATUS_* */
#define DMA_REG_ERROR		0x28	/* u32 RO errno of the last copy */
#define DMA_REG_IRQ_CTRL	0x2c	/* u32 RW bit 0: interrupt when done */
#define DMA_REG_COUNT		0x30	/* u64 RO copies completed */
#define DMA_REG_BYTES		0x38	/* u64 RO bytes copied */
#define DMA_REG_SCRATCH		0x40	/* u32 RW scratch / ping */
					/* 0x44 reserved, reads 0 */
#define DMA_REG_SHM_BYTES	0x48	/* u64 RO bytes of completed copies
					 * that sent no DMA message (shared
					 * memory: fd-backed DMA regions) */
#define DMA_REG_RD_MSGS		0x50	/* u64 RO DMA_READ messages sent */
#define DMA_REG_WR_MSGS		0x58	/* u64 RO DMA_WRITE messages sent */
#define DMA_REG_TWIN_SOCKET	0x60	/* u32 RO 1: the current client
					 * uses the twin socket, 0: it
					 * does not (or no client) */
					/* 0x64 reserved, reads 0 */
#define DMA_REG_PROGRESS	0x68	/* u64 RO bytes of the current (or
					 * last) copy done */
#define DMA_REG_STEP		0x70	/* u32 RW bytes per step of a
					 * background copy; 0: 64 KiB, at
					 * most 16 MiB */
#define DMA_REG_STEPS		0x74	/* u32 RW steps a background copy
					 * may still take, counted down;
					 * 0xffffffff (reset value): no
					 * limit */
#define DMA_REG_END		0x78

#define DMA_MAGIC		0x31414d44
#define DMA_STATUS_IDLE		0
#define DMA_STATUS_BUSY		1
#define DMA_STATUS_DONE		2
#define DMA_STATUS_ERROR	3
#define DMA_IRQ_CTRL_ENABLE	(1U << 0)

/* DOORBELL values: 2 and 3 move data one way only (benchmarks) */
#define DMA_DOORBELL_COPY	1	/* (any other value) copy SRC to DST */
#define DMA_DOORBELL_READ	2	/* read SRC, LEN; data dropped */
#define DMA_DOORBELL_WRITE	3	/* write LEN bytes of SCRATCH's low
					 * byte to DST */
#define DMA_DOORBELL_ASYNC	4	/* copy in the background: STEP
					 * bytes at a time between messages,
					 * while running and STEPS > 0 */
#define DMA_STEPS_UNLIMITED	0xffffffffU
#define DMA_STEP_DEFAULT	(64U << 10)

/*
 * --device null: BAR0 registers (4 KiB BAR, little endian, 4- or 8-byte
 * aligned accesses; 64-bit registers may be accessed as two halves).
 * BAR4_OFFSET and BAR4_DATA show BAR4's memory as the server sees it,
 * through BAR0 (never mmap-able): with --mmap a client reaches BAR4's
 * sparse areas without messages, and these registers tell whether a write
 * there reached the server's memory, or put a value there for the client
 * to read. BAR4_OFFSET is zeroed by a device reset; BAR4's memory is not.
 */
#define NULL_REG_MAGIC		0x00	/* u32 RO 'NUL1' = 0x314c554e */
#define NULL_REG_VERSION	0x04	/* u32 RO 1 */
#define NULL_REG_SCRATCH	0x08	/* u64 RW */
#define NULL_REG_PING		0x10	/* u32 RW reads return last write + 1 */
#define NULL_REG_LATENCY_US	0x14	/* u32 RW delay of SLOW accesses */
#define NULL_REG_SLOW		0x18	/* u32 RW scratch, delayed */
#define NULL_REG_IRQ		0x1c	/* u32 WO raise MSI-X vector (value) */
#define NULL_REG_ACCESSES	0x20	/* u64 RO BAR0 accesses so far */
#define NULL_REG_BAR4_OFFSET	0x28	/* u64 RW offset in BAR4, written
					 * values are masked with
					 * NULL_BAR4_SIZE - 8 */
#define NULL_REG_BAR4_DATA	0x30	/* u64 RW the 8 bytes of BAR4's memory
					 * at BAR4_OFFSET (read or written by
					 * the server) */
#define NULL_REG_END		0x38

#define NULL_MAGIC		0x314c554e
#define NULL_BAR4_SIZE		(64 * 1024)

/* Options common to all back ends, from the command line. */
struct sample_opts {
	const char *socket;
	uint64_t bar_size;	/* null: size of the large BAR2 */
	bool mmap;		/* null: offer BAR4 for mmap (sparse) */
	bool verbose;
	bool pre_copy;		/* offer PRE_COPY (&vus_mig_opts.pre_copy) */
};

/*
 * struct sample_backend - one device model.
 * @name: --device value
 * @help: one paragraph for --help (register layout)
 * @vendor_id: PCI vendor ID
 * @device_id: PCI device ID
 * @setup: describe the device on @dev (after vus_dev__setup_pci());
 *	return 0 or -errno
 * @reset: DEVICE_RESET (the main program's &vus_dev_ops.reset calls it)
 * @mig_version: version of the back end's migration format
 * @save: &vus_mig_ops.save (the main program sets up migration with it,
 *	@load and a logging transition callback)
 * @load: &vus_mig_ops.load
 * @work: one step of work in the background, called by the main loop
 *	after each batch of messages; return > 0 to be called again at once
 *	(the loop then does not sleep), 0 when idle until the next message
 * @priv: the back end's state, passed as callback priv
 * @priv_size: sizeof(*@priv): with --count each device gets its own copy
 */
struct sample_backend {
	const char *name;
	const char *help;
	uint16_t vendor_id;
	uint16_t device_id;
	int (*setup)(struct vus_dev *dev, const struct sample_opts *o,
		     void *priv);
	void (*reset)(void *priv);
	uint32_t mig_version;
	int (*save)(struct vus_dev *dev, void *priv, struct vus_mig_stream *out,
		    bool final);
	int (*load)(struct vus_dev *dev, void *priv, struct vus_mig_stream *in,
		    uint32_t version, bool final);
	int (*work)(struct vus_dev *dev, void *priv);
	void *priv;
	size_t priv_size;
};

extern struct sample_backend sample_dma_backend;
extern struct sample_backend sample_null_backend;

void sample_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern bool sample_verbose;

/* Raise vector 0 of the best enabled interrupt: MSI-X, MSI, INTx. */
int sample_raise_irq(struct vus_dev *dev, unsigned int msix_vector);

#endif /* __VFIO_USER_SAMPLE_H */
