// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libvfio-user-server: PCI type-0 config header, BAR sizing, capability
 * list, MSI-X capability with table and PBA in a BAR (layer 2). Calls
 * irq.c and util.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <linux/pci_regs.h>

#include "vus-internal.h"

#define VUS_CAP_START	0x40
#define VUS_CAP_MAX	64

/* Set bytes in the live copy and in the after-reset copy. */
static void cfg_set(struct vus_pci *pci, unsigned int off, const void *v,
		    size_t len)
{
	memcpy(pci->cfg + off, v, len);
	memcpy(pci->reset_cfg + off, v, len);
}

static void cfg_set8(struct vus_pci *pci, unsigned int off, uint8_t v)
{
	cfg_set(pci, off, &v, 1);
}

static void cfg_set16(struct vus_pci *pci, unsigned int off, uint16_t v)
{
	uint16_t le = htole16(v);

	cfg_set(pci, off, &le, 2);
}

static void cfg_set32(struct vus_pci *pci, unsigned int off, uint32_t v)
{
	uint32_t le = htole32(v);

	cfg_set(pci, off, &le, 4);
}

static uint16_t cfg_get16(const struct vus_pci *pci, unsigned int off)
{
	uint16_t le;

	memcpy(&le, pci->cfg + off, 2);
	return le16toh(le);
}

static void wmask_set32(struct vus_pci *pci, unsigned int off, uint32_t v)
{
	uint32_t le = htole32(v);

	memcpy(pci->wmask + off, &le, 4);
}

int vus_dev__setup_pci(struct vus_dev *dev, const struct vus_pci_opts *uopts)
{
	struct vus_pci_opts o;
	struct vus_pci *pci;
	struct vus_region *cfgr;
	unsigned int i;
	int err;

	if (!dev || !uopts)
		return vus_err(-EINVAL);
	err = VUS_OPTS_COPY(&o, uopts, vus_pci_opts);
	if (err)
		return vus_err(err);
	if (o.class_code > 0xffffff || o.irq_pin > 4)
		return vus_err(-EINVAL);
	cfgr = &dev->regions[VFIO_PCI_CONFIG_REGION_INDEX];
	if (cfgr->present && !dev->pci.enabled)
		return vus_err(-EBUSY);

	pci = &dev->pci;
	free(pci->msix_table);
	memset(pci, 0, sizeof(*pci));
	pci->enabled = true;
	pci->cap_next = VUS_CAP_START;
	cfg_set16(pci, PCI_VENDOR_ID, o.vendor_id);
	cfg_set16(pci, PCI_DEVICE_ID, o.device_id);
	cfg_set8(pci, PCI_REVISION_ID, o.revision);
	cfg_set8(pci, PCI_CLASS_PROG, o.class_code & 0xff);
	cfg_set16(pci, PCI_CLASS_DEVICE, o.class_code >> 8);
	cfg_set8(pci, PCI_HEADER_TYPE, PCI_HEADER_TYPE_NORMAL);
	cfg_set16(pci, PCI_SUBSYSTEM_VENDOR_ID, o.subsys_vendor_id);
	cfg_set16(pci, PCI_SUBSYSTEM_ID, o.subsys_id);
	cfg_set8(pci, PCI_INTERRUPT_PIN, o.irq_pin);

	/* writable: command bits a function implements, and scratch bytes */
	pci->wmask[PCI_COMMAND] = PCI_COMMAND_IO | PCI_COMMAND_MEMORY |
				  PCI_COMMAND_MASTER | PCI_COMMAND_PARITY;
	pci->wmask[PCI_COMMAND + 1] = (PCI_COMMAND_SERR |
				       PCI_COMMAND_INTX_DISABLE) >> 8;
	pci->wmask[PCI_CACHE_LINE_SIZE] = 0xff;
	pci->wmask[PCI_LATENCY_TIMER] = 0xff;
	pci->wmask[PCI_INTERRUPT_LINE] = 0xff;

	cfgr->present = true;
	cfgr->size = VUS_PCI_CFG_SIZE;
	cfgr->flags = VUS_REGION_READ | VUS_REGION_WRITE;
	cfgr->memfd = -1;
	if (dev->nr_regions < VFIO_PCI_NUM_REGIONS)
		dev->nr_regions = VFIO_PCI_NUM_REGIONS;
	if (o.irq_pin) {
		err = vus_dev__set_irq_count(dev, VFIO_PCI_INTX_IRQ_INDEX, 1);
		if (err)
			return err;
	}
	for (i = 0; i <= VFIO_PCI_BAR5_REGION_INDEX; i++)
		if (dev->regions[i].present)
			vus_pci_bar_added(dev, i);
	return 0;
}

void vus_pci_bar_added(struct vus_dev *dev, unsigned int index)
{
	struct vus_pci *pci = &dev->pci;
	const struct vus_region *r = &dev->regions[index];
	unsigned int off = PCI_BASE_ADDRESS_0 + 4 * index;
	uint64_t mask = ~(r->size - 1);

	if (r->flags & VUS_REGION_BAR_IO) {
		cfg_set32(pci, off, PCI_BASE_ADDRESS_SPACE_IO);
		wmask_set32(pci, off, (uint32_t)mask & ~3U);
		return;
	}
	cfg_set32(pci, off, ((r->flags & VUS_REGION_BAR_MEM64) ?
			     PCI_BASE_ADDRESS_MEM_TYPE_64 : 0) |
			    ((r->flags & VUS_REGION_BAR_PREFETCH) ?
			     PCI_BASE_ADDRESS_MEM_PREFETCH : 0));
	wmask_set32(pci, off, (uint32_t)mask & ~0xfU);
	if (r->flags & VUS_REGION_BAR_MEM64) {
		cfg_set32(pci, off + 4, 0);
		wmask_set32(pci, off + 4, mask >> 32);
	}
}

int vus_dev__add_pci_cap(struct vus_dev *dev, const void *cap, size_t len)
{
	struct vus_pci *pci;
	unsigned int off;
	uint8_t buf[VUS_CAP_MAX] = { 0 };

	if (!dev || !dev->pci.enabled || !cap || len < 2 || len > VUS_CAP_MAX)
		return vus_err(-EINVAL);
	pci = &dev->pci;
	off = pci->cap_next;
	len = (len + 3) & ~(size_t)3;
	if (off + len > VUS_PCI_CFG_SIZE)
		return vus_err(-ENOSPC);
	memcpy(buf, cap, len);
	buf[PCI_CAP_LIST_NEXT] = 0;
	cfg_set(pci, off, buf, len);
	if (pci->last_cap)
		cfg_set8(pci, pci->last_cap + PCI_CAP_LIST_NEXT, off);
	else
		cfg_set8(pci, PCI_CAPABILITY_LIST, off);
	cfg_set16(pci, PCI_STATUS, cfg_get16(pci, PCI_STATUS) |
		  PCI_STATUS_CAP_LIST);
	pci->last_cap = off;
	pci->cap_next = off + len;
	return off;
}

int vus_dev__add_msix(struct vus_dev *dev, unsigned int nr_vectors,
		      unsigned int bar, uint32_t table_offset,
		      uint32_t pba_offset)
{
	uint8_t cap[12] = { PCI_CAP_ID_MSIX };
	struct vus_pci *pci;
	const struct vus_region *r;
	uint64_t tsz, psz;
	uint32_t v;
	uint8_t *table;
	unsigned int i;
	int off, err;

	if (!dev || !dev->pci.enabled || !nr_vectors ||
	    nr_vectors > VUS_MAX_IRQ_VECTORS || bar > VFIO_PCI_BAR5_REGION_INDEX)
		return vus_err(-EINVAL);
	pci = &dev->pci;
	r = &dev->regions[bar];
	tsz = (uint64_t)nr_vectors * PCI_MSIX_ENTRY_SIZE;
	psz = (nr_vectors + 63) / 64 * 8;
	if (pci->msix_nr || !r->present || (r->flags & VUS_REGION_BAR_IO) ||
	    (table_offset & 7) || (pba_offset & 7) ||
	    !vus_range_ok(table_offset, tsz, r->size) ||
	    !vus_range_ok(pba_offset, psz, r->size) ||
	    (table_offset < pba_offset + psz && pba_offset < table_offset + tsz))
		return vus_err(-EINVAL);

	table = calloc(1, tsz);
	if (!table)
		return vus_err(-ENOMEM);
	for (i = 0; i < nr_vectors; i++)	/* vectors start masked */
		table[i * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL] =
			PCI_MSIX_ENTRY_CTRL_MASKBIT;
	v = htole16(nr_vectors - 1);
	memcpy(cap + PCI_MSIX_FLAGS, &v, 2);
	v = htole32(table_offset | bar);
	memcpy(cap + PCI_MSIX_TABLE, &v, 4);
	v = htole32(pba_offset | bar);
	memcpy(cap + PCI_MSIX_PBA, &v, 4);
	off = vus_dev__add_pci_cap(dev, cap, sizeof(cap));
	if (off < 0) {
		free(table);
		return off;
	}
	err = vus_dev__set_irq_count(dev, VFIO_PCI_MSIX_IRQ_INDEX, nr_vectors);
	if (err) {
		free(table);
		return err;
	}
	/* MSI-X enable and function mask */
	pci->wmask[off + PCI_MSIX_FLAGS + 1] =
		(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL) >> 8;
	pci->msix_cap = off;
	pci->msix_bar = bar;
	pci->msix_table_off = table_offset;
	pci->msix_pba_off = pba_offset;
	pci->msix_nr = nr_vectors;
	pci->msix_table = table;
	return off;
}

uint8_t *vus_dev__config(struct vus_dev *dev)
{
	if (!dev || !dev->pci.enabled)
		return vus_err_ptr(-ENOENT);
	return dev->pci.cfg;
}

int vus_pci_config_access(struct vus_dev *dev, uint64_t off, void *buf,
			  size_t count, bool is_write)
{
	struct vus_pci *pci = &dev->pci;
	uint8_t *p = buf;
	size_t i;

	/* the caller checked off + count <= VUS_PCI_CFG_SIZE */
	if (!is_write) {
		memcpy(buf, pci->cfg + off, count);
		return 0;
	}
	for (i = 0; i < count; i++) {
		uint8_t m = pci->wmask[off + i];

		pci->cfg[off + i] = (pci->cfg[off + i] & ~m) | (p[i] & m);
	}
	if (dev->ops.config_write)
		dev->ops.config_write(dev, dev->priv, off, buf, count);
	return 0;
}

/* Copy the overlap of an access [off, off+count) with [base, base+len). */
static void overlap(uint64_t off, uint8_t *buf, size_t count, uint64_t base,
		    uint8_t *mem, uint64_t len, bool is_write)
{
	uint64_t s = VUS_MAX(off, base), e = VUS_MIN(off + count, base + len);

	if (s >= e)
		return;
	if (!mem) {			/* PBA: reads zero, writes ignored */
		if (!is_write)
			memset(buf + (s - off), 0, e - s);
		return;
	}
	if (is_write)
		memcpy(mem + (s - base), buf + (s - off), e - s);
	else
		memcpy(buf + (s - off), mem + (s - base), e - s);
}

bool vus_pci_msix_access(struct vus_dev *dev, unsigned int index, uint64_t off,
			 void *buf, size_t count, bool is_write)
{
	struct vus_pci *pci = &dev->pci;
	uint64_t tsz, psz;

	if (!pci->enabled || !pci->msix_nr || index != pci->msix_bar)
		return false;
	tsz = (uint64_t)pci->msix_nr * PCI_MSIX_ENTRY_SIZE;
	psz = (pci->msix_nr + 63) / 64 * 8;
	if (!(off < pci->msix_table_off + tsz && pci->msix_table_off < off + count) &&
	    !(off < pci->msix_pba_off + psz && pci->msix_pba_off < off + count))
		return false;
	if (!is_write)
		memset(buf, 0, count);
	overlap(off, buf, count, pci->msix_table_off, pci->msix_table, tsz,
		is_write);
	overlap(off, buf, count, pci->msix_pba_off, NULL, psz, is_write);
	return true;
}

void vus_pci_reset(struct vus_dev *dev)
{
	struct vus_pci *pci = &dev->pci;
	unsigned int i;

	if (!pci->enabled)
		return;
	memcpy(pci->cfg, pci->reset_cfg, sizeof(pci->cfg));
	for (i = 0; i < pci->msix_nr; i++) {
		uint8_t *e = pci->msix_table + i * PCI_MSIX_ENTRY_SIZE;

		memset(e, 0, PCI_MSIX_ENTRY_SIZE);
		e[PCI_MSIX_ENTRY_VECTOR_CTRL] = PCI_MSIX_ENTRY_CTRL_MASKBIT;
	}
}

void vus_pci_free(struct vus_dev *dev)
{
	free(dev->pci.msix_table);
	dev->pci.msix_table = NULL;
}
