// SPDX-License-Identifier: GPL-2.0-only
/*
 * Fault loops against the sample DMA engine: SIGKILL the server at a
 * random point of a copy workload VU_KILL_LOOPS times (default 100); each
 * time the consumer gets an error, the device reads broken, and a restarted
 * server re-attached under the open consumer copies correctly again. And a
 * hung server (SIGSTOP): every kind of consumer call comes back within
 * timeout_ms plus slack, measured.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "hostile.h"

/* The DMA sample's BAR0 (tools/vfio-user/dma.c). */
#define REG_SRC		0x08
#define REG_DST		0x10
#define REG_LEN		0x18
#define REG_DMA_DOORBELL 0x20
#define REG_STATUS	0x24
#define REG_IRQ_CTRL	0x2c
#define STATUS_DONE	2

#define KL_IOVA		(1ULL << 32)
#define KL_SIZE		(4 << 20)

static int dma_copy(int fd, uint64_t src, uint64_t dst, uint64_t len)
{
	uint32_t status = 0;
	int ret;

	ret = __bar_write64(fd, REG_SRC, src);
	ret = ret ?: __bar_write64(fd, REG_DST, dst);
	ret = ret ?: __bar_write64(fd, REG_LEN, len);
	ret = ret ?: __bar_write32(fd, REG_DMA_DOORBELL, 1);
	ret = ret ?: __bar_read32(fd, REG_STATUS, &status);
	if (!ret && status != STATUS_DONE)
		ret = -EREMOTEIO;
	return ret;
}

struct killer {
	pid_t pid;
	unsigned int delay_us;
};

static void *killer_thread(void *arg)
{
	struct killer *k = arg;

	usleep(k->delay_us);
	kill(k->pid, SIGKILL);
	return NULL;
}

FIXTURE(loop) {
	struct vu_server srv;
	char uuid[VU_UUID_LEN + 1];
};

FIXTURE_SETUP(loop)
{
	memset(&self->srv, 0, sizeof(self->srv));
	self->uuid[0] = '\0';
}

FIXTURE_TEARDOWN(loop)
{
	if (self->uuid[0] && vu_mdev_exists(self->uuid))
		vu_mdev_remove(self->uuid);
	vu_server_stop(&self->srv);
}

/* VU_KILL_LOOPS sets the length (1000 in make soak): see fuzz_test.c. */
TEST_F_TIMEOUT(loop, kill_server, 36000)
{
	unsigned long loops = env_ul("VU_KILL_LOOPS", 100), i, survived = 0;
	unsigned long copies = 0, kinds[4] = { 0 };
	int container, group, fd, efd, status;
	char *uuid = self->uuid, state[160];
	unsigned int seed = env_ul("VU_KILL_SEED", 1);
	double t0, dt, max_dt = 0, start = vu_now();
	/*
	 * VU_KILL_TIMEOUT_MS: the device's timeout_ms (1000; more on the
	 * debug kernel, where a copy that pins its pages can take longer).
	 */
	unsigned int timeout_ms = getenv("VU_KILL_TIMEOUT_MS") ?
				  atoi(getenv("VU_KILL_TIMEOUT_MS")) : 1000;
	char tmo[16];
	struct vu_server *srvp = &self->srv;
	long pins0 = vu_pinned_pages(), pins;
	uint8_t *mem;

	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	ASSERT_LE(0, pins0);
	ASSERT_EQ(0, vu_server_start(srvp, SAMPLE, DMA_ARGS));
	vu_uuid_gen(uuid);
	ASSERT_EQ(0, vu_mdev_create(uuid));
	snprintf(tmo, sizeof(tmo), "%u", timeout_ms);
	ASSERT_EQ(0, vu_mdev_attr_write(uuid, "timeout_ms", tmo));
	ASSERT_EQ(0, vu_mdev_attach(uuid, srvp));
	fd = vu_vfio_open(uuid, &container, &group);
	ASSERT_LE(0, fd);
	mem = mmap(NULL, KL_SIZE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, mem);
	ASSERT_EQ(0, dma_map(container, mem, KL_IOVA, KL_SIZE,
			     VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE));
	efd = eventfd(0, EFD_CLOEXEC);
	ASSERT_LE(0, efd);

	for (i = 0; i < loops; i++) {
		struct killer k = { .pid = srvp->pid, .delay_us = rand_r(&seed) % 40000 };
		pthread_t t;
		int ret = 0;

		ASSERT_EQ(0, pthread_create(&t, NULL, killer_thread, &k));
		while (!ret) {
			uint64_t len = 1 + rand_r(&seed) % (KL_SIZE / 4);
			uint64_t src = rand_r(&seed) % (KL_SIZE / 2 - len);
			uint64_t dst = KL_SIZE / 2 + rand_r(&seed) % (KL_SIZE / 2 - len);
			unsigned int b = rand_r(&seed);

			memset(mem + src, b, len);
			t0 = vu_now();
			switch (b % 4) {
			case 0:
				ret = dma_copy(fd, KL_IOVA + src, KL_IOVA + dst, len);
				if (!ret && memcmp(mem + src, mem + dst, len))
					ret = -EILSEQ;
				copies += !ret;
				break;
			case 1:
				ret = __bar_write32(fd, REG_IRQ_CTRL, 1);
				break;
			case 2: {
				char buf[sizeof(struct vfio_irq_set) + sizeof(int)];
				struct vfio_irq_set *set = (void *)buf;

				set->argsz = sizeof(buf);
				set->flags = VFIO_IRQ_SET_DATA_EVENTFD |
					     VFIO_IRQ_SET_ACTION_TRIGGER;
				set->index = VFIO_PCI_MSIX_IRQ_INDEX;
				set->start = 0;
				set->count = 1;
				memcpy(set->data, &efd, sizeof(int));
				ret = ioctl(fd, VFIO_DEVICE_SET_IRQS, set) ? -errno : 0;
				break;
			}
			default:
				ret = ioctl(fd, VFIO_DEVICE_RESET) ? -errno : 0;
				break;
			}
			dt = vu_now() - t0;
			if (dt > max_dt)
				max_dt = dt;
		}
		pthread_join(t, NULL);
		waitpid(srvp->pid, &status, 0);
		srvp->pid = 0;
		EXPECT_TRUE(is_consumer_error(ret))
			TH_LOG("loop %lu: consumer got %d after %lu us", i, ret,
			       (unsigned long)k.delay_us);
		kinds[ret == -EIO ? 0 : ret == -ETIMEDOUT ? 1 : ret == -EPROTO ? 2 : 3]++;
		EXPECT_TRUE(state_is(uuid, "broken: ", state, sizeof(state)))
			TH_LOG("loop %lu: state %s", i, state);

		/* Every tenth time the consumer also closes and reopens. */
		if (i % 10 == 9) {
			close(fd);
			close(group);
			close(container);
		}
		ASSERT_EQ(0, vu_server_restart(srvp));
		ASSERT_EQ(0, vu_mdev_attach(uuid, srvp))
			TH_LOG("loop %lu: re-attach failed", i);
		if (i % 10 == 9) {
			fd = vu_vfio_open(uuid, &container, &group);
			ASSERT_LE(0, fd);
			ASSERT_EQ(0, dma_map(container, mem, KL_IOVA, KL_SIZE,
					     VFIO_DMA_MAP_FLAG_READ |
					     VFIO_DMA_MAP_FLAG_WRITE));
		}
		memset(mem, 0x3c, 4096);
		ASSERT_EQ(0, dma_copy(fd, KL_IOVA, KL_IOVA + KL_SIZE / 2, 4096));
		ASSERT_EQ(0, memcmp(mem, mem + KL_SIZE / 2, 4096));
		survived++;
	}
	ksft_print_msg("%lu kills survived (consumer saw EIO %lu, ETIMEDOUT %lu, EPROTO %lu, other %lu), %lu verified copies, slowest call %.2f s, %.1f s\n",
		       survived, kinds[0], kinds[1], kinds[2], kinds[3], copies,
		       max_dt, vu_now() - start);
	EXPECT_GT(timeout_ms / 1000.0 + SLACK_S, max_dt);
	close(efd);
	close(fd);
	close(group);
	close(container);
	munmap(mem, KL_SIZE);
	EXPECT_EQ(0, vu_mdev_remove(uuid));
	vu_server_stop(srvp);

	/* Every page pinned on the way was released (give a racing 9p I/O a moment). */
	for (i = 0; i < 20 && (pins = vu_pinned_pages()) != pins0; i++)
		usleep(100000);
	ksft_print_msg("pinned pages: %ld before, %ld after (%s)\n", pins0, pins,
		       vu_backend_name());
	EXPECT_EQ(pins0, pins);
}

/*
 * A hung server: each kind of call, measured.
 */
enum hung_op { OP_PREAD, OP_PWRITE, OP_SET_IRQS, OP_RESET, OP_CLOSE,
	       OP_REGION_INFO };

FIXTURE(hung) {
	struct vu_server srv;
	char uuid[VU_UUID_LEN + 1];
	int container, group, fd, efd;
};

FIXTURE_VARIANT(hung) {
	enum hung_op op;
	bool instant;	/* answered from the cache, never waits */
};

FIXTURE_VARIANT_ADD(hung, pread) { .op = OP_PREAD };
FIXTURE_VARIANT_ADD(hung, pwrite) { .op = OP_PWRITE };
FIXTURE_VARIANT_ADD(hung, set_irqs) { .op = OP_SET_IRQS };
FIXTURE_VARIANT_ADD(hung, reset) { .op = OP_RESET };
FIXTURE_VARIANT_ADD(hung, close) { .op = OP_CLOSE };
FIXTURE_VARIANT_ADD(hung, region_info) { .op = OP_REGION_INFO, .instant = true };

FIXTURE_SETUP(hung)
{
	char buf[sizeof(struct vfio_irq_set) + sizeof(int)];
	struct vfio_irq_set *set = (void *)buf;

	self->fd = self->group = self->container = -1;
	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	ASSERT_EQ(0, vu_server_start(&self->srv, SAMPLE, DMA_ARGS));
	vu_uuid_gen(self->uuid);
	ASSERT_EQ(0, vu_mdev_create(self->uuid));
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "timeout_ms", "1000"));
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
	self->fd = vu_vfio_open(self->uuid, &self->container, &self->group);
	ASSERT_LE(0, self->fd);
	self->efd = eventfd(0, EFD_CLOEXEC);
	ASSERT_LE(0, self->efd);
	set->argsz = sizeof(buf);
	set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
	set->index = VFIO_PCI_MSIX_IRQ_INDEX;
	set->start = 0;
	set->count = 1;
	memcpy(set->data, &self->efd, sizeof(int));
	ASSERT_EQ(0, ioctl(self->fd, VFIO_DEVICE_SET_IRQS, set));
}

FIXTURE_TEARDOWN(hung)
{
	vu_consumer_teardown(self->uuid, &self->fd, &self->group,
			     &self->container);
	vu_server_stop(&self->srv);
}

TEST_F_TIMEOUT(hung, bounded, 60)
{
	char buf[sizeof(struct vfio_irq_set) + sizeof(int)];
	struct vfio_irq_set *set = (void *)buf;
	uint64_t off;
	uint32_t v = 0;
	double t0, dt;
	int ret = 0;

	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGSTOP));
	t0 = vu_now();
	switch (variant->op) {
	case OP_PREAD:
		ret = __bar_read32(self->fd, 0, &v);
		break;
	case OP_PWRITE:
		ret = __bar_write32(self->fd, 0x40, 1);
		break;
	case OP_SET_IRQS:
		set->argsz = sizeof(buf);
		set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
		set->index = VFIO_PCI_MSIX_IRQ_INDEX;
		set->start = 1;
		set->count = 1;
		memcpy(set->data, &self->efd, sizeof(int));
		ret = ioctl(self->fd, VFIO_DEVICE_SET_IRQS, set) ? -errno : 0;
		break;
	case OP_RESET:
		ret = ioctl(self->fd, VFIO_DEVICE_RESET) ? -errno : 0;
		break;
	case OP_CLOSE:
		/* close_device disables the eventfds on the server */
		close(self->fd);
		self->fd = -1;
		break;
	case OP_REGION_INFO:
		ret = region_off(self->fd, VFIO_PCI_BAR0_REGION_INDEX, &off);
		break;
	}
	dt = vu_now() - t0;
	ksft_print_msg("call took %.3f s with timeout_ms 1000\n", dt);
	if (variant->instant) {
		EXPECT_EQ(0, ret);
		EXPECT_GT(0.5, dt);
	} else {
		if (variant->op != OP_CLOSE)
			EXPECT_EQ(-ETIMEDOUT, ret);
		EXPECT_LE(0.9, dt);
		EXPECT_GT(1.0 + SLACK_S, dt);
	}
	/* The stopped server comes back, sees the hang-up, takes the next. */
	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGCONT));
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
	if (self->fd >= 0) {
		ASSERT_EQ(0, __bar_read32(self->fd, 0, &v));
		EXPECT_EQ(DMA_MAGIC, v);
	}
}

TEST_HARNESS_MAIN
