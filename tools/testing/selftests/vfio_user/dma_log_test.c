// SPDX-License-Identifier: GPL-2.0-only
/*
 * The mdev's own DMA dirty-page log: VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
 * _REPORT and _STOP (drivers/vfio/user/dirty.c), what QEMU uses to find
 * the pages a device wrote during a live migration when no container logs
 * them (iommufd). Run through the container and through iommufd.
 *
 * The module offers the log exactly where the kernel can fill the
 * consumer's bitmap: where iova_bitmap_set() is a kernel symbol (6.1's
 * vfio.ko; since 6.7 only with CONFIG_IOMMUFD_DRIVER, as on the test VM's
 * debug kernel). Elsewhere the one test that runs checks it is not
 * offered.
 */
#define _GNU_SOURCE
#include <errno.h>
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

/* The DMA sample's BAR0 (tools/vfio-user/sample.h). */
#define REG_SRC			0x08
#define REG_DST			0x10
#define REG_LEN			0x18
#define REG_DOORBELL		0x20
#define REG_STATUS		0x24
#define REG_IRQ_CTRL		0x2c
#define DOORBELL_COPY		1
#define STATUS_DONE		2

#define PG			4096ULL
/* The consumer's buffer: source in the first half, destination after. */
#define BUF_SIZE		(4ULL << 20)
#define BUF_PAGES		(BUF_SIZE / PG)
#define BUF_IOVA		(1ULL << 32)

static const char *const dma_args[] = { "--device", "dma", NULL };

/* Whether /proc/kallsyms names iova_bitmap_set (the log needs it). */
static bool kernel_has_iova_bitmap(void)
{
	char line[256];
	bool found = false;
	FILE *f = fopen("/proc/kallsyms", "r");

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char *name = strrchr(line, ' ');

		found = name && !strncmp(name + 1, "iova_bitmap_set", 15) &&
			(name[16] == '\n' || name[16] == '\t');
	}
	fclose(f);
	return found;
}

/*
 * START on @nr ranges of (iova, length) pairs, page size *@pgsize; on
 * success *@pgsize is the one the log uses.
 */
static int log_start(int fd, const uint64_t *ranges, unsigned int nr,
		     uint64_t *pgsize)
{
	struct vfio_device_feature_dma_logging_range r[4];
	struct vfio_device_feature_dma_logging_control c = {
		.page_size = *pgsize,
		.num_ranges = nr,
		.ranges = (uintptr_t)r,
	};
	unsigned int i;
	int ret;

	if (nr > 4)
		return -E2BIG;
	for (i = 0; i < nr; i++) {
		r[i].iova = ranges[2 * i];
		r[i].length = ranges[2 * i + 1];
	}
	ret = vu_device_feature(fd, VFIO_DEVICE_FEATURE_SET |
		      VFIO_DEVICE_FEATURE_DMA_LOGGING_START, &c, sizeof(c));
	if (!ret)
		*pgsize = c.page_size;
	return ret;
}

static int log_stop(int fd)
{
	return vu_device_feature(fd, VFIO_DEVICE_FEATURE_SET |
		       VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP, NULL, 0);
}

/*
 * REPORT of @npages 4 KiB pages from buffer page @pg into @bits, at the
 * bits of those pages (BUF_PAGES bits in all, the others clear).
 */
static int log_report_part(int fd, uint64_t *bits, unsigned int pg,
			   unsigned int npages)
{
	uint64_t part[BUF_PAGES / 64] = { 0 };
	struct vfio_device_feature_dma_logging_report r = {
		.iova = BUF_IOVA + pg * PG,
		.length = npages * PG,
		.page_size = PG,
		.bitmap = (uintptr_t)part,
	};
	unsigned int i;
	int ret;

	memset(bits, 0, BUF_PAGES / 8);
	ret = vu_device_feature(fd, VFIO_DEVICE_FEATURE_GET |
		      VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, &r, sizeof(r));
	for (i = 0; !ret && i < npages; i++)
		if (part[i / 64] >> (i % 64) & 1)
			bits[(pg + i) / 64] |= 1ULL << ((pg + i) % 64);
	return ret;
}

/* REPORT of the whole buffer at 4 KiB pages into @bits (BUF_PAGES bits). */
static int log_report(int fd, uint64_t *bits)
{
	return log_report_part(fd, bits, 0, BUF_PAGES);
}

static bool bit(const uint64_t *bits, unsigned int pg)
{
	return bits[pg / 64] >> (pg % 64) & 1;
}

static unsigned int count_bits(const uint64_t *bits)
{
	unsigned int pg, n = 0;

	for (pg = 0; pg < BUF_PAGES; pg++)
		n += bit(bits, pg);
	return n;
}

FIXTURE(dlog) {
	struct vu_server srv;
	char uuid[VU_UUID_LEN + 1];
	int container, group, fd;
	bool created;
	uint8_t *buf;
	uint64_t bits[BUF_PAGES / 64];
};

FIXTURE_SETUP(dlog)
{
	memset(&self->srv, 0, sizeof(self->srv));
	self->container = self->group = self->fd = -1;
	self->created = false;
	self->buf = MAP_FAILED;
	if (!vu_module_loaded())
		SKIP(return, "vfio_user_mdev is not loaded");
}

FIXTURE_TEARDOWN(dlog)
{
	if (self->created)
		vu_consumer_teardown(self->uuid, &self->fd, &self->group,
				     &self->container);
	vu_server_stop(&self->srv);
	if (self->buf != MAP_FAILED)
		munmap(self->buf, BUF_SIZE);
}

/*
 * The DMA sample on a new mdev with @window ("0": message DMA only, NULL:
 * the default shared-memory window), opened, with the buffer mapped at
 * BUF_IOVA.
 */
static void dev_start(struct __test_metadata *_metadata,
		      FIXTURE_DATA(dlog) *self, const char *window)
{
	int ret;

	ret = vu_server_start(&self->srv, "vfio-user-sample", dma_args);
	if (ret == -ENOENT)
		SKIP(return, "vfio-user-sample not built");
	ASSERT_EQ(0, ret);
	vu_uuid_gen(self->uuid);
	ASSERT_EQ(0, vu_mdev_create(self->uuid));
	self->created = true;
	if (window)
		ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "dma_window", window));
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
	self->fd = vu_vfio_open(self->uuid, &self->container, &self->group);
	ASSERT_LE(0, self->fd) TH_LOG("open: %s", strerror(-self->fd));

	self->buf = mmap(NULL, BUF_SIZE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	ASSERT_NE(MAP_FAILED, self->buf);
	memset(self->buf, 0x5a, BUF_SIZE / 2);
	memset(self->buf + BUF_SIZE / 2, 0, BUF_SIZE / 2);
	ASSERT_EQ(0, vu_dma_map(self->container, self->buf, BUF_IOVA, BUF_SIZE,
				VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE));
}

/* In a test's body (a SKIP in a helper would only leave the helper). */
#define NEED_LOG() do {							\
	if (!kernel_has_iova_bitmap())					\
		SKIP(return, "this kernel has no iova_bitmap: no DMA log offered"); \
} while (0)

static int wr(int fd, uint64_t reg, const void *v, size_t len)
{
	return vu_region_write(fd, VFIO_PCI_BAR0_REGION_INDEX, reg, v, len);
}

/* The sample copies @len bytes from buffer offset @src to @dst. */
static void copy(struct __test_metadata *_metadata, FIXTURE_DATA(dlog) *self,
		 uint64_t src, uint64_t dst, uint64_t len)
{
	uint64_t s = BUF_IOVA + src, d = BUF_IOVA + dst;
	uint32_t zero = 0, go = DOORBELL_COPY, status = 0;

	ASSERT_EQ(0, wr(self->fd, REG_IRQ_CTRL, &zero, 4));
	ASSERT_EQ(0, wr(self->fd, REG_SRC, &s, 8));
	ASSERT_EQ(0, wr(self->fd, REG_DST, &d, 8));
	ASSERT_EQ(0, wr(self->fd, REG_LEN, &len, 8));
	ASSERT_EQ(0, wr(self->fd, REG_DOORBELL, &go, 4));
	ASSERT_EQ(0, vu_region_read(self->fd, VFIO_PCI_BAR0_REGION_INDEX,
				    REG_STATUS, &status, 4));
	ASSERT_EQ(STATUS_DONE, status);
	ASSERT_EQ(0, memcmp(self->buf + src, self->buf + dst, len));
}

/* Pages of [first, last] dirty in @bits and no other; logs the first wrong. */
static unsigned int wrong_pages(const uint64_t *bits, unsigned int first,
				unsigned int last)
{
	unsigned int pg, wrong = 0;

	for (pg = 0; pg < BUF_PAGES; pg++) {
		bool want = pg >= first && pg <= last;

		if (bit(bits, pg) != want && !wrong++)
			ksft_print_msg("page %u is %s\n", pg,
				       want ? "clean" : "dirty");
	}
	return wrong;
}

/* Offered exactly where the kernel has the iova_bitmap to fill. */
TEST_F(dlog, offered)
{
	bool want = kernel_has_iova_bitmap();
	int ret;

	dev_start(_metadata, self, NULL);
	if (self->fd < 0)
		return;
	ret = vu_device_feature(self->fd, VFIO_DEVICE_FEATURE_PROBE |
		      VFIO_DEVICE_FEATURE_SET |
		      VFIO_DEVICE_FEATURE_DMA_LOGGING_START, NULL, 0);
	ksft_print_msg("iova_bitmap_set %s; DMA_LOGGING_START probe: %s\n",
		       want ? "present" : "absent", strerror(-ret));
	EXPECT_EQ(want ? 0 : -ENOTTY, ret);
}

/*
 * Message DMA: a copy marks exactly its destination's pages (not the
 * source it read, not the rest), a report clears what it reported, STOP
 * ends the log (a report then fails) and a second START works.
 */
TEST_F(dlog, message_dma_exact)
{
	const uint64_t src = PG + 5, dst = BUF_SIZE / 2 + 3 * PG + 17;
	const uint64_t len = 20 * PG + 100;
	uint64_t range[2] = { BUF_IOVA, BUF_SIZE }, pgsize = PG;

	NEED_LOG();
	dev_start(_metadata, self, "0");
	ASSERT_EQ(0, log_start(self->fd, range, 1, &pgsize));
	ASSERT_EQ(0, log_report(self->fd, self->bits));
	EXPECT_EQ(0, count_bits(self->bits)) TH_LOG("dirty before any DMA");

	copy(_metadata, self, src, dst, len);
	ASSERT_EQ(0, log_report(self->fd, self->bits));
	EXPECT_EQ(0, wrong_pages(self->bits, dst / PG, (dst + len - 1) / PG));

	ASSERT_EQ(0, log_report(self->fd, self->bits));
	EXPECT_EQ(0, count_bits(self->bits)) TH_LOG("not cleared by a report");

	EXPECT_EQ(-EBUSY, log_start(self->fd, range, 1, &pgsize));
	ASSERT_EQ(0, log_stop(self->fd));
	EXPECT_EQ(-EINVAL, log_report(self->fd, self->bits));
	/* stopping twice is not an error */
	EXPECT_EQ(0, log_stop(self->fd));

	ASSERT_EQ(0, log_start(self->fd, range, 1, &pgsize));
	copy(_metadata, self, 0, BUF_SIZE / 2, PG);
	ASSERT_EQ(0, log_report(self->fd, self->bits));
	EXPECT_EQ(0, wrong_pages(self->bits, BUF_PAGES / 2, BUF_PAGES / 2));
	EXPECT_EQ(0, log_stop(self->fd));
}

/*
 * Only what lies in the logged ranges is logged: two ranges, one copy to
 * each half of the destination with a hole between the ranges.
 */
TEST_F(dlog, ranges)
{
	const uint64_t half = BUF_SIZE / 2;
	uint64_t ranges[4] = {
		BUF_IOVA + half, 64 * PG,		/* pages 512 ... 575 */
		BUF_IOVA + half + 128 * PG, 64 * PG,	/* pages 640 ... 703 */
	};
	uint64_t pgsize = PG;
	unsigned int pg, wrong = 0;

	NEED_LOG();
	dev_start(_metadata, self, "0");
	ASSERT_EQ(0, log_start(self->fd, ranges, 2, &pgsize));
	/* pages 560 ... 659: the end of range 1, the hole, range 2's start */
	copy(_metadata, self, 0, half + 48 * PG, 100 * PG);
	ASSERT_EQ(0, log_report(self->fd, self->bits));
	for (pg = 0; pg < BUF_PAGES; pg++) {
		bool want = (pg >= 560 && pg <= 575) || (pg >= 640 && pg <= 659);

		if (bit(self->bits, pg) != want && !wrong++)
			TH_LOG("page %u is %s", pg, want ? "clean" : "dirty");
	}
	EXPECT_EQ(0, wrong);
	EXPECT_EQ(0, log_stop(self->fd));
}

/*
 * A page size coarser than the kernel's is kept (and returned by START),
 * and honoured in the report at the report's granularity: a 64 KiB log
 * page counts whole. A smaller one becomes the kernel's page; one that is
 * not a power of two is refused.
 */
TEST_F(dlog, coarse_page)
{
	const uint64_t dst = BUF_SIZE / 2 + 16 * PG + 8;
	uint64_t range[2] = { BUF_IOVA, BUF_SIZE }, pgsize = 3 * PG;

	NEED_LOG();
	dev_start(_metadata, self, "0");
	EXPECT_EQ(-EINVAL, log_start(self->fd, range, 1, &pgsize));
	/* below the kernel's page: the kernel's page */
	pgsize = 512;
	ASSERT_EQ(0, log_start(self->fd, range, 1, &pgsize));
	EXPECT_EQ(getpagesize(), pgsize);
	ASSERT_EQ(0, log_stop(self->fd));
	pgsize = 16 * PG;
	ASSERT_EQ(0, log_start(self->fd, range, 1, &pgsize));
	EXPECT_EQ(16 * PG, pgsize);
	copy(_metadata, self, 0, dst, 100);
	ASSERT_EQ(0, log_report(self->fd, self->bits));
	/* the 64 KiB log page of the destination: pages 528 ... 543 */
	EXPECT_EQ(0, wrong_pages(self->bits, BUF_PAGES / 2 + 16,
				 BUF_PAGES / 2 + 31));
	EXPECT_EQ(0, log_stop(self->fd));
}

/*
 * The shared-memory window: the server writes through its own mapping,
 * so a page pinned writable is dirty in every report while it stays
 * pinned; once the consumer unmaps (the window unpins) it is reported
 * once more, then clean.
 */
TEST_F(dlog, window_pins)
{
	const uint64_t dst = BUF_SIZE / 2 + 3 * PG + 17, len = 20 * PG + 100;
	uint64_t range[2] = { BUF_IOVA, BUF_SIZE }, pgsize = PG;
	unsigned int pg, missing = 0, first = dst / PG;
	unsigned int last = (dst + len - 1) / PG;

	NEED_LOG();
	dev_start(_metadata, self, NULL);
	ASSERT_EQ(0, log_start(self->fd, range, 1, &pgsize));
	ASSERT_EQ(0, log_report(self->fd, self->bits));
	copy(_metadata, self, PG, dst, len);

	ASSERT_EQ(0, log_report(self->fd, self->bits));
	for (pg = first; pg <= last; pg++)
		missing += !bit(self->bits, pg);
	ksft_print_msg("%u of %llu pages dirty after the copy\n",
		       count_bits(self->bits), BUF_PAGES);
	EXPECT_EQ(0, missing) TH_LOG("destination pages reported clean");

	/* still pinned: still dirty */
	ASSERT_EQ(0, log_report(self->fd, self->bits));
	for (pg = first, missing = 0; pg <= last; pg++)
		missing += !bit(self->bits, pg);
	EXPECT_EQ(0, missing) TH_LOG("pinned pages reported clean");

	/* unmapped: unpinned, reported one last time */
	ASSERT_EQ(0, vu_dma_unmap(self->container, BUF_IOVA, BUF_SIZE));
	ASSERT_EQ(0, log_report(self->fd, self->bits));
	for (pg = first, missing = 0; pg <= last; pg++)
		missing += !bit(self->bits, pg);
	EXPECT_EQ(0, missing) TH_LOG("writes before the unpin lost");
	ASSERT_EQ(0, log_report(self->fd, self->bits));
	EXPECT_EQ(0, count_bits(self->bits));
	EXPECT_EQ(0, log_stop(self->fd));
}

/* Closing the device ends its log: the next open starts without one. */
TEST_F(dlog, close_stops)
{
	uint64_t range[2] = { BUF_IOVA, BUF_SIZE }, pgsize = PG;

	NEED_LOG();
	dev_start(_metadata, self, "0");
	ASSERT_EQ(0, log_start(self->fd, range, 1, &pgsize));
	close(self->fd);
	self->fd = vu_vfio_device_fd(self->uuid, self->container, self->group);
	ASSERT_LE(0, self->fd) TH_LOG("reopen: %s", strerror(-self->fd));
	EXPECT_EQ(-EINVAL, log_report(self->fd, self->bits));
	ASSERT_EQ(0, log_start(self->fd, range, 1, &pgsize));
	EXPECT_EQ(0, log_stop(self->fd));
}

/*
 * The log is the device's, not the server's: the server replaced by a
 * new one (re-attached under the open device), its copy is in the same
 * log.
 */
TEST_F(dlog, survives_reattach)
{
	const uint64_t dst = BUF_SIZE / 2 + 7 * PG;
	uint64_t range[2] = { BUF_IOVA, BUF_SIZE }, pgsize = PG;
	char state[64] = "";
	int i;

	NEED_LOG();
	dev_start(_metadata, self, "0");
	ASSERT_EQ(0, log_start(self->fd, range, 1, &pgsize));
	ASSERT_EQ(0, vu_server_restart(&self->srv));
	/* the module sees the old server go (bounded) */
	for (i = 0; i < 100; i++) {
		ASSERT_EQ(0, vu_mdev_attr_read(self->uuid, "state", state,
					       sizeof(state)));
		if (strncmp(state, "ready", 5))
			break;
		usleep(100000);
	}
	ASSERT_NE(0, strncmp(state, "ready", 5)) TH_LOG("old server not noticed");
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
	copy(_metadata, self, 0, dst, 2 * PG);
	ASSERT_EQ(0, log_report(self->fd, self->bits));
	EXPECT_EQ(0, wrong_pages(self->bits, dst / PG, dst / PG + 1));
	EXPECT_EQ(0, log_stop(self->fd));
}

/*
 * A report of part of a coarse log page reports the whole part but loses
 * nothing: a write in the first 4 KiB of a 64 KiB log page, reported by
 * its second half and then its first half, is in both; a report of the
 * whole page then clears it.
 */
TEST_F(dlog, partial_reports)
{
	const unsigned int lp = BUF_PAGES / 2 + 16;	/* log page: 16 pages */
	uint64_t range[2] = { BUF_IOVA, BUF_SIZE }, pgsize = 16 * PG;

	NEED_LOG();
	dev_start(_metadata, self, "0");
	ASSERT_EQ(0, log_start(self->fd, range, 1, &pgsize));
	ASSERT_EQ(16 * PG, pgsize);
	copy(_metadata, self, 0, lp * PG + 8, 100);

	ASSERT_EQ(0, log_report_part(self->fd, self->bits, lp + 8, 8));
	EXPECT_EQ(0, wrong_pages(self->bits, lp + 8, lp + 15));
	ASSERT_EQ(0, log_report_part(self->fd, self->bits, lp, 8));
	EXPECT_EQ(0, wrong_pages(self->bits, lp, lp + 7))
		TH_LOG("the write reported by the other half only");
	ASSERT_EQ(0, log_report(self->fd, self->bits));
	EXPECT_EQ(0, wrong_pages(self->bits, lp, lp + 15));
	ASSERT_EQ(0, log_report(self->fd, self->bits));
	EXPECT_EQ(0, count_bits(self->bits));
	EXPECT_EQ(0, log_stop(self->fd));
}

/*
 * Ranges too large for the bitmap bound (2^28 bits) get a coarser log
 * page, returned by START: 2 TiB at 4 KiB would be 2^29 bits, so 8 KiB.
 * A write in one 4 KiB page reports its 8 KiB.
 */
TEST_F(dlog, huge_range_coarsened)
{
	uint64_t range[2] = { 0, 2ULL << 40 }, pgsize = PG;
	const unsigned int pg = BUF_PAGES / 2 + 5;	/* odd: 2nd half of 8K */

	NEED_LOG();
	dev_start(_metadata, self, "0");
	ASSERT_EQ(0, log_start(self->fd, range, 1, &pgsize));
	EXPECT_EQ(2 * PG, pgsize);
	copy(_metadata, self, 0, pg * PG, 100);
	ASSERT_EQ(0, log_report(self->fd, self->bits));
	EXPECT_EQ(0, wrong_pages(self->bits, pg - 1, pg));
	ASSERT_EQ(0, log_report(self->fd, self->bits));
	EXPECT_EQ(0, count_bits(self->bits));
	EXPECT_EQ(0, log_stop(self->fd));
}

TEST_HARNESS_MAIN
