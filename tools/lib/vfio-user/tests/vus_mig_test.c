// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Migration unit tests of libvfio-user-server. Two instances of a test
 * device, a source and a destination, each served from a thread of its
 * own; the test body is the client of both (vus_client.h), as the VMM of
 * the source and of the destination would be. It checks the state machine
 * arc by arc and path by path against a table written from the VFIO uAPI,
 * the DEVICE_FEATURE and MIG_DATA_READ/WRITE messages and their checks,
 * what a stopped device may and may not do, and that a stream saved by one
 * instance and loaded into the other gives the same device state — and
 * that no stream, truncated, corrupted or random, gets further than an
 * error reply.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <linux/pci_regs.h>

#include "vfio-user-server.h"
#include "vus_client.h"
#include "kselftest_harness.h"

/* ---- the test device ---------------------------------------------------- */

#define M_VENDOR	0x4e58
#define M_DEVICE	0x00f1
#define M_MAX_XFER	65536
#define M_BAR0_SIZE	4096
#define M_BAR1_SIZE	(64 * 1024)
#define M_BAR2_SIZE	(1024 * 1024)
#define M_BAR4_SIZE	4096
#define M_MSIX		8
#define M_MSI		4
#define M_MEM_IOVA	0x100000ULL
#define M_MEM_SIZE	(256 * 1024)
#define M_MAX_STREAM	(4U << 20)
#define M_MAGIC		0x5645444d	/* "MDEV" */
#define M_REGS		256		/* saved bytes of BAR0 */

/* BAR0 registers (64-bit) */
#define R_SCRATCH	0x00	/* 0x00-0x3f scratch */
#define R_DOORBELL	0x40	/* write: DMA SRC -> DST, LEN bytes */
#define R_SRC		0x48
#define R_DST		0x50
#define R_LEN		0x58
#define R_STATUS	0x60	/* last doorbell: 0 or -errno */
#define R_IRQ		0x68	/* write: index << 16 | vector -> trigger */
#define R_IRQ_RESULT	0x70
#define R_RESETS	0x78
#define M_MSIX_TABLE	0x800
#define M_MSIX_PBA	0xc00

#define M_LOG		64

struct mdev {
	uint8_t regs[M_REGS];
	pthread_mutex_t lock;		/* the fields below */
	unsigned int nr_arcs;
	uint8_t arcs[M_LOG][2];		/* transitions, in order */
	unsigned int nr_saves;
	bool saves_final[M_LOG];
	unsigned int nr_loads;
	uint32_t load_version[M_LOG];
	bool loads_final[M_LOG];
	int fail_save;			/* save returns this */
	uint8_t fail_from, fail_to;	/* this arc returns -EIO ... */
	bool fail_arc;			/* ... when set */
	int bad_region_put;		/* put_region(0) result, in save */
	bool measured;			/* save saw a measuring stream */
};

static uint64_t reg_get(struct mdev *t, unsigned int off)
{
	uint64_t v;

	memcpy(&v, t->regs + off, 8);
	return le64toh(v);
}

static void reg_set(struct mdev *t, unsigned int off, uint64_t v)
{
	v = htole64(v);
	memcpy(t->regs + off, &v, 8);
}

static int bar0_access(struct vus_dev *dev, void *priv, uint64_t off,
		       void *buf, size_t count, bool is_write)
{
	struct mdev *t = priv;

	if (off + count > M_REGS)
		return -EINVAL;
	if (!is_write) {
		memcpy(buf, t->regs + off, count);
		return 0;
	}
	memcpy(t->regs + off, buf, count);
	if (off == R_DOORBELL) {
		uint64_t len = reg_get(t, R_LEN);
		uint8_t *tmp = malloc(len ?: 1);
		int err = -ENOMEM;

		if (tmp && len <= M_MEM_SIZE)
			err = vus_dev__dma_read(dev, reg_get(t, R_SRC), tmp, len);
		if (!err)
			err = vus_dev__dma_write(dev, reg_get(t, R_DST), tmp, len);
		free(tmp);
		reg_set(t, R_STATUS, (uint64_t)(int64_t)err);
	} else if (off == R_IRQ) {
		uint64_t v = reg_get(t, R_IRQ);

		reg_set(t, R_IRQ_RESULT,
			(uint64_t)(int64_t)vus_dev__trigger_irq(dev, v >> 16,
								 v & 0xffff));
	}
	return 0;
}

static int m_reset(struct vus_dev *dev, void *priv)
{
	struct mdev *t = priv;

	reg_set(t, R_RESETS, reg_get(t, R_RESETS) + 1);
	return 0;
}

static const struct vus_dev_ops m_ops = {
	.reset = m_reset,
};

static int m_transition(struct vus_dev *dev, void *priv,
			enum vus_mig_state from, enum vus_mig_state to)
{
	struct mdev *t = priv;
	int err = 0;

	pthread_mutex_lock(&t->lock);
	if (t->fail_arc && t->fail_from == from && t->fail_to == to) {
		err = -EIO;
	} else if (t->nr_arcs < M_LOG) {
		t->arcs[t->nr_arcs][0] = from;
		t->arcs[t->nr_arcs][1] = to;
		t->nr_arcs++;
	}
	pthread_mutex_unlock(&t->lock);
	return err;
}

static int m_save(struct vus_dev *dev, void *priv, struct vus_mig_stream *out,
		  bool final)
{
	struct mdev *t = priv;
	int err;

	pthread_mutex_lock(&t->lock);
	err = t->fail_save;
	t->bad_region_put = vus_mig_stream__put_region(out, 0);
	if (vus_mig_stream__measuring(out))
		t->measured = true;
	else if (t->nr_saves < M_LOG)
		t->saves_final[t->nr_saves++] = final;
	pthread_mutex_unlock(&t->lock);
	if (err)
		return err;
	err = vus_mig_stream__put_u32(out, M_MAGIC);
	if (!err)
		err = vus_mig_stream__put_u32(out, final);
	if (!err)
		err = vus_mig_stream__put(out, t->regs, M_REGS);
	/* a pre-copy round sends the bulk ahead; the final frame all again */
	if (!err)
		err = vus_mig_stream__put_region(out, VFIO_PCI_BAR2_REGION_INDEX);
	if (!err && final)
		err = vus_mig_stream__put_region(out, VFIO_PCI_BAR1_REGION_INDEX);
	if (!err && final)
		err = vus_mig_stream__put_region(out, VFIO_PCI_BAR4_REGION_INDEX);
	return err;
}

static int m_load(struct vus_dev *dev, void *priv, struct vus_mig_stream *in,
		  uint32_t version, bool final)
{
	struct mdev *t = priv;
	uint8_t regs[M_REGS];
	uint32_t magic, fin;
	int err;

	pthread_mutex_lock(&t->lock);
	if (t->nr_loads < M_LOG) {
		t->load_version[t->nr_loads] = version;
		t->loads_final[t->nr_loads++] = final;
	}
	pthread_mutex_unlock(&t->lock);
	err = vus_mig_stream__get_u32(in, &magic);
	if (!err)
		err = vus_mig_stream__get_u32(in, &fin);
	if (!err && (magic != M_MAGIC || fin != final))
		err = -EINVAL;
	if (!err)
		err = vus_mig_stream__get(in, regs, sizeof(regs));
	if (!err)
		err = vus_mig_stream__get_region(in, VFIO_PCI_BAR2_REGION_INDEX);
	if (!err && final)
		err = vus_mig_stream__get_region(in, VFIO_PCI_BAR1_REGION_INDEX);
	if (!err && final)
		err = vus_mig_stream__get_region(in, VFIO_PCI_BAR4_REGION_INDEX);
	if (!err)
		memcpy(t->regs, regs, sizeof(regs));
	return err;
}

static const struct vus_mig_ops m_mig_ops = {
	.transition = m_transition,
	.save = m_save,
	.load = m_load,
};

static const struct vus_sparse_area m_sparse[] = {
	{ .offset = 0, .size = 4096 },
	{ .offset = 8192, .size = 4096 },
};

/* The test device; with @mig migratable, with @pre_copy offering it. */
static struct vus_dev *m_dev_new(struct mdev *t, bool mig, bool pre_copy)
{
	VUS_OPTS(vus_dev_opts, o, .ops = &m_ops, .priv = t,
		 .max_data_xfer_size = M_MAX_XFER, .max_msg_fds = 8,
		 .timeout_ms = 2000);
	VUS_OPTS(vus_pci_opts, p, .vendor_id = M_VENDOR,
		 .device_id = M_DEVICE, .class_code = 0xff0000, .irq_pin = 1);
	VUS_OPTS(vus_region_opts, bar0, .size = M_BAR0_SIZE,
		 .access = bar0_access, .priv = t);
	VUS_OPTS(vus_region_opts, bar1, .size = M_BAR1_SIZE,
		 .flags = VUS_REGION_READ | VUS_REGION_WRITE | VUS_REGION_MMAP,
		 .sparse = m_sparse, .nr_sparse = 2);
	VUS_OPTS(vus_region_opts, bar2, .size = M_BAR2_SIZE,
		 .flags = VUS_REGION_READ | VUS_REGION_WRITE |
			  VUS_REGION_BAR_MEM64 | VUS_REGION_BAR_PREFETCH);
	VUS_OPTS(vus_region_opts, bar4, .size = M_BAR4_SIZE);
	VUS_OPTS(vus_mig_opts, mo, .ops = &m_mig_ops, .version = 3,
		 .pre_copy = pre_copy, .max_stream = M_MAX_STREAM);
	struct vus_dev *dev = vus_dev__new(&o);

	if (!dev)
		return NULL;
	if (vus_dev__setup_pci(dev, &p) ||
	    vus_dev__add_region(dev, 0, &bar0) ||
	    vus_dev__add_region(dev, 1, &bar1) ||
	    vus_dev__add_region(dev, 2, &bar2) ||
	    vus_dev__add_region(dev, 4, &bar4) ||
	    vus_dev__add_msix(dev, M_MSIX, 0, M_MSIX_TABLE, M_MSIX_PBA) < 0 ||
	    vus_dev__set_irq_count(dev, VFIO_PCI_MSI_IRQ_INDEX, M_MSI) ||
	    (mig && vus_dev__setup_migration(dev, &mo))) {
		vus_dev__delete(dev);
		return NULL;
	}
	return dev;
}

/* ---- one server: device, thread, client --------------------------------- */

struct side {
	struct mdev t;
	struct vus_dev *dev;
	pthread_t thr;
	atomic_bool stop;
	bool started;
	struct cl cl;
};

static void *srv_thread(void *arg)
{
	struct side *s = arg;
	struct pollfd pfd = { .fd = vus_dev__fd(s->dev), .events = POLLIN };

	while (!atomic_load(&s->stop)) {
		if (poll(&pfd, 1, 20) > 0)
			vus_dev__process(s->dev);
	}
	return NULL;
}

#define CAPS_FMT "{\"capabilities\":{\"max_msg_fds\":8," \
		 "\"max_data_xfer_size\":%u,\"pgsizes\":4096}}"

static void side_stop(struct side *s)
{
	if (s->started) {
		atomic_store(&s->stop, true);
		pthread_join(s->thr, NULL);
		s->started = false;
	}
}

/*
 * A new client on a socket pair, negotiated with max_data_xfer_size @xfer:
 * the old one goes away first. The library is called from one thread at a
 * time, so the server thread is stopped meanwhile.
 */
static int side_connect(struct side *s, unsigned int xfer)
{
	char json[256];
	struct cl_msg r;
	int sv[2], err;

	side_stop(s);
	if (s->cl.fd >= 0) {
		close(s->cl.fd);
		s->cl.fd = -1;
	}
	vus_dev__disconnect(s->dev);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return -errno;
	s->cl.fd = sv[0];
	s->cl.next_id = 0;
	err = vus_dev__attach_fd(s->dev, sv[1]);
	if (err)
		return err;
	atomic_store(&s->stop, false);
	if (pthread_create(&s->thr, NULL, srv_thread, s))
		return -EAGAIN;
	s->started = true;
	snprintf(json, sizeof(json), CAPS_FMT, xfer);
	err = cl_version(&s->cl, 0, 2, json, &r);
	if (!err)
		cl_msg_free(&r);
	return err;
}

static int side_init(struct side *s, bool mig, bool pre_copy)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->t.lock, NULL);
	s->cl.fd = -1;
	s->cl.mem = calloc(1, M_MEM_SIZE);
	s->cl.mem_iova = M_MEM_IOVA;
	s->cl.mem_len = M_MEM_SIZE;
	s->dev = m_dev_new(&s->t, mig, pre_copy);
	if (!s->dev || !s->cl.mem)
		return -ENOMEM;
	return side_connect(s, 4096);
}

static void side_exit(struct side *s)
{
	side_stop(s);
	vus_dev__delete(s->dev);
	if (s->cl.fd >= 0)
		close(s->cl.fd);
	free(s->cl.mem);
	pthread_mutex_destroy(&s->t.lock);
}

static void log_clear(struct side *s)
{
	pthread_mutex_lock(&s->t.lock);
	s->t.nr_arcs = s->t.nr_saves = s->t.nr_loads = 0;
	pthread_mutex_unlock(&s->t.lock);
}

/* ---- protocol helpers --------------------------------------------------- */

#define FGET	VFIO_USER_DEVICE_FEATURE_GET
#define FSET	VFIO_USER_DEVICE_FEATURE_SET
#define FPROBE	VFIO_USER_DEVICE_FEATURE_PROBE
#define F_MIG	VFIO_USER_DEVICE_FEATURE_MIGRATION
#define F_STATE	VFIO_USER_DEVICE_FEATURE_MIG_DEVICE_STATE
#define F_SIZE	VFIO_USER_DEVICE_FEATURE_MIG_DATA_SIZE

enum { ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P, PRE_COPY,
       PRE_COPY_P2P, NR_STATES };

static const char *const st_name[] = {
	"ERROR", "STOP", "RUNNING", "STOP_COPY", "RESUMING", "RUNNING_P2P",
	"PRE_COPY", "PRE_COPY_P2P",
};

/* DEVICE_FEATURE with @dlen bytes of @data; reply in @r on success. */
static int feature(struct cl *cl, uint32_t flags, uint32_t argsz,
		   const void *data, size_t dlen, struct cl_msg *r)
{
	uint8_t p[64];
	struct vfio_user_device_feature f = {
		.argsz = htole32(argsz), .flags = htole32(flags),
	};

	memcpy(p, &f, sizeof(f));
	if (dlen)
		memcpy(p + sizeof(f), data, dlen);
	return cl_cmd(cl, VFIO_USER_DEVICE_FEATURE, p, sizeof(f) + dlen, NULL,
		      0, r);
}

static int feature0(struct cl *cl, uint32_t flags, uint32_t argsz,
		    const void *data, size_t dlen)
{
	struct cl_msg r;
	int err = feature(cl, flags, argsz, data, dlen, &r);

	if (!err)
		cl_msg_free(&r);
	return err;
}

/* GET of an 8-byte feature: the reply must be argsz 16, flags, 8 bytes. */
static int get_u64(struct cl *cl, uint32_t feat, uint64_t *v)
{
	struct vfio_user_device_feature f;
	struct cl_msg r;
	int err = feature(cl, FGET | feat, 16, NULL, 0, &r);

	if (err)
		return err;
	if (r.len != 16) {
		cl_msg_free(&r);
		return -EPROTO;
	}
	memcpy(&f, r.payload, sizeof(f));
	if (le32toh(f.argsz) != 16 || le32toh(f.flags) != (FGET | feat))
		err = -EPROTO;
	memcpy(v, r.payload + 8, 8);
	*v = le64toh(*v);
	cl_msg_free(&r);
	return err;
}

static int get_state(struct cl *cl)
{
	uint64_t v;
	int err = get_u64(cl, F_STATE, &v);

	return err ?: (int)(uint32_t)v;
}

/* SET MIG_DEVICE_STATE; the reply must repeat the request. */
static int set_state(struct cl *cl, uint32_t state)
{
	struct vfio_user_device_feature_mig_state st = {
		.device_state = htole32(state),
	};
	uint8_t req[16];
	struct cl_msg r;
	int err = feature(cl, FSET | F_STATE, 16, &st, sizeof(st), &r);

	if (err)
		return err;
	memcpy(req, &(struct vfio_user_device_feature){
		.argsz = htole32(16), .flags = htole32(FSET | F_STATE) }, 8);
	memcpy(req + 8, &st, 8);
	if (r.len != 16 || memcmp(r.payload, req, 16))
		err = -EPROTO;
	cl_msg_free(&r);
	return err;
}

/* MIG_DATA_READ {argsz, size}; data to @buf, the reply's size in *@got. */
static int mig_read(struct cl *cl, uint32_t argsz, uint32_t size, void *buf,
		    uint32_t *got)
{
	struct vfio_user_mig_data d = {
		.argsz = htole32(argsz), .size = htole32(size),
	};
	struct cl_msg r;
	uint32_t n;
	int err = cl_cmd(cl, VFIO_USER_MIG_DATA_READ, &d, sizeof(d), NULL, 0,
			 &r);

	if (err)
		return err;
	memcpy(&d, r.payload, 8);
	n = le32toh(d.size);
	if (r.len < 8 || n > size || r.len != 8 + n ||
	    le32toh(d.argsz) != 8 + n)
		err = -EPROTO;
	else
		memcpy(buf, r.payload + 8, n);
	*got = n;
	cl_msg_free(&r);
	return err;
}

static int mig_write(struct cl *cl, const void *data, uint32_t size)
{
	uint8_t *p = malloc(8 + size);
	struct vfio_user_mig_data d = {
		.argsz = htole32(8 + size), .size = htole32(size),
	};
	struct cl_msg r;
	int err;

	if (!p)
		return -ENOMEM;
	memcpy(p, &d, 8);
	memcpy(p + 8, data, size);
	err = cl_cmd(cl, VFIO_USER_MIG_DATA_WRITE, p, 8 + size, NULL, 0, &r);
	free(p);
	if (!err) {
		if (r.len)
			err = -EPROTO;
		cl_msg_free(&r);
	}
	return err;
}

struct stream {
	uint8_t *data;
	size_t len;
};

/*
 * Read in pieces of @chunk, appending to @s, until a short reply (the end
 * of the stream; in PRE_COPY, of what there is for now).
 */
static int read_all(struct cl *cl, uint32_t chunk, struct stream *s)
{
	uint8_t *buf = malloc(chunk ?: 1);
	uint32_t got;
	int err = 0;

	if (!buf)
		return -ENOMEM;
	for (;;) {
		err = mig_read(cl, 8 + chunk, chunk, buf, &got);
		if (err)
			break;
		s->data = realloc(s->data, s->len + got + 1);
		memcpy(s->data + s->len, buf, got);
		s->len += got;
		if (got < chunk)
			break;
	}
	free(buf);
	return err;
}

static int write_all(struct cl *cl, const uint8_t *p, size_t len,
		     uint32_t chunk)
{
	size_t pos;
	int err;

	for (pos = 0; pos < len; pos += chunk) {
		err = mig_write(cl, p + pos, len - pos < chunk ? len - pos : chunk);
		if (err)
			return err;
	}
	return 0;
}

static int reg_read64(struct cl *cl, unsigned int off, uint64_t *v)
{
	int err = cl_region_read(cl, VFIO_PCI_BAR0_REGION_INDEX, off, v, 8);

	*v = le64toh(*v);
	return err;
}

static int reg_write64(struct cl *cl, unsigned int off, uint64_t v)
{
	v = htole64(v);
	return cl_region_write(cl, VFIO_PCI_BAR0_REGION_INDEX, off, &v, 8);
}

static int cfg_write(struct cl *cl, unsigned int off, uint32_t v,
		     unsigned int len)
{
	v = htole32(v);
	return cl_region_write(cl, VFIO_PCI_CONFIG_REGION_INDEX, off, &v, len);
}

static int set_irq_efd(struct cl *cl, uint32_t index, uint32_t vector, int efd)
{
	return cl_set_irqs(cl, VFIO_IRQ_SET_DATA_EVENTFD |
			   VFIO_IRQ_SET_ACTION_TRIGGER, index, vector, 1, NULL,
			   &efd, 1);
}

static int irq_action(struct cl *cl, uint32_t action, uint32_t index,
		      uint32_t vector)
{
	return cl_set_irqs(cl, VFIO_IRQ_SET_DATA_NONE | action, index, vector,
			   1, NULL, NULL, 0);
}

static bool efd_fired(int efd)
{
	uint64_t v;

	return read(efd, &v, sizeof(v)) == sizeof(v);
}

static int reset(struct cl *cl)
{
	return cl_cmd0(cl, VFIO_USER_DEVICE_RESET, NULL, 0);
}

/* CRC-32 as the stream uses it, bit by bit (independent of the library) */
static uint32_t crc32_ref(uint32_t crc, const uint8_t *p, size_t len)
{
	int k;

	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		for (k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xedb88320U & -(crc & 1));
	}
	return ~crc;
}

/* Frame header offsets */
#define H_MAGIC		0
#define H_FORMAT	4
#define H_FLAGS		6
#define H_VENDOR	8
#define H_DEVICE	10
#define H_VERSION	12
#define H_LIB_LEN	16
#define H_CRC		20
#define H_DEV_LEN	24
#define H_SIZE		32

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

static void put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

/* Length of the frame at @f */
static size_t frame_len(const uint8_t *f)
{
	return H_SIZE + get32(f + H_LIB_LEN) + get64(f + H_DEV_LEN);
}

/*
 * Recompute the CRC of the frame at @f after an edit, over at most @avail
 * bytes (an edited length may point past the buffer).
 */
static void fix_crc(uint8_t *f, size_t avail)
{
	size_t len = frame_len(f);

	if (len > avail || len < H_SIZE)
		len = avail;
	put32(f + H_CRC, 0);
	put32(f + H_CRC, crc32_ref(0, f, len));
}

/* Offset of the device section of the frame at @f */
static size_t dev_section(const uint8_t *f)
{
	return H_SIZE + get32(f + H_LIB_LEN);
}

/* ---- fixture: source and destination ------------------------------------ */

FIXTURE(mig) {
	struct side src;
	struct side dst;
};

FIXTURE_VARIANT(mig) {
	bool pre_copy;
};

FIXTURE_VARIANT_ADD(mig, stop_copy) {
	.pre_copy = false,
};

FIXTURE_VARIANT_ADD(mig, pre_copy) {
	.pre_copy = true,
};

FIXTURE_SETUP(mig)
{
	ASSERT_EQ(0, side_init(&self->src, true, variant->pre_copy));
	ASSERT_EQ(0, side_init(&self->dst, true, variant->pre_copy));
}

FIXTURE_TEARDOWN(mig)
{
	side_exit(&self->src);
	side_exit(&self->dst);
}

/* Save the source (which must be in STOP or RUNNING) into @s, back to STOP. */
static int save_stream(struct side *s, struct stream *out, uint32_t chunk)
{
	int err = set_state(&s->cl, STOP_COPY);

	if (!err)
		err = read_all(&s->cl, chunk, out);
	if (!err)
		err = set_state(&s->cl, STOP);
	return err;
}

/* RESUMING, write @len bytes of @p in pieces of @chunk, then SET STOP. */
static int load_stream(struct side *d, const uint8_t *p, size_t len,
		       uint32_t chunk)
{
	int err = set_state(&d->cl, RESUMING);

	if (!err)
		err = write_all(&d->cl, p, len, chunk);
	return err ?: set_state(&d->cl, STOP);
}

/* ---- no migration: as before -------------------------------------------- */

TEST(no_migration_answers_as_before)
{
	struct side s;
	struct vfio_user_mig_data d = { .argsz = htole32(8 + 16),
					.size = htole32(16) };
	uint8_t w[8 + 4] = { 0 };

	ASSERT_EQ(0, side_init(&s, false, false));
	EXPECT_EQ(-EOPNOTSUPP, feature0(&s.cl, FGET | F_MIG, 16, NULL, 0));
	EXPECT_EQ(-EOPNOTSUPP, feature0(&s.cl, FPROBE | FGET | F_MIG, 16,
					NULL, 0));
	EXPECT_EQ(-EOPNOTSUPP, cl_cmd0(&s.cl, VFIO_USER_MIG_DATA_READ, &d,
				       sizeof(d)));
	put32(w + 4, 4);
	EXPECT_EQ(-EOPNOTSUPP, cl_cmd0(&s.cl, VFIO_USER_MIG_DATA_WRITE, w,
				       sizeof(w)));
	EXPECT_EQ(VUS_MIG_RUNNING, vus_dev__mig_state(s.dev));
	EXPECT_TRUE(vus_dev__running(s.dev));
	EXPECT_FALSE(vus_dev__stopped(s.dev));
	EXPECT_EQ(0, reg_write64(&s.cl, R_SCRATCH, 5));
	side_exit(&s);
}

TEST(setup_migration_misuse)
{
	struct {
		struct vus_mig_opts o;
		uint64_t future;
	} big = { .o.sz = sizeof(big), .o.ops = &m_mig_ops, .future = 1 };
	static const struct vus_mig_ops no_load = { .save = m_save };
	static const struct vus_mig_ops no_save = { .load = m_load };
	VUS_OPTS(vus_mig_opts, o, .ops = &m_mig_ops);
	VUS_OPTS(vus_mig_opts, o1, .ops = &no_load);
	VUS_OPTS(vus_mig_opts, o2, .ops = &no_save);
	VUS_OPTS(vus_mig_opts, o3);
	struct vus_dev *dev = vus_dev__new(NULL);
	uint32_t v;

	ASSERT_NE(NULL, dev);
	EXPECT_EQ(-EINVAL, vus_dev__setup_migration(NULL, &o));
	EXPECT_EQ(-EINVAL, vus_dev__setup_migration(dev, NULL));
	EXPECT_EQ(-EINVAL, vus_dev__setup_migration(dev, &o1));
	EXPECT_EQ(-EINVAL, vus_dev__setup_migration(dev, &o2));
	EXPECT_EQ(-EINVAL, vus_dev__setup_migration(dev, &o3));
	errno = 0;
	EXPECT_EQ(-EINVAL, vus_dev__setup_migration(dev, &big.o));
	EXPECT_EQ(EINVAL, errno);
	big.future = 0;
	EXPECT_EQ(0, vus_dev__setup_migration(dev, &big.o));
	EXPECT_EQ(-EBUSY, vus_dev__setup_migration(dev, &o));
	EXPECT_EQ(VUS_MIG_RUNNING, vus_dev__mig_state(dev));
	/* the stream calls refuse what is no stream of theirs */
	EXPECT_EQ(-EINVAL, vus_mig_stream__put(NULL, &v, 4));
	EXPECT_EQ(-EINVAL, vus_mig_stream__put_u32(NULL, 1));
	EXPECT_EQ(-EINVAL, vus_mig_stream__put_region(NULL, 1));
	EXPECT_EQ(-EINVAL, vus_mig_stream__get(NULL, &v, 4));
	EXPECT_EQ(-EINVAL, vus_mig_stream__get_u32(NULL, &v));
	EXPECT_EQ(-EINVAL, vus_mig_stream__get_region(NULL, 1));
	EXPECT_EQ(0, vus_mig_stream__remaining(NULL));
	EXPECT_FALSE(vus_mig_stream__measuring(NULL));
	vus_dev__delete(dev);
	EXPECT_EQ(VUS_MIG_RUNNING, vus_dev__mig_state(NULL));
}

/* ---- DEVICE_FEATURE ------------------------------------------------------ */

TEST_F(mig, get_migration_flags)
{
	uint64_t flags;

	ASSERT_EQ(0, get_u64(&self->src.cl, F_MIG, &flags));
	EXPECT_EQ(VFIO_USER_MIGRATION_STOP_COPY | VFIO_USER_MIGRATION_P2P |
		  (variant->pre_copy ? VFIO_USER_MIGRATION_PRE_COPY : 0), flags);
	EXPECT_EQ(RUNNING, get_state(&self->src.cl));
	/* GET with a zeroed data copy, and with a larger argsz */
	EXPECT_EQ(0, feature0(&self->src.cl, FGET | F_MIG, 16, &flags, 8));
	EXPECT_EQ(0, feature0(&self->src.cl, FGET | F_MIG, 4096, NULL, 0));
}

TEST_F(mig, probe)
{
	struct cl *cl = &self->src.cl;
	struct cl_msg r;
	uint8_t req[8];

	/* a PROBE reply repeats the request */
	ASSERT_EQ(0, feature(cl, FPROBE | FGET | F_MIG, 8, NULL, 0, &r));
	put32(req, 8);
	put32(req + 4, FPROBE | FGET | F_MIG);
	EXPECT_EQ(8, r.len);
	EXPECT_EQ(0, memcmp(r.payload, req, 8));
	cl_msg_free(&r);
	EXPECT_EQ(0, feature0(cl, FPROBE | F_MIG, 8, NULL, 0));
	EXPECT_EQ(0, feature0(cl, FPROBE | FGET | FSET | F_STATE, 8, NULL, 0));
	EXPECT_EQ(0, feature0(cl, FPROBE | FGET | F_SIZE, 8, NULL, 0));
	EXPECT_EQ(-EINVAL, feature0(cl, FPROBE | FSET | F_MIG, 8, NULL, 0));
	EXPECT_EQ(-EINVAL, feature0(cl, FPROBE | FSET | F_SIZE, 8, NULL, 0));
	/* not offered: DMA logging, unknown features */
	EXPECT_EQ(-EOPNOTSUPP, feature0(cl, FPROBE | FSET | 6, 8, NULL, 0));
	EXPECT_EQ(-EOPNOTSUPP, feature0(cl, FPROBE | FSET | 7, 8, NULL, 0));
	EXPECT_EQ(-EOPNOTSUPP, feature0(cl, FPROBE | FGET | 8, 8, NULL, 0));
	EXPECT_EQ(-EOPNOTSUPP, feature0(cl, FGET | 0, 16, NULL, 0));
	EXPECT_EQ(-EOPNOTSUPP, feature0(cl, FGET | 3, 16, NULL, 0));
	EXPECT_EQ(-EOPNOTSUPP, feature0(cl, FGET | 0xffff, 16, NULL, 0));
	EXPECT_EQ(RUNNING, get_state(cl));
}

TEST_F(mig, feature_malformed)
{
	struct cl *cl = &self->src.cl;
	struct vfio_user_device_feature_mig_state st = {
		.device_state = htole32(STOP),
	};
	uint8_t junk[32] = { 0 };
	uint32_t state;

	/* shorter than argsz + flags */
	EXPECT_EQ(-EINVAL, cl_cmd0(cl, VFIO_USER_DEVICE_FEATURE, junk, 0));
	EXPECT_EQ(-EINVAL, cl_cmd0(cl, VFIO_USER_DEVICE_FEATURE, junk, 7));
	/* unknown flag bits; no operation; GET and SET together */
	EXPECT_EQ(-EINVAL, feature0(cl, (1U << 19) | FGET | F_MIG, 16, NULL, 0));
	EXPECT_EQ(-EINVAL, feature0(cl, (1U << 31) | FGET | F_STATE, 16, NULL, 0));
	EXPECT_EQ(-EINVAL, feature0(cl, F_MIG, 16, NULL, 0));
	EXPECT_EQ(-EINVAL, feature0(cl, FGET | FSET | F_STATE, 16, &st, 8));
	/* argsz too small for the reply */
	EXPECT_EQ(-EINVAL, feature0(cl, FGET | F_MIG, 15, NULL, 0));
	EXPECT_EQ(-EINVAL, feature0(cl, FGET | F_STATE, 0, NULL, 0));
	EXPECT_EQ(-EINVAL, feature0(cl, FSET | F_STATE, 8, &st, 8));
	/* data of the wrong length */
	EXPECT_EQ(-EINVAL, feature0(cl, FGET | F_MIG, 16, junk, 4));
	EXPECT_EQ(-EINVAL, feature0(cl, FGET | F_MIG, 16, junk, 9));
	EXPECT_EQ(-EINVAL, feature0(cl, FSET | F_STATE, 16, &st, 4));
	EXPECT_EQ(-EINVAL, feature0(cl, FSET | F_STATE, 16, junk, 12));
	EXPECT_EQ(-EINVAL, feature0(cl, FSET | F_STATE, 16, NULL, 0));
	EXPECT_EQ(-EINVAL, feature0(cl, FPROBE | FGET | F_MIG, 16, junk, 9));
	/* operations a feature lacks */
	EXPECT_EQ(-EINVAL, feature0(cl, FSET | F_MIG, 16, junk, 8));
	EXPECT_EQ(-EINVAL, feature0(cl, FSET | F_SIZE, 16, junk, 8));
	/* states that do not exist or cannot be asked for */
	for (state = 8; state < 12; state++)
		EXPECT_EQ(-EINVAL, set_state(cl, state));
	EXPECT_EQ(-EINVAL, set_state(cl, 0xffffffff));
	EXPECT_EQ(-EINVAL, set_state(cl, ERROR));
	/* none of it moved the device */
	EXPECT_EQ(RUNNING, get_state(cl));
	EXPECT_EQ(0, self->src.t.nr_arcs);
	EXPECT_EQ(0, reg_write64(cl, R_SCRATCH, 1));
}

/* ---- the state machine --------------------------------------------------- */

/*
 * The next state on the way from one state to another, written from the
 * rules of <linux/vfio.h> (shortest path; no saving state inside a path
 * unless the path stays in the saving group it started in and ends there;
 * never through RESUMING), with P2P offered. -1: no path. For a device
 * without PRE_COPY, rows and columns of PRE_COPY* are unused and no path
 * below passes through them.
 */
static const int next_state[NR_STATES][NR_STATES] = {
	[RUNNING] = {
		[ERROR] = -1, [STOP] = RUNNING_P2P, [RUNNING] = RUNNING,
		[STOP_COPY] = RUNNING_P2P, [RESUMING] = RUNNING_P2P,
		[RUNNING_P2P] = RUNNING_P2P, [PRE_COPY] = PRE_COPY,
		[PRE_COPY_P2P] = RUNNING_P2P,
	},
	[RUNNING_P2P] = {
		[ERROR] = -1, [STOP] = STOP, [RUNNING] = RUNNING,
		[STOP_COPY] = STOP, [RESUMING] = STOP,
		[RUNNING_P2P] = RUNNING_P2P, [PRE_COPY] = RUNNING,
		[PRE_COPY_P2P] = PRE_COPY_P2P,
	},
	[STOP] = {
		[ERROR] = -1, [STOP] = STOP, [RUNNING] = RUNNING_P2P,
		[STOP_COPY] = STOP_COPY, [RESUMING] = RESUMING,
		[RUNNING_P2P] = RUNNING_P2P, [PRE_COPY] = RUNNING_P2P,
		[PRE_COPY_P2P] = RUNNING_P2P,
	},
	[STOP_COPY] = {
		[ERROR] = -1, [STOP] = STOP, [RUNNING] = STOP,
		[STOP_COPY] = STOP_COPY, [RESUMING] = STOP,
		[RUNNING_P2P] = STOP, [PRE_COPY] = -1, [PRE_COPY_P2P] = -1,
	},
	[RESUMING] = {
		[ERROR] = -1, [STOP] = STOP, [RUNNING] = STOP,
		[STOP_COPY] = STOP, [RESUMING] = RESUMING,
		[RUNNING_P2P] = STOP, [PRE_COPY] = STOP, [PRE_COPY_P2P] = STOP,
	},
	[PRE_COPY] = {
		[ERROR] = -1, [STOP] = RUNNING, [RUNNING] = RUNNING,
		[STOP_COPY] = PRE_COPY_P2P, [RESUMING] = RUNNING,
		[RUNNING_P2P] = RUNNING, [PRE_COPY] = PRE_COPY,
		[PRE_COPY_P2P] = PRE_COPY_P2P,
	},
	[PRE_COPY_P2P] = {
		[ERROR] = -1, [STOP] = RUNNING_P2P, [RUNNING] = RUNNING_P2P,
		[STOP_COPY] = STOP_COPY, [RESUMING] = RUNNING_P2P,
		[RUNNING_P2P] = RUNNING_P2P, [PRE_COPY] = PRE_COPY,
		[PRE_COPY_P2P] = PRE_COPY_P2P,
	},
};

static bool st_ok(bool pre_copy, int s)
{
	return s != ERROR && (pre_copy || (s != PRE_COPY && s != PRE_COPY_P2P));
}

/* A valid stream of the source device, for the RESUMING arcs. */
static int stream_of(struct side *s, struct stream *out)
{
	int err = save_stream(s, out, 4096);

	return err ?: set_state(&s->cl, RUNNING);
}

/* From RUNNING (after a reset) to @state; RESUMING gets @valid written. */
static int goto_state(struct side *d, int state, const struct stream *valid)
{
	int err = reset(&d->cl);

	if (!err)
		err = set_state(&d->cl, state);
	if (!err && state == RESUMING)
		err = write_all(&d->cl, valid->data, valid->len, 4096);
	return err;
}

TEST_F(mig, every_legal_arc)
{
	static const uint8_t arcs[][2] = {
		{ RUNNING, RUNNING_P2P }, { RUNNING_P2P, RUNNING },
		{ RUNNING_P2P, STOP }, { STOP, RUNNING_P2P },
		{ STOP, STOP_COPY }, { STOP_COPY, STOP },
		{ STOP, RESUMING }, { RESUMING, STOP },
		{ RUNNING, PRE_COPY }, { PRE_COPY, RUNNING },
		{ RUNNING_P2P, PRE_COPY_P2P }, { PRE_COPY_P2P, RUNNING_P2P },
		{ PRE_COPY, PRE_COPY_P2P }, { PRE_COPY_P2P, PRE_COPY },
		{ PRE_COPY_P2P, STOP_COPY },
	};
	struct side *d = &self->dst;
	struct stream valid = { 0 };
	unsigned int i, n = 0;

	ASSERT_EQ(0, stream_of(&self->src, &valid));
	for (i = 0; i < sizeof(arcs) / sizeof(arcs[0]); i++) {
		int from = arcs[i][0], to = arcs[i][1];

		if (!st_ok(variant->pre_copy, from) ||
		    !st_ok(variant->pre_copy, to))
			continue;
		ASSERT_EQ(0, goto_state(d, from, &valid));
		ASSERT_EQ(from, get_state(&d->cl));
		log_clear(d);
		ASSERT_EQ(0, set_state(&d->cl, to)) {
			TH_LOG("%s -> %s", st_name[from], st_name[to]);
		}
		EXPECT_EQ(to, get_state(&d->cl));
		EXPECT_EQ(1, d->t.nr_arcs);
		EXPECT_EQ(from, d->t.arcs[0][0]);
		EXPECT_EQ(to, d->t.arcs[0][1]);
		n++;
	}
	EXPECT_EQ(variant->pre_copy ? 15 : 8, n);
	free(valid.data);
}

TEST_F(mig, every_path)
{
	struct side *d = &self->dst;
	struct stream valid = { 0 };
	unsigned int paths = 0, refused = 0;
	int from, to;

	ASSERT_EQ(0, stream_of(&self->src, &valid));
	for (from = 0; from < NR_STATES; from++) {
		if (!st_ok(variant->pre_copy, from))
			continue;
		for (to = 0; to < NR_STATES; to++) {
			int s = from, n = 0, err;

			ASSERT_EQ(0, goto_state(d, from, &valid));
			log_clear(d);
			err = set_state(&d->cl, to);
			if (!st_ok(variant->pre_copy, to) ||
			    next_state[from][to] < 0) {
				EXPECT_EQ(-EINVAL, err) {
					TH_LOG("%s -> %s", st_name[from],
					       st_name[to]);
				}
				EXPECT_EQ(0, d->t.nr_arcs);
				EXPECT_EQ(from, get_state(&d->cl));
				refused++;
				continue;
			}
			ASSERT_EQ(0, err) {
				TH_LOG("%s -> %s", st_name[from], st_name[to]);
			}
			/* the arcs taken follow the table */
			while (s != to) {
				int nx = next_state[s][to];

				ASSERT_LT(n, d->t.nr_arcs);
				EXPECT_EQ(s, d->t.arcs[n][0]);
				EXPECT_EQ(nx, d->t.arcs[n][1]) {
					TH_LOG("%s -> %s: arc %d", st_name[from],
					       st_name[to], n);
				}
				s = nx;
				n++;
			}
			EXPECT_EQ(n, d->t.nr_arcs);
			EXPECT_EQ(to, get_state(&d->cl));
			paths++;
		}
	}
	/* 7 x 7 with PRE_COPY (2 refused: STOP_COPY -> PRE_COPY*), else 5 x 5 */
	EXPECT_EQ(variant->pre_copy ? 47 : 25, paths);
	EXPECT_EQ(variant->pre_copy ? 9 : 15, refused);
	free(valid.data);
}

TEST_F(mig, error_left_only_by_reset)
{
	struct side *d = &self->dst;
	struct stream good = { 0 };
	uint8_t *bad;
	int s;

	ASSERT_EQ(0, stream_of(&self->src, &good));
	/* a device section the device refuses, framing and CRC intact */
	bad = malloc(good.len);
	memcpy(bad, good.data, good.len);
	bad[dev_section(bad)] ^= 0xff;		/* the device's magic */
	fix_crc(bad, good.len);
	ASSERT_EQ(0, set_state(&d->cl, RESUMING));
	ASSERT_EQ(0, write_all(&d->cl, bad, good.len, 4096));
	EXPECT_EQ(-EINVAL, set_state(&d->cl, STOP));
	EXPECT_EQ(ERROR, get_state(&d->cl));
	EXPECT_EQ(VUS_MIG_ERROR, vus_dev__mig_state(d->dev));
	EXPECT_TRUE(vus_dev__stopped(d->dev));
	log_clear(d);
	for (s = 0; s < NR_STATES; s++)
		EXPECT_EQ(-EINVAL, set_state(&d->cl, s));
	EXPECT_EQ(0, d->t.nr_arcs);
	EXPECT_EQ(ERROR, get_state(&d->cl));
	/* stopped: no writes */
	EXPECT_EQ(-EBUSY, reg_write64(&d->cl, R_SCRATCH, 1));
	EXPECT_EQ(0, reset(&d->cl));
	EXPECT_EQ(RUNNING, get_state(&d->cl));
	EXPECT_EQ(0, reg_write64(&d->cl, R_SCRATCH, 1));
	/* and it migrates again */
	EXPECT_EQ(0, load_stream(d, good.data, good.len, 4096));
	free(bad);
	free(good.data);
}

TEST_F(mig, reset_from_every_state)
{
	struct side *d = &self->dst;
	struct stream valid = { 0 };
	uint32_t got;
	uint8_t buf[64] = { 0 };
	int s;

	ASSERT_EQ(0, stream_of(&self->src, &valid));
	for (s = 0; s < NR_STATES; s++) {
		if (!st_ok(variant->pre_copy, s))
			continue;
		ASSERT_EQ(0, goto_state(d, s, &valid));
		EXPECT_EQ(0, reset(&d->cl));
		EXPECT_EQ(RUNNING, get_state(&d->cl));
		/* the session is over */
		EXPECT_EQ(-EINVAL, mig_read(&d->cl, 72, 64, buf, &got));
		EXPECT_EQ(-EINVAL, mig_write(&d->cl, buf, 8));
	}
	free(valid.data);
}

TEST_F(mig, transition_refused)
{
	struct side *s = &self->src;

	s->t.fail_arc = true;
	s->t.fail_from = RUNNING_P2P;
	s->t.fail_to = STOP;
	/* RUNNING -> STOP is RUNNING -> RUNNING_P2P -> STOP: the second fails */
	EXPECT_EQ(-EIO, set_state(&s->cl, STOP));
	EXPECT_EQ(RUNNING_P2P, get_state(&s->cl));
	s->t.fail_arc = false;
	EXPECT_EQ(0, set_state(&s->cl, STOP));
	EXPECT_EQ(STOP, get_state(&s->cl));
}

TEST_F(mig, save_failure)
{
	struct side *s = &self->src;
	uint32_t got;
	uint8_t buf[64] = { 0 };

	ASSERT_EQ(0, set_state(&s->cl, STOP));
	log_clear(s);
	s->t.fail_save = -ENOMEM;
	/* back along the reverse arc */
	EXPECT_EQ(-ENOMEM, set_state(&s->cl, STOP_COPY));
	EXPECT_EQ(STOP, get_state(&s->cl));
	ASSERT_EQ(2, s->t.nr_arcs);
	EXPECT_EQ(STOP_COPY, s->t.arcs[1][0]);
	EXPECT_EQ(STOP, s->t.arcs[1][1]);
	EXPECT_EQ(-EINVAL, mig_read(&s->cl, 72, 64, buf, &got));
	s->t.fail_save = 0;
	EXPECT_EQ(0, set_state(&s->cl, STOP_COPY));
	EXPECT_EQ(0, mig_read(&s->cl, 72, 64, buf, &got));
	EXPECT_EQ(64, got);
	if (!variant->pre_copy)
		return;
	/* PRE_COPY_P2P -> STOP_COPY has no way back: ERROR */
	ASSERT_EQ(0, reset(&s->cl));
	ASSERT_EQ(0, set_state(&s->cl, PRE_COPY_P2P));
	s->t.fail_save = -ENOMEM;
	EXPECT_EQ(-ENOMEM, set_state(&s->cl, STOP_COPY));
	EXPECT_EQ(ERROR, get_state(&s->cl));
	s->t.fail_save = 0;
	/* a failed pre-copy round: back to RUNNING */
	ASSERT_EQ(0, reset(&s->cl));
	s->t.fail_save = -ENOSPC;
	EXPECT_EQ(-ENOSPC, set_state(&s->cl, PRE_COPY));
	EXPECT_EQ(RUNNING, get_state(&s->cl));
}

/* ---- what a stopped device does ------------------------------------------ */

TEST_F(mig, stopped_device_keeps_still)
{
	struct side *s = &self->src;
	struct cl *cl = &s->cl;
	uint64_t v;
	uint32_t c;
	uint8_t b4[16] = { 1, 2, 3 }, msix[16] = { 0 };
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	ASSERT_LE(0, efd);
	ASSERT_EQ(0, cl_dma_map(cl, M_MEM_IOVA, M_MEM_SIZE,
				VFIO_USER_F_DMA_REGION_READ |
				VFIO_USER_F_DMA_REGION_WRITE, -1, 0));
	ASSERT_EQ(0, set_irq_efd(cl, VFIO_PCI_MSIX_IRQ_INDEX, 2, efd));
	ASSERT_EQ(0, reg_write64(cl, R_SRC, M_MEM_IOVA));
	ASSERT_EQ(0, reg_write64(cl, R_DST, M_MEM_IOVA + 4096));
	ASSERT_EQ(0, reg_write64(cl, R_LEN, 100));
	ASSERT_EQ(0, reg_write64(cl, R_DOORBELL, 1));
	ASSERT_EQ(0, reg_read64(cl, R_STATUS, &v));
	EXPECT_EQ(0, v);

	/* quiesced: region writes reach the device, DMA and IRQs do not */
	ASSERT_EQ(0, set_state(cl, RUNNING_P2P));
	EXPECT_FALSE(vus_dev__running(s->dev));
	EXPECT_FALSE(vus_dev__stopped(s->dev));
	EXPECT_EQ(0, reg_write64(cl, R_DOORBELL, 1));
	ASSERT_EQ(0, reg_read64(cl, R_STATUS, &v));
	EXPECT_EQ(-EBUSY, (int64_t)v);
	EXPECT_EQ(0, reg_write64(cl, R_IRQ, VFIO_PCI_MSIX_IRQ_INDEX << 16 | 2));
	ASSERT_EQ(0, reg_read64(cl, R_IRQ_RESULT, &v));
	EXPECT_EQ(-EBUSY, (int64_t)v);
	EXPECT_FALSE(efd_fired(efd));
	errno = 0;
	EXPECT_EQ(NULL, vus_dev__dma_ptr(s->dev, M_MEM_IOVA, 8, VUS_DMA_READ));
	EXPECT_EQ(EBUSY, errno);

	/* stopped: reads yes, writes to the device's regions no */
	ASSERT_EQ(0, set_state(cl, STOP));
	EXPECT_TRUE(vus_dev__stopped(s->dev));
	EXPECT_EQ(-EBUSY, reg_write64(cl, R_SCRATCH, 7));
	EXPECT_EQ(-EBUSY, cl_region_write(cl, VFIO_PCI_BAR4_REGION_INDEX, 0,
					  b4, sizeof(b4)));
	EXPECT_EQ(-EBUSY, cl_region_write(cl, VFIO_PCI_BAR1_REGION_INDEX, 0,
					  b4, sizeof(b4)));
	EXPECT_EQ(0, reg_read64(cl, R_SCRATCH, &v));
	EXPECT_EQ(0, cl_region_read(cl, VFIO_PCI_BAR4_REGION_INDEX, 0, b4, 16));
	/* config space, the MSI-X table, SET_IRQS, DMA_MAP/UNMAP: served */
	EXPECT_EQ(0, cfg_write(cl, PCI_COMMAND, PCI_COMMAND_MEMORY, 2));
	EXPECT_EQ(0, cl_region_read(cl, VFIO_PCI_CONFIG_REGION_INDEX,
				    PCI_COMMAND, &c, 2));
	EXPECT_EQ(PCI_COMMAND_MEMORY, le32toh(c) & 0xffff);
	msix[12] = 0;	/* vector 0 unmasked */
	EXPECT_EQ(0, cl_region_write(cl, VFIO_PCI_BAR0_REGION_INDEX,
				     M_MSIX_TABLE, msix, 16));
	EXPECT_EQ(0, cl_dma_map(cl, 0x10000000, 4096,
				VFIO_USER_F_DMA_REGION_READ, -1, 0));
	EXPECT_EQ(0, cl_dma_unmap(cl, 0x10000000, 4096, 0));
	/* the client's own trigger is held until the device runs */
	EXPECT_EQ(0, irq_action(cl, VFIO_IRQ_SET_ACTION_TRIGGER,
				VFIO_PCI_MSIX_IRQ_INDEX, 2));
	EXPECT_FALSE(efd_fired(efd));
	ASSERT_EQ(0, set_state(cl, RUNNING_P2P));
	EXPECT_FALSE(efd_fired(efd));
	ASSERT_EQ(0, set_state(cl, RUNNING));
	EXPECT_TRUE(efd_fired(efd));
	EXPECT_TRUE(vus_dev__running(s->dev));
	EXPECT_EQ(0, reg_write64(cl, R_DOORBELL, 1));
	ASSERT_EQ(0, reg_read64(cl, R_STATUS, &v));
	EXPECT_EQ(0, v);
	close(efd);
}

/* an interrupt held while stopped does not outlive DEVICE_RESET */
TEST_F(mig, reset_drops_held_irq)
{
	struct side *s = &self->src;
	struct cl *cl = &s->cl;
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	ASSERT_LE(0, efd);
	ASSERT_EQ(0, set_irq_efd(cl, VFIO_PCI_MSIX_IRQ_INDEX, 2, efd));
	ASSERT_EQ(0, set_state(cl, STOP));
	/* masked and stopped: the trigger is held */
	ASSERT_EQ(0, irq_action(cl, VFIO_IRQ_SET_ACTION_MASK,
				VFIO_PCI_MSIX_IRQ_INDEX, 2));
	ASSERT_EQ(0, irq_action(cl, VFIO_IRQ_SET_ACTION_TRIGGER,
				VFIO_PCI_MSIX_IRQ_INDEX, 2));
	EXPECT_FALSE(efd_fired(efd));
	ASSERT_EQ(0, reset(cl));
	EXPECT_EQ(RUNNING, get_state(cl));
	ASSERT_EQ(0, irq_action(cl, VFIO_IRQ_SET_ACTION_UNMASK,
				VFIO_PCI_MSIX_IRQ_INDEX, 2));
	EXPECT_FALSE(efd_fired(efd));
	/* nor on the next stop and run */
	ASSERT_EQ(0, set_state(cl, STOP));
	ASSERT_EQ(0, set_state(cl, RUNNING));
	EXPECT_FALSE(efd_fired(efd));
	/* a fresh trigger still fires */
	ASSERT_EQ(0, irq_action(cl, VFIO_IRQ_SET_ACTION_TRIGGER,
				VFIO_PCI_MSIX_IRQ_INDEX, 2));
	EXPECT_TRUE(efd_fired(efd));
	close(efd);
}

/* ---- save on one instance, load into the other --------------------------- */

/* Give the source a state worth migrating; MSI-X vector 1 (@efd) pending. */
static void make_state(struct __test_metadata *_metadata, struct side *s,
		       int efd)
{
	struct cl *cl = &s->cl;
	uint8_t *bar1 = vus_dev__region_mem(s->dev, 1);
	uint8_t *bar2 = vus_dev__region_mem(s->dev, 2);
	uint8_t buf[4096], msix[16];
	unsigned int i;
	uint64_t v;

	for (i = 0; i < 8; i++)
		ASSERT_EQ(0, reg_write64(cl, R_SCRATCH + 8 * i,
					 0x1111111111111111ULL * (i + 1)));
	/* BAR1 by message and as through a client's mmap */
	for (i = 0; i < sizeof(buf); i++)
		buf[i] = i * 7 + 3;
	ASSERT_EQ(0, cl_region_write(cl, 1, 8192, buf, sizeof(buf)));
	memset(bar1 + 100, 0xa5, 3000);
	/* BAR2: scattered pages, one written and zeroed again, a last byte */
	ASSERT_EQ(0, cl_region_write(cl, 2, 3 * 4096 + 17, buf, 1000));
	memset(bar2 + 200 * 4096, 0x5a, 2 * 4096 + 1);
	memset(bar2 + 100 * 4096, 0x77, 4096);
	memset(bar2 + 100 * 4096, 0, 4096);
	bar2[M_BAR2_SIZE - 1] = 0xee;
	ASSERT_EQ(0, cl_region_write(cl, 4, 4000, "end of BAR4", 12));
	/* config space */
	ASSERT_EQ(0, cfg_write(cl, PCI_COMMAND, PCI_COMMAND_MEMORY |
			       PCI_COMMAND_MASTER, 2));
	ASSERT_EQ(0, cfg_write(cl, PCI_BASE_ADDRESS_0, 0xfe000000, 4));
	ASSERT_EQ(0, cfg_write(cl, PCI_BASE_ADDRESS_2, 0xc0000000, 4));
	ASSERT_EQ(0, cfg_write(cl, PCI_BASE_ADDRESS_3, 0x1, 4));
	ASSERT_EQ(0, cfg_write(cl, PCI_INTERRUPT_LINE, 11, 1));
	ASSERT_EQ(0, cfg_write(cl, 0x40 + PCI_MSIX_FLAGS,
			       PCI_MSIX_FLAGS_ENABLE, 2));
	/* an MSI-X table entry */
	for (i = 0; i < 16; i++)
		msix[i] = 0x40 + i;
	msix[12] = 0;
	ASSERT_EQ(0, cl_region_write(cl, 0, M_MSIX_TABLE + 3 * 16, msix, 16));
	/* vector 1 raised while masked: pending */
	ASSERT_EQ(0, set_irq_efd(cl, VFIO_PCI_MSIX_IRQ_INDEX, 1, efd));
	ASSERT_EQ(0, irq_action(cl, VFIO_IRQ_SET_ACTION_MASK,
				VFIO_PCI_MSIX_IRQ_INDEX, 1));
	ASSERT_EQ(0, reg_write64(cl, R_IRQ, VFIO_PCI_MSIX_IRQ_INDEX << 16 | 1));
	ASSERT_EQ(0, reg_read64(cl, R_IRQ_RESULT, &v));
	ASSERT_EQ(1, v);
}

/* Compare what a client sees of both devices and their memory. */
static void same_state(struct __test_metadata *_metadata, struct side *a,
		       struct side *b)
{
	uint8_t ca[256], cb[256], ma[M_MSIX * 16], mb[M_MSIX * 16];
	unsigned int i;

	for (i = 0; i < 256; i += 64) {
		ASSERT_EQ(0, cl_region_read(&a->cl, 7, i, ca + i, 64));
		ASSERT_EQ(0, cl_region_read(&b->cl, 7, i, cb + i, 64));
	}
	EXPECT_EQ(0, memcmp(ca, cb, 256));
	ASSERT_EQ(0, cl_region_read(&a->cl, 0, M_MSIX_TABLE, ma, sizeof(ma)));
	ASSERT_EQ(0, cl_region_read(&b->cl, 0, M_MSIX_TABLE, mb, sizeof(mb)));
	EXPECT_EQ(0, memcmp(ma, mb, sizeof(ma)));
	ASSERT_EQ(0, cl_region_read(&a->cl, 0, 0, ca, M_REGS));
	ASSERT_EQ(0, cl_region_read(&b->cl, 0, 0, cb, M_REGS));
	EXPECT_EQ(0, memcmp(ca, cb, M_REGS));
	/* the servers are idle between messages: their memory can be read */
	EXPECT_EQ(0, memcmp(vus_dev__region_mem(a->dev, 1),
			    vus_dev__region_mem(b->dev, 1), M_BAR1_SIZE));
	EXPECT_EQ(0, memcmp(vus_dev__region_mem(a->dev, 2),
			    vus_dev__region_mem(b->dev, 2), M_BAR2_SIZE));
	EXPECT_EQ(0, memcmp(vus_dev__region_mem(a->dev, 4),
			    vus_dev__region_mem(b->dev, 4), M_BAR4_SIZE));
}

TEST_F(mig, save_and_load_identical)
{
	struct side *s = &self->src, *d = &self->dst;
	struct stream st = { 0 };
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	int defd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	uint8_t *bar2 = vus_dev__region_mem(d->dev, 2);

	ASSERT_LE(0, efd);
	ASSERT_LE(0, defd);
	make_state(_metadata, s, efd);
	/* the destination holds stale data the load must clear */
	memset(bar2 + 50 * 4096, 0x99, 4096);
	ASSERT_EQ(0, save_stream(s, &st, 4096));
	/*
	 * Sparse: of the 1 MiB + 68 KiB of memory only the 8 non-zero pages
	 * (BAR1 2, BAR2 5, BAR4 1) travel, plus headers.
	 */
	EXPECT_GT(st.len, 8 * 4096);
	EXPECT_LT(st.len, 8 * 4096 + 2048);
	EXPECT_EQ(1, s->t.nr_saves);
	EXPECT_TRUE(s->t.saves_final[0]);
	EXPECT_EQ(-EINVAL, s->t.bad_region_put);	/* BAR0 has a callback */

	ASSERT_EQ(0, set_irq_efd(&d->cl, VFIO_PCI_MSIX_IRQ_INDEX, 1, defd));
	log_clear(d);
	ASSERT_EQ(0, load_stream(d, st.data, st.len, 4096));
	ASSERT_EQ(1, d->t.nr_loads);
	EXPECT_EQ(3, d->t.load_version[0]);
	EXPECT_TRUE(d->t.loads_final[0]);
	same_state(_metadata, s, d);
	/* the pending vector fires on the destination once it runs */
	EXPECT_FALSE(efd_fired(defd));
	ASSERT_EQ(0, set_state(&d->cl, RUNNING));
	EXPECT_TRUE(efd_fired(defd));
	/* the same stream, in odd pieces, into the destination again */
	ASSERT_EQ(0, load_stream(d, st.data, st.len, 777));
	same_state(_metadata, s, d);
	/* a second STOP_COPY session streams the same state */
	{
		struct stream again = { 0 };

		ASSERT_EQ(0, save_stream(s, &again, 4096));
		EXPECT_EQ(st.len, again.len);
		EXPECT_EQ(0, memcmp(st.data, again.data, st.len));
		free(again.data);
	}
	free(st.data);
	close(efd);
	close(defd);
}

TEST_F(mig, pre_copy_rounds)
{
	struct side *s = &self->src, *d = &self->dst;
	struct stream pre = { 0 }, st = { 0 };
	uint8_t *bar2 = vus_dev__region_mem(s->dev, 2);
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	uint32_t got;
	uint64_t v;
	uint8_t buf[64] = { 0 };

	if (!variant->pre_copy) {
		EXPECT_EQ(-EINVAL, set_state(&s->cl, PRE_COPY));
		EXPECT_EQ(-EINVAL, set_state(&s->cl, PRE_COPY_P2P));
		close(efd);
		return;
	}
	make_state(_metadata, s, efd);
	ASSERT_EQ(0, cl_dma_map(&s->cl, M_MEM_IOVA, M_MEM_SIZE,
				VFIO_USER_F_DMA_REGION_READ |
				VFIO_USER_F_DMA_REGION_WRITE, -1, 0));
	log_clear(s);
	ASSERT_EQ(0, set_state(&s->cl, PRE_COPY));
	ASSERT_EQ(1, s->t.nr_saves);
	EXPECT_FALSE(s->t.saves_final[0]);
	/* read half of the round; the device keeps running meanwhile */
	ASSERT_EQ(0, mig_read(&s->cl, 8 + 40, 40, buf, &got));
	ASSERT_EQ(40, got);
	pre.data = malloc(40);
	memcpy(pre.data, buf, 40);
	pre.len = 40;
	EXPECT_TRUE(vus_dev__running(s->dev));
	ASSERT_EQ(0, reg_write64(&s->cl, R_SRC, M_MEM_IOVA));
	ASSERT_EQ(0, reg_write64(&s->cl, R_DST, M_MEM_IOVA + 8192));
	ASSERT_EQ(0, reg_write64(&s->cl, R_LEN, 64));
	ASSERT_EQ(0, reg_write64(&s->cl, R_DOORBELL, 1));
	ASSERT_EQ(0, reg_read64(&s->cl, R_STATUS, &v));
	EXPECT_EQ(0, v);
	/* and changes memory the round already carried */
	memset(bar2 + 300 * 4096, 0x31, 4096);
	ASSERT_EQ(0, read_all(&s->cl, 1000, &pre));
	/* the round is over: more reads return nothing, for now */
	ASSERT_EQ(0, mig_read(&s->cl, 8 + 64, 64, buf, &got));
	EXPECT_EQ(0, got);
	/* PRE_COPY -> PRE_COPY_P2P -> STOP_COPY, one session */
	ASSERT_EQ(0, set_state(&s->cl, STOP_COPY));
	ASSERT_EQ(3, s->t.nr_arcs);
	EXPECT_EQ(PRE_COPY_P2P, s->t.arcs[1][1]);
	EXPECT_EQ(STOP_COPY, s->t.arcs[2][1]);
	ASSERT_EQ(2, s->t.nr_saves);
	EXPECT_TRUE(s->t.saves_final[1]);
	ASSERT_EQ(0, read_all(&s->cl, 4096, &st));
	ASSERT_EQ(0, set_state(&s->cl, STOP));

	pre.data = realloc(pre.data, pre.len + st.len);
	memcpy(pre.data + pre.len, st.data, st.len);
	pre.len += st.len;
	log_clear(d);
	ASSERT_EQ(0, load_stream(d, pre.data, pre.len, 4096));
	ASSERT_EQ(2, d->t.nr_loads);
	EXPECT_FALSE(d->t.loads_final[0]);
	EXPECT_TRUE(d->t.loads_final[1]);
	same_state(_metadata, s, d);
	/* the final frame alone is a whole state too */
	ASSERT_EQ(0, load_stream(d, st.data, st.len, 4096));
	same_state(_metadata, s, d);
	free(pre.data);
	free(st.data);
	close(efd);
}

TEST_F(mig, data_size)
{
	struct side *s = &self->src;
	struct stream st = { 0 };
	uint64_t size, left;
	uint32_t got;
	uint8_t buf[100];
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	make_state(_metadata, s, efd);
	s->t.measured = false;
	ASSERT_EQ(0, get_u64(&s->cl, F_SIZE, &size));
	EXPECT_TRUE(s->t.measured);
	EXPECT_EQ(RUNNING, get_state(&s->cl));
	EXPECT_EQ(0, s->t.nr_saves);		/* measuring is no save */
	ASSERT_EQ(0, set_state(&s->cl, STOP_COPY));
	ASSERT_EQ(0, mig_read(&s->cl, 108, 100, buf, &got));
	ASSERT_EQ(0, get_u64(&s->cl, F_SIZE, &left));
	EXPECT_EQ(size - 100, left);
	ASSERT_EQ(0, read_all(&s->cl, 4096, &st));
	EXPECT_EQ(size, st.len + 100);
	ASSERT_EQ(0, get_u64(&s->cl, F_SIZE, &left));
	EXPECT_EQ(0, left);
	free(st.data);
	close(efd);
}

/* ---- MIG_DATA_READ / MIG_DATA_WRITE checks ------------------------------- */

TEST_F(mig, split_at_small_max_xfer)
{
	struct side *s = &self->src, *d = &self->dst;
	struct stream big = { 0 }, small = { 0 };
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	uint8_t buf[512];
	uint32_t got;

	make_state(_metadata, s, efd);
	/* a client that takes 200 bytes per message */
	ASSERT_EQ(0, side_connect(s, 200));
	ASSERT_EQ(0, side_connect(d, 200));
	ASSERT_EQ(0, set_state(&s->cl, STOP_COPY));
	EXPECT_EQ(-E2BIG, mig_read(&s->cl, 8 + 201, 201, buf, &got));
	EXPECT_EQ(-E2BIG, mig_read(&s->cl, 8 + 4096, 4096, buf, &got));
	ASSERT_EQ(0, read_all(&s->cl, 200, &small));
	ASSERT_EQ(0, set_state(&s->cl, STOP));
	EXPECT_GT(small.len, 2000);
	ASSERT_EQ(0, side_connect(s, 65536));
	ASSERT_EQ(0, save_stream(s, &big, 65536));
	ASSERT_EQ(small.len, big.len);
	EXPECT_EQ(0, memcmp(small.data, big.data, big.len));
	/* writes are bounded by the server's size, not the client's */
	ASSERT_EQ(0, load_stream(d, small.data, small.len, 199));
	same_state(_metadata, s, d);
	free(small.data);
	free(big.data);
	close(efd);
}

TEST_F(mig, data_messages_checked)
{
	struct cl *cl = &self->src.cl, *dcl = &self->dst.cl;
	uint8_t *buf = calloc(1, M_MAX_XFER + 64);
	struct vfio_user_mig_data d = { .argsz = htole32(16),
					.size = htole32(8) };
	unsigned int i;
	uint32_t got;
	int err = 0;

	ASSERT_NE(NULL, buf);
	/* outside a session */
	EXPECT_EQ(-EINVAL, mig_read(cl, 16, 8, buf, &got));
	EXPECT_EQ(-EINVAL, mig_write(cl, buf, 8));
	ASSERT_EQ(0, set_state(cl, STOP_COPY));
	EXPECT_EQ(-EINVAL, mig_write(cl, buf, 8));	/* not RESUMING */
	/* lengths: the payload, argsz against size, size against the limit */
	EXPECT_EQ(-EINVAL, cl_cmd0(cl, VFIO_USER_MIG_DATA_READ, &d, 4));
	EXPECT_EQ(-EINVAL, cl_cmd0(cl, VFIO_USER_MIG_DATA_READ, buf, 12));
	EXPECT_EQ(-EINVAL, mig_read(cl, 8 + 7, 8, buf, &got));
	EXPECT_EQ(-EINVAL, mig_read(cl, 0, 8, buf, &got));
	EXPECT_EQ(-E2BIG, mig_read(cl, 0xffffffff, 0xfffffff0, buf, &got));
	EXPECT_EQ(-E2BIG, mig_read(cl, 8 + 4097, 4097, buf, &got));
	EXPECT_EQ(-E2BIG, mig_read(cl, 0xffffffff, 0xffffffff, buf, &got));
	/* a read of 0 is no end */
	EXPECT_EQ(0, mig_read(cl, 8, 0, buf, &got));
	EXPECT_EQ(0, got);
	EXPECT_EQ(0, mig_read(cl, 8 + 64, 64, buf, &got));
	EXPECT_EQ(64, got);
	EXPECT_EQ(STOP_COPY, get_state(cl));

	ASSERT_EQ(0, set_state(dcl, RESUMING));
	EXPECT_EQ(-EINVAL, mig_read(dcl, 16, 8, buf, &got));	/* RESUMING */
	/* size against the payload, both ways; a short payload */
	put32(buf, 16);
	put32(buf + 4, 9);
	EXPECT_EQ(-EINVAL, cl_cmd0(dcl, VFIO_USER_MIG_DATA_WRITE, buf, 16));
	put32(buf + 4, 7);
	EXPECT_EQ(-EINVAL, cl_cmd0(dcl, VFIO_USER_MIG_DATA_WRITE, buf, 16));
	put32(buf + 4, 0xffffffff);
	EXPECT_EQ(-EINVAL, cl_cmd0(dcl, VFIO_USER_MIG_DATA_WRITE, buf, 16));
	EXPECT_EQ(-EINVAL, cl_cmd0(dcl, VFIO_USER_MIG_DATA_WRITE, buf, 7));
	/* more than the server's max_data_xfer_size */
	EXPECT_EQ(-E2BIG, mig_write(dcl, buf, M_MAX_XFER + 1));
	EXPECT_EQ(0, mig_write(dcl, buf, M_MAX_XFER));
	EXPECT_EQ(0, mig_write(dcl, buf, 0));
	/* more than max_stream in one session */
	for (i = 1; i < M_MAX_STREAM / M_MAX_XFER && !err; i++)
		err = mig_write(dcl, buf, M_MAX_XFER);
	EXPECT_EQ(0, err);
	EXPECT_EQ(-EFBIG, mig_write(dcl, buf, 1));
	/* junk is no state, and the server is still there */
	EXPECT_EQ(-EINVAL, set_state(dcl, STOP));
	EXPECT_EQ(RESUMING, get_state(dcl));
	EXPECT_EQ(0, reset(dcl));
	EXPECT_EQ(RUNNING, get_state(dcl));
	EXPECT_EQ(0, mig_read(cl, 8 + 64, 64, buf, &got));
	free(buf);
}

/* ---- bad streams ----------------------------------------------------------- */

/* Load @p into the destination: expect @err and then state @state. */
static void expect_load(struct __test_metadata *_metadata, struct side *d,
			const uint8_t *p, size_t len, int err, int state,
			const char *what)
{
	ASSERT_EQ(0, reset(&d->cl));
	ASSERT_EQ(0, set_state(&d->cl, RESUMING));
	if (len)
		ASSERT_EQ(0, write_all(&d->cl, p, len, 4096));
	EXPECT_EQ(err, set_state(&d->cl, STOP)) {
		TH_LOG("%s", what);
	}
	EXPECT_EQ(state, get_state(&d->cl)) {
		TH_LOG("%s", what);
	}
}

TEST_F(mig, bad_streams_refused)
{
	struct side *d = &self->dst;
	struct stream good = { 0 };
	uint8_t *bad, *bar1 = vus_dev__region_mem(d->dev, 1);
	size_t n, dev_off;
	uint8_t before[256];
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	make_state(_metadata, &self->src, efd);
	ASSERT_EQ(0, save_stream(&self->src, &good, 4096));
	n = good.len;
	bad = malloc(2 * n + 64);
	dev_off = dev_section(good.data);

	/* refused by the library: the device stays in RESUMING, untouched */
	expect_load(_metadata, d, NULL, 0, -EINVAL, RESUMING, "empty");
	expect_load(_metadata, d, good.data, 31, -EINVAL, RESUMING,
		    "truncated header");
	expect_load(_metadata, d, good.data, n - 1, -EINVAL, RESUMING,
		    "truncated by one byte");
	memcpy(bad, good.data, n);
	memcpy(bad + n, good.data, n);
	expect_load(_metadata, d, bad, 2 * n, -EINVAL, RESUMING,
		    "two final frames");
	bad[n] = 0;
	expect_load(_metadata, d, bad, n + 1, -EINVAL, RESUMING,
		    "a byte after the final frame");
#define EDIT(what, stmt) do {						\
		memcpy(bad, good.data, n);				\
		stmt;							\
		expect_load(_metadata, d, bad, n, -EINVAL, RESUMING, what); \
	} while (0)
	EDIT("a data byte flipped", bad[n - 1] ^= 1);
	EDIT("a library byte flipped", bad[H_SIZE + 10] ^= 0x80);
	EDIT("the CRC flipped", bad[H_CRC] ^= 1);
	EDIT("bad magic", (bad[H_MAGIC] ^= 1, fix_crc(bad, n)));
	EDIT("format 2", (put32(bad + H_FORMAT, 2 | 1U << 16),
			  fix_crc(bad, n)));
	EDIT("unknown flag", (bad[H_FLAGS] |= 2, fix_crc(bad, n)));
	EDIT("another vendor", (bad[H_VENDOR] ^= 1, fix_crc(bad, n)));
	EDIT("another device", (bad[H_DEVICE] ^= 1, fix_crc(bad, n)));
	EDIT("device version 0", (put32(bad + H_VERSION, 0), fix_crc(bad, n)));
	EDIT("device version 4", (put32(bad + H_VERSION, 4), fix_crc(bad, n)));
	EDIT("library length + 1", (put32(bad + H_LIB_LEN,
					  get32(bad + H_LIB_LEN) + 1),
				    fix_crc(bad, n)));
	EDIT("device length past the end",
	     (put32(bad + H_DEV_LEN, get64(bad + H_DEV_LEN) + 1),
	      put32(bad + H_CRC, 0)));
	EDIT("device length 2^63", (bad[H_DEV_LEN + 7] = 0x80));
	/* the library section: config bits the client cannot write */
	EDIT("a read-only config byte", (bad[H_SIZE + 4 + PCI_REVISION_ID] ^= 1,
					 fix_crc(bad, n)));
	EDIT("config length", (put32(bad + H_SIZE, 128), fix_crc(bad, n)));
	EDIT("MSI-X length", (put32(bad + H_SIZE + 4 + 256, 16), fix_crc(bad, n)));
	/* a pre-copy frame may not carry a library section */
	EDIT("not final", (bad[H_FLAGS] = 0, fix_crc(bad, n)));
#undef EDIT
	/* an older device version is the device's to take: v3 takes v2 */
	memcpy(bad, good.data, n);
	put32(bad + H_VERSION, 2);
	fix_crc(bad, n);
	log_clear(d);
	expect_load(_metadata, d, bad, n, 0, STOP, "version 2");
	EXPECT_EQ(2, d->t.load_version[0]);

	/* refused by the device: ERROR */
	memcpy(before, bar1, sizeof(before));
	memcpy(bad, good.data, n);
	bad[dev_off] ^= 1;
	fix_crc(bad, n);
	expect_load(_metadata, d, bad, n, -EINVAL, ERROR, "device magic");
	/* a region record out of bounds: the region is left alone */
	memcpy(bad, good.data, n);
	{
		/* magic, final, regs, then BAR2's record; BAR1's after it */
		size_t rec = dev_off + 8 + M_REGS, nr, i;

		rec += 24;
		nr = get64(bad + dev_off + 8 + M_REGS + 16);
		for (i = 0; i < nr; i++)
			rec += 16 + get64(bad + rec + 8);
		/* BAR1's record: its first extent's offset past the region */
		ASSERT_EQ(1, get32(bad + rec));
		put32(bad + rec + 24, M_BAR1_SIZE - 8);
		fix_crc(bad, n);
		memset(bar1, 0x42, sizeof(before));
		memcpy(before, bar1, sizeof(before));
		expect_load(_metadata, d, bad, n, -EINVAL, ERROR,
			    "extent out of the region");
		EXPECT_EQ(0, memcmp(before, bar1, sizeof(before)));
	}
	/* the device leaves bytes unread */
	memcpy(bad, good.data, n);
	bad[n] = 0;
	put32(bad + H_DEV_LEN, get64(bad + H_DEV_LEN) + 1);
	fix_crc(bad, n + 1);
	expect_load(_metadata, d, bad, n + 1, -EINVAL, ERROR, "trailing byte");

	/* a truncated stream is still RESUMING: the rest may follow */
	ASSERT_EQ(0, reset(&d->cl));
	ASSERT_EQ(0, set_state(&d->cl, RESUMING));
	ASSERT_EQ(0, write_all(&d->cl, good.data, n - 10, 4096));
	EXPECT_EQ(-EINVAL, set_state(&d->cl, STOP));
	EXPECT_EQ(RESUMING, get_state(&d->cl));
	ASSERT_EQ(0, write_all(&d->cl, good.data + n - 10, 10, 4096));
	EXPECT_EQ(0, set_state(&d->cl, STOP));
	same_state(_metadata, &self->src, d);
	free(bad);
	free(good.data);
	close(efd);
}

TEST_F(mig, random_streams)
{
	struct side *d = &self->dst;
	struct stream good = { 0 };
	uint8_t *bad;
	unsigned int i, k, ok = 0, refused = 0, errors = 0;
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	make_state(_metadata, &self->src, efd);
	ASSERT_EQ(0, save_stream(&self->src, &good, 4096));
	bad = malloc(good.len);
	srandom(1234);
	for (i = 0; i < 300; i++) {
		size_t n = good.len;
		int err, st;

		memcpy(bad, good.data, n);
		if (i % 3 == 2) {
			/* pure noise */
			n = random() % 600;
			for (k = 0; k < n; k++)
				bad[k] = random();
		} else {
			/*
			 * A few bytes changed, anywhere or among the first
			 * 700 (headers, library section, the device's
			 * registers); every other time the CRC made right.
			 */
			for (k = 0; k < 1 + i % 4; k++)
				bad[random() % (i % 2 ? n : 700)] = random();
			if (i % 3 == 0)
				fix_crc(bad, n);
		}
		ASSERT_EQ(0, reset(&d->cl));
		ASSERT_EQ(0, set_state(&d->cl, RESUMING));
		ASSERT_EQ(0, write_all(&d->cl, bad, n, 4096));
		err = set_state(&d->cl, STOP);
		st = get_state(&d->cl);
		ASSERT_LE(0, st);	/* the server is there */
		if (!err) {
			EXPECT_EQ(STOP, st);
			ok++;
		} else if (st == RESUMING) {
			refused++;
		} else {
			EXPECT_EQ(ERROR, st);
			errors++;
		}
	}
	TH_LOG("300 mutated streams: %u loaded, %u refused by the library, %u by the device",
	       ok, refused, errors);
	EXPECT_GT(refused, 150);
	EXPECT_EQ(0, reset(&d->cl));
	EXPECT_EQ(0, load_stream(d, good.data, good.len, 4096));
	free(bad);
	free(good.data);
	close(efd);
}

/* ---- the client goes away ------------------------------------------------- */

TEST_F(mig, disconnect_ends_the_session)
{
	struct side *s = &self->src, *d = &self->dst;
	struct stream st = { 0 };
	uint8_t buf[64] = { 0 };
	uint32_t got;

	ASSERT_EQ(0, set_state(&s->cl, STOP_COPY));
	log_clear(s);
	ASSERT_EQ(0, mig_read(&s->cl, 72, 64, buf, &got));
	ASSERT_EQ(0, side_connect(s, 4096));
	EXPECT_EQ(STOP, get_state(&s->cl));
	ASSERT_EQ(1, s->t.nr_arcs);
	EXPECT_EQ(STOP_COPY, s->t.arcs[0][0]);
	EXPECT_EQ(STOP, s->t.arcs[0][1]);
	/* STOP stays STOP for the next client */
	ASSERT_EQ(0, side_connect(s, 4096));
	EXPECT_EQ(STOP, get_state(&s->cl));
	ASSERT_EQ(0, save_stream(s, &st, 4096));

	/* half a state written: ERROR, until a reset */
	ASSERT_EQ(0, set_state(&d->cl, RESUMING));
	ASSERT_EQ(0, write_all(&d->cl, st.data, st.len / 2, 4096));
	ASSERT_EQ(0, side_connect(d, 4096));
	EXPECT_EQ(ERROR, get_state(&d->cl));
	EXPECT_EQ(0, reset(&d->cl));
	EXPECT_EQ(0, load_stream(d, st.data, st.len, 4096));

	if (variant->pre_copy) {
		ASSERT_EQ(0, reset(&s->cl));
		ASSERT_EQ(0, set_state(&s->cl, PRE_COPY));
		ASSERT_EQ(0, side_connect(s, 4096));
		EXPECT_EQ(RUNNING, get_state(&s->cl));
		ASSERT_EQ(0, set_state(&s->cl, PRE_COPY_P2P));
		ASSERT_EQ(0, side_connect(s, 4096));
		EXPECT_EQ(RUNNING_P2P, get_state(&s->cl));
	}
	free(st.data);
}

TEST_HARNESS_MAIN
