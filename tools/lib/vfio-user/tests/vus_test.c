// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Unit tests of libvfio-user-server. No VM, no kernel module: the library
 * serves a test device from a thread, the test body is the client at the
 * other end of a socketpair (vus_client.h). Malformed-message tests check
 * that every bad message gets an error reply (or, where the stream cannot
 * be resynchronised, a closed connection) and that the server survives.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <json-c/json.h>
#include <linux/pci_regs.h>

#include "vfio-user-server.h"
#include "vus_client.h"
#include "kselftest_harness.h"

/* ---- the test device ---------------------------------------------------- */

#define T_VENDOR	0x4e58
#define T_DEVICE	0x0001
#define T_MAX_XFER	65536
#define T_MAX_FDS	8
#define T_BAR1_SIZE	(64 * 1024)
#define T_BAR2_SIZE	(1024 * 1024)
#define T_BAR4_SIZE	4096
#define T_MSIX		8
#define T_MSI		4
#define T_REGION_TYPED	9
#define T_MEM_IOVA	0x100000ULL
#define T_MEM_SIZE	(1024 * 1024)

/* BAR0 registers (64-bit) */
#define R_SCRATCH	0x00
#define R_SRC		0x08
#define R_DST		0x10
#define R_LEN		0x18
#define R_DOORBELL	0x20	/* write: DMA copy SRC -> DST, LEN bytes */
#define R_STATUS	0x28	/* last doorbell: 0 or -errno */
#define R_IRQ		0x30	/* write: index << 16 | vector -> trigger */
#define R_IRQ_RESULT	0x38
#define R_NR_DMA	0x40	/* read: DMA regions mapped */
#define R_RESETS	0x48
#define R_CONNECTS	0x50
#define R_DISCONNECTS	0x58
#define R_TWIN		0x60	/* read: vus_dev__twin_socket() */

struct tdev {
	uint8_t regs[4096];
};

static uint64_t reg_get(struct tdev *t, unsigned int off)
{
	uint64_t v;

	memcpy(&v, t->regs + off, 8);
	return le64toh(v);
}

static void reg_set(struct tdev *t, unsigned int off, uint64_t v)
{
	v = htole64(v);
	memcpy(t->regs + off, &v, 8);
}

static int bar0_access(struct vus_dev *dev, void *priv, uint64_t off,
		       void *buf, size_t count, bool is_write)
{
	struct tdev *t = priv;

	if (!is_write) {
		if (off == R_NR_DMA)
			reg_set(t, R_NR_DMA, vus_dev__nr_dma_regions(dev));
		if (off == R_TWIN)
			reg_set(t, R_TWIN, vus_dev__twin_socket(dev));
		memcpy(buf, t->regs + off, count);
		return 0;
	}
	memcpy(t->regs + off, buf, count);
	if (off == R_DOORBELL) {
		uint64_t len = reg_get(t, R_LEN);
		void *tmp;
		int err;

		if (len > T_MEM_SIZE) {
			reg_set(t, R_STATUS, (uint64_t)-EINVAL);
			return 0;
		}
		tmp = malloc(len ?: 1);
		err = tmp ? vus_dev__dma_read(dev, reg_get(t, R_SRC), tmp, len) :
			    -ENOMEM;
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

static int t_reset(struct vus_dev *dev, void *priv)
{
	struct tdev *t = priv;

	reg_set(t, R_RESETS, reg_get(t, R_RESETS) + 1);
	return 0;
}

static void t_connect(struct vus_dev *dev, void *priv)
{
	struct tdev *t = priv;

	reg_set(t, R_CONNECTS, reg_get(t, R_CONNECTS) + 1);
}

static void t_disconnect(struct vus_dev *dev, void *priv)
{
	struct tdev *t = priv;

	reg_set(t, R_DISCONNECTS, reg_get(t, R_DISCONNECTS) + 1);
}

static const struct vus_dev_ops t_ops = {
	.reset = t_reset,
	.connect = t_connect,
	.disconnect = t_disconnect,
};

static const struct vus_sparse_area t_sparse[] = {
	{ .offset = 0, .size = 4096 },
	{ .offset = 8192, .size = 4096 },
};

/* The test device, offering the twin socket with @twin. */
static struct vus_dev *t_dev_new_ex(struct tdev *t, bool twin, bool strict)
{
	VUS_OPTS(vus_dev_opts, o, .ops = &t_ops, .priv = t,
		 .max_data_xfer_size = T_MAX_XFER, .max_msg_fds = T_MAX_FDS,
		 .timeout_ms = 2000, .twin_socket = twin,
		 .strict_dma_reply = strict);
	VUS_OPTS(vus_pci_opts, p, .vendor_id = T_VENDOR,
		 .device_id = T_DEVICE, .class_code = 0xff0000, .irq_pin = 1);
	VUS_OPTS(vus_region_opts, bar0, .size = 4096, .access = bar0_access,
		 .priv = t);
	VUS_OPTS(vus_region_opts, bar1, .size = T_BAR1_SIZE,
		 .flags = VUS_REGION_READ | VUS_REGION_WRITE | VUS_REGION_MMAP,
		 .sparse = t_sparse, .nr_sparse = 2);
	VUS_OPTS(vus_region_opts, bar2, .size = T_BAR2_SIZE,
		 .flags = VUS_REGION_READ | VUS_REGION_WRITE |
			  VUS_REGION_BAR_MEM64 | VUS_REGION_BAR_PREFETCH);
	VUS_OPTS(vus_region_opts, bar4, .size = T_BAR4_SIZE);
	VUS_OPTS(vus_region_opts, typed, .size = 4096, .flags = VUS_REGION_READ,
		 .type = 0x4e58, .subtype = 7);
	struct vus_dev *dev = vus_dev__new(&o);

	if (!dev)
		return NULL;
	if (vus_dev__setup_pci(dev, &p) ||
	    vus_dev__add_region(dev, 0, &bar0) ||
	    vus_dev__add_region(dev, 1, &bar1) ||
	    vus_dev__add_region(dev, 2, &bar2) ||
	    vus_dev__add_region(dev, 4, &bar4) ||
	    vus_dev__add_region(dev, T_REGION_TYPED, &typed) ||
	    vus_dev__add_msix(dev, T_MSIX, 4, 0, 0x800) < 0 ||
	    vus_dev__set_irq_count(dev, VFIO_PCI_MSI_IRQ_INDEX, T_MSI) ||
	    vus_dev__set_irq_count(dev, VFIO_PCI_ERR_IRQ_INDEX, 1) ||
	    vus_dev__set_irq_count(dev, VFIO_PCI_REQ_IRQ_INDEX, 1)) {
		vus_dev__delete(dev);
		return NULL;
	}
	return dev;
}

static struct vus_dev *t_dev_new(struct tdev *t)
{
	return t_dev_new_ex(t, false, false);
}

/* ---- fixture: server thread + client ------------------------------------ */

struct srv {
	struct vus_dev *dev;
	pthread_t thr;
	atomic_bool stop;
};

static void *srv_thread(void *arg)
{
	struct srv *s = arg;
	struct pollfd pfd = { .fd = vus_dev__fd(s->dev), .events = POLLIN };

	while (!atomic_load(&s->stop)) {
		if (poll(&pfd, 1, 20) > 0)
			vus_dev__process(s->dev);
	}
	return NULL;
}

FIXTURE(vus) {
	struct tdev t;
	struct srv s;
	struct cl cl;
	char path[108];
	bool thread_started;
};

FIXTURE_SETUP(vus)
{
	int sv[2];

	memset(&self->cl, 0, sizeof(self->cl));
	self->cl.fd = -1;
	memset(&self->t, 0, sizeof(self->t));
	snprintf(self->path, sizeof(self->path), "/tmp/vus-test-%d.sock",
		 getpid());
	self->s.dev = t_dev_new(&self->t);
	ASSERT_NE(NULL, self->s.dev);
	ASSERT_EQ(0, vus_dev__listen(self->s.dev, self->path));
	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
	ASSERT_EQ(0, vus_dev__attach_fd(self->s.dev, sv[1]));
	self->cl.fd = sv[0];
	self->cl.mem = calloc(1, T_MEM_SIZE);
	ASSERT_NE(NULL, self->cl.mem);
	self->cl.mem_iova = T_MEM_IOVA;
	self->cl.mem_len = T_MEM_SIZE;
	atomic_store(&self->s.stop, false);
	ASSERT_EQ(0, pthread_create(&self->s.thr, NULL, srv_thread, &self->s));
	self->thread_started = true;
}

FIXTURE_TEARDOWN(vus)
{
	if (self->thread_started) {
		atomic_store(&self->s.stop, true);
		pthread_join(self->s.thr, NULL);
	}
	vus_dev__delete(self->s.dev);
	if (self->cl.fd >= 0)
		close(self->cl.fd);
	free(self->cl.mem);
	/* vus_dev__delete() removed the socket file */
	EXPECT_NE(0, access(self->path, F_OK));
}

#define CAPS_JSON "{\"capabilities\":{\"max_msg_fds\":8," \
		  "\"max_data_xfer_size\":4096,\"pgsizes\":4096}}"

static int negotiate(struct cl *cl)
{
	struct cl_msg r;
	int err = cl_version(cl, 0, 2, CAPS_JSON, &r);

	if (!err)
		cl_msg_free(&r);
	return err;
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

/* Connect a new client through the listening path and negotiate. */
static int reconnect(struct cl *cl, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (cl->fd >= 0)
		close(cl->fd);
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(fd);
		return -errno;
	}
	cl->fd = fd;
	cl->next_id = 0;
	return negotiate(cl);
}

/* Expect the server to close the connection (after an optional error). */
static int expect_closed(struct cl *cl, int err_no)
{
	struct cl_msg r;
	int err = cl_recv(cl, &r);

	if (!err) {
		bool ok = (r.flags & VFIO_USER_F_ERROR) &&
			  (!err_no || (int)r.error_no == err_no);

		cl_msg_free(&r);
		if (!ok)
			return -EPROTO;
		err = cl_recv(cl, &r);
		if (!err)
			cl_msg_free(&r);
	} else {
		cl_msg_free(&r);
	}
	return err == -ECONNRESET ? 0 : (err ?: -EPROTO);
}

/* Send raw bytes, expect one error reply with @err_no (0: any). */
static int raw_expect_error(struct cl *cl, const void *buf, size_t len,
			    int err_no)
{
	struct cl_msg r;
	int err = cl_send_raw(cl->fd, buf, len, NULL, 0);

	if (err)
		return err;
	err = cl_recv(cl, &r);
	if (err) {
		cl_msg_free(&r);
		return err;
	}
	if (!(r.flags & VFIO_USER_F_ERROR) || r.size != VFIO_USER_HDR_SIZE ||
	    (err_no && (int)r.error_no != err_no))
		err = -EPROTO;
	cl_msg_free(&r);
	return err;
}

static bool efd_fired(int efd)
{
	uint64_t v;

	return read(efd, &v, sizeof(v)) == sizeof(v);
}

static int new_efd(void)
{
	return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

/* ---- VERSION ------------------------------------------------------------ */

TEST_F(vus, version_caps)
{
	struct cl_msg r;
	struct vfio_user_version v;
	json_object *root, *caps, *o;

	ASSERT_EQ(0, cl_version(&self->cl, 0, 2, CAPS_JSON, &r));
	ASSERT_GT(r.len, 5);
	memcpy(&v, r.payload, 4);
	EXPECT_EQ(0, le16toh(v.major));
	EXPECT_EQ(2, le16toh(v.minor));
	ASSERT_EQ(0, r.payload[r.len - 1]);
	ASSERT_EQ(r.len - 5, strlen((char *)r.payload + 4));
	root = json_tokener_parse((char *)r.payload + 4);
	ASSERT_NE(NULL, root);
	ASSERT_TRUE(json_object_object_get_ex(root, "capabilities", &caps));
	ASSERT_TRUE(json_object_object_get_ex(caps, "max_msg_fds", &o));
	EXPECT_EQ(T_MAX_FDS, json_object_get_int64(o));
	ASSERT_TRUE(json_object_object_get_ex(caps, "max_data_xfer_size", &o));
	EXPECT_EQ(T_MAX_XFER, json_object_get_int64(o));
	ASSERT_TRUE(json_object_object_get_ex(caps, "max_dma_maps", &o));
	EXPECT_EQ(65535, json_object_get_int64(o));
	ASSERT_TRUE(json_object_object_get_ex(caps, "pgsizes", &o));
	EXPECT_EQ(4096, json_object_get_int64(o));
	json_object_put(root);
	cl_msg_free(&r);
}

TEST_F(vus, version_minor_and_no_json)
{
	struct cl_msg r;
	struct vfio_user_version v;

	ASSERT_EQ(0, cl_version(&self->cl, 0, 77, NULL, &r));
	memcpy(&v, r.payload, 4);
	EXPECT_EQ(VFIO_USER_MINOR, le16toh(v.minor));
	cl_msg_free(&r);
}

TEST_F(vus, version_empty_json_string)
{
	struct cl_msg r;

	ASSERT_EQ(0, cl_version(&self->cl, 0, 0, "", &r));
	cl_msg_free(&r);
}

TEST_F(vus, version_ignores_unknown_caps)
{
	struct cl_msg r;

	ASSERT_EQ(0, cl_version(&self->cl, 0, 2,
		"{\"capabilities\":{\"migration\":{\"pgsize\":4096},"
		"\"twin_socket\":{\"supported\":true},\"write_multiple\":true,"
		"\"future\":[1,2]},\"other\":1}", &r));
	EXPECT_EQ(NULL, strstr((char *)r.payload + 4, "twin_socket"));
	cl_msg_free(&r);
}

TEST_F(vus, version_bad_major_closes)
{
	struct vfio_user_version v = { .major = htole16(1) };

	ASSERT_LE(0, cl_send(&self->cl, VFIO_USER_VERSION, 0, &v, 4, NULL, 0));
	ASSERT_EQ(0, expect_closed(&self->cl, ENOTSUP));
	ASSERT_EQ(0, reconnect(&self->cl, self->path));
}

TEST_F(vus, version_not_first)
{
	struct vfio_user_device_info di = { .argsz = htole32(16) };

	EXPECT_EQ(-EINVAL, cl_cmd0(&self->cl, VFIO_USER_DEVICE_GET_INFO,
				   &di, sizeof(di)));
	EXPECT_EQ(-EINVAL, cl_cmd0(&self->cl, VFIO_USER_DEVICE_RESET, NULL, 0));
	ASSERT_EQ(0, negotiate(&self->cl));
	EXPECT_EQ(0, cl_cmd0(&self->cl, VFIO_USER_DEVICE_GET_INFO, &di,
			     sizeof(di)));
}

TEST_F(vus, version_twice)
{
	struct cl_msg r;

	ASSERT_EQ(0, negotiate(&self->cl));
	EXPECT_EQ(-EINVAL, cl_version(&self->cl, 0, 2, NULL, &r));
}

TEST_F(vus, version_bad_json)
{
	static const char *const bad[] = {
		"{not json",
		"[1,2,3]",
		"\"string\"",
		"{\"capabilities\":[]}",
		"{\"capabilities\":{\"max_msg_fds\":\"8\"}}",
		"{\"capabilities\":{\"max_msg_fds\":-1}}",
		"{\"capabilities\":{\"max_msg_fds\":100000}}",
		"{\"capabilities\":{\"max_data_xfer_size\":0}}",
		"{\"capabilities\":{\"max_data_xfer_size\":1.5}}",
		"{\"capabilities\":{\"max_data_xfer_size\":99999999999}}",
		"{\"capabilities\":{\"max_dma_maps\":0}}",
		"{\"capabilities\":{\"pgsizes\":0}}",
		"{\"capabilities\":{\"twin_socket\":true}}",
		"{\"capabilities\":{\"twin_socket\":{\"supported\":1}}}",
		"{\"capabilities\":{\"write_multiple\":1}}",
		"{} trailing",
		"{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
	};
	uint8_t buf[64];
	struct cl_msg r;
	unsigned int i;
	char *big;

	for (i = 0; i < ARRAY_SIZE(bad); i++) {
		TH_LOG("json %s", bad[i]);
		EXPECT_EQ(-EINVAL, cl_version(&self->cl, 0, 2, bad[i], &r));
	}
	/* not NUL-terminated */
	memset(buf, 0, sizeof(buf));
	memcpy(buf + 4, "{}", 2);
	EXPECT_EQ(-EINVAL, cl_cmd0(&self->cl, VFIO_USER_VERSION, buf, 6));
	/* NUL before the end */
	memcpy(buf + 4, "{}\0{}", 6);
	EXPECT_EQ(-EINVAL, cl_cmd0(&self->cl, VFIO_USER_VERSION, buf, 10));
	/* payload shorter than major/minor */
	EXPECT_EQ(-EINVAL, cl_cmd0(&self->cl, VFIO_USER_VERSION, buf, 3));
	/* a huge JSON document */
	big = malloc(6001);
	ASSERT_NE(NULL, big);
	memset(big, ' ', 6000);
	big[0] = '{';
	big[5999] = '}';
	big[6000] = 0;
	EXPECT_EQ(-EINVAL, cl_version(&self->cl, 0, 2, big, &r));
	free(big);
	/* the connection survives all of it */
	ASSERT_EQ(0, negotiate(&self->cl));
}

/* ---- info --------------------------------------------------------------- */

TEST_F(vus, device_get_info)
{
	struct vfio_user_device_info di = { .argsz = htole32(16) }, out;
	struct cl_msg r;

	ASSERT_EQ(0, negotiate(&self->cl));
	ASSERT_EQ(0, cl_cmd(&self->cl, VFIO_USER_DEVICE_GET_INFO, &di,
			    sizeof(di), NULL, 0, &r));
	ASSERT_EQ(sizeof(out), r.len);
	memcpy(&out, r.payload, sizeof(out));
	EXPECT_EQ(16, le32toh(out.argsz));
	EXPECT_EQ(VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET,
		  le32toh(out.flags));
	EXPECT_EQ(T_REGION_TYPED + 1, le32toh(out.num_regions));
	EXPECT_EQ(VFIO_PCI_NUM_IRQS, le32toh(out.num_irqs));
	cl_msg_free(&r);

	di.argsz = htole32(15);
	EXPECT_EQ(-EINVAL, cl_cmd0(&self->cl, VFIO_USER_DEVICE_GET_INFO, &di,
				   sizeof(di)));
	di.argsz = htole32(16);
	EXPECT_EQ(-EINVAL, cl_cmd0(&self->cl, VFIO_USER_DEVICE_GET_INFO, &di,
				   8));
}

static int region_info(struct cl *cl, uint32_t index, uint32_t argsz,
		       struct cl_msg *r)
{
	struct vfio_user_region_info ri = {
		.argsz = htole32(argsz), .index = htole32(index),
	};

	return cl_cmd(cl, VFIO_USER_DEVICE_GET_REGION_INFO, &ri, sizeof(ri),
		      NULL, 0, r);
}

TEST_F(vus, region_info_plain)
{
	struct vfio_user_region_info ri;
	struct cl_msg r;

	ASSERT_EQ(0, negotiate(&self->cl));
	ASSERT_EQ(0, region_info(&self->cl, 0, 32, &r));
	ASSERT_EQ(32, r.len);
	memcpy(&ri, r.payload, sizeof(ri));
	EXPECT_EQ(32, le32toh(ri.argsz));
	EXPECT_EQ(VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE,
		  le32toh(ri.flags));
	EXPECT_EQ(0, le32toh(ri.index));
	EXPECT_EQ(0, le32toh(ri.cap_offset));
	EXPECT_EQ(4096, le64toh(ri.size));
	EXPECT_EQ(0, r.nr_fds);
	cl_msg_free(&r);

	ASSERT_EQ(0, region_info(&self->cl, VFIO_PCI_CONFIG_REGION_INDEX, 32,
				 &r));
	memcpy(&ri, r.payload, sizeof(ri));
	EXPECT_EQ(256, le64toh(ri.size));
	cl_msg_free(&r);

	/* absent BAR: size 0, no flags */
	ASSERT_EQ(0, region_info(&self->cl, VFIO_PCI_BAR5_REGION_INDEX, 32, &r));
	memcpy(&ri, r.payload, sizeof(ri));
	EXPECT_EQ(0, le64toh(ri.size));
	EXPECT_EQ(0, le32toh(ri.flags));
	cl_msg_free(&r);

	EXPECT_EQ(-EINVAL, region_info(&self->cl, T_REGION_TYPED + 1, 32, &r));
	EXPECT_EQ(-EINVAL, region_info(&self->cl, 0xffffffff, 32, &r));
	EXPECT_EQ(-EINVAL, region_info(&self->cl, 0, 31, &r));
}

TEST_F(vus, region_info_sparse_mmap)
{
	struct vfio_user_region_info ri;
	struct vfio_user_region_info_cap_sparse_mmap sp;
	struct vfio_user_sparse_mmap_area a;
	uint32_t full = 32 + 16 + 2 * 16;
	uint8_t data[8] = "vfiouser", *map;
	struct cl_msg r;

	ASSERT_EQ(0, negotiate(&self->cl));
	/*
	 * too small for the caps: argsz tells the size, no caps, no fd, and
	 * no FLAG_CAPS (QEMU's client refuses FLAG_CAPS with cap_offset 0)
	 */
	ASSERT_EQ(0, region_info(&self->cl, 1, 32, &r));
	ASSERT_EQ(32, r.len);
	memcpy(&ri, r.payload, sizeof(ri));
	EXPECT_EQ(full, le32toh(ri.argsz));
	EXPECT_EQ(VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE |
		  VFIO_REGION_INFO_FLAG_MMAP, le32toh(ri.flags));
	EXPECT_EQ(0, le32toh(ri.cap_offset));
	EXPECT_EQ(0, r.nr_fds);
	cl_msg_free(&r);

	ASSERT_EQ(0, region_info(&self->cl, 1, 4096, &r));
	ASSERT_EQ(full, r.len);
	memcpy(&ri, r.payload, sizeof(ri));
	EXPECT_EQ(full, le32toh(ri.argsz));
	EXPECT_EQ(VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE |
		  VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS,
		  le32toh(ri.flags));
	ASSERT_EQ(32, le32toh(ri.cap_offset));
	memcpy(&sp, r.payload + 32, sizeof(sp));
	EXPECT_EQ(VFIO_REGION_INFO_CAP_SPARSE_MMAP, le16toh(sp.header.id));
	EXPECT_EQ(1, le16toh(sp.header.version));
	EXPECT_EQ(0, le32toh(sp.header.next));
	EXPECT_EQ(2, le32toh(sp.nr_areas));
	memcpy(&a, r.payload + 48 + 16, sizeof(a));
	EXPECT_EQ(8192, le64toh(a.offset));
	EXPECT_EQ(4096, le64toh(a.size));
	ASSERT_EQ(1, r.nr_fds);

	/* the fd maps the same memory REGION_WRITE reaches */
	ASSERT_EQ(0, cl_region_write(&self->cl, 1, 8192, data, sizeof(data)));
	map = mmap(NULL, T_BAR1_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
		   r.fds[0], le64toh(ri.offset));
	ASSERT_NE(MAP_FAILED, map);
	EXPECT_EQ(0, memcmp(map + 8192, data, sizeof(data)));
	memcpy(map + 100, "xy", 2);
	ASSERT_EQ(0, cl_region_read(&self->cl, 1, 100, data, 2));
	EXPECT_EQ(0, memcmp(data, "xy", 2));
	munmap(map, T_BAR1_SIZE);
	cl_msg_free(&r);
}

TEST_F(vus, region_info_type_cap)
{
	struct vfio_user_region_info ri;
	struct vfio_user_region_info_cap_type t;
	struct cl_msg r;

	ASSERT_EQ(0, negotiate(&self->cl));
	ASSERT_EQ(0, region_info(&self->cl, T_REGION_TYPED, 256, &r));
	ASSERT_EQ(48, r.len);
	memcpy(&ri, r.payload, sizeof(ri));
	EXPECT_EQ(VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_CAPS,
		  le32toh(ri.flags));
	ASSERT_EQ(32, le32toh(ri.cap_offset));
	memcpy(&t, r.payload + 32, sizeof(t));
	EXPECT_EQ(VFIO_REGION_INFO_CAP_TYPE, le16toh(t.header.id));
	EXPECT_EQ(0, le32toh(t.header.next));
	EXPECT_EQ(0x4e58, le32toh(t.type));
	EXPECT_EQ(7, le32toh(t.subtype));
	EXPECT_EQ(0, r.nr_fds);
	cl_msg_free(&r);
}

static int irq_info(struct cl *cl, uint32_t index, struct vfio_user_irq_info *out)
{
	struct vfio_user_irq_info ii = {
		.argsz = htole32(16), .index = htole32(index),
	};
	struct cl_msg r;
	int err = cl_cmd(cl, VFIO_USER_DEVICE_GET_IRQ_INFO, &ii, sizeof(ii),
			 NULL, 0, &r);

	if (err)
		return err;
	if (r.len != sizeof(*out))
		err = -EPROTO;
	else
		memcpy(out, r.payload, sizeof(*out));
	cl_msg_free(&r);
	return err;
}

TEST_F(vus, irq_info)
{
	static const struct { uint32_t index, count, flags; } exp[] = {
		{ VFIO_PCI_INTX_IRQ_INDEX, 1, VFIO_IRQ_INFO_EVENTFD |
		  VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED },
		{ VFIO_PCI_MSI_IRQ_INDEX, T_MSI, VFIO_IRQ_INFO_EVENTFD |
		  VFIO_IRQ_INFO_MASKABLE },
		{ VFIO_PCI_MSIX_IRQ_INDEX, T_MSIX, VFIO_IRQ_INFO_EVENTFD |
		  VFIO_IRQ_INFO_MASKABLE },
		{ VFIO_PCI_ERR_IRQ_INDEX, 1, VFIO_IRQ_INFO_EVENTFD |
		  VFIO_IRQ_INFO_MASKABLE },
		{ VFIO_PCI_REQ_IRQ_INDEX, 1, VFIO_IRQ_INFO_EVENTFD |
		  VFIO_IRQ_INFO_MASKABLE },
	};
	struct vfio_user_irq_info ii;
	unsigned int i;

	ASSERT_EQ(0, negotiate(&self->cl));
	for (i = 0; i < ARRAY_SIZE(exp); i++) {
		ASSERT_EQ(0, irq_info(&self->cl, exp[i].index, &ii));
		EXPECT_EQ(16, le32toh(ii.argsz));
		EXPECT_EQ(exp[i].index, le32toh(ii.index));
		EXPECT_EQ(exp[i].count, le32toh(ii.count));
		EXPECT_EQ(exp[i].flags, le32toh(ii.flags));
	}
	EXPECT_EQ(-EINVAL, irq_info(&self->cl, VFIO_PCI_NUM_IRQS, &ii));
}

/* ---- SET_IRQS ----------------------------------------------------------- */

static int64_t dev_trigger(struct cl *cl, unsigned int index,
			   unsigned int vector)
{
	uint64_t v;

	if (reg_write64(cl, R_IRQ, index << 16 | vector) ||
	    reg_read64(cl, R_IRQ_RESULT, &v))
		return -9999;
	return (int64_t)v;
}

#define EFD_TRIGGER (VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER)

TEST_F(vus, set_irqs_msix_eventfds)
{
	int efd[T_MSIX];
	unsigned int i;

	ASSERT_EQ(0, negotiate(&self->cl));
	for (i = 0; i < T_MSIX; i++)
		ASSERT_LE(0, efd[i] = new_efd());
	EXPECT_EQ(-ENOENT, dev_trigger(&self->cl, VFIO_PCI_MSIX_IRQ_INDEX, 0));
	ASSERT_EQ(0, cl_set_irqs(&self->cl, EFD_TRIGGER,
				 VFIO_PCI_MSIX_IRQ_INDEX, 0, T_MSIX, NULL,
				 efd, T_MSIX));
	for (i = 0; i < T_MSIX; i++) {
		EXPECT_EQ(0, dev_trigger(&self->cl, VFIO_PCI_MSIX_IRQ_INDEX, i));
		EXPECT_TRUE(efd_fired(efd[i]));
		EXPECT_FALSE(efd_fired(efd[(i + 1) % T_MSIX]));
	}
	/* de-assign vectors 2..3 (DATA_EVENTFD without fds) */
	ASSERT_EQ(0, cl_set_irqs(&self->cl, EFD_TRIGGER,
				 VFIO_PCI_MSIX_IRQ_INDEX, 2, 2, NULL, NULL, 0));
	EXPECT_EQ(-ENOENT, dev_trigger(&self->cl, VFIO_PCI_MSIX_IRQ_INDEX, 2));
	EXPECT_EQ(0, dev_trigger(&self->cl, VFIO_PCI_MSIX_IRQ_INDEX, 4));
	EXPECT_TRUE(efd_fired(efd[4]));
	/* disable the whole index: DATA_NONE | TRIGGER, count 0 */
	ASSERT_EQ(0, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_NONE |
				 VFIO_IRQ_SET_ACTION_TRIGGER,
				 VFIO_PCI_MSIX_IRQ_INDEX, 0, 0, NULL, NULL, 0));
	EXPECT_EQ(-ENOENT, dev_trigger(&self->cl, VFIO_PCI_MSIX_IRQ_INDEX, 4));
	for (i = 0; i < T_MSIX; i++)
		close(efd[i]);
	/* out-of-range vector from the device model side */
	EXPECT_EQ(-EINVAL, dev_trigger(&self->cl, VFIO_PCI_MSIX_IRQ_INDEX,
				       T_MSIX));
}

TEST_F(vus, set_irqs_mask_unmask)
{
	int efd[2], mfd, ufd;
	uint8_t b[2] = { 1, 0 };

	ASSERT_EQ(0, negotiate(&self->cl));
	ASSERT_LE(0, efd[0] = new_efd());
	ASSERT_LE(0, efd[1] = new_efd());
	ASSERT_LE(0, mfd = new_efd());
	ASSERT_LE(0, ufd = new_efd());
	ASSERT_EQ(0, cl_set_irqs(&self->cl, EFD_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX,
				 0, 2, NULL, efd, 2));
	ASSERT_EQ(0, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_EVENTFD |
				 VFIO_IRQ_SET_ACTION_MASK,
				 VFIO_PCI_MSI_IRQ_INDEX, 0, 1, NULL, &mfd, 1));
	ASSERT_EQ(0, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_EVENTFD |
				 VFIO_IRQ_SET_ACTION_UNMASK,
				 VFIO_PCI_MSI_IRQ_INDEX, 0, 1, NULL, &ufd, 1));
	/* mask vector 0 with DATA_NONE: the mask eventfd reports it */
	ASSERT_EQ(0, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_NONE |
				 VFIO_IRQ_SET_ACTION_MASK,
				 VFIO_PCI_MSI_IRQ_INDEX, 0, 1, NULL, NULL, 0));
	EXPECT_TRUE(efd_fired(mfd));
	EXPECT_EQ(1, dev_trigger(&self->cl, VFIO_PCI_MSI_IRQ_INDEX, 0));
	EXPECT_FALSE(efd_fired(efd[0]));
	/* unmask: the pending interrupt fires, the unmask eventfd reports */
	ASSERT_EQ(0, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_NONE |
				 VFIO_IRQ_SET_ACTION_UNMASK,
				 VFIO_PCI_MSI_IRQ_INDEX, 0, 1, NULL, NULL, 0));
	EXPECT_TRUE(efd_fired(ufd));
	EXPECT_TRUE(efd_fired(efd[0]));
	/* DATA_BOOL mask: only vector 0 of [0, 2) */
	ASSERT_EQ(0, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_BOOL |
				 VFIO_IRQ_SET_ACTION_MASK,
				 VFIO_PCI_MSI_IRQ_INDEX, 0, 2, b, NULL, 0));
	EXPECT_EQ(1, dev_trigger(&self->cl, VFIO_PCI_MSI_IRQ_INDEX, 0));
	EXPECT_EQ(0, dev_trigger(&self->cl, VFIO_PCI_MSI_IRQ_INDEX, 1));
	EXPECT_TRUE(efd_fired(efd[1]));
	ASSERT_EQ(0, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_BOOL |
				 VFIO_IRQ_SET_ACTION_UNMASK,
				 VFIO_PCI_MSI_IRQ_INDEX, 0, 2, b, NULL, 0));
	EXPECT_TRUE(efd_fired(efd[0]));
	close(efd[0]);
	close(efd[1]);
	close(mfd);
	close(ufd);
}

TEST_F(vus, set_irqs_intx_automask)
{
	int efd;

	ASSERT_EQ(0, negotiate(&self->cl));
	ASSERT_LE(0, efd = new_efd());
	ASSERT_EQ(0, cl_set_irqs(&self->cl, EFD_TRIGGER,
				 VFIO_PCI_INTX_IRQ_INDEX, 0, 1, NULL, &efd, 1));
	EXPECT_EQ(0, dev_trigger(&self->cl, VFIO_PCI_INTX_IRQ_INDEX, 0));
	EXPECT_TRUE(efd_fired(efd));
	/* automasked until the client unmasks */
	EXPECT_EQ(1, dev_trigger(&self->cl, VFIO_PCI_INTX_IRQ_INDEX, 0));
	EXPECT_FALSE(efd_fired(efd));
	ASSERT_EQ(0, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_NONE |
				 VFIO_IRQ_SET_ACTION_UNMASK,
				 VFIO_PCI_INTX_IRQ_INDEX, 0, 1, NULL, NULL, 0));
	EXPECT_TRUE(efd_fired(efd));
	close(efd);
}

TEST_F(vus, set_irqs_client_trigger_err_req)
{
	int efd[3];
	uint8_t yes = 1, no = 0;

	ASSERT_EQ(0, negotiate(&self->cl));
	ASSERT_LE(0, efd[0] = new_efd());
	ASSERT_LE(0, efd[1] = new_efd());
	ASSERT_LE(0, efd[2] = new_efd());
	ASSERT_EQ(0, cl_set_irqs(&self->cl, EFD_TRIGGER, VFIO_PCI_ERR_IRQ_INDEX,
				 0, 1, NULL, &efd[0], 1));
	ASSERT_EQ(0, cl_set_irqs(&self->cl, EFD_TRIGGER, VFIO_PCI_REQ_IRQ_INDEX,
				 0, 1, NULL, &efd[1], 1));
	ASSERT_EQ(0, cl_set_irqs(&self->cl, EFD_TRIGGER, VFIO_PCI_MSI_IRQ_INDEX,
				 3, 1, NULL, &efd[2], 1));
	EXPECT_EQ(0, dev_trigger(&self->cl, VFIO_PCI_ERR_IRQ_INDEX, 0));
	EXPECT_TRUE(efd_fired(efd[0]));
	EXPECT_EQ(0, dev_trigger(&self->cl, VFIO_PCI_REQ_IRQ_INDEX, 0));
	EXPECT_TRUE(efd_fired(efd[1]));
	/* client-side trigger, DATA_NONE and DATA_BOOL */
	ASSERT_EQ(0, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_NONE |
				 VFIO_IRQ_SET_ACTION_TRIGGER,
				 VFIO_PCI_REQ_IRQ_INDEX, 0, 1, NULL, NULL, 0));
	EXPECT_TRUE(efd_fired(efd[1]));
	ASSERT_EQ(0, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_BOOL |
				 VFIO_IRQ_SET_ACTION_TRIGGER,
				 VFIO_PCI_MSI_IRQ_INDEX, 3, 1, &no, NULL, 0));
	EXPECT_FALSE(efd_fired(efd[2]));
	ASSERT_EQ(0, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_BOOL |
				 VFIO_IRQ_SET_ACTION_TRIGGER,
				 VFIO_PCI_MSI_IRQ_INDEX, 3, 1, &yes, NULL, 0));
	EXPECT_TRUE(efd_fired(efd[2]));
	close(efd[0]);
	close(efd[1]);
	close(efd[2]);
}

TEST_F(vus, set_irqs_invalid)
{
	int efd[T_MAX_FDS + 1];
	uint8_t buf[64] = { 0 };
	struct vfio_user_irq_set s;
	unsigned int i;

	ASSERT_EQ(0, negotiate(&self->cl));
	for (i = 0; i < ARRAY_SIZE(efd); i++)
		ASSERT_LE(0, efd[i] = new_efd());
	/* fds != count */
	EXPECT_EQ(-EINVAL, cl_set_irqs(&self->cl, EFD_TRIGGER,
				       VFIO_PCI_MSIX_IRQ_INDEX, 0, 3, NULL,
				       efd, 2));
	/* more fds than max_msg_fds */
	EXPECT_EQ(-EINVAL, cl_set_irqs(&self->cl, EFD_TRIGGER,
				       VFIO_PCI_MSIX_IRQ_INDEX, 0, T_MAX_FDS + 1,
				       NULL, efd, T_MAX_FDS + 1));
	/* two data types, two actions, no action, unknown bit */
	EXPECT_EQ(-EINVAL, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_NONE |
				       VFIO_IRQ_SET_DATA_BOOL |
				       VFIO_IRQ_SET_ACTION_TRIGGER,
				       VFIO_PCI_MSI_IRQ_INDEX, 0, 1, buf, NULL,
				       0));
	EXPECT_EQ(-EINVAL, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_NONE |
				       VFIO_IRQ_SET_ACTION_MASK |
				       VFIO_IRQ_SET_ACTION_TRIGGER,
				       VFIO_PCI_MSI_IRQ_INDEX, 0, 1, NULL, NULL,
				       0));
	EXPECT_EQ(-EINVAL, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_NONE,
				       VFIO_PCI_MSI_IRQ_INDEX, 0, 1, NULL, NULL,
				       0));
	EXPECT_EQ(-EINVAL, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_NONE |
				       VFIO_IRQ_SET_ACTION_TRIGGER | 0x100,
				       VFIO_PCI_MSI_IRQ_INDEX, 0, 1, NULL, NULL,
				       0));
	/* range */
	EXPECT_EQ(-EINVAL, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_NONE |
				       VFIO_IRQ_SET_ACTION_TRIGGER,
				       VFIO_PCI_MSI_IRQ_INDEX, T_MSI - 1, 2,
				       NULL, NULL, 0));
	EXPECT_EQ(-EINVAL, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_NONE |
				       VFIO_IRQ_SET_ACTION_TRIGGER,
				       VFIO_PCI_MSI_IRQ_INDEX, 0xffffffff, 2,
				       NULL, NULL, 0));
	EXPECT_EQ(-EINVAL, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_NONE |
				       VFIO_IRQ_SET_ACTION_TRIGGER,
				       VFIO_PCI_NUM_IRQS, 0, 1, NULL, NULL, 0));
	/* count 0 only as DATA_NONE|TRIGGER with start 0 */
	EXPECT_EQ(-EINVAL, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_NONE |
				       VFIO_IRQ_SET_ACTION_TRIGGER,
				       VFIO_PCI_MSI_IRQ_INDEX, 1, 0, NULL, NULL,
				       0));
	EXPECT_EQ(-EINVAL, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_NONE |
				       VFIO_IRQ_SET_ACTION_MASK,
				       VFIO_PCI_MSI_IRQ_INDEX, 0, 0, NULL, NULL,
				       0));
	/* fds with DATA_NONE */
	EXPECT_EQ(-EINVAL, cl_set_irqs(&self->cl, VFIO_IRQ_SET_DATA_NONE |
				       VFIO_IRQ_SET_ACTION_TRIGGER,
				       VFIO_PCI_MSI_IRQ_INDEX, 0, 1, NULL, efd,
				       1));
	/* DATA_BOOL payload shorter / longer than count */
	s = (struct vfio_user_irq_set) {
		.argsz = htole32(24), .flags = htole32(VFIO_IRQ_SET_DATA_BOOL |
						       VFIO_IRQ_SET_ACTION_TRIGGER),
		.index = htole32(VFIO_PCI_MSI_IRQ_INDEX), .count = htole32(4),
	};
	memcpy(buf, &s, sizeof(s));
	EXPECT_EQ(-EINVAL, cl_cmd0(&self->cl, VFIO_USER_DEVICE_SET_IRQS, buf,
				   sizeof(s) + 3));
	EXPECT_EQ(-EINVAL, cl_cmd0(&self->cl, VFIO_USER_DEVICE_SET_IRQS, buf,
				   sizeof(s) + 5));
	/* payload shorter than the struct, argsz too small */
	EXPECT_EQ(-EINVAL, cl_cmd0(&self->cl, VFIO_USER_DEVICE_SET_IRQS, buf,
				   sizeof(s) - 1));
	s.argsz = htole32(8);
	s.flags = htole32(VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER);
	memcpy(buf, &s, sizeof(s));
	EXPECT_EQ(-EINVAL, cl_cmd0(&self->cl, VFIO_USER_DEVICE_SET_IRQS, buf,
				   sizeof(s)));
	for (i = 0; i < ARRAY_SIZE(efd); i++)
		close(efd[i]);
	/* still fine */
	EXPECT_EQ(-ENOENT, dev_trigger(&self->cl, VFIO_PCI_MSIX_IRQ_INDEX, 0));
}

/* ---- region access ------------------------------------------------------ */

TEST_F(vus, region_rw)
{
	uint8_t big[T_MAX_XFER], back[T_MAX_XFER];
	uint32_t v32 = htole32(0xdeadbeef), r32 = 0;
	uint64_t v;
	unsigned int i;

	ASSERT_EQ(0, negotiate(&self->cl));
	ASSERT_EQ(0, reg_write64(&self->cl, R_SCRATCH, 0x1122334455667788ULL));
	ASSERT_EQ(0, reg_read64(&self->cl, R_SCRATCH, &v));
	EXPECT_EQ(0x1122334455667788ULL, v);
	/* exact width: a 4-byte write changes only 4 bytes */
	ASSERT_EQ(0, cl_region_write(&self->cl, 0, R_SCRATCH, &v32, 4));
	ASSERT_EQ(0, reg_read64(&self->cl, R_SCRATCH, &v));
	EXPECT_EQ(0x11223344deadbeefULL, v);
	ASSERT_EQ(0, cl_region_read(&self->cl, 0, R_SCRATCH + 4, &r32, 4));
	EXPECT_EQ(0x11223344, le32toh(r32));
	/* library-backed BAR, transfer of exactly max_data_xfer_size */
	for (i = 0; i < sizeof(big); i++)
		big[i] = i * 7;
	ASSERT_EQ(0, cl_region_write(&self->cl, 1, 0, big, sizeof(big)));
	ASSERT_EQ(0, cl_region_read(&self->cl, 1, 0, back, sizeof(back)));
	EXPECT_EQ(0, memcmp(big, back, sizeof(big)));
	ASSERT_EQ(0, cl_region_write(&self->cl, 2, T_BAR2_SIZE - 4, &v32, 4));
	ASSERT_EQ(0, cl_region_read(&self->cl, 2, T_BAR2_SIZE - 4, &r32, 4));
	EXPECT_EQ(v32, r32);
}

TEST_F(vus, region_rw_count_zero)
{
	struct vfio_user_region_access a = { .region = htole32(0) };
	struct cl_msg r;

	ASSERT_EQ(0, negotiate(&self->cl));
	ASSERT_EQ(0, cl_cmd(&self->cl, VFIO_USER_REGION_READ, &a, sizeof(a),
			    NULL, 0, &r));
	EXPECT_EQ(VFIO_USER_HDR_SIZE, r.size);
	cl_msg_free(&r);
	ASSERT_EQ(0, cl_cmd(&self->cl, VFIO_USER_REGION_WRITE, &a, sizeof(a),
			    NULL, 0, &r));
	EXPECT_EQ(VFIO_USER_HDR_SIZE, r.size);
	cl_msg_free(&r);
}

TEST_F(vus, region_rw_invalid)
{
	uint8_t buf[T_MAX_XFER + 64] = { 0 };
	struct vfio_user_region_access a;
	uint64_t v = 0;

	ASSERT_EQ(0, negotiate(&self->cl));
	EXPECT_EQ(-EINVAL, cl_region_read(&self->cl, 0, 4096, &v, 1));
	EXPECT_EQ(-EINVAL, cl_region_read(&self->cl, 0, 4093, &v, 4));
	EXPECT_EQ(-EINVAL, cl_region_read(&self->cl, 0, UINT64_MAX - 1, &v, 4));
	EXPECT_EQ(-EINVAL, cl_region_write(&self->cl, 0, UINT64_MAX, &v, 8));
	EXPECT_EQ(-EINVAL, cl_region_read(&self->cl, VFIO_PCI_BAR5_REGION_INDEX,
					  0, &v, 4));
	EXPECT_EQ(-EINVAL, cl_region_read(&self->cl, 63, 0, &v, 4));
	EXPECT_EQ(-EINVAL, cl_region_read(&self->cl, 0xffffffff, 0, &v, 4));
	EXPECT_EQ(-EACCES, cl_region_write(&self->cl, T_REGION_TYPED, 0, &v, 4));
	EXPECT_EQ(-E2BIG, cl_region_read(&self->cl, 2, 0, buf, T_MAX_XFER + 1));
	/* size disagrees with count */
	a = (struct vfio_user_region_access) {
		.offset = 0, .region = 0, .count = htole32(8),
	};
	memcpy(buf, &a, sizeof(a));
	EXPECT_EQ(-EINVAL, cl_cmd0(&self->cl, VFIO_USER_REGION_WRITE, buf,
				   sizeof(a) + 4));
	EXPECT_EQ(-EINVAL, cl_cmd0(&self->cl, VFIO_USER_REGION_WRITE, buf,
				   sizeof(a) + 9));
	EXPECT_EQ(-EINVAL, cl_cmd0(&self->cl, VFIO_USER_REGION_WRITE, buf, 12));
	EXPECT_EQ(-EINVAL, cl_cmd0(&self->cl, VFIO_USER_REGION_READ, buf,
				   sizeof(a) + 1));
	EXPECT_EQ(-EINVAL, cl_cmd0(&self->cl, VFIO_USER_REGION_READ, buf, 15));
	/* still serving */
	EXPECT_EQ(0, reg_read64(&self->cl, R_SCRATCH, &v));
	/* a write above max_data_xfer_size breaks the message size limit */
	a.count = htole32(T_MAX_XFER + 1);
	memcpy(buf, &a, sizeof(a));
	ASSERT_LE(0, cl_send(&self->cl, VFIO_USER_REGION_WRITE, 0, buf,
			     sizeof(a) + T_MAX_XFER + 1, NULL, 0));
	ASSERT_EQ(0, expect_closed(&self->cl, E2BIG));
	ASSERT_EQ(0, reconnect(&self->cl, self->path));
}

/* ---- PCI config space --------------------------------------------------- */

static uint32_t cfg_read(struct cl *cl, unsigned int off, unsigned int len)
{
	uint32_t v = 0;

	if (cl_region_read(cl, VFIO_PCI_CONFIG_REGION_INDEX, off, &v, len))
		return 0xbad0bad0;
	return le32toh(v);
}

static int cfg_write(struct cl *cl, unsigned int off, uint32_t v,
		     unsigned int len)
{
	v = htole32(v);
	return cl_region_write(cl, VFIO_PCI_CONFIG_REGION_INDEX, off, &v, len);
}

TEST_F(vus, pci_config)
{
	struct cl *cl = &self->cl;
	unsigned int cap;

	ASSERT_EQ(0, negotiate(cl));
	EXPECT_EQ(T_VENDOR, cfg_read(cl, PCI_VENDOR_ID, 2));
	EXPECT_EQ(T_DEVICE, cfg_read(cl, PCI_DEVICE_ID, 2));
	EXPECT_EQ(T_DEVICE << 16 | T_VENDOR, cfg_read(cl, 0, 4));
	EXPECT_EQ(0xff0000, cfg_read(cl, PCI_CLASS_REVISION, 4) >> 8);
	EXPECT_EQ(1, cfg_read(cl, PCI_INTERRUPT_PIN, 1));
	/* IDs are read-only */
	ASSERT_EQ(0, cfg_write(cl, PCI_VENDOR_ID, 0x1234, 2));
	EXPECT_EQ(T_VENDOR, cfg_read(cl, PCI_VENDOR_ID, 2));
	/* command register */
	ASSERT_EQ(0, cfg_write(cl, PCI_COMMAND, 0xffff, 2));
	EXPECT_EQ(PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER |
		  PCI_COMMAND_PARITY | PCI_COMMAND_SERR |
		  PCI_COMMAND_INTX_DISABLE, cfg_read(cl, PCI_COMMAND, 2));
	/* BAR sizing: 32-bit, 64-bit prefetchable, absent */
	ASSERT_EQ(0, cfg_write(cl, PCI_BASE_ADDRESS_0, 0xffffffff, 4));
	EXPECT_EQ(0xfffff000, cfg_read(cl, PCI_BASE_ADDRESS_0, 4));
	ASSERT_EQ(0, cfg_write(cl, PCI_BASE_ADDRESS_2, 0xffffffff, 4));
	ASSERT_EQ(0, cfg_write(cl, PCI_BASE_ADDRESS_3, 0xffffffff, 4));
	EXPECT_EQ((uint32_t)~(T_BAR2_SIZE - 1) | PCI_BASE_ADDRESS_MEM_TYPE_64 |
		  PCI_BASE_ADDRESS_MEM_PREFETCH,
		  cfg_read(cl, PCI_BASE_ADDRESS_2, 4));
	EXPECT_EQ(0xffffffff, cfg_read(cl, PCI_BASE_ADDRESS_3, 4));
	ASSERT_EQ(0, cfg_write(cl, PCI_BASE_ADDRESS_5, 0xffffffff, 4));
	EXPECT_EQ(0, cfg_read(cl, PCI_BASE_ADDRESS_5, 4));
	ASSERT_EQ(0, cfg_write(cl, PCI_BASE_ADDRESS_0, 0xfebf0000, 4));
	EXPECT_EQ(0xfebf0000, cfg_read(cl, PCI_BASE_ADDRESS_0, 4));
	/* capability list: MSI-X */
	EXPECT_TRUE(cfg_read(cl, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
	cap = cfg_read(cl, PCI_CAPABILITY_LIST, 1);
	ASSERT_EQ(0x40, cap);
	EXPECT_EQ(PCI_CAP_ID_MSIX, cfg_read(cl, cap, 1));
	EXPECT_EQ(0, cfg_read(cl, cap + 1, 1));
	EXPECT_EQ(T_MSIX - 1, cfg_read(cl, cap + PCI_MSIX_FLAGS, 2));
	EXPECT_EQ(0x000 | 4, cfg_read(cl, cap + PCI_MSIX_TABLE, 4));
	EXPECT_EQ(0x800 | 4, cfg_read(cl, cap + PCI_MSIX_PBA, 4));
	ASSERT_EQ(0, cfg_write(cl, cap + PCI_MSIX_FLAGS, 0xffff, 2));
	EXPECT_EQ(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL | (T_MSIX - 1),
		  cfg_read(cl, cap + PCI_MSIX_FLAGS, 2));
	/* config space ends at 256 */
	EXPECT_EQ(0xbad0bad0, cfg_read(cl, 254, 4));
	/* reset restores it */
	ASSERT_EQ(0, cl_cmd0(cl, VFIO_USER_DEVICE_RESET, NULL, 0));
	EXPECT_EQ(0, cfg_read(cl, PCI_COMMAND, 2));
	EXPECT_EQ(0, cfg_read(cl, PCI_BASE_ADDRESS_0, 4));
	EXPECT_EQ(T_MSIX - 1, cfg_read(cl, cap + PCI_MSIX_FLAGS, 2));
}

TEST_F(vus, msix_table_in_bar)
{
	struct cl *cl = &self->cl;
	uint32_t v;

	ASSERT_EQ(0, negotiate(cl));
	/* vector control of entry 1 starts masked */
	ASSERT_EQ(0, cl_region_read(cl, 4, 16 + 12, &v, 4));
	EXPECT_EQ(1, le32toh(v));
	v = htole32(0xfee00000);
	ASSERT_EQ(0, cl_region_write(cl, 4, 16, &v, 4));
	v = 0;
	ASSERT_EQ(0, cl_region_read(cl, 4, 16, &v, 4));
	EXPECT_EQ(0xfee00000, le32toh(v));
	/* PBA reads zero, BAR memory beyond is plain memory */
	ASSERT_EQ(0, cl_region_read(cl, 4, 0x800, &v, 4));
	EXPECT_EQ(0, v);
	v = htole32(0x5a5a5a5a);
	ASSERT_EQ(0, cl_region_write(cl, 4, 0xc00, &v, 4));
	v = 0;
	ASSERT_EQ(0, cl_region_read(cl, 4, 0xc00, &v, 4));
	EXPECT_EQ(0x5a5a5a5a, le32toh(v));
}

TEST_F(vus, device_reset)
{
	uint64_t v;

	ASSERT_EQ(0, negotiate(&self->cl));
	ASSERT_EQ(0, cl_cmd0(&self->cl, VFIO_USER_DEVICE_RESET, NULL, 0));
	ASSERT_EQ(0, cl_cmd0(&self->cl, VFIO_USER_DEVICE_RESET, NULL, 0));
	ASSERT_EQ(0, reg_read64(&self->cl, R_RESETS, &v));
	EXPECT_EQ(2, v);
	EXPECT_EQ(-EINVAL, cl_cmd0(&self->cl, VFIO_USER_DEVICE_RESET, &v, 8));
}

/* ---- DMA ---------------------------------------------------------------- */

TEST_F(vus, dma_map_unmap)
{
	struct cl *cl = &self->cl;
	const uint32_t rw = VFIO_USER_F_DMA_REGION_READ |
			    VFIO_USER_F_DMA_REGION_WRITE;
	struct vfio_user_dma_map m = { .argsz = htole32(32) };
	uint64_t v;

	ASSERT_EQ(0, negotiate(cl));
	ASSERT_EQ(0, cl_dma_map(cl, 0x100000, 0x100000, rw, -1, 0));
	ASSERT_EQ(0, cl_dma_map(cl, 0x200000, 0x1000, rw, -1, 0));
	/* 8 TiB: fine for us */
	ASSERT_EQ(0, cl_dma_map(cl, 1ULL << 44, 1ULL << 43, rw, -1, 0));
	EXPECT_EQ(-EEXIST, cl_dma_map(cl, 0x1ff000, 0x2000, rw, -1, 0));
	EXPECT_EQ(-EEXIST, cl_dma_map(cl, 0x100000, 0x100000, rw, -1, 0));
	EXPECT_EQ(-EINVAL, cl_dma_map(cl, 0x400000, 0, rw, -1, 0));
	EXPECT_EQ(-EINVAL, cl_dma_map(cl, UINT64_MAX - 0xfff, 0x2000, rw, -1, 0));
	EXPECT_EQ(-EINVAL, cl_dma_map(cl, 0x400000, 0x1000, 0x4, -1, 0));
	EXPECT_EQ(-EINVAL, cl_cmd0(cl, VFIO_USER_DMA_MAP, &m, 24));
	m.argsz = htole32(31);
	m.size = htole64(4096);
	EXPECT_EQ(-EINVAL, cl_cmd0(cl, VFIO_USER_DMA_MAP, &m, 32));
	ASSERT_EQ(0, reg_read64(cl, R_NR_DMA, &v));
	EXPECT_EQ(3, v);

	EXPECT_EQ(-ENOENT, cl_dma_unmap(cl, 0x100000, 0x1000, 0));
	EXPECT_EQ(-ENOENT, cl_dma_unmap(cl, 0x300000, 0x1000, 0));
	EXPECT_EQ(-EINVAL, cl_dma_unmap(cl, 0x100000, 0x100000, 1));
	EXPECT_EQ(-EINVAL, cl_dma_unmap(cl, 0x100000, 0x100000,
					VFIO_USER_F_DMA_UNMAP_ALL));
	ASSERT_EQ(0, cl_dma_unmap(cl, 0x100000, 0x100000, 0));
	ASSERT_EQ(0, reg_read64(cl, R_NR_DMA, &v));
	EXPECT_EQ(2, v);
	ASSERT_EQ(0, cl_dma_unmap(cl, 0, 0, VFIO_USER_F_DMA_UNMAP_ALL));
	ASSERT_EQ(0, reg_read64(cl, R_NR_DMA, &v));
	EXPECT_EQ(0, v);
}

TEST(dma_max_maps)
{
	VUS_OPTS(vus_dev_opts, o, .max_dma_maps = 2);
	struct vus_dev *dev = vus_dev__new(&o);
	struct cl cl = { .fd = -1 };
	struct srv s = { .dev = dev };
	pthread_t thr;
	int sv[2];

	ASSERT_NE(NULL, dev);
	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	ASSERT_EQ(0, vus_dev__attach_fd(dev, sv[1]));
	cl.fd = sv[0];
	ASSERT_EQ(0, pthread_create(&thr, NULL, srv_thread, &s));
	ASSERT_EQ(0, negotiate(&cl));
	EXPECT_EQ(0, cl_dma_map(&cl, 0, 4096, 3, -1, 0));
	EXPECT_EQ(0, cl_dma_map(&cl, 8192, 4096, 3, -1, 0));
	EXPECT_EQ(-ENOSPC, cl_dma_map(&cl, 16384, 4096, 3, -1, 0));
	atomic_store(&s.stop, true);
	pthread_join(thr, NULL);
	vus_dev__delete(dev);
	close(cl.fd);
}

static int dma_copy(struct cl *cl, uint64_t src, uint64_t dst, uint64_t len,
		    int64_t *status)
{
	uint64_t v;
	int err;

	err = reg_write64(cl, R_SRC, src) ?: reg_write64(cl, R_DST, dst) ?:
	      reg_write64(cl, R_LEN, len) ?: reg_write64(cl, R_DOORBELL, 1) ?:
	      reg_read64(cl, R_STATUS, &v);
	*status = (int64_t)v;
	return err;
}

TEST_F(vus, dma_doorbell_split)
{
	struct cl *cl = &self->cl;
	const uint64_t len = 10000;
	int64_t status;
	unsigned int i;

	ASSERT_EQ(0, negotiate(cl));	/* client max_data_xfer_size 4096 */
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE,
				VFIO_USER_F_DMA_REGION_READ |
				VFIO_USER_F_DMA_REGION_WRITE, -1, 0));
	for (i = 0; i < len; i++)
		cl->mem[i] = i * 13 + 1;
	ASSERT_EQ(0, dma_copy(cl, T_MEM_IOVA, T_MEM_IOVA + 0x80000, len,
			      &status));
	EXPECT_EQ(0, status);
	EXPECT_EQ(0, memcmp(cl->mem, cl->mem + 0x80000, len));
	EXPECT_EQ(3, cl->dma_reads);
	EXPECT_EQ(3, cl->dma_writes);
	EXPECT_EQ(4096, cl->max_dma_count);
	/* server msg_ids are its own counter */
	EXPECT_EQ(5, cl->last_server_id);

	/* zero-length copy: nothing on the wire */
	ASSERT_EQ(0, dma_copy(cl, T_MEM_IOVA, T_MEM_IOVA, 0, &status));
	EXPECT_EQ(0, status);
	EXPECT_EQ(3, cl->dma_reads);
}

/*
 * A client that accepts larger messages than the server announced: the
 * server's DMA messages still stay within its own max_data_xfer_size
 * (QEMU's vfio-user-pci rejects larger ones with E2BIG, vfio_user_mdev
 * drops the connection).
 */
TEST_F(vus, dma_split_by_server_max_xfer)
{
	struct cl *cl = &self->cl;
	const uint64_t len = 3 * T_MAX_XFER + 100;
	struct cl_msg r;
	int64_t status;
	unsigned int i;

	ASSERT_EQ(0, cl_version(cl, 0, 2, "{\"capabilities\":"
				"{\"max_data_xfer_size\":1048576}}", &r));
	cl_msg_free(&r);
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE,
				VFIO_USER_F_DMA_REGION_READ |
				VFIO_USER_F_DMA_REGION_WRITE, -1, 0));
	for (i = 0; i < len; i++)
		cl->mem[i] = i * 7 + 3;
	ASSERT_EQ(0, dma_copy(cl, T_MEM_IOVA, T_MEM_IOVA + 0x40000, len,
			      &status));
	EXPECT_EQ(0, status);
	EXPECT_EQ(0, memcmp(cl->mem, cl->mem + 0x40000, len));
	EXPECT_EQ(4, cl->dma_reads);
	EXPECT_EQ(4, cl->dma_writes);
	EXPECT_EQ(T_MAX_XFER, cl->max_dma_count);
}

TEST_F(vus, dma_across_regions_and_permissions)
{
	struct cl *cl = &self->cl;
	int64_t status;

	ASSERT_EQ(0, negotiate(cl));
	/* two adjacent regions, the second read-only */
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, 0x1000,
				VFIO_USER_F_DMA_REGION_READ |
				VFIO_USER_F_DMA_REGION_WRITE, -1, 0));
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA + 0x1000, 0x1000,
				VFIO_USER_F_DMA_REGION_READ, -1, 0));
	memset(cl->mem + 0xf00, 0xab, 0x200);
	ASSERT_EQ(0, dma_copy(cl, T_MEM_IOVA + 0xf00, T_MEM_IOVA, 0x200,
			      &status));
	EXPECT_EQ(0, status);
	EXPECT_EQ(2, cl->dma_reads);	/* split at the region boundary */
	EXPECT_EQ(0, memcmp(cl->mem, cl->mem + 0xf00, 0x200));
	/* writing into the read-only region: -EFAULT before any message */
	ASSERT_EQ(0, dma_copy(cl, T_MEM_IOVA, T_MEM_IOVA + 0x1800, 16,
			      &status));
	EXPECT_EQ(-EFAULT, status);
	/* unmapped source */
	ASSERT_EQ(0, dma_copy(cl, 0x10, T_MEM_IOVA, 16, &status));
	EXPECT_EQ(-EFAULT, status);
	ASSERT_EQ(0, dma_copy(cl, T_MEM_IOVA + 0x1ff0, T_MEM_IOVA, 0x20,
			      &status));
	EXPECT_EQ(-EFAULT, status);
	ASSERT_EQ(0, dma_copy(cl, UINT64_MAX - 4, T_MEM_IOVA, 0x20, &status));
	EXPECT_EQ(-EFAULT, status);
}

TEST_F(vus, dma_with_fd)
{
	struct vfio_user_dma_map m = {
		.argsz = htole32(32), .flags = htole32(3),
		.addr = htole64(0x60000000), .size = htole64(4096),
	};
	struct cl *cl = &self->cl;
	struct cl_msg r;
	int64_t status;
	int memfd, fds[2];
	uint8_t *mem;

	ASSERT_EQ(0, negotiate(cl));
	ASSERT_LE(0, memfd = memfd_create("guest", MFD_CLOEXEC));
	ASSERT_EQ(0, ftruncate(memfd, 0x10000));
	mem = mmap(NULL, 0x10000, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	ASSERT_NE(MAP_FAILED, mem);
	ASSERT_EQ(0, cl_dma_map(cl, 0x40000000, 0x8000,
				VFIO_USER_F_DMA_REGION_READ |
				VFIO_USER_F_DMA_REGION_WRITE, memfd, 0x8000));
	memcpy(mem + 0x8000, "direct access", 14);
	ASSERT_EQ(0, dma_copy(cl, 0x40000000, 0x40000100, 14, &status));
	EXPECT_EQ(0, status);
	EXPECT_EQ(0, memcmp(mem + 0x8100, "direct access", 14));
	EXPECT_EQ(0, cl->dma_reads + cl->dma_writes);
	/* a bad fd offset is refused by mmap */
	EXPECT_GT(0, cl_dma_map(cl, 0x50000000, 0x1000, 3, memfd, 123));
	/* two fds with DMA_MAP */
	fds[0] = fds[1] = memfd;
	EXPECT_EQ(-EINVAL, cl_cmd(cl, VFIO_USER_DMA_MAP, &m, sizeof(m), fds, 2,
				  &r));
	ASSERT_EQ(0, cl_dma_unmap(cl, 0x40000000, 0x8000, 0));
	munmap(mem, 0x10000);
	close(memfd);
}

/*
 * Three messages in one send, the fd with it: the server's receive buffer
 * takes them in one read (empty buffer: the read ends where the send
 * ended), answers each in order and hands the fd to the message holding
 * the read's last byte, the DMA_MAP, not to the region accesses before it.
 */
TEST_F(vus, batched_messages_in_one_send)
{
	struct {
		struct vfio_user_hdr h;
		struct vfio_user_region_access a;
		uint64_t v;
	} __attribute__((packed)) wr;
	struct {
		struct vfio_user_hdr h;
		struct vfio_user_region_access a;
	} __attribute__((packed)) rd;
	struct {
		struct vfio_user_hdr h;
		struct vfio_user_dma_map m;
	} __attribute__((packed)) map;
	uint8_t buf[sizeof(wr) + sizeof(rd) + sizeof(map)];
	struct cl *cl = &self->cl;
	struct cl_msg r;
	int64_t status;
	uint64_t v;
	uint8_t *mem;
	int memfd;

	ASSERT_EQ(0, negotiate(cl));
	ASSERT_LE(0, memfd = memfd_create("guest", MFD_CLOEXEC));
	ASSERT_EQ(0, ftruncate(memfd, 0x2000));
	mem = mmap(NULL, 0x2000, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	ASSERT_NE(MAP_FAILED, mem);

	memset(&wr, 0, sizeof(wr));
	cl_hdr(&wr.h, 100, VFIO_USER_REGION_WRITE, sizeof(wr), 0, 0);
	wr.a.offset = htole64(R_SCRATCH);
	wr.a.region = htole32(VFIO_PCI_BAR0_REGION_INDEX);
	wr.a.count = htole32(8);
	wr.v = htole64(0x1122334455667788ULL);
	memset(&rd, 0, sizeof(rd));
	cl_hdr(&rd.h, 101, VFIO_USER_REGION_READ, sizeof(rd), 0, 0);
	rd.a = wr.a;
	memset(&map, 0, sizeof(map));
	cl_hdr(&map.h, 102, VFIO_USER_DMA_MAP, sizeof(map), 0, 0);
	map.m.argsz = htole32(sizeof(map.m));
	map.m.flags = htole32(VFIO_USER_F_DMA_REGION_READ |
			      VFIO_USER_F_DMA_REGION_WRITE);
	map.m.addr = htole64(0x70000000);
	map.m.size = htole64(0x2000);
	memcpy(buf, &wr, sizeof(wr));
	memcpy(buf + sizeof(wr), &rd, sizeof(rd));
	memcpy(buf + sizeof(wr) + sizeof(rd), &map, sizeof(map));
	ASSERT_EQ(0, cl_send_raw(cl->fd, buf, sizeof(buf), &memfd, 1));

	ASSERT_EQ(0, cl_recv(cl, &r));
	EXPECT_EQ(100, r.msg_id);
	EXPECT_EQ(0, r.flags & VFIO_USER_F_ERROR);
	cl_msg_free(&r);
	ASSERT_EQ(0, cl_recv(cl, &r));
	EXPECT_EQ(101, r.msg_id);
	ASSERT_EQ(sizeof(rd.a) + 8, r.len);
	memcpy(&v, r.payload + sizeof(rd.a), 8);
	EXPECT_EQ(0x1122334455667788ULL, le64toh(v));
	cl_msg_free(&r);
	ASSERT_EQ(0, cl_recv(cl, &r));
	EXPECT_EQ(102, r.msg_id);
	EXPECT_EQ(0, r.flags & VFIO_USER_F_ERROR);
	cl_msg_free(&r);

	/* the fd went with the map: the copy touches it directly */
	memcpy(mem, "batched", 8);
	ASSERT_EQ(0, dma_copy(cl, 0x70000000, 0x70001000, 8, &status));
	EXPECT_EQ(0, status);
	EXPECT_EQ(0, memcmp(mem + 0x1000, "batched", 8));
	EXPECT_EQ(0, cl->dma_reads + cl->dma_writes);
	munmap(mem, 0x2000);
	close(memfd);
}

/*
 * DMA messages are pipelined: with LEN = 3 x max_data_xfer_size (4096
 * here) the server has all three DMA_READs out before any reply, and
 * takes replies in any order (the spec matches them by msg_id).
 */
TEST_F(vus, dma_pipelined_replies_out_of_order)
{
	struct {
		struct vfio_user_region_access a;
		uint64_t v;
	} __attribute__((packed)) bell = {
		.a = { .offset = htole64(R_DOORBELL),
		       .region = htole32(VFIO_PCI_BAR0_REGION_INDEX),
		       .count = htole32(8) },
		.v = htole64(1),
	};
	const size_t len = 3 * 4096;
	struct cl *cl = &self->cl;
	struct cl_msg m[3], r;
	uint64_t v;
	size_t i;
	int id;

	ASSERT_EQ(0, negotiate(cl));
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, 3, -1, 0));
	for (i = 0; i < len; i++)
		cl->mem[i] = i * 5 + 1;
	ASSERT_EQ(0, reg_write64(cl, R_SRC, T_MEM_IOVA));
	ASSERT_EQ(0, reg_write64(cl, R_DST, T_MEM_IOVA + 0x10000));
	ASSERT_EQ(0, reg_write64(cl, R_LEN, len));
	id = cl_send(cl, VFIO_USER_REGION_WRITE, 0, &bell, sizeof(bell), NULL, 0);
	ASSERT_LE(0, id);
	/* three reads in flight before we answer any */
	for (i = 0; i < 3; i++) {
		ASSERT_EQ(0, cl_recv(cl, &m[i]));
		ASSERT_EQ(VFIO_USER_DMA_READ, m[i].command);
	}
	ASSERT_EQ(0, cl_serve_dma(cl, &m[2]));
	ASSERT_EQ(0, cl_serve_dma(cl, &m[0]));
	ASSERT_EQ(0, cl_serve_dma(cl, &m[1]));
	for (i = 0; i < 3; i++)
		cl_msg_free(&m[i]);
	/* the writes, served as they come, then the doorbell's reply */
	ASSERT_EQ(0, cl_wait(cl, id, &r));
	EXPECT_EQ(0, r.flags & VFIO_USER_F_ERROR);
	cl_msg_free(&r);
	ASSERT_EQ(0, reg_read64(cl, R_STATUS, &v));
	EXPECT_EQ(0, v);
	EXPECT_EQ(0, memcmp(cl->mem, cl->mem + 0x10000, len));
	EXPECT_EQ(3, cl->dma_reads);
	EXPECT_EQ(3, cl->dma_writes);
}

TEST_F(vus, dma_client_error)
{
	struct cl *cl = &self->cl;
	int64_t status;

	ASSERT_EQ(0, negotiate(cl));
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, 3, -1, 0));
	cl->dma_reply_error = EFAULT;
	ASSERT_EQ(0, dma_copy(cl, T_MEM_IOVA, T_MEM_IOVA + 4096, 64, &status));
	EXPECT_EQ(-EIO, status);
	cl->dma_reply_error = 0;
	ASSERT_EQ(0, dma_copy(cl, T_MEM_IOVA, T_MEM_IOVA + 4096, 64, &status));
	EXPECT_EQ(0, status);
}

TEST_F(vus, dma_bad_reply_drops_client)
{
	struct cl *cl = &self->cl;
	uint64_t v;
	int64_t status;

	ASSERT_EQ(0, negotiate(cl));
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, 3, -1, 0));
	cl->dma_bad_reply = true;
	EXPECT_EQ(-ECONNRESET, dma_copy(cl, T_MEM_IOVA, T_MEM_IOVA + 4096, 64,
					&status));
	cl->dma_bad_reply = false;
	ASSERT_EQ(0, reconnect(cl, self->path));
	ASSERT_EQ(0, reg_read64(cl, R_STATUS, &v));
	EXPECT_EQ(-EPROTO, (int64_t)v);
	/* the new client starts without DMA regions */
	ASSERT_EQ(0, reg_read64(cl, R_NR_DMA, &v));
	EXPECT_EQ(0, v);
}

/* While the server waits for its DMA_READ reply, send it more commands. */
static unsigned int pipelined_ids[2];

static void send_during_dma(struct cl *cl, const struct cl_msg *m)
{
	struct vfio_user_region_access a = {
		.offset = htole64(R_SCRATCH), .region = 0, .count = htole32(8),
	};

	if (m->command != VFIO_USER_DMA_READ || pipelined_ids[0])
		return;
	pipelined_ids[0] = cl_send(cl, VFIO_USER_REGION_READ, 0, &a, sizeof(a),
				   NULL, 0);
	pipelined_ids[1] = cl_send(cl, VFIO_USER_DEVICE_RESET, 0, NULL, 0,
				   NULL, 0);
}

TEST_F(vus, dma_with_pipelined_commands)
{
	struct vfio_user_region_access a = {
		.offset = htole64(R_DOORBELL), .count = htole32(8),
	};
	struct cl *cl = &self->cl;
	uint8_t p[24];
	struct cl_msg r;
	uint64_t v;
	int id;

	ASSERT_EQ(0, negotiate(cl));
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, 3, -1, 0));
	ASSERT_EQ(0, reg_write64(cl, R_SCRATCH, 42));
	ASSERT_EQ(0, reg_write64(cl, R_SRC, T_MEM_IOVA));
	ASSERT_EQ(0, reg_write64(cl, R_DST, T_MEM_IOVA + 8192));
	ASSERT_EQ(0, reg_write64(cl, R_LEN, 5000));
	memset(cl->mem, 0x77, 5000);
	cl->on_dma = send_during_dma;
	v = htole64(1);
	memcpy(p, &a, 16);
	memcpy(p + 16, &v, 8);
	id = cl_send(cl, VFIO_USER_REGION_WRITE, 0, p, 24, NULL, 0);
	ASSERT_LE(0, id);
	/* the doorbell's reply first (commands are processed in order) */
	ASSERT_EQ(0, cl_wait(cl, id, &r));
	EXPECT_FALSE(r.flags & VFIO_USER_F_ERROR);
	cl_msg_free(&r);
	ASSERT_NE(0, pipelined_ids[0]);
	ASSERT_EQ(0, cl_wait(cl, pipelined_ids[0], &r));
	ASSERT_EQ(24, r.len);
	memcpy(&v, r.payload + 16, 8);
	EXPECT_EQ(42, le64toh(v));
	cl_msg_free(&r);
	ASSERT_EQ(0, cl_wait(cl, pipelined_ids[1], &r));
	EXPECT_EQ(VFIO_USER_DEVICE_RESET, r.command);
	cl_msg_free(&r);
	cl->on_dma = NULL;
	ASSERT_EQ(0, reg_read64(cl, R_STATUS, &v));
	EXPECT_EQ(0, v);
	EXPECT_EQ(0, memcmp(cl->mem, cl->mem + 8192, 5000));
	ASSERT_EQ(0, reg_read64(cl, R_RESETS, &v));
	EXPECT_EQ(1, v);
}

/*
 * A client that posts writes (no-reply flag) while the server waits for a
 * DMA reply: more of them than the queue's message count, none lost, all
 * done in order before the next read.
 */
#define POSTED_DURING_DMA	200

static bool posted_sent;

static void post_during_dma(struct cl *cl, const struct cl_msg *m)
{
	struct vfio_user_region_access a = {
		.offset = htole64(R_SCRATCH), .count = htole32(8),
	};
	uint8_t p[24];
	uint64_t v;
	int i;

	if (m->command != VFIO_USER_DMA_READ || posted_sent)
		return;
	posted_sent = true;
	memcpy(p, &a, 16);
	for (i = 1; i <= POSTED_DURING_DMA; i++) {
		v = htole64(i);
		memcpy(p + 16, &v, 8);
		if (cl_send(cl, VFIO_USER_REGION_WRITE, VFIO_USER_F_NO_REPLY,
			    p, sizeof(p), NULL, 0) < 0)
			posted_sent = false;
	}
}

TEST_F(vus, dma_with_posted_writes)
{
	struct cl *cl = &self->cl;
	int64_t status;
	uint64_t v;

	ASSERT_EQ(0, negotiate(cl));
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, 3, -1, 0));
	memset(cl->mem, 0x5a, 4096);
	posted_sent = false;
	cl->on_dma = post_during_dma;
	EXPECT_EQ(0, dma_copy(cl, T_MEM_IOVA, T_MEM_IOVA + 8192, 4096,
			      &status));
	EXPECT_EQ(0, status);
	cl->on_dma = NULL;
	ASSERT_TRUE(posted_sent);
	ASSERT_EQ(0, reg_read64(cl, R_SCRATCH, &v));
	EXPECT_EQ(POSTED_DURING_DMA, v);
	EXPECT_EQ(0, memcmp(cl->mem, cl->mem + 8192, 4096));
}

/* ---- connection lifecycle ------------------------------------------------ */

TEST_F(vus, reconnect_forgets_client_state)
{
	struct cl *cl = &self->cl;
	uint64_t v;
	int efd;

	ASSERT_EQ(0, negotiate(cl));
	ASSERT_LE(0, efd = new_efd());
	ASSERT_EQ(0, cl_set_irqs(cl, EFD_TRIGGER, VFIO_PCI_MSIX_IRQ_INDEX, 0, 1,
				 NULL, &efd, 1));
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, 3, -1, 0));
	ASSERT_EQ(0, reg_write64(cl, R_SCRATCH, 0xabcdef));
	/* client goes away; the next one comes through the socket path */
	ASSERT_EQ(0, reconnect(cl, self->path));
	ASSERT_EQ(0, reg_read64(cl, R_NR_DMA, &v));
	EXPECT_EQ(0, v);
	EXPECT_EQ(-ENOENT, dev_trigger(cl, VFIO_PCI_MSIX_IRQ_INDEX, 0));
	/* device state is kept */
	ASSERT_EQ(0, reg_read64(cl, R_SCRATCH, &v));
	EXPECT_EQ(0xabcdef, v);
	ASSERT_EQ(0, reg_read64(cl, R_CONNECTS, &v));
	EXPECT_EQ(2, v);
	ASSERT_EQ(0, reg_read64(cl, R_DISCONNECTS, &v));
	EXPECT_EQ(1, v);
	/* and again, several times, including clients that never negotiate */
	for (int i = 0; i < 5; i++) {
		ASSERT_EQ(0, reconnect(cl, self->path));
		close(cl->fd);
		cl->fd = -1;
	}
	ASSERT_EQ(0, reconnect(cl, self->path));
	ASSERT_EQ(0, reg_read64(cl, R_SCRATCH, &v));
	close(efd);
}

TEST(api_misuse)
{
	struct {
		struct vus_dev_opts o;
		uint64_t future;
	} big = { .o.sz = sizeof(big), .future = 1 };
	VUS_OPTS(vus_region_opts, ro, .size = 100);
	VUS_OPTS(vus_pci_opts, po, .vendor_id = 1);
	struct vus_dev *dev;
	uint8_t cap[4] = { 0x09 };

	/* unknown non-zero opts bytes */
	errno = 0;
	EXPECT_EQ(NULL, vus_dev__new(&big.o));
	EXPECT_EQ(EINVAL, errno);
	big.future = 0;
	dev = vus_dev__new(&big.o);
	ASSERT_NE(NULL, dev);
	vus_dev__delete(dev);
	vus_dev__delete(NULL);

	dev = vus_dev__new(NULL);
	ASSERT_NE(NULL, dev);
	EXPECT_EQ(0, vus_dev__add_region(dev, 0, &ro));	/* not PCI yet */
	EXPECT_EQ(-EINVAL, vus_dev__add_region(dev, 64, &ro));
	EXPECT_EQ(-EINVAL, vus_dev__add_region(dev, 0, NULL));
	EXPECT_EQ(-EINVAL, vus_dev__add_pci_cap(dev, cap, 4));
	EXPECT_EQ(0, vus_dev__setup_pci(dev, &po));
	/* a 100-byte BAR is not a power of two */
	EXPECT_EQ(-EINVAL, vus_dev__add_region(dev, 1, &ro));
	EXPECT_EQ(-EBUSY, vus_dev__add_region(dev, VFIO_PCI_CONFIG_REGION_INDEX,
					      &ro));
	EXPECT_EQ(-EINVAL, vus_dev__add_msix(dev, 4, 3, 0, 0x800));
	EXPECT_EQ(-EINVAL, vus_dev__set_irq_count(dev, 16, 1));
	EXPECT_EQ(-EINVAL, vus_dev__set_irq_count(dev, 0, 4096));
	EXPECT_EQ(-EINVAL, vus_dev__trigger_irq(dev, 2, 0));
	EXPECT_EQ(0x40, vus_dev__add_pci_cap(dev, cap, 4));
	EXPECT_EQ(0x44, vus_dev__add_pci_cap(dev, cap, 3));
	EXPECT_EQ(0x44, vus_dev__config(dev)[0x41]);
	EXPECT_EQ(-ENOTCONN, vus_dev__dma_read(dev, 0, cap, 1));
	EXPECT_EQ(0, vus_dev__process(dev));
	vus_dev__delete(dev);
}

/* ---- malformed messages ----------------------------------------------- */

TEST_F(vus, malformed_size_below_header)
{
	uint8_t h[16];

	ASSERT_EQ(0, negotiate(&self->cl));
	cl_hdr(h, 1, VFIO_USER_DEVICE_GET_INFO, 8, 0, 0);
	ASSERT_EQ(0, cl_send_raw(self->cl.fd, h, 16, NULL, 0));
	ASSERT_EQ(0, expect_closed(&self->cl, EINVAL));
	ASSERT_EQ(0, reconnect(&self->cl, self->path));
}

TEST_F(vus, malformed_size_above_limit)
{
	uint8_t h[16];

	ASSERT_EQ(0, negotiate(&self->cl));
	cl_hdr(h, 1, VFIO_USER_REGION_WRITE, 0xffffffff, 0, 0);
	ASSERT_EQ(0, cl_send_raw(self->cl.fd, h, 16, NULL, 0));
	ASSERT_EQ(0, expect_closed(&self->cl, E2BIG));
	ASSERT_EQ(0, reconnect(&self->cl, self->path));
	cl_hdr(h, 1, VFIO_USER_REGION_WRITE, 16 + 16 + T_MAX_XFER + 1024, 0, 0);
	ASSERT_EQ(0, cl_send_raw(self->cl.fd, h, 16, NULL, 0));
	ASSERT_EQ(0, expect_closed(&self->cl, E2BIG));
	ASSERT_EQ(0, reconnect(&self->cl, self->path));
}

TEST_F(vus, malformed_truncated_then_close)
{
	uint8_t m[20] = { 0 };

	ASSERT_EQ(0, negotiate(&self->cl));
	cl_hdr(m, 1, VFIO_USER_DEVICE_GET_INFO, 32, 0, 0);
	ASSERT_EQ(0, cl_send_raw(self->cl.fd, m, sizeof(m), NULL, 0));
	close(self->cl.fd);
	self->cl.fd = -1;
	ASSERT_EQ(0, reconnect(&self->cl, self->path));
}

TEST_F(vus, malformed_commands_and_flags)
{
	struct cl *cl = &self->cl;
	struct cl_msg r;
	uint8_t m[64] = { 0 };
	int efd;

	ASSERT_EQ(0, negotiate(cl));
	/* unknown commands */
	cl_hdr(m, 1, 0, 16, 0, 0);
	EXPECT_EQ(0, raw_expect_error(cl, m, 16, ENOSYS));
	cl_hdr(m, 2, 14, 16, 0, 0);
	EXPECT_EQ(0, raw_expect_error(cl, m, 16, ENOSYS));
	cl_hdr(m, 3, 0xffff, 16, 0, 0);
	EXPECT_EQ(0, raw_expect_error(cl, m, 16, ENOSYS));
	/* known but not offered */
	cl_hdr(m, 4, VFIO_USER_DEVICE_GET_REGION_IO_FDS, 32, 0, 0);
	EXPECT_EQ(0, raw_expect_error(cl, m, 32, EOPNOTSUPP));
	cl_hdr(m, 5, VFIO_USER_DEVICE_FEATURE, 24, 0, 0);
	EXPECT_EQ(0, raw_expect_error(cl, m, 24, EOPNOTSUPP));
	/* server-to-client commands sent by the client */
	cl_hdr(m, 6, VFIO_USER_DMA_READ, 32, 0, 0);
	EXPECT_EQ(0, raw_expect_error(cl, m, 32, EINVAL));
	cl_hdr(m, 7, VFIO_USER_DMA_WRITE, 32, 0, 0);
	EXPECT_EQ(0, raw_expect_error(cl, m, 32, EINVAL));
	/* error flag or unknown flag bits in a command */
	cl_hdr(m, 8, VFIO_USER_DEVICE_RESET, 16, VFIO_USER_F_ERROR, 0);
	EXPECT_EQ(0, raw_expect_error(cl, m, 16, EINVAL));
	cl_hdr(m, 9, VFIO_USER_DEVICE_RESET, 16, 0x40, 0);
	EXPECT_EQ(0, raw_expect_error(cl, m, 16, EINVAL));
	cl_hdr(m, 10, VFIO_USER_DEVICE_RESET, 16, 0x2, 0);
	EXPECT_EQ(0, raw_expect_error(cl, m, 16, EINVAL));
	/* an fd where none belongs */
	ASSERT_LE(0, efd = new_efd());
	cl_hdr(m, 11, VFIO_USER_DEVICE_RESET, 16, 0, 0);
	ASSERT_EQ(0, cl_send_raw(cl->fd, m, 16, &efd, 1));
	ASSERT_EQ(0, cl_recv(cl, &r));
	EXPECT_TRUE(r.flags & VFIO_USER_F_ERROR);
	EXPECT_EQ(EINVAL, r.error_no);
	cl_msg_free(&r);
	close(efd);
	/* no_reply: nothing comes back, the next command's reply does */
	cl_hdr(m, 12, VFIO_USER_DEVICE_RESET, 16, VFIO_USER_F_NO_REPLY, 0);
	ASSERT_EQ(0, cl_send_raw(cl->fd, m, 16, NULL, 0));
	cl_hdr(m, 13, 99, 16, VFIO_USER_F_NO_REPLY, 0);
	ASSERT_EQ(0, cl_send_raw(cl->fd, m, 16, NULL, 0));
	cl_hdr(m, 14, 99, 16, 0, 0);
	ASSERT_EQ(0, cl_send_raw(cl->fd, m, 16, NULL, 0));
	ASSERT_EQ(0, cl_recv(cl, &r));
	EXPECT_EQ(14, r.msg_id);
	cl_msg_free(&r);
	/* wrong payload sizes of fixed-size commands */
	cl_hdr(m, 15, VFIO_USER_DMA_UNMAP, 16 + 23, 0, 0);
	EXPECT_EQ(0, raw_expect_error(cl, m, 16 + 23, EINVAL));
	cl_hdr(m, 16, VFIO_USER_DEVICE_GET_REGION_INFO, 16 + 33, 0, 0);
	EXPECT_EQ(0, raw_expect_error(cl, m, 16 + 33, EINVAL));
	cl_hdr(m, 17, VFIO_USER_DEVICE_GET_IRQ_INFO, 16 + 12, 0, 0);
	EXPECT_EQ(0, raw_expect_error(cl, m, 16 + 12, EINVAL));
	cl_hdr(m, 18, VFIO_USER_DEVICE_GET_IRQ_INFO, 16 + 16, 0, 0);
	EXPECT_EQ(0, raw_expect_error(cl, m, 16 + 16, EINVAL));	/* argsz 0 */
	/* still alive */
	EXPECT_EQ(0, cl_cmd0(cl, VFIO_USER_DEVICE_RESET, NULL, 0));
}

TEST_F(vus, malformed_unsolicited_reply_closes)
{
	uint8_t m[16];

	ASSERT_EQ(0, negotiate(&self->cl));
	cl_hdr(m, 1, VFIO_USER_DMA_READ, 16, VFIO_USER_F_TYPE_REPLY, 0);
	ASSERT_EQ(0, cl_send_raw(self->cl.fd, m, 16, NULL, 0));
	ASSERT_EQ(0, expect_closed(&self->cl, 0));
	ASSERT_EQ(0, reconnect(&self->cl, self->path));
}

TEST_F(vus, malformed_garbage_stream)
{
	uint8_t junk[65536];
	unsigned int i, seed = 1;

	for (i = 0; i < sizeof(junk); i++)
		junk[i] = rand_r(&seed);
	/* whatever the server makes of it, it must not crash or hang */
	cl_send_raw(self->cl.fd, junk, sizeof(junk), NULL, 0);
	close(self->cl.fd);
	self->cl.fd = -1;
	ASSERT_EQ(0, reconnect(&self->cl, self->path));
}

/*
 * Well-framed messages with random commands and random payloads, and valid
 * messages with random bytes flipped: each gets a reply; the client serves
 * whatever DMA the server starts.
 */
TEST_F(vus, fuzz_framed_messages)
{
	struct cl *cl = &self->cl;
	unsigned int seed = 12345, i, replies = 0, errors = 0;
	uint8_t p[256];

	ASSERT_EQ(0, negotiate(cl));
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, 3, -1, 0));
	for (i = 0; i < 3000; i++) {
		unsigned int cmd = rand_r(&seed) % 20, len = rand_r(&seed) % 64;
		struct cl_msg r;
		int id, k;

		if (cmd == VFIO_USER_VERSION)
			continue;
		for (k = 0; k < (int)sizeof(p); k++)
			p[k] = rand_r(&seed) % 4 ? 0 : rand_r(&seed);
		/* make it look plausible: argsz, small index/count */
		if (len >= 16 && rand_r(&seed) % 2) {
			uint32_t argsz = htole32(len), small = htole32(rand_r(&seed) % 12);

			memcpy(p, &argsz, 4);
			memcpy(p + 8, &small, 4);
		}
		if (cmd == VFIO_USER_REGION_WRITE && len >= 16) {
			uint32_t c = htole32(len - 16);

			memcpy(p + 12, &c, 4);
		}
		id = cl_send(cl, cmd, 0, p, len, NULL, 0);
		ASSERT_LE(0, id);
		ASSERT_EQ(0, cl_wait(cl, id, &r));
		replies++;
		if (r.flags & VFIO_USER_F_ERROR)
			errors++;
		cl_msg_free(&r);
	}
	TH_LOG("%u replies, %u errors", replies, errors);
	EXPECT_GT(errors, 100);
	EXPECT_GT(replies - errors, 10);
}

/* ---- DMA from the application, outside any handler ---------------------- */

/*
 * The application may call vus_dev__dma_*() from its own context. Client
 * commands that arrive during such a DMA wait are queued (or left in the
 * receive buffer) and must still run in stream order, and a socket event
 * left stale by that read-ahead must not make vus_dev__process() wait.
 */
struct rv {
	struct cl cl;
	atomic_int stage;
	int mode;		/* 0: reorder, 1: stale conn_fd event */
	uint64_t got;
	int order[2];
	int err;
	bool eof;
};

static void *rv_client(void *arg)
{
	struct rv *r = arg;
	struct cl *cl = &r->cl;
	struct cl_msg m, x;
	uint8_t buf[256];
	size_t len = 0;
	struct { struct vfio_user_hdr h; struct vfio_user_region_access a; uint64_t v; } __attribute__((packed)) wr;
	struct { struct vfio_user_hdr h; struct vfio_user_region_access a; } __attribute__((packed)) rd;
	int i;

	if (negotiate(cl) || cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, 3, -1, 0)) {
		r->err = 1;
		atomic_store(&r->stage, 99);
		return NULL;
	}
	atomic_store(&r->stage, 1);
	if (cl_recv(cl, &m)) { r->err = 2; return NULL; }
	memset(&wr, 0, sizeof(wr));
	cl_hdr(&wr.h, 200, VFIO_USER_REGION_WRITE, sizeof(wr), 0, 0);
	wr.a.offset = htole64(R_SCRATCH);
	wr.a.region = htole32(VFIO_PCI_BAR0_REGION_INDEX);
	wr.a.count = htole32(8);
	wr.v = htole64(0xAA);
	memset(&rd, 0, sizeof(rd));
	cl_hdr(&rd.h, 201, VFIO_USER_REGION_READ, sizeof(rd), 0, 0);
	rd.a = wr.a;
	if (r->mode == 0) {
		memcpy(buf + len, &wr, sizeof(wr)); len += sizeof(wr);
	}
	cl_hdr(buf + len, m.msg_id, m.command, 32, VFIO_USER_F_TYPE_REPLY, 0);
	memcpy(buf + len + 16, m.payload, 16); len += 32;
	if (r->mode == 0) {
		memcpy(buf + len, &rd, sizeof(rd)); len += sizeof(rd);
		cl_send_raw(cl->fd, buf, len, NULL, 0);
	} else {
		memcpy(buf + len, &rd, 8); len += 8;
		cl_send_raw(cl->fd, buf, len, NULL, 0);
		usleep(100000);
		cl_send_raw(cl->fd, (uint8_t *)&rd + 8, sizeof(rd) - 8, NULL, 0);
		usleep(50000);
	}
	cl_msg_free(&m);
	atomic_store(&r->stage, 2);
	for (i = 0; i < (r->mode == 0 ? 2 : 1); i++) {
		if (cl_recv(cl, &x)) { r->eof = true; break; }
		r->order[i] = x.msg_id;
		if (x.msg_id == 201)
			memcpy(&r->got, x.payload + 16, 8);
		cl_msg_free(&x);
	}
	if (r->mode == 1 && !cl_recv(cl, &x)) cl_msg_free(&x); else r->eof = true;
	atomic_store(&r->stage, 3);
	return NULL;
}

static void rv_run(struct __test_metadata *_metadata, int mode)
{
	struct tdev t = { 0 };
	struct vus_dev *dev = t_dev_new(&t);
	struct pollfd pfd;
	struct rv r = { .mode = mode };
	struct timespec a, b;
	pthread_t thr;
	int sv[2], i;
	uint64_t v = 0x55;

	ASSERT_NE(NULL, dev);
	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	ASSERT_EQ(0, vus_dev__attach_fd(dev, sv[1]));
	r.cl.fd = sv[0];
	r.cl.mem = calloc(1, T_MEM_SIZE);
	r.cl.mem_iova = T_MEM_IOVA;
	r.cl.mem_len = T_MEM_SIZE;
	pfd.fd = vus_dev__fd(dev);
	pfd.events = POLLIN;
	ASSERT_EQ(0, pthread_create(&thr, NULL, rv_client, &r));
	while (atomic_load(&r.stage) == 0)
		if (poll(&pfd, 1, 20) > 0)
			vus_dev__process(dev);
	ASSERT_EQ(1, atomic_load(&r.stage));
	/* the application's own DMA, outside any handler */
	ASSERT_EQ(0, vus_dev__dma_write(dev, T_MEM_IOVA, &v, 8));
	while (atomic_load(&r.stage) < 2)
		usleep(1000);
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (i = 0; i < 5 && atomic_load(&r.stage) < 3; i++)
		if (poll(&pfd, 1, 100) > 0)
			vus_dev__process(dev);
	clock_gettime(CLOCK_MONOTONIC, &b);
	pthread_join(thr, NULL);
	TH_LOG("mode %d: order %d %d, read %#llx, eof %d, connected %d, %.2f s",
	       mode, r.order[0], r.order[1], (unsigned long long)r.got, r.eof,
	       vus_dev__connected(dev),
	       (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
	if (mode == 0) {
		EXPECT_EQ(200, r.order[0]);
		EXPECT_EQ(0xAA, r.got);
	} else {
		EXPECT_TRUE(vus_dev__connected(dev));
	}
	vus_dev__delete(dev);
	close(sv[0]);
	free(r.cl.mem);
}

TEST(dma_outside_handler_keeps_command_order)
{
	rv_run(_metadata, 0);
}

TEST(dma_outside_handler_partial_command)
{
	rv_run(_metadata, 1);
}

struct rv2 {
	struct cl cl;
	atomic_int stage;
	int err;
	int ids[4];
	int nids;
};

static void rv2_dma_reply(uint8_t *buf, const struct cl_msg *m)
{
	cl_hdr(buf, m->msg_id, m->command, 32, VFIO_USER_F_TYPE_REPLY, 0);
	memcpy(buf + 16, m->payload, 16);
}

static void *rv2_client(void *arg)
{
	struct rv2 *r = arg;
	struct cl *cl = &r->cl;
	struct cl_msg m, x;
	uint8_t buf[256];
	struct { struct vfio_user_hdr h; struct vfio_user_region_access a; } __attribute__((packed)) rd;

	if (negotiate(cl) || cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, 3, -1, 0)) {
		atomic_store(&r->stage, 99);
		return NULL;
	}
	memset(&rd, 0, sizeof(rd));
	rd.a.offset = htole64(R_SCRATCH);
	rd.a.region = htole32(VFIO_PCI_BAR0_REGION_INDEX);
	rd.a.count = htole32(8);
	atomic_store(&r->stage, 1);
	/* round 1: reply + a whole command */
	if (cl_recv(cl, &m)) { r->err = 1; return NULL; }
	rv2_dma_reply(buf, &m);
	cl_hdr(&rd.h, 150, VFIO_USER_REGION_READ, sizeof(rd), 0, 0);
	memcpy(buf + 32, &rd, sizeof(rd));
	cl_send_raw(cl->fd, buf, 32 + sizeof(rd), NULL, 0);
	cl_msg_free(&m);
	if (cl_recv(cl, &x)) { r->err = 2; return NULL; }
	r->ids[r->nids++] = x.msg_id;
	cl_msg_free(&x);
	atomic_store(&r->stage, 2);
	/* round 2: reply + the start of a command, its rest a bit later */
	if (cl_recv(cl, &m)) { r->err = 3; return NULL; }
	rv2_dma_reply(buf, &m);
	cl_hdr(&rd.h, 151, VFIO_USER_REGION_READ, sizeof(rd), 0, 0);
	memcpy(buf + 32, &rd, 8);
	cl_send_raw(cl->fd, buf, 32 + 8, NULL, 0);
	cl_msg_free(&m);
	usleep(100000);
	cl_send_raw(cl->fd, (uint8_t *)&rd + 8, sizeof(rd) - 8, NULL, 0);
	usleep(20000);
	atomic_store(&r->stage, 3);
	if (cl_recv(cl, &x)) { r->err = 4; return NULL; }
	r->ids[r->nids++] = x.msg_id;
	cl_msg_free(&x);
	/* anything more is the server closing */
	if (!cl_recv(cl, &x)) { r->ids[r->nids++] = x.msg_id; cl_msg_free(&x); }
	else r->err = 5;
	return NULL;
}

/* A stale conn_fd event after a read-ahead: process() must not block. */
TEST(dma_outside_handler_stale_socket_event)
{
	struct tdev t = { 0 };
	struct vus_dev *dev = t_dev_new(&t);
	struct pollfd pfd;
	struct rv2 r = { 0 };
	struct timespec a, b;
	pthread_t thr;
	int sv[2];
	uint64_t v = 0x55;

	ASSERT_NE(NULL, dev);
	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	ASSERT_EQ(0, vus_dev__attach_fd(dev, sv[1]));
	r.cl.fd = sv[0];
	r.cl.mem = calloc(1, T_MEM_SIZE);
	r.cl.mem_iova = T_MEM_IOVA;
	r.cl.mem_len = T_MEM_SIZE;
	pfd.fd = vus_dev__fd(dev);
	pfd.events = POLLIN;
	ASSERT_EQ(0, pthread_create(&thr, NULL, rv2_client, &r));
	while (atomic_load(&r.stage) == 0)
		if (poll(&pfd, 1, 20) > 0)
			vus_dev__process(dev);
	ASSERT_EQ(1, atomic_load(&r.stage));
	ASSERT_EQ(0, vus_dev__dma_write(dev, T_MEM_IOVA, &v, 8));
	while (atomic_load(&r.stage) < 2)
		if (poll(&pfd, 1, 20) > 0)
			vus_dev__process(dev);
	ASSERT_EQ(0, vus_dev__dma_write(dev, T_MEM_IOVA, &v, 8));
	while (atomic_load(&r.stage) < 3)
		usleep(1000);
	clock_gettime(CLOCK_MONOTONIC, &a);
	ASSERT_LT(0, poll(&pfd, 1, 100));
	TH_LOG("process: %d", vus_dev__process(dev));
	clock_gettime(CLOCK_MONOTONIC, &b);
	pthread_join(thr, NULL);
	TH_LOG("ids %d %d %d (n %d), err %d, connected %d, process took %.2f s",
	       r.ids[0], r.ids[1], r.ids[2], r.nids, r.err,
	       vus_dev__connected(dev),
	       (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
	EXPECT_TRUE(vus_dev__connected(dev));
	vus_dev__delete(dev);
	close(sv[0]);
	free(r.cl.mem);
}

static int rv_cnt;

static void rv_err_second(struct cl *cl, const struct cl_msg *m)
{
	cl->dma_reply_error = (++rv_cnt == 2) ? EFAULT : 0;
}

/* An error reply in the middle of the DMA window: -EIO, stream in step. */
TEST_F(vus, dma_error_mid_window)
{
	struct cl *cl = &self->cl;
	int64_t status;
	uint64_t v;

	ASSERT_EQ(0, negotiate(cl));
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, 3, -1, 0));
	cl->on_dma = rv_err_second;
	ASSERT_EQ(0, dma_copy(cl, T_MEM_IOVA, T_MEM_IOVA + 0x40000, 6 * 4096, &status));
	TH_LOG("status %lld reads %u writes %u", (long long)status, cl->dma_reads, cl->dma_writes);
	EXPECT_EQ(-EIO, status);
	cl->on_dma = NULL;
	cl->dma_reply_error = 0;
	ASSERT_EQ(0, reg_read64(cl, R_STATUS, &v));
	ASSERT_EQ(0, dma_copy(cl, T_MEM_IOVA, T_MEM_IOVA + 0x40000, 6 * 4096, &status));
	EXPECT_EQ(0, status);
}

/* ---- zero-copy DMA: pointers, statistics, SIGBUS ------------------------- */

#define RW	(VFIO_USER_F_DMA_REGION_READ | VFIO_USER_F_DMA_REGION_WRITE)
#define F_IOVA	0x40000000ULL	/* fd-backed regions go here */

/* 0 for a pointer, -errno for NULL */
static int ptr_err(const void *p)
{
	return p ? 0 : -errno;
}

/* A memfd of @size bytes, mapped into *@map as the client sees it. */
static int guest_memfd(size_t size, uint8_t **map)
{
	int fd = memfd_create("guest", MFD_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, size)) {
		close(fd);
		return -errno;
	}
	*map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (*map == MAP_FAILED) {
		close(fd);
		return -errno;
	}
	return fd;
}

/* Stop the fixture's server thread: the test body calls the library. */
static void stop_server(FIXTURE_DATA(vus) *self)
{
	atomic_store(&self->s.stop, true);
	pthread_join(self->s.thr, NULL);
	self->thread_started = false;
}

TEST_F(vus, dma_ptr)
{
	const uint64_t a = F_IOVA, b = F_IOVA + 0x10000;
	struct cl *cl = &self->cl;
	struct vus_dev *dev = self->s.dev;
	uint8_t *ma, *mb, *p;
	int fa, fb;

	ASSERT_EQ(0, negotiate(cl));
	/* a: 64 KiB read-write at file offset 64 KiB; b: 4 KiB read-only */
	ASSERT_LE(0, fa = guest_memfd(0x20000, &ma));
	ASSERT_LE(0, fb = guest_memfd(0x1000, &mb));
	ASSERT_EQ(0, cl_dma_map(cl, a, 0x10000, RW, fa, 0x10000));
	ASSERT_EQ(0, cl_dma_map(cl, b, 0x1000, VFIO_USER_F_DMA_REGION_READ,
				fb, 0));
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, RW, -1, 0));
	stop_server(self);

	/* inside: the client's memory, at the file offset it gave */
	p = vus_dev__dma_ptr(dev, a + 0x100, 0x100, VUS_DMA_READ | VUS_DMA_WRITE);
	ASSERT_NE(NULL, p);
	memcpy(p, "zero copy", 10);
	EXPECT_EQ(0, memcmp(ma + 0x10100, "zero copy", 10));
	ma[0x1ffff] = 0x5a;
	p = vus_dev__dma_ptr(dev, a, 0x10000, VUS_DMA_READ);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(0x5a, p[0xffff]);
	mb[0xfff] = 7;
	p = vus_dev__dma_ptr(dev, b + 0xfff, 1, VUS_DMA_READ);
	ASSERT_NE(NULL, p);
	EXPECT_EQ(7, *p);

	/* straddling: into the next region (mapped too), or past the end */
	EXPECT_EQ(-EFAULT, ptr_err(vus_dev__dma_ptr(dev, a + 0xff00, 0x200,
						    VUS_DMA_READ)));
	EXPECT_EQ(-EFAULT, ptr_err(vus_dev__dma_ptr(dev, b + 0xff0, 0x20,
						    VUS_DMA_READ)));
	EXPECT_EQ(-EFAULT, ptr_err(vus_dev__dma_ptr(dev, a, SIZE_MAX,
						    VUS_DMA_READ)));
	/* outside */
	EXPECT_EQ(-EFAULT, ptr_err(vus_dev__dma_ptr(dev, 0x10, 4, VUS_DMA_READ)));
	EXPECT_EQ(-EFAULT, ptr_err(vus_dev__dma_ptr(dev, a - 1, 2, VUS_DMA_READ)));
	EXPECT_EQ(-EFAULT, ptr_err(vus_dev__dma_ptr(dev, UINT64_MAX - 3, 8,
						    VUS_DMA_READ)));
	/* wrong rights */
	EXPECT_EQ(-EACCES, ptr_err(vus_dev__dma_ptr(dev, b, 4, VUS_DMA_WRITE)));
	EXPECT_EQ(-EACCES, ptr_err(vus_dev__dma_ptr(dev, b, 4, VUS_DMA_READ |
						    VUS_DMA_WRITE)));
	/* a region without fd */
	EXPECT_EQ(-EOPNOTSUPP, ptr_err(vus_dev__dma_ptr(dev, T_MEM_IOVA, 4,
							VUS_DMA_READ)));
	/* bad arguments */
	EXPECT_EQ(-EINVAL, ptr_err(vus_dev__dma_ptr(dev, a, 0, VUS_DMA_READ)));
	EXPECT_EQ(-EINVAL, ptr_err(vus_dev__dma_ptr(dev, a, 4, 0)));
	EXPECT_EQ(-EINVAL, ptr_err(vus_dev__dma_ptr(dev, a, 4, 4)));
	EXPECT_EQ(-EINVAL, ptr_err(vus_dev__dma_ptr(NULL, a, 4, VUS_DMA_READ)));
	/* nothing of this went over the socket */
	EXPECT_EQ(0, cl->dma_reads + cl->dma_writes);
	/* no client, no pointer */
	vus_dev__disconnect(dev);
	EXPECT_EQ(-ENOTCONN, ptr_err(vus_dev__dma_ptr(dev, a, 4, VUS_DMA_READ)));
	munmap(ma, 0x20000);
	munmap(mb, 0x1000);
	close(fa);
	close(fb);
}

TEST_F(vus, dma_stats)
{
	VUS_OPTS(vus_dma_stats, st);
	struct {
		size_t sz;
		uint64_t mmap_ops;
		uint64_t beyond;
	} older = { .sz = offsetof(struct vus_dma_stats, mmap_bytes),
		    .beyond = 0xdead };
	struct cl *cl = &self->cl;
	int64_t status;
	uint8_t *m;
	int fd, i;

	ASSERT_EQ(0, negotiate(cl));	/* client max_data_xfer_size 4096 */
	ASSERT_LE(0, fd = guest_memfd(0x10000, &m));
	ASSERT_EQ(0, cl_dma_map(cl, F_IOVA, 0x10000, RW, fd, 0));
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, RW, -1, 0));
	for (i = 0; i < 0x8000; i++)
		m[i] = cl->mem[i] = i * 5 + 1;

	/* mapping to mapping: no message */
	ASSERT_EQ(0, dma_copy(cl, F_IOVA, F_IOVA + 0x8000, 4096, &status));
	EXPECT_EQ(0, status);
	EXPECT_EQ(0, memcmp(m, m + 0x8000, 4096));
	EXPECT_EQ(0, cl->dma_reads + cl->dma_writes);
	/* messages only: 3 + 3 */
	ASSERT_EQ(0, dma_copy(cl, T_MEM_IOVA, T_MEM_IOVA + 0x80000, 10000,
			      &status));
	EXPECT_EQ(0, status);
	/* mapping to messages, messages to mapping */
	ASSERT_EQ(0, dma_copy(cl, F_IOVA, T_MEM_IOVA + 0x40000, 5000, &status));
	EXPECT_EQ(0, status);
	EXPECT_EQ(0, memcmp(m, cl->mem + 0x40000, 5000));
	ASSERT_EQ(0, dma_copy(cl, T_MEM_IOVA, F_IOVA + 0xc000, 100, &status));
	EXPECT_EQ(0, status);
	EXPECT_EQ(0, memcmp(cl->mem, m + 0xc000, 100));
	stop_server(self);

	ASSERT_EQ(0, vus_dev__dma_stats(self->s.dev, &st));
	EXPECT_EQ(sizeof(st), st.sz);
	EXPECT_EQ(4, st.mmap_ops);
	EXPECT_EQ(2 * 4096 + 5000 + 100, st.mmap_bytes);
	EXPECT_EQ(4, st.msg_ops);
	EXPECT_EQ(2 * 10000 + 5000 + 100, st.msg_bytes);
	EXPECT_EQ(4, st.dma_read_msgs);
	EXPECT_EQ(5, st.dma_write_msgs);
	EXPECT_EQ(cl->dma_reads, st.dma_read_msgs);
	EXPECT_EQ(cl->dma_writes, st.dma_write_msgs);
	EXPECT_EQ(0, st.faults);
	/* a caller built against an older header gets what it knows */
	ASSERT_EQ(0, vus_dev__dma_stats(self->s.dev,
					(struct vus_dma_stats *)&older));
	EXPECT_EQ(4, older.mmap_ops);
	EXPECT_EQ(0xdead, older.beyond);
	st.sz = 0;
	EXPECT_EQ(-EINVAL, vus_dev__dma_stats(self->s.dev, &st));
	EXPECT_EQ(-EINVAL, vus_dev__dma_stats(self->s.dev, NULL));
	munmap(m, 0x10000);
	close(fd);
}

/*
 * The client takes the memory of an fd-backed region away without a
 * DMA_UNMAP (the module zaps the mapping): the library's copies through
 * it raise SIGBUS, which ends them with -EFAULT; the server lives on.
 */
TEST_F(vus, dma_sigbus_caught)
{
	VUS_OPTS(vus_dma_stats, st);
	struct cl *cl = &self->cl;
	int64_t status;
	uint64_t v;
	uint8_t *m;
	int fd;

	ASSERT_EQ(0, negotiate(cl));
	ASSERT_LE(0, fd = guest_memfd(0x10000, &m));
	ASSERT_EQ(0, cl_dma_map(cl, F_IOVA, 0x10000, RW, fd, 0));
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, RW, -1, 0));
	memset(m, 0x33, 0x10000);
	ASSERT_EQ(0, dma_copy(cl, F_IOVA, T_MEM_IOVA, 4096, &status));
	EXPECT_EQ(0, status);

	ASSERT_EQ(0, ftruncate(fd, 0));
	/* the read from the mapping faults */
	ASSERT_EQ(0, dma_copy(cl, F_IOVA + 0x1000, T_MEM_IOVA, 4096, &status));
	EXPECT_EQ(-EFAULT, status);
	/* so does the write into it, after a DMA_READ message */
	ASSERT_EQ(0, dma_copy(cl, T_MEM_IOVA, F_IOVA + 0x2000, 4096, &status));
	EXPECT_EQ(-EFAULT, status);
	EXPECT_EQ(1, cl->dma_reads);
	/* the server is alive and the connection in step */
	ASSERT_EQ(0, reg_write64(cl, R_SCRATCH, 0x5151));
	ASSERT_EQ(0, reg_read64(cl, R_SCRATCH, &v));
	EXPECT_EQ(0x5151, v);
	/* memory back (zeroes): copies work again */
	ASSERT_EQ(0, ftruncate(fd, 0x10000));
	ASSERT_EQ(0, dma_copy(cl, F_IOVA, F_IOVA + 0x8000, 4096, &status));
	EXPECT_EQ(0, status);
	stop_server(self);
	ASSERT_EQ(0, vus_dev__dma_stats(self->s.dev, &st));
	EXPECT_EQ(2, st.faults);
	EXPECT_EQ(3, st.mmap_ops);	/* the first read, the last copy */
	munmap(m, 0x10000);
	close(fd);
}

/*
 * A device on a socketpair whose client mapped one fd-backed read-write
 * region [F_IOVA, + 64 KiB); the server thread is stopped afterwards, so
 * the test calls the library itself. For tests without the fixture.
 */
struct mini {
	struct tdev t;
	struct srv s;
	struct cl cl;
	int memfd;
	uint8_t *mem;		/* the client's view of the region */
};

/* where a test's faulting loads go (valgrind drops an unused load) */
static volatile uint8_t sigbus_sink;

static int mini_setup(struct mini *m)
{
	int sv[2], err;

	memset(m, 0, sizeof(*m));
	m->cl.fd = m->memfd = -1;
	m->s.dev = t_dev_new(&m->t);
	if (!m->s.dev)
		return -errno;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return -errno;
	err = vus_dev__attach_fd(m->s.dev, sv[1]);
	m->cl.fd = sv[0];
	if (err)
		return err;
	m->memfd = guest_memfd(0x10000, &m->mem);
	if (m->memfd < 0)
		return m->memfd;
	if (pthread_create(&m->s.thr, NULL, srv_thread, &m->s))
		return -EAGAIN;
	err = negotiate(&m->cl) ?: cl_dma_map(&m->cl, F_IOVA, 0x10000, RW,
					      m->memfd, 0);
	atomic_store(&m->s.stop, true);
	pthread_join(m->s.thr, NULL);
	return err;
}

static void mini_teardown(struct mini *m)
{
	vus_dev__delete(m->s.dev);
	if (m->mem && m->mem != MAP_FAILED)
		munmap(m->mem, 0x10000);
	if (m->memfd >= 0)
		close(m->memfd);
	if (m->cl.fd >= 0)
		close(m->cl.fd);
}

/*
 * A SIGBUS outside the library's copies meets the default action, as
 * without the library: the process dies (here a child of the test, after
 * the test itself saw the library catch its own copies' faults).
 */
TEST(dma_sigbus_not_ours_default)
{
	struct rlimit no_core = { 0, 0 };
	uint8_t buf[16], *p;
	struct mini m;
	int status;
	pid_t pid;

	ASSERT_EQ(0, mini_setup(&m));
	p = vus_dev__dma_ptr(m.s.dev, F_IOVA, 16, VUS_DMA_READ | VUS_DMA_WRITE);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, vus_dma_memcpy(buf, p, 16));
	ASSERT_EQ(0, ftruncate(m.memfd, 0));
	/* the library's own copies end in -EFAULT */
	EXPECT_EQ(-EFAULT, vus_dev__dma_read(m.s.dev, F_IOVA, buf, 16));
	EXPECT_EQ(-EFAULT, vus_dev__dma_write(m.s.dev, F_IOVA, buf, 16));
	EXPECT_EQ(-EFAULT, vus_dma_memcpy(buf, p, 16));
	EXPECT_EQ(-EFAULT, vus_dma_memcpy(p, buf, 16));
	/* the device's own access through the pointer kills */
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		setrlimit(RLIMIT_CORE, &no_core);
		sigbus_sink = *(volatile uint8_t *)p;
		_exit(0);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFSIGNALED(status));
	EXPECT_EQ(SIGBUS, WTERMSIG(status));
	/* so does a SIGBUS sent to it */
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		setrlimit(RLIMIT_CORE, &no_core);
		raise(SIGBUS);
		_exit(0);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFSIGNALED(status));
	EXPECT_EQ(SIGBUS, WTERMSIG(status));
	mini_teardown(&m);
}

static sigjmp_buf app_env;
static volatile sig_atomic_t app_sigbus;

static void app_sigbus_handler(int sig, siginfo_t *si, void *uc)
{
	app_sigbus++;
	siglongjmp(app_env, 1);
}

/*
 * An application's SIGBUS handler, installed before the library's, still
 * gets every SIGBUS that is not from the library's copies.
 */
TEST(dma_sigbus_not_ours_app_handler)
{
	struct sigaction sa = {
		.sa_sigaction = app_sigbus_handler,
		.sa_flags = SA_SIGINFO,
	}, cur;
	uint8_t buf[16], *p;
	struct mini m;

	sigemptyset(&sa.sa_mask);
	ASSERT_EQ(0, sigaction(SIGBUS, &sa, NULL));
	ASSERT_EQ(0, mini_setup(&m));
	/* the library's handler sits in front now */
	ASSERT_EQ(0, sigaction(SIGBUS, NULL, &cur));
	EXPECT_TRUE(cur.sa_sigaction != app_sigbus_handler);
	p = vus_dev__dma_ptr(m.s.dev, F_IOVA + 0x100, 16, VUS_DMA_READ);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, ftruncate(m.memfd, 0));

	EXPECT_EQ(-EFAULT, vus_dev__dma_read(m.s.dev, F_IOVA, buf, 16));
	EXPECT_EQ(0, app_sigbus);
	/* the device's own access: the application's handler */
	if (!sigsetjmp(app_env, 1)) {
		sigbus_sink = *(volatile uint8_t *)p;
		EXPECT_TRUE(false);	/* no SIGBUS */
	}
	EXPECT_EQ(1, app_sigbus);
	/* a SIGBUS sent, not a fault: the application's too */
	if (!sigsetjmp(app_env, 1)) {
		raise(SIGBUS);
		EXPECT_TRUE(false);
	}
	EXPECT_EQ(2, app_sigbus);
	/* and the library still catches its own afterwards */
	EXPECT_EQ(-EFAULT, vus_dev__dma_write(m.s.dev, F_IOVA, buf, 16));
	EXPECT_EQ(2, app_sigbus);
	mini_teardown(&m);
}

static atomic_int mmap_warnings;

static int count_mmap_warnings(enum vus_print_level level, const char *fmt,
			       va_list ap)
{
	if (level == VUS_WARN && strstr(fmt, "cannot map"))
		atomic_fetch_add(&mmap_warnings, 1);
	return 0;
}

/* An fd the server cannot mmap: the region is kept, served by messages. */
TEST_F(vus, dma_map_fd_without_mmap)
{
	struct cl *cl = &self->cl;
	vus_print_fn_t old = vus_set_print(count_mmap_warnings);
	char path[64];
	int64_t status;
	uint8_t *m;
	int efd, memfd, rofd;

	ASSERT_EQ(0, negotiate(cl));
	ASSERT_LE(0, efd = new_efd());
	ASSERT_LE(0, memfd = guest_memfd(0x10000, &m));
	snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
	ASSERT_LE(0, rofd = open(path, O_RDONLY | O_CLOEXEC));
	/* an eventfd has no mmap (ENODEV) */
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, 0x10000, RW, efd, 0));
	/* a read-only fd for a read-write region (EACCES) */
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA + 0x10000, 0x10000, RW, rofd, 0));
	memset(cl->mem, 0x42, 5000);
	ASSERT_EQ(0, dma_copy(cl, T_MEM_IOVA, T_MEM_IOVA + 0x10000, 5000,
			      &status));
	EXPECT_EQ(0, status);
	EXPECT_EQ(0, memcmp(cl->mem, cl->mem + 0x10000, 5000));
	EXPECT_EQ(2, cl->dma_reads);
	EXPECT_EQ(2, cl->dma_writes);
	/* logged once per device */
	EXPECT_EQ(1, atomic_load(&mmap_warnings));
	stop_server(self);
	EXPECT_EQ(2, vus_dev__nr_dma_regions(self->s.dev));
	EXPECT_EQ(-EOPNOTSUPP, ptr_err(vus_dev__dma_ptr(self->s.dev, T_MEM_IOVA,
							4, VUS_DMA_READ)));
	vus_set_print(old);
	munmap(m, 0x10000);
	close(efd);
	close(memfd);
	close(rofd);
}

static uint64_t vm_size(void)
{
	char line[128];
	unsigned long long kb = 0;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmSize: %llu kB", &kb) == 1)
			break;
	fclose(f);
	return kb << 10;
}

/*
 * The module announces fd-backed regions of up to 1 TiB. Mapped when the
 * address space allows (no memory is touched), else (ENOMEM) kept and
 * served with messages.
 */
TEST_F(vus, dma_map_huge_fd_region)
{
	const uint64_t tib = 1ULL << 40;
	struct cl *cl = &self->cl;
	struct rlimit old, lim;
	int64_t status;
	int fd;

	/* valgrind refuses (EINVAL) and limits mappings of its own */
	if (strstr(getenv("LD_PRELOAD") ?: "", "vgpreload"))
		SKIP(return, "under valgrind");
	ASSERT_EQ(0, negotiate(cl));
	ASSERT_LE(0, fd = memfd_create("huge", MFD_CLOEXEC));
	ASSERT_EQ(0, ftruncate(fd, tib));
	ASSERT_EQ(3, pwrite(fd, "far", 3, tib - 4096));
	ASSERT_EQ(0, cl_dma_map(cl, tib, tib, RW, fd, 0));
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, RW, -1, 0));
	ASSERT_EQ(0, dma_copy(cl, 2 * tib - 4096, T_MEM_IOVA, 3, &status));
	EXPECT_EQ(0, status);
	EXPECT_EQ(0, memcmp(cl->mem, "far", 3));
	EXPECT_EQ(0, cl->dma_reads);	/* read through the mapping */
	EXPECT_EQ(1, cl->dma_writes);
	ASSERT_EQ(0, cl_dma_unmap(cl, tib, tib, 0));
	ASSERT_EQ(0, cl_dma_unmap(cl, T_MEM_IOVA, T_MEM_SIZE, 0));

	/* now without the address space for it */
	ASSERT_EQ(0, getrlimit(RLIMIT_AS, &old));
	lim = old;
	lim.rlim_cur = vm_size() + (512ULL << 20);
	ASSERT_EQ(0, setrlimit(RLIMIT_AS, &lim));
	status = cl_dma_map(cl, T_MEM_IOVA, tib, RW, fd, 0);
	ASSERT_EQ(0, setrlimit(RLIMIT_AS, &old));
	ASSERT_EQ(0, status);
	cl->dma_reads = cl->dma_writes = 0;
	memcpy(cl->mem, "near", 4);
	ASSERT_EQ(0, dma_copy(cl, T_MEM_IOVA, T_MEM_IOVA + 0x1000, 4, &status));
	EXPECT_EQ(0, status);
	EXPECT_EQ(0, memcmp(cl->mem + 0x1000, "near", 4));
	EXPECT_EQ(1, cl->dma_reads);	/* served by the client */
	EXPECT_EQ(1, cl->dma_writes);
	close(fd);
}

/* ---- the twin socket ---------------------------------------------------- */

/*
 * The device offers the twin socket (or not), strict_dma_reply on or off;
 * the tests' clients ask for it (or not). DMA and its replies must travel
 * on the twin socket exactly when both sides want it.
 */
FIXTURE(twin) {
	struct tdev t;
	struct srv s;
	struct cl cl;
	char path[108];
	bool thread_started;
};

FIXTURE_VARIANT(twin) {
	bool offer;
	bool strict;
};

FIXTURE_VARIANT_ADD(twin, offered) {
	.offer = true,
};

FIXTURE_VARIANT_ADD(twin, offered_strict) {
	.offer = true,
	.strict = true,
};

FIXTURE_VARIANT_ADD(twin, not_offered) {
	.offer = false,
};

FIXTURE_VARIANT_ADD(twin, not_offered_strict) {
	.strict = true,
};

FIXTURE_SETUP(twin)
{
	int sv[2];

	memset(&self->cl, 0, sizeof(self->cl));
	self->cl.fd = -1;
	memset(&self->t, 0, sizeof(self->t));
	snprintf(self->path, sizeof(self->path), "/tmp/vus-twin-%d.sock",
		 getpid());
	self->s.dev = t_dev_new_ex(&self->t, variant->offer, variant->strict);
	ASSERT_NE(NULL, self->s.dev);
	ASSERT_EQ(0, vus_dev__listen(self->s.dev, self->path));
	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
	ASSERT_EQ(0, vus_dev__attach_fd(self->s.dev, sv[1]));
	self->cl.fd = sv[0];
	self->cl.mem = calloc(1, T_MEM_SIZE);
	ASSERT_NE(NULL, self->cl.mem);
	self->cl.mem_iova = T_MEM_IOVA;
	self->cl.mem_len = T_MEM_SIZE;
	atomic_store(&self->s.stop, false);
	ASSERT_EQ(0, pthread_create(&self->s.thr, NULL, srv_thread, &self->s));
	self->thread_started = true;
}

FIXTURE_TEARDOWN(twin)
{
	if (self->thread_started) {
		atomic_store(&self->s.stop, true);
		pthread_join(self->s.thr, NULL);
	}
	vus_dev__delete(self->s.dev);
	if (self->cl.fd >= 0)
		close(self->cl.fd);
	if (self->cl.twin)
		close(self->cl.twin_fd);
	free(self->cl.mem);
	EXPECT_NE(0, access(self->path, F_OK));
}

#define TWIN_JSON "{\"capabilities\":{\"max_msg_fds\":8," \
		  "\"max_data_xfer_size\":4096,\"pgsizes\":4096," \
		  "\"twin_socket\":{\"supported\":true}}}"
#define TWIN_REPLY_CAP "\"twin_socket\":{\"supported\":true,\"fd_index\":0}"

/* A connected AF_UNIX stream socket: 0, else -errno or -EPROTO. */
static int unix_stream_connected(int fd)
{
	struct sockaddr_un sa;
	socklen_t len = sizeof(int);
	int v;

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len))
		return -errno;
	if (v != AF_UNIX)
		return -EPROTO;
	len = sizeof(int);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len))
		return -errno;
	if (v != SOCK_STREAM)
		return -EPROTO;
	len = sizeof(sa);
	return getpeername(fd, (struct sockaddr *)&sa, &len) ? -errno : 0;
}

/*
 * Check a VERSION reply's twin socket: a "twin_socket" capability exactly
 * when the reply carries one fd, with "supported": true and "fd_index": 0,
 * and that fd a connected AF_UNIX stream socket. Takes the fd into @cl.
 * Returns 1 (twin socket), 0 (none) or -EPROTO.
 */
static int take_twin(struct cl *cl, struct cl_msg *r)
{
	json_object *root, *caps, *tw, *o;
	bool has;
	int ret = -EPROTO;

	cl->twin = false;
	root = json_tokener_parse((char *)r->payload + 4);
	if (!root)
		return -EPROTO;
	if (!json_object_object_get_ex(root, "capabilities", &caps))
		goto out;
	has = json_object_object_get_ex(caps, "twin_socket", &tw);
	if (!has) {
		ret = r->nr_fds ? -EPROTO : 0;
		goto out;
	}
	if (r->nr_fds != 1 || !strstr((char *)r->payload + 4, TWIN_REPLY_CAP) ||
	    !json_object_object_get_ex(tw, "supported", &o) ||
	    !json_object_get_boolean(o) ||
	    !json_object_object_get_ex(tw, "fd_index", &o) ||
	    json_object_get_int64(o) != 0 ||
	    unix_stream_connected(r->fds[0]))
		goto out;
	cl->twin = true;
	cl->twin_fd = r->fds[0];
	r->nr_fds = 0;		/* now the client's */
	ret = 1;
out:
	json_object_put(root);
	return ret;
}

/* VERSION with @json: 1 with a twin socket, 0 without, or -errno. */
static int negotiate_json(struct cl *cl, const char *json)
{
	struct cl_msg r;
	int ret = cl_version(cl, 0, 2, json, &r);

	if (ret)
		return ret;
	ret = take_twin(cl, &r);
	cl_msg_free(&r);
	return ret;
}

/*
 * A new client through the listening path, negotiating with @json. The
 * old twin socket, if any, is left to the caller in *@old_twin (else -1).
 */
static int reconnect_json(struct cl *cl, const char *path, const char *json,
			  int *old_twin)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	*old_twin = cl->twin ? cl->twin_fd : -1;
	cl->twin = false;
	if (cl->fd >= 0)
		close(cl->fd);
	cl->fd = -1;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(fd);
		return -errno;
	}
	cl->fd = fd;
	cl->next_id = 0;
	return negotiate_json(cl, json);
}

/*
 * The server closed its end of @fd within a second: 0, else -errno. What
 * it sent before (DMA commands of its window) is read and dropped; a peer
 * that closes with our bytes unread makes recv() fail ECONNRESET.
 */
static int peer_closed(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	char buf[4096];
	ssize_t n;

	do {
		if (poll(&pfd, 1, 1000) != 1)
			return -ETIMEDOUT;
		n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	} while (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR)));
	return !n || errno == ECONNRESET ? 0 : -errno;
}

/* A dropped connection, as a client command's helper sees it. */
static bool conn_dropped(int err)
{
	return err == -ECONNRESET || err == -EPIPE;
}

/* Copy 10000 bytes with the doorbell; DMA counts by socket in @cl. */
static int twin_copy(struct cl *cl, int64_t *status)
{
	unsigned int i;

	for (i = 0; i < 10000; i++)
		cl->mem[i] = i * 11 + 5;
	memset(cl->mem + 0x20000, 0, 10000);
	return dma_copy(cl, T_MEM_IOVA, T_MEM_IOVA + 0x20000, 10000, status);
}

TEST_F(twin, version)
{
	struct cl *cl = &self->cl;
	struct cl_msg r;
	uint64_t v;

	ASSERT_EQ(0, cl_version(cl, 0, 2, TWIN_JSON, &r));
	TH_LOG("reply %s, %u fd(s)", (char *)r.payload + 4, r.nr_fds);
	if (variant->offer) {
		EXPECT_EQ(0, strcmp((char *)r.payload + 4,
				    "{\"capabilities\":{\"max_msg_fds\":8,"
				    "\"max_data_xfer_size\":65536,"
				    "\"max_dma_maps\":65535,\"pgsizes\":4096,"
				    TWIN_REPLY_CAP "}}"));
		ASSERT_EQ(1, r.nr_fds);
		EXPECT_EQ(0, unix_stream_connected(r.fds[0]));
		ASSERT_EQ(1, take_twin(cl, &r));
	} else {
		EXPECT_EQ(0, r.nr_fds);
		EXPECT_EQ(NULL, strstr((char *)r.payload + 4, "twin_socket"));
		ASSERT_EQ(0, take_twin(cl, &r));
	}
	cl_msg_free(&r);
	ASSERT_EQ(0, reg_read64(cl, R_TWIN, &v));
	EXPECT_EQ(variant->offer, v);
	EXPECT_EQ(variant->offer, vus_dev__twin_socket(self->s.dev));
}

/* No twin socket unless the client asks with "supported": true and fds. */
TEST_F(twin, client_not_asking)
{
	static const char *const json[] = {
		CAPS_JSON,
		"{\"capabilities\":{\"twin_socket\":{\"supported\":false}}}",
		"{\"capabilities\":{\"twin_socket\":{}}}",
		"{\"capabilities\":{\"max_msg_fds\":0,"
		"\"twin_socket\":{\"supported\":true}}}",
		NULL,
	};
	struct cl *cl = &self->cl;
	int64_t status;
	unsigned int i;
	uint64_t v;
	int old;

	for (i = 0; i < ARRAY_SIZE(json); i++) {
		TH_LOG("client json %s", json[i] ?: "(none)");
		if (i) {
			ASSERT_EQ(0, reconnect_json(cl, self->path, json[i],
						    &old));
		} else {
			ASSERT_EQ(0, negotiate_json(cl, json[i]));
		}
		ASSERT_EQ(0, reg_read64(cl, R_TWIN, &v));
		EXPECT_EQ(0, v);
		ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, 3, -1, 0));
		cl->dma_on_main = cl->dma_on_twin = 0;
		ASSERT_EQ(0, twin_copy(cl, &status));
		EXPECT_EQ(0, status);
		EXPECT_EQ(0, memcmp(cl->mem, cl->mem + 0x20000, 10000));
		EXPECT_LT(0, cl->dma_on_main);
		EXPECT_EQ(0, cl->dma_on_twin);
	}
}

/* Server DMA goes on the twin socket and its replies come from there. */
TEST_F(twin, dma)
{
	struct cl *cl = &self->cl;
	int64_t status;
	uint64_t v;

	ASSERT_EQ(variant->offer, negotiate_json(cl, TWIN_JSON));
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, 3, -1, 0));
	ASSERT_EQ(0, twin_copy(cl, &status));
	EXPECT_EQ(0, status);
	EXPECT_EQ(0, memcmp(cl->mem, cl->mem + 0x20000, 10000));
	/* client max_data_xfer_size 4096: 3 reads, 3 writes */
	EXPECT_EQ(3, cl->dma_reads);
	EXPECT_EQ(3, cl->dma_writes);
	EXPECT_EQ(variant->offer ? 6 : 0, cl->dma_on_twin);
	EXPECT_EQ(variant->offer ? 0 : 6, cl->dma_on_main);
	/* an error reply on the twin socket is just an error */
	cl->dma_reply_error = EFAULT;
	ASSERT_EQ(0, twin_copy(cl, &status));
	EXPECT_EQ(-EIO, status);
	cl->dma_reply_error = 0;
	ASSERT_EQ(0, twin_copy(cl, &status));
	EXPECT_EQ(0, status);
	ASSERT_EQ(0, reg_read64(cl, R_TWIN, &v));
	EXPECT_EQ(variant->offer, v);
}

/* While the server waits for its DMA_READ reply: a command (main socket). */
static int during_dma_id = -1;

static void cmd_during_dma(struct cl *cl, const struct cl_msg *m)
{
	struct vfio_user_region_access a = {
		.offset = htole64(R_SCRATCH), .count = htole32(8),
	};

	if (m->command != VFIO_USER_DMA_READ || during_dma_id >= 0)
		return;
	during_dma_id = cl_send(cl, VFIO_USER_REGION_READ, 0, &a, sizeof(a),
				NULL, 0);
}

/*
 * The command is served after the doorbell: with a twin socket (the server
 * never reads it in place of a DMA reply, strict or not) and by default
 * (queued); with strict_dma_reply and no twin socket it drops the client.
 * Runs once with a client that asks for the twin socket, once without.
 */
static void twin_cmd_during_dma(struct __test_metadata *_metadata,
				FIXTURE_DATA(twin) *self, bool offer,
				bool strict, bool ask)
{
	struct vfio_user_region_access a = {
		.offset = htole64(R_DOORBELL), .count = htole32(8),
	};
	struct cl *cl = &self->cl;
	bool twin = offer && ask;
	uint8_t p[24];
	struct cl_msg r;
	uint64_t v;
	int id, err, old;

	if (ask) {
		ASSERT_EQ(twin, negotiate_json(cl, TWIN_JSON));
	} else {
		ASSERT_EQ(0, reconnect_json(cl, self->path, CAPS_JSON, &old));
	}
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, 3, -1, 0));
	ASSERT_EQ(0, reg_write64(cl, R_SCRATCH, 42));
	ASSERT_EQ(0, reg_write64(cl, R_SRC, T_MEM_IOVA));
	ASSERT_EQ(0, reg_write64(cl, R_DST, T_MEM_IOVA + 8192));
	ASSERT_EQ(0, reg_write64(cl, R_LEN, 5000));
	memset(cl->mem, 0x5a, 5000);
	memset(cl->mem + 8192, 0, 5000);
	during_dma_id = -1;
	cl->on_dma = cmd_during_dma;
	v = htole64(1);
	memcpy(p, &a, 16);
	memcpy(p + 16, &v, 8);
	id = cl_send(cl, VFIO_USER_REGION_WRITE, 0, p, 24, NULL, 0);
	ASSERT_LE(0, id);
	err = cl_wait(cl, id, &r);
	cl->on_dma = NULL;
	ASSERT_LE(0, during_dma_id);
	if (strict && !twin) {
		TH_LOG("doorbell: %d", err);
		ASSERT_TRUE(conn_dropped(err));
		ASSERT_EQ(0, reconnect_json(cl, self->path, CAPS_JSON, &old));
		ASSERT_EQ(0, reg_read64(cl, R_STATUS, &v));
		EXPECT_EQ(-EPROTO, (int64_t)v);
		return;
	}
	ASSERT_EQ(0, err);
	EXPECT_FALSE(r.flags & VFIO_USER_F_ERROR);
	cl_msg_free(&r);
	/* the command's reply after the doorbell's */
	ASSERT_EQ(0, cl_wait(cl, during_dma_id, &r));
	ASSERT_EQ(24, r.len);
	memcpy(&v, r.payload + 16, 8);
	EXPECT_EQ(42, le64toh(v));
	cl_msg_free(&r);
	ASSERT_EQ(0, reg_read64(cl, R_STATUS, &v));
	EXPECT_EQ(0, v);
	EXPECT_EQ(0, memcmp(cl->mem, cl->mem + 8192, 5000));
	/* client max_data_xfer_size 4096: 2 reads, 2 writes */
	EXPECT_EQ(twin ? 0 : 4, cl->dma_on_main);
	EXPECT_EQ(twin ? 4 : 0, cl->dma_on_twin);
	cl->dma_on_main = cl->dma_on_twin = 0;
}

TEST_F(twin, command_during_dma)
{
	twin_cmd_during_dma(_metadata, self, variant->offer, variant->strict,
			    true);
}

TEST_F(twin, command_during_dma_client_not_asking)
{
	twin_cmd_during_dma(_metadata, self, variant->offer, variant->strict,
			    false);
}

/* Misbehaviour on the twin socket, in a DMA wait or outside one. */
enum {
	BOGUS_COMMAND = 1,	/* a client command in place of the reply */
	BOGUS_UNKNOWN_ID,	/* a reply to no DMA command */
	BOGUS_REPLY_FD,		/* the reply, with an fd */
	BOGUS_REPLY_CMD,	/* the reply, naming another command */
	BOGUS_IDLE_DATA,	/* bytes while no DMA is in flight */
	BOGUS_IDLE_CLOSE,	/* the twin socket closed */
	BOGUS_EXTRA_REPLY,	/* the reply twice */
};

static int bogus_mode;

static void bogus_on_twin(struct cl *cl, const struct cl_msg *m)
{
	uint8_t h[VFIO_USER_HDR_SIZE];
	int efd;

	switch (bogus_mode) {
	case BOGUS_COMMAND:
		cl_hdr(h, 77, VFIO_USER_DEVICE_RESET, sizeof(h), 0, 0);
		cl_send_raw(m->sock, h, sizeof(h), NULL, 0);
		break;
	case BOGUS_UNKNOWN_ID:
		cl_hdr(h, m->msg_id + 1000, m->command, sizeof(h),
		       VFIO_USER_F_TYPE_REPLY | VFIO_USER_F_ERROR, EIO);
		cl_send_raw(m->sock, h, sizeof(h), NULL, 0);
		break;
	case BOGUS_REPLY_FD:
		efd = new_efd();
		cl_hdr(h, m->msg_id, m->command, sizeof(h),
		       VFIO_USER_F_TYPE_REPLY | VFIO_USER_F_ERROR, EIO);
		cl_send_raw(m->sock, h, sizeof(h), &efd, 1);
		close(efd);
		break;
	case BOGUS_REPLY_CMD:
		cl_hdr(h, m->msg_id, VFIO_USER_REGION_READ, sizeof(h),
		       VFIO_USER_F_TYPE_REPLY | VFIO_USER_F_ERROR, EIO);
		cl_send_raw(m->sock, h, sizeof(h), NULL, 0);
		break;
	}
}

/* The reply twice: the second matches nothing. */
static void bogus_after_reply(struct cl *cl, const struct cl_msg *m)
{
	uint8_t h[VFIO_USER_HDR_SIZE];

	if (m->command != VFIO_USER_DMA_WRITE)
		return;
	cl_hdr(h, m->msg_id, m->command, sizeof(h),
	       VFIO_USER_F_TYPE_REPLY | VFIO_USER_F_ERROR, EIO);
	cl_send_raw(m->sock, h, sizeof(h), NULL, 0);
}

TEST_F(twin, bogus_message_breaks_connection)
{
	struct cl *cl = &self->cl;
	int64_t status;
	unsigned int mode;
	struct cl_msg r;
	uint64_t v;
	int err, old;

	if (!variant->offer)
		SKIP(return, "no twin socket offered");
	ASSERT_EQ(1, negotiate_json(cl, TWIN_JSON));
	for (mode = BOGUS_COMMAND; mode <= BOGUS_EXTRA_REPLY; mode++) {
		TH_LOG("mode %u", mode);
		ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, 3, -1, 0));
		bogus_mode = mode;
		if (mode == BOGUS_IDLE_DATA) {
			uint8_t h[VFIO_USER_HDR_SIZE];

			cl_hdr(h, 5, VFIO_USER_DMA_READ, sizeof(h),
			       VFIO_USER_F_TYPE_REPLY, 0);
			ASSERT_EQ(0, cl_send_raw(cl->twin_fd, h, sizeof(h),
						 NULL, 0));
			err = cl_recv(cl, &r);
			cl_msg_free(&r);
		} else if (mode == BOGUS_IDLE_CLOSE) {
			close(cl->twin_fd);
			cl->twin = false;
			err = cl_recv(cl, &r);
			cl_msg_free(&r);
		} else {
			cl->on_dma = mode == BOGUS_EXTRA_REPLY ?
				     bogus_after_reply : bogus_on_twin;
			err = twin_copy(cl, &status);
			cl->on_dma = NULL;
		}
		TH_LOG("client sees %d", err);
		EXPECT_TRUE(conn_dropped(err));
		/* the server closed both sockets */
		if (cl->twin) {
			EXPECT_EQ(0, peer_closed(cl->twin_fd));
		}
		ASSERT_EQ(1, reconnect_json(cl, self->path, TWIN_JSON, &old));
		if (old >= 0)
			close(old);
		if (mode <= BOGUS_REPLY_CMD) {
			ASSERT_EQ(0, reg_read64(cl, R_STATUS, &v));
			EXPECT_EQ(-EPROTO, (int64_t)v);
		}
	}
	/* and the last client is served on its twin socket */
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, 3, -1, 0));
	cl->dma_on_main = cl->dma_on_twin = 0;
	ASSERT_EQ(0, twin_copy(cl, &status));
	EXPECT_EQ(0, status);
	EXPECT_EQ(6, cl->dma_on_twin);
	EXPECT_EQ(0, cl->dma_on_main);
}

/*
 * The client hangs up its main socket while the server waits on the twin
 * socket for a DMA reply: the server drops it at once (well within its
 * 2 s timeout_ms), closing the twin socket too.
 */
static int hangup_result = 1;

static void hangup_main(struct cl *cl, const struct cl_msg *m)
{
	if (hangup_result != 1)
		return;
	shutdown(cl->fd, SHUT_RDWR);
	hangup_result = peer_closed(cl->twin_fd);
}

TEST_F(twin, main_hangup_during_dma)
{
	struct cl *cl = &self->cl;
	int64_t status;
	uint64_t v;
	int old;

	if (!variant->offer)
		SKIP(return, "no twin socket offered");
	ASSERT_EQ(1, negotiate_json(cl, TWIN_JSON));
	ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, 3, -1, 0));
	cl->on_dma = hangup_main;
	EXPECT_TRUE(conn_dropped(twin_copy(cl, &status)));
	cl->on_dma = NULL;
	EXPECT_EQ(0, hangup_result);
	ASSERT_EQ(1, reconnect_json(cl, self->path, TWIN_JSON, &old));
	close(old);
	ASSERT_EQ(0, reg_read64(cl, R_STATUS, &v));
	EXPECT_EQ(-ENOTCONN, (int64_t)v);
}

/* Each client negotiates afresh; a disconnect closes the twin socket. */
TEST_F(twin, reconnect_negotiates_afresh)
{
	static const char *const json[] = { TWIN_JSON, CAPS_JSON, TWIN_JSON };
	struct cl *cl = &self->cl;
	unsigned int i;
	int64_t status;
	uint64_t v;
	int old;

	ASSERT_EQ(variant->offer, negotiate_json(cl, json[0]));
	for (i = 0; i < ARRAY_SIZE(json); i++) {
		/* json[1] does not ask */
		bool twin = variant->offer && i != 1;

		if (i) {
			ASSERT_EQ(twin, reconnect_json(cl, self->path, json[i],
						       &old));
			if (old >= 0) {
				EXPECT_EQ(0, peer_closed(old));
				close(old);
			}
		}
		ASSERT_EQ(0, reg_read64(cl, R_TWIN, &v));
		EXPECT_EQ(twin, v);
		ASSERT_EQ(0, cl_dma_map(cl, T_MEM_IOVA, T_MEM_SIZE, 3, -1, 0));
		cl->dma_on_main = cl->dma_on_twin = 0;
		ASSERT_EQ(0, twin_copy(cl, &status));
		EXPECT_EQ(0, status);
		EXPECT_EQ(twin ? 6 : 0, cl->dma_on_twin);
		EXPECT_EQ(twin ? 0 : 6, cl->dma_on_main);
	}
	ASSERT_EQ(0, reg_read64(cl, R_CONNECTS, &v));
	EXPECT_EQ(3, v);
	ASSERT_EQ(0, reg_read64(cl, R_DISCONNECTS, &v));
	EXPECT_EQ(2, v);
}

/*
 * The application's own DMA outside any handler, on the twin socket, while
 * the client's commands wait in the main socket: they are served after.
 */
TEST(twin_dma_outside_handler)
{
	struct tdev t = { 0 };
	struct vus_dev *dev = t_dev_new_ex(&t, true, true);
	struct vfio_user_version ver = { .minor = htole16(2) };
	struct vfio_user_dma_map dm = {
		.argsz = htole32(sizeof(dm)), .flags = htole32(3),
		.addr = htole64(T_MEM_IOVA), .size = htole64(T_MEM_SIZE),
	};
	struct vfio_user_region_access ra = {
		.offset = htole64(R_SCRATCH), .count = htole32(8),
	};
	struct vfio_user_dma_access da = {
		.addr = htole64(T_MEM_IOVA), .count = htole64(8),
	};
	uint8_t vb[4 + sizeof(TWIN_JSON)];
	uint8_t h[VFIO_USER_HDR_SIZE + sizeof(da)];
	uint64_t v = 0x1122334455667788ULL;
	struct cl cl = { .fd = -1 };
	struct pollfd pfd;
	struct cl_msg m;
	int sv[2], id;

	ASSERT_NE(NULL, dev);
	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
	ASSERT_EQ(0, vus_dev__attach_fd(dev, sv[1]));
	cl.fd = sv[0];
	pfd.fd = vus_dev__fd(dev);
	pfd.events = POLLIN;
	/* VERSION and DMA_MAP, served by hand */
	memcpy(vb, &ver, 4);
	memcpy(vb + 4, TWIN_JSON, sizeof(TWIN_JSON));
	ASSERT_LE(0, cl_send(&cl, VFIO_USER_VERSION, 0, vb, sizeof(vb), NULL,
			     0));
	ASSERT_LT(0, poll(&pfd, 1, 1000));
	vus_dev__process(dev);
	ASSERT_EQ(0, cl_recv(&cl, &m));
	ASSERT_EQ(1, take_twin(&cl, &m));
	cl_msg_free(&m);
	ASSERT_LE(0, cl_send(&cl, VFIO_USER_DMA_MAP, 0, &dm, sizeof(dm), NULL,
			     0));
	ASSERT_LT(0, poll(&pfd, 1, 1000));
	vus_dev__process(dev);
	ASSERT_EQ(0, cl_recv(&cl, &m));
	EXPECT_FALSE(m.flags & VFIO_USER_F_ERROR);
	cl_msg_free(&m);
	ASSERT_TRUE(vus_dev__twin_socket(dev));
	/* a command waits in the main socket, the DMA reply on the twin */
	id = cl_send(&cl, VFIO_USER_REGION_READ, 0, &ra, sizeof(ra), NULL, 0);
	ASSERT_LE(0, id);
	cl_hdr(h, 0, VFIO_USER_DMA_WRITE, sizeof(h), VFIO_USER_F_TYPE_REPLY, 0);
	memcpy(h + VFIO_USER_HDR_SIZE, &da, sizeof(da));
	ASSERT_EQ(0, cl_send_raw(cl.twin_fd, h, sizeof(h), NULL, 0));
	/* strict_dma_reply is on: without the twin this would drop us */
	EXPECT_EQ(0, vus_dev__dma_write(dev, T_MEM_IOVA, &v, 8));
	ASSERT_EQ(0, cl_recv_on(cl.twin_fd, &m));
	EXPECT_EQ(VFIO_USER_DMA_WRITE, m.command);
	EXPECT_EQ(0, m.msg_id);
	EXPECT_EQ(sizeof(h) + 8, m.size);
	cl_msg_free(&m);
	ASSERT_TRUE(vus_dev__connected(dev));
	/* the command is served by the loop */
	ASSERT_LT(0, poll(&pfd, 1, 1000));
	vus_dev__process(dev);
	ASSERT_EQ(0, cl_recv(&cl, &m));
	EXPECT_EQ(id, m.msg_id);
	EXPECT_FALSE(m.flags & VFIO_USER_F_ERROR);
	cl_msg_free(&m);
	vus_dev__delete(dev);
	EXPECT_EQ(0, peer_closed(cl.twin_fd));
	EXPECT_EQ(0, peer_closed(cl.fd));
	close(cl.twin_fd);
	close(cl.fd);
}

TEST_HARNESS_MAIN
