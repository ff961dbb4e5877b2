// SPDX-License-Identifier: GPL-2.0-only
/*
 * The seeded mutator: fault_server --mutate corrupts one message in 64 of
 * otherwise valid traffic (flipped bytes, sizes, ids, commands, error
 * bits, truncation, duplicates, drops, injected DMA commands) while a
 * consumer keeps the device busy and re-attaches whenever it breaks.
 * VU_FUZZ_MESSAGES (default 100000) server messages, VU_FUZZ_SEED
 * (default 1). Every consumer call must come back within timeout_ms plus
 * slack; at the end a good server must attach and work.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "hostile.h"

#define FUZZ_TIMEOUT_MS	200
#define FUZZ_IOVA	0x40000000ULL
#define FUZZ_WIN	(1 << 20)

struct consumer {
	int container, group, fd, efd;
	void *mem;
};

static void consumer_close(struct consumer *c)
{
	if (c->fd >= 0)
		close(c->fd);
	if (c->group >= 0)
		close(c->group);
	if (c->container >= 0)
		close(c->container);
	c->fd = c->group = c->container = -1;
}

static int consumer_open(struct consumer *c, const char *uuid)
{
	c->fd = vu_vfio_open(uuid, &c->container, &c->group);
	if (c->fd < 0)
		return c->fd;
	return dma_map(c->container, c->mem, FUZZ_IOVA, FUZZ_WIN,
		       VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE);
}

static int set_eventfd(int fd, int efd)
{
	char buf[sizeof(struct vfio_irq_set) + sizeof(int)];
	struct vfio_irq_set *set = (void *)buf;

	set->argsz = sizeof(buf);
	set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
	set->index = VFIO_PCI_MSIX_IRQ_INDEX;
	set->start = 0;
	set->count = 1;
	memcpy(set->data, &efd, sizeof(int));
	return ioctl(fd, VFIO_DEVICE_SET_IRQS, set) ? -errno : 0;
}

/* One random consumer call; returns 0 or -errno. */
static int consumer_op(struct consumer *c, unsigned int r)
{
	static uint8_t buf[8192];
	uint64_t off = 0;
	uint32_t v, res;
	int ret;

	switch (r % 7) {
	case 0:
		return __bar_read32(c->fd, 0, &v);
	case 1:
		return __bar_rw(c->fd, (r >> 8) % 4096, buf, 1 + (r >> 20) % 4096,
				false);
	case 2:
		return __bar_rw(c->fd, 0x400 + (r >> 8) % 1024, buf,
				1 + (r >> 20) % 512, true);
	case 3:
		ret = region_off(c->fd, VFIO_PCI_CONFIG_REGION_INDEX, &off);
		if (ret)
			return ret;
		return pread(c->fd, buf, 4, off + ((r >> 8) % 64) * 4) < 0 ? -errno : 0;
	case 4:
		return set_eventfd(c->fd, (r >> 8) & 1 ? c->efd : -1);
	case 5:
		return ioctl(c->fd, VFIO_DEVICE_RESET) ? -errno : 0;
	default:
		return probe(c->fd, 1 + ((r >> 8) & 1), FUZZ_IOVA + (r >> 9) % 4096,
			     1 + (r >> 20) % 256, r >> 24, &res);
	}
}

FIXTURE(fuzz) {};
FIXTURE_SETUP(fuzz) {}
FIXTURE_TEARDOWN(fuzz) {}

/*
 * The count, and so the time, comes from VU_FUZZ_MESSAGES (10^6 in make
 * soak, about 15 min on 6.12 under TCG): the harness limit is generous and
 * the bound that matters is vm-run's --timeout around the whole suite.
 */
TEST_F_TIMEOUT(fuzz, mutator, 36000)
{
	unsigned long count = env_ul("VU_FUZZ_MESSAGES", 100000);
	unsigned long seed = env_ul("VU_FUZZ_SEED", 1);
	unsigned long ops = 0, errs = 0, attaches = 0, attach_fail = 0;
	unsigned long sent = 0, mutated = 0, conns = 0;
	char uuid[VU_UUID_LEN + 1], seedstr[32], countstr[32], iova[32];
	char stats[64], state[160];
	struct consumer c = { .fd = -1, .group = -1, .container = -1 };
	struct vu_server srv, good;
	const char *args[] = { "--mutate", seedstr, "--count", countstr,
			       "--dma-addr", iova, "--stats", stats, NULL };
	double t0, dt, max_dt = 0, start;
	unsigned int r = seed * 2654435761u + 1;
	bool attached = false;
	int ret, status;
	uint32_t v = 0;
	FILE *f;

	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	snprintf(seedstr, sizeof(seedstr), "%lu", seed);
	snprintf(countstr, sizeof(countstr), "%lu", count);
	snprintf(iova, sizeof(iova), "%#llx", FUZZ_IOVA);
	snprintf(stats, sizeof(stats), "/tmp/vu-fuzz-%d.stats", getpid());
	ret = fault_server_start(&srv, args);
	if (ret == -ENOENT)
		SKIP(return, "fault_server not built");
	ASSERT_EQ(0, ret);
	c.mem = mmap(NULL, FUZZ_WIN, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, c.mem);
	c.efd = eventfd(0, EFD_CLOEXEC);
	ASSERT_LE(0, c.efd);
	vu_uuid_gen(uuid);
	ASSERT_EQ(0, vu_mdev_create(uuid));
	ASSERT_EQ(0, vu_mdev_attr_write(uuid, "timeout_ms", "200"));

	start = vu_now();
	for (;;) {
		if (!attached) {
			if (waitpid(srv.pid, &status, WNOHANG) == srv.pid) {
				srv.pid = 0;
				break;
			}
			t0 = vu_now();
			ret = vu_mdev_attach(uuid, &srv);
			dt = vu_now() - t0;
			if (dt > max_dt)
				max_dt = dt;
			attaches++;
			if (ret == -EBUSY) {
				/* the open consumer saw a mutated shape */
				consumer_close(&c);
				continue;
			}
			if (ret) {
				attach_fail++;
				continue;
			}
			attached = true;
			if (c.fd < 0 && consumer_open(&c, uuid)) {
				consumer_close(&c);
				attached = false;
				continue;
			}
		}
		r = r * 1103515245u + 12345;
		t0 = vu_now();
		ret = consumer_op(&c, r ^ (r >> 16) * 65599u);
		dt = vu_now() - t0;
		if (dt > max_dt)
			max_dt = dt;
		ops++;
		if (ret) {
			errs++;
			/* no kernel-internal errno ever reaches userspace */
			EXPECT_GT(512, -ret) TH_LOG("op returned %d", ret);
			if (!state_is(uuid, "ready", state, sizeof(state)))
				attached = false;
		}
	}
	dt = vu_now() - start;
	f = fopen(stats, "r");
	ASSERT_NE(NULL, f);
	ASSERT_EQ(3, fscanf(f, "%lu %lu %lu", &sent, &mutated, &conns));
	fclose(f);
	unlink(stats);
	ksft_print_msg("seed %lu: %lu server messages (%lu mutated), %lu connections, %lu attaches (%lu failed), %lu consumer calls (%lu failed) in %.1f s; slowest call %.2f s\n",
		       seed, sent, mutated, conns, attaches, attach_fail, ops,
		       errs, dt, max_dt);
	EXPECT_LE(count, sent);
	/*
	 * One message in 64 on average (78 of 5000, sd 9): at least half of
	 * that, whatever VU_FUZZ_MESSAGES says.
	 */
	EXPECT_LE(sent / 128, mutated);
	EXPECT_LT(0, mutated);
	/* a call waits for at most one reply, an attach for one per step */
	EXPECT_GT(FUZZ_TIMEOUT_MS / 1000.0 + SLACK_S + 1.0, max_dt);

	/* A good server afterwards. */
	consumer_close(&c);
	ASSERT_EQ(0, vu_server_start(&good, SAMPLE, DMA_ARGS));
	ASSERT_EQ(0, vu_mdev_attach(uuid, &good));
	c.fd = vu_vfio_open(uuid, &c.container, &c.group);
	ASSERT_LE(0, c.fd);
	ASSERT_EQ(0, __bar_read32(c.fd, 0, &v));
	EXPECT_EQ(DMA_MAGIC, v);
	consumer_close(&c);
	EXPECT_EQ(0, vu_mdev_remove(uuid));
	vu_server_stop(&good);
	vu_server_stop(&srv);
}

TEST_HARNESS_MAIN
