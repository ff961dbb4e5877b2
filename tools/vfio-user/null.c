// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio-user-sample --device null: registers only, for tests and benchmarks.
 * A scratch and a ping register, a register whose accesses take a
 * configurable time, an interrupt-raising register, a large BAR and a
 * (optionally mmap-able) sparse BAR, whose memory BAR0 shows as the server
 * sees it (BAR4_OFFSET, BAR4_DATA). Migration carries the registers and
 * the memory of BAR2 and BAR4 (what a client wrote of them, sparse).
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <string.h>
#include <time.h>

#include "sample.h"

#define NULL_BAR0_SIZE		4096
#define NULL_MSIX_VECTORS	4
#define NULL_MSIX_TABLE		0x800
#define NULL_MSIX_PBA		0xc00

struct null_dev {
	uint8_t regs[NULL_REG_END];
};

static struct null_dev null_state;

static uint32_t get32(struct null_dev *n, unsigned int off)
{
	uint32_t v;

	memcpy(&v, n->regs + off, 4);
	return le32toh(v);
}

static void set32(struct null_dev *n, unsigned int off, uint32_t v)
{
	v = htole32(v);
	memcpy(n->regs + off, &v, 4);
}

static void null_reset(void *priv)
{
	struct null_dev *n = priv;

	memset(n->regs, 0, sizeof(n->regs));
	set32(n, NULL_REG_MAGIC, NULL_MAGIC);
	set32(n, NULL_REG_VERSION, 1);
}

static void delay_us(uint32_t us)
{
	struct timespec ts = {
		.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000L,
	};

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/*
 * BAR4_DATA: @count bytes at byte @k of the 8-byte window at BAR4_OFFSET,
 * straight from BAR4's memory (the memfd a client may have mmapped).
 * BAR4_OFFSET is 8-byte aligned and at most NULL_BAR4_SIZE - 8, and
 * @k + @count <= 8: the access stays inside the region.
 */
static void null_bar4_data(struct vus_dev *dev, struct null_dev *n,
			   unsigned int k, void *buf, size_t count,
			   bool is_write)
{
	uint8_t *mem = vus_dev__region_mem(dev, VFIO_PCI_BAR4_REGION_INDEX);
	uint64_t off;

	if (!mem) {
		if (!is_write)
			memset(buf, 0xff, count);
		return;
	}
	memcpy(&off, n->regs + NULL_REG_BAR4_OFFSET, 8);
	off = le64toh(off) + k;
	if (is_write)
		memcpy(mem + off, buf, count);
	else
		memcpy(buf, mem + off, count);
}

static int null_bar0(struct vus_dev *dev, void *priv, uint64_t off,
		     void *buf, size_t count, bool is_write)
{
	struct null_dev *n = priv;
	uint64_t acc;
	uint32_t v;

	/* stopped for migration, a read must change nothing (VFIO STOP) */
	if (!vus_dev__stopped(dev)) {
		memcpy(&acc, n->regs + NULL_REG_ACCESSES, 8);
		acc = htole64(le64toh(acc) + 1);
		memcpy(n->regs + NULL_REG_ACCESSES, &acc, 8);
	}

	if ((count != 4 && count != 8) || (off & (count - 1)) ||
	    off + count > NULL_REG_END) {
		if (!is_write)
			memset(buf, 0xff, count);
		return 0;
	}
	if (off == NULL_REG_SLOW)
		delay_us(get32(n, NULL_REG_LATENCY_US));
	if (off >= NULL_REG_BAR4_DATA) {
		null_bar4_data(dev, n, off - NULL_REG_BAR4_DATA, buf, count,
			       is_write);
		return 0;
	}
	if (!is_write) {
		memcpy(buf, n->regs + off, count);
		if (off == NULL_REG_PING && count == 4) {
			v = htole32(get32(n, NULL_REG_PING) + 1);
			memcpy(buf, &v, 4);
		}
		return 0;
	}
	if (off == NULL_REG_IRQ && count == 4) {
		int err;

		memcpy(&v, buf, 4);
		err = sample_raise_irq(dev, le32toh(v));
		if (sample_verbose)
			sample_log("null: interrupt %u: %s", le32toh(v),
				   err < 0 ? strerror(-err) :
				   err ? "masked, pending" : "raised");
		return 0;
	}
	if (off >= NULL_REG_SCRATCH && off + count <= NULL_REG_IRQ)
		memcpy(n->regs + off, buf, count);
	if (off >= NULL_REG_BAR4_OFFSET && off + count <= NULL_REG_BAR4_DATA) {
		uint64_t o;

		memcpy(n->regs + off, buf, count);
		memcpy(&o, n->regs + NULL_REG_BAR4_OFFSET, 8);
		o = htole64(le64toh(o) & (NULL_BAR4_SIZE - 8));
		memcpy(n->regs + NULL_REG_BAR4_OFFSET, &o, 8);
	}
	return 0;
}

/*
 * Migration stream, version 1: u32 register bytes (NULL_REG_END), the
 * registers, then BAR4's and BAR2's memory as the library encodes a
 * region (sparse). The destination must have been started with the same
 * --bar-size; the load checks every field before it takes any.
 *
 * With --pre-copy the library asks first for a pre-copy frame (@final
 * false) while the device runs: BAR4's and BAR2's memory only, the bulk
 * of the state, which the destination takes at once. The final frame
 * (STOP_COPY) carries everything again, BAR writes made since included.
 */
#define NULL_MIG_VERSION	1

static int null_save(struct vus_dev *dev, void *priv,
		     struct vus_mig_stream *out, bool final)
{
	struct null_dev *n = priv;
	int err;

	if (!final) {
		err = vus_mig_stream__put_region(out, VFIO_PCI_BAR4_REGION_INDEX);
		if (!err)
			err = vus_mig_stream__put_region(out,
							 VFIO_PCI_BAR2_REGION_INDEX);
		return err;
	}
	err = vus_mig_stream__put_u32(out, NULL_REG_END);
	if (!err)
		err = vus_mig_stream__put(out, n->regs, NULL_REG_END);
	if (!err)
		err = vus_mig_stream__put_region(out, VFIO_PCI_BAR4_REGION_INDEX);
	if (!err)
		err = vus_mig_stream__put_region(out, VFIO_PCI_BAR2_REGION_INDEX);
	return err;
}

static int null_load(struct vus_dev *dev, void *priv,
		     struct vus_mig_stream *in, uint32_t version, bool final)
{
	struct null_dev *n = priv, t;
	uint32_t regs_len;
	uint64_t off;
	int err;

	if (version != NULL_MIG_VERSION)
		return -EINVAL;
	if (!final) {		/* a pre-copy frame: the BARs' memory */
		err = vus_mig_stream__get_region(in, VFIO_PCI_BAR4_REGION_INDEX);
		if (!err)
			err = vus_mig_stream__get_region(in,
							 VFIO_PCI_BAR2_REGION_INDEX);
		return err;
	}
	err = vus_mig_stream__get_u32(in, &regs_len);
	if (!err && regs_len != NULL_REG_END)
		err = -EINVAL;
	if (!err)
		err = vus_mig_stream__get(in, t.regs, NULL_REG_END);
	if (err)
		return err;
	memcpy(&off, t.regs + NULL_REG_BAR4_OFFSET, 8);
	if (get32(&t, NULL_REG_MAGIC) != NULL_MAGIC ||
	    get32(&t, NULL_REG_VERSION) != 1 ||
	    (le64toh(off) & ~(uint64_t)(NULL_BAR4_SIZE - 8)))
		return -EINVAL;
	/* each region record is checked whole before the region changes */
	err = vus_mig_stream__get_region(in, VFIO_PCI_BAR4_REGION_INDEX);
	if (!err)
		err = vus_mig_stream__get_region(in, VFIO_PCI_BAR2_REGION_INDEX);
	if (err)
		return err;
	*n = t;
	return 0;
}

static const struct vus_sparse_area null_sparse[] = {
	{ .offset = 0, .size = 16 * 1024 },
	{ .offset = 32 * 1024, .size = 16 * 1024 },
};

static int null_setup(struct vus_dev *dev, const struct sample_opts *o,
		      void *priv)
{
	struct null_dev *n = priv;
	VUS_OPTS(vus_region_opts, bar0, .size = NULL_BAR0_SIZE,
		 .access = null_bar0, .priv = n);
	VUS_OPTS(vus_region_opts, bar2, .size = o->bar_size,
		 .flags = VUS_REGION_READ | VUS_REGION_WRITE |
			  VUS_REGION_BAR_MEM64 | VUS_REGION_BAR_PREFETCH);
	VUS_OPTS(vus_region_opts, bar4, .size = NULL_BAR4_SIZE,
		 .flags = VUS_REGION_READ | VUS_REGION_WRITE |
			  (o->mmap ? VUS_REGION_MMAP : 0),
		 .sparse = o->mmap ? null_sparse : NULL,
		 .nr_sparse = o->mmap ? 2 : 0);
	int err;

	null_reset(n);
	err = vus_dev__add_region(dev, VFIO_PCI_BAR0_REGION_INDEX, &bar0);
	if (!err)
		err = vus_dev__add_region(dev, VFIO_PCI_BAR2_REGION_INDEX, &bar2);
	if (!err)
		err = vus_dev__add_region(dev, VFIO_PCI_BAR4_REGION_INDEX, &bar4);
	if (err)
		return err;
	err = vus_dev__add_msix(dev, NULL_MSIX_VECTORS, 0, NULL_MSIX_TABLE,
				NULL_MSIX_PBA);
	return err < 0 ? err : 0;
}

struct sample_backend sample_null_backend = {
	.name = "null",
	.vendor_id = SAMPLE_VENDOR_ID,
	.device_id = SAMPLE_NULL_DEVICE_ID,
	.setup = null_setup,
	.reset = null_reset,
	.mig_version = NULL_MIG_VERSION,
	.save = null_save,
	.load = null_load,
	.priv = &null_state,
	.priv_size = sizeof(null_state),
	.help =
"  Registers only. BAR0 (4 KiB), little endian, 4- or 8-byte aligned:\n"
"    0x00 u32 RO MAGIC      0x314c554e ('NUL1')\n"
"    0x04 u32 RO VERSION    1\n"
"    0x08 u64 RW SCRATCH\n"
"    0x10 u32 RW PING       a 4-byte read returns the last value written + 1\n"
"    0x14 u32 RW LATENCY_US every access to SLOW takes this long\n"
"    0x18 u32 RW SLOW       scratch register answered after LATENCY_US\n"
"    0x1c u32 WO IRQ        raise MSI-X vector <value> (else MSI/INTx)\n"
"    0x20 u64 RO ACCESSES   BAR0 accesses so far (not counted while stopped\n"
"                           for migration)\n"
"    0x28 u64 RW BAR4_OFFSET offset in BAR4 (masked to 8-byte aligned, < 64K)\n"
"    0x30 u64 RW BAR4_DATA  the 8 bytes of BAR4's memory at BAR4_OFFSET, as\n"
"                           the server reads and writes them\n"
"  BAR2: large 64-bit prefetchable memory BAR (--bar-size, default 256 MiB,\n"
"  sparse memory). BAR4: 64 KiB memory; with --mmap it is mmap-able with\n"
"  a sparse-mmap capability: [0, 16K) and [32K, 48K).\n"
"  MSI-X: 4 vectors, table at BAR0+0x800, PBA at BAR0+0xc00. INTx: pin A.\n"
"  Migration: the registers and what was written of BAR2 and BAR4 (start\n"
"  the destination with the same --bar-size).\n",
};
