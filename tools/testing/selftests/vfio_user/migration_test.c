// SPDX-License-Identifier: GPL-2.0-only
/*
 * VFIO migration v2 of vfio_user mdevs, through the standard uAPI
 * (VFIO_DEVICE_FEATURE MIGRATION, MIG_DEVICE_STATE, MIG_DATA_SIZE and the
 * data fd), against the sample servers: what is offered, every arc of the
 * FSM the offered states allow, state carried from one mdev and server to
 * another (the DMA engine's registers and its paused copy, the null
 * device's BAR memory), corrupt streams, servers killed mid-session, a
 * stream that never ends (fault_server --mig-endless) and type1's dirty
 * log of server DMA. With the samples' --pre-copy (6.2 on): PRE_COPY
 * offered exactly then, every arc with PRE_COPY*, GET_PRECOPY_INFO, a
 * pre-copy round trip and a server killed in PRE_COPY.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/vfio.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/utsname.h>

#include "kselftest_harness.h"
#include "vfio_user_util.h"

/* PRE_COPY's uAPI (6.2), for older installed headers */
#ifndef VFIO_MIGRATION_PRE_COPY
#define VFIO_MIGRATION_PRE_COPY		(1 << 2)
#endif
struct precopy_info {
	uint32_t argsz;
	uint32_t flags;
	uint64_t initial_bytes;
	uint64_t dirty_bytes;
};
#define MIG_GET_PRECOPY_INFO		_IO(VFIO_TYPE, VFIO_BASE + 21)

/* The DMA sample's BAR0 (tools/vfio-user/sample.h). */
#define REG_MAGIC		0x00
#define REG_SRC			0x08
#define REG_DST			0x10
#define REG_LEN			0x18
#define REG_DOORBELL		0x20
#define REG_STATUS		0x24
#define REG_IRQ_CTRL		0x2c
#define REG_COUNT		0x30
#define REG_SCRATCH		0x40
#define REG_PROGRESS		0x68
#define REG_STEP		0x70
#define REG_STEPS		0x74
#define REG_END			0x78
#define DOORBELL_COPY		1
#define DOORBELL_ASYNC		4
#define DMA_MAGIC		0x31414d44
#define STATUS_BUSY		1
#define STATUS_DONE		2

/* The null sample's BAR0. */
#define NULL_REG_MAGIC		0x00
#define NULL_REG_SCRATCH	0x08
#define NULL_REG_PING		0x10
#define NULL_REG_LATENCY_US	0x14
#define NULL_REG_SLOW		0x18
#define NULL_REG_BAR4_OFFSET	0x28
#define NULL_REG_BAR4_DATA	0x30
#define NULL_MAGIC		0x314c554e
#define NULL_BAR2_SIZE		(4 << 20)
#define NULL_BAR4_SIZE		(64 << 10)

/* fault_server's BAR0 magic */
#define FP_MAGIC		0x544c5546

#define SAMPLE			"vfio-user-sample"
#define MAX_BYTES_PARAM	"/sys/module/vfio_user_mdev/parameters/mig_max_bytes"
#define PRE_COPY_PARAM	"/sys/module/vfio_user_mdev/parameters/mig_pre_copy"

/*
 * States by number: 6.1's uapi has no PRE_COPY states, and the FSM test
 * also asks for a number past the last one.
 */
#define ST_ERROR		0
#define ST_STOP			1
#define ST_RUNNING		2
#define ST_STOP_COPY		3
#define ST_RESUMING		4
#define ST_RUNNING_P2P		5
#define ST_PRE_COPY		6
#define ST_PRE_COPY_P2P		7
#define ST_NR			8

/* What the module offers for a migrating server: no PRE_COPY (yet). */
#define OFFERED_FLAGS	(VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P)
#define OFFERED_STATES	(1U << ST_STOP | 1U << ST_RUNNING | 1U << ST_STOP_COPY | \
			 1U << ST_RESUMING | 1U << ST_RUNNING_P2P)
/* with a server started with --pre-copy (kernels with PRE_COPY, 6.2 on) */
#define PRE_COPY_FLAGS	(OFFERED_FLAGS | VFIO_MIGRATION_PRE_COPY)
#define PRE_COPY_STATES	(OFFERED_STATES | 1U << ST_PRE_COPY | \
			 1U << ST_PRE_COPY_P2P)

/* Bound of a stream read or written here: far more than the samples save. */
#define STREAM_MAX		(64 << 20)
#define CHUNK			(64 << 10)

static const char *const dma_args[] = { "--device", "dma", NULL };
static const char *const null_args[] = {
	"--device", "null", "--bar-size", "4M", NULL,
};
static const char *const nomig_args[] = {
	"--device", "dma", "--no-migration", NULL,
};
static const char *const endless_args[] = { "--mig-endless", NULL };
static const char *const dma_pre_args[] = {
	"--device", "dma", "--pre-copy", NULL,
};
static const char *const null_pre_args[] = {
	"--device", "null", "--bar-size", "4M", "--pre-copy", NULL,
};

static const char *const state_names[] = {
	"ERROR", "STOP", "RUNNING", "STOP_COPY", "RESUMING", "RUNNING_P2P",
	"PRE_COPY", "PRE_COPY_P2P",
};

static const char *state_name(uint32_t s)
{
	return s < ST_NR ? state_names[s] : "?";
}

/* GET MIGRATION: the VFIO_MIGRATION_* flags in *@flags. */
static int mig_flags(int fd, uint64_t *flags)
{
	struct vfio_device_feature_migration m = { 0 };
	int ret;

	ret = vu_device_feature(fd, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION,
		      &m, sizeof(m));
	*flags = m.flags;
	return ret;
}

/* GET MIG_DEVICE_STATE. */
static int mig_get(int fd, uint32_t *state)
{
	struct vfio_device_feature_mig_state m = { 0 };
	int ret;

	ret = vu_device_feature(fd, VFIO_DEVICE_FEATURE_GET |
		      VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, &m, sizeof(m));
	*state = m.device_state;
	return ret;
}

/* The current state, or 0xffffffff when GET fails. */
static uint32_t mig_state(int fd)
{
	uint32_t s;

	return mig_get(fd, &s) ? 0xffffffff : s;
}

/*
 * SET MIG_DEVICE_STATE to @state; *@data_fd gets the new session's fd
 * (-1 when the SET opens none). Returns 0 or -errno.
 */
static int mig_set(int fd, uint32_t state, int *data_fd)
{
	struct vfio_device_feature_mig_state m = {
		.device_state = state, .data_fd = -1,
	};
	int ret;

	ret = vu_device_feature(fd, VFIO_DEVICE_FEATURE_SET |
		      VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, &m, sizeof(m));
	if (data_fd)
		*data_fd = ret ? -1 : m.data_fd;
	else if (!ret && m.data_fd >= 0)
		close(m.data_fd);
	return ret;
}

/*
 * A saving session's stream, read until read() returns 0, in CHUNK reads:
 * the bytes in *@buf (malloc'd), their number returned, or -errno of the
 * read that failed (-EFBIG past STREAM_MAX).
 */
static ssize_t read_stream(int data_fd, uint8_t **buf)
{
	size_t len = 0, cap = 0;
	uint8_t *p = NULL, *n;
	ssize_t r;

	for (;;) {
		if (len + CHUNK > cap) {
			cap = cap ? 2 * cap : 4 * CHUNK;
			n = realloc(p, cap);
			if (!n) {
				free(p);
				return -ENOMEM;
			}
			p = n;
		}
		r = read(data_fd, p + len, CHUNK);
		if (r < 0) {
			r = -errno;
			free(p);
			return r;
		}
		if (!r)
			break;
		len += r;
		if (len > STREAM_MAX) {
			free(p);
			return -EFBIG;
		}
	}
	*buf = p;
	return len;
}

/* Reads a saving session to its end: the bytes read, or -errno. */
static ssize_t drain(int data_fd)
{
	uint8_t *stream = NULL;
	ssize_t len = read_stream(data_fd, &stream);

	free(stream);
	return len;
}

/* Writes all of @len bytes into a resuming session; 0 or -errno. */
static int write_stream(int data_fd, const uint8_t *buf, size_t len)
{
	size_t pos = 0;
	ssize_t w;

	while (pos < len) {
		w = write(data_fd, buf + pos,
			  len - pos < CHUNK ? len - pos : CHUNK);
		if (w < 0)
			return -errno;
		if (!w)
			return -EIO;
		pos += w;
	}
	return 0;
}

/* Exactly @len bytes at @off of BAR @bar; 0 or -errno. */
static int bar_rd(int fd, unsigned int bar, uint64_t off, void *buf, size_t len)
{
	return vu_region_read(fd, VFIO_PCI_BAR0_REGION_INDEX + bar, off, buf,
			      len);
}

static int bar_wr(int fd, unsigned int bar, uint64_t off, const void *buf,
		  size_t len)
{
	return vu_region_write(fd, VFIO_PCI_BAR0_REGION_INDEX + bar, off, buf,
			       len);
}

static int rd32(int fd, uint64_t reg, uint32_t *v)
{
	return bar_rd(fd, 0, reg, v, 4);
}

static int rd64(int fd, uint64_t reg, uint64_t *v)
{
	return bar_rd(fd, 0, reg, v, 8);
}

static int wr32(int fd, uint64_t reg, uint32_t v)
{
	return bar_wr(fd, 0, reg, &v, 4);
}

static int wr64(int fd, uint64_t reg, uint64_t v)
{
	return bar_wr(fd, 0, reg, &v, 8);
}

static int set_eventfd(int fd, unsigned int index, int efd)
{
	char buf[sizeof(struct vfio_irq_set) + sizeof(int)];
	struct vfio_irq_set *set = (void *)buf;

	set->argsz = sizeof(buf);
	set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
	set->index = index;
	set->start = 0;
	set->count = 1;
	memcpy(set->data, &efd, sizeof(efd));
	return ioctl(fd, VFIO_DEVICE_SET_IRQS, set) ? -errno : 0;
}

/* Sets the MSI-X enable bit in config space, as a guest driver does. */
static int msix_enable(int fd)
{
	unsigned int idx = VFIO_PCI_CONFIG_REGION_INDEX;
	uint8_t cap = 0, id;
	uint16_t ctrl;
	int ret, hops = 0;

	ret = vu_region_read(fd, idx, 0x34, &cap, 1);
	while (!ret && cap && hops++ < 48) {
		ret = vu_region_read(fd, idx, cap, &id, 1);
		if (ret)
			break;
		if (id == 0x11) {
			ret = vu_region_read(fd, idx, cap + 2, &ctrl, 2);
			if (ret)
				return ret;
			ctrl |= 0x8000;
			return vu_region_write(fd, idx, cap + 2, &ctrl, 2);
		}
		ret = vu_region_read(fd, idx, cap + 1, &cap, 1);
	}
	return ret ? ret : -ENOENT;
}

static int wait_eventfd(int efd, int timeout_ms)
{
	struct pollfd p = { .fd = efd, .events = POLLIN };
	uint64_t v;

	if (poll(&p, 1, timeout_ms) != 1)
		return -ETIMEDOUT;
	return read(efd, &v, sizeof(v)) == sizeof(v) ? 0 : -EIO;
}

/*
 * Polls a BAR0 register of @width bytes (4 or 8; every 10 ms, at most @ms)
 * until it is @want.
 */
static int wait_reg(int fd, uint64_t reg, size_t width, uint64_t want, int ms)
{
	uint64_t v;
	int i, ret;

	for (i = 0; i <= ms / 10; i++) {
		v = 0;
		ret = bar_rd(fd, 0, reg, &v, width);
		if (ret)
			return ret;
		if (v == want)
			return 0;
		usleep(10000);
	}
	return -ETIMEDOUT;
}

/* Kernel release older than @major.@minor? */
static bool kernel_before(int major, int minor)
{
	struct utsname u;
	int ma = 0, mi = 0;

	if (uname(&u) || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
		return false;
	return ma < major || (ma == major && mi < minor);
}

/*
 * struct mdev - one consumer's device: its own server, mdev, container
 * (or iommufd) and device fd. Started by dev_start(), undone by
 * dev_stop() (any part may be missing).
 */
struct mdev {
	struct vu_server srv;
	char uuid[VU_UUID_LEN + 1];
	int container, group, fd;
	bool created;
};

FIXTURE(mig) {
	struct mdev a, b;
	char max_bytes[32];
	char pre_copy[8];
};

static void dev_init(struct mdev *d)
{
	memset(d, 0, sizeof(*d));
	d->container = d->group = d->fd = -1;
}

static void dev_stop(struct mdev *d)
{
	if (d->created)
		vu_consumer_teardown(d->uuid, &d->fd, &d->group, &d->container);
	d->created = false;
	vu_server_stop(&d->srv);
}

/* Path of fault_server, a helper built beside this test. */
static const char *helper_path(const char *name, char *buf, size_t len)
{
	char self[200];
	ssize_t n;

	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0)
		return NULL;
	self[n] = '\0';
	*strrchr(self, '/') = '\0';
	snprintf(buf, len, "%s/%s", self, name);
	return buf;
}

/*
 * Starts @name (the sample server, found by vu_tool_path(), or with
 * @helper a program beside the test) with @args, creates an mdev, sets
 * @timeout_ms (0: the default) and @dma_window (NULL: the default),
 * attaches and opens it.
 */
static void __dev_start(struct __test_metadata *_metadata, struct mdev *d,
			const char *name, bool helper, const char *const *args,
			unsigned int timeout_ms, const char *dma_window)
{
	char prog[256], buf[16];
	int ret;

	if (helper ? !helper_path(name, prog, sizeof(prog)) :
		     !vu_tool_path(name, prog, sizeof(prog)))
		SKIP(return, "no path for %s", name);
	ret = vu_server_start_prog(&d->srv, prog, args);
	if (ret == -ENOENT)
		SKIP(return, "%s not built", name);
	ASSERT_EQ(0, ret);
	vu_uuid_gen(d->uuid);
	ASSERT_EQ(0, vu_mdev_create(d->uuid));
	d->created = true;
	if (timeout_ms) {
		snprintf(buf, sizeof(buf), "%u", timeout_ms);
		ASSERT_EQ(0, vu_mdev_attr_write(d->uuid, "timeout_ms", buf));
	}
	if (dma_window)
		ASSERT_EQ(0, vu_mdev_attr_write(d->uuid, "dma_window", dma_window));
	ASSERT_EQ(0, vu_mdev_attach(d->uuid, &d->srv));
	d->fd = vu_vfio_open(d->uuid, &d->container, &d->group);
	ASSERT_LE(0, d->fd) TH_LOG("open: %s", strerror(-d->fd));
}

static void dev_start(struct __test_metadata *_metadata, struct mdev *d,
		      const char *const *args)
{
	__dev_start(_metadata, d, SAMPLE, false, args, 0, NULL);
}

FIXTURE_SETUP(mig)
{
	dev_init(&self->a);
	dev_init(&self->b);
	self->max_bytes[0] = '\0';
	self->pre_copy[0] = '\0';
	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	vu_sysfs_read(MAX_BYTES_PARAM, self->max_bytes, sizeof(self->max_bytes));
	vu_sysfs_read(PRE_COPY_PARAM, self->pre_copy, sizeof(self->pre_copy));
}

FIXTURE_TEARDOWN(mig)
{
	dev_stop(&self->b);
	dev_stop(&self->a);
	/* (endless_stream_efbig lowers it) */
	if (self->max_bytes[0])
		vu_sysfs_write(MAX_BYTES_PARAM, self->max_bytes);
	/* (pre_copy_param_off clears it) */
	if (self->pre_copy[0])
		vu_sysfs_write(PRE_COPY_PARAM, self->pre_copy);
}

/*
 * The whole stream of @fd's device: RUNNING -> STOP_COPY, read to the
 * end, -> STOP. The device is left in STOP.
 */
static void save(struct __test_metadata *_metadata, int fd, uint8_t **buf,
		 ssize_t *len)
{
	int data_fd = -1;

	ASSERT_EQ(0, mig_set(fd, ST_STOP_COPY, &data_fd));
	ASSERT_LE(0, data_fd);
	EXPECT_EQ(ST_STOP_COPY, mig_state(fd));
	*len = read_stream(data_fd, buf);
	ASSERT_LT(0, *len) TH_LOG("stream: %s", strerror(-*len));
	/* the end stays the end */
	EXPECT_EQ(0, read(data_fd, *buf, 1));
	ASSERT_EQ(0, mig_set(fd, ST_STOP, NULL));
	EXPECT_EQ(ST_STOP, mig_state(fd));
	close(data_fd);
}

/* @len bytes of stream into @fd's device: -> RESUMING, write, -> STOP. */
static void load(struct __test_metadata *_metadata, int fd, const uint8_t *buf,
		 size_t len)
{
	int data_fd = -1, ret;

	ASSERT_EQ(0, mig_set(fd, ST_RESUMING, &data_fd));
	ASSERT_LE(0, data_fd);
	EXPECT_EQ(ST_RESUMING, mig_state(fd));
	ASSERT_EQ(0, write_stream(data_fd, buf, len));
	ret = mig_set(fd, ST_STOP, NULL);
	ASSERT_EQ(0, ret) TH_LOG("RESUMING -> STOP: %s", strerror(-ret));
	EXPECT_EQ(ST_STOP, mig_state(fd));
	close(data_fd);
}

/* The module offers STOP_COPY | P2P for a migrating server, and RUNNING. */
TEST_F(mig, offered)
{
	uint64_t flags = 0;
	uint32_t s = 0;

	dev_start(_metadata, &self->a, dma_args);
	ASSERT_EQ(0, mig_flags(self->a.fd, &flags));
	EXPECT_EQ(OFFERED_FLAGS, flags);
	ASSERT_EQ(0, mig_get(self->a.fd, &s));
	EXPECT_EQ(ST_RUNNING, s);
	/* PROBE of the features the core handles */
	EXPECT_EQ(0, vu_device_feature(self->a.fd, VFIO_DEVICE_FEATURE_PROBE |
			     VFIO_DEVICE_FEATURE_SET |
			     VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, NULL, 0));

	/* the null sample migrates too */
	dev_start(_metadata, &self->b, null_args);
	ASSERT_EQ(0, mig_flags(self->b.fd, &flags));
	EXPECT_EQ(OFFERED_FLAGS, flags);
}

/*
 * A server without migration: flags 0, and MIG_DEVICE_STATE is not there
 * (ENOTTY) for GET and SET; the device works as before.
 */
TEST_F(mig, server_without_migration)
{
	uint64_t flags = ~0ULL;
	uint32_t s, v = 0;

	dev_start(_metadata, &self->a, nomig_args);
	ASSERT_EQ(0, mig_flags(self->a.fd, &flags));
	EXPECT_EQ(0, flags);
	EXPECT_EQ(-ENOTTY, mig_get(self->a.fd, &s));
	EXPECT_EQ(-ENOTTY, mig_set(self->a.fd, ST_STOP, NULL));
	EXPECT_EQ(-ENOTTY, mig_set(self->a.fd, ST_RUNNING, NULL));
	ASSERT_EQ(0, rd32(self->a.fd, REG_MAGIC, &v));
	EXPECT_EQ(DMA_MAGIC, v);
}

/*
 * Targets the FSM never allows (ERROR), states not offered (PRE_COPY*)
 * and numbers past the last state: EINVAL, from RUNNING and from STOP,
 * and the state stays.
 */
TEST_F(mig, illegal_targets)
{
	static const uint32_t bad[] = {
		ST_ERROR, ST_PRE_COPY, ST_PRE_COPY_P2P, ST_NR, 100, 0xffffffff,
	};
	static const uint32_t from[] = { ST_RUNNING, ST_STOP };
	unsigned int i, j;
	int data_fd;

	dev_start(_metadata, &self->a, dma_args);
	for (j = 0; j < 2; j++) {
		ASSERT_EQ(0, mig_set(self->a.fd, from[j], NULL));
		for (i = 0; i < ARRAY_SIZE(bad); i++) {
			data_fd = 0;
			EXPECT_EQ(-EINVAL, mig_set(self->a.fd, bad[i], &data_fd))
				TH_LOG("%s -> %u", state_name(from[j]), bad[i]);
			EXPECT_EQ(-1, data_fd);
			EXPECT_EQ(from[j], mig_state(self->a.fd));
		}
	}
	ASSERT_EQ(0, mig_set(self->a.fd, ST_RUNNING, NULL));
}

static bool saving_state(uint32_t s)
{
	return s == ST_STOP_COPY || s == ST_PRE_COPY || s == ST_PRE_COPY_P2P;
}

/*
 * Every (from, to) pair of states 0..8 with from in @offered: the SET
 * works exactly when @to is in @offered and the VFIO core's
 * vfio_mig_get_next_state() has a path (none to ERROR, to states not
 * offered, past the last, or from STOP_COPY back to PRE_COPY*), the
 * device then reports @to, and a SET that starts a session (and only such
 * a SET) returns a data fd: RESUMING, or a saving state (PRE_COPY*,
 * STOP_COPY) from outside them; PRE_COPY* -> STOP_COPY goes on with the
 * fd it has. A refused SET leaves @from. RESUMING is always fed a valid
 * stream, saved from the same device first, so that leaving it loads.
 */
static void all_arcs_of(struct __test_metadata *_metadata, int fd,
			uint32_t offered)
{
	uint8_t *stream = NULL;
	ssize_t len = 0;
	uint32_t from, to;
	int cur, dfd, ret, n = 0;

	save(_metadata, fd, &stream, &len);
	ASSERT_EQ(0, mig_set(fd, ST_RUNNING, NULL));

	for (from = 0; from < ST_NR; from++) {
		if (!(offered & (1U << from)))
			continue;
		for (to = 0; to <= ST_NR; to++) {
			bool ok = to < ST_NR && (offered & (1U << to)) &&
				  !(from == ST_STOP_COPY &&
				    (to == ST_PRE_COPY || to == ST_PRE_COPY_P2P));
			bool session = to != from &&
				       (to == ST_RESUMING ||
					(saving_state(to) && !saving_state(from)));

			cur = dfd = -1;
			ASSERT_EQ(0, mig_set(fd, from, &cur))
				TH_LOG("RUNNING -> %s", state_name(from));
			if (from == ST_RESUMING)
				ASSERT_EQ(0, write_stream(cur, stream, len));

			ret = mig_set(fd, to, &dfd);
			if (ok) {
				EXPECT_EQ(0, ret)
					TH_LOG("%s -> %s: %s", state_name(from),
					       state_name(to), strerror(-ret));
				EXPECT_EQ(to, mig_state(fd))
					TH_LOG("%s -> %s", state_name(from),
					       state_name(to));
				EXPECT_EQ(session, dfd >= 0)
					TH_LOG("%s -> %s: data fd %d",
					       state_name(from), state_name(to), dfd);
			} else {
				EXPECT_EQ(-EINVAL, ret)
					TH_LOG("%s -> %u", state_name(from), to);
				EXPECT_EQ(from, mig_state(fd))
					TH_LOG("%s -> %u", state_name(from), to);
			}
			/* a new resuming session: fed before it is left */
			if (dfd >= 0 && mig_state(fd) == ST_RESUMING)
				ASSERT_EQ(0, write_stream(dfd, stream, len));
			/* a saving session that went on: its fd still reads */
			if (ok && saving_state(from) && to == ST_STOP_COPY &&
			    from != to)
				EXPECT_LT(0, drain(cur))
					TH_LOG("%s -> %s: the fd", state_name(from),
					       state_name(to));
			ret = mig_set(fd, ST_RUNNING, NULL);
			ASSERT_EQ(0, ret) TH_LOG("(%s -> %u) -> RUNNING: %s",
						 state_name(from), to,
						 strerror(-ret));
			if (dfd >= 0)
				close(dfd);
			if (cur >= 0)
				close(cur);
			n++;
		}
	}
	ksft_print_msg("%d pairs\n", n);
	EXPECT_EQ(ST_RUNNING, mig_state(fd));
	free(stream);
}

TEST_F_TIMEOUT(mig, all_arcs, 300)
{
	dev_start(_metadata, &self->a, dma_args);
	all_arcs_of(_metadata, self->a.fd, OFFERED_STATES);
}

/*
 * The P2P arcs, RUNNING -> RUNNING_P2P -> STOP -> RUNNING_P2P -> RUNNING,
 * with the DMA sample's background copy: quiesced (RUNNING_P2P) or
 * stopped, the device initiates no DMA, so the copy makes no progress
 * even with steps allowed (written in RUNNING_P2P, where the device takes
 * register writes); back in RUNNING it completes.
 */
TEST_F_TIMEOUT(mig, p2p_arcs_pause_dma, 120)
{
	const size_t sz = 4 << 20, step = 1 << 20;
	const uint64_t iova = 1ULL << 32;
	uint64_t progress = 0;
	uint8_t *buf;
	int fd, ret;

	dev_start(_metadata, &self->a, dma_args);
	fd = self->a.fd;
	buf = mmap(NULL, 2 * sz, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	ASSERT_NE(MAP_FAILED, buf);
	memset(buf, 0x3c, sz);
	memset(buf + sz, 0, sz);
	ASSERT_EQ(0, vu_dma_map(self->a.container, buf, iova, 2 * sz,
				VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE));
	ASSERT_EQ(0, wr32(fd, REG_IRQ_CTRL, 0));
	ASSERT_EQ(0, wr64(fd, REG_SRC, iova));
	ASSERT_EQ(0, wr64(fd, REG_DST, iova + sz));
	ASSERT_EQ(0, wr64(fd, REG_LEN, sz));
	ASSERT_EQ(0, wr32(fd, REG_STEP, step));
	ASSERT_EQ(0, wr32(fd, REG_STEPS, 1));
	ASSERT_EQ(0, wr32(fd, REG_DOORBELL, DOORBELL_ASYNC));
	ASSERT_EQ(0, wait_reg(fd, REG_PROGRESS, 8, step, 10000));

	ASSERT_EQ(0, mig_set(fd, ST_RUNNING_P2P, NULL));
	EXPECT_EQ(ST_RUNNING_P2P, mig_state(fd));
	ret = wr32(fd, REG_STEPS, 0xffffffff);
	EXPECT_EQ(0, ret) TH_LOG("a register write in RUNNING_P2P: %s",
				 strerror(-ret));
	usleep(300000);
	ASSERT_EQ(0, rd64(fd, REG_PROGRESS, &progress));
	EXPECT_EQ(step, progress) TH_LOG("the copy went on in RUNNING_P2P");

	ASSERT_EQ(0, mig_set(fd, ST_STOP, NULL));
	EXPECT_EQ(ST_STOP, mig_state(fd));
	usleep(300000);
	ASSERT_EQ(0, rd64(fd, REG_PROGRESS, &progress));
	EXPECT_EQ(step, progress) TH_LOG("the copy went on in STOP");

	ASSERT_EQ(0, mig_set(fd, ST_RUNNING_P2P, NULL));
	EXPECT_EQ(ST_RUNNING_P2P, mig_state(fd));
	ASSERT_EQ(0, rd64(fd, REG_PROGRESS, &progress));
	EXPECT_EQ(step, progress);

	ASSERT_EQ(0, mig_set(fd, ST_RUNNING, NULL));
	EXPECT_EQ(ST_RUNNING, mig_state(fd));
	if (ret)	/* (then allowed only now) */
		ASSERT_EQ(0, wr32(fd, REG_STEPS, 0xffffffff));
	ASSERT_EQ(0, wait_reg(fd, REG_STATUS, 4, STATUS_DONE, 20000));
	EXPECT_EQ(0, memcmp(buf, buf + sz, sz));
	munmap(buf, 2 * sz);
}

/*
 * STOP_COPY's fd reads the stream to its end (0, and 0 again); leaving
 * STOP_COPY ends the session: its fd then fails with ENODEV, read or
 * write. RESUMING's fd takes the stream; after RESUMING -> STOP it fails
 * with ENODEV too. A data fd left open does not hold the device back.
 */
TEST_F(mig, session_ends_with_state)
{
	uint8_t *stream = NULL, b[64];
	ssize_t len = 0;
	int fd, dfd = -1;

	dev_start(_metadata, &self->a, dma_args);
	fd = self->a.fd;

	ASSERT_EQ(0, mig_set(fd, ST_STOP_COPY, &dfd));
	ASSERT_LE(0, dfd);
	/* a stream: no offsets; a saving fd takes no writes */
	EXPECT_EQ(-1, pread(dfd, b, 1, 0));
	EXPECT_EQ(ESPIPE, errno);
	EXPECT_EQ(-1, lseek(dfd, 0, SEEK_SET));
	EXPECT_EQ(ESPIPE, errno);
	EXPECT_EQ(-1, write(dfd, b, 1));
	len = read_stream(dfd, &stream);
	ASSERT_LT(0, len);
	EXPECT_EQ(0, read(dfd, b, sizeof(b)));
	EXPECT_EQ(0, read(dfd, b, sizeof(b)));
	ASSERT_EQ(0, mig_set(fd, ST_STOP, NULL));
	EXPECT_EQ(-1, read(dfd, b, sizeof(b)));
	EXPECT_EQ(ENODEV, errno);
	close(dfd);

	/* left in the middle of the stream */
	ASSERT_EQ(0, mig_set(fd, ST_STOP_COPY, &dfd));
	ASSERT_LE(0, dfd);
	ASSERT_EQ(1, read(dfd, b, 1));
	ASSERT_EQ(0, mig_set(fd, ST_RUNNING, NULL));
	EXPECT_EQ(-1, read(dfd, b, sizeof(b)));
	EXPECT_EQ(ENODEV, errno);
	close(dfd);

	ASSERT_EQ(0, mig_set(fd, ST_RESUMING, &dfd));
	ASSERT_LE(0, dfd);
	/* a resuming fd is written only, at no offset */
	EXPECT_EQ(-1, read(dfd, b, 1));
	EXPECT_EQ(-1, pwrite(dfd, stream, 1, 0));
	EXPECT_EQ(ESPIPE, errno);
	ASSERT_EQ(0, write_stream(dfd, stream, len));
	ASSERT_EQ(0, mig_set(fd, ST_STOP, NULL));
	EXPECT_EQ(-1, write(dfd, stream, 16));
	EXPECT_EQ(ENODEV, errno);
	close(dfd);

	/* a session fd the consumer keeps does not block the next one */
	ASSERT_EQ(0, mig_set(fd, ST_STOP_COPY, &dfd));
	ASSERT_LE(0, dfd);
	ASSERT_EQ(0, mig_set(fd, ST_RUNNING, NULL));
	EXPECT_EQ(ST_RUNNING, mig_state(fd));
	free(stream);
	stream = NULL;
	save(_metadata, fd, &stream, &len);
	close(dfd);
	ASSERT_EQ(0, mig_set(fd, ST_RUNNING, NULL));
	free(stream);
}

/*
 * MIG_DATA_SIZE (6.2+) reports a non-zero estimate, RUNNING and STOP;
 * the STOP_COPY stream that follows is read to its end.
 */
TEST_F(mig, data_size)
{
#ifdef VFIO_DEVICE_FEATURE_MIG_DATA_SIZE
	struct vfio_device_feature_mig_data_size ds = { 0 };
	uint8_t *stream = NULL;
	ssize_t len = 0;
	int ret;

	dev_start(_metadata, &self->a, dma_args);
	ret = vu_device_feature(self->a.fd, VFIO_DEVICE_FEATURE_GET |
		      VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, &ds, sizeof(ds));
	if (ret == -ENOTTY && kernel_before(6, 2))
		SKIP(return, "no MIG_DATA_SIZE before 6.2");
	ASSERT_EQ(0, ret);
	EXPECT_LT(0, ds.stop_copy_length);
	ASSERT_EQ(0, mig_set(self->a.fd, ST_STOP, NULL));
	ds.stop_copy_length = 0;
	ASSERT_EQ(0, vu_device_feature(self->a.fd, VFIO_DEVICE_FEATURE_GET |
			     VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, &ds, sizeof(ds)));
	EXPECT_LT(0, ds.stop_copy_length);
	ASSERT_EQ(0, mig_set(self->a.fd, ST_RUNNING, NULL));
	save(_metadata, self->a.fd, &stream, &len);
	ksft_print_msg("estimate %llu bytes, stream %zd bytes\n",
		       (unsigned long long)ds.stop_copy_length, len);
	free(stream);
#else
	SKIP(return, "the uapi has no VFIO_DEVICE_FEATURE_MIG_DATA_SIZE");
#endif
}

/*
 * The DMA engine moves from mdev A (server 1) to mdev B (server 2) with a
 * copy in flight: A's background copy is paused after one of four 1 MiB
 * steps (STEPS), A saves, B loads. B shows A's registers (scratch,
 * addresses, length, step, interrupt control, progress, status BUSY);
 * A's memory (as a hypervisor would copy it) goes to B's, whose copy,
 * allowed to go on in RUNNING, finishes what A began: status DONE, the
 * whole destination equal to the source, and B's MSI-X eventfd fires. A
 * stays stopped and copies nothing more.
 */
TEST_F_TIMEOUT(mig, dma_round_trip, 180)
{
	const size_t sz = 4 << 20, step = 1 << 20;
	const uint64_t iova = 1ULL << 32;
	uint32_t ra[REG_END / 4], rb[REG_END / 4];
	uint8_t *stream = NULL, *a, *b;
	uint64_t progress = 0, count = 0;
	ssize_t len = 0;
	unsigned int i;
	int efd;

	dev_start(_metadata, &self->a, dma_args);
	dev_start(_metadata, &self->b, dma_args);
	a = mmap(NULL, 2 * sz, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	b = mmap(NULL, 2 * sz, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	ASSERT_NE(MAP_FAILED, a);
	ASSERT_NE(MAP_FAILED, b);
	for (i = 0; i < sz; i++)
		a[i] = i * 7 + i / 4093;
	memset(a + sz, 0xee, sz);
	memset(b, 0, 2 * sz);
	ASSERT_EQ(0, vu_dma_map(self->a.container, a, iova, 2 * sz,
				VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE));
	ASSERT_EQ(0, vu_dma_map(self->b.container, b, iova, 2 * sz,
				VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE));

	/* A: MSI-X on, a 4 MiB copy paused after its first step */
	ASSERT_EQ(0, msix_enable(self->a.fd));
	ASSERT_EQ(0, wr32(self->a.fd, REG_SCRATCH, 0x5eed1234));
	ASSERT_EQ(0, wr32(self->a.fd, REG_IRQ_CTRL, 1));
	ASSERT_EQ(0, wr64(self->a.fd, REG_SRC, iova));
	ASSERT_EQ(0, wr64(self->a.fd, REG_DST, iova + sz));
	ASSERT_EQ(0, wr64(self->a.fd, REG_LEN, sz));
	ASSERT_EQ(0, wr32(self->a.fd, REG_STEP, step));
	ASSERT_EQ(0, wr32(self->a.fd, REG_STEPS, 1));
	ASSERT_EQ(0, wr32(self->a.fd, REG_DOORBELL, DOORBELL_ASYNC));
	ASSERT_EQ(0, wait_reg(self->a.fd, REG_PROGRESS, 8, step, 10000));
	ASSERT_EQ(0, wait_reg(self->a.fd, REG_STATUS, 4, STATUS_BUSY, 1000));

	/* B: the consumer's interrupt set up as the destination VM's */
	efd = eventfd(0, EFD_CLOEXEC);
	ASSERT_LE(0, efd);
	ASSERT_EQ(0, msix_enable(self->b.fd));
	ASSERT_EQ(0, set_eventfd(self->b.fd, VFIO_PCI_MSIX_IRQ_INDEX, efd));

	save(_metadata, self->a.fd, &stream, &len);
	ksft_print_msg("dma stream: %zd bytes\n", len);
	/* the registers as A has them, stopped (reads change nothing) */
	for (i = 0; i < REG_END / 4; i++)
		ASSERT_EQ(0, rd32(self->a.fd, i * 4, &ra[i]));
	/* guest memory travels beside the device state */
	memcpy(b, a, 2 * sz);
	load(_metadata, self->b.fd, stream, len);

	for (i = 0; i < REG_END / 4; i++) {
		ASSERT_EQ(0, rd32(self->b.fd, i * 4, &rb[i]));
		EXPECT_EQ(ra[i], rb[i]) TH_LOG("register %#x", i * 4);
	}
	EXPECT_EQ(0x5eed1234, rb[REG_SCRATCH / 4]);
	EXPECT_EQ(STATUS_BUSY, rb[REG_STATUS / 4]);
	EXPECT_EQ(step, rb[REG_PROGRESS / 4]);
	EXPECT_EQ((uint32_t)(iova + sz), rb[REG_DST / 4]);

	ASSERT_EQ(0, mig_set(self->b.fd, ST_RUNNING, NULL));
	ASSERT_EQ(0, wr32(self->b.fd, REG_STEPS, 0xffffffff));
	ASSERT_EQ(0, wait_eventfd(efd, 20000)) TH_LOG("no MSI-X from B");
	ASSERT_EQ(0, rd32(self->b.fd, REG_STATUS, &rb[0]));
	EXPECT_EQ(STATUS_DONE, rb[0]);
	ASSERT_EQ(0, rd64(self->b.fd, REG_PROGRESS, &progress));
	EXPECT_EQ(sz, progress);
	ASSERT_EQ(0, rd64(self->b.fd, REG_COUNT, &count));
	EXPECT_EQ(1, count);
	EXPECT_EQ(0, memcmp(b, b + sz, sz));

	/* A, stopped, did no more of it */
	ASSERT_EQ(0, rd64(self->a.fd, REG_PROGRESS, &progress));
	EXPECT_EQ(step, progress);
	for (i = step; i < sz; i++)
		if (a[sz + i] != 0xee)
			break;
	EXPECT_EQ(sz, i) TH_LOG("A wrote byte %u after it stopped", i);
	EXPECT_EQ(ST_STOP, mig_state(self->a.fd));

	close(efd);
	free(stream);
	munmap(a, 2 * sz);
	munmap(b, 2 * sz);
}

/*
 * The null device's registers and BAR memory (BAR2 and BAR4, written
 * through the region, sparse) move from A to B: B reads them back,
 * and reads zeroes where nothing was written.
 */
TEST_F_TIMEOUT(mig, null_round_trip, 180)
{
	static const uint64_t offs2[] = {
		0, 4096, 123456, (1 << 20) + 8, NULL_BAR2_SIZE - 4096,
	};
	uint8_t pat[4096], got[4096], zero[4096] = { 0 };
	uint8_t *stream = NULL;
	uint64_t v = 0;
	uint32_t v32 = 0;
	ssize_t len = 0;
	unsigned int i, j;

	dev_start(_metadata, &self->a, null_args);
	dev_start(_metadata, &self->b, null_args);

	ASSERT_EQ(0, wr64(self->a.fd, NULL_REG_SCRATCH, 0x0123456789abcdefULL));
	ASSERT_EQ(0, wr32(self->a.fd, NULL_REG_PING, 41));
	ASSERT_EQ(0, wr32(self->a.fd, NULL_REG_SLOW, 0xabad1dea));
	ASSERT_EQ(0, wr64(self->a.fd, NULL_REG_BAR4_OFFSET, 0x1238));
	for (i = 0; i < ARRAY_SIZE(offs2); i++) {
		for (j = 0; j < sizeof(pat); j++)
			pat[j] = (uint8_t)(j * 13 + i * 101 + 1);
		ASSERT_EQ(0, bar_wr(self->a.fd, 2, offs2[i], pat, sizeof(pat)));
	}
	for (j = 0; j < sizeof(pat); j++)
		pat[j] = (uint8_t)(j ^ 0x5a);
	ASSERT_EQ(0, bar_wr(self->a.fd, 4, 0x1000, pat, sizeof(pat)));
	ASSERT_EQ(0, bar_wr(self->a.fd, 4, NULL_BAR4_SIZE - 64, pat, 64));

	save(_metadata, self->a.fd, &stream, &len);
	ksft_print_msg("null stream: %zd bytes\n", len);
	/* sparse: far less than the 4 MiB BAR */
	EXPECT_GT(1 << 20, len);
	load(_metadata, self->b.fd, stream, len);
	ASSERT_EQ(0, mig_set(self->b.fd, ST_RUNNING, NULL));

	ASSERT_EQ(0, rd64(self->b.fd, NULL_REG_SCRATCH, &v));
	EXPECT_EQ(0x0123456789abcdefULL, v);
	ASSERT_EQ(0, rd32(self->b.fd, NULL_REG_PING, &v32));
	EXPECT_EQ(42, v32);
	ASSERT_EQ(0, rd32(self->b.fd, NULL_REG_SLOW, &v32));
	EXPECT_EQ(0xabad1dea, v32);
	ASSERT_EQ(0, rd64(self->b.fd, NULL_REG_BAR4_OFFSET, &v));
	EXPECT_EQ(0x1238, v);
	ASSERT_EQ(0, rd32(self->b.fd, NULL_REG_MAGIC, &v32));
	EXPECT_EQ(NULL_MAGIC, v32);
	for (i = 0; i < ARRAY_SIZE(offs2); i++) {
		for (j = 0; j < sizeof(pat); j++)
			pat[j] = (uint8_t)(j * 13 + i * 101 + 1);
		ASSERT_EQ(0, bar_rd(self->b.fd, 2, offs2[i], got, sizeof(got)));
		EXPECT_EQ(0, memcmp(pat, got, sizeof(got)))
			TH_LOG("BAR2 at %#llx", (unsigned long long)offs2[i]);
	}
	ASSERT_EQ(0, bar_rd(self->b.fd, 2, 2 << 20, got, sizeof(got)));
	EXPECT_EQ(0, memcmp(zero, got, sizeof(got)));
	for (j = 0; j < sizeof(pat); j++)
		pat[j] = (uint8_t)(j ^ 0x5a);
	ASSERT_EQ(0, bar_rd(self->b.fd, 4, 0x1000, got, sizeof(got)));
	EXPECT_EQ(0, memcmp(pat, got, sizeof(got)));
	ASSERT_EQ(0, bar_rd(self->b.fd, 4, NULL_BAR4_SIZE - 64, got, 64));
	EXPECT_EQ(0, memcmp(pat, got, 64));
	ASSERT_EQ(0, bar_rd(self->b.fd, 4, 0, got, sizeof(got)));
	EXPECT_EQ(0, memcmp(zero, got, sizeof(got)));
	/* what BAR4_DATA shows is the server's memory: loaded there too */
	ASSERT_EQ(0, wr64(self->b.fd, NULL_REG_BAR4_OFFSET, 0x1000));
	ASSERT_EQ(0, rd64(self->b.fd, NULL_REG_BAR4_DATA, &v));
	EXPECT_EQ(0, memcmp(pat, &v, 8));
	free(stream);
}

/* A saving session's stream read in reads of @rd bytes: its length. */
static ssize_t save_by(int fd, size_t rd, uint8_t *buf, size_t cap)
{
	size_t len = 0;
	int dfd, ret;
	ssize_t r;

	ret = mig_set(fd, ST_STOP_COPY, &dfd);
	if (ret)
		return ret;
	for (;;) {
		r = read(dfd, buf + len, cap - len < rd ? cap - len : rd);
		if (r <= 0)
			break;
		len += r;
	}
	ret = r < 0 ? -errno : 0;
	close(dfd);
	if (!ret)
		ret = mig_set(fd, ST_STOP, NULL);
	return ret ? ret : (ssize_t)len;
}

/*
 * A stream larger than max_data_xfer_size (1 MiB: the null device with
 * 2.5 MiB of BAR2 written) moves whole whatever the consumer's read and
 * write sizes: read in 64 KiB, in 1 MiB + 3 and in 4093 bytes it is the
 * same each time (the device is stopped in between), written in pieces
 * of 100003 bytes and of 1 MiB + 5 it loads, and B's BAR2 is A's.
 */
TEST_F_TIMEOUT(mig, big_stream_any_chunking, 300)
{
	static const size_t rds[] = { 4093, (1 << 20) + 3 };
	static const size_t wrs[] = { 100003, (1 << 20) + 5 };
	const size_t cap = 8 << 20, bar = 5 << 19, piece = 64 << 10;
	uint8_t *s0, *s1, *pat, *got;
	ssize_t len, n;
	unsigned int i;
	size_t off, pos, w;
	int dfd;

	dev_start(_metadata, &self->a, null_args);
	dev_start(_metadata, &self->b, null_args);
	s0 = malloc(cap);
	s1 = malloc(cap);
	pat = malloc(bar);
	got = malloc(bar);
	ASSERT_TRUE(s0 && s1 && pat && got);
	for (off = 0; off < bar; off++)
		pat[off] = (uint8_t)(off * 31 + off / 65521 + 7);
	for (off = 0; off < bar; off += piece)
		ASSERT_EQ(0, bar_wr(self->a.fd, 2, off, pat + off, piece));

	len = save_by(self->a.fd, CHUNK, s0, cap);
	ASSERT_LT((ssize_t)bar, len) TH_LOG("save: %s",
					    len < 0 ? strerror(-len) : "short");
	ksft_print_msg("stream: %zd bytes\n", len);
	for (i = 0; i < ARRAY_SIZE(rds); i++) {
		ASSERT_EQ(0, mig_set(self->a.fd, ST_RUNNING, NULL));
		ASSERT_EQ(0, mig_set(self->a.fd, ST_STOP, NULL));
		memset(s1, 0, cap);
		n = save_by(self->a.fd, rds[i], s1, cap);
		EXPECT_EQ(len, n) TH_LOG("reads of %zu bytes", rds[i]);
		EXPECT_EQ(0, memcmp(s0, s1, len)) TH_LOG("reads of %zu bytes",
							 rds[i]);
	}

	for (i = 0; i < ARRAY_SIZE(wrs); i++) {
		ASSERT_EQ(0, mig_set(self->b.fd, ST_RESUMING, &dfd));
		ASSERT_LE(0, dfd);
		for (pos = 0; pos < (size_t)len; pos += w) {
			w = len - pos < wrs[i] ? len - pos : wrs[i];
			n = write(dfd, s0 + pos, w);
			ASSERT_EQ((ssize_t)w, n) TH_LOG("write of %zu at %zu: %s",
							w, pos, strerror(errno));
		}
		ASSERT_EQ(0, mig_set(self->b.fd, ST_RUNNING, NULL))
			TH_LOG("writes of %zu bytes", wrs[i]);
		close(dfd);
		memset(got, 0, bar);
		for (off = 0; off < bar; off += piece)
			ASSERT_EQ(0, bar_rd(self->b.fd, 2, off, got + off, piece));
		EXPECT_EQ(0, memcmp(pat, got, bar)) TH_LOG("writes of %zu bytes",
							   wrs[i]);
		/* the next load must bring it back: scribble over it */
		ASSERT_EQ(0, bar_wr(self->b.fd, 2, 0, s1, piece));
	}
	free(s0);
	free(s1);
	free(pat);
	free(got);
}

/*
 * A stream the server refuses: a flipped byte (its check sum), or one cut
 * short. RESUMING -> STOP fails and the device is not in STOP (RESUMING
 * or ERROR); a reset brings it back to RUNNING, working, and a good
 * stream loads then.
 */
TEST_F_TIMEOUT(mig, corrupt_stream_refused, 120)
{
	uint8_t *stream = NULL, *bad;
	ssize_t len = 0;
	uint32_t s, v = 0;
	int fd, round, dfd, ret;

	dev_start(_metadata, &self->a, dma_args);
	fd = self->a.fd;
	ASSERT_EQ(0, wr32(fd, REG_SCRATCH, 0xc0ffee));
	save(_metadata, fd, &stream, &len);
	ASSERT_EQ(0, mig_set(fd, ST_RUNNING, NULL));
	ASSERT_EQ(0, wr32(fd, REG_SCRATCH, 1));
	bad = malloc(len);
	ASSERT_NE(NULL, bad);

	for (round = 0; round < 2; round++) {
		size_t n = round ? len / 2 : len;

		memcpy(bad, stream, len);
		if (!round)
			bad[len - 5] ^= 0x40;
		ASSERT_EQ(0, mig_set(fd, ST_RESUMING, &dfd));
		ASSERT_LE(0, dfd);
		ASSERT_EQ(0, write_stream(dfd, bad, n));
		ret = mig_set(fd, ST_STOP, NULL);
		EXPECT_NE(0, ret) TH_LOG("%s stream loaded",
					 round ? "a truncated" : "a corrupt");
		s = mig_state(fd);
		EXPECT_TRUE(s == ST_RESUMING || s == ST_ERROR)
			TH_LOG("round %d: SET STOP: %s, state %s", round,
			       strerror(-ret), state_name(s));
		ksft_print_msg("%s stream: %s, state %s\n",
			       round ? "truncated" : "corrupt", strerror(-ret),
			       state_name(s));
		ASSERT_EQ(0, ioctl(fd, VFIO_DEVICE_RESET));
		EXPECT_EQ(ST_RUNNING, mig_state(fd));
		ASSERT_EQ(0, rd32(fd, REG_MAGIC, &v));
		EXPECT_EQ(DMA_MAGIC, v);
		close(dfd);
	}
	/* the good one loads */
	load(_metadata, fd, stream, len);
	ASSERT_EQ(0, mig_set(fd, ST_RUNNING, NULL));
	ASSERT_EQ(0, rd32(fd, REG_SCRATCH, &v));
	EXPECT_EQ(0xc0ffee, v);
	free(bad);
	free(stream);
}

#define KILL_TIMEOUT_MS		3000

/*
 * After the server died mid-session: the device reports ERROR, every SET
 * from there fails with EINVAL, VFIO_DEVICE_RESET returns 0 and leaves
 * RUNNING; region accesses fail (EIO) until a fresh server is attached,
 * after which the device works and offers migration again.
 */
static void recover_after_kill_flags(struct __test_metadata *_metadata,
				     struct mdev *d, uint64_t want_flags)
{
	static const uint32_t targets[] = {
		ST_RUNNING, ST_STOP, ST_STOP_COPY, ST_RESUMING, ST_RUNNING_P2P,
	};
	uint64_t flags = 0;
	unsigned int i;
	uint32_t v = 0;
	double t0;
	int dfd;

	EXPECT_EQ(ST_ERROR, mig_state(d->fd));
	for (i = 0; i < ARRAY_SIZE(targets); i++) {
		t0 = vu_now();
		EXPECT_EQ(-EINVAL, mig_set(d->fd, targets[i], &dfd))
			TH_LOG("ERROR -> %s", state_name(targets[i]));
		EXPECT_GT(2.0, vu_now() - t0);
		EXPECT_EQ(-1, dfd);
	}
	EXPECT_EQ(ST_ERROR, mig_state(d->fd));
	t0 = vu_now();
	EXPECT_EQ(0, ioctl(d->fd, VFIO_DEVICE_RESET)) TH_LOG("reset: %m");
	EXPECT_GT(KILL_TIMEOUT_MS / 1000.0 + 2, vu_now() - t0);
	EXPECT_EQ(ST_RUNNING, mig_state(d->fd));
	EXPECT_EQ(-EIO, rd32(d->fd, REG_MAGIC, &v));

	ASSERT_EQ(0, vu_server_restart(&d->srv));
	ASSERT_EQ(0, vu_mdev_attach(d->uuid, &d->srv));
	ASSERT_EQ(0, rd32(d->fd, REG_MAGIC, &v));
	EXPECT_EQ(DMA_MAGIC, v);
	ASSERT_EQ(0, mig_flags(d->fd, &flags));
	EXPECT_EQ(want_flags, flags);
	EXPECT_EQ(ST_RUNNING, mig_state(d->fd));
	/* and migrates: a STOP_COPY session to its end */
	ASSERT_EQ(0, mig_set(d->fd, ST_STOP_COPY, &dfd));
	ASSERT_LE(0, dfd);
	EXPECT_LT(0, drain(dfd));
	close(dfd);
	ASSERT_EQ(0, mig_set(d->fd, ST_RUNNING, NULL));
}

static void recover_after_kill(struct __test_metadata *_metadata,
			       struct mdev *d)
{
	recover_after_kill_flags(_metadata, d, OFFERED_FLAGS);
}

/* The server is killed in STOP_COPY, after the first bytes were read. */
TEST_F_TIMEOUT(mig, server_killed_in_stop_copy, 120)
{
	uint8_t b[CHUNK];
	double t0, dt;
	ssize_t r;
	int dfd = -1, ret;

	__dev_start(_metadata, &self->a, SAMPLE, false, dma_args,
		    KILL_TIMEOUT_MS, NULL);
	ASSERT_EQ(0, mig_set(self->a.fd, ST_STOP_COPY, &dfd));
	ASSERT_LE(0, dfd);
	ASSERT_EQ(16, read(dfd, b, 16));
	ASSERT_EQ(0, vu_server_signal(&self->a.srv, SIGKILL));

	t0 = vu_now();
	r = read(dfd, b, sizeof(b));
	dt = vu_now() - t0;
	EXPECT_EQ(-1, r) TH_LOG("read %zd bytes from a dead server", r);
	ksft_print_msg("read after the kill: %s in %.2f s\n",
		       r < 0 ? strerror(errno) : "no error", dt);
	EXPECT_GT(KILL_TIMEOUT_MS / 1000.0 + 2, dt);

	t0 = vu_now();
	ret = mig_set(self->a.fd, ST_STOP, NULL);
	dt = vu_now() - t0;
	EXPECT_NE(0, ret);
	EXPECT_GT(KILL_TIMEOUT_MS / 1000.0 + 2, dt);
	/* the old fd stays dead */
	EXPECT_EQ(-1, read(dfd, b, sizeof(b)));
	close(dfd);
	recover_after_kill(_metadata, &self->a);
}

/* The server is killed in RESUMING, after part of a stream was written. */
TEST_F_TIMEOUT(mig, server_killed_in_resuming, 120)
{
	uint8_t *stream = NULL;
	ssize_t len = 0, w;
	double t0, dt;
	int dfd = -1, ret;

	__dev_start(_metadata, &self->a, SAMPLE, false, dma_args,
		    KILL_TIMEOUT_MS, NULL);
	save(_metadata, self->a.fd, &stream, &len);
	ASSERT_EQ(0, mig_set(self->a.fd, ST_RESUMING, &dfd));
	ASSERT_LE(0, dfd);
	ASSERT_EQ(16, write(dfd, stream, 16));
	ASSERT_EQ(0, vu_server_signal(&self->a.srv, SIGKILL));

	t0 = vu_now();
	w = write(dfd, stream + 16, len - 16);
	dt = vu_now() - t0;
	EXPECT_EQ(-1, w) TH_LOG("wrote %zd bytes to a dead server", w);
	ksft_print_msg("write after the kill: %s in %.2f s\n",
		       w < 0 ? strerror(errno) : "no error", dt);
	EXPECT_GT(KILL_TIMEOUT_MS / 1000.0 + 2, dt);

	t0 = vu_now();
	ret = mig_set(self->a.fd, ST_STOP, NULL);
	dt = vu_now() - t0;
	EXPECT_NE(0, ret);
	EXPECT_GT(KILL_TIMEOUT_MS / 1000.0 + 2, dt);
	EXPECT_EQ(-1, write(dfd, stream, 16));
	close(dfd);
	free(stream);
	recover_after_kill(_metadata, &self->a);
}

/*
 * A server that stops answering in STOP_COPY (SIGSTOP): the next read
 * fails after timeout_ms (ETIMEDOUT), not before and not much later, and
 * the device reports ERROR; a reset leaves it. The same server, running
 * again, is attached anew: it ended the session itself when the client
 * went (STOP_COPY -> STOP), and the device, RUNNING for the consumer,
 * takes register writes again (the server runs again too).
 */
TEST_F_TIMEOUT(mig, server_hung_in_stop_copy, 120)
{
	const unsigned int timeout_ms = 1000;
	uint8_t b[CHUNK];
	uint32_t v = 0;
	double t0, dt;
	ssize_t r;
	int dfd = -1, ret;

	__dev_start(_metadata, &self->a, SAMPLE, false, dma_args, timeout_ms,
		    NULL);
	ASSERT_EQ(0, wr32(self->a.fd, REG_SCRATCH, 0x1234));
	ASSERT_EQ(0, mig_set(self->a.fd, ST_STOP_COPY, &dfd));
	ASSERT_LE(0, dfd);
	ASSERT_EQ(16, read(dfd, b, 16));
	ASSERT_EQ(0, vu_server_signal(&self->a.srv, SIGSTOP));

	t0 = vu_now();
	r = read(dfd, b, sizeof(b));
	dt = vu_now() - t0;
	ret = r < 0 ? errno : 0;
	ksft_print_msg("read from a stopped server: %s in %.2f s\n",
		       strerror(ret), dt);
	EXPECT_EQ(-1, r);
	EXPECT_EQ(ETIMEDOUT, ret);
	EXPECT_LE(timeout_ms / 1000.0 * 0.9, dt);
	EXPECT_GT(timeout_ms / 1000.0 + 3, dt);
	EXPECT_EQ(ST_ERROR, mig_state(self->a.fd));
	EXPECT_EQ(-EINVAL, mig_set(self->a.fd, ST_STOP, NULL));
	EXPECT_EQ(0, ioctl(self->a.fd, VFIO_DEVICE_RESET)) TH_LOG("reset: %m");
	EXPECT_EQ(ST_RUNNING, mig_state(self->a.fd));
	close(dfd);

	ASSERT_EQ(0, vu_server_signal(&self->a.srv, SIGCONT));
	ASSERT_EQ(0, vu_mdev_attach(self->a.uuid, &self->a.srv));
	EXPECT_EQ(ST_RUNNING, mig_state(self->a.fd));
	ASSERT_EQ(0, rd32(self->a.fd, REG_SCRATCH, &v));
	EXPECT_EQ(0x1234, v);
	ret = wr32(self->a.fd, REG_SCRATCH, 0x5678);
	EXPECT_EQ(0, ret) TH_LOG("a register write after the re-attach: %s",
				 strerror(-ret));
	/* and a migration from here works */
	ASSERT_EQ(0, mig_set(self->a.fd, ST_STOP_COPY, &dfd));
	ASSERT_LE(0, dfd);
	EXPECT_LT(0, drain(dfd));
	close(dfd);
	ASSERT_EQ(0, mig_set(self->a.fd, ST_RUNNING, NULL));
}

/*
 * The consumer re-attaches the device to another server in the middle of
 * a STOP_COPY session: the session belonged to the old connection, so
 * the data fd fails, the device reports ERROR and refuses SETs; a reset
 * leaves RUNNING on the new server, which works and migrates.
 */
TEST_F_TIMEOUT(mig, reattach_in_session, 120)
{
	uint8_t b[64];
	uint32_t v = 0;
	int dfd = -1;
	ssize_t r;

	dev_start(_metadata, &self->a, dma_args);
	ASSERT_EQ(0, vu_server_start(&self->b.srv, SAMPLE, dma_args));
	ASSERT_EQ(0, mig_set(self->a.fd, ST_STOP_COPY, &dfd));
	ASSERT_LE(0, dfd);
	ASSERT_EQ(16, read(dfd, b, 16));

	ASSERT_EQ(0, vu_mdev_attach(self->a.uuid, &self->b.srv));
	r = read(dfd, b, sizeof(b));
	ksft_print_msg("read after the re-attach: %zd (%s)\n", r,
		       r < 0 ? strerror(errno) : "-");
	EXPECT_EQ(-1, r);
	EXPECT_EQ(ST_ERROR, mig_state(self->a.fd));
	EXPECT_EQ(-EINVAL, mig_set(self->a.fd, ST_STOP, NULL));
	close(dfd);
	ASSERT_EQ(0, ioctl(self->a.fd, VFIO_DEVICE_RESET)) TH_LOG("reset: %m");
	EXPECT_EQ(ST_RUNNING, mig_state(self->a.fd));
	ASSERT_EQ(0, wr32(self->a.fd, REG_SCRATCH, 0x77));
	ASSERT_EQ(0, rd32(self->a.fd, REG_SCRATCH, &v));
	EXPECT_EQ(0x77, v);
	ASSERT_EQ(0, mig_set(self->a.fd, ST_STOP_COPY, &dfd));
	ASSERT_LE(0, dfd);
	EXPECT_LT(0, drain(dfd));
	close(dfd);
	ASSERT_EQ(0, mig_set(self->a.fd, ST_RUNNING, NULL));
}

/*
 * The consumer closes the device in a session: the session ends (its
 * data fd fails with ENODEV), and the device, opened again, is RUNNING
 * and runs (the server, left stopped by the close, is started again:
 * register writes work, a background copy makes progress).
 */
TEST_F_TIMEOUT(mig, close_ends_session, 120)
{
	uint8_t *stream = NULL, b[64];
	ssize_t len = 0;
	uint32_t v = 0;
	int dfd = -1, round, ret;

	dev_start(_metadata, &self->a, dma_args);
	save(_metadata, self->a.fd, &stream, &len);
	ASSERT_EQ(0, mig_set(self->a.fd, ST_RUNNING, NULL));

	for (round = 0; round < 2; round++) {
		uint32_t target = round ? ST_RESUMING : ST_STOP_COPY;

		ASSERT_EQ(0, mig_set(self->a.fd, target, &dfd));
		ASSERT_LE(0, dfd);
		ASSERT_EQ(16, round ? write(dfd, stream, 16) : read(dfd, b, 16));
		close(self->a.fd);
		self->a.fd = -1;
		EXPECT_EQ(-1, round ? write(dfd, stream + 16, 16) :
				      read(dfd, b, sizeof(b)));
		EXPECT_EQ(ENODEV, errno) TH_LOG("%s fd after the close",
						state_name(target));
		close(dfd);

		self->a.fd = vu_vfio_device_fd(self->a.uuid, self->a.container,
					       self->a.group);
		ASSERT_LE(0, self->a.fd);
		EXPECT_EQ(ST_RUNNING, mig_state(self->a.fd));
		ret = wr32(self->a.fd, REG_SCRATCH, 0xa0 + round);
		EXPECT_EQ(0, ret) TH_LOG("round %d: a register write after the reopen: %s",
					 round, strerror(-ret));
		ASSERT_EQ(0, rd32(self->a.fd, REG_MAGIC, &v));
		EXPECT_EQ(DMA_MAGIC, v);
	}
	free(stream);
}

/*
 * A server whose STOP_COPY stream never ends (fault_server --mig-endless):
 * reads go on until mig_max_bytes (4 MiB here) is passed, then fail with
 * EFBIG; the device is reset to RUNNING afterwards.
 */
TEST_F_TIMEOUT(mig, endless_stream_efbig, 120)
{
	const uint64_t max = 4 << 20;
	uint64_t flags = 0, total = 0;
	uint8_t *b;
	uint32_t v = 0;
	ssize_t r = 0;
	int dfd = -1, n, err = 0;

	if (access(MAX_BYTES_PARAM, W_OK))
		SKIP(return, "no writable %s", MAX_BYTES_PARAM);
	ASSERT_EQ(0, vu_sysfs_write(MAX_BYTES_PARAM, "4194304"));
	__dev_start(_metadata, &self->a, "fault_server", true, endless_args, 0,
		    NULL);
	ASSERT_EQ(0, rd32(self->a.fd, 0, &v));
	EXPECT_EQ(FP_MAGIC, v);
	ASSERT_EQ(0, mig_flags(self->a.fd, &flags));
	EXPECT_EQ(OFFERED_FLAGS, flags);
	ASSERT_EQ(0, mig_set(self->a.fd, ST_STOP_COPY, &dfd));
	ASSERT_LE(0, dfd);
	b = malloc(1 << 20);
	ASSERT_NE(NULL, b);
	for (n = 0; n < 64; n++) {
		r = read(dfd, b, 1 << 20);
		if (r <= 0) {
			err = r < 0 ? errno : 0;
			break;
		}
		total += r;
	}
	ksft_print_msg("read %llu bytes, then %zd (%s)\n",
		       (unsigned long long)total, r, strerror(err));
	EXPECT_EQ(-1, r);
	EXPECT_EQ(EFBIG, err);
	EXPECT_LE(total, max);
	EXPECT_LE(max - (1 << 20), total);
	/* and it stays refused */
	EXPECT_EQ(-1, read(dfd, b, 4096));
	ksft_print_msg("state after EFBIG: %s\n",
		       state_name(mig_state(self->a.fd)));
	close(dfd);
	free(b);
	ASSERT_EQ(0, ioctl(self->a.fd, VFIO_DEVICE_RESET));
	EXPECT_EQ(ST_RUNNING, mig_state(self->a.fd));
	ASSERT_EQ(0, rd32(self->a.fd, 0, &v));
	EXPECT_EQ(FP_MAGIC, v);
}

/* type1's dirty bitmap of [@iova, @iova + @size) into @bits (cleared). */
static int dirty_bitmap(int container, uint64_t iova, uint64_t size,
			uint64_t pgsize, uint64_t *bits, size_t bits_len)
{
	char buf[sizeof(struct vfio_iommu_type1_dirty_bitmap) +
		 sizeof(struct vfio_iommu_type1_dirty_bitmap_get)];
	struct vfio_iommu_type1_dirty_bitmap *db = (void *)buf;
	struct vfio_iommu_type1_dirty_bitmap_get *range = (void *)db->data;

	memset(buf, 0, sizeof(buf));
	memset(bits, 0, bits_len);
	db->argsz = sizeof(buf);
	db->flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;
	range->iova = iova;
	range->size = size;
	range->bitmap.pgsize = pgsize;
	range->bitmap.size = bits_len;
	range->bitmap.data = (void *)bits;
	return ioctl(container, VFIO_IOMMU_DIRTY_PAGES, db) ? -errno : 0;
}

static int dirty_tracking(int container, bool start)
{
	struct vfio_iommu_type1_dirty_bitmap db = {
		.argsz = sizeof(db),
		.flags = start ? VFIO_IOMMU_DIRTY_PAGES_FLAG_START :
				 VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP,
	};

	return ioctl(container, VFIO_IOMMU_DIRTY_PAGES, &db) ? -errno : 0;
}

/* Whether the container's type1 offers dirty tracking (its info cap). */
static bool type1_dirty_cap(int container, uint64_t *pgsize)
{
	char buf[4096] = { 0 };
	struct vfio_iommu_type1_info *info = (void *)buf;
	struct vfio_info_cap_header *cap;
	uint32_t off;

	info->argsz = sizeof(buf);
	if (ioctl(container, VFIO_IOMMU_GET_INFO, info) ||
	    !(info->flags & VFIO_IOMMU_INFO_CAPS))
		return false;
	for (off = info->cap_offset; off && off < sizeof(buf) - sizeof(*cap);
	     off = cap->next) {
		cap = (void *)(buf + off);
		if (cap->id == VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION) {
			struct vfio_iommu_type1_info_cap_migration *m = (void *)cap;

			*pgsize = m->pgsize_bitmap & -m->pgsize_bitmap;
			return true;
		}
	}
	return false;
}

/*
 * Server DMA while the source runs (the hypervisor's pre-copy of memory)
 * shows in the container's dirty log: with type1 tracking started and the
 * start state read once, a copy the DMA sample makes by message DMA
 * (DMA_READ from the source, DMA_WRITE to the destination; no DMA window)
 * marks exactly the destination's pages dirty, not the pages it read or
 * any other; a second read finds them clean again. Container only.
 */
TEST_F_TIMEOUT(mig, dirty_pages_type1, 120)
{
	const size_t sz = 2 << 20, copy = 20 * 4096 + 100;
	const uint64_t iova = 1ULL << 32, dst_off = sz + 3 * 4096 + 17;
	uint64_t pgsize = 0, bits[(2 * sz / 4096 + 63) / 64];
	unsigned int pg, first, last, dirty = 0, wrong = 0;
	uint32_t status = 0;
	uint8_t *buf;
	int c;

	if (vu_iommufd())
		SKIP(return, "no type1 container under iommufd");
	__dev_start(_metadata, &self->a, SAMPLE, false, dma_args, 0, "0");
	c = self->a.container;
	if (!type1_dirty_cap(c, &pgsize))
		SKIP(return, "type1 offers no dirty tracking");
	ASSERT_EQ(4096, pgsize);
	buf = mmap(NULL, 2 * sz, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	ASSERT_NE(MAP_FAILED, buf);
	memset(buf, 0x77, sz);
	memset(buf + sz, 0, sz);
	ASSERT_EQ(0, vu_dma_map(c, buf, iova, 2 * sz,
				VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE));

	ASSERT_EQ(0, dirty_tracking(c, true));
	ASSERT_EQ(0, dirty_bitmap(c, iova, 2 * sz, pgsize, bits, sizeof(bits)));
	ASSERT_EQ(0, dirty_bitmap(c, iova, 2 * sz, pgsize, bits, sizeof(bits)));
	for (pg = 0; pg < 2 * sz / 4096; pg++)
		dirty += bits[pg / 64] >> (pg % 64) & 1;
	EXPECT_EQ(0, dirty) TH_LOG("dirty before any DMA");

	ASSERT_EQ(0, wr32(self->a.fd, REG_IRQ_CTRL, 0));
	ASSERT_EQ(0, wr64(self->a.fd, REG_SRC, iova + 4096));
	ASSERT_EQ(0, wr64(self->a.fd, REG_DST, iova + dst_off));
	ASSERT_EQ(0, wr64(self->a.fd, REG_LEN, copy));
	ASSERT_EQ(0, wr32(self->a.fd, REG_DOORBELL, DOORBELL_COPY));
	ASSERT_EQ(0, rd32(self->a.fd, REG_STATUS, &status));
	ASSERT_EQ(STATUS_DONE, status);
	ASSERT_EQ(0, memcmp(buf + 4096, buf + dst_off, copy));

	ASSERT_EQ(0, dirty_bitmap(c, iova, 2 * sz, pgsize, bits, sizeof(bits)));
	first = dst_off / 4096;
	last = (dst_off + copy - 1) / 4096;
	dirty = 0;
	for (pg = 0; pg < 2 * sz / 4096; pg++) {
		bool d = bits[pg / 64] >> (pg % 64) & 1;

		dirty += d;
		if (d != (pg >= first && pg <= last)) {
			if (!wrong)
				TH_LOG("page %u is %s", pg, d ? "dirty" : "clean");
			wrong++;
		}
	}
	EXPECT_EQ(0, wrong);
	EXPECT_EQ(last - first + 1, dirty);

	/* read and cleared: clean again */
	ASSERT_EQ(0, dirty_bitmap(c, iova, 2 * sz, pgsize, bits, sizeof(bits)));
	dirty = 0;
	for (pg = 0; pg < 2 * sz / 4096; pg++)
		dirty += bits[pg / 64] >> (pg % 64) & 1;
	EXPECT_EQ(0, dirty);
	ASSERT_EQ(0, dirty_tracking(c, false));
	ASSERT_EQ(0, vu_dma_unmap(c, iova, 2 * sz));
	munmap(buf, 2 * sz);
}

/*
 * The same copy through the shared-memory DMA window (the default: the
 * server writes the consumer's pages through its own mapping, which
 * type1 never sees written): the pages the window pinned count as dirty
 * (type1 reports pinned pages dirty while they stay pinned), so every
 * destination page is dirty after the copy. Pages the window pinned for
 * reading are dirty too: only the destination is asserted.
 */
TEST_F_TIMEOUT(mig, dirty_pages_type1_window, 120)
{
	const size_t sz = 2 << 20, copy = 20 * 4096 + 100;
	const uint64_t iova = 1ULL << 32, dst_off = sz + 3 * 4096 + 17;
	uint64_t pgsize = 0, bits[(2 * sz / 4096 + 63) / 64];
	unsigned int pg, first, last, dirty = 0, missing = 0;
	uint32_t status = 0;
	uint8_t *buf;
	int c;

	if (vu_iommufd())
		SKIP(return, "no type1 container under iommufd");
	dev_start(_metadata, &self->a, dma_args);
	c = self->a.container;
	if (!type1_dirty_cap(c, &pgsize))
		SKIP(return, "type1 offers no dirty tracking");
	ASSERT_EQ(4096, pgsize);
	buf = mmap(NULL, 2 * sz, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	ASSERT_NE(MAP_FAILED, buf);
	memset(buf, 0x55, sz);
	memset(buf + sz, 0, sz);
	ASSERT_EQ(0, vu_dma_map(c, buf, iova, 2 * sz,
				VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE));
	ASSERT_EQ(0, dirty_tracking(c, true));
	ASSERT_EQ(0, dirty_bitmap(c, iova, 2 * sz, pgsize, bits, sizeof(bits)));

	ASSERT_EQ(0, wr32(self->a.fd, REG_IRQ_CTRL, 0));
	ASSERT_EQ(0, wr64(self->a.fd, REG_SRC, iova + 4096));
	ASSERT_EQ(0, wr64(self->a.fd, REG_DST, iova + dst_off));
	ASSERT_EQ(0, wr64(self->a.fd, REG_LEN, copy));
	ASSERT_EQ(0, wr32(self->a.fd, REG_DOORBELL, DOORBELL_COPY));
	ASSERT_EQ(0, rd32(self->a.fd, REG_STATUS, &status));
	ASSERT_EQ(STATUS_DONE, status);
	ASSERT_EQ(0, memcmp(buf + 4096, buf + dst_off, copy));

	ASSERT_EQ(0, dirty_bitmap(c, iova, 2 * sz, pgsize, bits, sizeof(bits)));
	first = dst_off / 4096;
	last = (dst_off + copy - 1) / 4096;
	for (pg = 0; pg < 2 * sz / 4096; pg++) {
		bool d = bits[pg / 64] >> (pg % 64) & 1;

		dirty += d;
		if (!d && pg >= first && pg <= last)
			missing++;
	}
	ksft_print_msg("%u of %zu pages dirty\n", dirty, 2 * sz / 4096);
	EXPECT_EQ(0, missing) TH_LOG("destination pages reported clean");
	ASSERT_EQ(0, dirty_tracking(c, false));
	ASSERT_EQ(0, vu_dma_unmap(c, iova, 2 * sz));
	munmap(buf, 2 * sz);
}

/*
 * PRE_COPY
 */

static bool have_pre_copy(void)
{
	return !kernel_before(6, 2);
}

/* VFIO_MIG_GET_PRECOPY_INFO on @dfd: 0 or -errno. */
static int precopy_info(int dfd, struct precopy_info *info)
{
	memset(info, 0, sizeof(*info));
	info->argsz = sizeof(*info);
	return ioctl(dfd, MIG_GET_PRECOPY_INFO, info) ? -errno : 0;
}

/*
 * Reads a pre-copy session until the device has nothing more for now:
 * read() fails with ENOMSG (include/uapi/linux/vfio.h). Appends to @buf
 * (@cap bytes) at *@len; returns the bytes read, or -errno of another
 * failure (-EFBIG past @cap, -ENODATA for a read() of 0: an end of stream
 * in PRE_COPY).
 */
static ssize_t read_pre_copy(int dfd, uint8_t *buf, size_t cap, size_t *len)
{
	size_t start = *len;
	ssize_t r;

	for (;;) {
		if (*len == cap)
			return -EFBIG;
		r = read(dfd, buf + *len, cap - *len < CHUNK ? cap - *len : CHUNK);
		if (r < 0)
			return errno == ENOMSG ? (ssize_t)(*len - start) : -errno;
		if (!r)
			return -ENODATA;
		*len += r;
	}
}

/*
 * PRE_COPY is offered exactly when the server offers it (--pre-copy) and
 * the kernel's FSM has it (6.2 on; 6.1's vfio_mig_get_next_state() has no
 * PRE_COPY: STOP_COPY | P2P only there, PRE_COPY targets EINVAL). A
 * re-attach under the open consumer to a server without pre-copy would
 * change the offer: refused (EBUSY); the first server again is taken.
 */
TEST_F(mig, pre_copy_offered)
{
	bool have = have_pre_copy();
	struct vu_server plain;
	uint64_t flags = 0;
	uint32_t v = 0;
	int dfd = -1;

	dev_start(_metadata, &self->a, dma_pre_args);
	dev_start(_metadata, &self->b, dma_args);
	ASSERT_EQ(0, mig_flags(self->a.fd, &flags));
	EXPECT_EQ(have ? PRE_COPY_FLAGS : OFFERED_FLAGS, flags);
	ASSERT_EQ(0, mig_flags(self->b.fd, &flags));
	EXPECT_EQ(OFFERED_FLAGS, flags);
	EXPECT_EQ(-EINVAL, mig_set(self->b.fd, ST_PRE_COPY, &dfd));
	EXPECT_EQ(-1, dfd);
	EXPECT_EQ(-EINVAL, mig_set(self->b.fd, ST_PRE_COPY_P2P, &dfd));
	EXPECT_EQ(ST_RUNNING, mig_state(self->b.fd));

	EXPECT_EQ(have ? 0 : -EINVAL, mig_set(self->a.fd, ST_PRE_COPY, &dfd));
	if (have) {
		EXPECT_LE(0, dfd);
		EXPECT_EQ(ST_PRE_COPY, mig_state(self->a.fd));
		/* running: registers work */
		ASSERT_EQ(0, wr32(self->a.fd, REG_SCRATCH, 0x600d));
		ASSERT_EQ(0, rd32(self->a.fd, REG_SCRATCH, &v));
		EXPECT_EQ(0x600d, v);
		ASSERT_EQ(0, mig_set(self->a.fd, ST_RUNNING, NULL));
		if (dfd >= 0) {
			/* the session is over */
			EXPECT_EQ(-1, read(dfd, &v, sizeof(v)));
			EXPECT_EQ(ENODEV, errno);
			close(dfd);
		}
	}

	ASSERT_EQ(0, vu_server_start(&plain, SAMPLE, dma_args));
	EXPECT_EQ(have ? -EBUSY : 0, vu_mdev_attach(self->a.uuid, &plain));
	vu_server_stop(&plain);
	ASSERT_EQ(0, vu_mdev_attach(self->a.uuid, &self->a.srv));
	ASSERT_EQ(0, mig_flags(self->a.fd, &flags));
	EXPECT_EQ(have ? PRE_COPY_FLAGS : OFFERED_FLAGS, flags);
	ASSERT_EQ(0, rd32(self->a.fd, REG_MAGIC, &v));
	EXPECT_EQ(DMA_MAGIC, v);
}

/*
 * mig_pre_copy=N (for servers that announce PRE_COPY without doing it, as
 * libvfio-user does for every device): a --pre-copy server attached then
 * gets STOP_COPY | P2P only, and PRE_COPY targets are EINVAL.
 */
TEST_F(mig, pre_copy_param_off)
{
	uint64_t flags = 0;
	int dfd = -1;

	ASSERT_NE(0, self->pre_copy[0]) TH_LOG("no %s", PRE_COPY_PARAM);
	ASSERT_EQ(0, vu_sysfs_write(PRE_COPY_PARAM, "N"));
	dev_start(_metadata, &self->a, dma_pre_args);
	ASSERT_EQ(0, mig_flags(self->a.fd, &flags));
	EXPECT_EQ(OFFERED_FLAGS, flags);
	EXPECT_EQ(-EINVAL, mig_set(self->a.fd, ST_PRE_COPY, &dfd));
	EXPECT_EQ(-1, dfd);
	EXPECT_EQ(ST_RUNNING, mig_state(self->a.fd));
}

/*
 * all_arcs with PRE_COPY and PRE_COPY_P2P offered: every pair of states
 * 0..8 against the core's FSM (STOP_COPY -> PRE_COPY* refused by it),
 * data fds only where a session starts, PRE_COPY* -> STOP_COPY going on
 * with the pre-copy fd to the end of the stream.
 */
TEST_F_TIMEOUT(mig, all_arcs_pre_copy, 400)
{
	if (!have_pre_copy())
		SKIP(return, "no PRE_COPY in the VFIO core before 6.2");
	dev_start(_metadata, &self->a, dma_pre_args);
	all_arcs_of(_metadata, self->a.fd, PRE_COPY_STATES);
}

/*
 * GET_PRECOPY_INFO answers in PRE_COPY and PRE_COPY_P2P: initial_bytes
 * more than 0 while the server has pre-copy data (the module reads one
 * chunk ahead, which read() then returns first), 0 once it is read (and
 * read() fails with ENOMSG), dirty_bytes 0. Elsewhere EINVAL: in
 * STOP_COPY on the same fd, on a STOP_COPY fd, on a RESUMING fd; an
 * argsz below the struct is EINVAL; after the session ENODEV.
 */
TEST_F_TIMEOUT(mig, precopy_info_states, 120)
{
	struct precopy_info info;
	uint64_t first;
	uint8_t *buf;
	size_t len = 0;
	ssize_t pre, rest;
	int dfd = -1, sfd = -1, rfd = -1;

	if (!have_pre_copy())
		SKIP(return, "no PRE_COPY in the VFIO core before 6.2");
	buf = malloc(STREAM_MAX);
	ASSERT_NE(NULL, buf);
	dev_start(_metadata, &self->a, null_pre_args);

	ASSERT_EQ(0, mig_set(self->a.fd, ST_PRE_COPY, &dfd));
	ASSERT_LE(0, dfd);
	ASSERT_EQ(0, precopy_info(dfd, &info));
	EXPECT_LT(0, info.initial_bytes);
	EXPECT_EQ(0, info.dirty_bytes);
	/* asked again: the same chunk, nothing read meanwhile */
	first = info.initial_bytes;
	ASSERT_EQ(0, precopy_info(dfd, &info));
	EXPECT_EQ(first, info.initial_bytes);
	info.argsz = 8;
	EXPECT_EQ(-1, ioctl(dfd, MIG_GET_PRECOPY_INFO, &info));
	EXPECT_EQ(EINVAL, errno);

	/* 7 bytes: what was read ahead is served first, and shrinks */
	ASSERT_EQ(7, read(dfd, buf, 7));
	len = 7;
	ASSERT_EQ(0, precopy_info(dfd, &info));
	pre = read_pre_copy(dfd, buf, STREAM_MAX, &len);
	ASSERT_LE(0, pre) TH_LOG("pre-copy read: %s", strerror(-pre));
	ksft_print_msg("pre-copy: %zu bytes\n", len);
	EXPECT_LT(0, len);
	ASSERT_EQ(0, precopy_info(dfd, &info));
	EXPECT_EQ(0, info.initial_bytes);
	EXPECT_EQ(0, info.dirty_bytes);
	EXPECT_EQ(-1, read(dfd, buf, 1));
	EXPECT_EQ(ENOMSG, errno);

	/* PRE_COPY_P2P: still pre-copy */
	ASSERT_EQ(0, mig_set(self->a.fd, ST_PRE_COPY_P2P, &sfd));
	EXPECT_EQ(-1, sfd);
	EXPECT_EQ(0, precopy_info(dfd, &info));

	/* STOP_COPY: the same fd, no info, the rest of the stream */
	ASSERT_EQ(0, mig_set(self->a.fd, ST_STOP_COPY, &sfd));
	EXPECT_EQ(-1, sfd);
	EXPECT_EQ(-EINVAL, precopy_info(dfd, &info));
	rest = drain(dfd);
	EXPECT_LT(0, rest);
	EXPECT_EQ(0, read(dfd, buf, 1));
	EXPECT_EQ(-EINVAL, precopy_info(dfd, &info));
	ASSERT_EQ(0, mig_set(self->a.fd, ST_STOP, NULL));
	EXPECT_EQ(-ENODEV, precopy_info(dfd, &info));
	close(dfd);

	/* a STOP_COPY session from STOP, and a RESUMING one: EINVAL */
	ASSERT_EQ(0, mig_set(self->a.fd, ST_STOP_COPY, &sfd));
	ASSERT_LE(0, sfd);
	EXPECT_EQ(-EINVAL, precopy_info(sfd, &info));
	ASSERT_EQ(0, mig_set(self->a.fd, ST_STOP, NULL));
	close(sfd);
	ASSERT_EQ(0, mig_set(self->a.fd, ST_RESUMING, &rfd));
	ASSERT_LE(0, rfd);
	EXPECT_EQ(-EINVAL, precopy_info(rfd, &info));
	close(rfd);
	ASSERT_EQ(0, ioctl(self->a.fd, VFIO_DEVICE_RESET));
	EXPECT_EQ(ST_RUNNING, mig_state(self->a.fd));
	free(buf);
}

/*
 * A pre-copy round trip between two null devices on two servers: BAR
 * memory and registers written on A, RUNNING -> PRE_COPY, the pre-copy
 * data read while A runs (the BARs' memory: most of the stream), then a
 * BAR and a register changed in PRE_COPY, -> STOP_COPY on the same fd,
 * the rest read to the end. B loads the whole stream: it shows A's state
 * with the changes made during pre-copy.
 */
TEST_F_TIMEOUT(mig, pre_copy_round_trip, 180)
{
	uint8_t pat[4096], got[4096];
	struct precopy_info info;
	uint8_t *stream;
	size_t len = 0, pre;
	uint64_t v = 0;
	unsigned int j;
	ssize_t r;
	int dfd = -1, sfd = -1;

	if (!have_pre_copy())
		SKIP(return, "no PRE_COPY in the VFIO core before 6.2");
	stream = malloc(STREAM_MAX);
	ASSERT_NE(NULL, stream);
	dev_start(_metadata, &self->a, null_pre_args);
	dev_start(_metadata, &self->b, null_pre_args);

	for (j = 0; j < sizeof(pat); j++)
		pat[j] = (uint8_t)(j * 7 + 3);
	ASSERT_EQ(0, bar_wr(self->a.fd, 2, 0x30000, pat, sizeof(pat)));
	ASSERT_EQ(0, bar_wr(self->a.fd, 4, 0x2000, pat, sizeof(pat)));
	ASSERT_EQ(0, wr64(self->a.fd, NULL_REG_SCRATCH, 0x1111222233334444ULL));

	ASSERT_EQ(0, mig_set(self->a.fd, ST_PRE_COPY, &dfd));
	ASSERT_LE(0, dfd);
	ASSERT_EQ(0, precopy_info(dfd, &info));
	EXPECT_LT(0, info.initial_bytes);
	r = read_pre_copy(dfd, stream, STREAM_MAX, &len);
	ASSERT_LE(0, r) TH_LOG("pre-copy read: %s", strerror(-r));
	pre = len;
	EXPECT_LT(2 * sizeof(pat), pre);
	/* the device runs in PRE_COPY: changes after the pre-copy data */
	for (j = 0; j < sizeof(pat); j++)
		pat[j] = (uint8_t)(j * 11 + 5);
	ASSERT_EQ(0, bar_wr(self->a.fd, 2, 0x30000, pat, sizeof(pat)));
	ASSERT_EQ(0, wr64(self->a.fd, NULL_REG_SCRATCH, 0x5555666677778888ULL));
	ASSERT_EQ(0, mig_set(self->a.fd, ST_STOP_COPY, &sfd));
	EXPECT_EQ(-1, sfd);
	for (;;) {
		ASSERT_GT(STREAM_MAX, len);
		r = read(dfd, stream + len, CHUNK);
		ASSERT_LE(0, r) TH_LOG("STOP_COPY read: %m");
		if (!r)
			break;
		len += r;
	}
	ksft_print_msg("pre-copy %zu bytes, STOP_COPY %zu bytes\n", pre,
		       len - pre);
	EXPECT_LT(pre, len);
	ASSERT_EQ(0, mig_set(self->a.fd, ST_STOP, NULL));
	close(dfd);

	load(_metadata, self->b.fd, stream, len);
	ASSERT_EQ(0, mig_set(self->b.fd, ST_RUNNING, NULL));
	ASSERT_EQ(0, rd64(self->b.fd, NULL_REG_SCRATCH, &v));
	EXPECT_EQ(0x5555666677778888ULL, v);
	ASSERT_EQ(0, bar_rd(self->b.fd, 2, 0x30000, got, sizeof(got)));
	EXPECT_EQ(0, memcmp(pat, got, sizeof(got)));
	for (j = 0; j < sizeof(pat); j++)
		pat[j] = (uint8_t)(j * 7 + 3);
	ASSERT_EQ(0, bar_rd(self->b.fd, 4, 0x2000, got, sizeof(got)));
	EXPECT_EQ(0, memcmp(pat, got, sizeof(got)));

	/* the pre-copy part alone is no state: refused, B unchanged */
	ASSERT_EQ(0, mig_set(self->b.fd, ST_RESUMING, &dfd));
	ASSERT_LE(0, dfd);
	ASSERT_EQ(0, write_stream(dfd, stream, pre));
	EXPECT_NE(0, mig_set(self->b.fd, ST_STOP, NULL));
	close(dfd);
	ASSERT_EQ(0, ioctl(self->b.fd, VFIO_DEVICE_RESET));
	free(stream);
}

/*
 * The server is killed in PRE_COPY after part of the pre-copy data was
 * read: the next read fails within the bound, GET_PRECOPY_INFO fails, the
 * device reports ERROR; a reset and a fresh server recover it, PRE_COPY
 * offered again.
 */
TEST_F_TIMEOUT(mig, server_killed_in_pre_copy, 120)
{
	struct precopy_info info;
	uint8_t b[CHUNK];
	double t0, dt;
	ssize_t r;
	int dfd = -1, ret;

	if (!have_pre_copy())
		SKIP(return, "no PRE_COPY in the VFIO core before 6.2");
	__dev_start(_metadata, &self->a, SAMPLE, false, dma_pre_args,
		    KILL_TIMEOUT_MS, NULL);
	ASSERT_EQ(0, mig_set(self->a.fd, ST_PRE_COPY, &dfd));
	ASSERT_LE(0, dfd);
	ASSERT_EQ(16, read(dfd, b, 16));
	ASSERT_EQ(0, vu_server_signal(&self->a.srv, SIGKILL));

	t0 = vu_now();
	r = read(dfd, b, sizeof(b));
	dt = vu_now() - t0;
	/* (what was read ahead may come first) */
	if (r > 0)
		r = read(dfd, b, sizeof(b));
	EXPECT_EQ(-1, r) TH_LOG("read %zd bytes from a dead server", r);
	EXPECT_NE(ENOMSG, errno);
	ksft_print_msg("read after the kill: %s in %.2f s\n",
		       r < 0 ? strerror(errno) : "no error", dt);
	EXPECT_GT(KILL_TIMEOUT_MS / 1000.0 + 2, vu_now() - t0);
	EXPECT_NE(0, precopy_info(dfd, &info));
	EXPECT_EQ(ST_ERROR, mig_state(self->a.fd));

	t0 = vu_now();
	ret = mig_set(self->a.fd, ST_STOP_COPY, NULL);
	EXPECT_NE(0, ret);
	EXPECT_GT(KILL_TIMEOUT_MS / 1000.0 + 2, vu_now() - t0);
	EXPECT_EQ(-1, read(dfd, b, sizeof(b)));
	close(dfd);
	recover_after_kill_flags(_metadata, &self->a, PRE_COPY_FLAGS);
	/* and pre-copies again */
	ASSERT_EQ(0, mig_set(self->a.fd, ST_PRE_COPY, &dfd));
	ASSERT_LE(0, dfd);
	ASSERT_EQ(0, precopy_info(dfd, &info));
	EXPECT_LT(0, info.initial_bytes);
	close(dfd);
	ASSERT_EQ(0, mig_set(self->a.fd, ST_RUNNING, NULL));
}

TEST_HARNESS_MAIN
