// SPDX-License-Identifier: GPL-2.0-only
/*
 * A hostile consumer against the sample DMA server: random and invalid
 * argsz, indexes, counts and flags in every ioctl, overlapping SET_IRQS
 * ranges, huge pread/pwrite offsets and lengths, and close / ioctl /
 * remove / detach racing from 16 threads. The device must keep working
 * (or, for the races, go away cleanly) and no kernel-internal errno may
 * reach userspace. VU_CONSUMER_ITERS (default 20000) random calls,
 * VU_CONSUMER_SEED (default 1), VU_RACE_SECONDS (default 10).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "hostile.h"

#define NR_EFDS		8

FIXTURE(consumer) {
	struct vu_server srv;
	char uuid[VU_UUID_LEN + 1];
	int container, group, fd;
	int efd[NR_EFDS];
};

FIXTURE_SETUP(consumer)
{
	int i;

	self->fd = self->group = self->container = -1;
	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	ASSERT_EQ(0, vu_server_start(&self->srv, SAMPLE, DMA_ARGS));
	vu_uuid_gen(self->uuid);
	self->fd = vu_open_attached(self->uuid, &self->srv, &self->container,
				    &self->group);
	ASSERT_LE(0, self->fd);
	for (i = 0; i < NR_EFDS; i++) {
		self->efd[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		ASSERT_LE(0, self->efd[i]);
	}
}

FIXTURE_TEARDOWN(consumer)
{
	int i;

	if (self->fd >= 0)
		close(self->fd);
	if (self->group >= 0)
		close(self->group);
	if (self->container >= 0)
		close(self->container);
	for (i = 0; i < NR_EFDS; i++)
		close(self->efd[i]);
	if (vu_mdev_exists(self->uuid))
		vu_mdev_remove(self->uuid);
	vu_server_stop(&self->srv);
}

static uint64_t rnd64(unsigned int *seed)
{
	return (uint64_t)rand_r(seed) << 33 ^ (uint64_t)rand_r(seed) << 11 ^
	       rand_r(seed);
}

/* Interesting numbers more often than uniform ones. */
static uint32_t rnd_u32(unsigned int *seed, uint32_t small)
{
	static const uint32_t edge[] = { 0, 1, 2, 3, 4, 7, 8, 15, 16, 19, 20,
		24, 31, 32, 0x7f, 0x80, 0xff, 0x100, 0x1000, 0xffff, 0x10000,
		0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff };

	switch (rand_r(seed) % 3) {
	case 0:
		return edge[rand_r(seed) % (sizeof(edge) / sizeof(edge[0]))];
	case 1:
		return rand_r(seed) % small;
	default:
		return rnd64(seed);
	}
}

static uint64_t rnd_off(unsigned int *seed)
{
	switch (rand_r(seed) % 4) {
	case 0:	/* a valid region, any offset */
		return ((uint64_t)(rand_r(seed) % 10) << 40) | rand_r(seed) % 8192;
	case 1:	/* near the end of the offset space of a region */
		return ((uint64_t)(rand_r(seed) % 10) << 40) +
		       (1ULL << 40) - 1 - rand_r(seed) % 64;
	case 2:	/* a huge index */
		return rnd64(seed) & 0x7fffffffffffffffULL;
	default:
		return 0x7fffffffffffffffULL - rand_r(seed) % 4096;
	}
}

/* Any errno but the kernel-internal ones (>= 512) is fine here. */
#define EXPECT_SANE(ret)						\
	EXPECT_TRUE((ret) >= -511) TH_LOG("%s returned %ld", #ret, (long)(ret))

TEST_F_TIMEOUT(consumer, random_calls, 600)
{
	unsigned long iters = env_ul("VU_CONSUMER_ITERS", 20000), i;
	unsigned int seed = env_ul("VU_CONSUMER_SEED", 1);
	unsigned long nr_ok = 0, nr_err = 0;
	static uint8_t buf[1 << 20];
	char state[160];
	double start = vu_now();
	uint32_t v = 0;
	long ret;

	for (i = 0; i < iters; i++) {
		unsigned int op = rand_r(&seed) % 10;
		uint32_t *w = (uint32_t *)buf;
		size_t len;
		int k;

		/* random bytes after the fields we set */
		for (k = 0; k < 64; k++)
			w[k] = rand_r(&seed);
		switch (op) {
		case 0: {
			struct vfio_device_info *d = (void *)buf;

			d->argsz = rnd_u32(&seed, 64);
			ret = ioctl(self->fd, VFIO_DEVICE_GET_INFO, d) ? -errno : 0;
			break;
		}
		case 1: {
			struct vfio_region_info *r = (void *)buf;

			r->argsz = rnd_u32(&seed, 256);
			if (r->argsz > 4096)
				r->argsz = rand_r(&seed) % 2 ? 4096 : r->argsz;
			r->index = rnd_u32(&seed, 12);
			ret = ioctl(self->fd, VFIO_DEVICE_GET_REGION_INFO, r) ?
			      -errno : 0;
			break;
		}
		case 2: {
			struct vfio_irq_info *q = (void *)buf;

			q->argsz = rnd_u32(&seed, 64);
			q->index = rnd_u32(&seed, 8);
			ret = ioctl(self->fd, VFIO_DEVICE_GET_IRQ_INFO, q) ?
			      -errno : 0;
			break;
		}
		case 3:
		case 4: {
			static const uint32_t types[] = { VFIO_IRQ_SET_DATA_NONE,
				VFIO_IRQ_SET_DATA_BOOL, VFIO_IRQ_SET_DATA_EVENTFD };
			static const uint32_t actions[] = {
				VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_UNMASK,
				VFIO_IRQ_SET_ACTION_TRIGGER };
			struct vfio_irq_set *s = (void *)buf;
			int32_t *fds = (int32_t *)s->data;

			s->flags = types[rand_r(&seed) % 3] |
				   actions[rand_r(&seed) % 3];
			if (!(rand_r(&seed) % 8))
				s->flags = rnd_u32(&seed, 64);
			s->index = rand_r(&seed) % 4 ? rand_r(&seed) % 5 :
				   rnd_u32(&seed, 8);
			s->start = rand_r(&seed) % 2 ? rand_r(&seed) % 5 :
				   rnd_u32(&seed, 8);
			s->count = rand_r(&seed) % 2 ? rand_r(&seed) % 5 :
				   rnd_u32(&seed, 8);
			for (k = 0; k < 64; k++) {
				switch (rand_r(&seed) % 4) {
				case 0: fds[k] = -1; break;
				case 1: fds[k] = rand_r(&seed) % 64; break;
				case 2: fds[k] = self->fd; break;
				default:
					fds[k] = self->efd[rand_r(&seed) % NR_EFDS];
				}
			}
			s->argsz = rand_r(&seed) % 4 ?
				   sizeof(*s) + 4 * (rand_r(&seed) % 9) :
				   rnd_u32(&seed, 256);
			if (s->argsz > sizeof(buf))
				s->argsz = sizeof(buf);
			ret = ioctl(self->fd, VFIO_DEVICE_SET_IRQS, s) ? -errno : 0;
			break;
		}
		case 5:
			ret = ioctl(self->fd, VFIO_DEVICE_RESET) ? -errno : 0;
			break;
		case 6:
			/* unknown or misdirected ioctls */
			ret = ioctl(self->fd, rand_r(&seed) % 2 ?
				    (unsigned long)rnd_u32(&seed, 0x100) :
				    (unsigned long)(VFIO_BASE + VFIO_TYPE * 256 +
						    rand_r(&seed) % 40),
				    buf) ? -errno : 0;
			break;
		case 7:
		case 8: {
			uint64_t off = rnd_off(&seed);

			switch (rand_r(&seed) % 4) {
			case 0: len = 1 + rand_r(&seed) % 8; break;
			case 1: len = rand_r(&seed) % 8192; break;
			case 2: len = sizeof(buf); break;
			default: len = (size_t)1 << (rand_r(&seed) % 48); break;
			}
			/* never write the DMA doorbell: nothing is mapped */
			if (op == 8 && (off >> 40) == VFIO_PCI_BAR0_REGION_INDEX &&
			    (off & 0xffff) <= 0x24)
				off += 0x30;
			if (op == 7)
				ret = pread(self->fd, buf, len, off);
			else
				ret = pwrite(self->fd, buf, len, off);
			ret = ret < 0 ? -errno : 0;
			break;
		}
		default: {
			/* the mapping side: the module sees only the unmap */
			uint64_t iova = rnd64(&seed);

			ret = vu_dma_unmap(self->container, iova, rnd64(&seed));
			break;
		}
		}
		EXPECT_SANE(ret);
		if (ret)
			nr_err++;
		else
			nr_ok++;
	}
	ksft_print_msg("%lu random calls (%lu ok, %lu refused) in %.1f s\n",
		       iters, nr_ok, nr_err, vu_now() - start);
	EXPECT_TRUE(state_is(self->uuid, "ready", state, sizeof(state)))
		TH_LOG("state: %s", state);
	ASSERT_EQ(0, __bar_read32(self->fd, 0, &v));
	EXPECT_EQ(DMA_MAGIC, v);
}

static int set_irqs(int fd, uint32_t flags, uint32_t index, uint32_t start,
		    uint32_t count, const int32_t *data, uint32_t argsz)
{
	char buf[sizeof(struct vfio_irq_set) + 64 * sizeof(int32_t)];
	struct vfio_irq_set *s = (void *)buf;

	s->argsz = argsz ? argsz : sizeof(*s) + count * sizeof(int32_t);
	s->flags = flags;
	s->index = index;
	s->start = start;
	s->count = count;
	if (data)
		memcpy(s->data, data, (count < 64 ? count : 64) * sizeof(int32_t));
	return ioctl(fd, VFIO_DEVICE_SET_IRQS, s) ? -errno : 0;
}

#define EVT	(VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER)

TEST_F(consumer, set_irqs_edges)
{
	const uint32_t msix = VFIO_PCI_MSIX_IRQ_INDEX;
	struct vfio_irq_info info = { .argsz = sizeof(info), .index = msix };
	int32_t fds[64];
	uint32_t v;
	int i, ret;

	ASSERT_EQ(0, ioctl(self->fd, VFIO_DEVICE_GET_IRQ_INFO, &info));
	ASSERT_LE(4, info.count);
	for (i = 0; i < 64; i++)
		fds[i] = self->efd[i % NR_EFDS];

	/* overlapping ranges, then partly cleared */
	EXPECT_EQ(0, set_irqs(self->fd, EVT, msix, 0, 3, fds, 0));
	EXPECT_EQ(0, set_irqs(self->fd, EVT, msix, 1, 3, fds + 3, 0));
	fds[1] = -1;
	EXPECT_EQ(0, set_irqs(self->fd, EVT, msix, 0, 4, fds, 0));
	fds[1] = self->efd[1];
	EXPECT_EQ(0, set_irqs(self->fd, EVT, msix, 2, 2, fds, 0));
	/* the same eventfd on every vector */
	for (i = 0; i < 4; i++)
		fds[i] = self->efd[0];
	EXPECT_EQ(0, set_irqs(self->fd, EVT, msix, 0, 4, fds, 0));

	/* out of range, wrapping, short argsz, bad fds */
	EXPECT_EQ(-EINVAL, set_irqs(self->fd, EVT, msix, info.count, 1, fds, 0));
	EXPECT_EQ(-EINVAL, set_irqs(self->fd, EVT, msix, 3, 2, fds, 0));
	EXPECT_EQ(-EINVAL, set_irqs(self->fd, EVT, msix, 0xffffffff, 2, fds, 0));
	EXPECT_EQ(-EINVAL, set_irqs(self->fd, EVT, msix, 1, 0xffffffff, fds, 0));
	EXPECT_EQ(-EINVAL, set_irqs(self->fd, EVT, msix, 0, 4, fds,
				    sizeof(struct vfio_irq_set) + 8));
	/* count 0: nothing to do (the core accepts it), or refused */
	ret = set_irqs(self->fd, EVT, msix, 0, 0, fds, 0);
	EXPECT_TRUE(ret == 0 || ret == -EINVAL);
	EXPECT_EQ(-EINVAL, set_irqs(self->fd, EVT, 9, 0, 1, fds, 0));
	EXPECT_EQ(-EINVAL, set_irqs(self->fd, EVT, 0xffffffff, 0, 1, fds, 0));
	fds[2] = self->fd;	/* not an eventfd */
	EXPECT_EQ(-EINVAL, set_irqs(self->fd, EVT, msix, 0, 4, fds, 0));
	fds[2] = 1000;		/* not open */
	EXPECT_EQ(-EBADF, set_irqs(self->fd, EVT, msix, 0, 4, fds, 0));
	/*
	 * Mask/unmask eventfds: as in vfio-pci only INTx has one (unmask),
	 * so on MSI-X both are -ENOTTY before any fd is looked at; the
	 * device stays intact.
	 */
	EXPECT_EQ(-ENOTTY, set_irqs(self->fd, VFIO_IRQ_SET_DATA_EVENTFD |
				    VFIO_IRQ_SET_ACTION_UNMASK, msix, 0, 4, fds, 0));
	fds[2] = self->fd;
	EXPECT_EQ(-ENOTTY, set_irqs(self->fd, VFIO_IRQ_SET_DATA_EVENTFD |
				    VFIO_IRQ_SET_ACTION_MASK, msix, 0, 4, fds, 0));
	{
		char state[160];

		EXPECT_TRUE(state_is(self->uuid, "ready", state, sizeof(state)))
			TH_LOG("state: %s", state);
	}
	/* a DATA_BOOL trigger and a DATA_NONE clear */
	memset(fds, 1, 4);
	EXPECT_EQ(0, set_irqs(self->fd, VFIO_IRQ_SET_DATA_BOOL |
			      VFIO_IRQ_SET_ACTION_TRIGGER, msix, 0, 4,
			      fds, sizeof(struct vfio_irq_set) + 4));
	EXPECT_EQ(0, set_irqs(self->fd, VFIO_IRQ_SET_DATA_NONE |
			      VFIO_IRQ_SET_ACTION_TRIGGER, msix, 0, 0, NULL, 0));
	/* REQ: one vector, trigger only */
	EXPECT_EQ(0, set_irqs(self->fd, EVT, VFIO_PCI_REQ_IRQ_INDEX, 0, 1,
			      self->efd, 0));
	EXPECT_EQ(-EINVAL, set_irqs(self->fd, EVT, VFIO_PCI_REQ_IRQ_INDEX, 0, 2,
				    self->efd, 0));
	/* count 0 carries no data: this was a NULL dereference */
	EXPECT_EQ(-EINVAL, set_irqs(self->fd, EVT, VFIO_PCI_REQ_IRQ_INDEX, 0, 0,
				    NULL, 0));
	EXPECT_EQ(-EINVAL, set_irqs(self->fd, VFIO_IRQ_SET_DATA_EVENTFD |
				    VFIO_IRQ_SET_ACTION_MASK,
				    VFIO_PCI_REQ_IRQ_INDEX, 0, 1, self->efd, 0));
	ASSERT_EQ(0, __bar_read32(self->fd, 0, &v));
	EXPECT_EQ(DMA_MAGIC, v);
}

TEST_F(consumer, huge_offsets_and_lengths)
{
	static const struct { uint64_t off; size_t len; } bad[] = {
		{ 9ULL << 40, 4 },			/* no such region */
		{ 0xffffffULL << 40, 4 },		/* huge index */
		{ (1ULL << 40) - 1, 2 },		/* BAR0 offset space end */
		{ 4095, 2 },				/* crosses BAR0's end */
		{ 0, 4097 },				/* longer than BAR0 */
		{ 0, (size_t)1 << 40 },			/* absurd length */
		{ 0x7fffffffffffffffULL, 1 },		/* largest loff_t */
		{ 0x7ffffffffffff000ULL, 0x2000 },	/* wraps loff_t */
	};
	static uint8_t buf[8192];
	uint64_t bar0 = 0;
	unsigned int i;
	ssize_t n;

	ASSERT_EQ(0, region_off(self->fd, VFIO_PCI_BAR0_REGION_INDEX, &bar0));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t off = bad[i].off < (1ULL << 40) ? bar0 + bad[i].off :
			       bad[i].off;

		n = pread(self->fd, buf, bad[i].len, off);
		EXPECT_EQ(-1, n) TH_LOG("pread %u at %#llx: %zd", i,
					(unsigned long long)off, n);
		EXPECT_TRUE(errno == EINVAL || errno == EFAULT)
			TH_LOG("pread %u: errno %d", i, errno);
		n = pwrite(self->fd, buf, bad[i].len, off);
		EXPECT_EQ(-1, n);
		EXPECT_TRUE(errno == EINVAL || errno == EFAULT)
			TH_LOG("pwrite %u: errno %d", i, errno);
	}
	/* A valid range from an unmapped user buffer. */
	n = syscall(SYS_pread64, self->fd, 8UL, 4UL, bar0);
	EXPECT_EQ(-1, n);
	EXPECT_EQ(EFAULT, errno);
	/* Zero length is a no-op anywhere. */
	EXPECT_EQ(0, pread(self->fd, buf, 0, 0x7fffffULL << 40));
	n = pread(self->fd, buf, 4, bar0);
	EXPECT_EQ(4, n);
}

/*
 * 16 threads: close, ioctl, region access, detach, attach; then a remove
 * while they still hold device fds.
 */
struct racer {
	FIXTURE_DATA(consumer) *self;
	unsigned int seed;
	double until;
	unsigned long ops;
	int bad_errno;
};

static void *racer_thread(void *arg)
{
	struct racer *r = arg;
	FIXTURE_DATA(consumer) *self = r->self;
	int fd = vu_vfio_device_fd(self->uuid, self->container, self->group);
	char buf[64];
	uint32_t v;
	long ret;

	while (vu_now() < r->until) {
		struct vfio_region_info ri = { .argsz = sizeof(ri) };
		int efd = self->efd[rand_r(&r->seed) % NR_EFDS];

		ret = 0;
		switch (rand_r(&r->seed) % 12) {
		case 0:
			if (fd >= 0)
				close(fd);
			fd = vu_vfio_device_fd(self->uuid, self->container,
					       self->group);
			break;
		case 1:
			if (!(rand_r(&r->seed) % 8))
				ret = vu_mdev_attr_write(self->uuid, "socket", "\n");
			break;
		case 2:
			ret = vu_mdev_attach(self->uuid, &self->srv);
			break;
		case 3:
			ret = set_irqs(fd, EVT, VFIO_PCI_MSIX_IRQ_INDEX,
				       rand_r(&r->seed) % 4, 1, &efd, 0);
			break;
		case 4:
			ret = ioctl(fd, VFIO_DEVICE_RESET) ? -errno : 0;
			break;
		case 5:
			ret = ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, &ri) ? -errno : 0;
			break;
		case 6:
			ret = vu_mdev_attr_read(self->uuid, "state", buf,
						sizeof(buf));
			break;
		case 7:
			ret = vu_mdev_attr_write(self->uuid, "timeout_ms",
						 rand_r(&r->seed) % 2 ? "2000" : "5000");
			break;
		case 8:
			ret = set_irqs(fd, VFIO_IRQ_SET_DATA_NONE |
				       VFIO_IRQ_SET_ACTION_TRIGGER,
				       VFIO_PCI_MSIX_IRQ_INDEX, 0, 0, NULL, 0);
			break;
		default:
			ret = __bar_read32(fd, 0, &v);
			break;
		}
		if (ret < -511)
			r->bad_errno = ret;
		r->ops++;
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

struct remover {
	const char *uuid;
	int ret;
	double took;
};

static void *remover_thread(void *arg)
{
	struct remover *rm = arg;
	double t0 = vu_now();

	rm->ret = vu_mdev_remove(rm->uuid);
	rm->took = vu_now() - t0;
	return NULL;
}

TEST_F_TIMEOUT(consumer, race_16_threads, 300)
{
	double secs = env_ul("VU_RACE_SECONDS", 10);
	struct remover rm = { .uuid = self->uuid, .ret = 1 };
	struct racer r[16];
	pthread_t t[16], tr;
	unsigned long ops = 0;
	int i;

	for (i = 0; i < 16; i++) {
		r[i] = (struct racer){ .self = self, .seed = i + 1,
				       .until = vu_now() + secs };
		ASSERT_EQ(0, pthread_create(&t[i], NULL, racer_thread, &r[i]));
	}
	/* remove while the racers still hold their fds for 2 more s */
	usleep((secs - 2) * 1e6);
	close(self->fd);
	self->fd = -1;
	ASSERT_EQ(0, pthread_create(&tr, NULL, remover_thread, &rm));
	for (i = 0; i < 16; i++) {
		ASSERT_EQ(0, pthread_join(t[i], NULL));
		EXPECT_EQ(0, r[i].bad_errno);
		ops += r[i].ops;
	}
	ASSERT_EQ(0, pthread_join(tr, NULL));
	EXPECT_EQ(0, rm.ret);
	EXPECT_FALSE(vu_mdev_exists(self->uuid));
	ksft_print_msg("16 threads: %lu racing calls; remove waited %.1f s\n",
		       ops, rm.took);
}

TEST_HARNESS_MAIN
