// SPDX-License-Identifier: GPL-2.0-only
/*
 * Trace events: after a known workload, a tracefs instance with the
 * vfio_user_mdev events on holds each message as sent and received
 * (command, size with the header, flags, errno, round trip), the DMA the
 * module served, and the device's attach and detach. Statistics: the
 * device's debugfs stats count exactly a known workload.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/vfio.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "kselftest_harness.h"
#include "vfio_user_util.h"

#define SAMPLE		"vfio-user-sample"
#define BAR0		VFIO_PCI_BAR0_REGION_INDEX
#define INSTANCE	"vfio_user_trace_test"
#define IOVA		0x100000ULL

static const char *const null_args[] = { "--device", "null", NULL };
static const char *const dma_args[] = { "--device", "dma", NULL };

/* The tracefs directory of our instance, made with the events on. */
static int trace_open(char *dir, size_t len)
{
	static const char *const roots[] = {
		"/sys/kernel/tracing", "/sys/kernel/debug/tracing",
	};
	char path[256];
	unsigned int i;

	for (i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/instances", roots[i]);
		if (!access(path, F_OK))
			break;
	}
	if (i == 2) {
		if (mount("nodev", roots[0], "tracefs", 0, NULL))
			return -ENOENT;
		i = 0;
	}
	snprintf(dir, len, "%s/instances/" INSTANCE, roots[i]);
	rmdir(dir);
	if (mkdir(dir, 0755))
		return -errno;
	snprintf(path, sizeof(path), "%s/events/vfio_user_mdev/enable", dir);
	if (access(path, F_OK)) {
		rmdir(dir);
		return -ENOENT;
	}
	return vu_sysfs_write(path, "1");
}

/* The instance's trace (up to @len - 1 bytes), then the instance goes. */
static int trace_take(const char *dir, char *buf, size_t len)
{
	char path[256];
	ssize_t n, got = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/events/vfio_user_mdev/enable", dir);
	vu_sysfs_write(path, "0");
	snprintf(path, sizeof(path), "%s/trace", dir);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -errno;
	while ((size_t)got < len - 1 &&
	       (n = read(fd, buf + got, len - 1 - got)) > 0)
		got += n;
	buf[got] = '\0';
	close(fd);
	rmdir(dir);
	return 0;
}

/* Whether some line of @trace has every string of @want (NULL-ended). */
static bool has_line(const char *trace, const char *const *want)
{
	const char *line = trace;

	while (line && *line) {
		const char *end = strchr(line, '\n');
		size_t n = end ? (size_t)(end - line) : strlen(line);
		char buf[512];
		unsigned int i;

		snprintf(buf, sizeof(buf), "%.*s", (int)n, line);
		for (i = 0; want[i] && strstr(buf, want[i]); i++)
			;
		if (!want[i])
			return true;
		line = end ? end + 1 : NULL;
	}
	return false;
}

#define HAS(trace, ...) has_line(trace, (const char *const[]){ __VA_ARGS__, NULL })

/*
 * The DMA sample copies 4 KiB by message DMA, IOVA -> IOVA + 4096, in
 * 8 KiB of ours it maps; returns them (the caller unmaps them).
 */
static void *dma_copy_4k(struct __test_metadata *_metadata, int fd,
			 int container)
{
	uint64_t regs[3] = { IOVA, IOVA + 4096, 4096 };
	uint32_t one = 1;
	unsigned int i;
	void *buf;

	buf = mmap(NULL, 8192, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (buf == MAP_FAILED)
		return buf;
	EXPECT_EQ(0, vu_dma_map(container, buf, IOVA, 8192,
				VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE));
	/* SRC 0x08, DST 0x10, LEN 0x18, then the doorbell 0x20 */
	for (i = 0; i < 3; i++)
		EXPECT_EQ(0, vu_region_write(fd, BAR0, 0x08 + 8 * i, &regs[i], 8));
	EXPECT_EQ(0, vu_region_write(fd, BAR0, 0x20, &one, 4));
	return buf;
}

static char trace[1 << 20];

/* Register accesses: each message with its size as sent. */
TEST(messages)
{
	char dir[256], uuid[VU_UUID_LEN + 1];
	int container = -1, group = -1, fd, ret;
	uint64_t scratch = 0x1122334455667788ULL;
	struct vu_server srv;
	uint32_t magic;

	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	ret = trace_open(dir, sizeof(dir));
	if (ret == -ENOENT)
		SKIP(return, "no tracefs or no vfio_user_mdev events");
	ASSERT_EQ(0, ret);
	ASSERT_EQ(0, vu_server_start(&srv, SAMPLE, null_args));
	vu_uuid_gen(uuid);
	fd = vu_open_attached(uuid, &srv, &container, &group);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, vu_region_read(fd, BAR0, 0, &magic, 4));
	ASSERT_EQ(0, vu_region_write(fd, BAR0, 0x08, &scratch, 8));
	close(fd);
	fd = -1;
	ASSERT_EQ(0, vu_mdev_attr_write(uuid, "socket", "\n"));
	vu_consumer_teardown(uuid, &fd, &group, &container);
	vu_server_stop(&srv);
	ASSERT_EQ(0, trace_take(dir, trace, sizeof(trace)));

	EXPECT_TRUE(HAS(trace, "vfio_user_state:", uuid, "attached:", srv.socket));
	EXPECT_TRUE(HAS(trace, "vfio_user_send:", uuid, "command=VERSION", "flags=0x0"));
	EXPECT_TRUE(HAS(trace, "vfio_user_recv:", uuid, "command=VERSION", "flags=0x1 error=0"));
	/* header 16 + region access 16 (+ data) */
	EXPECT_TRUE(HAS(trace, "vfio_user_send:", uuid, "command=REGION_READ size=32 flags=0x0"));
	EXPECT_TRUE(HAS(trace, "vfio_user_recv:", uuid, "command=REGION_READ size=36 flags=0x1 error=0 rtt_ns="));
	EXPECT_TRUE(HAS(trace, "vfio_user_send:", uuid, "command=REGION_WRITE size=40 flags=0x0"));
	EXPECT_TRUE(HAS(trace, "vfio_user_recv:", uuid, "command=REGION_WRITE size=32 flags=0x1 error=0"));
	EXPECT_TRUE(HAS(trace, "vfio_user_state:", uuid, "detached:"));
	/* Replies carry their round trip (only server commands have 0). */
	EXPECT_FALSE(HAS(trace, "vfio_user_recv:", uuid, "REGION_", "rtt_ns=0"));
	if (_metadata->exit_code)
		TH_LOG("trace:\n%.3000s", trace);
}

/* A message DMA copy: the DMA served, both ways, and its messages. */
TEST(dma)
{
	char dir[256], uuid[VU_UUID_LEN + 1], want[64];
	int container = -1, group = -1, fd, ret;
	struct vu_server srv;
	void *buf;

	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	ret = trace_open(dir, sizeof(dir));
	if (ret == -ENOENT)
		SKIP(return, "no tracefs or no vfio_user_mdev events");
	ASSERT_EQ(0, ret);
	ASSERT_EQ(0, vu_server_start(&srv, SAMPLE, dma_args));
	vu_uuid_gen(uuid);
	ASSERT_EQ(0, vu_mdev_create(uuid));
	ASSERT_EQ(0, vu_mdev_attr_write(uuid, "dma_window", "0"));
	ASSERT_EQ(0, vu_mdev_attach(uuid, &srv));
	fd = vu_vfio_open(uuid, &container, &group);
	ASSERT_LE(0, fd);
	buf = dma_copy_4k(_metadata, fd, container);
	ASSERT_NE(MAP_FAILED, buf);
	vu_consumer_teardown(uuid, &fd, &group, &container);
	vu_server_stop(&srv);
	munmap(buf, 8192);
	ASSERT_EQ(0, trace_take(dir, trace, sizeof(trace)));

	snprintf(want, sizeof(want), "DMA_READ addr=%#llx count=4096 error=0",
		 IOVA);
	EXPECT_TRUE(HAS(trace, "vfio_user_dma:", uuid, want));
	snprintf(want, sizeof(want), "DMA_WRITE addr=%#llx count=4096 error=0",
		 IOVA + 4096);
	EXPECT_TRUE(HAS(trace, "vfio_user_dma:", uuid, want));
	/* The server's DMA_READ: header + access; our reply carries the data. */
	EXPECT_TRUE(HAS(trace, "vfio_user_recv:", uuid, "command=DMA_READ size=32 flags=0x0 error=0 rtt_ns=0"));
	EXPECT_TRUE(HAS(trace, "vfio_user_send:", uuid, "command=DMA_READ size=4128 flags=0x1"));
	EXPECT_TRUE(HAS(trace, "vfio_user_recv:", uuid, "command=DMA_WRITE size=4128 flags=0x0"));
	EXPECT_TRUE(HAS(trace, "vfio_user_send:", uuid, "command=DMA_WRITE size=32 flags=0x1"));
	if (_metadata->exit_code)
		TH_LOG("trace:\n%.3000s", trace);
}

static unsigned long long stat_latency_sum(const char *uuid)
{
	unsigned long long sum = 0, v;
	char name[32];
	int i;

	for (i = 0; i < 32; i++) {
		snprintf(name, sizeof(name), "latency_ns.%d", i);
		v = vu_mdev_stat(uuid, name);
		if (v == ~0ULL)
			return ~0ULL;
		sum += v;
	}
	return sum;
}

/* The counters after 3 reads, 2 writes, 1 eventfd and a message DMA copy. */
TEST(stats)
{
	char uuid[VU_UUID_LEN + 1], path[256];
	int container = -1, group = -1, fd, efd, i;
	uint8_t irqbuf[sizeof(struct vfio_irq_set) + sizeof(int)];
	struct vfio_irq_set *irq = (void *)irqbuf;
	uint64_t scratch = 1;
	struct vu_server srv;
	uint32_t magic;
	void *buf;

	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	if (access("/sys/kernel/debug/vfio_user_mdev", F_OK))
		mount("nodev", "/sys/kernel/debug", "debugfs", 0, NULL);
	if (access("/sys/kernel/debug/vfio_user_mdev", F_OK))
		SKIP(return, "no debugfs");
	ASSERT_EQ(0, vu_server_start(&srv, SAMPLE, dma_args));
	vu_uuid_gen(uuid);
	ASSERT_EQ(0, vu_mdev_create(uuid));
	snprintf(path, sizeof(path), "/sys/kernel/debug/vfio_user_mdev/%s/stats",
		 uuid);
	ASSERT_EQ(0, access(path, R_OK));
	EXPECT_EQ(0, vu_mdev_stat(uuid, "sent_msgs.VERSION"));
	ASSERT_EQ(0, vu_mdev_attr_write(uuid, "dma_window", "0"));
	ASSERT_EQ(0, vu_mdev_attach(uuid, &srv));
	fd = vu_vfio_open(uuid, &container, &group);
	ASSERT_LE(0, fd);
	EXPECT_EQ(1, vu_mdev_stat(uuid, "sent_msgs.VERSION"));
	EXPECT_EQ(1, vu_mdev_stat(uuid, "recv_msgs.VERSION"));
	EXPECT_EQ(0, stat_latency_sum(uuid));

	for (i = 0; i < 3; i++)
		ASSERT_EQ(0, vu_region_read(fd, BAR0, 0, &magic, 4));
	for (i = 0; i < 2; i++)
		ASSERT_EQ(0, vu_region_write(fd, BAR0, 0x40, &scratch, 8));
	EXPECT_EQ(3, vu_mdev_stat(uuid, "sent_msgs.REGION_READ"));
	EXPECT_EQ(3 * 32, vu_mdev_stat(uuid, "sent_bytes.REGION_READ"));
	EXPECT_EQ(3, vu_mdev_stat(uuid, "recv_msgs.REGION_READ"));
	EXPECT_EQ(3 * 36, vu_mdev_stat(uuid, "recv_bytes.REGION_READ"));
	EXPECT_EQ(2, vu_mdev_stat(uuid, "sent_msgs.REGION_WRITE"));
	EXPECT_EQ(2 * 40, vu_mdev_stat(uuid, "sent_bytes.REGION_WRITE"));
	EXPECT_EQ(2 * 32, vu_mdev_stat(uuid, "recv_bytes.REGION_WRITE"));
	/* posted_writes is off by default: both waited for their reply. */
	EXPECT_EQ(0, vu_mdev_stat(uuid, "posted"));
	EXPECT_EQ(5, stat_latency_sum(uuid));

	efd = eventfd(0, EFD_CLOEXEC);
	ASSERT_LE(0, efd);
	irq->argsz = sizeof(irqbuf);
	irq->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
	irq->index = VFIO_PCI_MSIX_IRQ_INDEX;
	irq->start = 0;
	irq->count = 1;
	memcpy(irq->data, &efd, sizeof(int));
	ASSERT_EQ(0, ioctl(fd, VFIO_DEVICE_SET_IRQS, irq));
	EXPECT_EQ(1, vu_mdev_stat(uuid, "irq_fds_sent"));
	EXPECT_EQ(1, vu_mdev_stat(uuid, "sent_msgs.DEVICE_SET_IRQS"));

	buf = dma_copy_4k(_metadata, fd, container);
	ASSERT_NE(MAP_FAILED, buf);
	EXPECT_EQ(4096, vu_mdev_stat(uuid, "dma_read_bytes"));
	EXPECT_EQ(4096, vu_mdev_stat(uuid, "dma_write_bytes"));
	EXPECT_EQ(1, vu_mdev_stat(uuid, "recv_msgs.DMA_READ"));
	EXPECT_EQ(1, vu_mdev_stat(uuid, "sent_msgs.DMA_WRITE"));
	EXPECT_EQ(0, vu_mdev_stat(uuid, "dma_errors"));
	EXPECT_EQ(0, vu_mdev_stat(uuid, "error_replies"));
	EXPECT_EQ(0, vu_mdev_stat(uuid, "timeouts"));
	EXPECT_EQ(0, vu_mdev_stat(uuid, "violations"));
	EXPECT_EQ(0, vu_mdev_stat(uuid, "broken"));
	EXPECT_EQ(10, stat_latency_sum(uuid));

	/* The server dies: one broken connection. */
	vu_server_stop(&srv);
	for (i = 0; i < 100 && vu_mdev_stat(uuid, "broken") != 1; i++)
		usleep(20000);
	EXPECT_EQ(1, vu_mdev_stat(uuid, "broken"));
	close(efd);
	vu_consumer_teardown(uuid, &fd, &group, &container);
	munmap(buf, 8192);
	/* The stats file goes with the device. */
	EXPECT_NE(0, access(path, F_OK));
}

TEST_HARNESS_MAIN
