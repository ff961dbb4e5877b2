// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libvfio-user-server: device regions (layer 3). Their description,
 * library-backed memory, and the access path a REGION_READ/WRITE takes:
 * PCI config space and MSI-X table (pci.c), the device's callback, or the
 * region's memory; writes to the last two are refused while the device is
 * stopped for migration. Calls pci.c and util.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include "vus-internal.h"

/* Unmap and close what the library allocated for @r, leave it absent. */
void vus_region_free(struct vus_region *r)
{
	if (r->mem)
		munmap(r->mem, r->size);
	if (r->memfd >= 0)
		close(r->memfd);
	free(r->sparse);
	memset(r, 0, sizeof(*r));
	r->memfd = -1;
}

static bool is_pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

int vus_dev__add_region(struct vus_dev *dev, unsigned int index,
			const struct vus_region_opts *uopts)
{
	struct vus_region_opts o;
	struct vus_region r = { .memfd = -1 };
	unsigned int i;
	int err;

	if (!dev || !uopts || index >= VUS_MAX_REGIONS)
		return vus_err(-EINVAL);
	err = VUS_OPTS_COPY(&o, uopts, vus_region_opts);
	if (err)
		return vus_err(err);
	if (!o.size || o.nr_sparse > VUS_MAX_SPARSE || (o.nr_sparse && !o.sparse))
		return vus_err(-EINVAL);
	if (!o.flags)
		o.flags = VUS_REGION_READ | VUS_REGION_WRITE;
	if (o.flags & ~(VUS_REGION_READ | VUS_REGION_WRITE | VUS_REGION_MMAP |
			VUS_REGION_BAR_IO | VUS_REGION_BAR_MEM64 |
			VUS_REGION_BAR_PREFETCH))
		return vus_err(-EINVAL);
	if ((o.flags & VUS_REGION_MMAP) && o.access)
		return vus_err(-EINVAL);
	if (o.nr_sparse && !(o.flags & VUS_REGION_MMAP))
		return vus_err(-EINVAL);
	for (i = 0; i < o.nr_sparse; i++)
		if (!vus_range_ok(o.sparse[i].offset, o.sparse[i].size, o.size))
			return vus_err(-EINVAL);

	if (dev->pci.enabled) {
		if (index == VFIO_PCI_CONFIG_REGION_INDEX)
			return vus_err(-EBUSY);
		if (index <= VFIO_PCI_BAR5_REGION_INDEX) {
			bool io = o.flags & VUS_REGION_BAR_IO;

			if (!is_pow2(o.size) || o.size < (io ? 4 : 16))
				return vus_err(-EINVAL);
			if (io && (o.flags & (VUS_REGION_BAR_MEM64 |
					      VUS_REGION_BAR_PREFETCH)))
				return vus_err(-EINVAL);
			if (io && o.size > 256)
				return vus_err(-EINVAL);
			if (!io && !(o.flags & VUS_REGION_BAR_MEM64) &&
			    o.size > (1ULL << 31))
				return vus_err(-EINVAL);
			if ((o.flags & VUS_REGION_BAR_MEM64) &&
			    index == VFIO_PCI_BAR5_REGION_INDEX)
				return vus_err(-EINVAL);
			if (index > 0 && dev->regions[index - 1].present &&
			    (dev->regions[index - 1].flags & VUS_REGION_BAR_MEM64))
				return vus_err(-EBUSY);
		}
	}

	r.present = true;
	r.size = o.size;
	r.flags = o.flags;
	r.access = o.access;
	r.priv = o.priv;
	r.type = o.type;
	r.subtype = o.subtype;
	if (o.nr_sparse) {
		r.sparse = calloc(o.nr_sparse, sizeof(*r.sparse));
		if (!r.sparse)
			return vus_err(-ENOMEM);
		memcpy(r.sparse, o.sparse, o.nr_sparse * sizeof(*r.sparse));
		r.nr_sparse = o.nr_sparse;
	}
	if (!o.access) {
		r.memfd = memfd_create("vus-region", MFD_CLOEXEC);
		if (r.memfd < 0)
			goto err_errno;
		if (ftruncate(r.memfd, o.size))
			goto err_errno;
		r.mem = mmap(NULL, o.size, PROT_READ | PROT_WRITE, MAP_SHARED,
			     r.memfd, 0);
		if (r.mem == MAP_FAILED) {
			r.mem = NULL;
			goto err_errno;
		}
	}

	if (dev->regions[index].present)
		vus_region_free(&dev->regions[index]);
	dev->regions[index] = r;
	if (index + 1 > dev->nr_regions)
		dev->nr_regions = index + 1;
	if (dev->pci.enabled && index <= VFIO_PCI_BAR5_REGION_INDEX)
		vus_pci_bar_added(dev, index);
	return 0;

err_errno:
	err = -errno;
	vus_region_free(&r);
	return vus_err(err);
}

void *vus_dev__region_mem(struct vus_dev *dev, unsigned int index)
{
	if (!dev || index >= VUS_MAX_REGIONS || !dev->regions[index].present ||
	    !dev->regions[index].mem)
		return vus_err_ptr(-ENOENT);
	return dev->regions[index].mem;
}

/*
 * Serve one client access to region @index; the caller checked the index,
 * the rights and that [@off, @off + @count) lies in the region.
 */
int vus_region_access(struct vus_dev *dev, unsigned int index, uint64_t off,
		      void *buf, size_t count, bool is_write)
{
	struct vus_region *reg = &dev->regions[index];

	if (dev->pci.enabled && index == VFIO_PCI_CONFIG_REGION_INDEX)
		return vus_pci_config_access(dev, off, buf, count, is_write);
	if (vus_pci_msix_access(dev, index, off, buf, count, is_write))
		return 0;
	/* a device stopped for migration keeps its state (VFIO STOP) */
	if (is_write && vus_dev_stopped(dev))
		return -EBUSY;
	if (reg->access)
		return reg->access(dev, reg->priv, off, buf, count, is_write);
	if (is_write)
		memcpy((uint8_t *)reg->mem + off, buf, count);
	else
		memcpy(buf, (uint8_t *)reg->mem + off, count);
	return 0;
}
