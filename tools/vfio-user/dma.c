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
 * Registers: sample.h.
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

struct dma_dev {
	uint8_t regs[DMA_REG_END];
	uint8_t *buf;
};

static struct dma_dev dma_state;

static uint64_t reg64(struct dma_dev *d, unsigned int off)
{
	uint64_t v;

	memcpy(&v, d->regs + off, 8);
	return le64toh(v);
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

static void dma_doorbell(struct vus_dev *dev, struct dma_dev *d, uint32_t mode)
{
	uint64_t src = reg64(d, DMA_REG_SRC), dst = reg64(d, DMA_REG_DST);
	uint64_t len = reg64(d, DMA_REG_LEN);
	uint64_t reads0, writes0, reads, writes, msgs;
	int err;

	set32(d, DMA_REG_STATUS, DMA_STATUS_BUSY);
	dma_msgs(dev, &reads0, &writes0);
	err = dma_copy(dev, d, mode, src, dst, len);
	dma_msgs(dev, &reads, &writes);
	reads -= reads0;
	writes -= writes0;
	msgs = reads + writes;
	set64(d, DMA_REG_RD_MSGS, reg64(d, DMA_REG_RD_MSGS) + reads);
	set64(d, DMA_REG_WR_MSGS, reg64(d, DMA_REG_WR_MSGS) + writes);
	if (err) {
		set32(d, DMA_REG_STATUS, DMA_STATUS_ERROR);
		set32(d, DMA_REG_ERROR, -err);
	} else {
		set32(d, DMA_REG_STATUS, DMA_STATUS_DONE);
		set32(d, DMA_REG_ERROR, 0);
		set64(d, DMA_REG_COUNT, reg64(d, DMA_REG_COUNT) + 1);
		set64(d, DMA_REG_BYTES, reg64(d, DMA_REG_BYTES) + len);
		if (!msgs)
			set64(d, DMA_REG_SHM_BYTES,
			      reg64(d, DMA_REG_SHM_BYTES) + len);
	}
	if (sample_verbose)
		sample_log("dma: copy %#llx -> %#llx, %llu bytes via %s: %s",
			   (unsigned long long)src, (unsigned long long)dst,
			   (unsigned long long)len,
			   msgs ? "DMA messages" : "shared memory",
			   err ? strerror(-err) : "ok");
	if (reg64(d, DMA_REG_IRQ_CTRL) & DMA_IRQ_CTRL_ENABLE) {
		err = sample_raise_irq(dev, 0);
		if (sample_verbose)
			sample_log("dma: interrupt: %s",
				   err < 0 ? strerror(-err) :
				   err ? "masked, pending" : "raised");
	}
}

static bool writable(unsigned int off)
{
	return (off >= DMA_REG_SRC && off < DMA_REG_DOORBELL) ||
	       (off >= DMA_REG_IRQ_CTRL && off < DMA_REG_COUNT) ||
	       (off >= DMA_REG_SCRATCH && off < DMA_REG_SCRATCH + 4);
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
	.priv = &dma_state,
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
"                          writes DST with SCRATCH's low byte\n"
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
"  COUNT, BYTES, SHM_BYTES, RD_MSGS and WR_MSGS are zeroed by a device\n"
"  reset. --verbose logs each copy with its path (via shared memory /\n"
"  via DMA messages). With --strict-dma-reply a client command in place\n"
"  of a DMA reply drops the client and the copy fails with EPROTO.\n"
"  MSI-X: 4 vectors, table at BAR0+0x800, PBA at BAR0+0xc00. INTx: pin A.\n",
};
