// SPDX-License-Identifier: GPL-2.0-only
/*
 * The shared-memory DMA window: the server mmaps the window file the module
 * announces with its DMA_MAP, faults pin the consumer's pages, and the
 * consumer's unmap, close, detach, a server kill and a removal zap the
 * server's mappings and unpin before they return. The server is
 * window_server (built on the server library; it reaches the consumer's
 * memory only through its mappings) and the DMA sample.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/vfio.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "hostile.h"
#include "vfio_user_util.h"

#define WINDOW_SERVER	"window_server"
#define WIN_MAGIC	0x314e4957
#define W_MAGIC		0x00
#define W_MAPPED	0x04
#define W_TOUCH_IOVA	0x08
#define W_TOUCH_MODE	0x10
#define W_TOUCHES	0x18
#define W_SIGBUS	0x20
#define W_COPY_SRC	0x28
#define W_COPY_DST	0x30
#define W_COPY_LEN	0x38
#define W_COPY_GO	0x40
#define W_COPY_STATUS	0x44
#define W_MAPPED_BYTES	0x48

#define TOUCH_RW	1
#define TOUCH_RO	2

#define IOVA		(1ULL << 32)
#define BUF_SIZE	(4ULL << 20)
#define DEF_WINDOW	(1ULL << 40)
/* Long enough for a few thousand touches under TCG. */
#define WAIT_S		20.0

#define BAR0		VFIO_PCI_BAR0_REGION_INDEX

static int rd64(int fd, uint64_t reg, uint64_t *v)
{
	*v = 0;
	return vu_region_read(fd, BAR0, reg, v, 8);
}

static int wr64(int fd, uint64_t reg, uint64_t v)
{
	return vu_region_write(fd, BAR0, reg, &v, 8);
}

static uint64_t reg64(int fd, uint64_t reg)
{
	uint64_t v = ~0ULL;

	return rd64(fd, reg, &v) ? ~0ULL : v;
}

static unsigned long pinned_attr(const char *uuid)
{
	char buf[64];

	if (vu_mdev_attr_read(uuid, "dma_window_pinned", buf, sizeof(buf)))
		return ~0UL;
	return strtoul(buf, NULL, 0);
}

/* Waits until register @reg of @fd exceeds @than; false after WAIT_S. */
static bool wait_reg_above(int fd, uint64_t reg, uint64_t than)
{
	double end = vu_now() + WAIT_S;

	do {
		uint64_t v = reg64(fd, reg);

		if (v != ~0ULL && v > than)
			return true;
		usleep(2000);
	} while (vu_now() < end);
	return false;
}

FIXTURE(window) {
	struct vu_server srv;
	char uuid[VU_UUID_LEN + 1];
	int container, group, fd;
	uint8_t *buf;
	long pins0;
	int kmsg;
};

FIXTURE_SETUP(window)
{
	char prog[256];
	int ret;

	self->fd = self->group = self->container = -1;
	self->buf = MAP_FAILED;
	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	if (!helper_path(WINDOW_SERVER, prog, sizeof(prog)) || access(prog, X_OK))
		SKIP(return, "window_server not built");
	self->pins0 = vu_pinned_pages();
	self->kmsg = vu_kmsg_open();
	ret = vu_server_start_prog(&self->srv, prog, NULL);
	ASSERT_EQ(0, ret);
	vu_uuid_gen(self->uuid);
	ASSERT_EQ(0, vu_mdev_create(self->uuid));
	self->buf = mmap(NULL, BUF_SIZE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	ASSERT_NE(MAP_FAILED, self->buf);
}

FIXTURE_TEARDOWN(window)
{
	char line[256];

	vu_consumer_teardown(self->uuid, &self->fd, &self->group,
			     &self->container);
	vu_server_stop(&self->srv);
	if (self->buf != MAP_FAILED)
		munmap(self->buf, BUF_SIZE);
	/* Every pin of the window is gone with the device. */
	if (self->pins0 >= 0)
		EXPECT_EQ(self->pins0, vu_pinned_pages());
	EXPECT_FALSE(vu_kmsg_any(self->kmsg, "BUG:|WARNING:|Oops|INFO: task",
				 line, sizeof(line)))
		TH_LOG("kernel: %s", line);
	if (self->kmsg >= 0)
		close(self->kmsg);
}

static void open_dev(struct __test_metadata *_metadata,
		     FIXTURE_DATA(window) *self)
{
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
	self->fd = vu_vfio_open(self->uuid, &self->container, &self->group);
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(WIN_MAGIC, reg64(self->fd, W_MAGIC));
}

static int map_buf(FIXTURE_DATA(window) *self, uint32_t flags)
{
	return vu_dma_map(self->container, self->buf, IOVA, BUF_SIZE, flags);
}

#define RW	(VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE)

/* Starts the server's toucher on IOVA + @off and waits for its touches. */
static void touch(struct __test_metadata *_metadata, int fd, uint64_t off,
		  uint64_t mode)
{
	uint64_t n = reg64(fd, W_TOUCHES);

	ASSERT_EQ(0, wr64(fd, W_TOUCH_IOVA, IOVA + off));
	ASSERT_EQ(0, wr64(fd, W_TOUCH_MODE, mode));
	ASSERT_TRUE(wait_reg_above(fd, W_TOUCHES, n + 100))
		TH_LOG("the server's toucher does not touch");
}

TEST_F(window, attributes)
{
	char buf[64];
	const char *const bad_window[] = {
		"4096", "1G1", "281474978643968", "-2M", "\n", "x", "16384P",
		"99999999999999999999",
	};
	const char *const bad_chunk[] = {
		"0", "4096", "8796095119360", "17592186044416",
	};
	unsigned int i;

	ASSERT_EQ(0, vu_mdev_attr_read(self->uuid, "dma_window", buf, sizeof(buf)));
	EXPECT_EQ(DEF_WINDOW, strtoull(buf, NULL, 0));
	ASSERT_EQ(0, vu_mdev_attr_read(self->uuid, "dma_window_chunk", buf,
				       sizeof(buf)));
	EXPECT_EQ(DEF_WINDOW, strtoull(buf, NULL, 0));
	EXPECT_EQ(0, pinned_attr(self->uuid));
	for (i = 0; i < sizeof(bad_window) / sizeof(bad_window[0]); i++) {
		const char *v = bad_window[i];

		EXPECT_EQ(-EINVAL, vu_mdev_attr_write(self->uuid, "dma_window",
						      v))
			TH_LOG("dma_window '%s'", v);
	}
	for (i = 0; i < sizeof(bad_chunk) / sizeof(bad_chunk[0]); i++) {
		const char *v = bad_chunk[i];

		EXPECT_EQ(-EINVAL, vu_mdev_attr_write(self->uuid,
						      "dma_window_chunk", v))
			TH_LOG("dma_window_chunk '%s'", v);
	}
	EXPECT_EQ(0, vu_mdev_attr_write(self->uuid, "dma_window", "64G"));
	ASSERT_EQ(0, vu_mdev_attr_read(self->uuid, "dma_window", buf, sizeof(buf)));
	EXPECT_EQ(64ULL << 30, strtoull(buf, NULL, 0));
	EXPECT_EQ(0, vu_mdev_attr_write(self->uuid, "dma_window", "0"));
	EXPECT_EQ(0, vu_mdev_attr_write(self->uuid, "dma_window_chunk", "8T"));
}

/* The window reaches the server as fd-backed regions of the chunk size. */
TEST_F(window, announced_in_chunks)
{
	uint64_t v = 0;

	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "dma_window", "64G"));
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "dma_window_chunk", "16G"));
	open_dev(_metadata, self);
	ASSERT_EQ(0, vu_region_read(self->fd, BAR0, W_MAPPED, &v, 4));
	EXPECT_EQ(4, v);
	EXPECT_EQ(64ULL << 30, reg64(self->fd, W_MAPPED_BYTES));
}

/* dma_window 0: no fd-backed region; the server cannot touch anything. */
TEST_F(window, window_off)
{
	uint64_t v = 1;

	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "dma_window", "0"));
	open_dev(_metadata, self);
	ASSERT_EQ(0, vu_region_read(self->fd, BAR0, W_MAPPED, &v, 4));
	EXPECT_EQ(0, v);
	ASSERT_EQ(0, map_buf(self, RW));
	ASSERT_EQ(0, wr64(self->fd, W_COPY_SRC, IOVA));
	ASSERT_EQ(0, wr64(self->fd, W_COPY_DST, IOVA + 4096));
	ASSERT_EQ(0, wr64(self->fd, W_COPY_LEN, 4096));
	ASSERT_EQ(0, wr64(self->fd, W_COPY_GO, 1));
	EXPECT_EQ(2, reg64(self->fd, W_COPY_STATUS) & 0xffffffff);
}

/*
 * A copy between two consumer buffers through the server's mappings: the
 * data arrives, the pages are pinned while mapped and unpinned by the
 * consumer's unmap.
 */
TEST_F(window, copy_through_mappings)
{
	const uint64_t half = BUF_SIZE / 2;
	uint64_t i;

	open_dev(_metadata, self);
	for (i = 0; i < half; i++)
		self->buf[i] = i * 13 + 5;
	memset(self->buf + half, 0, half);
	ASSERT_EQ(0, map_buf(self, RW));
	ASSERT_EQ(0, wr64(self->fd, W_COPY_SRC, IOVA));
	ASSERT_EQ(0, wr64(self->fd, W_COPY_DST, IOVA + half));
	ASSERT_EQ(0, wr64(self->fd, W_COPY_LEN, half));
	ASSERT_EQ(0, wr64(self->fd, W_COPY_GO, 1));
	EXPECT_EQ(0, reg64(self->fd, W_COPY_STATUS) & 0xffffffff);
	EXPECT_EQ(0, memcmp(self->buf, self->buf + half, half));
	/* Fault-around: the whole buffer, in 2 MiB batches. */
	EXPECT_EQ(BUF_SIZE / 4096, pinned_attr(self->uuid));
	if (self->pins0 >= 0)
		EXPECT_EQ(self->pins0 + (long)(BUF_SIZE / 4096),
			  vu_pinned_pages());

	ASSERT_EQ(0, vu_dma_unmap(self->container, IOVA, BUF_SIZE));
	EXPECT_EQ(0, pinned_attr(self->uuid));
	if (self->pins0 >= 0)
		EXPECT_EQ(self->pins0, vu_pinned_pages());
	/* Gone from the server too: the same copy faults now. */
	ASSERT_EQ(0, wr64(self->fd, W_COPY_GO, 1));
	EXPECT_EQ(1, reg64(self->fd, W_COPY_STATUS) & 0xffffffff);
}

/*
 * The consumer unmaps while the server is touching the memory: the unmap
 * returns, the server gets SIGBUS and never reaches the page again, and
 * nothing stays pinned.
 */
TEST_F(window, unmap_while_touching)
{
	volatile uint64_t *word;
	uint64_t before, after, sig;
	double t0, dt;

	open_dev(_metadata, self);
	ASSERT_EQ(0, map_buf(self, RW));
	touch(_metadata, self->fd, 8192, TOUCH_RW);
	word = (volatile uint64_t *)(self->buf + 8192);
	EXPECT_NE(0, *word) TH_LOG("the server's writes do not arrive");

	sig = reg64(self->fd, W_SIGBUS);
	t0 = vu_now();
	ASSERT_EQ(0, vu_dma_unmap(self->container, IOVA, BUF_SIZE));
	dt = vu_now() - t0;
	EXPECT_GT(5.0, dt) TH_LOG("unmap took %.2f s", dt);
	EXPECT_TRUE(wait_reg_above(self->fd, W_SIGBUS, sig))
		TH_LOG("the server never faulted after the unmap");
	before = *word;
	usleep(200000);
	after = *word;
	EXPECT_EQ(before, after) TH_LOG("the server still writes the page");
	EXPECT_EQ(0, pinned_attr(self->uuid));
	if (self->pins0 >= 0)
		EXPECT_EQ(self->pins0, vu_pinned_pages());

	/* Mapped again (other pages behind it): touches resume there. */
	ASSERT_EQ(0, map_buf(self, RW));
	ASSERT_EQ(0, wr64(self->fd, W_TOUCH_MODE, TOUCH_RW));
	EXPECT_TRUE(wait_reg_above(self->fd, W_TOUCHES,
				   reg64(self->fd, W_TOUCHES) + 100));
	EXPECT_NE(after, *word);
	ASSERT_EQ(0, wr64(self->fd, W_TOUCH_MODE, 0));
}

/* An IOVA the consumer mapped read-only: reads work, a write is SIGBUS. */
TEST_F(window, read_only_iova)
{
	uint64_t sig;

	open_dev(_metadata, self);
	self->buf[0] = 0x5a;
	ASSERT_EQ(0, map_buf(self, VFIO_DMA_MAP_FLAG_READ));
	touch(_metadata, self->fd, 0, TOUCH_RO);
	EXPECT_EQ(0, reg64(self->fd, W_SIGBUS));

	sig = reg64(self->fd, W_SIGBUS);
	ASSERT_EQ(0, wr64(self->fd, W_TOUCH_MODE, TOUCH_RW));
	EXPECT_TRUE(wait_reg_above(self->fd, W_SIGBUS, sig + 2));
	ASSERT_EQ(0, wr64(self->fd, W_TOUCH_MODE, 0));
	EXPECT_EQ(0x5a, self->buf[0]);
	ASSERT_EQ(0, vu_dma_unmap(self->container, IOVA, BUF_SIZE));
}

/* An IOVA nobody mapped: SIGBUS, nothing pinned. */
TEST_F(window, unmapped_iova)
{
	open_dev(_metadata, self);
	ASSERT_EQ(0, wr64(self->fd, W_TOUCH_IOVA, IOVA));
	ASSERT_EQ(0, wr64(self->fd, W_TOUCH_MODE, TOUCH_RW));
	EXPECT_TRUE(wait_reg_above(self->fd, W_SIGBUS, 2));
	ASSERT_EQ(0, wr64(self->fd, W_TOUCH_MODE, 0));
	EXPECT_EQ(0, reg64(self->fd, W_TOUCHES));
	EXPECT_EQ(0, pinned_attr(self->uuid));
}

static volatile bool churn_stop;

/* Keeps the consumer's mmap lock busy (write side) while pins take it. */
static void *mm_churn(void *arg)
{
	while (!churn_stop) {
		char *p = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			break;
		memset(p, 1, 2 << 20);
		munmap(p, 2 << 20);
	}
	return NULL;
}

/*
 * 1,000 map/unmap cycles while the server touches, with the consumer's
 * mm busy too (lockdep on the debug kernel sees both mmap locks taken).
 */
TEST_F_TIMEOUT(window, map_unmap_cycles, 600)
{
	int cycles = getenv("VU_WINDOW_CYCLES") ? atoi(getenv("VU_WINDOW_CYCLES")) :
		     1000;
	uint64_t touched = 0;
	pthread_t churn;
	int i;

	open_dev(_metadata, self);
	churn_stop = false;
	ASSERT_EQ(0, pthread_create(&churn, NULL, mm_churn, NULL));
	ASSERT_EQ(0, wr64(self->fd, W_TOUCH_IOVA, IOVA + 4096));
	ASSERT_EQ(0, wr64(self->fd, W_TOUCH_MODE, TOUCH_RW));
	for (i = 0; i < cycles; i++) {
		ASSERT_EQ(0, map_buf(self, RW)) TH_LOG("cycle %d", i);
		if (!(i % 50)) {
			uint64_t n = reg64(self->fd, W_TOUCHES);

			EXPECT_TRUE(wait_reg_above(self->fd, W_TOUCHES, n));
		}
		ASSERT_EQ(0, vu_dma_unmap(self->container, IOVA, BUF_SIZE))
			TH_LOG("cycle %d", i);
	}
	touched = reg64(self->fd, W_TOUCHES);
	churn_stop = true;
	pthread_join(churn, NULL);
	ASSERT_EQ(0, wr64(self->fd, W_TOUCH_MODE, 0));
	EXPECT_LT(0, touched);
	EXPECT_EQ(0, pinned_attr(self->uuid));
	if (self->pins0 >= 0)
		EXPECT_EQ(self->pins0, vu_pinned_pages());
	TH_LOG("%d cycles, %llu touches, %llu SIGBUS", cycles,
	       (unsigned long long)touched,
	       (unsigned long long)reg64(self->fd, W_SIGBUS));
}

/* The consumer closes the device with pages pinned: they go. */
TEST_F(window, close_unpins)
{
	open_dev(_metadata, self);
	ASSERT_EQ(0, map_buf(self, RW));
	touch(_metadata, self->fd, 0, TOUCH_RW);
	EXPECT_LT(0, pinned_attr(self->uuid));
	ASSERT_EQ(0, wr64(self->fd, W_TOUCH_MODE, 0));
	vu_consumer_teardown(self->uuid, &self->fd, &self->group,
			     &self->container);
	if (self->pins0 >= 0)
		EXPECT_EQ(self->pins0, vu_pinned_pages());
}

/*
 * A detach while the server keeps its mapping and touches it: the window
 * is revoked (the server, alive, faults from then on and its writes stop
 * arriving), and no page stays pinned; a new server's window works.
 */
/* Two waits for the server's touches: longer than 30 s on the debug kernel. */
TEST_F_TIMEOUT(window, detach_revokes, 120)
{
	volatile uint64_t *word = (volatile uint64_t *)self->buf;
	struct vu_server srv2 = { };
	uint64_t before, after;
	char prog[256];

	open_dev(_metadata, self);
	ASSERT_EQ(0, map_buf(self, RW));
	touch(_metadata, self->fd, 0, TOUCH_RW);
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "socket", "\n"));
	EXPECT_EQ(0, pinned_attr(self->uuid));
	if (self->pins0 >= 0)
		EXPECT_EQ(self->pins0, vu_pinned_pages());
	before = *word;
	usleep(300000);
	after = *word;
	EXPECT_EQ(before, after) TH_LOG("the detached server still writes");
	EXPECT_EQ(0, kill(self->srv.pid, 0)) TH_LOG("the old server died");

	ASSERT_TRUE(helper_path(WINDOW_SERVER, prog, sizeof(prog)) != NULL);
	ASSERT_EQ(0, vu_server_start_prog(&srv2, prog, NULL));
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &srv2));
	EXPECT_EQ(WIN_MAGIC, reg64(self->fd, W_MAGIC));
	touch(_metadata, self->fd, 0, TOUCH_RW);
	EXPECT_NE(after, *word);
	EXPECT_LT(0, pinned_attr(self->uuid));
	ASSERT_EQ(0, wr64(self->fd, W_TOUCH_MODE, 0));
	vu_consumer_teardown(self->uuid, &self->fd, &self->group,
			     &self->container);
	vu_server_stop(&srv2);
}

/* A server killed while it holds pinned mappings: the pins go at once. */
TEST_F(window, server_kill_unpins)
{
	double end;

	open_dev(_metadata, self);
	ASSERT_EQ(0, map_buf(self, RW));
	touch(_metadata, self->fd, 0, TOUCH_RW);
	EXPECT_LT(0, pinned_attr(self->uuid));
	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGKILL));
	end = vu_now() + WAIT_S;
	while (pinned_attr(self->uuid) && vu_now() < end)
		usleep(10000);
	EXPECT_EQ(0, pinned_attr(self->uuid));
	if (self->pins0 >= 0)
		EXPECT_EQ(self->pins0, vu_pinned_pages());
}

/* Removal with the server holding pinned mappings and the consumer gone. */
TEST_F(window, remove_unpins)
{
	open_dev(_metadata, self);
	ASSERT_EQ(0, map_buf(self, RW));
	touch(_metadata, self->fd, 0, TOUCH_RW);
	close(self->fd);
	self->fd = -1;
	if (self->pins0 >= 0)
		EXPECT_EQ(self->pins0, vu_pinned_pages());
	ASSERT_EQ(0, vu_mdev_remove(self->uuid));
	EXPECT_FALSE(vu_mdev_exists(self->uuid));
}

/* The DMA sample's BAR0 (tools/vfio-user/sample.h). */
#define DMA_REG_SRC		0x08
#define DMA_REG_DST		0x10
#define DMA_REG_LEN		0x18
#define DMA_REG_DOORBELL	0x20
#define DMA_REG_STATUS		0x24
#define DMA_REG_SHM_BYTES	0x48
#define DMA_REG_RD_MSGS		0x50
#define DMA_REG_WR_MSGS		0x58
#define DMA_STATUS_DONE		2

/*
 * The DMA sample (the library's vus_dev__dma_read/write) copies 4 MiB
 * through its mappings of the window: the data arrives and not one
 * DMA_READ or DMA_WRITE goes over the socket; with dma_window 0 the same
 * copy goes by message. 90 s: a 4 MiB copy took about 30 s on the debug
 * kernel under TCG beside other work.
 */
static void sample_copy(struct __test_metadata *_metadata,
			FIXTURE_DATA(window) *self, bool window)
{
	const uint64_t half = BUF_SIZE / 2;
	struct vu_server sample = { };
	uint32_t status = 0;
	uint64_t shm, rd, wr, i;

	ASSERT_EQ(0, vu_server_start(&sample, "vfio-user-sample", DMA_ARGS));
	if (!window)
		ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "dma_window", "0"));
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "timeout_ms", "60000"));
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &sample));
	self->fd = vu_vfio_open(self->uuid, &self->container, &self->group);
	ASSERT_LE(0, self->fd);
	for (i = 0; i < half; i++)
		self->buf[i] = i * 11 + 7;
	memset(self->buf + half, 0, half);
	ASSERT_EQ(0, map_buf(self, RW));
	ASSERT_EQ(0, wr64(self->fd, DMA_REG_SRC, IOVA));
	ASSERT_EQ(0, wr64(self->fd, DMA_REG_DST, IOVA + half));
	ASSERT_EQ(0, wr64(self->fd, DMA_REG_LEN, half));
	ASSERT_EQ(0, vu_region_write(self->fd, BAR0, DMA_REG_DOORBELL, &status, 4));
	ASSERT_EQ(0, vu_region_read(self->fd, BAR0, DMA_REG_STATUS, &status, 4));
	EXPECT_EQ(DMA_STATUS_DONE, status);
	EXPECT_EQ(0, memcmp(self->buf, self->buf + half, half));
	shm = reg64(self->fd, DMA_REG_SHM_BYTES);
	rd = reg64(self->fd, DMA_REG_RD_MSGS);
	wr = reg64(self->fd, DMA_REG_WR_MSGS);
	if (window) {
		EXPECT_EQ(half, shm);
		EXPECT_EQ(0, rd + wr) TH_LOG("%llu DMA_READ, %llu DMA_WRITE",
					     (unsigned long long)rd,
					     (unsigned long long)wr);
		EXPECT_EQ(BUF_SIZE / 4096, pinned_attr(self->uuid));
	} else {
		EXPECT_EQ(0, shm);
		EXPECT_LT(0, rd);
		EXPECT_LT(0, wr);
		EXPECT_EQ(0, pinned_attr(self->uuid));
	}
	ASSERT_EQ(0, vu_dma_unmap(self->container, IOVA, BUF_SIZE));
	EXPECT_EQ(0, pinned_attr(self->uuid));
	vu_consumer_teardown(self->uuid, &self->fd, &self->group,
			     &self->container);
	vu_server_stop(&sample);
}

TEST_F_TIMEOUT(window, sample_copy_no_messages, 90)
{
	sample_copy(_metadata, self, true);
}

TEST_F_TIMEOUT(window, sample_copy_by_message_without_window, 90)
{
	sample_copy(_metadata, self, false);
}

/*
 * Every test needs window_server, which a kernel tree builds only beside the
 * server library: without it the whole program is one SKIP (exit 4), not a
 * pass of skipped tests.
 */
int main(int argc, char **argv)
{
	char prog[256];

	if (!helper_path(WINDOW_SERVER, prog, sizeof(prog)) || access(prog, X_OK))
		ksft_exit_skip("window_server not built (it needs the server library)\n");
	return test_harness_run(argc, argv);
}
