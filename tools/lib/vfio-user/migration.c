// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libvfio-user-server: live migration (layer 4). The VFIO migration state
 * machine behind DEVICE_FEATURE MIG_DEVICE_STATE, walked one arc at a
 * time through the device's transition callback; the stream of a saving
 * session (frames the device's save callback fills, served by
 * MIG_DATA_READ) and of a resuming session (MIG_DATA_WRITE, checked whole
 * and handed to the load callback at RESUMING -> STOP); the stream API
 * the callbacks use. The frame format is documented in
 * vfio-user-server.h. Every length from the client is checked before
 * use; a stream is checked whole before anything of it is applied.
 * Calls irq.c and util.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/pci_regs.h>

#include "vus-internal.h"

#define VUS_MIG_HDR_SIZE	32
#define VUS_MIG_PAGE		4096
#define VUS_MIG_DEF_MAX_STREAM	(1ULL << 30)
#define VUS_MIG_NR_STATES	8

_Static_assert(sizeof(struct vus_mig_hdr) == VUS_MIG_HDR_SIZE, "mig hdr");
_Static_assert(sizeof(struct vfio_user_device_feature) == 8, "feature");
_Static_assert(sizeof(struct vfio_user_device_feature_migration) == 8,
	       "feature migration");
_Static_assert(sizeof(struct vfio_user_device_feature_mig_state) == 8,
	       "feature mig_state");
_Static_assert(sizeof(struct vfio_user_device_feature_mig_data_size) == 8,
	       "feature mig_data_size");
_Static_assert(sizeof(struct vfio_user_mig_data) == 8, "mig data");
#define VUS_MIG_SAME(s)	((int)VUS_MIG_##s == (int)VFIO_USER_DEVICE_STATE_##s)
_Static_assert(VUS_MIG_SAME(ERROR) && VUS_MIG_SAME(STOP) &&
	       VUS_MIG_SAME(RUNNING) && VUS_MIG_SAME(STOP_COPY) &&
	       VUS_MIG_SAME(RESUMING) && VUS_MIG_SAME(RUNNING_P2P) &&
	       VUS_MIG_SAME(PRE_COPY) && VUS_MIG_SAME(PRE_COPY_P2P),
	       "state numbers");

/*
 * struct vus_mig_stream - a save (writer), measure (counter) or load
 * (reader) stream over one frame's device section. Lives on the library's
 * stack for the duration of one callback.
 */
struct vus_mig_stream {
	struct vus_dev *dev;
	bool load;
	bool measure;
	struct vus_mig_buf *buf;	/* save: appended to */
	uint64_t count;			/* measure: bytes put */
	const uint8_t *data;		/* load: the section ... */
	size_t len;			/* ... its length ... */
	size_t pos;			/* ... and what was taken */
};

/* Region record of vus_mig_stream__put_region(), little endian */
struct vus_mig_region_rec {
	uint32_t index;
	uint32_t flags;
	uint64_t size;
	uint64_t nr_extents;
};

struct vus_mig_extent {
	uint64_t offset;
	uint64_t len;
};

_Static_assert(sizeof(struct vus_mig_region_rec) == 24, "region rec");
_Static_assert(sizeof(struct vus_mig_extent) == 16, "extent");

static const char *const vus_mig_names[VUS_MIG_NR_STATES] = {
	[VUS_MIG_ERROR] = "ERROR",
	[VUS_MIG_STOP] = "STOP",
	[VUS_MIG_RUNNING] = "RUNNING",
	[VUS_MIG_STOP_COPY] = "STOP_COPY",
	[VUS_MIG_RESUMING] = "RESUMING",
	[VUS_MIG_RUNNING_P2P] = "RUNNING_P2P",
	[VUS_MIG_PRE_COPY] = "PRE_COPY",
	[VUS_MIG_PRE_COPY_P2P] = "PRE_COPY_P2P",
};

static const char *vus_mig_name(unsigned int s)
{
	return s < VUS_MIG_NR_STATES ? vus_mig_names[s] : "?";
}

/* ---- buffers ------------------------------------------------------------- */

static void vus_mig_buf_free(struct vus_mig_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

static int vus_mig_buf_add(struct vus_mig_buf *b, const void *p, size_t len)
{
	size_t cap;
	uint8_t *n;

	if (len > SIZE_MAX - b->len)
		return -ENOMEM;
	if (b->len + len > b->cap) {
		cap = b->cap ?: 4096;
		while (cap < b->len + len)
			cap = cap > SIZE_MAX / 2 ? b->len + len : cap * 2;
		n = realloc(b->data, cap);
		if (!n)
			return -ENOMEM;
		b->data = n;
		b->cap = cap;
	}
	if (len)
		memcpy(b->data + b->len, p, len);
	b->len += len;
	return 0;
}

/* ---- the stream API ------------------------------------------------------ */

static int vus_mig_put(struct vus_mig_stream *s, const void *p, size_t len)
{
	if (s->measure) {
		s->count += len;
		return 0;
	}
	return vus_mig_buf_add(s->buf, p, len);
}

static uint64_t vus_mig_pos(const struct vus_mig_stream *s)
{
	return s->measure ? s->count : s->buf->len;
}

static bool vus_mig_is_save(const struct vus_mig_stream *s)
{
	return s && !s->load;
}

static bool vus_mig_is_load(const struct vus_mig_stream *s)
{
	return s && s->load;
}

int vus_mig_stream__put(struct vus_mig_stream *s, const void *buf, size_t len)
{
	if (!vus_mig_is_save(s) || (!buf && len))
		return vus_err(-EINVAL);
	return vus_err(vus_mig_put(s, buf, len));
}

int vus_mig_stream__put_u32(struct vus_mig_stream *s, uint32_t v)
{
	v = htole32(v);
	return vus_mig_stream__put(s, &v, sizeof(v));
}

int vus_mig_stream__put_u64(struct vus_mig_stream *s, uint64_t v)
{
	v = htole64(v);
	return vus_mig_stream__put(s, &v, sizeof(v));
}

bool vus_mig_stream__measuring(const struct vus_mig_stream *s)
{
	return vus_mig_is_save(s) && s->measure;
}

int vus_mig_stream__get(struct vus_mig_stream *s, void *buf, size_t len)
{
	if (!vus_mig_is_load(s) || (!buf && len))
		return vus_err(-EINVAL);
	if (len > s->len - s->pos) {
		pr_debug("migration: device section short: %zu bytes wanted, %zu left\n",
			 len, s->len - s->pos);
		return vus_err(-EINVAL);
	}
	if (len)
		memcpy(buf, s->data + s->pos, len);
	s->pos += len;
	return 0;
}

int vus_mig_stream__get_u32(struct vus_mig_stream *s, uint32_t *v)
{
	int err = vus_mig_stream__get(s, v, sizeof(*v));

	if (!err)
		*v = le32toh(*v);
	return err;
}

int vus_mig_stream__get_u64(struct vus_mig_stream *s, uint64_t *v)
{
	int err = vus_mig_stream__get(s, v, sizeof(*v));

	if (!err)
		*v = le64toh(*v);
	return err;
}

size_t vus_mig_stream__remaining(const struct vus_mig_stream *s)
{
	return vus_mig_is_load(s) ? s->len - s->pos : 0;
}

/* ---- regions in the stream ----------------------------------------------- */

static struct vus_region *vus_mig_lib_region(struct vus_dev *dev,
					     unsigned int index)
{
	struct vus_region *r;

	if (index >= VUS_MAX_REGIONS)
		return NULL;
	r = &dev->regions[index];
	return r->present && r->mem ? r : NULL;
}

static bool vus_mig_zero_page(const uint8_t *p, size_t len)
{
	static const uint8_t zero[VUS_MIG_PAGE];

	return !memcmp(p, zero, len);
}

/*
 * The next range at or after @off that may hold data: [*start, *end).
 * Holes of the memfd (never written) are skipped without touching their
 * pages; without SEEK_DATA everything may hold data.
 */
static void vus_mig_data_range(const struct vus_region *r, uint64_t off,
			       uint64_t *start, uint64_t *end)
{
	off_t d, h;

	*start = off;
	*end = r->size;
	if (r->memfd < 0)
		return;
	d = lseek(r->memfd, off, SEEK_DATA);
	if (d < 0) {
		if (errno == ENXIO)	/* only a hole from here on */
			*start = r->size;
		return;
	}
	h = lseek(r->memfd, d, SEEK_HOLE);
	*start = VUS_MIN((uint64_t)d, r->size);
	if (h >= d)
		*end = VUS_MIN((uint64_t)h, r->size);
}

struct vus_mig_put_ctx {
	struct vus_mig_stream *s;
	const struct vus_region *r;
	uint64_t nr;
};

static int vus_mig_put_extent(struct vus_mig_put_ctx *c, uint64_t off,
			      uint64_t len)
{
	struct vus_mig_extent e = {
		.offset = htole64(off), .len = htole64(len),
	};
	int err = vus_mig_put(c->s, &e, sizeof(e));

	if (!err)
		err = vus_mig_put(c->s, (const uint8_t *)c->r->mem + off, len);
	c->nr++;
	return err;
}

/* Put every maximal run of non-zero pages of the region as an extent. */
static int vus_mig_put_extents(struct vus_mig_put_ctx *c)
{
	const struct vus_region *r = c->r;
	const uint8_t *mem = r->mem;
	uint64_t off = 0, start, end, p, run = 0, run_start = 0;
	int err;

	while (off < r->size) {
		vus_mig_data_range(r, off, &start, &end);
		if (start >= r->size)
			break;
		start &= ~(uint64_t)(VUS_MIG_PAGE - 1);
		if (start < off)
			start = off;
		for (p = start; p < end; p += VUS_MIG_PAGE) {
			uint64_t n = VUS_MIN((uint64_t)VUS_MIG_PAGE, r->size - p);

			if (!vus_mig_zero_page(mem + p, n)) {
				if (!run)
					run_start = p;
				run += n;
				continue;
			}
			if (run) {
				err = vus_mig_put_extent(c, run_start, run);
				if (err)
					return err;
				run = 0;
			}
		}
		if (run) {
			err = vus_mig_put_extent(c, run_start, run);
			if (err)
				return err;
			run = 0;
		}
		off = p;	/* page aligned, past @end */
	}
	return 0;
}

int vus_mig_stream__put_region(struct vus_mig_stream *s, unsigned int index)
{
	struct vus_mig_region_rec rec = { 0 };
	struct vus_mig_put_ctx c = { .s = s };
	uint64_t at;
	int err;

	if (!vus_mig_is_save(s))
		return vus_err(-EINVAL);
	c.r = vus_mig_lib_region(s->dev, index);
	if (!c.r)
		return vus_err(-EINVAL);
	rec.index = htole32(index);
	rec.size = htole64(c.r->size);
	at = vus_mig_pos(s);
	err = vus_mig_put(s, &rec, sizeof(rec));
	if (!err)
		err = vus_mig_put_extents(&c);
	if (err)
		return vus_err(err);
	if (!s->measure) {
		uint64_t nr = htole64(c.nr);

		memcpy(s->buf->data + at + offsetof(struct vus_mig_region_rec,
						    nr_extents), &nr, 8);
	}
	return 0;
}

/* Zero [@off, @off + @len) of a region, freeing the pages when it can. */
static void vus_mig_zero_range(struct vus_region *r, uint64_t off, uint64_t len)
{
	if (!len)
		return;
	if (r->memfd >= 0 &&
	    !fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		       off, len))
		return;
	memset((uint8_t *)r->mem + off, 0, len);
}

int vus_mig_stream__get_region(struct vus_mig_stream *s, unsigned int index)
{
	struct vus_mig_region_rec rec;
	struct vus_mig_extent e;
	struct vus_region *r;
	uint64_t nr, i, prev, off, len;
	size_t q;

	if (!vus_mig_is_load(s))
		return vus_err(-EINVAL);
	r = vus_mig_lib_region(s->dev, index);
	if (!r || s->len - s->pos < sizeof(rec))
		goto bad;
	memcpy(&rec, s->data + s->pos, sizeof(rec));
	nr = le64toh(rec.nr_extents);
	if (le32toh(rec.index) != index || rec.flags ||
	    le64toh(rec.size) != r->size)
		goto bad;
	/* every extent checked before the region is touched */
	q = s->pos + sizeof(rec);
	if (nr > (s->len - q) / sizeof(e))
		goto bad;
	for (i = 0, prev = 0; i < nr; i++) {
		if (s->len - q < sizeof(e))
			goto bad;
		memcpy(&e, s->data + q, sizeof(e));
		q += sizeof(e);
		off = le64toh(e.offset);
		len = le64toh(e.len);
		if (!len || off < prev || !vus_range_ok(off, len, r->size) ||
		    len > s->len - q)
			goto bad;
		q += len;
		prev = off + len;
	}
	q = s->pos + sizeof(rec);
	for (i = 0, prev = 0; i < nr; i++) {
		memcpy(&e, s->data + q, sizeof(e));
		q += sizeof(e);
		off = le64toh(e.offset);
		len = le64toh(e.len);
		vus_mig_zero_range(r, prev, off - prev);
		memcpy((uint8_t *)r->mem + off, s->data + q, len);
		q += len;
		prev = off + len;
	}
	vus_mig_zero_range(r, prev, r->size - prev);
	s->pos = q;
	return 0;

bad:
	pr_warn("migration: bad record of region %u in the device section\n",
		index);
	return vus_err(-EINVAL);
}

/* ---- the library's section ----------------------------------------------- */

/*
 * u32 config length (256 for a PCI device, else 0), the config space;
 * u32 MSI-X table length, the table; u32 number of IRQ indexes (16), then
 * per index u32 vector count and a bitmap of pending vectors, one bit per
 * vector, (count + 7) / 8 bytes.
 */
static int vus_mig_put_lib(struct vus_dev *dev, struct vus_mig_stream *s)
{
	uint32_t v, cfg = dev->pci.enabled ? VUS_PCI_CFG_SIZE : 0;
	uint32_t msix = dev->pci.msix_nr * PCI_MSIX_ENTRY_SIZE;
	unsigned int i, j;
	int err;

	v = htole32(cfg);
	err = vus_mig_put(s, &v, 4);
	if (!err)
		err = vus_mig_put(s, dev->pci.cfg, cfg);
	v = htole32(msix);
	if (!err)
		err = vus_mig_put(s, &v, 4);
	if (!err)
		err = vus_mig_put(s, dev->pci.msix_table, msix);
	v = htole32(VUS_MAX_IRQ_INDEXES);
	if (!err)
		err = vus_mig_put(s, &v, 4);
	for (i = 0; i < VUS_MAX_IRQ_INDEXES && !err; i++) {
		const struct vus_irq *irq = &dev->irqs[i];

		v = htole32(irq->count);
		err = vus_mig_put(s, &v, 4);
		for (j = 0; j < irq->count && !err; j += 8) {
			uint8_t bits = 0;
			unsigned int k;

			for (k = 0; k < 8 && j + k < irq->count; k++)
				if (irq->vec[j + k].pending)
					bits |= 1U << k;
			err = vus_mig_put(s, &bits, 1);
		}
	}
	return err;
}

/* Take @len bytes at *@pos of [@p, @p + @end), or fail. */
static const uint8_t *vus_mig_take(const uint8_t *p, size_t end, size_t *pos,
				   size_t len)
{
	const uint8_t *q = p + *pos;

	if (len > end - *pos)
		return NULL;
	*pos += len;
	return q;
}

static bool vus_mig_take32(const uint8_t *p, size_t end, size_t *pos,
			   uint32_t *v)
{
	const uint8_t *q = vus_mig_take(p, end, pos, 4);

	if (!q)
		return false;
	memcpy(v, q, 4);
	*v = le32toh(*v);
	return true;
}

/*
 * Check the library section [@p, @p + @len) against this device (@apply
 * false), or restore it (@apply true, after a successful check). The
 * config space must agree in every bit the client cannot write, except the
 * status register (the device's); it differs only for another device.
 */
static int vus_mig_lib_section(struct vus_dev *dev, const uint8_t *p,
			       size_t len, bool apply)
{
	struct vus_pci *pci = &dev->pci;
	uint32_t cfg_len, msix_len, nr, count;
	const uint8_t *cfg, *msix, *bits;
	size_t pos = 0;
	unsigned int i, j;

	if (!vus_mig_take32(p, len, &pos, &cfg_len) ||
	    cfg_len != (pci->enabled ? VUS_PCI_CFG_SIZE : 0) ||
	    !(cfg = vus_mig_take(p, len, &pos, cfg_len)) ||
	    !vus_mig_take32(p, len, &pos, &msix_len) ||
	    msix_len != pci->msix_nr * PCI_MSIX_ENTRY_SIZE ||
	    !(msix = vus_mig_take(p, len, &pos, msix_len)) ||
	    !vus_mig_take32(p, len, &pos, &nr) || nr != VUS_MAX_IRQ_INDEXES)
		return -EINVAL;
	for (i = 0; i < cfg_len && !apply; i++)
		if (i != PCI_STATUS && i != PCI_STATUS + 1 &&
		    ((cfg[i] ^ pci->cfg[i]) & ~pci->wmask[i]))
			return -EINVAL;
	for (i = 0; i < nr; i++) {
		if (!vus_mig_take32(p, len, &pos, &count) ||
		    count != dev->irqs[i].count ||
		    !(bits = vus_mig_take(p, len, &pos, (count + 7) / 8)))
			return -EINVAL;
		for (j = 0; j < count && apply; j++)
			dev->irqs[i].vec[j].pending = bits[j / 8] >> (j % 8) & 1;
	}
	if (pos != len)
		return -EINVAL;
	if (!apply)
		return 0;
	for (i = 0; i < cfg_len; i++)
		pci->cfg[i] = (pci->cfg[i] & ~pci->wmask[i]) |
			      (cfg[i] & pci->wmask[i]);
	if (cfg_len)
		memcpy(pci->cfg + PCI_STATUS, cfg + PCI_STATUS, 2);
	if (msix_len)
		memcpy(pci->msix_table, msix, msix_len);
	return 0;
}

/* ---- frames -------------------------------------------------------------- */

static void vus_mig_ids(const struct vus_dev *dev, uint16_t *vendor,
			uint16_t *device)
{
	uint16_t v = 0, d = 0;

	if (dev->pci.enabled) {
		memcpy(&v, dev->pci.cfg + PCI_VENDOR_ID, 2);
		memcpy(&d, dev->pci.cfg + PCI_DEVICE_ID, 2);
	}
	*vendor = le16toh(v);
	*device = le16toh(d);
}

static void vus_mig_hdr_to_le(struct vus_mig_hdr *h)
{
	h->magic = htole32(h->magic);
	h->format = htole16(h->format);
	h->flags = htole16(h->flags);
	h->vendor_id = htole16(h->vendor_id);
	h->device_id = htole16(h->device_id);
	h->dev_version = htole32(h->dev_version);
	h->lib_len = htole32(h->lib_len);
	h->crc = htole32(h->crc);
	h->dev_len = htole64(h->dev_len);
}

/*
 * Append one frame to @s (a save or measure stream): header, the library
 * section if @final, what the device's save callback puts. A failed save
 * leaves @s as it was.
 */
static int vus_mig_save_frame(struct vus_dev *dev, struct vus_mig_stream *s,
			      bool final)
{
	struct vus_mig_hdr h = { 0 };
	uint64_t at = vus_mig_pos(s), lib_at, dev_at, end;
	int err;

	err = vus_mig_put(s, &h, sizeof(h));
	lib_at = vus_mig_pos(s);
	if (!err && final)
		err = vus_mig_put_lib(dev, s);
	dev_at = vus_mig_pos(s);
	if (!err)
		err = dev->mig.ops.save(dev, dev->priv, s, final);
	if (err > 0)
		err = -EINVAL;
	end = vus_mig_pos(s);
	if (err) {
		if (!s->measure)
			s->buf->len = at;
		else
			s->count = at;
		return err;
	}
	if (s->measure)
		return 0;
	h.magic = VUS_MIG_MAGIC;
	h.format = VUS_MIG_FORMAT;
	h.flags = final ? VUS_MIG_F_FINAL : 0;
	vus_mig_ids(dev, &h.vendor_id, &h.device_id);
	h.dev_version = dev->mig.version;
	h.lib_len = dev_at - lib_at;
	h.dev_len = end - dev_at;
	vus_mig_hdr_to_le(&h);
	memcpy(s->buf->data + at, &h, sizeof(h));
	h.crc = htole32(vus_crc32(0, s->buf->data + at, end - at));
	memcpy(s->buf->data + at, &h, sizeof(h));
	return 0;
}

/*
 * Check the frame at @p (@avail bytes to the end of the stream) and fill
 * @h in host order. -EINVAL with a reason in @why.
 */
static int vus_mig_check_frame(struct vus_dev *dev, const uint8_t *p,
			       size_t avail, struct vus_mig_hdr *h,
			       const char **why)
{
	struct vus_mig_hdr le;
	uint16_t vendor, device;
	uint32_t crc;

	*why = "truncated header";
	if (avail < sizeof(le))
		return -EINVAL;
	memcpy(&le, p, sizeof(le));
	h->magic = le32toh(le.magic);
	h->format = le16toh(le.format);
	h->flags = le16toh(le.flags);
	h->vendor_id = le16toh(le.vendor_id);
	h->device_id = le16toh(le.device_id);
	h->dev_version = le32toh(le.dev_version);
	h->lib_len = le32toh(le.lib_len);
	h->crc = le32toh(le.crc);
	h->dev_len = le64toh(le.dev_len);
	vus_mig_ids(dev, &vendor, &device);
	*why = "bad magic";
	if (h->magic != VUS_MIG_MAGIC)
		return -EINVAL;
	*why = "unknown format or flags";
	if (h->format != VUS_MIG_FORMAT || (h->flags & ~VUS_MIG_F_FINAL))
		return -EINVAL;
	*why = "another device";
	if (h->vendor_id != vendor || h->device_id != device)
		return -EINVAL;
	*why = "unknown device version";
	if (!h->dev_version || h->dev_version > dev->mig.version)
		return -EINVAL;
	*why = "library section in a pre-copy frame";
	if (!(h->flags & VUS_MIG_F_FINAL) && h->lib_len)
		return -EINVAL;
	*why = "truncated frame";
	if (h->lib_len > avail - sizeof(le) ||
	    h->dev_len > avail - sizeof(le) - h->lib_len)
		return -EINVAL;
	*why = "CRC mismatch";
	le.crc = 0;
	crc = vus_crc32(0, &le, sizeof(le));
	crc = vus_crc32(crc, p + sizeof(le), h->lib_len + h->dev_len);
	if (crc != h->crc)
		return -EINVAL;
	*why = "bad library section";
	if ((h->flags & VUS_MIG_F_FINAL) &&
	    vus_mig_lib_section(dev, p + sizeof(le), h->lib_len, false))
		return -EINVAL;
	return 0;
}

/*
 * RESUMING -> STOP: check the whole stream, then restore it frame by frame.
 * A stream refused before anything was applied returns its error with
 * *@applied false; a device that refuses its section returns with it true.
 */
static int vus_mig_load(struct vus_dev *dev, bool *applied)
{
	const struct vus_mig_buf *in = &dev->mig.in;
	struct vus_mig_hdr h;
	const char *why = NULL;
	size_t pos = 0, frames = 0;
	bool final = false;
	int err;

	*applied = false;
	while (pos < in->len) {
		if (final) {
			why = "data after the final frame";
			goto bad;
		}
		if (vus_mig_check_frame(dev, in->data + pos, in->len - pos, &h,
					&why))
			goto bad;
		final = h.flags & VUS_MIG_F_FINAL;
		pos += sizeof(h) + h.lib_len + h.dev_len;
		frames++;
	}
	if (!final) {
		why = in->len ? "no final frame" : "no data";
		goto bad;
	}

	*applied = true;
	for (pos = 0; pos < in->len; pos += sizeof(h) + h.lib_len + h.dev_len) {
		struct vus_mig_stream s = { .dev = dev, .load = true };

		vus_mig_check_frame(dev, in->data + pos, in->len - pos, &h,
				    &why);
		final = h.flags & VUS_MIG_F_FINAL;
		if (final)
			vus_mig_lib_section(dev, in->data + pos + sizeof(h),
					    h.lib_len, true);
		s.data = in->data + pos + sizeof(h) + h.lib_len;
		s.len = h.dev_len;
		err = dev->mig.ops.load(dev, dev->priv, &s, h.dev_version,
					final);
		if (err > 0)
			err = -EINVAL;
		if (!err && s.pos != s.len) {
			pr_warn("migration: the device left %zu bytes of its section unread\n",
				s.len - s.pos);
			err = -EINVAL;
		}
		if (err) {
			pr_warn("migration: the device refused its state: %s\n",
				strerror(-err));
			return err;
		}
	}
	pr_debug("migration: loaded %zu bytes in %zu frames\n", in->len, frames);
	return 0;

bad:
	pr_warn("migration: stream refused at byte %zu of %zu: %s\n", pos,
		in->len, why);
	return -EINVAL;
}

/* ---- the state machine --------------------------------------------------- */

#define VUS_MIG_BIT(s)	(1U << VUS_MIG_##s)

/* The single arcs (vfio.h); the library always offers P2P. */
static const uint8_t vus_mig_arcs[VUS_MIG_NR_STATES] = {
	[VUS_MIG_RUNNING] = VUS_MIG_BIT(RUNNING_P2P) | VUS_MIG_BIT(PRE_COPY),
	[VUS_MIG_RUNNING_P2P] = VUS_MIG_BIT(RUNNING) | VUS_MIG_BIT(STOP) |
				VUS_MIG_BIT(PRE_COPY_P2P),
	[VUS_MIG_STOP] = VUS_MIG_BIT(RUNNING_P2P) | VUS_MIG_BIT(STOP_COPY) |
			 VUS_MIG_BIT(RESUMING),
	[VUS_MIG_STOP_COPY] = VUS_MIG_BIT(STOP),
	[VUS_MIG_RESUMING] = VUS_MIG_BIT(STOP),
	[VUS_MIG_PRE_COPY] = VUS_MIG_BIT(RUNNING) | VUS_MIG_BIT(PRE_COPY_P2P),
	[VUS_MIG_PRE_COPY_P2P] = VUS_MIG_BIT(RUNNING_P2P) |
				 VUS_MIG_BIT(PRE_COPY) | VUS_MIG_BIT(STOP_COPY),
};

static bool vus_mig_saving(unsigned int s)
{
	return s == VUS_MIG_STOP_COPY || s == VUS_MIG_PRE_COPY ||
	       s == VUS_MIG_PRE_COPY_P2P;
}

static unsigned int vus_mig_supported(const struct vus_dev *dev)
{
	unsigned int m = 0xff & ~VUS_MIG_BIT(ERROR);

	if (!dev->mig.pre_copy)
		m &= ~(VUS_MIG_BIT(PRE_COPY) | VUS_MIG_BIT(PRE_COPY_P2P));
	return m;
}

/*
 * The first arc of the shortest path from @cur to @target, as VFIO defines
 * it: no path out of ERROR or into it, none from STOP_COPY to PRE_COPY*;
 * RESUMING is never passed through, and a saving state only while the path
 * has not left the saving group it started in and ends in it (PRE_COPY ->
 * PRE_COPY_P2P -> STOP_COPY is one session). Breadth first over (state,
 * still in the starting saving group).
 */
static int vus_mig_next(const struct vus_dev *dev, unsigned int cur,
			unsigned int target, unsigned int *next)
{
	unsigned int supported = vus_mig_supported(dev);
	struct { uint8_t s, first, in_group; } q[2 * VUS_MIG_NR_STATES];
	bool seen[VUS_MIG_NR_STATES][2] = { { false } };
	unsigned int head = 0, tail = 0, a;

	if (cur >= VUS_MIG_NR_STATES || target >= VUS_MIG_NR_STATES ||
	    !(supported & (1U << cur)) || !(supported & (1U << target)))
		return -EINVAL;
	if (cur == VUS_MIG_STOP_COPY &&
	    (target == VUS_MIG_PRE_COPY || target == VUS_MIG_PRE_COPY_P2P))
		return -EINVAL;
	if (cur == target) {
		*next = cur;
		return 0;
	}
	q[tail++] = (typeof(q[0])){ cur, cur, vus_mig_saving(cur) };
	seen[cur][vus_mig_saving(cur)] = true;
	while (head < tail) {
		unsigned int s = q[head].s, first = q[head].first;
		bool in_group = q[head].in_group;

		head++;
		for (a = 0; a < VUS_MIG_NR_STATES; a++) {
			bool g = in_group && vus_mig_saving(a);

			if (!(vus_mig_arcs[s] & supported & (1U << a)))
				continue;
			if (a == target) {
				*next = s == cur ? a : first;
				return 0;
			}
			if (a == VUS_MIG_RESUMING ||
			    (vus_mig_saving(a) &&
			     !(g && vus_mig_saving(target))) ||
			    seen[a][g])
				continue;
			seen[a][g] = true;
			q[tail++] = (typeof(q[0])){ a, s == cur ? a : first, g };
		}
	}
	return -EINVAL;
}

static void vus_mig_enter_error(struct vus_dev *dev)
{
	pr_warn("migration: %s -> ERROR\n", vus_mig_name(dev->mig.state));
	dev->mig.state = VUS_MIG_ERROR;
	vus_mig_buf_free(&dev->mig.out);
	dev->mig.out_pos = 0;
	vus_mig_buf_free(&dev->mig.in);
}

static int vus_mig_callback(struct vus_dev *dev, unsigned int from,
			    unsigned int to)
{
	int err = 0;

	if (dev->mig.ops.transition)
		err = dev->mig.ops.transition(dev, dev->priv, from, to);
	return err > 0 ? -EINVAL : err;
}

/*
 * The save on entering a saving state failed: go back along the reverse
 * arc when there is one, else to ERROR.
 */
static void vus_mig_save_failed(struct vus_dev *dev, unsigned int from,
				unsigned int to, bool new_session)
{
	if (new_session) {
		vus_mig_buf_free(&dev->mig.out);
		dev->mig.out_pos = 0;
	}
	if ((vus_mig_arcs[to] & (1U << from)) && !vus_mig_callback(dev, to, from)) {
		dev->mig.state = from;
		return;
	}
	vus_mig_enter_error(dev);
}

/* Take the single arc @from -> @to (the current state is @from). */
static int vus_mig_arc(struct vus_dev *dev, unsigned int from, unsigned int to)
{
	struct vus_mig *mg = &dev->mig;
	bool new_session = !vus_mig_saving(from) && vus_mig_saving(to);
	bool end_session = vus_mig_saving(from) && !vus_mig_saving(to);
	bool applied;
	int err;

	if (from == VUS_MIG_RESUMING) {
		err = vus_mig_load(dev, &applied);
		if (err) {
			if (applied)
				vus_mig_enter_error(dev);
			return err;
		}
		vus_mig_buf_free(&mg->in);
	}
	err = vus_mig_callback(dev, from, to);
	if (err) {
		pr_info("migration: the device refused %s -> %s: %s\n",
			vus_mig_name(from), vus_mig_name(to), strerror(-err));
		if (from == VUS_MIG_RESUMING)	/* loaded, but not stopped */
			vus_mig_enter_error(dev);
		return err;
	}
	mg->state = to;
	if (new_session) {
		vus_mig_buf_free(&mg->out);
		mg->out_pos = 0;
	}
	if (new_session || to == VUS_MIG_STOP_COPY) {
		struct vus_mig_stream s = { .dev = dev, .buf = &mg->out };

		err = vus_mig_save_frame(dev, &s, to == VUS_MIG_STOP_COPY);
		if (err) {
			pr_warn("migration: save entering %s failed: %s\n",
				vus_mig_name(to), strerror(-err));
			vus_mig_save_failed(dev, from, to, new_session);
			return err;
		}
	}
	if (end_session) {
		vus_mig_buf_free(&mg->out);
		mg->out_pos = 0;
	}
	if (to == VUS_MIG_RESUMING)
		vus_mig_buf_free(&mg->in);
	if (vus_mig_state_running(to) && !vus_mig_state_running(from))
		vus_irq_fire_held(dev);
	pr_debug("migration: %s -> %s\n", vus_mig_name(from), vus_mig_name(to));
	return 0;
}

/* SET MIG_DEVICE_STATE: the whole path is checked before its first arc. */
static int vus_mig_set_state(struct vus_dev *dev, uint32_t target)
{
	unsigned int next;
	int err;

	err = vus_mig_next(dev, dev->mig.state, target, &next);
	if (err) {
		pr_debug("migration: no path %s -> %u\n",
			 vus_mig_name(dev->mig.state), target);
		return err;
	}
	while (dev->mig.state != target) {
		err = vus_mig_next(dev, dev->mig.state, target, &next);
		if (!err)
			err = vus_mig_arc(dev, dev->mig.state, next);
		if (err)
			return err;
	}
	return 0;
}

/* DEVICE_RESET: back to RUNNING from anywhere, any session ended. */
void vus_mig_reset(struct vus_dev *dev)
{
	struct vus_mig *mg = &dev->mig;

	if (!mg->enabled)
		return;
	if (mg->state != VUS_MIG_RUNNING)
		pr_debug("migration: reset in %s\n", vus_mig_name(mg->state));
	vus_mig_buf_free(&mg->out);
	mg->out_pos = 0;
	vus_mig_buf_free(&mg->in);
	mg->state = VUS_MIG_RUNNING;
}

/*
 * The client went away: a saving session ends as its client would have
 * ended it, a half-written state leaves the device to be reset.
 */
void vus_mig_disconnect(struct vus_dev *dev)
{
	struct vus_mig *mg = &dev->mig;
	unsigned int to;

	if (!mg->enabled)
		return;
	switch (mg->state) {
	case VUS_MIG_PRE_COPY:
		to = VUS_MIG_RUNNING;
		break;
	case VUS_MIG_PRE_COPY_P2P:
		to = VUS_MIG_RUNNING_P2P;
		break;
	case VUS_MIG_STOP_COPY:
		to = VUS_MIG_STOP;
		break;
	case VUS_MIG_RESUMING:
		vus_mig_enter_error(dev);
		return;
	default:
		return;
	}
	if (vus_mig_arc(dev, mg->state, to))
		vus_mig_enter_error(dev);
}

void vus_mig_free(struct vus_dev *dev)
{
	vus_mig_buf_free(&dev->mig.out);
	vus_mig_buf_free(&dev->mig.in);
}

/* ---- DEVICE_FEATURE, MIG_DATA_READ, MIG_DATA_WRITE ----------------------- */

static int vus_mig_data_size(struct vus_dev *dev, uint64_t *size)
{
	struct vus_mig_stream s = { .dev = dev, .measure = true };
	struct vus_mig *mg = &dev->mig;
	int err = 0;

	*size = 0;
	if (vus_mig_saving(mg->state))
		*size = mg->out.len - mg->out_pos;
	if (mg->state != VUS_MIG_STOP_COPY) {
		err = vus_mig_save_frame(dev, &s, true);
		*size += s.count;
	}
	return err;
}

static int vus_mig_reply(struct vus_reply *r, const void *p, size_t len)
{
	r->buf = malloc(len ?: 1);
	if (!r->buf)
		return -ENOMEM;
	memcpy(r->buf, p, len);
	r->len = len;
	return 0;
}

int vus_mig_handle_feature(struct vus_dev *dev, struct vus_msg *m,
			   struct vus_reply *r)
{
	struct vfio_user_device_feature f;
	size_t len = m->size - HDR, dlen;
	const uint8_t *data = m->buf + HDR + sizeof(f);
	uint32_t argsz, flags, op, supported;
	uint8_t out[sizeof(f) + 8];
	uint64_t v;
	int err;

	if (!dev->mig.enabled)
		return -EOPNOTSUPP;
	if (len < sizeof(f))
		return -EINVAL;
	memcpy(&f, m->buf + HDR, sizeof(f));
	argsz = le32toh(f.argsz);
	flags = le32toh(f.flags);
	len -= sizeof(f);
	if (flags & ~(VFIO_USER_DEVICE_FEATURE_MASK |
		      VFIO_USER_DEVICE_FEATURE_GET |
		      VFIO_USER_DEVICE_FEATURE_SET |
		      VFIO_USER_DEVICE_FEATURE_PROBE))
		return -EINVAL;
	op = flags & (VFIO_USER_DEVICE_FEATURE_GET |
		      VFIO_USER_DEVICE_FEATURE_SET);
	switch (flags & VFIO_USER_DEVICE_FEATURE_MASK) {
	case VFIO_USER_DEVICE_FEATURE_MIGRATION:
		supported = VFIO_USER_DEVICE_FEATURE_GET;
		dlen = sizeof(struct vfio_user_device_feature_migration);
		break;
	case VFIO_USER_DEVICE_FEATURE_MIG_DEVICE_STATE:
		supported = VFIO_USER_DEVICE_FEATURE_GET |
			    VFIO_USER_DEVICE_FEATURE_SET;
		dlen = sizeof(struct vfio_user_device_feature_mig_state);
		break;
	case VFIO_USER_DEVICE_FEATURE_MIG_DATA_SIZE:
		supported = VFIO_USER_DEVICE_FEATURE_GET;
		dlen = sizeof(struct vfio_user_device_feature_mig_data_size);
		break;
	default:	/* DMA logging and anything else: not offered */
		return -EOPNOTSUPP;
	}
	if (op & ~supported)
		return -EINVAL;
	/* a PROBE or SET reply repeats the request */
	if (flags & VFIO_USER_DEVICE_FEATURE_PROBE)
		return len > dlen ? -EINVAL :
		       vus_mig_reply(r, m->buf + HDR, sizeof(f) + len);
	if (op != VFIO_USER_DEVICE_FEATURE_GET &&
	    op != VFIO_USER_DEVICE_FEATURE_SET)
		return -EINVAL;
	if (argsz < sizeof(f) + dlen)
		return -EINVAL;
	if (op == VFIO_USER_DEVICE_FEATURE_SET) {
		struct vfio_user_device_feature_mig_state st;

		if (len != dlen)
			return -EINVAL;
		memcpy(&st, data, sizeof(st));
		err = vus_mig_set_state(dev, le32toh(st.device_state));
		return err ?: vus_mig_reply(r, m->buf + HDR, sizeof(f) + len);
	}
	/* GET: the request carries no data (or a zeroed copy of it) */
	if (len && len != dlen)
		return -EINVAL;
	switch (flags & VFIO_USER_DEVICE_FEATURE_MASK) {
	case VFIO_USER_DEVICE_FEATURE_MIGRATION:
		v = VFIO_USER_MIGRATION_STOP_COPY | VFIO_USER_MIGRATION_P2P |
		    (dev->mig.pre_copy ? VFIO_USER_MIGRATION_PRE_COPY : 0);
		break;
	case VFIO_USER_DEVICE_FEATURE_MIG_DEVICE_STATE:
		v = dev->mig.state;	/* device_state; data_fd 0 */
		break;
	default:
		err = vus_mig_data_size(dev, &v);
		if (err)
			return err;
		break;
	}
	f.argsz = htole32(sizeof(f) + dlen);
	v = htole64(v);
	memcpy(out, &f, sizeof(f));
	memcpy(out + sizeof(f), &v, 8);
	return vus_mig_reply(r, out, sizeof(f) + dlen);
}

int vus_mig_handle_data_read(struct vus_dev *dev, struct vus_msg *m,
			     struct vus_reply *r)
{
	struct vfio_user_mig_data d;
	struct vus_mig *mg = &dev->mig;
	uint32_t argsz, size, limit;
	size_t n;
	uint8_t *out;

	if (!mg->enabled)
		return -EOPNOTSUPP;
	if (m->size - HDR != sizeof(d))
		return -EINVAL;
	memcpy(&d, m->buf + HDR, sizeof(d));
	argsz = le32toh(d.argsz);
	size = le32toh(d.size);
	if (!vus_mig_saving(mg->state))
		return -EINVAL;
	limit = VUS_MIN(dev->max_xfer, dev->peer.max_data_xfer_size);
	if (size > limit)
		return -E2BIG;
	if (argsz < sizeof(d) + (uint64_t)size)
		return -EINVAL;
	n = VUS_MIN((size_t)size, mg->out.len - mg->out_pos);
	out = malloc(sizeof(d) + n);
	if (!out)
		return -ENOMEM;
	d.argsz = htole32(sizeof(d) + n);
	d.size = htole32(n);
	memcpy(out, &d, sizeof(d));
	if (n)
		memcpy(out + sizeof(d), mg->out.data + mg->out_pos, n);
	mg->out_pos += n;
	r->buf = out;
	r->len = sizeof(d) + n;
	return 0;
}

int vus_mig_handle_data_write(struct vus_dev *dev, struct vus_msg *m)
{
	struct vfio_user_mig_data d;
	struct vus_mig *mg = &dev->mig;
	size_t len = m->size - HDR;
	uint32_t size;

	if (!mg->enabled)
		return -EOPNOTSUPP;
	if (len < sizeof(d))
		return -EINVAL;
	memcpy(&d, m->buf + HDR, sizeof(d));
	size = le32toh(d.size);		/* (argsz: no reply payload) */
	if (len - sizeof(d) != size || mg->state != VUS_MIG_RESUMING)
		return -EINVAL;
	if (size > dev->max_xfer)
		return -E2BIG;
	if (size > mg->max_stream - mg->in.len)
		return -EFBIG;
	return vus_mig_buf_add(&mg->in, m->buf + HDR + sizeof(d), size);
}

/* ---- setup --------------------------------------------------------------- */

int vus_dev__setup_migration(struct vus_dev *dev,
			     const struct vus_mig_opts *uopts)
{
	struct vus_mig_opts o;
	int err;

	if (!dev || !uopts)
		return vus_err(-EINVAL);
	err = VUS_OPTS_COPY(&o, uopts, vus_mig_opts);
	if (err)
		return vus_err(err);
	if (!o.ops || !o.ops->save || !o.ops->load)
		return vus_err(-EINVAL);
	if (dev->mig.enabled)
		return vus_err(-EBUSY);
	dev->mig.ops = *o.ops;
	dev->mig.version = o.version ?: 1;
	dev->mig.pre_copy = o.pre_copy;
	dev->mig.max_stream = o.max_stream ?: VUS_MIG_DEF_MAX_STREAM;
	dev->mig.state = VUS_MIG_RUNNING;
	dev->mig.enabled = true;
	return 0;
}

enum vus_mig_state vus_dev__mig_state(const struct vus_dev *dev)
{
	return dev ? dev->mig.state : VUS_MIG_RUNNING;
}

bool vus_dev__running(const struct vus_dev *dev)
{
	return !dev || vus_dev_running(dev);
}

bool vus_dev__stopped(const struct vus_dev *dev)
{
	return dev && vus_dev_stopped(dev);
}
