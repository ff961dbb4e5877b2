// SPDX-License-Identifier: GPL-2.0-only
/*
 * Mmap passthrough: a region the server backs with a memfd (the null
 * sample's BAR4 with --mmap, two sparse areas) gets the MMAP flag and its
 * areas, a consumer mmap of an area maps the server's memory, and detach,
 * a killed server, a re-attach, a reset and the close of the device revoke
 * the mapping: later accesses get SIGBUS or the new server's memory, never
 * a dead server's pages. Also: the attach takes the server's fds without
 * leaving any in the writer's fd table.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "kselftest_harness.h"
#include "vfio_user_util.h"

#define SAMPLE		"vfio-user-sample"
#define BAR0		VFIO_PCI_BAR0_REGION_INDEX
#define BAR4		VFIO_PCI_BAR4_REGION_INDEX
#define REG_BAR4_OFFSET	0x28
#define REG_BAR4_DATA	0x30
#define BAR4_SIZE	(64 * 1024)
#define AREA_SIZE	(16 * 1024)
#define AREA2		(32 * 1024)
#define WAIT_S		10.0

static const char *const mmap_args[] = {
	"--device", "null", "--mmap", NULL,
};
static const char *const plain_args[] = { "--device", "null", NULL };

static sigjmp_buf touch_jmp;

static void touch_sigbus(int sig)
{
	siglongjmp(touch_jmp, 1);
}

/* Reads or writes 8 bytes at @p; false if that raised SIGBUS. */
static bool touch(volatile uint64_t *p, bool write, uint64_t *val)
{
	struct sigaction sa = { .sa_handler = touch_sigbus }, old;
	bool ok = false;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &old);
	if (!sigsetjmp(touch_jmp, 1)) {
		if (write)
			*p = *val;
		else
			*val = *p;
		ok = true;
	}
	sigaction(SIGBUS, &old, NULL);
	return ok;
}

/* The server's view of BAR4 at @off, through BAR0 (region messages). */
static int server_read(int fd, uint64_t off, uint64_t *val)
{
	int ret = vu_region_write(fd, BAR0, REG_BAR4_OFFSET, &off, 8);

	return ret ? ret : vu_region_read(fd, BAR0, REG_BAR4_DATA, val, 8);
}

static int server_write(int fd, uint64_t off, uint64_t val)
{
	int ret = vu_region_write(fd, BAR0, REG_BAR4_OFFSET, &off, 8);

	return ret ? ret : vu_region_write(fd, BAR0, REG_BAR4_DATA, &val, 8);
}

static unsigned long mmap_pages(const char *uuid)
{
	char buf[64];

	if (vu_mdev_attr_read(uuid, "mmap_pages", buf, sizeof(buf)))
		return ~0UL;
	return strtoul(buf, NULL, 0);
}

static bool wait_pages(const char *uuid, unsigned long n)
{
	double end = vu_now() + WAIT_S;

	do {
		if (mmap_pages(uuid) == n)
			return true;
		usleep(10000);
	} while (vu_now() < end);
	return false;
}

static bool wait_state(const char *uuid, const char *prefix)
{
	double end = vu_now() + WAIT_S;
	char buf[256];

	do {
		if (!vu_mdev_attr_read(uuid, "state", buf, sizeof(buf)) &&
		    !strncmp(buf, prefix, strlen(prefix)))
			return true;
		usleep(10000);
	} while (vu_now() < end);
	return false;
}

static int open_fds(void)
{
	struct dirent *d;
	int n = 0;
	DIR *dir;

	dir = opendir("/proc/self/fd");
	if (!dir)
		return -1;
	while ((d = readdir(dir)))
		n += d->d_name[0] != '.';
	closedir(dir);
	return n;
}

/* GET_REGION_INFO with its capability chain; @buf of @len bytes. */
static struct vfio_region_info *region_info(int fd, unsigned int index,
					    void *buf, size_t len)
{
	struct vfio_region_info *info = buf;

	memset(buf, 0, len);
	info->argsz = len;
	info->index = index;
	return ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, info) ? NULL : info;
}

static struct vfio_region_info_cap_sparse_mmap *
sparse_cap(struct vfio_region_info *info)
{
	uint32_t off = info->cap_offset;

	if (!(info->flags & VFIO_REGION_INFO_FLAG_CAPS))
		return NULL;
	while (off && off + sizeof(struct vfio_info_cap_header) <= info->argsz) {
		struct vfio_info_cap_header *h = (void *)((char *)info + off);

		if (h->id == VFIO_REGION_INFO_CAP_SPARSE_MMAP)
			return (void *)h;
		off = h->next;
	}
	return NULL;
}

FIXTURE(mmap) {
	struct vu_server srv;
	char uuid[VU_UUID_LEN + 1];
	int container, group, fd;
	uint64_t bar4;
	volatile uint64_t *map;
	int kmsg;
};

FIXTURE_SETUP(mmap)
{
	struct vfio_region_info *info;
	uint64_t buf[64];

	self->fd = self->group = self->container = -1;
	self->map = MAP_FAILED;
	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	self->kmsg = vu_kmsg_open();
	ASSERT_EQ(0, vu_server_start(&self->srv, SAMPLE, mmap_args));
	vu_uuid_gen(self->uuid);
	self->fd = vu_open_attached(self->uuid, &self->srv, &self->container,
				    &self->group);
	ASSERT_LE(0, self->fd);
	info = region_info(self->fd, BAR4, buf, sizeof(buf));
	ASSERT_NE(NULL, info);
	self->bar4 = info->offset;
}

FIXTURE_TEARDOWN(mmap)
{
	char line[256];

	if (self->map != MAP_FAILED)
		munmap((void *)self->map, AREA_SIZE);
	vu_consumer_teardown(self->uuid, &self->fd, &self->group,
			     &self->container);
	vu_server_stop(&self->srv);
	EXPECT_FALSE(vu_kmsg_any(self->kmsg, "BUG:|WARNING:|Oops|INFO: task",
				 line, sizeof(line)))
		TH_LOG("kernel: %s", line);
}

static volatile uint64_t *map_area(int fd, uint64_t off, size_t len, int prot,
				   int flags)
{
	void *p = mmap(NULL, len, prot, flags, fd, off);

	return p == MAP_FAILED ? MAP_FAILED : p;
}

/* BAR4 is mmap-able, with the server's two areas; BAR0 is not. */
TEST_F(mmap, region_info)
{
	struct vfio_region_info_cap_sparse_mmap *sp;
	struct vfio_region_info *info;
	uint64_t buf[64];

	info = region_info(self->fd, BAR4, buf, sizeof(buf));
	ASSERT_NE(NULL, info);
	EXPECT_TRUE(info->flags & VFIO_REGION_INFO_FLAG_MMAP);
	EXPECT_EQ(BAR4_SIZE, info->size);
	sp = sparse_cap(info);
	ASSERT_NE(NULL, sp);
	ASSERT_EQ(2, sp->nr_areas);
	EXPECT_EQ(0, sp->areas[0].offset);
	EXPECT_EQ(AREA_SIZE, sp->areas[0].size);
	EXPECT_EQ(AREA2, sp->areas[1].offset);
	EXPECT_EQ(AREA_SIZE, sp->areas[1].size);

	info = region_info(self->fd, BAR0, buf, sizeof(buf));
	ASSERT_NE(NULL, info);
	EXPECT_FALSE(info->flags & VFIO_REGION_INFO_FLAG_MMAP);
}

/* A write through the mapping reaches the server, and the reverse. */
TEST_F(mmap, shared_both_ways)
{
	uint64_t v;
	int i;

	self->map = map_area(self->fd, self->bar4, AREA_SIZE,
			     PROT_READ | PROT_WRITE, MAP_SHARED);
	ASSERT_NE(MAP_FAILED, self->map);

	for (i = 0; i < 64; i++) {
		v = 0x5a5a000000000000ULL | i;
		ASSERT_TRUE(touch(&self->map[i * 32], true, &v));
	}
	/* 64 writes 256 bytes apart: the area's 4 pages, mapped. */
	EXPECT_EQ(AREA_SIZE / 4096, mmap_pages(self->uuid));

	for (i = 0; i < 64; i++) {
		ASSERT_EQ(0, server_read(self->fd, i * 256, &v));
		EXPECT_EQ(0x5a5a000000000000ULL | i, v);
	}
	ASSERT_EQ(0, server_write(self->fd, 0x3000, 0x1122334455667788ULL));
	ASSERT_TRUE(touch(&self->map[0x3000 / 8], false, &v));
	EXPECT_EQ(0x1122334455667788ULL, v);
}

/* Only shared mappings of the server's areas. */
TEST_F(mmap, refused)
{
	EXPECT_EQ(MAP_FAILED, map_area(self->fd, self->bar4, AREA_SIZE,
				       PROT_READ | PROT_WRITE, MAP_PRIVATE));
	/* Across the end of the first area. */
	EXPECT_EQ(MAP_FAILED, map_area(self->fd, self->bar4, 2 * AREA_SIZE,
				       PROT_READ, MAP_SHARED));
	/* The hole between the areas. */
	EXPECT_EQ(MAP_FAILED, map_area(self->fd, self->bar4 + AREA_SIZE,
				       4096, PROT_READ, MAP_SHARED));
	/* Past the region. */
	EXPECT_EQ(MAP_FAILED, map_area(self->fd, self->bar4 + BAR4_SIZE,
				       4096, PROT_READ, MAP_SHARED));
	EXPECT_EQ(MAP_FAILED, map_area(self->fd, 0, 4096, PROT_READ,
				       MAP_SHARED));
	/* The second area maps. */
	self->map = map_area(self->fd, self->bar4 + AREA2, AREA_SIZE,
			     PROT_READ | PROT_WRITE, MAP_SHARED);
	EXPECT_NE(MAP_FAILED, self->map);
}

/*
 * The server dies: the mapping gets SIGBUS and holds no page; a new
 * server attaches: the mapping shows its memory, not the old pattern.
 */
TEST_F(mmap, server_killed_then_new_server)
{
	uint64_t v = 0xdeadbeefcafef00dULL;

	self->map = map_area(self->fd, self->bar4, AREA_SIZE,
			     PROT_READ | PROT_WRITE, MAP_SHARED);
	ASSERT_NE(MAP_FAILED, self->map);
	ASSERT_TRUE(touch(&self->map[16], true, &v));

	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGKILL));
	ASSERT_TRUE(wait_state(self->uuid, "broken"));
	/* The broken connection's work revokes the mapping, promptly. */
	ASSERT_TRUE(wait_pages(self->uuid, 0));
	ASSERT_FALSE(touch(&self->map[16], false, &v));
	EXPECT_EQ(0, mmap_pages(self->uuid));

	ASSERT_EQ(0, vu_server_restart(&self->srv));
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
	v = 1;
	ASSERT_TRUE(touch(&self->map[16], false, &v));
	EXPECT_EQ(0, v);
	v = 0x600d;
	ASSERT_TRUE(touch(&self->map[17], true, &v));
	ASSERT_EQ(0, server_read(self->fd, 17 * 8, &v));
	EXPECT_EQ(0x600d, v);
}

/* Detach revokes; the server lives on and keeps what was written. */
TEST_F(mmap, detach_revokes)
{
	uint64_t v = 42;

	self->map = map_area(self->fd, self->bar4, AREA_SIZE,
			     PROT_READ | PROT_WRITE, MAP_SHARED);
	ASSERT_NE(MAP_FAILED, self->map);
	ASSERT_TRUE(touch(&self->map[0], true, &v));
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "socket", "\n"));
	EXPECT_FALSE(touch(&self->map[0], false, &v));
	EXPECT_EQ(0, mmap_pages(self->uuid));
	/* The same server again: its memory, with what was written. */
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
	ASSERT_TRUE(touch(&self->map[0], false, &v));
	EXPECT_EQ(42, v);
}

/* A reset zaps; the pages fault in again, the memory unchanged. */
TEST_F(mmap, reset_zaps)
{
	uint64_t v = 7;

	self->map = map_area(self->fd, self->bar4, AREA_SIZE,
			     PROT_READ | PROT_WRITE, MAP_SHARED);
	ASSERT_NE(MAP_FAILED, self->map);
	ASSERT_TRUE(touch(&self->map[3], true, &v));
	ASSERT_EQ(1, mmap_pages(self->uuid));
	ASSERT_EQ(0, ioctl(self->fd, VFIO_DEVICE_RESET));
	EXPECT_EQ(0, mmap_pages(self->uuid));
	ASSERT_TRUE(touch(&self->map[3], false, &v));
	EXPECT_EQ(7, v);
	EXPECT_EQ(1, mmap_pages(self->uuid));
}

/* Closing the device revokes what the consumer still maps. */
TEST_F(mmap, close_revokes)
{
	uint64_t v = 9;

	self->map = map_area(self->fd, self->bar4, AREA_SIZE,
			     PROT_READ | PROT_WRITE, MAP_SHARED);
	ASSERT_NE(MAP_FAILED, self->map);
	ASSERT_TRUE(touch(&self->map[0], true, &v));
	close(self->fd);
	self->fd = -1;
	EXPECT_FALSE(touch(&self->map[0], false, &v));
	EXPECT_EQ(0, mmap_pages(self->uuid));
}

/* Removing the device with the mapping still there: SIGBUS, no report. */
TEST_F(mmap, remove_with_mapping)
{
	uint64_t v = 5;

	self->map = map_area(self->fd, self->bar4, AREA_SIZE,
			     PROT_READ | PROT_WRITE, MAP_SHARED);
	ASSERT_NE(MAP_FAILED, self->map);
	ASSERT_TRUE(touch(&self->map[0], true, &v));
	vu_consumer_teardown(self->uuid, &self->fd, &self->group,
			     &self->container);
	EXPECT_FALSE(vu_mdev_exists(self->uuid));
	EXPECT_FALSE(touch(&self->map[0], false, &v));
}

/*
 * The attach took the server's fds (BAR4 is mmap-able) and left none in
 * our fd table, the writer's.
 */
TEST_F(mmap, no_fd_left_in_writer)
{
	struct vfio_region_info *info;
	int before, after, i;
	uint64_t buf[64];

	for (i = 0; i < 3; i++) {
		ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "socket", "\n"));
		before = open_fds();
		ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
		after = open_fds();
		EXPECT_EQ(before, after);
	}
	info = region_info(self->fd, BAR4, buf, sizeof(buf));
	ASSERT_NE(NULL, info);
	EXPECT_TRUE(info->flags & VFIO_REGION_INFO_FLAG_MMAP);
}

/*
 * Under an open consumer, a server that does not back BAR4 with memory is
 * another device shape: the re-attach is refused (EBUSY), rather than the
 * consumer's mapping turning SIGBUS.
 */
TEST_F(mmap, reattach_without_memory_refused)
{
	struct vu_server plain;
	uint64_t v = 3;

	self->map = map_area(self->fd, self->bar4, AREA_SIZE,
			     PROT_READ | PROT_WRITE, MAP_SHARED);
	ASSERT_NE(MAP_FAILED, self->map);
	ASSERT_TRUE(touch(&self->map[0], true, &v));
	ASSERT_EQ(0, vu_server_start(&plain, SAMPLE, plain_args));
	EXPECT_EQ(-EBUSY, vu_mdev_attach(self->uuid, &plain));
	vu_server_stop(&plain);
	/* The original server again: its memory, mapped again. */
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
	ASSERT_TRUE(touch(&self->map[0], false, &v));
	EXPECT_EQ(3, v);
}

/*
 * posted_writes does not post on a device with mappable server memory: a
 * store through the mapping could overtake a write still in the socket.
 */
TEST_F(mmap, writes_not_posted)
{
	unsigned long long recv;
	uint64_t off = 8;

	if (!vu_have_stats(self->uuid))
		SKIP(return, "no debugfs stats");
	/* Read at attach: attach again with it set. */
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "posted_writes", "1"));
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
	recv = vu_mdev_stat(self->uuid, "recv_msgs.REGION_WRITE");
	ASSERT_EQ(0, vu_region_write(self->fd, BAR0, REG_BAR4_OFFSET, &off, 8));
	EXPECT_EQ(recv + 1, vu_mdev_stat(self->uuid, "recv_msgs.REGION_WRITE"));
	EXPECT_EQ(0, vu_mdev_stat(self->uuid, "posted"));
}

/* A server that offers no fd: no MMAP flag, and mmap is refused. */
TEST(no_fd_no_mmap)
{
	struct vfio_region_info *info;
	char uuid[VU_UUID_LEN + 1];
	int container = -1, group = -1, fd;
	struct vu_server srv;
	uint64_t buf[64];

	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	ASSERT_EQ(0, vu_server_start(&srv, SAMPLE, plain_args));
	vu_uuid_gen(uuid);
	fd = vu_open_attached(uuid, &srv, &container, &group);
	ASSERT_LE(0, fd);
	info = region_info(fd, BAR4, buf, sizeof(buf));
	ASSERT_NE(NULL, info);
	EXPECT_FALSE(info->flags & VFIO_REGION_INFO_FLAG_MMAP);
	EXPECT_EQ(MAP_FAILED, map_area(fd, info->offset, 4096, PROT_READ,
				       MAP_SHARED));
	vu_consumer_teardown(uuid, &fd, &group, &container);
	vu_server_stop(&srv);
}

TEST_HARNESS_MAIN
