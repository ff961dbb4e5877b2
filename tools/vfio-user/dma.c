// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio-user-sample --device dma: a DMA engine. The client programs source
 * and destination IOVAs and a length in BAR0 and rings the doorbell; the
 * device copies before the doorbell write completes, then raises MSI-X
 * vector 0 (MSI or INTx when MSI-X has no eventfd). When the client
 * mapped both ranges with an fd (shared memory), the copy is one memcpy
 * between the library's mappings of them and sends no message; otherwise
 * it is a DMA_READ then a DMA_WRITE (the library splits them by
 * max_data_xfer_size, and reads or writes any fd-backed side directly),
 * on the twin socket when the client negotiated one (--twin-socket).
 *
 * DOORBELL 4 copies in the background instead: STEP bytes at a time from
 * the main loop, between messages, as long as the device runs and STEPS
 * allows. Migration carries such a copy over: quiesced or stopped, the
 * engine pauses at a step boundary (a doorbell rung while quiesced starts
 * no DMA either: the copy waits); the registers and the copy's progress
 * travel in the stream; the destination's engine goes on from there once
 * it runs, and interrupts when done. Registers: sample.h.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sample.h"

#define DMA_BAR0_SIZE		4096
#define DMA_MSIX_VECTORS	4
#define DMA_MSIX_TABLE		0x800
#define DMA_MSIX_PBA		0xc00
#define DMA_MAX_LEN		(64ULL << 20)
/* (the library splits each call by max_data_xfer_size) */
#define DMA_CHUNK		(16U << 20)

/*
 * struct dma_dev - the engine. @active while a copy is in flight (STATUS
 * BUSY, PROGRESS bytes done): its parameters, taken from SRC, DST and LEN
 * when the doorbell rang, its DMA_DOORBELL_* @mode, and the DMA messages
 * it sent so far. All of it but @buf is migrated.
 */
struct dma_dev {
	uint8_t regs[DMA_REG_END];
	uint8_t *buf;
	bool active;
	uint32_t mode;
	uint64_t src;
	uint64_t dst;
	uint64_t len;
	uint64_t msgs;
};

static struct dma_dev dma_state;

static uint64_t reg64(struct dma_dev *d, unsigned int off)
{
	uint64_t v;

	memcpy(&v, d->regs + off, 8);
	return le64toh(v);
}

static uint32_t reg32(struct dma_dev *d, unsigned int off)
{
	uint32_t v;

	memcpy(&v, d->regs + off, 4);
	return le32toh(v);
}

static void set32(struct dma_dev *d, unsigned int off, uint32_t v)
{
	v = htole32(v);
	memcpy(d->regs + off, &v, 4);
}

static void set64(struct dma_dev *d, unsigned int off, uint64_t v)
{
	v = htole64(v);
	memcpy(d->regs + off, &v, 8);
}

static void dma_reset(void *priv)
{
	struct dma_dev *d = priv;

	memset(d->regs, 0, sizeof(d->regs));
	set32(d, DMA_REG_MAGIC, DMA_MAGIC);
	set32(d, DMA_REG_VERSION, 1);
	set32(d, DMA_REG_IRQ_CTRL, DMA_IRQ_CTRL_ENABLE);
	set32(d, DMA_REG_STEPS, DMA_STEPS_UNLIMITED);
	d->active = false;
}

/* DMA_READ and DMA_WRITE messages the library sent for @dev so far */
static void dma_msgs(struct vus_dev *dev, uint64_t *reads, uint64_t *writes)
{
	VUS_OPTS(vus_dma_stats, st);

	vus_dev__dma_stats(dev, &st);	/* (fails only without a device) */
	*reads = st.dma_read_msgs;
	*writes = st.dma_write_msgs;
}

/*
 * Through shared memory: the library's mappings of the client's fd-backed
 * DMA regions, when every side this copy touches lies in one. Returns 1
 * when it did not apply (the caller copies with DMA messages), else 0 or
 * -errno (-EFAULT: the client took the memory away under the copy).
 */
static int dma_copy_shm(struct vus_dev *dev, struct dma_dev *d, uint32_t mode,
			uint64_t src, uint64_t dst, uint64_t len)
{
	bool rd = mode != DMA_DOORBELL_WRITE, wr = mode != DMA_DOORBELL_READ;
	uint8_t *s = NULL, *t = NULL;
	uint64_t pos;
	int err;

	if (!len)
		return 1;
	if (rd && !(s = vus_dev__dma_ptr(dev, src, len, VUS_DMA_READ)))
		return 1;
	if (wr && !(t = vus_dev__dma_ptr(dev, dst, len, VUS_DMA_WRITE)))
		return 1;
	/* overlapping ranges copy as the DMA_READ-then-DMA_WRITE path does */
	if (rd && wr && !(src + len <= dst || dst + len <= src))
		return 1;
	if (rd && wr)
		return vus_dma_memcpy(t, s, len);
	/* one direction (benchmarks): through the bounce buffer */
	for (pos = 0; pos < len; pos += DMA_CHUNK) {
		size_t n = len - pos < DMA_CHUNK ? len - pos : DMA_CHUNK;

		err = rd ? vus_dma_memcpy(d->buf, s + pos, n) :
			   vus_dma_memcpy(t + pos, d->buf, n);
		if (err)
			return err;
	}
	return 0;
}

static int dma_copy(struct vus_dev *dev, struct dma_dev *d, uint32_t mode,
		    uint64_t src, uint64_t dst, uint64_t len)
{
	bool rd = mode != DMA_DOORBELL_WRITE, wr = mode != DMA_DOORBELL_READ;
	uint64_t pos;
	int err;

	if (len > DMA_MAX_LEN || src + len < src || dst + len < dst)
		return -EINVAL;
	if (!rd)
		memset(d->buf, d->regs[DMA_REG_SCRATCH],
		       len < DMA_CHUNK ? len : DMA_CHUNK);
	err = dma_copy_shm(dev, d, mode, src, dst, len);
	if (err <= 0)
		return err;
	for (pos = 0; pos < len; pos += DMA_CHUNK) {
		size_t n = len - pos < DMA_CHUNK ? len - pos : DMA_CHUNK;

		err = rd ? vus_dev__dma_read(dev, src + pos, d->buf, n) : 0;
		if (err)
			return err;
		err = wr ? vus_dev__dma_write(dev, dst + pos, d->buf, n) : 0;
		if (err)
			return err;
	}
	return 0;
}

static bool dma_params_ok(const struct dma_dev *d)
{
	return d->len <= DMA_MAX_LEN && d->src + d->len >= d->src &&
	       d->dst + d->len >= d->dst;
}

/* The copy in flight ends with @err: status, counters, interrupt. */
static void dma_finish(struct vus_dev *dev, struct dma_dev *d, int err)
{
	d->active = false;
	if (err) {
		set32(d, DMA_REG_STATUS, DMA_STATUS_ERROR);
		set32(d, DMA_REG_ERROR, -err);
	} else {
		set32(d, DMA_REG_STATUS, DMA_STATUS_DONE);
		set32(d, DMA_REG_ERROR, 0);
		set64(d, DMA_REG_COUNT, reg64(d, DMA_REG_COUNT) + 1);
		set64(d, DMA_REG_BYTES, reg64(d, DMA_REG_BYTES) + d->len);
		if (!d->msgs)
			set64(d, DMA_REG_SHM_BYTES,
			      reg64(d, DMA_REG_SHM_BYTES) + d->len);
	}
	if (sample_verbose)
		sample_log("dma: copy %#llx -> %#llx, %llu bytes via %s: %s",
			   (unsigned long long)d->src,
			   (unsigned long long)d->dst,
			   (unsigned long long)d->len,
			   d->msgs ? "DMA messages" : "shared memory",
			   err ? strerror(-err) : "ok");
	if (reg64(d, DMA_REG_IRQ_CTRL) & DMA_IRQ_CTRL_ENABLE) {
		err = sample_raise_irq(dev, 0);
		if (sample_verbose)
			sample_log("dma: interrupt: %s",
				   err < 0 ? strerror(-err) :
				   err ? "masked, pending" : "raised");
	}
}

/* Copy up to @max more bytes of the copy in flight (the device runs). */
static void dma_run(struct vus_dev *dev, struct dma_dev *d, uint64_t max)
{
	uint64_t pos = reg64(d, DMA_REG_PROGRESS), n = d->len - pos;
	uint64_t reads0, writes0, reads, writes;
	int err;

	if (n > max)
		n = max;
	dma_msgs(dev, &reads0, &writes0);
	err = dma_copy(dev, d, d->mode, d->src + pos, d->dst + pos, n);
	dma_msgs(dev, &reads, &writes);
	reads -= reads0;
	writes -= writes0;
	d->msgs += reads + writes;
	set64(d, DMA_REG_RD_MSGS, reg64(d, DMA_REG_RD_MSGS) + reads);
	set64(d, DMA_REG_WR_MSGS, reg64(d, DMA_REG_WR_MSGS) + writes);
	if (!err) {
		pos += n;
		set64(d, DMA_REG_PROGRESS, pos);
	}
	if (err || pos == d->len)
		dma_finish(dev, d, err);
}

static void dma_doorbell(struct vus_dev *dev, struct dma_dev *d, uint32_t v)
{
	if (d->active) {		/* one copy at a time */
		set32(d, DMA_REG_ERROR, EBUSY);
		return;
	}
	d->active = true;
	d->mode = v == DMA_DOORBELL_READ || v == DMA_DOORBELL_WRITE ? v :
		  DMA_DOORBELL_COPY;
	d->src = reg64(d, DMA_REG_SRC);
	d->dst = reg64(d, DMA_REG_DST);
	d->len = reg64(d, DMA_REG_LEN);
	d->msgs = 0;
	set64(d, DMA_REG_PROGRESS, 0);
	set32(d, DMA_REG_STATUS, DMA_STATUS_BUSY);
	if (!dma_params_ok(d) && vus_dev__running(dev)) {
		dma_finish(dev, d, -EINVAL);
		return;
	}
	/*
	 * Quiesced for migration: no DMA now; the copy waits, carried over
	 * by the migration if one follows, and runs in the background.
	 */
	if (v == DMA_DOORBELL_ASYNC || !vus_dev__running(dev)) {
		if (sample_verbose)
			sample_log("dma: copy %#llx -> %#llx, %llu bytes queued",
				   (unsigned long long)d->src,
				   (unsigned long long)d->dst,
				   (unsigned long long)d->len);
		return;
	}
	dma_run(dev, d, d->len);	/* before the doorbell write returns */
}

/*
 * One step of a background copy, while the device runs and STEPS allows;
 * a copy whose parameters were refused in a quiesced state fails here.
 */
static int dma_work(struct vus_dev *dev, void *priv)
{
	struct dma_dev *d = priv;
	uint32_t steps = reg32(d, DMA_REG_STEPS);
	uint32_t step = reg32(d, DMA_REG_STEP) ?: DMA_STEP_DEFAULT;

	if (!d->active || !vus_dev__running(dev))
		return 0;
	if (!dma_params_ok(d)) {
		dma_finish(dev, d, -EINVAL);
		return 0;
	}
	if (!steps)
		return 0;
	if (steps != DMA_STEPS_UNLIMITED)
		set32(d, DMA_REG_STEPS, steps - 1);
	dma_run(dev, d, step < DMA_CHUNK ? step : DMA_CHUNK);
	return d->active && reg32(d, DMA_REG_STEPS);
}

static bool writable(unsigned int off)
{
	return (off >= DMA_REG_SRC && off < DMA_REG_DOORBELL) ||
	       (off >= DMA_REG_IRQ_CTRL && off < DMA_REG_COUNT) ||
	       (off >= DMA_REG_SCRATCH && off < DMA_REG_SCRATCH + 4) ||
	       (off >= DMA_REG_STEP && off < DMA_REG_END);
}

static int dma_bar0(struct vus_dev *dev, void *priv, uint64_t off, void *buf,
		    size_t count, bool is_write)
{
	struct dma_dev *d = priv;
	uint8_t *p = buf;
	size_t i;

	/* devices decode exact widths: 4- and 8-byte aligned accesses only */
	if ((count != 4 && count != 8) || (off & (count - 1)))
		return is_write ? 0 : (memset(buf, 0xff, count), 0);
	if (!is_write) {
		set32(d, DMA_REG_TWIN_SOCKET, vus_dev__twin_socket(dev));
		for (i = 0; i < count; i++)
			p[i] = off + i < DMA_REG_END ? d->regs[off + i] : 0;
		return 0;
	}
	for (i = 0; i < count; i++)
		if (off + i < DMA_REG_END && writable(off + i))
			d->regs[off + i] = p[i];
	if (off <= DMA_REG_DOORBELL && off + count > DMA_REG_DOORBELL) {
		uint32_t v;

		memcpy(&v, p + (DMA_REG_DOORBELL - off), 4);
		dma_doorbell(dev, d, le32toh(v));
	}
	return 0;
}

/*
 * Migration stream of the engine, version 1 (the library frames and checks
 * it as a whole): u32 register bytes (DMA_REG_END), the registers, then
 * the copy in flight: u32 active, u32 mode, u64 src, u64 dst, u64 len,
 * u64 DMA messages sent. The load checks every field before it takes any.
 *
 * With --pre-copy the library asks first for a pre-copy frame (@final
 * false) while the engine runs: u32 register bytes and the registers, a
 * snapshot the destination checks (magic, version) and drops; the final
 * frame (STOP_COPY) is the state.
 */
#define DMA_MIG_VERSION		1

static int dma_save(struct vus_dev *dev, void *priv, struct vus_mig_stream *out,
		    bool final)
{
	struct dma_dev *d = priv;
	int err;

	err = vus_mig_stream__put_u32(out, DMA_REG_END);
	if (!err)
		err = vus_mig_stream__put(out, d->regs, DMA_REG_END);
	if (!final)
		return err;
	if (!err)
		err = vus_mig_stream__put_u32(out, d->active);
	if (!err)
		err = vus_mig_stream__put_u32(out, d->mode);
	if (!err)
		err = vus_mig_stream__put_u64(out, d->src);
	if (!err)
		err = vus_mig_stream__put_u64(out, d->dst);
	if (!err)
		err = vus_mig_stream__put_u64(out, d->len);
	if (!err)
		err = vus_mig_stream__put_u64(out, d->msgs);
	return err;
}

static int dma_load(struct vus_dev *dev, void *priv, struct vus_mig_stream *in,
		    uint32_t version, bool final)
{
	struct dma_dev *d = priv;
	struct dma_dev n = { .buf = d->buf };
	uint32_t regs_len, active;
	int err;

	if (version != DMA_MIG_VERSION)
		return -EINVAL;
	err = vus_mig_stream__get_u32(in, &regs_len);
	if (!err && regs_len != DMA_REG_END)
		err = -EINVAL;
	if (!err)
		err = vus_mig_stream__get(in, n.regs, DMA_REG_END);
	if (!final) {		/* a pre-copy snapshot: checked, dropped */
		if (!err && (reg32(&n, DMA_REG_MAGIC) != DMA_MAGIC ||
			     reg32(&n, DMA_REG_VERSION) != 1))
			err = -EINVAL;
		return err;
	}
	if (!err)
		err = vus_mig_stream__get_u32(in, &active);
	if (!err)
		err = vus_mig_stream__get_u32(in, &n.mode);
	if (!err)
		err = vus_mig_stream__get_u64(in, &n.src);
	if (!err)
		err = vus_mig_stream__get_u64(in, &n.dst);
	if (!err)
		err = vus_mig_stream__get_u64(in, &n.len);
	if (!err)
		err = vus_mig_stream__get_u64(in, &n.msgs);
	if (err)
		return err;
	n.active = active;
	if (reg32(&n, DMA_REG_MAGIC) != DMA_MAGIC ||
	    reg32(&n, DMA_REG_VERSION) != 1 ||
	    reg32(&n, DMA_REG_STATUS) > DMA_STATUS_ERROR || active > 1 ||
	    (!active && reg32(&n, DMA_REG_STATUS) == DMA_STATUS_BUSY) ||
	    (active && (reg32(&n, DMA_REG_STATUS) != DMA_STATUS_BUSY ||
			n.mode < DMA_DOORBELL_COPY ||
			n.mode > DMA_DOORBELL_WRITE ||
			reg64(&n, DMA_REG_PROGRESS) > n.len)))
		return -EINVAL;
	*d = n;
	if (sample_verbose)
		sample_log("dma: state loaded%s", n.active ?
			   ", a copy in flight" : "");
	return 0;
}

static int dma_setup(struct vus_dev *dev, const struct sample_opts *o,
		     void *priv)
{
	struct dma_dev *d = priv;
	VUS_OPTS(vus_region_opts, bar0, .size = DMA_BAR0_SIZE,
		 .access = dma_bar0, .priv = d);
	int err;

	d->buf = malloc(DMA_CHUNK);
	if (!d->buf)
		return -ENOMEM;
	dma_reset(d);
	err = vus_dev__add_region(dev, VFIO_PCI_BAR0_REGION_INDEX, &bar0);
	if (err)
		return err;
	err = vus_dev__add_msix(dev, DMA_MSIX_VECTORS, 0, DMA_MSIX_TABLE,
				DMA_MSIX_PBA);
	return err < 0 ? err : 0;
}

struct sample_backend sample_dma_backend = {
	.name = "dma",
	.vendor_id = SAMPLE_VENDOR_ID,
	.device_id = SAMPLE_DMA_DEVICE_ID,
	.setup = dma_setup,
	.reset = dma_reset,
	.mig_version = DMA_MIG_VERSION,
	.save = dma_save,
	.load = dma_load,
	.work = dma_work,
	.priv = &dma_state,
	.priv_size = sizeof(dma_state),
	.help =
"  A DMA engine. BAR0 (4 KiB, 32-bit memory BAR), little endian, 4- or\n"
"  8-byte aligned accesses (64-bit registers also as two 32-bit halves):\n"
"    0x00 u32 RO MAGIC     0x31414d44 ('DMA1')\n"
"    0x04 u32 RO VERSION   1\n"
"    0x08 u64 RW SRC       source IOVA\n"
"    0x10 u64 RW DST       destination IOVA\n"
"    0x18 u64 RW LEN       bytes to copy (at most 64 MiB)\n"
"    0x20 u32 WO DOORBELL  a write copies SRC->DST before the write\n"
"                          completes: one memcpy when the client\n"
"                          mapped both ranges with an fd (shared\n"
"                          memory), else DMA_READ then DMA_WRITE\n"
"                          (split by max_data_xfer_size); the value 2\n"
"                          only reads SRC (data dropped), 3 only\n"
"                          writes DST with SCRATCH's low byte, 4\n"
"                          copies in the background (below)\n"
"    0x24 u32 RO STATUS    0 idle, 1 busy, 2 done, 3 error\n"
"    0x28 u32 RO ERROR     errno of the last copy: 0, EFAULT (not mapped,\n"
"                          or unmapped under the copy), EIO (client\n"
"                          error reply), EINVAL (LEN), ...\n"
"    0x2c u32 RW IRQ_CTRL  bit 0: interrupt on completion (reset: 1);\n"
"                          MSI-X vector 0, else MSI 0, else INTx\n"
"    0x30 u64 RO COUNT     copies completed\n"
"    0x38 u64 RO BYTES     bytes copied\n"
"    0x40 u32 RW SCRATCH   scratch / ping register\n"
"    0x48 u64 RO SHM_BYTES bytes of completed copies that sent no\n"
"                          DMA message (shared memory)\n"
"    0x50 u64 RO RD_MSGS   DMA_READ messages sent\n"
"    0x58 u64 RO WR_MSGS   DMA_WRITE messages sent\n"
"    0x60 u32 RO TWIN_SOCKET 1 while the current client uses the twin\n"
"                          socket (--twin-socket, and the client asked\n"
"                          for it): DMA messages go on it; else 0\n"
"    0x68 u64 RO PROGRESS  bytes of the current (or last) copy done\n"
"    0x70 u32 RW STEP      bytes per step of a background copy (0: 64K)\n"
"    0x74 u32 RW STEPS     steps a background copy may still take,\n"
"                          counted down (reset: 0xffffffff, no limit)\n"
"  DOORBELL 4 copies in the background: STEP bytes at a time between\n"
"  messages while the device runs and STEPS > 0; STATUS is busy until\n"
"  it is done. A doorbell rung while a copy is busy sets ERROR to EBUSY.\n"
"  Migration: stopped or quiesced, the engine pauses between steps (a\n"
"  doorbell rung while quiesced waits as a background copy); registers\n"
"  and the copy in flight travel in the stream, and the destination's\n"
"  engine finishes the copy and interrupts once it runs.\n"
"  COUNT, BYTES, SHM_BYTES, RD_MSGS and WR_MSGS are zeroed by a device\n"
"  reset. --verbose logs each copy with its path (via shared memory /\n"
"  via DMA messages). With --strict-dma-reply a client command in place\n"
"  of a DMA reply drops the client and the copy fails with EPROTO.\n"
"  MSI-X: 4 vectors, table at BAR0+0x800, PBA at BAR0+0xc00. INTx: pin A.\n",
};
