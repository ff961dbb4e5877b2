// SPDX-License-Identifier: GPL-2.0-only
/*
 * The twin socket: the module offers it, a server that takes it (the DMA
 * sample with --twin-socket) sends its DMA_READ/DMA_WRITE on it and reads
 * the module's replies from it, so a consumer hammering a BAR while the
 * server does message DMA never puts one of its requests where the server
 * waits for a DMA reply. --strict-dma-reply makes the server fail such a
 * wait as libvfio-user does (its issue #279): with the twin socket nothing
 * breaks; without it (the control) the server drops the client.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/vfio.h>
#include <sys/mman.h>

#include "kselftest_harness.h"
#include "vfio_user_util.h"

#define SAMPLE		"vfio-user-sample"
#define BAR0		VFIO_PCI_BAR0_REGION_INDEX
#define REG_MAGIC	0x00
#define REG_SRC		0x08
#define REG_DST		0x10
#define REG_LEN		0x18
#define REG_DOORBELL	0x20
#define REG_STATUS	0x24
#define REG_RD_MSGS	0x50
#define REG_TWIN	0x60
#define DMA_MAGIC	0x31414d44
#define STATUS_DONE	2

#define IOVA		0x100000ULL
#define COPY_LEN	(256 << 10)
#define BUF_SIZE	(2 * COPY_LEN)
#define COPIES		40
/* The control stops at its first failure, within a few copies. */
#define CONTROL_COPIES	400

static int rd32(int fd, uint64_t reg, uint32_t *v)
{
	return vu_region_read(fd, BAR0, reg, v, 4);
}

static int wr64(int fd, uint64_t reg, uint64_t v)
{
	return vu_region_write(fd, BAR0, reg, &v, 8);
}

/* One copy of COPY_LEN bytes by message DMA; 0 or -errno. */
static int dma_copy(int fd)
{
	uint32_t one = 1, status = 0;
	int ret;

	ret = wr64(fd, REG_SRC, IOVA);
	ret = ret ?: wr64(fd, REG_DST, IOVA + COPY_LEN);
	ret = ret ?: wr64(fd, REG_LEN, COPY_LEN);
	ret = ret ?: vu_region_write(fd, BAR0, REG_DOORBELL, &one, 4);
	ret = ret ?: rd32(fd, REG_STATUS, &status);
	return ret ?: (status == STATUS_DONE ? 0 : -EIO);
}

struct hammer {
	int fd;
	volatile bool stop;
	unsigned long reads, bad;
	int err;
};

/* Reads BAR0's magic register as fast as it can. */
static void *hammer_bar(void *arg)
{
	struct hammer *h = arg;
	uint32_t v;
	int ret;

	while (!h->stop) {
		ret = rd32(h->fd, REG_MAGIC, &v);
		if (ret) {
			h->err = ret;
			break;
		}
		h->reads++;
		h->bad += v != DMA_MAGIC;
	}
	return NULL;
}

FIXTURE(twin) {
	struct vu_server srv;
	char uuid[VU_UUID_LEN + 1];
	int container, group, fd;
	uint8_t *buf;
	int kmsg;
};

FIXTURE_VARIANT(twin) {
	bool twin;
	const char *const *args;
};

static const char *const twin_args[] = {
	"--device", "dma", "--twin-socket", "--strict-dma-reply", NULL,
};
static const char *const strict_args[] = {
	"--device", "dma", "--strict-dma-reply", NULL,
};

FIXTURE_VARIANT_ADD(twin, twin_socket) { .twin = true, .args = twin_args };
/* The control: one socket, a server that cannot take a command in a DMA wait. */
FIXTURE_VARIANT_ADD(twin, one_socket) { .twin = false, .args = strict_args };

FIXTURE_SETUP(twin)
{
	self->fd = self->group = self->container = -1;
	self->buf = MAP_FAILED;
	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	self->kmsg = vu_kmsg_open();
	ASSERT_EQ(0, vu_server_start(&self->srv, SAMPLE, variant->args));
	vu_uuid_gen(self->uuid);
	ASSERT_EQ(0, vu_mdev_create(self->uuid));
	/* Message DMA: the server waits for a reply to each DMA command. */
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "dma_window", "0"));
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
	self->fd = vu_vfio_open(self->uuid, &self->container, &self->group);
	ASSERT_LE(0, self->fd);
	self->buf = mmap(NULL, BUF_SIZE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	ASSERT_NE(MAP_FAILED, self->buf);
	ASSERT_EQ(0, vu_dma_map(self->container, self->buf, IOVA, BUF_SIZE,
				VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE));
}

FIXTURE_TEARDOWN(twin)
{
	char line[256];

	vu_consumer_teardown(self->uuid, &self->fd, &self->group,
			     &self->container);
	vu_server_stop(&self->srv);
	if (self->buf != MAP_FAILED)
		munmap(self->buf, BUF_SIZE);
	EXPECT_FALSE(vu_kmsg_any(self->kmsg, "BUG:|WARNING:|Oops|INFO: task",
				 line, sizeof(line)))
		TH_LOG("kernel: %s", line);
}

/* The attach negotiated it exactly when the server offers it. */
TEST_F(twin, negotiated)
{
	uint32_t v = ~0U;

	ASSERT_EQ(0, rd32(self->fd, REG_TWIN, &v));
	EXPECT_EQ(variant->twin, v);
	EXPECT_EQ(variant->twin, vu_kmsg_has(self->kmsg, "twin socket"));
}

/*
 * A thread reads a BAR in a tight loop while the server copies by message
 * DMA. With the twin socket every copy and every read succeeds; with one
 * socket the strict server drops the client when a read comes where it
 * waits for its DMA reply.
 */
TEST_F(twin, hammer_during_dma)
{
	struct hammer h = { .fd = self->fd };
	uint32_t msgs = 0;
	pthread_t t;
	int i, ret = 0;
	char state[128] = "";

	ASSERT_EQ(0, pthread_create(&t, NULL, hammer_bar, &h));
	for (i = 0; i < (variant->twin ? COPIES : CONTROL_COPIES) && !ret; i++) {
		memset(self->buf, i + 1, COPY_LEN);
		memset(self->buf + COPY_LEN, 0, COPY_LEN);
		ret = dma_copy(self->fd);
		if (!ret && memcmp(self->buf, self->buf + COPY_LEN, COPY_LEN))
			ret = -EILSEQ;
	}
	h.stop = true;
	pthread_join(t, NULL);
	vu_mdev_attr_read(self->uuid, "state", state, sizeof(state));
	TH_LOG("%d copies, %lu BAR reads, state %s", i, h.reads, state);

	if (!variant->twin) {
		/* The control: the race is lost within a few copies. */
		EXPECT_NE(0, ret);
		EXPECT_EQ(0, strncmp(state, "broken", 6));
		return;
	}
	EXPECT_EQ(0, ret) TH_LOG("copy %d: %s", i, strerror(-ret));
	EXPECT_EQ(COPIES, i);
	EXPECT_EQ(0, h.err);
	EXPECT_EQ(0, h.bad);
	EXPECT_LT(0, h.reads);
	EXPECT_EQ(0, strncmp(state, "ready", 5));
	/* The copies did go by message. */
	ASSERT_EQ(0, rd32(self->fd, REG_RD_MSGS, &msgs));
	EXPECT_LE(COPIES, msgs);
}

TEST_HARNESS_MAIN
