// SPDX-License-Identifier: GPL-2.0-only
/*
 * The in-kernel vfio-user client against the sample servers: attach and
 * detach, device/region/IRQ info, region accesses, server DMA with an
 * MSI-X completion, server death and hang, re-attach under an open
 * consumer, removal under a consumer (REQ), many devices and threads.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/capability.h>
#include <linux/vfio.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "vfio_user_util.h"

/* The DMA sample's PCI identity and BAR0 registers (tools/vfio-user/dma.c). */
#define DMA_VENDOR		0x4e58
#define DMA_DEVICE		0x0001
#define REG_MAGIC		0x00
#define REG_SRC			0x08
#define REG_DST			0x10
#define REG_LEN			0x18
#define REG_DOORBELL		0x20
#define REG_STATUS		0x24
#define REG_ERROR		0x28
#define REG_IRQ_CTRL		0x2c
#define REG_SCRATCH		0x40
#define REG_PROGRESS		0x68
#define REG_STEP		0x70
#define REG_STEPS		0x74
#define DOORBELL_ASYNC		4
#define DMA_MAGIC		0x31414d44
#define STATUS_BUSY		1
#define STATUS_DONE		2
#define STATUS_ERROR		3
#define DMA_BAR0_SIZE		4096
#define DMA_MSIX_VECTORS	4

#define SAMPLE			"vfio-user-sample"
#define XFER_PARAM	"/sys/module/vfio_user_mdev/parameters/max_data_xfer_size"
#define POLL_PARAM	"/sys/module/vfio_user_mdev/parameters/poll_us"

static const char *const dma_args[] = { "--device", "dma", NULL };

static int region_offset(int fd, unsigned int index, uint64_t *off,
			 uint64_t *size)
{
	struct vfio_region_info info = { .argsz = sizeof(info), .index = index };

	if (ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, &info))
		return -errno;
	*off = info.offset;
	if (size)
		*size = info.size;
	return 0;
}

/* Region accesses of exactly @len bytes; -errno on failure. */
static int __rd(int fd, unsigned int index, uint64_t at, void *buf, size_t len)
{
	return vu_region_read(fd, index, at, buf, len);
}

static int __wr(int fd, unsigned int index, uint64_t at, const void *buf,
		size_t len)
{
	return vu_region_write(fd, index, at, buf, len);
}

static int __bar_read32(int fd, uint64_t reg, uint32_t *val)
{
	return __rd(fd, VFIO_PCI_BAR0_REGION_INDEX, reg, val, 4);
}

static int __bar_read64(int fd, uint64_t reg, uint64_t *val)
{
	return __rd(fd, VFIO_PCI_BAR0_REGION_INDEX, reg, val, 8);
}

static int __bar_write32(int fd, uint64_t reg, uint32_t val)
{
	return __wr(fd, VFIO_PCI_BAR0_REGION_INDEX, reg, &val, 4);
}

static int __bar_write64(int fd, uint64_t reg, uint64_t val)
{
	return __wr(fd, VFIO_PCI_BAR0_REGION_INDEX, reg, &val, 8);
}

static int set_eventfds(int fd, unsigned int index, unsigned int start,
			unsigned int count, const int *efds)
{
	char buf[sizeof(struct vfio_irq_set) + 16 * sizeof(int)];
	struct vfio_irq_set *set = (void *)buf;

	set->argsz = sizeof(*set) + count * sizeof(int);
	set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
	set->index = index;
	set->start = start;
	set->count = count;
	memcpy(set->data, efds, count * sizeof(int));
	return ioctl(fd, VFIO_DEVICE_SET_IRQS, set) ? -errno : 0;
}

/* Sets the MSI-X enable bit in config space, as a guest driver does. */
static int msix_enable(int fd)
{
	uint8_t cap = 0, id;
	uint16_t ctrl;
	int ret, hops = 0;

	ret = __rd(fd, VFIO_PCI_CONFIG_REGION_INDEX, 0x34, &cap, 1);
	while (!ret && cap && hops++ < 48) {
		ret = __rd(fd, VFIO_PCI_CONFIG_REGION_INDEX, cap, &id, 1);
		if (ret)
			break;
		if (id == 0x11) {
			ret = __rd(fd, VFIO_PCI_CONFIG_REGION_INDEX, cap + 2,
				   &ctrl, 2);
			if (ret)
				return ret;
			ctrl |= 0x8000;
			return __wr(fd, VFIO_PCI_CONFIG_REGION_INDEX, cap + 2,
				    &ctrl, 2);
		}
		ret = __rd(fd, VFIO_PCI_CONFIG_REGION_INDEX, cap + 1, &cap, 1);
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

static int dma_map(int container, void *vaddr, uint64_t iova, uint64_t size)
{
	return vu_dma_map(container, vaddr, iova, size,
			  VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE);
}

static int dma_unmap(int container, uint64_t iova, uint64_t size)
{
	return vu_dma_unmap(container, iova, size);
}

/* Programs one copy and rings the doorbell; returns the final status. */
static int dma_copy(int fd, uint64_t src, uint64_t dst, uint64_t len)
{
	int ret;

	ret = __bar_write64(fd, REG_SRC, src);
	ret = ret ? ret : __bar_write64(fd, REG_DST, dst);
	ret = ret ? ret : __bar_write64(fd, REG_LEN, len);
	ret = ret ? ret : __bar_write32(fd, REG_IRQ_CTRL, 1);
	ret = ret ? ret : __bar_write32(fd, REG_DOORBELL, 1);
	return ret;
}

FIXTURE(client) {
	struct vu_server srv;
	bool srv_stopped;	/* SIGSTOPped: teardown continues it first */
	pid_t kids[8];		/* writer processes teardown kills */
	char uuid[VU_UUID_LEN + 1];
	int container, group, fd;
};

FIXTURE_SETUP(client)
{
	int ret;

	self->fd = self->group = self->container = -1;
	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	ret = vu_server_start(&self->srv, SAMPLE, dma_args);
	if (ret == -ENOENT)
		SKIP(return, "sample server not built");
	ASSERT_EQ(0, ret);
	vu_uuid_gen(self->uuid);
	ASSERT_EQ(0, vu_mdev_create(self->uuid));
}

FIXTURE_TEARDOWN(client)
{
	unsigned int i;

	/* A write blocked on a stopped server would hold up the removal. */
	for (i = 0; i < ARRAY_SIZE(self->kids); i++)
		if (self->kids[i] > 0) {
			kill(self->kids[i], SIGKILL);
			waitpid(self->kids[i], NULL, 0);
		}
	if (self->srv_stopped)
		vu_server_signal(&self->srv, SIGCONT);
	vu_consumer_teardown(self->uuid, &self->fd, &self->group,
			     &self->container);
	/* (max_data_xfer_size_param and poll_us_param change them) */
	if (!access(XFER_PARAM, W_OK))
		vu_sysfs_write(XFER_PARAM, "1048576");
	if (!access(POLL_PARAM, W_OK))
		vu_sysfs_write(POLL_PARAM, "0");
	vu_server_stop(&self->srv);
}

static void open_dev(struct __test_metadata *_metadata,
		     FIXTURE_DATA(client) *self)
{
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
	self->fd = vu_vfio_open(self->uuid, &self->container, &self->group);
	ASSERT_LE(0, self->fd);
}

static void expect_state(struct __test_metadata *_metadata, const char *uuid,
			 const char *prefix)
{
	char buf[160];

	ASSERT_EQ(0, vu_mdev_attr_read(uuid, "state", buf, sizeof(buf)));
	EXPECT_EQ(0, strncmp(buf, prefix, strlen(prefix)))
		TH_LOG("state is '%s', expected '%s...'", buf, prefix);
}

TEST_F(client, attach_and_detach)
{
	char buf[160];

	expect_state(_metadata, self->uuid, "detached");
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
	expect_state(_metadata, self->uuid, "ready");
	ASSERT_EQ(0, vu_mdev_attr_read(self->uuid, "socket", buf, sizeof(buf)));
	EXPECT_STREQ(self->srv.socket, buf);

	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "socket", "\n"));
	expect_state(_metadata, self->uuid, "detached");
	/* Kept in self->fd: a wrongly opened device must not block teardown. */
	self->fd = vu_vfio_open(self->uuid, &self->container, &self->group);
	EXPECT_EQ(-ENOTCONN, self->fd);
	/* The server takes the next client: attach again. */
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
	expect_state(_metadata, self->uuid, "ready");
}

/*
 * mdevctl and libvirt write the top-level name: an attach through it is
 * seen under vfio_user/ (the alias), a detach through the alias at the
 * top level.
 */
TEST_F(client, attach_through_top_level_name)
{
	char path[256], buf[160];

	snprintf(path, sizeof(path), VU_MDEV_DIR "/%s/socket", self->uuid);
	ASSERT_EQ(0, vu_sysfs_write(path, self->srv.socket));
	expect_state(_metadata, self->uuid, "ready");
	ASSERT_EQ(0, vu_mdev_attr_read(self->uuid, "socket", buf, sizeof(buf)));
	EXPECT_STREQ(self->srv.socket, buf);

	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "socket", "\n"));
	snprintf(path, sizeof(path), VU_MDEV_DIR "/%s/state", self->uuid);
	ASSERT_EQ(0, vu_sysfs_read(path, buf, sizeof(buf)));
	EXPECT_STREQ("detached", buf);
	snprintf(path, sizeof(path), VU_MDEV_DIR "/%s/socket", self->uuid);
	ASSERT_EQ(0, vu_sysfs_read(path, buf, sizeof(buf)));
	EXPECT_STREQ("", buf);
}

TEST_F(client, attach_bad_paths)
{
	char dir[] = "/tmp/vu-dirXXXXXX", file[64], link[64], buf[160];
	int fd;

	ASSERT_NE(NULL, mkdtemp(dir));
	snprintf(file, sizeof(file), "%s/file", dir);
	snprintf(link, sizeof(link), "%s/link", dir);
	fd = open(file, O_CREAT | O_WRONLY, 0600);
	ASSERT_LE(0, fd);
	close(fd);
	ASSERT_EQ(0, symlink(file, link));

	EXPECT_EQ(-ENOENT, vu_mdev_attr_write(self->uuid, "socket",
					      "/tmp/vu-no-such.sock"));
	EXPECT_EQ(-ECONNREFUSED, vu_mdev_attr_write(self->uuid, "socket", dir));
	EXPECT_EQ(-ECONNREFUSED, vu_mdev_attr_write(self->uuid, "socket", file));
	EXPECT_EQ(-ECONNREFUSED, vu_mdev_attr_write(self->uuid, "socket", link));
	expect_state(_metadata, self->uuid, "detached");
	/* A failed attach leaves no path behind. */
	ASSERT_EQ(0, vu_mdev_attr_read(self->uuid, "socket", buf, sizeof(buf)));
	EXPECT_STREQ("", buf);

	unlink(link);
	unlink(file);
	rmdir(dir);
}

/* Only CAP_SYS_ADMIN attaches: uid 0 without it gets EPERM. */
TEST_F(client, attach_needs_cap_sys_admin)
{
	pid_t pid;
	int status;

	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		struct __user_cap_header_struct h = {
			.version = _LINUX_CAPABILITY_VERSION_3,
		};
		struct __user_cap_data_struct d[2];

		if (syscall(SYS_capget, &h, d))
			_exit(2);
		d[CAP_SYS_ADMIN / 32].effective &= ~(1U << (CAP_SYS_ADMIN % 32));
		if (syscall(SYS_capset, &h, d))
			_exit(3);
		_exit(vu_mdev_attach(self->uuid, &self->srv) == -EPERM ? 0 : 1);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_EQ(0, WEXITSTATUS(status));
	expect_state(_metadata, self->uuid, "detached");
}

TEST_F(client, device_region_irq_info)
{
	struct vfio_device_info dinfo = { .argsz = sizeof(dinfo) };
	struct vfio_irq_info iinfo = { .argsz = sizeof(iinfo) };
	uint64_t off = 0, size = 0;
	uint16_t ids[2];

	open_dev(_metadata, self);
	ASSERT_EQ(0, ioctl(self->fd, VFIO_DEVICE_GET_INFO, &dinfo));
	EXPECT_TRUE(dinfo.flags & VFIO_DEVICE_FLAGS_PCI);
	EXPECT_LE(VFIO_PCI_NUM_REGIONS, dinfo.num_regions);
	EXPECT_EQ(VFIO_PCI_NUM_IRQS, dinfo.num_irqs);

	ASSERT_EQ(0, region_offset(self->fd, VFIO_PCI_CONFIG_REGION_INDEX,
				   &off, &size));
	EXPECT_LE(256, size);
	ASSERT_EQ(0, region_offset(self->fd, VFIO_PCI_BAR0_REGION_INDEX,
				   &off, &size));
	EXPECT_EQ(DMA_BAR0_SIZE, size);

	ASSERT_EQ(0, __rd(self->fd, VFIO_PCI_CONFIG_REGION_INDEX, 0, ids, 4));
	EXPECT_EQ(DMA_VENDOR, ids[0]);
	EXPECT_EQ(DMA_DEVICE, ids[1]);

	iinfo.index = VFIO_PCI_MSIX_IRQ_INDEX;
	ASSERT_EQ(0, ioctl(self->fd, VFIO_DEVICE_GET_IRQ_INFO, &iinfo));
	EXPECT_EQ(DMA_MSIX_VECTORS, iinfo.count);
	iinfo.index = VFIO_PCI_REQ_IRQ_INDEX;
	ASSERT_EQ(0, ioctl(self->fd, VFIO_DEVICE_GET_IRQ_INFO, &iinfo));
	EXPECT_EQ(1, iinfo.count);
	iinfo.index = VFIO_PCI_NUM_IRQS;
	EXPECT_EQ(-1, ioctl(self->fd, VFIO_DEVICE_GET_IRQ_INFO, &iinfo));
	EXPECT_EQ(EINVAL, errno);
}

TEST_F(client, bar_access)
{
	uint64_t off = 0, size = 0;
	uint32_t v = 0;
	char big[64];

	open_dev(_metadata, self);
	ASSERT_EQ(0, __bar_read32(self->fd, REG_MAGIC, &v));
	EXPECT_EQ(DMA_MAGIC, v);
	ASSERT_EQ(0, __bar_write32(self->fd, REG_SCRATCH, 0x12345678));
	ASSERT_EQ(0, __bar_read32(self->fd, REG_SCRATCH, &v));
	EXPECT_EQ(0x12345678, v);

	/* Past the end of the region, and an index that does not exist. */
	ASSERT_EQ(0, region_offset(self->fd, VFIO_PCI_BAR0_REGION_INDEX,
				   &off, &size));
	EXPECT_EQ(-1, pread(self->fd, big, sizeof(big), off + size - 4));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, pread(self->fd, big, 4, (uint64_t)60 << 40));
	EXPECT_EQ(EINVAL, errno);

	/* The client checks the range itself: a stopped server is not asked. */
	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGSTOP));
	EXPECT_EQ(-1, pread(self->fd, big, sizeof(big), off + size - 4));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, pwrite(self->fd, big, sizeof(big), off + size - 4));
	EXPECT_EQ(EINVAL, errno);
	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGCONT));
	expect_state(_metadata, self->uuid, "ready");
}

/* Voluntary context switches per BAR read of the calling thread. */
static double sleeps_per_read(int fd, int n)
{
	struct rusage a, b;
	uint32_t v;
	int i;

	getrusage(RUSAGE_THREAD, &a);
	for (i = 0; i < n; i++)
		if (__bar_read32(fd, REG_MAGIC, &v) || v != DMA_MAGIC)
			return -1;
	getrusage(RUSAGE_THREAD, &b);
	return (double)(b.ru_nvcsw - a.ru_nvcsw) / n;
}

/*
 * The poll_us parameter: bounds checked; with the server on another CPU
 * a consumer without it sleeps for every reply, and with it spins for the
 * reply and does not sleep. The sleeps are counted, nothing is timed; an
 * otherwise idle VM is assumed (any runnable task on the consumer's CPU
 * ends the spin).
 */
TEST_F(client, poll_us_param)
{
	cpu_set_t all, srv, one, other;
	int a = -1, b = -1, i;
	unsigned long v;
	double off, on;

	ASSERT_EQ(0, vu_sysfs_read_ul(POLL_PARAM, &v));
	EXPECT_EQ(0, v);
	EXPECT_EQ(-EINVAL, vu_sysfs_write(POLL_PARAM, "1000001"));
	EXPECT_EQ(-EINVAL, vu_sysfs_write(POLL_PARAM, "soon"));

	/* Two CPUs we may use: the consumer on one, the server on the other. */
	ASSERT_EQ(0, sched_getaffinity(0, sizeof(all), &all));
	for (i = 0; i < CPU_SETSIZE && b < 0; i++) {
		if (!CPU_ISSET(i, &all))
			continue;
		if (a < 0)
			a = i;
		else
			b = i;
	}
	if (b < 0)
		SKIP(return, "needs two CPUs");

	open_dev(_metadata, self);
	ASSERT_EQ(0, sched_getaffinity(self->srv.pid, sizeof(srv), &srv));
	CPU_ZERO(&one);
	CPU_SET(a, &one);
	CPU_ZERO(&other);
	CPU_SET(b, &other);
	ASSERT_EQ(0, sched_setaffinity(self->srv.pid, sizeof(other), &other));
	ASSERT_EQ(0, sched_setaffinity(0, sizeof(one), &one));

	off = sleeps_per_read(self->fd, 200);
	ASSERT_EQ(0, vu_sysfs_write(POLL_PARAM, "1000000"));
	/*
	 * Any task runnable on the consumer's CPU ends a spin: on a busy
	 * (debug) kernel kworkers do. The best of three runs counts.
	 */
	for (i = 0, on = 2; i < 3 && on > 0.5; i++) {
		double r = sleeps_per_read(self->fd, 200);

		if (r < on)
			on = r;
	}
	EXPECT_EQ(0, vu_sysfs_write(POLL_PARAM, "0"));
	sched_setaffinity(0, sizeof(all), &all);
	sched_setaffinity(self->srv.pid, sizeof(srv), &srv);

	TH_LOG("sleeps per read: %.2f without polling, %.2f with", off, on);
	ASSERT_LE(0, off);
	ASSERT_LE(0, on);
	EXPECT_LE(0.9, off);
	EXPECT_GE(0.5, on);
}

/*
 * The max_data_xfer_size parameter: bounds checked; what we announce at the
 * next attach; the smaller of both sides is used, and a DMA copy in
 * messages of that size works (the sample's copy is 8 MiB, in 4 MiB
 * DMA_READ/DMA_WRITE pairs).
 */
TEST_F(client, max_data_xfer_size_param)
{
	static const char *const big_args[] = {
		"--device", "dma", "--max-xfer", "4M", NULL,
	};
	const size_t sz = 8 << 20;
	struct vu_server big = { 0 };
	uint32_t status = 0;
	unsigned long v;
	uint8_t *buf;
	int kmsg;
	size_t i;

	ASSERT_EQ(0, vu_sysfs_read_ul(XFER_PARAM, &v));
	EXPECT_EQ(1 << 20, v);
	EXPECT_EQ(-EINVAL, vu_sysfs_write(XFER_PARAM, "4095"));
	EXPECT_EQ(-EINVAL, vu_sysfs_write(XFER_PARAM, "16777217"));
	EXPECT_EQ(-EINVAL, vu_sysfs_write(XFER_PARAM, "lots"));
	ASSERT_EQ(0, vu_sysfs_write(XFER_PARAM, "4194304"));

	kmsg = vu_kmsg_open();
	ASSERT_LE(0, kmsg);
	/* the default server (1 MiB) lowers it */
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
	EXPECT_TRUE(vu_kmsg_has(kmsg, "max_data_xfer_size 1048576,"));
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "socket", "\n"));

	ASSERT_EQ(0, vu_server_start(&big, SAMPLE, big_args));
	lseek(kmsg, 0, SEEK_END);
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &big));
	EXPECT_TRUE(vu_kmsg_has(kmsg, "max_data_xfer_size 4194304,"));
	close(kmsg);
	/* back to the default for the tests after this one */
	EXPECT_EQ(0, vu_sysfs_write(XFER_PARAM, "1048576"));

	self->fd = vu_vfio_open(self->uuid, &self->container, &self->group);
	ASSERT_LE(0, self->fd);
	buf = mmap(NULL, 2 * sz, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, buf);
	for (i = 0; i < sz; i++)
		buf[i] = i * 13 + 1;
	ASSERT_EQ(0, dma_map(self->container, buf, 1ULL << 32, 2 * sz));
	ASSERT_EQ(0, __bar_write32(self->fd, REG_IRQ_CTRL, 0));
	ASSERT_EQ(0, dma_copy(self->fd, 1ULL << 32, (1ULL << 32) + sz, sz));
	ASSERT_EQ(0, __bar_read32(self->fd, REG_STATUS, &status));
	EXPECT_EQ(STATUS_DONE, status);
	EXPECT_EQ(0, memcmp(buf, buf + sz, sz));
	vu_consumer_teardown(self->uuid, &self->fd, &self->group,
			     &self->container);
	munmap(buf, 2 * sz);
	vu_server_stop(&big);
}

TEST_F(client, dma_copy_with_msix)
{
	const size_t sz = 1 << 20;
	uint32_t status = 0, err = 0;
	uint8_t *buf;
	int efd;
	size_t i;

	open_dev(_metadata, self);
	buf = mmap(NULL, 2 * sz, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, buf);
	for (i = 0; i < sz; i++)
		buf[i] = i * 7 + 3;
	memset(buf + sz, 0, sz);
	ASSERT_EQ(0, dma_map(self->container, buf, 1ULL << 32, 2 * sz));

	efd = eventfd(0, EFD_CLOEXEC);
	ASSERT_LE(0, efd);
	ASSERT_EQ(0, msix_enable(self->fd));
	ASSERT_EQ(0, set_eventfds(self->fd, VFIO_PCI_MSIX_IRQ_INDEX, 0, 1, &efd));

	ASSERT_EQ(0, dma_copy(self->fd, 1ULL << 32, (1ULL << 32) + sz, sz));
	ASSERT_EQ(0, wait_eventfd(efd, 20000));
	ASSERT_EQ(0, __bar_read32(self->fd, REG_STATUS, &status));
	EXPECT_EQ(STATUS_DONE, status);
	EXPECT_EQ(0, memcmp(buf, buf + sz, sz));

	/* After the unmap the server cannot reach the memory any more. */
	ASSERT_EQ(0, dma_unmap(self->container, 1ULL << 32, 2 * sz));
	memset(buf + sz, 0xee, sz);
	ASSERT_EQ(0, dma_copy(self->fd, 1ULL << 32, (1ULL << 32) + sz, 4096));
	ASSERT_EQ(0, wait_eventfd(efd, 20000));
	ASSERT_EQ(0, __bar_read32(self->fd, REG_STATUS, &status));
	EXPECT_EQ(STATUS_ERROR, status);
	ASSERT_EQ(0, __bar_read32(self->fd, REG_ERROR, &err));
	EXPECT_NE(0, err);
	EXPECT_EQ(0xee, buf[sz]);
	expect_state(_metadata, self->uuid, "ready");
	close(efd);
	munmap(buf, 2 * sz);
}

/* SET_IRQS of INTx vector 0 with one eventfd (-1: none) for @action. */
static int intx_set_eventfd(int fd, uint32_t action, int efd)
{
	char buf[sizeof(struct vfio_irq_set) + sizeof(int)];
	struct vfio_irq_set *set = (void *)buf;

	set->argsz = sizeof(buf);
	set->flags = VFIO_IRQ_SET_DATA_EVENTFD | action;
	set->index = VFIO_PCI_INTX_IRQ_INDEX;
	set->start = 0;
	set->count = 1;
	memcpy(set->data, &efd, sizeof(efd));
	return ioctl(fd, VFIO_DEVICE_SET_IRQS, set) ? -errno : 0;
}

/* SET_IRQS DATA_NONE of INTx: @count 1 acts on vector 0, 0 disables. */
static int intx_set_none(int fd, uint32_t action, uint32_t count)
{
	struct vfio_irq_set set = {
		.argsz = sizeof(set),
		.flags = VFIO_IRQ_SET_DATA_NONE | action,
		.index = VFIO_PCI_INTX_IRQ_INDEX,
		.count = count,
	};

	return ioctl(fd, VFIO_DEVICE_SET_IRQS, &set) ? -errno : 0;
}

/*
 * Makes the DMA sample raise its interrupt: a copy of LEN 0 moves nothing
 * and completes with the completion interrupt (INTx, as no MSI-X or MSI
 * eventfd is set), which the server signals before it answers the doorbell
 * write.
 */
static int dma_raise_irq(int fd)
{
	int ret;

	ret = __bar_write64(fd, REG_LEN, 0);
	ret = ret ? ret : __bar_write32(fd, REG_IRQ_CTRL, 1);
	ret = ret ? ret : __bar_write32(fd, REG_DOORBELL, 1);
	return ret;
}

/* What a non-blocking eventfd holds (and clears it): 0 when empty. */
static int64_t eventfd_take(int efd)
{
	uint64_t v;

	if (read(efd, &v, sizeof(v)) == sizeof(v))
		return v;
	return errno == EAGAIN ? 0 : -errno;
}

static int eventfd_signal(int efd)
{
	uint64_t one = 1;

	return write(efd, &one, sizeof(one)) == sizeof(one) ? 0 : -errno;
}

/* An unmask eventfd once seen, an interrupt still pending: 2 s under TCG. */
#define INTX_UNMASK_MS		2000
/* Long enough to tell "no interrupt" when one would come at once. */
#define INTX_QUIET_MS		200

/*
 * Sets @trig as INTx trigger and @unmask as its unmask eventfd, raises
 * INTx once (delivered, then automasked) and again (pending).
 */
static void intx_masked_pending(struct __test_metadata *_metadata, int fd,
				int trig, int unmask)
{
	ASSERT_EQ(0, intx_set_eventfd(fd, VFIO_IRQ_SET_ACTION_TRIGGER, trig));
	ASSERT_EQ(0, intx_set_eventfd(fd, VFIO_IRQ_SET_ACTION_UNMASK, unmask));
	ASSERT_EQ(0, dma_raise_irq(fd));
	ASSERT_EQ(0, wait_eventfd(trig, 5000)) TH_LOG("no first INTx");
	/* automasked: the next one stays pending */
	ASSERT_EQ(0, dma_raise_irq(fd));
	ASSERT_EQ(-ETIMEDOUT, wait_eventfd(trig, INTX_QUIET_MS))
		TH_LOG("INTx was not automasked");
}

/*
 * The consumer as KVM: INTx arrives on the trigger eventfd and is masked
 * until the guest's EOI, at which KVM signals the unmask eventfd (its
 * resamplefd). Signalling it must unmask INTx at the server, so that an
 * interrupt raised while masked arrives then. (The vfio-user spec has the
 * server signal such an eventfd instead; a module that only passed it on
 * would leave the interrupt pending for ever.)
 */
TEST_F(client, intx_unmask_eventfd)
{
	int trig, unmask, round;
	double t0, dt;

	open_dev(_metadata, self);
	trig = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	unmask = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	ASSERT_LE(0, trig);
	ASSERT_LE(0, unmask);
	intx_masked_pending(_metadata, self->fd, trig, unmask);

	for (round = 0; round < 3; round++) {
		/* the guest's EOI: the pending interrupt arrives, masked again */
		t0 = vu_now();
		ASSERT_EQ(0, eventfd_signal(unmask));
		ASSERT_EQ(0, wait_eventfd(trig, INTX_UNMASK_MS))
			TH_LOG("round %d: no pending INTx %d ms after the unmask eventfd",
			       round, INTX_UNMASK_MS);
		dt = vu_now() - t0;
		TH_LOG("round %d: pending INTx %.1f ms after the unmask eventfd",
		       round, dt * 1e3);
		/* the module consumed the signal as it took it */
		EXPECT_EQ(0, eventfd_take(unmask));
		ASSERT_EQ(0, dma_raise_irq(self->fd));
		ASSERT_EQ(-ETIMEDOUT, wait_eventfd(trig, INTX_QUIET_MS))
			TH_LOG("round %d: INTx was not automasked", round);
	}

	/* An EOI with nothing pending unmasks: the next INTx comes at once. */
	ASSERT_EQ(0, eventfd_signal(unmask));
	ASSERT_EQ(0, wait_eventfd(trig, INTX_UNMASK_MS));
	ASSERT_EQ(0, eventfd_signal(unmask));
	EXPECT_EQ(-ETIMEDOUT, wait_eventfd(trig, INTX_QUIET_MS));
	ASSERT_EQ(0, dma_raise_irq(self->fd));
	EXPECT_EQ(0, wait_eventfd(trig, INTX_UNMASK_MS));
	expect_state(_metadata, self->uuid, "ready");
	close(unmask);
	close(trig);
}

/*
 * An unmask eventfd set to -1, or dropped with the INTx trigger (DATA_NONE
 * count 0): the module stops waiting on it. A signal then stays in the
 * eventfd, unmasks nothing, and an UNMASK ioctl still works.
 */
TEST_F(client, intx_unmask_eventfd_unassigned)
{
	int trig, unmask;

	open_dev(_metadata, self);
	trig = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	unmask = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	ASSERT_LE(0, trig);
	ASSERT_LE(0, unmask);
	intx_masked_pending(_metadata, self->fd, trig, unmask);

	ASSERT_EQ(0, intx_set_eventfd(self->fd, VFIO_IRQ_SET_ACTION_UNMASK, -1));
	ASSERT_EQ(0, eventfd_signal(unmask));
	EXPECT_EQ(-ETIMEDOUT, wait_eventfd(trig, INTX_QUIET_MS))
		TH_LOG("a signal of the unassigned unmask eventfd unmasked INTx");
	EXPECT_EQ(1, eventfd_take(unmask));
	/* the consumer's own unmask */
	ASSERT_EQ(0, intx_set_none(self->fd, VFIO_IRQ_SET_ACTION_UNMASK, 1));
	ASSERT_EQ(0, wait_eventfd(trig, INTX_UNMASK_MS))
		TH_LOG("the pending INTx did not arrive after an UNMASK ioctl");

	/* Assigned again, it is waited on (the signal is taken)... */
	ASSERT_EQ(0, intx_set_eventfd(self->fd, VFIO_IRQ_SET_ACTION_UNMASK,
				      unmask));
	ASSERT_EQ(0, eventfd_signal(unmask));
	EXPECT_EQ(0, eventfd_take(unmask));
	/* ...until INTx is disabled, which drops it. */
	ASSERT_EQ(0, intx_set_none(self->fd, VFIO_IRQ_SET_ACTION_TRIGGER, 0));
	ASSERT_EQ(0, eventfd_signal(unmask));
	usleep(INTX_QUIET_MS * 1000);
	EXPECT_EQ(1, eventfd_take(unmask));
	EXPECT_EQ(0, eventfd_take(trig));
	expect_state(_metadata, self->uuid, "ready");
	close(unmask);
	close(trig);
}

/*
 * The consumer closes the device with an unmask eventfd registered, right
 * after signalling it (the unmask may be on its way to the server): the
 * module lets go of the eventfd, and the kernel logs nothing (vm-run
 * fails a run on WARNING or BUG). The device opens again and works.
 */
TEST_F(client, intx_unmask_eventfd_close)
{
	int trig, unmask, i;
	uint32_t v = 0;

	open_dev(_metadata, self);
	trig = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	unmask = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	ASSERT_LE(0, trig);
	ASSERT_LE(0, unmask);

	for (i = 0; i < 10; i++) {
		if (i)
			self->fd = vu_vfio_device_fd(self->uuid, self->container,
						     self->group);
		ASSERT_LE(0, self->fd) TH_LOG("reopen %d: %d", i, self->fd);
		intx_masked_pending(_metadata, self->fd, trig, unmask);
		/* every other time with an unmask on its way */
		if (i % 2)
			ASSERT_EQ(0, eventfd_signal(unmask));
		close(self->fd);
		self->fd = -1;
		/* (the pending INTx may have come before the close) */
		ASSERT_LE(0, eventfd_take(trig));
		/*
		 * An unmask signalled just before the close may not have been
		 * taken: the next open would honour it at once, unmasking
		 * the INTx its first raise masks.
		 */
		ASSERT_LE(0, eventfd_take(unmask));
	}
	/* No one waits on it any more. */
	eventfd_take(unmask);
	ASSERT_EQ(0, eventfd_signal(unmask));
	usleep(INTX_QUIET_MS * 1000);
	EXPECT_EQ(1, eventfd_take(unmask));
	EXPECT_EQ(0, eventfd_take(trig));

	self->fd = vu_vfio_device_fd(self->uuid, self->container, self->group);
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(0, __bar_read32(self->fd, REG_MAGIC, &v));
	EXPECT_EQ(DMA_MAGIC, v);
	expect_state(_metadata, self->uuid, "ready");
	close(unmask);
	close(trig);
}

/*
 * DMA_READ replies are built, and DMA_WRITE data received, in pages of up
 * to 64 KiB, a reply with its 32-byte header in front
 * (drivers/vfio/user/dma.c): copies of every length around those edges,
 * from and to unaligned addresses, land exactly, and nothing next to the
 * destination is touched.
 */
TEST_F_TIMEOUT(client, dma_copy_odd_sizes_and_offsets, 120)
{
	static const uint64_t lens[] = {
		1, 31, 32, 33, 4063, 4064, 4065, 4096, 65503, 65504, 65505,
		65536, 65537, 131040, 131073, (1 << 20) - 1, 1 << 20,
		(1 << 20) + 4065,
	};
	static const uint64_t offs[] = { 0, 1, 4064, 4095 };
	const size_t sz = 2 << 20, guard = 64;
	const uint64_t iova = 1ULL << 32;
	uint32_t status = 0;
	unsigned int l, o;
	uint8_t *buf;
	size_t i;

	open_dev(_metadata, self);
	ASSERT_EQ(0, __bar_write32(self->fd, REG_IRQ_CTRL, 0));
	buf = mmap(NULL, 2 * sz, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, buf);
	for (i = 0; i < sz; i++)
		buf[i] = i * 11 + i / 251 + 5;
	ASSERT_EQ(0, dma_map(self->container, buf, iova, 2 * sz));

	for (l = 0; l < sizeof(lens) / sizeof(lens[0]); l++) {
		for (o = 0; o < sizeof(offs) / sizeof(offs[0]); o++) {
			uint64_t src = offs[o], dst = sz + guard + offs[(o + 1) % 4];
			uint64_t len = lens[l];

			memset(buf + sz, 0xc3, sz);
			ASSERT_EQ(0, dma_copy(self->fd, iova + src, iova + dst, len));
			ASSERT_EQ(0, __bar_read32(self->fd, REG_STATUS, &status));
			ASSERT_EQ(STATUS_DONE, status)
				TH_LOG("len %llu src +%llu", (unsigned long long)len,
				       (unsigned long long)src);
			ASSERT_EQ(0, memcmp(buf + src, buf + dst, len))
				TH_LOG("len %llu src +%llu dst +%llu differ",
				       (unsigned long long)len,
				       (unsigned long long)src,
				       (unsigned long long)dst);
			for (i = sz; i < dst; i++)
				ASSERT_EQ(0xc3, buf[i]);
			for (i = dst + len; i < dst + len + guard; i++)
				ASSERT_EQ(0xc3, buf[i]);
		}
	}
	expect_state(_metadata, self->uuid, "ready");
	munmap(buf, 2 * sz);
}

/*
 * A server DMA that starts in mapped memory and runs on past the end of
 * the mapping, in its second 64 KiB piece: a DMA_READ fails as a whole, a
 * DMA_WRITE fails after its first piece (as a device's DMA would, in
 * order), nothing beyond the mapping is written, and the device stays
 * ready. Message DMA (no shared-memory window): a copy through the window
 * is a plain memcpy, which window_test covers.
 */
TEST_F(client, dma_runs_off_the_mapping)
{
	const size_t sz = 1 << 20, piece = 64 << 10;
	const uint64_t iova = 1ULL << 32;
	uint32_t status = 0, err = 0;
	uint8_t *buf;
	size_t i;

	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "dma_window", "0"));
	open_dev(_metadata, self);
	ASSERT_EQ(0, __bar_write32(self->fd, REG_IRQ_CTRL, 0));
	buf = mmap(NULL, 2 * sz, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, buf);
	for (i = 0; i < sz; i++)
		buf[i] = i * 3 + 1;
	memset(buf + sz, 0x6b, sz);
	/* source: all of it; destination: its first piece only */
	ASSERT_EQ(0, dma_map(self->container, buf, iova, sz));
	ASSERT_EQ(0, dma_map(self->container, buf + sz, iova + sz, piece));

	/* DMA_READ of two pieces, the second unmapped */
	ASSERT_EQ(0, dma_copy(self->fd, iova + sz, iova, 2 * piece));
	ASSERT_EQ(0, __bar_read32(self->fd, REG_STATUS, &status));
	EXPECT_EQ(STATUS_ERROR, status);
	ASSERT_EQ(0, __bar_read32(self->fd, REG_ERROR, &err));
	EXPECT_NE(0, err);
	for (i = 0; i < sz; i++)
		ASSERT_EQ((uint8_t)(i * 3 + 1), buf[i]);

	/* DMA_WRITE of two pieces: the first lands, the second is refused */
	ASSERT_EQ(0, dma_copy(self->fd, iova, iova + sz, 2 * piece));
	ASSERT_EQ(0, __bar_read32(self->fd, REG_STATUS, &status));
	EXPECT_EQ(STATUS_ERROR, status);
	EXPECT_EQ(0, memcmp(buf, buf + sz, piece));
	for (i = sz + piece; i < 2 * sz; i++)
		ASSERT_EQ(0x6b, buf[i]);

	/* and a copy inside the mappings still works */
	ASSERT_EQ(0, dma_copy(self->fd, iova + 4096, iova + sz, piece));
	ASSERT_EQ(0, __bar_read32(self->fd, REG_STATUS, &status));
	EXPECT_EQ(STATUS_DONE, status);
	EXPECT_EQ(0, memcmp(buf + 4096, buf + sz, piece));
	expect_state(_metadata, self->uuid, "ready");
	munmap(buf, 2 * sz);
}

struct doorbell {
	int fd;
	int ret;
};

static void *doorbell_thread(void *arg)
{
	struct doorbell *d = arg;

	d->ret = __bar_write32(d->fd, REG_DOORBELL, 1);
	return NULL;
}

/*
 * The consumer unmaps while the server is in the middle of a long copy,
 * DMA messages in flight: the unmap returns promptly, the copy ends done
 * (its last access came first) or failed, never hangs, and the device
 * stays usable. Where the unmap lands is up to the scheduler; the copy
 * the unmap certainly overtook is unmap_under_paused_copy's.
 */
TEST_F_TIMEOUT(client, unmap_during_dma, 120)
{
	const size_t sz = 32 << 20;
	struct doorbell d = { .ret = 1 };
	uint32_t status = 0, err = 0, v = 0;
	pthread_t t;
	uint8_t *buf;
	double t0, dt;

	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "timeout_ms", "60000"));
	open_dev(_metadata, self);
	buf = mmap(NULL, 2 * sz, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	ASSERT_NE(MAP_FAILED, buf);
	memset(buf, 0x11, sz);
	ASSERT_EQ(0, dma_map(self->container, buf, 1ULL << 32, 2 * sz));
	ASSERT_EQ(0, __bar_write64(self->fd, REG_SRC, 1ULL << 32));
	ASSERT_EQ(0, __bar_write64(self->fd, REG_DST, (1ULL << 32) + sz));
	ASSERT_EQ(0, __bar_write64(self->fd, REG_LEN, sz));
	d.fd = self->fd;
	ASSERT_EQ(0, pthread_create(&t, NULL, doorbell_thread, &d));
	usleep(50000);

	t0 = vu_now();
	ASSERT_EQ(0, dma_unmap(self->container, 1ULL << 32, 2 * sz));
	dt = vu_now() - t0;
	EXPECT_GT(5.0, dt) TH_LOG("unmap took %.2f s", dt);
	/* The memory may go now: the server cannot reach it any more. */
	munmap(buf, 2 * sz);

	ASSERT_EQ(0, pthread_join(t, NULL));
	EXPECT_EQ(0, d.ret);
	ASSERT_EQ(0, __bar_read32(self->fd, REG_STATUS, &status));
	ASSERT_EQ(0, __bar_read32(self->fd, REG_ERROR, &err));
	EXPECT_TRUE(status == STATUS_DONE || status == STATUS_ERROR);
	EXPECT_EQ(status == STATUS_ERROR, err != 0)
		TH_LOG("status %u, error %u", status, err);
	ksft_print_msg("the copy ended %s (error %u); unmap took %.2f s\n",
		       status == STATUS_DONE ? "done" : "failed", err, dt);
	expect_state(_metadata, self->uuid, "ready");
	ASSERT_EQ(0, __bar_read32(self->fd, REG_MAGIC, &v));
	EXPECT_EQ(DMA_MAGIC, v);
}

/*
 * A copy the unmap overtook cannot complete: the sample's background copy
 * pauses after two 1 MiB steps (STEPS), the consumer unmaps, the copy
 * goes on; its next access must fail, and nothing past the pause may
 * land in the memory. A new mapping then copies again.
 */
TEST_F_TIMEOUT(client, unmap_under_paused_copy, 120)
{
	const size_t sz = 8 << 20, step = 1 << 20;
	uint32_t status = 0, err = 0;
	uint64_t progress = 0;
	uint8_t *buf;
	size_t i;
	int n;

	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "timeout_ms", "60000"));
	open_dev(_metadata, self);
	buf = mmap(NULL, 2 * sz, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	ASSERT_NE(MAP_FAILED, buf);
	memset(buf, 0x11, sz);
	memset(buf + sz, 0xee, sz);
	ASSERT_EQ(0, dma_map(self->container, buf, 1ULL << 32, 2 * sz));
	ASSERT_EQ(0, __bar_write64(self->fd, REG_SRC, 1ULL << 32));
	ASSERT_EQ(0, __bar_write64(self->fd, REG_DST, (1ULL << 32) + sz));
	ASSERT_EQ(0, __bar_write64(self->fd, REG_LEN, sz));
	ASSERT_EQ(0, __bar_write32(self->fd, REG_STEP, step));
	ASSERT_EQ(0, __bar_write32(self->fd, REG_STEPS, 2));
	ASSERT_EQ(0, __bar_write32(self->fd, REG_DOORBELL, DOORBELL_ASYNC));
	/* (the steps run from the server's main loop, between messages) */
	for (n = 0; n < 1000; n++) {
		ASSERT_EQ(0, __bar_read64(self->fd, REG_PROGRESS, &progress));
		if (progress == 2 * step)
			break;
		usleep(10000);
	}
	ASSERT_EQ(2 * step, progress);
	ASSERT_EQ(0, __bar_read32(self->fd, REG_STATUS, &status));
	ASSERT_EQ(STATUS_BUSY, status);

	ASSERT_EQ(0, dma_unmap(self->container, 1ULL << 32, 2 * sz));
	ASSERT_EQ(0, __bar_write32(self->fd, REG_STEPS, 0xffffffff));
	for (n = 0; n < 1000; n++) {
		ASSERT_EQ(0, __bar_read32(self->fd, REG_STATUS, &status));
		if (status != STATUS_BUSY)
			break;
		usleep(10000);
	}
	EXPECT_EQ(STATUS_ERROR, status);
	ASSERT_EQ(0, __bar_read32(self->fd, REG_ERROR, &err));
	EXPECT_NE(0, err);
	ASSERT_EQ(0, __bar_read64(self->fd, REG_PROGRESS, &progress));
	EXPECT_EQ(2 * step, progress);
	for (i = 0; i < sz; i++)
		if (buf[sz + i] != (i < 2 * step ? 0x11 : 0xee))
			break;
	EXPECT_EQ(sz, i) TH_LOG("destination byte %zu is %#x", i, buf[sz + i]);
	expect_state(_metadata, self->uuid, "ready");

	/* the device goes on: a new mapping, a synchronous copy */
	memset(buf + sz, 0, sz);
	ASSERT_EQ(0, dma_map(self->container, buf, 1ULL << 32, 2 * sz));
	ASSERT_EQ(0, __bar_write32(self->fd, REG_DOORBELL, 1));
	ASSERT_EQ(0, __bar_read32(self->fd, REG_STATUS, &status));
	EXPECT_EQ(STATUS_DONE, status);
	EXPECT_EQ(0, memcmp(buf, buf + sz, sz));
	ASSERT_EQ(0, dma_unmap(self->container, 1ULL << 32, 2 * sz));
	munmap(buf, 2 * sz);
}

/* A server that exits: calls fail at once, the device reads broken. */
TEST_F(client, server_exit_fails_fast)
{
	uint32_t v;
	double t0;

	open_dev(_metadata, self);
	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGKILL));
	usleep(100000);
	t0 = vu_now();
	EXPECT_EQ(-EIO, __bar_read32(self->fd, REG_MAGIC, &v));
	EXPECT_GT(2.0, vu_now() - t0);
	expect_state(_metadata, self->uuid, "broken: ");
}

struct bar_reader {
	int fd;
	int ret;
};

static void *bar_reader_thread(void *arg)
{
	struct bar_reader *r = arg;
	uint32_t v;

	r->ret = __bar_read32(r->fd, REG_MAGIC, &v);
	return NULL;
}

/* A server that exits with a request in flight: it fails at once too. */
TEST_F(client, server_exit_in_flight_fails_fast)
{
	struct bar_reader r = { .ret = 1 };
	pthread_t t;
	double t0, dt;

	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "timeout_ms", "20000"));
	open_dev(_metadata, self);
	r.fd = self->fd;
	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGSTOP));
	ASSERT_EQ(0, pthread_create(&t, NULL, bar_reader_thread, &r));
	usleep(200000);
	t0 = vu_now();
	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGKILL));
	ASSERT_EQ(0, pthread_join(t, NULL));
	dt = vu_now() - t0;
	EXPECT_EQ(-EIO, r.ret);
	EXPECT_GT(2.0, dt) TH_LOG("the request took %.2f s to fail", dt);
	expect_state(_metadata, self->uuid, "broken: ");
}

/* A server that stops answering: bounded by timeout_ms, then broken. */
TEST_F(client, hung_server_times_out)
{
	uint32_t v;
	double t0, dt;
	int ret;

	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "timeout_ms", "500"));
	open_dev(_metadata, self);
	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGSTOP));
	t0 = vu_now();
	ret = __bar_read32(self->fd, REG_MAGIC, &v);
	dt = vu_now() - t0;
	EXPECT_EQ(-ETIMEDOUT, ret);
	EXPECT_LE(0.45, dt);
	EXPECT_GT(3.0, dt) TH_LOG("timeout took %.2f s", dt);
	expect_state(_metadata, self->uuid, "broken: ");
	EXPECT_EQ(-EIO, __bar_read32(self->fd, REG_MAGIC, &v));
	vu_server_signal(&self->srv, SIGCONT);
}

/*
 * Posted BAR writes (the device's posted_writes attribute, read at attach)
 */

#define REG_WR_MSGS		0x58
#define DOORBELL_WRITE		3	/* LEN bytes of SCRATCH's low byte to DST */

/* The device's stats, or a skip. */
#define NEED_STATS(uuid)						\
	do {								\
		if (!vu_have_stats(uuid))				\
			SKIP(return, "no debugfs stats");		\
	} while (0)

/*
 * With posted_writes a BAR write returns without the server (stopped
 * here) and nothing answers it. 24 doorbells that each DMA one byte (by
 * message: DMA_WRITE to the module while the next writes arrive) land in
 * order: SCRATCH, DST, LEN and DOORBELL of each are done in the order
 * written, before the next read's reply. Config space waits for its
 * reply; so does a BAR write after a re-attach with the attribute off.
 */
TEST_F(client, posted_writes_in_order)
{
	const uint64_t iova = 1ULL << 32;
	unsigned long long posted, sent, recv;
	uint32_t v = 0, i, status = 0;
	uint64_t msgs = 0;
	char buf[16];
	uint16_t cmd;
	uint8_t *mem;

	ASSERT_EQ(0, vu_mdev_attr_read(self->uuid, "posted_writes", buf,
				       sizeof(buf)));
	EXPECT_STREQ("0", buf);
	EXPECT_EQ(-EINVAL, vu_mdev_attr_write(self->uuid, "posted_writes",
					      "maybe"));
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "posted_writes", "1"));
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "dma_window", "0"));
	open_dev(_metadata, self);
	NEED_STATS(self->uuid);
	mem = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, mem);
	ASSERT_EQ(0, dma_map(self->container, mem, iova, 4096));
	posted = vu_mdev_stat(self->uuid, "posted");
	sent = vu_mdev_stat(self->uuid, "sent_msgs.REGION_WRITE");
	recv = vu_mdev_stat(self->uuid, "recv_msgs.REGION_WRITE");

	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGSTOP));
	self->srv_stopped = true;
	/* 73 messages: more than the library queues by count (64) */
	ASSERT_EQ(0, __bar_write64(self->fd, REG_LEN, 1));
	for (i = 1; i <= 24; i++) {
		ASSERT_EQ(0, __bar_write32(self->fd, REG_SCRATCH, i));
		ASSERT_EQ(0, __bar_write64(self->fd, REG_DST, iova + i));
		ASSERT_EQ(0, __bar_write32(self->fd, REG_DOORBELL,
					   DOORBELL_WRITE));
	}
	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGCONT));
	self->srv_stopped = false;
	ASSERT_EQ(0, __bar_read32(self->fd, REG_STATUS, &status));
	EXPECT_EQ(STATUS_DONE, status);
	ASSERT_EQ(0, __bar_read32(self->fd, REG_SCRATCH, &v));
	EXPECT_EQ(24, v);
	for (i = 1; i <= 24; i++)
		EXPECT_EQ(i, mem[i]) TH_LOG("byte %u", i);
	ASSERT_EQ(0, __bar_read64(self->fd, REG_WR_MSGS, &msgs));
	EXPECT_EQ(24, msgs);
	EXPECT_EQ(posted + 1 + 3 * 24, vu_mdev_stat(self->uuid, "posted"));
	EXPECT_EQ(sent + 1 + 3 * 24,
		  vu_mdev_stat(self->uuid, "sent_msgs.REGION_WRITE"));
	EXPECT_EQ(recv, vu_mdev_stat(self->uuid, "recv_msgs.REGION_WRITE"));

	/* Config space is never posted: its reply comes back. */
	ASSERT_EQ(0, __rd(self->fd, VFIO_PCI_CONFIG_REGION_INDEX, 4, &cmd, 2));
	ASSERT_EQ(0, __wr(self->fd, VFIO_PCI_CONFIG_REGION_INDEX, 4, &cmd, 2));
	EXPECT_EQ(recv + 1, vu_mdev_stat(self->uuid, "recv_msgs.REGION_WRITE"));

	/* Off, and a re-attach under the open consumer: writes wait again. */
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "posted_writes", "0"));
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
	posted = vu_mdev_stat(self->uuid, "posted");
	recv = vu_mdev_stat(self->uuid, "recv_msgs.REGION_WRITE");
	ASSERT_EQ(0, __bar_write32(self->fd, REG_SCRATCH, 7));
	EXPECT_EQ(recv + 1, vu_mdev_stat(self->uuid, "recv_msgs.REGION_WRITE"));
	EXPECT_EQ(posted, vu_mdev_stat(self->uuid, "posted"));
	expect_state(_metadata, self->uuid, "ready");
	ASSERT_EQ(0, dma_unmap(self->container, iova, 4096));
	munmap(mem, 4096);
}

struct poster {
	int fd;
	uint32_t n;
	pid_t tid;
	uint32_t done;
	int ret;
};

static void *poster_thread(void *arg)
{
	struct poster *p = arg;
	uint32_t i;

	__atomic_store_n(&p->tid, syscall(SYS_gettid), __ATOMIC_RELEASE);
	for (i = 1; i <= p->n; i++) {
		p->ret = __bar_write32(p->fd, REG_SCRATCH, i);
		if (p->ret)
			break;
		__atomic_store_n(&p->done, i, __ATOMIC_RELEASE);
	}
	return NULL;
}

static void on_sigusr1(int sig)
{
}

/* Polls @done until it stays the same (and non-zero if @moved) 50 times. */
static uint32_t wait_stalled(const uint32_t *done, bool moved, pid_t tid)
{
	uint32_t last = 0, now;
	int i, still = 0;

	for (i = 0; i < 20000 && still < 50; i++) {
		now = __atomic_load_n(done, __ATOMIC_ACQUIRE);
		if (tid)
			syscall(SYS_tgkill, getpid(), tid, SIGUSR1);
		usleep(2000);
		still = now == last && (now || !moved) ? still + 1 : 0;
		last = now;
	}
	return last;
}

/*
 * A stopped server and a writer posting many writes: once the socket is
 * full the writer waits (what is in flight is bounded by the socket), a
 * storm of non-fatal signals neither fails nor ends its wait, and when the
 * server goes on every write arrives, the last one last.
 */
TEST_F_TIMEOUT(client, posted_writes_fill_socket_under_signals, 120)
{
	struct sigaction sa = { .sa_handler = on_sigusr1 };
	struct poster p = { .n = 20000 };
	uint32_t last, v = 0;
	pid_t tid = 0;
	pthread_t t;
	int i;

	ASSERT_EQ(0, sigaction(SIGUSR1, &sa, NULL));
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "timeout_ms", "60000"));
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "posted_writes", "1"));
	open_dev(_metadata, self);
	p.fd = self->fd;
	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGSTOP));
	self->srv_stopped = true;
	ASSERT_EQ(0, pthread_create(&t, NULL, poster_thread, &p));
	for (i = 0; i < 1000 && !tid; i++) {
		usleep(1000);
		tid = __atomic_load_n(&p.tid, __ATOMIC_ACQUIRE);
	}
	ASSERT_NE(0, tid);

	last = wait_stalled(&p.done, true, tid);
	EXPECT_LT(0, last);
	EXPECT_GT(p.n, last) TH_LOG("all %u writes went out to a stopped server", p.n);
	EXPECT_EQ(0, p.ret);
	TH_LOG("%u posted writes in flight while the server was stopped", last);

	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGCONT));
	self->srv_stopped = false;
	/* Signals all along, until the writer is done. */
	for (i = 0; i < 30000 && __atomic_load_n(&p.done, __ATOMIC_ACQUIRE) < p.n &&
	     !p.ret; i++) {
		syscall(SYS_tgkill, getpid(), tid, SIGUSR1);
		usleep(1000);
	}
	ASSERT_EQ(0, pthread_join(t, NULL));
	EXPECT_EQ(0, p.ret);
	EXPECT_EQ(p.n, p.done);
	ASSERT_EQ(0, __bar_read32(self->fd, REG_SCRATCH, &v));
	EXPECT_EQ(p.n, v);
	expect_state(_metadata, self->uuid, "ready");
}

/* Whether @pid sleeps in the kernel (state D: a killable wait is one). */
static bool in_kernel_wait(pid_t pid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] == 'D';
}

/*
 * Writers killed while they wait for room in the socket: a write that had
 * not started to go out is taken back (the module holds nothing for a dead
 * task), and none of them reaches the server once it reads again.
 */
TEST_F_TIMEOUT(client, posted_writes_killed_writers_take_back, 120)
{
	uint32_t *shm, v = 0;
	int k, n, status;
	pid_t pid;

	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "timeout_ms", "60000"));
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "posted_writes", "1"));
	open_dev(_metadata, self);
	NEED_STATS(self->uuid);
	/*
	 * [0]: the last value that went out; [1]: writes that went out;
	 * [2]: the value being written now
	 */
	shm = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, shm);
	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGSTOP));
	self->srv_stopped = true;
	for (k = 0; k < 8; k++) {
		pid = fork();
		ASSERT_LE(0, pid);
		if (!pid) {
			uint32_t i, val;

			for (i = 1; i < 100000; i++) {
				val = (k + 1) << 20 | i;
				__atomic_store_n(&shm[2], val, __ATOMIC_RELEASE);
				if (__bar_write32(self->fd, REG_SCRATCH, val))
					_exit(1);
				__atomic_store_n(&shm[0], val, __ATOMIC_RELEASE);
				__atomic_add_fetch(&shm[1], 1, __ATOMIC_RELEASE);
			}
			_exit(0);
		}
		self->kids[k] = pid;
		/* Blocked in a write: the socket is full (the first fills it). */
		for (n = 0; n < 30000; n++) {
			if ((__atomic_load_n(&shm[2], __ATOMIC_ACQUIRE) >> 20) == k + 1 &&
			    in_kernel_wait(pid))
				break;
			usleep(1000);
		}
		ASSERT_GT(30000, n) TH_LOG("writer %d never blocked", k);
		/* still blocked: it did not just pass through D */
		usleep(50000);
		ASSERT_TRUE(in_kernel_wait(pid));
		ASSERT_EQ(0, kill(pid, SIGKILL));
		ASSERT_EQ(pid, waitpid(pid, &status, 0));
		self->kids[k] = 0;
		EXPECT_TRUE(WIFSIGNALED(status));
	}
	EXPECT_LT(0, shm[1]);
	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGCONT));
	self->srv_stopped = false;
	/* The last write that went out is the last the server did. */
	ASSERT_EQ(0, __bar_read32(self->fd, REG_SCRATCH, &v));
	EXPECT_EQ(shm[0], v) TH_LOG("SCRATCH %#x, last sent %#x", v, shm[0]);
	EXPECT_EQ(shm[1], vu_mdev_stat(self->uuid, "posted"));
	expect_state(_metadata, self->uuid, "ready");
	munmap(shm, 4096);
}

/* A server that stops reading: the posted writer fails at timeout_ms. */
TEST_F_TIMEOUT(client, posted_writes_hung_server_times_out, 60)
{
	double t0 = 0, dt;
	uint32_t v, i;
	int ret = 0;

	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "timeout_ms", "500"));
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "posted_writes", "1"));
	open_dev(_metadata, self);
	NEED_STATS(self->uuid);
	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGSTOP));
	self->srv_stopped = true;
	for (i = 0; i < 1000000 && !ret; i++) {
		t0 = vu_now();
		ret = __bar_write32(self->fd, REG_SCRATCH, i);
	}
	dt = vu_now() - t0;
	EXPECT_EQ(-ETIMEDOUT, ret);
	/* Many went out to the stopped server before one had to wait. */
	EXPECT_LT(16, i);
	EXPECT_EQ(i - 1, vu_mdev_stat(self->uuid, "posted"));
	EXPECT_LE(0.45, dt);
	EXPECT_GT(3.0, dt) TH_LOG("the blocked write took %.2f s to fail", dt);
	expect_state(_metadata, self->uuid, "broken: ");
	EXPECT_EQ(-EIO, __bar_write32(self->fd, REG_SCRATCH, 1));
	EXPECT_EQ(-EIO, __bar_read32(self->fd, REG_MAGIC, &v));
}

/*
 * Posted writes to a server that then dies: they went out, and the next
 * access that waits fails with EIO; nothing hangs.
 */
TEST_F(client, posted_writes_server_killed)
{
	uint32_t v, i;

	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "posted_writes", "1"));
	open_dev(_metadata, self);
	NEED_STATS(self->uuid);
	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGSTOP));
	self->srv_stopped = true;
	for (i = 1; i <= 8; i++)
		ASSERT_EQ(0, __bar_write32(self->fd, REG_SCRATCH, i));
	EXPECT_EQ(8, vu_mdev_stat(self->uuid, "posted"));
	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGKILL));
	EXPECT_EQ(-EIO, __bar_read32(self->fd, REG_MAGIC, &v));
	EXPECT_EQ(-EIO, __bar_write32(self->fd, REG_SCRATCH, 9));
	expect_state(_metadata, self->uuid, "broken: ");
}

/* Re-attach to a restarted server without the consumer reopening. */
TEST_F(client, reattach_restarted_server)
{
	const size_t sz = 64 << 10;
	uint32_t v = 0;
	uint8_t *buf;
	int efd;

	open_dev(_metadata, self);
	buf = mmap(NULL, 2 * sz, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, buf);
	memset(buf, 0x5a, sz);
	memset(buf + sz, 0, sz);
	ASSERT_EQ(0, dma_map(self->container, buf, 0x10000000, 2 * sz));
	efd = eventfd(0, EFD_CLOEXEC);
	ASSERT_LE(0, efd);
	ASSERT_EQ(0, msix_enable(self->fd));
	ASSERT_EQ(0, set_eventfds(self->fd, VFIO_PCI_MSIX_IRQ_INDEX, 0, 1, &efd));

	ASSERT_EQ(0, vu_server_restart(&self->srv));
	usleep(100000);
	EXPECT_EQ(-EIO, __bar_read32(self->fd, REG_MAGIC, &v));
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
	expect_state(_metadata, self->uuid, "ready");
	ASSERT_EQ(0, __bar_read32(self->fd, REG_MAGIC, &v));
	EXPECT_EQ(DMA_MAGIC, v);

	/* The new server has the DMA window and the eventfd again. */
	ASSERT_EQ(0, msix_enable(self->fd));
	ASSERT_EQ(0, dma_copy(self->fd, 0x10000000, 0x10000000 + sz, sz));
	ASSERT_EQ(0, wait_eventfd(efd, 20000));
	EXPECT_EQ(0, memcmp(buf, buf + sz, sz));
	close(efd);
	munmap(buf, 2 * sz);
}

/* The module stays while a consumer holds a device. */
TEST_F(client, rmmod_refused_while_open)
{
	int ret;

	open_dev(_metadata, self);
	ret = vu_module_unload();
	EXPECT_TRUE(ret == -EAGAIN || ret == -EBUSY) TH_LOG("unload: %d", ret);
	EXPECT_TRUE(vu_module_loaded());
}

struct remover {
	const char *uuid;
	int ret;
};

static void *remove_thread(void *arg)
{
	struct remover *r = arg;

	r->ret = vu_mdev_remove(r->uuid);
	return NULL;
}

/* Removal under a consumer: the consumer is asked (REQ), then it goes. */
TEST_F_TIMEOUT(client, remove_asks_consumer, 60)
{
	struct remover r = { .uuid = self->uuid, .ret = 1 };
	pthread_t t;
	int efd;

	open_dev(_metadata, self);
	efd = eventfd(0, EFD_CLOEXEC);
	ASSERT_LE(0, efd);
	ASSERT_EQ(0, set_eventfds(self->fd, VFIO_PCI_REQ_IRQ_INDEX, 0, 1, &efd));
	ASSERT_EQ(0, pthread_create(&t, NULL, remove_thread, &r));
	ASSERT_EQ(0, wait_eventfd(efd, 20000));
	EXPECT_EQ(1, r.ret);	/* still waiting for us */
	close(self->fd);
	self->fd = -1;
	ASSERT_EQ(0, pthread_join(t, NULL));
	EXPECT_EQ(0, r.ret);
	EXPECT_FALSE(vu_mdev_exists(self->uuid));
	close(efd);
}

struct reader {
	int fd;
	int iters;
	int bad;
	uint64_t reg;
	uint32_t expect;
};

static void *reader_thread(void *arg)
{
	struct reader *r = arg;
	uint32_t v;
	int i;

	for (i = 0; i < r->iters; i++)
		if (__bar_read32(r->fd, r->reg, &v) || v != r->expect)
			r->bad++;
	return NULL;
}

/*
 * Requests in flight from several threads: replies matched by msg_id.
 * Each thread reads its own register, holding its own value, so a reply
 * handed to the wrong request shows.
 */
TEST_F_TIMEOUT(client, concurrent_readers, 120)
{
	static const uint64_t regs[8] = {
		REG_MAGIC, REG_SRC, REG_SRC + 4, REG_DST, REG_DST + 4,
		REG_LEN, REG_LEN + 4, REG_SCRATCH,
	};
	uint32_t vals[8] = { DMA_MAGIC };
	struct reader r[8];
	pthread_t t[8];
	int i;

	open_dev(_metadata, self);
	for (i = 1; i < 8; i++) {
		vals[i] = 0x10101010u * i + 0x01020304u;
		ASSERT_EQ(0, __bar_write32(self->fd, regs[i], vals[i]));
	}
	for (i = 0; i < 8; i++) {
		r[i] = (struct reader){ .fd = self->fd, .iters = 300,
					.reg = regs[i], .expect = vals[i] };
		ASSERT_EQ(0, pthread_create(&t[i], NULL, reader_thread, &r[i]));
	}
	for (i = 0; i < 8; i++) {
		ASSERT_EQ(0, pthread_join(t[i], NULL));
		EXPECT_EQ(0, r[i].bad);
	}
	expect_state(_metadata, self->uuid, "ready");
}

#define MANY	64

/*
 * 64 devices (VU_MANY_DEVICES, at most 64: fewer on the debug kernel, where
 * each server start and mdev create costs seconds), each with its own
 * server, all open at once.
 */
TEST_F_TIMEOUT(client, many_devices, 240)
{
	static struct vu_server srv[MANY];
	char uuid[MANY][VU_UUID_LEN + 1];
	int c[MANY], g[MANY], fd[MANY];
	const char *env = getenv("VU_MANY_DEVICES");
	int i, n = 0, many = env ? atoi(env) : MANY;
	uint32_t v;

	if (many < 2 || many > MANY)
		many = MANY;
	for (i = 0; i < many; i++) {
		ASSERT_EQ(0, vu_server_start(&srv[i], SAMPLE, dma_args));
		vu_uuid_gen(uuid[i]);
		fd[i] = vu_open_attached(uuid[i], &srv[i], &c[i], &g[i]);
		ASSERT_LE(0, fd[i]) TH_LOG("device %d: %d", i, fd[i]);
		n++;
	}
	/* Each device reaches its own server: a value per device. */
	for (i = 0; i < n; i++)
		EXPECT_EQ(0, __bar_write32(fd[i], REG_SCRATCH, 0x5c000000 + i));
	for (i = 0; i < n; i++) {
		v = 0;
		EXPECT_EQ(0, __bar_read32(fd[i], REG_MAGIC, &v));
		EXPECT_EQ(DMA_MAGIC, v);
		v = 0;
		EXPECT_EQ(0, __bar_read32(fd[i], REG_SCRATCH, &v));
		EXPECT_EQ(0x5c000000 + i, v) TH_LOG("device %d", i);
	}
	for (i = 0; i < n; i++) {
		close(fd[i]);
		close(g[i]);
		close(c[i]);
		EXPECT_EQ(0, vu_mdev_remove(uuid[i]));
		vu_server_stop(&srv[i]);
	}
}

/*
 * The sample serving @n devices from one process (--count, sockets from
 * a %d template) in @threads threads: started, and every socket listening.
 */
static pid_t start_multi_server(const char *tmpl, int n, int threads)
{
	char prog[256], count[16], thr[16], path[108];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	double t0;
	pid_t pid;
	int i, fd;

	vu_tool_path(SAMPLE, prog, sizeof(prog));
	snprintf(count, sizeof(count), "%d", n);
	snprintf(thr, sizeof(thr), "%d", threads);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (!pid) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execl(prog, prog, "--socket", tmpl, "--device", "dma",
		      "--count", count, "--threads", thr, (char *)NULL);
		_exit(127);
	}
	/* devices listen in order: the last one listening means all do */
	snprintf(path, sizeof(path), tmpl, n - 1);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	for (t0 = vu_now(); vu_now() - t0 < 20; usleep(10000)) {
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return -ECHILD;
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			break;
		i = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
		close(fd);
		if (!i)
			return pid;
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -ETIMEDOUT;
}

struct one_server_reader {
	int fd;
	uint32_t base;
	int bad;
};

/* Writes and reads back SCRATCH values only this device gets. */
static void *one_server_thread(void *arg)
{
	struct one_server_reader *r = arg;
	uint32_t v;
	int i;

	for (i = 0; i < 50; i++) {
		v = 0;
		if (__bar_write32(r->fd, REG_SCRATCH, r->base + i) ||
		    __bar_read32(r->fd, REG_SCRATCH, &v) || v != r->base + i)
			r->bad++;
	}
	return NULL;
}

/*
 * @many devices (VU_MANY_DEVICES, at most MANY) served by one sample
 * process in @threads threads: each device has its own state, all are
 * driven at once by one consumer thread each, and the one process's death
 * breaks every one of them.
 */
static void many_devices_one_server(struct __test_metadata *_metadata,
				    int threads)
{
	static struct vu_server srv[MANY];
	static struct one_server_reader r[MANY];
	char uuid[MANY][VU_UUID_LEN + 1], tmpl[108];
	int c[MANY], g[MANY];
	pthread_t t[MANY];
	const char *env = getenv("VU_MANY_DEVICES");
	int i, n = 0, many = env ? atoi(env) : MANY;
	pid_t pid;
	uint32_t v;

	if (many < 2 || many > MANY)
		many = MANY;
	snprintf(tmpl, sizeof(tmpl), "/tmp/vu-%d-one-%%d.sock", getpid());
	pid = start_multi_server(tmpl, many, threads);
	ASSERT_LT(0, pid) TH_LOG("vfio-user-sample --count %d: %s", many,
				 strerror(-pid));
	for (i = 0; i < many; i++) {
		memset(&srv[i], 0, sizeof(srv[i]));
		snprintf(srv[i].socket, sizeof(srv[i].socket), tmpl, i);
		vu_uuid_gen(uuid[i]);
		r[i].fd = vu_open_attached(uuid[i], &srv[i], &c[i], &g[i]);
		ASSERT_LE(0, r[i].fd) TH_LOG("device %d: %d", i, r[i].fd);
		r[i].base = 0x5c000000 + (i << 8);
		r[i].bad = 0;
		n++;
	}
	for (i = 0; i < n; i++)
		ASSERT_EQ(0, pthread_create(&t[i], NULL, one_server_thread,
					    &r[i]));
	for (i = 0; i < n; i++) {
		pthread_join(t[i], NULL);
		EXPECT_EQ(0, r[i].bad) TH_LOG("device %d", i);
	}
	for (i = 0; i < n; i++) {
		v = 0;
		EXPECT_EQ(0, __bar_read32(r[i].fd, REG_MAGIC, &v));
		EXPECT_EQ(DMA_MAGIC, v);
		EXPECT_EQ(0, __bar_read32(r[i].fd, REG_SCRATCH, &v));
		EXPECT_EQ(r[i].base + 49, v) TH_LOG("device %d", i);
	}
	/* one process behind all of them */
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	usleep(200000);
	for (i = 0; i < n; i++) {
		EXPECT_EQ(-EIO, __bar_read32(r[i].fd, REG_MAGIC, &v));
		expect_state(_metadata, uuid[i], "broken: ");
	}
	for (i = 0; i < n; i++) {
		close(r[i].fd);
		close(g[i]);
		close(c[i]);
		EXPECT_EQ(0, vu_mdev_remove(uuid[i]));
		unlink(srv[i].socket);
	}
}

TEST_F_TIMEOUT(client, many_devices_one_server, 240)
{
	many_devices_one_server(_metadata, 1);
}

TEST_F_TIMEOUT(client, many_devices_one_server_two_threads, 240)
{
	many_devices_one_server(_metadata, 2);
}

TEST_HARNESS_MAIN
