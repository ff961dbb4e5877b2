// SPDX-License-Identifier: GPL-2.0-only
/*
 * A hostile server (fault_server): one variant per misbehaviour. Every
 * case checks that the kernel survives (the VM fails the run on any
 * kernel report), that the attach fails with a clear errno or the device
 * reads "broken: <reason>" and the consumer gets an error, that the kernel
 * log names the fault, and that a re-attach to the good sample server
 * works afterwards. Also: the seeded mutator over >= 10^5 messages, DMA
 * from the server to addresses the consumer never mapped or just unmapped
 * (security), a hung server across consumer ops, and non-root users.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <grp.h>
#include <linux/capability.h>

#include "kselftest_harness.h"
#include "vfio_user_util.h"
#include "hostile.h"

/*
 * One fault per variant
 */
enum fault_stage { AT_ATTACH, AT_READ, HARMLESS };

FIXTURE(fault) {
	struct vu_server srv, good;
	char uuid[VU_UUID_LEN + 1];
	int container, group, fd, kmsg;
};

FIXTURE_VARIANT(fault) {
	const char *name;
	enum fault_stage stage;
	/* substring(s) "a|b" the kernel log and the broken reason must show */
	const char *reason;
	/* AT_ATTACH: the errnos the attach write may fail with (0-ended) */
	int attach_err[4];
	/* AT_READ: a 1 MiB pwrite instead of a 4-byte pread */
	bool big_write;
	/* the consumer call must return within timeout_ms + slack */
	bool timed;
};

#define ATTACH_FAULT(n, r, ...)						\
	FIXTURE_VARIANT_ADD(fault, n) {					\
		.name = #n, .stage = AT_ATTACH, .reason = r,		\
		.attach_err = { __VA_ARGS__ },				\
	}
#define READ_FAULT(n, r)						\
	FIXTURE_VARIANT_ADD(fault, n) {					\
		.name = #n, .stage = AT_READ, .reason = r,		\
	}

ATTACH_FAULT(version_malformed, "malformed VERSION capabilities", EPROTO);
ATTACH_FAULT(version_no_nul, "malformed VERSION capabilities", EPROTO);
ATTACH_FAULT(version_oversized, "has size", EPROTO);
ATTACH_FAULT(version_deep, "malformed VERSION capabilities", EPROTO);
ATTACH_FAULT(version_bad_major, "incompatible major version", EPROTONOSUPPORT);
ATTACH_FAULT(version_huge_number, "malformed VERSION capabilities", EPROTO);
ATTACH_FAULT(version_wrong_reply, "expected VERSION reply", EPROTO);
ATTACH_FAULT(version_xfer_small, "max_data_xfer_size 1 is too small", EPROTO);
FIXTURE_VARIANT_ADD(fault, version_trickle) {
	.name = "version_trickle", .stage = AT_ATTACH,
	.reason = "no VERSION reply within", .attach_err = { ETIMEDOUT },
	.timed = true,
};
ATTACH_FAULT(info_huge_counts, "regions and", EPROTO);
ATTACH_FAULT(region_index, "region info for", EPROTO);
ATTACH_FAULT(region_cap_loop, "capability at 48 points to 32", EPROTO);
ATTACH_FAULT(region_cap_outside, "points to 4000", EPROTO);
ATTACH_FAULT(region_cap_offset, "cap_offset", EPROTO);
ATTACH_FAULT(irq_index, "IRQ info for", EPROTO);
ATTACH_FAULT(irq_huge_count, "IRQ info for", EPROTO);
ATTACH_FAULT(attach_close, "server closed the connection", EIO);
FIXTURE_VARIANT_ADD(fault, attach_hang) {
	.name = "attach_hang", .stage = AT_ATTACH, .reason = "no reply to msg_id",
	.attach_err = { ETIMEDOUT }, .timed = true,
};

READ_FAULT(unknown_id, "unknown msg_id");
READ_FAULT(reply_to_nothing, "unknown msg_id");
READ_FAULT(trunc_hdr, "server closed the connection");
READ_FAULT(size_small, "has size 8");
READ_FAULT(size_huge, "has size 4294967280");
READ_FAULT(size_long, "has 28 bytes, expected 16..20");
READ_FAULT(size_short, "REGION_READ reply");
READ_FAULT(huge_count, "REGION_READ reply");
READ_FAULT(wrong_cmd, "is for command 10");
READ_FAULT(err_zero, "with errno 0");
READ_FAULT(err_huge, "with errno 5000");
READ_FAULT(err_restart, "with errno 516");
READ_FAULT(err_payload, "65536 bytes");
READ_FAULT(bad_type, "has type 3");
READ_FAULT(server_cmd_unknown, "server sent command 4");
READ_FAULT(dma_read_big, "DMA_READ msg_id");
READ_FAULT(dma_write_big, "command 12 has size");
READ_FAULT(dma_write_mismatch, "DMA_WRITE msg_id");
READ_FAULT(flood, "not taken within|send of command|no reply to msg_id");
READ_FAULT(close_mid, "server closed the connection");
FIXTURE_VARIANT_ADD(fault, hang) {
	.name = "hang", .stage = AT_READ, .reason = "no reply to msg_id",
	.timed = true,
};
FIXTURE_VARIANT_ADD(fault, slow_reader) {
	.name = "slow_reader", .stage = AT_READ,
	.reason = "send of command 10|no reply to msg_id",
	.big_write = true, .timed = true,
};
/* Valid but awkward: byte-at-a-time replies, fds the kernel must drop. */
FIXTURE_VARIANT_ADD(fault, slow) { .name = "slow", .stage = HARMLESS };
FIXTURE_VARIANT_ADD(fault, fds) { .name = "fds", .stage = HARMLESS };
/* Region info the attach must refuse (the info fixture: what it passes on). */
ATTACH_FAULT(region_huge, "region 2: size 0x10000001000 exceeds", EPROTO);
ATTACH_FAULT(cap_sparse_count, "sparse mmap at 32 has 1000 areas in 32 bytes", EPROTO);
ATTACH_FAULT(cap_sparse_outside, "sparse area 0 0x1000+0x2000 outside size 0x2000",
	     EPROTO);
ATTACH_FAULT(cap_sparse_wrap, "sparse area 1 0xfffffffffffff000+0x2000 outside",
	     EPROTO);
ATTACH_FAULT(cap_type_len, "capability 2 at 32 is 12 bytes, expected 16", EPROTO);
/* Fds the attach must refuse. */
ATTACH_FAULT(region_fd_many, "carries more than 8 fds", EPROTO);
ATTACH_FAULT(version_twin_pipe,
	     "the twin socket is not a connected AF_UNIX stream socket", EPROTO);
/* A reply with a reserved header flag (0x40) set */
READ_FAULT(reply_flag_reserved, "command 9 has flags 0x41");

FIXTURE_SETUP(fault)
{
	const char *args[] = { "--fault", variant->name, NULL };
	int ret;

	self->fd = self->group = self->container = self->kmsg = -1;
	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	ret = fault_server_start(&self->srv, args);
	if (ret == -ENOENT)
		SKIP(return, "fault_server not built");
	ASSERT_EQ(0, ret);
	vu_uuid_gen(self->uuid);
	ASSERT_EQ(0, vu_mdev_create(self->uuid));
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "timeout_ms", "1000"));
	self->kmsg = vu_kmsg_open();
}

FIXTURE_TEARDOWN(fault)
{
	vu_consumer_teardown(self->uuid, &self->fd, &self->group,
			     &self->container);
	vu_server_stop(&self->srv);
	vu_server_stop(&self->good);
	if (self->kmsg >= 0)
		close(self->kmsg);
}

TEST_F_TIMEOUT(fault, survives, 90)
{
	char state[160];
	uint32_t v = 0;
	double t0, dt;
	int ret, i;

	t0 = vu_now();
	ret = vu_mdev_attach(self->uuid, &self->srv);
	dt = vu_now() - t0;
	if (variant->stage == AT_ATTACH) {
		bool listed = false;

		for (i = 0; i < 4 && variant->attach_err[i]; i++)
			listed |= ret == -variant->attach_err[i];
		EXPECT_TRUE(listed) TH_LOG("attach: %d (%s)", ret, strerror(-ret));
		EXPECT_TRUE(state_is(self->uuid, "detached", state, sizeof(state)))
			TH_LOG("state: %s", state);
		if (variant->timed)
			EXPECT_GT(TIMEOUT_MS / 1000.0 + SLACK_S, dt)
				TH_LOG("attach took %.2f s", dt);
	} else {
		ASSERT_EQ(0, ret);
		self->fd = vu_vfio_open(self->uuid, &self->container, &self->group);
		ASSERT_LE(0, self->fd);
		ASSERT_TRUE(state_is(self->uuid, "ready", state, sizeof(state)));

		t0 = vu_now();
		if (variant->big_write) {
			static char big[1 << 20];

			/* the first read arms the slow reader */
			ASSERT_EQ(0, __bar_read32(self->fd, 0, &v));
			t0 = vu_now();
			ret = __bar_rw(self->fd, 0, big, 4096, true);
			if (!ret) {
				uint64_t bar1 = 0;

				ASSERT_EQ(0, region_off(self->fd,
							VFIO_PCI_BAR1_REGION_INDEX,
							&bar1));
				t0 = vu_now();
				ret = pwrite(self->fd, big, sizeof(big), bar1) < 0 ?
				      -errno : 0;
			}
		} else {
			ret = __bar_read32(self->fd, 0, &v);
		}
		dt = vu_now() - t0;
		if (variant->stage == HARMLESS) {
			EXPECT_EQ(0, ret);
			EXPECT_EQ(FP_MAGIC, v);
			EXPECT_TRUE(state_is(self->uuid, "ready", state, sizeof(state)))
				TH_LOG("state: %s", state);
			if (!strcmp(variant->name, "fds")) {
				/* The kernel dropped the fd: the pipe hangs up. */
				ASSERT_EQ(0, __bar_read32(self->fd, REG_FDS, &v));
				EXPECT_EQ(1, v);
			}
		} else {
			EXPECT_TRUE(is_consumer_error(ret))
				TH_LOG("consumer got %d (%s)", ret, strerror(-ret));
			EXPECT_TRUE(state_is(self->uuid, "broken: ", state,
					     sizeof(state)))
				TH_LOG("state: %s", state);
			/* later calls fail at once */
			t0 = vu_now();
			EXPECT_EQ(-EIO, __bar_read32(self->fd, 0, &v));
			EXPECT_GT(0.5, vu_now() - t0);
		}
		if (variant->timed)
			EXPECT_GT(TIMEOUT_MS / 1000.0 + SLACK_S, dt)
				TH_LOG("consumer call took %.2f s", dt);
		close(self->fd);
		self->fd = -1;
	}
	if (variant->reason)
		EXPECT_TRUE(vu_kmsg_has(self->kmsg, variant->reason))
			TH_LOG("no kernel message with '%s'", variant->reason);

	/* A good server afterwards. */
	ASSERT_EQ(0, vu_server_start(&self->good, SAMPLE, DMA_ARGS));
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->good));
	EXPECT_TRUE(state_is(self->uuid, "ready", state, sizeof(state)))
		TH_LOG("state: %s", state);
	if (self->fd < 0) {
		if (self->container >= 0) {
			if (self->group >= 0)
				close(self->group);
			close(self->container);
			self->group = self->container = -1;
		}
		self->fd = vu_vfio_open(self->uuid, &self->container, &self->group);
		ASSERT_LE(0, self->fd);
	}
	ASSERT_EQ(0, __bar_read32(self->fd, 0, &v));
	EXPECT_EQ(DMA_MAGIC, v);
}

/*
 * What the consumer sees of a server's region and IRQ info: capabilities
 * checked and rebuilt in host order (unknown IDs and versions dropped,
 * sparse mmap dropped as there is no mmap), IRQ flags masked to VFIO's.
 */
FIXTURE(info) {
	struct vu_server srv;
	char uuid[VU_UUID_LEN + 1];
	int container, group, fd;
};

FIXTURE_VARIANT(info) {
	const char *fault;
	/* BAR0's capability IDs as the consumer sees them, 0-ended */
	uint16_t caps[4];
	/* flags of the INTx and MSI-X indexes */
	uint32_t intx_flags, msix_flags;
	uint64_t bar2_size;
};

FIXTURE_VARIANT_ADD(info, none) {
	.fault = "none", .caps = { VFIO_REGION_INFO_CAP_TYPE },
	.intx_flags = VFIO_IRQ_INFO_EVENTFD, .msix_flags = VFIO_IRQ_INFO_EVENTFD,
};
FIXTURE_VARIANT_ADD(info, region_max) {
	.fault = "region_max", .caps = { VFIO_REGION_INFO_CAP_TYPE },
	.intx_flags = VFIO_IRQ_INFO_EVENTFD, .msix_flags = VFIO_IRQ_INFO_EVENTFD,
	.bar2_size = 1ULL << 40,
};
FIXTURE_VARIANT_ADD(info, cap_unknown) {
	.fault = "cap_unknown", .caps = { VFIO_REGION_INFO_CAP_TYPE },
	.intx_flags = VFIO_IRQ_INFO_EVENTFD, .msix_flags = VFIO_IRQ_INFO_EVENTFD,
};
FIXTURE_VARIANT_ADD(info, cap_mixed) {
	.fault = "cap_mixed",
	.caps = { VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, VFIO_REGION_INFO_CAP_TYPE },
	.intx_flags = VFIO_IRQ_INFO_EVENTFD, .msix_flags = VFIO_IRQ_INFO_EVENTFD,
};
FIXTURE_VARIANT_ADD(info, irq_flags) {
	.fault = "irq_flags", .caps = { VFIO_REGION_INFO_CAP_TYPE },
	.intx_flags = VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE |
		      VFIO_IRQ_INFO_AUTOMASKED,
	.msix_flags = VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE,
};

FIXTURE_SETUP(info)
{
	const char *args[] = { "--fault", variant->fault, NULL };
	int ret;

	self->fd = self->group = self->container = -1;
	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	ret = fault_server_start(&self->srv, args);
	if (ret == -ENOENT)
		SKIP(return, "fault_server not built");
	ASSERT_EQ(0, ret);
	vu_uuid_gen(self->uuid);
	self->fd = vu_open_attached(self->uuid, &self->srv, &self->container,
				    &self->group);
	ASSERT_LE(0, self->fd);
}

FIXTURE_TEARDOWN(info)
{
	vu_consumer_teardown(self->uuid, &self->fd, &self->group,
			     &self->container);
	vu_server_stop(&self->srv);
}

TEST_F(info, consumer_view)
{
	static uint8_t buf[4096];
	struct vfio_region_info *ri = (void *)buf;
	struct vfio_irq_info irq = { .argsz = sizeof(irq) };
	struct vfio_region_info bar2 = {
		.argsz = sizeof(bar2), .index = VFIO_PCI_BAR2_REGION_INDEX,
	};
	char state[160];
	uint32_t off, v = 0;
	int n = 0;

	ASSERT_TRUE(state_is(self->uuid, "ready", state, sizeof(state)))
		TH_LOG("state: %s", state);
	memset(buf, 0, sizeof(buf));
	ri->argsz = sizeof(buf);
	ri->index = VFIO_PCI_BAR0_REGION_INDEX;
	ASSERT_EQ(0, ioctl(self->fd, VFIO_DEVICE_GET_REGION_INFO, ri));
	EXPECT_EQ(0x2000, ri->size);
	EXPECT_EQ(0, ri->flags & VFIO_REGION_INFO_FLAG_MMAP);
	ASSERT_GE(sizeof(buf), ri->argsz);
	EXPECT_EQ(!!variant->caps[0], !!(ri->flags & VFIO_REGION_INFO_FLAG_CAPS));
	for (off = ri->cap_offset; off; n++) {
		struct vfio_info_cap_header *h = (void *)(buf + off);

		ASSERT_LE(sizeof(*ri), off);
		ASSERT_GE(ri->argsz - sizeof(*h), off);
		ASSERT_GT(3, n) TH_LOG("more capabilities than expected");
		EXPECT_EQ(variant->caps[n], h->id) TH_LOG("capability %d", n);
		EXPECT_EQ(1, h->version);
		if (h->id == VFIO_REGION_INFO_CAP_TYPE) {
			struct vfio_region_info_cap_type *t = (void *)h;

			EXPECT_EQ(0x80000001, t->type);
			EXPECT_EQ(7, t->subtype);
		}
		ASSERT_TRUE(!h->next || h->next > off);
		off = h->next;
	}
	EXPECT_EQ(0, variant->caps[n]) TH_LOG("%d capabilities", n);

	ASSERT_EQ(0, ioctl(self->fd, VFIO_DEVICE_GET_REGION_INFO, &bar2));
	EXPECT_EQ(variant->bar2_size, bar2.size);

	irq.index = VFIO_PCI_INTX_IRQ_INDEX;
	ASSERT_EQ(0, ioctl(self->fd, VFIO_DEVICE_GET_IRQ_INFO, &irq));
	EXPECT_EQ(variant->intx_flags, irq.flags);
	irq.index = VFIO_PCI_MSIX_IRQ_INDEX;
	ASSERT_EQ(0, ioctl(self->fd, VFIO_DEVICE_GET_IRQ_INFO, &irq));
	EXPECT_EQ(variant->msix_flags, irq.flags);
	EXPECT_EQ(4, irq.count);

	/* and the device works */
	ASSERT_EQ(0, __bar_read32(self->fd, 0, &v));
	EXPECT_EQ(FP_MAGIC, v);
}

/*
 * Security: the server reaches only what the consumer mapped.
 */
FIXTURE(dma) {
	struct vu_server srv;
	char uuid[VU_UUID_LEN + 1];
	int container, group, fd;
	uint8_t *mem;
	size_t memsz;
};

#define IOVA		0x100000ULL
#define WIN		(64 << 10)


FIXTURE_SETUP(dma)
{
	const char *args[] = { "--fault", "none", NULL };
	int ret;

	self->fd = self->group = self->container = -1;
	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	ret = fault_server_start(&self->srv, args);
	if (ret == -ENOENT)
		SKIP(return, "fault_server not built");
	ASSERT_EQ(0, ret);
	vu_uuid_gen(self->uuid);
	self->fd = vu_open_attached(self->uuid, &self->srv, &self->container,
				    &self->group);
	ASSERT_LE(0, self->fd);
	/* [guard | window | guard | second window], only windows mapped */
	self->memsz = 4 * WIN;
	self->mem = mmap(NULL, self->memsz, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->mem);
	memset(self->mem, 0x11, self->memsz);
	ASSERT_EQ(0, dma_map(self->container, self->mem + WIN, IOVA, WIN,
			     VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE));
}

FIXTURE_TEARDOWN(dma)
{
	vu_consumer_teardown(self->uuid, &self->fd, &self->group,
			     &self->container);
	vu_server_stop(&self->srv);
}

static bool all_bytes(const uint8_t *p, size_t n, uint8_t v)
{
	while (n--)
		if (*p++ != v)
			return false;
	return true;
}

TEST_F_TIMEOUT(dma, only_mapped_memory, 90)
{
	static const struct { uint64_t addr, count; int err; } bad[] = {
		{ 0, 16, EFAULT },				/* never mapped */
		{ IOVA - 16, 16, EFAULT },			/* just below */
		{ IOVA + WIN, 16, EFAULT },			/* just above */
		{ (1ULL << 48) - 16, 16, EFAULT },		/* window top */
		{ 1ULL << 48, 16, EFAULT },			/* past window */
		{ ~0ULL - 15, 16, EFAULT },			/* top of u64 */
		{ ~0ULL - 7, 16, EINVAL },			/* wraps */
		{ ~0ULL, 2, EINVAL },				/* wraps */
		{ IOVA, 0, EINVAL },				/* empty */
	};
	uint8_t *win = self->mem + WIN, *win2 = self->mem + 3 * WIN;
	uint32_t res = 0, v;
	unsigned int i;
	int op;

	/* Mapped: works both ways. */
	ASSERT_EQ(0, probe(self->fd, 2, IOVA + 64, 32, 0xa5, &res));
	EXPECT_EQ(0, res);
	EXPECT_TRUE(all_bytes(win + 64, 32, 0xa5));
	EXPECT_EQ(0x11, win[63]);
	EXPECT_EQ(0x11, win[96]);
	win[200] = 0x42;
	ASSERT_EQ(0, probe(self->fd, 1, IOVA + 200, 1, 0, &res));
	EXPECT_EQ(0, res);
	ASSERT_EQ(0, __bar_read32(self->fd, REG_DATA, &v));
	EXPECT_EQ(0x42, v & 0xff);

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		for (op = 1; op <= 2; op++) {
			ASSERT_EQ(0, probe(self->fd, op, bad[i].addr, bad[i].count,
					   0xee, &res));
			EXPECT_EQ(bad[i].err, res)
				TH_LOG("DMA_%s at %#llx count %llu: %u",
				       op == 1 ? "READ" : "WRITE",
				       (unsigned long long)bad[i].addr,
				       (unsigned long long)bad[i].count, res);
		}
	}
	/* Straddling the end: the part outside is never written. */
	ASSERT_EQ(0, probe(self->fd, 2, IOVA + WIN - 8, 16, 0xee, &res));
	EXPECT_NE(0, res);
	EXPECT_TRUE(all_bytes(self->mem, WIN, 0x11));
	EXPECT_TRUE(all_bytes(self->mem + 2 * WIN, 2 * WIN, 0x11));

	/* Read-only mapping: reads work, writes are refused. */
	ASSERT_EQ(0, dma_map(self->container, win2, 0x800000, WIN,
			     VFIO_DMA_MAP_FLAG_READ));
	ASSERT_EQ(0, probe(self->fd, 1, 0x800000, 16, 0, &res));
	EXPECT_EQ(0, res);
	ASSERT_EQ(0, probe(self->fd, 2, 0x800000, 16, 0xee, &res));
	EXPECT_NE(0, res);
	EXPECT_TRUE(all_bytes(win2, WIN, 0x11));

	/* Just unmapped: refused, memory unchanged. */
	ASSERT_EQ(0, dma_unmap(self->container, 0x800000, WIN));
	ASSERT_EQ(0, dma_map(self->container, win2, 0x900000, WIN,
			     VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE));
	ASSERT_EQ(0, probe(self->fd, 2, 0x900000, 16, 0x77, &res));
	EXPECT_EQ(0, res);
	EXPECT_TRUE(all_bytes(win2, 16, 0x77));
	memset(win2, 0x11, 16);
	ASSERT_EQ(0, dma_unmap(self->container, 0x900000, WIN));
	for (op = 1; op <= 2; op++) {
		ASSERT_EQ(0, probe(self->fd, op, 0x900000, 16, 0x77, &res));
		EXPECT_EQ(EFAULT, res);
	}
	EXPECT_TRUE(all_bytes(win2, WIN, 0x11));

	/* None of this broke the device. */
	ASSERT_EQ(0, __bar_read32(self->fd, 0, &v));
	EXPECT_EQ(FP_MAGIC, v);
}

/* After the consumer closes, the server reaches nothing at all. */
TEST_F(dma, nothing_after_close)
{
	uint32_t res = 0;
	int fd2;

	/* A second device fd keeps the device open while we probe... */
	fd2 = vu_vfio_device_fd(self->uuid, self->container, self->group);
	if (vu_iommufd()) {
		/* (the cdev path opens a device once: VFIO says EINVAL) */
		ASSERT_EQ(-EINVAL, fd2);
		fd2 = dup(self->fd);
	}
	ASSERT_LE(0, fd2);
	ASSERT_EQ(0, probe(fd2, 2, IOVA, 16, 0x99, &res));
	EXPECT_EQ(0, res);
	close(fd2);
	ASSERT_EQ(0, probe(self->fd, 2, IOVA + 16, 16, 0x99, &res));
	EXPECT_EQ(0, res);
	EXPECT_TRUE(all_bytes(self->mem + WIN, 32, 0x99));
}

/*
 * Only root attaches and creates.
 */
TEST(non_root_refused)
{
	struct vu_server srv;
	char uuid[VU_UUID_LEN + 1], other[VU_UUID_LEN + 1], state[160];
	int status, grp;
	pid_t pid;

	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	ASSERT_EQ(0, vu_server_start(&srv, SAMPLE, DMA_ARGS));
	vu_uuid_gen(uuid);
	vu_uuid_gen(other);
	ASSERT_EQ(0, vu_mdev_create(uuid));
	grp = vu_mdev_group(uuid);
	ASSERT_LE(0, grp);
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		char path[64];
		int fails = 0, fd, ret;

		if (setgroups(0, NULL) || setresgid(65534, 65534, 65534) ||
		    setresuid(65534, 65534, 65534))
			_exit(100);
		ret = vu_mdev_create(other);
		fails |= (ret != -EACCES) << 0;
		if (ret != -EACCES)
			fprintf(stderr, "non-root create: %d\n", ret);
		ret = vu_mdev_attach(uuid, &srv);
		fails |= (ret != -EACCES) << 1;
		if (ret != -EACCES)
			fprintf(stderr, "non-root attach: %d\n", ret);
		fails |= (vu_mdev_attr_write(uuid, "timeout_ms", "10") != -EACCES) << 2;
		fails |= (vu_mdev_remove(uuid) != -EACCES) << 3;
		snprintf(path, sizeof(path), "/dev/vfio/%d", grp);
		fd = open(path, O_RDWR);
		fails |= (fd >= 0 || errno != EACCES) << 4;
		_exit(fails);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_EQ(0, WEXITSTATUS(status)) TH_LOG("failed checks: %#x",
						 WEXITSTATUS(status));
	EXPECT_FALSE(vu_mdev_exists(other));
	EXPECT_TRUE(vu_mdev_exists(uuid));
	EXPECT_EQ(0, vu_mdev_attach(uuid, &srv));
	EXPECT_TRUE(state_is(uuid, "ready", state, sizeof(state)));

	/* uid 0 without CAP_SYS_ADMIN: no attach, no timeout change */
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		struct __user_cap_header_struct h = {
			.version = _LINUX_CAPABILITY_VERSION_3,
		};
		struct __user_cap_data_struct d[2];
		int fails = 0;

		if (syscall(SYS_capget, &h, d))
			_exit(100);
		d[CAP_SYS_ADMIN / 32].effective &= ~(1U << (CAP_SYS_ADMIN % 32));
		if (syscall(SYS_capset, &h, d))
			_exit(101);
		fails |= (vu_mdev_attach(uuid, &srv) != -EPERM) << 0;
		fails |= (vu_mdev_attr_write(uuid, "timeout_ms", "10") != -EPERM) << 1;
		fails |= (vu_mdev_attr_write(uuid, "socket", "\n") != -EPERM) << 2;
		_exit(fails);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_EQ(0, WEXITSTATUS(status)) TH_LOG("failed checks: %#x",
						 WEXITSTATUS(status));
	EXPECT_TRUE(state_is(uuid, "ready", state, sizeof(state)));
	EXPECT_EQ(0, vu_mdev_remove(uuid));
	vu_server_stop(&srv);
}

/*
 * An mmap-able region's fd: a memfd makes the region mappable; a pipe
 * does not, and the module lets go of it at once (the server's read end
 * of the pipe hangs up), with the reason in the log.
 */
static void region_fd(struct __test_metadata *_metadata, const char *fault,
		      bool mappable)
{
	const char *args[] = { "--fault", fault, NULL };
	struct vfio_region_info bar1 = {
		.argsz = sizeof(bar1), .index = VFIO_PCI_BAR1_REGION_INDEX,
	};
	int container = -1, group = -1, fd, kmsg;
	char uuid[VU_UUID_LEN + 1];
	struct vu_server srv;
	uint32_t v = 0;
	int ret;

	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	ret = fault_server_start(&srv, args);
	if (ret == -ENOENT)
		SKIP(return, "fault_server not built");
	ASSERT_EQ(0, ret);
	kmsg = vu_kmsg_open();
	vu_uuid_gen(uuid);
	fd = vu_open_attached(uuid, &srv, &container, &group);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, &bar1));
	EXPECT_EQ(mappable, !!(bar1.flags & VFIO_REGION_INFO_FLAG_MMAP));
	if (!mappable) {
		ASSERT_EQ(0, __bar_read32(fd, REG_FDS, &v));
		EXPECT_EQ(1, v);
		EXPECT_TRUE(vu_kmsg_has(kmsg, "not a memfd or tmpfs file"));
	}
	if (kmsg >= 0)
		close(kmsg);
	vu_consumer_teardown(uuid, &fd, &group, &container);
	vu_server_stop(&srv);
}

TEST(region_fd_pipe_not_mapped)
{
	region_fd(_metadata, "region_fd_pipe", false);
}

TEST(region_fd_memfd_mapped)
{
	region_fd(_metadata, "region_fd_memfd", true);
}

TEST_HARNESS_MAIN
