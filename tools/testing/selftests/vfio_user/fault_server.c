// SPDX-License-Identifier: GPL-2.0-only
/*
 * fault_server - a hostile vfio-user server for the selftests.
 *
 *   fault_server --socket PATH [--fault NAME] [--xfer N] [--msix N]
 *                [--set-irqs-delay-us US] [--mig-endless]
 *   fault_server --socket PATH --mutate SEED --count N [--rate R]
 *                [--dma-addr IOVA] [--stats FILE]
 *
 * It speaks just enough vfio-user (own wire code on <linux/vfio_user.h>,
 * not the server library) for an attach to succeed: a PCI device with a
 * 256-byte config space and an 8 KiB BAR0, MSI-X with 4 vectors (--msix:
 * up to 2048), RESET. Then it misbehaves as --fault says, exactly once per
 * connection: at attach time (the VERSION, DEVICE_GET_INFO, REGION_INFO or
 * IRQ_INFO reply), at the first REGION_READ after attach, or (hold_request)
 * in the middle of the first large REGION_WRITE. With --fault none it
 * behaves. --set-irqs-delay-us holds every SET_IRQS reply that long: a
 * slow server for a re-attach that replays many eventfds.
 *
 * Faults for the request path (signal_test):
 *   version_hang  VERSION is read and never answered; the server goes on
 *                 reading (an attach that hangs until its timeout)
 *   hold_reply    100 ms after the first REGION_READ, half of its reply
 *                 (the header and some data), then nothing until SIGUSR1,
 *                 then the rest: a consumer blocked in the middle of a reply
 *   hold_request  the first REGION_WRITE of more than 64 KiB: its header
 *                 and 64 KiB are read, the rest only after SIGUSR1 (the
 *                 write lands then): a consumer blocked in the middle of
 *                 sending
 *   trickle       the first REGION_READ's reply, one byte per 100 ms
 *   withhold      the first REGION_READ is never answered; everything
 *                 after it is (other traffic while one reply is overdue)
 *
 * Faults in the region and IRQ info of the attach (hostile_test):
 *   region_huge         BAR2 one page larger than the 2^40 offset window
 *   region_max          BAR2 exactly 2^40 bytes (valid)
 *   cap_sparse_count    BAR0: a sparse mmap capability with 1000 areas in
 *                       room for one
 *   cap_sparse_outside  BAR0: a sparse mmap area past the end of the region
 *   cap_sparse_wrap     BAR0: a sparse mmap area whose end wraps around 2^64
 *   cap_type_len        BAR0: a 12-byte type capability, then an MSI-X one
 *   cap_unknown         BAR0: a capability with an unknown ID (12 bytes,
 *                       so the type capability after it is misaligned)
 *   cap_mixed           BAR0, valid: unknown ID, sparse mmap, MSI-X
 *                       mappable, type, type version 2
 *   irq_flags           INTx and MSI-X info with undefined flag bits
 *   reply_flag_reserved the first REGION_READ reply has flags bit 0x40
 *
 * Fds with the attach's replies (hostile_test):
 *   region_fd_pipe      BAR1 flagged MMAP, its info sent with a pipe's
 *                       write end (not memory the module can map); the
 *                       read end shows its release at 0x120
 *   region_fd_memfd     BAR1 flagged MMAP and backed by a memfd (valid)
 *   region_fd_many      BAR1's info sent with 12 fds
 *   version_twin_pipe   VERSION offers the twin socket and passes a pipe
 *
 * BAR0 is a DMA probe the tests drive like hardware:
 *   0x000 u32 RO  magic FP_MAGIC
 *   0x100 u64 RW  IOVA          0x108 u64 RW  count
 *   0x110 u32 RW  fill byte of a DMA_WRITE
 *   0x114 u32 WO  doorbell: 1 DMA_READ, 2 DMA_WRITE, 3 DMA_WRITE whose
 *                 count disagrees with its payload; the REGION_WRITE
 *                 reply waits for the client's DMA reply
 *   0x118 u32 RO  result: errno of the client's reply, 0 = success,
 *                 FP_NO_REPLY while none came
 *   0x120 u32 RO  --fault fds: 1 once the fd we sent was released
 *   0x124 u32 RO  eventfds received with SET_IRQS on this connection
 *   0x1000..0x1fff  the data of the last DMA_READ (first 4 KiB)
 *
 * --mig-endless: offers migration (DEVICE_FEATURE GET MIGRATION answers
 * STOP_COPY | P2P; MIG_DEVICE_STATE GET and SET take any state 1..5, one
 * arc at a time as the client walks them; MIG_DATA_SIZE answers 1 MiB)
 * and streams for ever: every MIG_DATA_READ in STOP_COPY gets as many
 * bytes as it asked for, so a client that reads to the end of the stream
 * never gets there. MIG_DATA_WRITE in RESUMING is taken and dropped; a
 * RESET goes back to RUNNING. Without it DEVICE_FEATURE gets ENOSYS, as
 * any command the server does not know (no migration).
 *
 * --mutate: serves valid traffic, accepts client after client, and
 * corrupts one outgoing message in --rate (flipped bytes, sizes, ids,
 * commands, error bits, truncation, duplicates, drops, injected server
 * commands), seeded, until --count messages have been sent; then it
 * prints its statistics (and writes them to --stats) and exits.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <linux/vfio.h>
#include <linux/vfio_user.h>

_Static_assert(sizeof(struct vfio_user_hdr) == 16, "header");
_Static_assert(sizeof(struct vfio_user_region_info) == 32, "region info");
_Static_assert(sizeof(struct vfio_user_dma_access) == 16, "dma access");

#define FP_MAGIC	0x544c5546	/* "FULT" */
#define FP_NO_REPLY	0xffffffffu
#define FP_BAR0_SIZE	0x2000
#define FP_CFG_SIZE	256
#define FP_BAR1_SIZE	(2u << 20)	/* a sink for big writes */
#define FP_MSIX		4
#define FP_MAX_MSIX	2048
#define FP_HOLD_CHUNK	(64u << 10)
#define FP_MAX_MSG	((2u << 20) + 4096)

#define REG_ADDR	0x100
#define REG_COUNT	0x108
#define REG_FILL	0x110
#define REG_DOORBELL	0x114
#define REG_RESULT	0x118
#define REG_FDS		0x120
#define REG_IRQ_FDS	0x124
#define REG_DATA	0x1000

static const char *const fault_names[] = {
	"none",
	/* attach time */
	"version_malformed", "version_no_nul", "version_oversized",
	"version_deep", "version_bad_major", "version_huge_number",
	"version_wrong_reply", "version_xfer_small", "version_trickle",
	"info_huge_counts",
	"region_index", "region_cap_loop", "region_cap_outside",
	"region_cap_offset", "irq_index", "irq_huge_count", "attach_hang",
	"attach_close",
	/* first REGION_READ after attach */
	"unknown_id", "reply_to_nothing", "trunc_hdr", "size_small",
	"size_huge", "size_long", "size_short", "huge_count", "wrong_cmd",
	"err_zero", "err_huge", "err_restart", "err_payload", "bad_type",
	"server_cmd_unknown", "dma_read_big", "dma_write_big",
	"dma_write_mismatch", "flood", "slow", "close_mid", "hang",
	"slow_reader", "fds",
	/* the request path: hangs, holds and trickles */
	"version_hang", "hold_reply", "hold_request", "trickle", "withhold",
	/* what attach checks of region and IRQ info (hostile_test) */
	"region_huge", "region_max", "cap_sparse_count", "cap_sparse_outside",
	"cap_sparse_wrap", "cap_type_len", "cap_unknown", "cap_mixed",
	"irq_flags", "reply_flag_reserved",
	/* fds with the attach's replies */
	"region_fd_pipe", "region_fd_memfd", "region_fd_many",
	"version_twin_pipe",
	NULL,
};

struct fp {
	int fd;
	const char *fault;
	bool fault_done;
	uint32_t xfer;
	uint8_t cfg[FP_CFG_SIZE];
	uint8_t bar0[FP_BAR0_SIZE];
	uint8_t bar1[FP_BAR1_SIZE];
	uint16_t next_id;	/* our msg_ids for DMA commands */
	uint16_t last_reply_id;	/* msg_id of the last request we answered */
	bool slow_reader;
	/* REGION_WRITE to the doorbell, answered after the DMA reply */
	bool pending;
	uint16_t pending_id;
	uint16_t dma_id;
	uint16_t dma_cmd;
	struct vfio_user_region_access pending_acc;
	/* fds fault: read end of the pipe whose write end we sent */
	int fds_pipe;
	/* MSI-X vectors; eventfds received with SET_IRQS (this connection) */
	uint32_t msix;
	uint32_t irq_fds;
	unsigned long set_irqs_delay_us;
	/* --mig-endless: the migration state (this connection), data read */
	bool mig_endless;
	uint32_t mig_state;
	uint64_t mig_bytes;
	/* mutator */
	bool mutate;
	unsigned long count, sent, mutated, conns;
	unsigned int rate;
	uint64_t dma_addr;
	uint64_t rng;
};

static struct fp fp;

static bool fault_is(const char *name)
{
	return !fp.fault_done && !strcmp(fp.fault, name);
}

/* xorshift64*: reproducible from --mutate SEED. */
static uint64_t rnd(void)
{
	fp.rng ^= fp.rng >> 12;
	fp.rng ^= fp.rng << 25;
	fp.rng ^= fp.rng >> 27;
	return fp.rng * 0x2545f4914f6cdd1dULL;
}

static unsigned int rnd_below(unsigned int n)
{
	return n ? rnd() % n : 0;
}

static void put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

/* Sends all of @len bytes; a dead peer is -EPIPE, not a signal. */
static int send_all(const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = send(fp.fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EPIPE;
		p += n;
		len -= n;
	}
	return 0;
}

static int send_with_fds(const void *buf, size_t len, const int *fds,
			 unsigned int nfds)
{
	char cbuf[CMSG_SPACE(16 * sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf,
		.msg_controllen = CMSG_SPACE(nfds * sizeof(int)),
	};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	ssize_t n;

	if (nfds > 16)
		return -EINVAL;
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
	memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
	n = sendmsg(fp.fd, &msg, MSG_NOSIGNAL);
	if (n < 0)
		return -EPIPE;
	return send_all((const uint8_t *)buf + n, len - n);
}

static int send_with_fd(const void *buf, size_t len, int fd)
{
	return send_with_fds(buf, len, &fd, 1);
}

/*
 * Sends @msg with the fds a --fault region_fd_* or version_twin_pipe
 * reply carries: a pipe's write end (its read end kept in fds_pipe), a
 * memfd, or 12 pipe write ends.
 */
static int send_msg_fault_fds(const uint8_t *msg, size_t len)
{
	int pfd[2], fds[12], ret;
	unsigned int i;

	if (!strcmp(fp.fault, "region_fd_memfd")) {
		fds[0] = memfd_create("fault_server-bar1", 0);
		if (fds[0] < 0 || ftruncate(fds[0], FP_BAR1_SIZE))
			return -errno;
		ret = send_with_fd(msg, len, fds[0]);
		close(fds[0]);
		return ret;
	}
	for (i = 0; i < (!strcmp(fp.fault, "region_fd_many") ? 12 : 1); i++) {
		if (pipe(pfd))
			return -errno;
		fds[i] = pfd[1];
		if (fp.fds_pipe < 0)
			fp.fds_pipe = pfd[0];
		else
			close(pfd[0]);
	}
	ret = send_with_fds(msg, len, fds, i);
	while (i--)
		close(fds[i]);
	return ret;
}

/* Reads exactly @len bytes, dropping any fds (SET_IRQS eventfds). */
static int recv_all(void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		char cbuf[CMSG_SPACE(64 * sizeof(int))];
		size_t want = fp.slow_reader && len > 8192 ? 8192 : len;
		struct iovec iov = { .iov_base = p, .iov_len = want };
		struct msghdr msg = {
			.msg_iov = &iov, .msg_iovlen = 1,
			.msg_control = cbuf, .msg_controllen = sizeof(cbuf),
		};
		struct cmsghdr *c;
		ssize_t n;

		if (fp.slow_reader)
			usleep(100000);
		n = recvmsg(fp.fd, &msg, MSG_CMSG_CLOEXEC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EPIPE;
		for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
			if (c->cmsg_level == SOL_SOCKET &&
			    c->cmsg_type == SCM_RIGHTS) {
				int k, nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				int fds[64];

				memcpy(fds, CMSG_DATA(c), nfd * sizeof(int));
				for (k = 0; k < nfd; k++)
					close(fds[k]);
				fp.irq_fds += nfd;
			}
		}
		p += n;
		len -= n;
	}
	return 0;
}

/*
 * hold_reply, hold_request: stops here until the test sends SIGUSR1
 * (blocked since main(), so one sent early is not lost).
 */
static void hold(void)
{
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	while (sigwait(&set, &sig))
		;
}

/* Sends @len bytes one at a time, @us apart. */
static int send_slowly(const uint8_t *msg, size_t len, unsigned int us)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (send_all(msg + i, 1))
			return -EPIPE;
		usleep(us);
	}
	fp.sent++;
	return 0;
}

/*
 * The mutator: with probability 1/rate, corrupts @msg (header and payload,
 * @len bytes, room for FP_MAX_MSG) in one of several ways. Returns how many
 * bytes to send, 0 to drop, or -1 to close the connection mid-message.
 */
static ssize_t mutate(uint8_t *msg, size_t len, bool *dup)
{
	struct vfio_user_hdr *hdr = (void *)msg;
	size_t i;

	*dup = false;
	if (!fp.mutate || rnd_below(fp.rate))
		return len;
	fp.mutated++;
	switch (rnd_below(12)) {
	case 0:		/* flip bits of a header byte */
		msg[rnd_below(16)] ^= 1 << rnd_below(8);
		return len;
	case 1:		/* flip a payload byte */
		if (len > 16)
			msg[16 + rnd_below(len - 16)] ^= 1 + rnd_below(255);
		return len;
	case 2:		/* a random size */
		hdr->size = htole32(rnd_below(4) ? len + rnd_below(64) - 32 :
				    (uint32_t)rnd());
		return len;
	case 3:		/* another msg_id */
		hdr->msg_id = htole16(le16toh(hdr->msg_id) + 1 + rnd_below(3));
		return len;
	case 4:		/* another command */
		hdr->command = htole16(rnd_below(20));
		return len;
	case 5:		/* an error reply with a random errno */
		hdr->flags |= htole32(VFIO_USER_F_ERROR);
		hdr->error_no = htole32(rnd_below(3) ? rnd_below(600) :
					(uint32_t)rnd());
		return len;
	case 6:		/* truncated, then the stream goes on */
		return rnd_below(len);
	case 7:		/* duplicated */
		*dup = true;
		return len;
	case 8:		/* dropped: the client times out */
		return rnd_below(8) ? len : 0;
	case 9:		/* random bytes everywhere */
		for (i = 0; i < len && i < 64; i++)
			if (!rnd_below(8))
				msg[i] = rnd();
		return len;
	case 10:	/* another type, no_reply */
		hdr->flags = htole32(rnd_below(64));
		return len;
	default:	/* closed mid-message */
		return -1;
	}
}

/* Sends one message (through the mutator); counts it. */
static int send_msg(uint8_t *msg, size_t len)
{
	bool dup;
	ssize_t n;
	int ret;

	fp.sent++;
	n = mutate(msg, len, &dup);
	if (n < 0) {
		send_all(msg, rnd_below(len));
		return -EPIPE;
	}
	ret = send_all(msg, n);
	if (!ret && dup)
		ret = send_all(msg, n);
	return ret;
}

static uint8_t out[FP_MAX_MSG];

static void fill_hdr(uint8_t *buf, uint16_t id, uint16_t cmd, size_t size,
		     uint32_t flags, uint32_t err)
{
	struct vfio_user_hdr hdr = {
		.msg_id = htole16(id), .command = htole16(cmd),
		.size = htole32(size), .flags = htole32(flags),
		.error_no = htole32(err),
	};

	memcpy(buf, &hdr, sizeof(hdr));
}

static int reply(const struct vfio_user_hdr *req, const void *payload,
		 size_t len)
{
	fill_hdr(out, le16toh(req->msg_id), le16toh(req->command), 16 + len,
		 VFIO_USER_F_TYPE_REPLY, 0);
	if (len)
		memcpy(out + 16, payload, len);
	fp.last_reply_id = le16toh(req->msg_id);
	return send_msg(out, 16 + len);
}

static int reply_err(const struct vfio_user_hdr *req, uint32_t err)
{
	fill_hdr(out, le16toh(req->msg_id), le16toh(req->command), 16,
		 VFIO_USER_F_TYPE_REPLY | VFIO_USER_F_ERROR, err);
	return send_msg(out, 16);
}

/* A DMA_READ or DMA_WRITE command of ours. */
static int send_dma(uint16_t cmd, uint64_t addr, uint64_t count,
		    size_t data_len, uint8_t fill)
{
	struct vfio_user_dma_access acc = {
		.addr = htole64(addr), .count = htole64(count),
	};

	if (data_len > FP_MAX_MSG - 32)
		data_len = FP_MAX_MSG - 32;
	fp.dma_id = fp.next_id++;
	fp.dma_cmd = cmd;
	fill_hdr(out, fp.dma_id, cmd, 32 + data_len, VFIO_USER_F_TYPE_COMMAND, 0);
	memcpy(out + 16, &acc, sizeof(acc));
	memset(out + 32, fill, data_len);
	return send_msg(out, 32 + data_len);
}

/*
 * VERSION
 */
static int handle_version(const struct vfio_user_hdr *req)
{
	static char json[16384];
	struct vfio_user_version *v = (void *)(out + 16);
	uint16_t major = 0;
	size_t jlen;
	int i, n;

	if (fault_is("version_hang")) {
		fp.fault_done = true;
		return 0;	/* never answered; we go on reading */
	}
	snprintf(json, sizeof(json),
		 "{\"capabilities\":{\"max_msg_fds\":8,\"max_data_xfer_size\":%u,\"max_dma_maps\":65535}}",
		 fp.xfer);
	if (fault_is("version_malformed"))
		strcpy(json, "{\"capabilities\":{\"max_msg_fds\":,}");
	else if (fault_is("version_huge_number"))
		strcpy(json, "{\"capabilities\":{\"max_data_xfer_size\":123456789012345678901234567890}}");
	else if (fault_is("version_xfer_small"))
		strcpy(json, "{\"capabilities\":{\"max_data_xfer_size\":1}}");
	else if (fault_is("version_bad_major"))
		major = 1;
	else if (fault_is("version_deep")) {
		n = 0;
		n += sprintf(json + n, "{\"capabilities\":{\"x\":");
		for (i = 0; i < 200; i++)
			json[n++] = '[';
		for (i = 0; i < 200; i++)
			json[n++] = ']';
		strcpy(json + n, "}}");
	} else if (fault_is("version_oversized")) {
		n = sprintf(json, "{\"pad\":\"");
		memset(json + n, 'x', 9000);
		strcpy(json + n + 9000, "\"}");
	}
	if (fault_is("version_trickle")) {
		n = sprintf(json, "{\"pad\":\"");
		memset(json + n, 'x', 2000);
		strcpy(json + n + 2000, "\"}");
	}
	if (fault_is("version_twin_pipe"))
		snprintf(json, sizeof(json),
			 "{\"capabilities\":{\"max_msg_fds\":8,\"max_data_xfer_size\":%u,\"twin_socket\":{\"supported\":true,\"fd_index\":0}}}",
			 fp.xfer);
	jlen = strlen(json) + 1;
	if (fault_is("version_no_nul"))
		jlen--;

	fill_hdr(out, le16toh(req->msg_id), VFIO_USER_VERSION,
		 16 + sizeof(*v) + jlen, VFIO_USER_F_TYPE_REPLY, 0);
	if (fault_is("version_wrong_reply"))
		fill_hdr(out, 7, VFIO_USER_VERSION, 16 + sizeof(*v) + jlen,
			 VFIO_USER_F_TYPE_REPLY, 0);
	v->major = htole16(major);
	v->minor = htole16(VFIO_USER_MINOR);
	memcpy(v->data, json, jlen);
	if (fault_is("version_trickle")) {
		/* valid, but a byte every 50 ms: 100 s in all */
		for (n = 0; n < (int)(16 + sizeof(*v) + jlen); n++) {
			if (send_all(out + n, 1))
				return -EPIPE;
			usleep(50000);
		}
		return 0;
	}
	if (fault_is("version_twin_pipe")) {
		fp.fault_done = true;
		return send_msg_fault_fds(out, 16 + sizeof(*v) + jlen);
	}
	if (!strncmp(fp.fault, "version_", 8))
		fp.fault_done = true;
	return send_msg(out, 16 + sizeof(*v) + jlen);
}

/*
 * Device, region and IRQ info
 */
static int handle_device_info(const struct vfio_user_hdr *req)
{
	struct vfio_user_device_info info = {
		.argsz = htole32(sizeof(info)),
		.flags = htole32(VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET),
		.num_regions = htole32(VFIO_PCI_NUM_REGIONS),
		.num_irqs = htole32(VFIO_PCI_NUM_IRQS),
	};

	if (fault_is("attach_hang")) {
		fp.fault_done = true;
		return 0;	/* never answered */
	}
	if (fault_is("attach_close"))
		return -EPIPE;
	if (fault_is("info_huge_counts")) {
		info.num_regions = htole32(0xffffffff);
		info.num_irqs = htole32(0x7fffffff);
		fp.fault_done = true;
	}
	return reply(req, &info, sizeof(info));
}

/* A capability header at @off of a region info reply in @buf. */
static void put_cap(uint8_t *buf, uint32_t off, uint16_t id, uint16_t version,
		    uint32_t next)
{
	struct vfio_user_cap_header h = {
		.id = htole16(id), .version = htole16(version),
		.next = htole32(next),
	};

	memcpy(buf + off, &h, sizeof(h));
}

static void put_area(uint8_t *buf, uint32_t off, uint64_t offset,
		     uint64_t size)
{
	struct vfio_user_sparse_mmap_area a = {
		.offset = htole64(offset), .size = htole64(size),
	};

	memcpy(buf + off, &a, sizeof(a));
}

static void put_type(uint8_t *buf, uint32_t off, uint16_t version,
		     uint32_t next)
{
	put_cap(buf, off, VFIO_REGION_INFO_CAP_TYPE, version, next);
	put32(buf + off + 8, 0x80000001);
	put32(buf + off + 12, 7);
}

/*
 * BAR0's capability chain for the cap_* faults, written after the region
 * info in @buf (256 bytes); returns the reply length.
 */
static size_t cap_fault(uint8_t *buf)
{
	struct vfio_user_region_info *info = (void *)buf;
	size_t rlen;

	memset(buf + 32, 0, 256 - 32);
	info->flags |= htole32(VFIO_REGION_INFO_FLAG_CAPS);
	info->cap_offset = htole32(32);
	if (fault_is("cap_sparse_count")) {
		/* 1000 areas, room for one */
		put_cap(buf, 32, VFIO_REGION_INFO_CAP_SPARSE_MMAP, 1, 0);
		put32(buf + 40, 1000);
		put_area(buf, 48, 0, 0x1000);
		rlen = 64;
	} else if (fault_is("cap_sparse_outside")) {
		put_cap(buf, 32, VFIO_REGION_INFO_CAP_SPARSE_MMAP, 1, 0);
		put32(buf + 40, 1);
		put_area(buf, 48, 0x1000, FP_BAR0_SIZE);
		rlen = 64;
	} else if (fault_is("cap_sparse_wrap")) {
		/* the second area's end wraps to 0x1000 */
		put_cap(buf, 32, VFIO_REGION_INFO_CAP_SPARSE_MMAP, 1, 0);
		put32(buf + 40, 2);
		put_area(buf, 48, 0, 0x1000);
		put_area(buf, 64, ~0ULL - 0xfff, FP_BAR0_SIZE);
		rlen = 80;
	} else if (fault_is("cap_type_len")) {
		/* a type capability cut to 12 bytes */
		put_cap(buf, 32, VFIO_REGION_INFO_CAP_TYPE, 1, 44);
		put32(buf + 40, 0x80000001);
		put_cap(buf, 44, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 1, 0);
		rlen = 52;
	} else if (fault_is("cap_unknown")) {
		put_cap(buf, 32, 0x7777, 1, 44);
		put32(buf + 40, 0xdeadbeef);
		put_type(buf, 44, 1, 0);
		rlen = 60;
	} else {	/* cap_mixed */
		put_cap(buf, 32, 0x7777, 1, 48);
		put32(buf + 40, 0xdeadbeef);
		put_cap(buf, 48, VFIO_REGION_INFO_CAP_SPARSE_MMAP, 1, 80);
		put32(buf + 56, 1);
		put_area(buf, 64, 0, 0x1000);
		put_cap(buf, 80, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 1, 88);
		put_type(buf, 88, 1, 104);
		put_type(buf, 104, 2, 0);
		rlen = 120;
	}
	fp.fault_done = true;
	return rlen;
}

static int handle_region_info(const struct vfio_user_hdr *req,
			      const uint8_t *p, size_t len)
{
	uint8_t buf[256] = { 0 };
	struct vfio_user_region_info *info = (void *)buf;
	struct vfio_user_cap_header *cap;
	uint32_t index;
	size_t rlen = sizeof(*info);

	if (len < sizeof(*info))
		return reply_err(req, EINVAL);
	index = get32(p + 8);
	info->argsz = htole32(sizeof(*info));
	info->index = htole32(index);
	if (index == VFIO_PCI_CONFIG_REGION_INDEX || index <= VFIO_PCI_BAR1_REGION_INDEX) {
		info->flags = htole32(VFIO_REGION_INFO_FLAG_READ |
				      VFIO_REGION_INFO_FLAG_WRITE);
		info->size = htole64(index == VFIO_PCI_CONFIG_REGION_INDEX ?
				     FP_CFG_SIZE : index ? FP_BAR1_SIZE :
				     FP_BAR0_SIZE);
	}
	if (index == VFIO_PCI_BAR0_REGION_INDEX) {
		if (fault_is("region_index")) {
			info->index = htole32(index + 1);
			fp.fault_done = true;
		} else if (fault_is("region_cap_loop")) {
			/* cap at 32 -> 48 -> 32 */
			info->flags |= htole32(VFIO_REGION_INFO_FLAG_CAPS);
			info->cap_offset = htole32(32);
			cap = (void *)(buf + 32);
			cap->id = htole16(VFIO_REGION_INFO_CAP_TYPE);
			cap->version = htole16(1);
			cap->next = htole32(48);
			cap = (void *)(buf + 48);
			cap->id = htole16(VFIO_REGION_INFO_CAP_TYPE);
			cap->version = htole16(1);
			cap->next = htole32(32);
			rlen = 64;
			fp.fault_done = true;
		} else if (fault_is("region_cap_outside")) {
			info->flags |= htole32(VFIO_REGION_INFO_FLAG_CAPS);
			info->cap_offset = htole32(32);
			cap = (void *)(buf + 32);
			cap->id = htole16(VFIO_REGION_INFO_CAP_TYPE);
			cap->version = htole16(1);
			cap->next = htole32(4000);
			rlen = 48;
			fp.fault_done = true;
		} else if (fault_is("region_cap_offset")) {
			info->flags |= htole32(VFIO_REGION_INFO_FLAG_CAPS);
			info->cap_offset = htole32(0xfffffff0);
			rlen = 48;
			fp.fault_done = true;
		} else if (!fp.mutate || rnd_below(2)) {
			/* A valid chain: one type capability. */
			struct vfio_user_region_info_cap_type *t = (void *)(buf + 32);

			info->flags |= htole32(VFIO_REGION_INFO_FLAG_CAPS);
			info->cap_offset = htole32(32);
			t->header.id = htole16(VFIO_REGION_INFO_CAP_TYPE);
			t->header.version = htole16(1);
			t->type = htole32(0x80000001);
			t->subtype = htole32(7);
			rlen = 48;
		}
	}
	if (index == VFIO_PCI_BAR2_REGION_INDEX &&
	    (fault_is("region_huge") || fault_is("region_max"))) {
		info->flags = htole32(VFIO_REGION_INFO_FLAG_READ);
		info->size = htole64((1ULL << 40) +
				     (fault_is("region_huge") ? 4096 : 0));
		fp.fault_done = true;
	}
	if (index == VFIO_PCI_BAR0_REGION_INDEX && !fp.fault_done &&
	    !strncmp(fp.fault, "cap_", 4))
		rlen = cap_fault(buf);
	info->argsz = htole32(rlen);
	if (index == VFIO_PCI_BAR1_REGION_INDEX && !fp.fault_done &&
	    !strncmp(fp.fault, "region_fd_", 10)) {
		info->flags |= htole32(VFIO_REGION_INFO_FLAG_MMAP);
		fp.fault_done = true;
		fill_hdr(out, le16toh(req->msg_id), le16toh(req->command),
			 16 + rlen, VFIO_USER_F_TYPE_REPLY, 0);
		memcpy(out + 16, buf, rlen);
		fp.last_reply_id = le16toh(req->msg_id);
		return send_msg_fault_fds(out, 16 + rlen);
	}
	return reply(req, buf, rlen);
}

static int handle_irq_info(const struct vfio_user_hdr *req, const uint8_t *p,
			   size_t len)
{
	struct vfio_user_irq_info info;
	uint32_t index;

	if (len < sizeof(info))
		return reply_err(req, EINVAL);
	index = get32(p + 8);
	info.argsz = htole32(sizeof(info));
	info.index = htole32(index);
	info.flags = htole32(VFIO_IRQ_INFO_EVENTFD);
	info.count = htole32(index == VFIO_PCI_MSIX_IRQ_INDEX ? fp.msix :
			     index <= VFIO_PCI_MSI_IRQ_INDEX ? 1 : 0);
	if (index == VFIO_PCI_MSIX_IRQ_INDEX && fault_is("irq_index")) {
		info.index = htole32(9);
		fp.fault_done = true;
	}
	if (index == VFIO_PCI_MSIX_IRQ_INDEX && fault_is("irq_huge_count")) {
		info.count = htole32(0x7fffffff);
		fp.fault_done = true;
	}
	if (index == VFIO_PCI_INTX_IRQ_INDEX && fault_is("irq_flags"))
		info.flags = htole32(VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE |
				     VFIO_IRQ_INFO_AUTOMASKED | 0x100);
	if (index == VFIO_PCI_MSIX_IRQ_INDEX && fault_is("irq_flags")) {
		info.flags = htole32(VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE |
				     0x80000030);
		fp.fault_done = true;
	}
	return reply(req, &info, sizeof(info));
}

/*
 * Region accesses, and the faults of the first REGION_READ
 */
static int region_read_fault(const struct vfio_user_hdr *req,
			     struct vfio_user_region_access *acc)
{
	uint32_t count = le32toh(acc->count);
	uint16_t id = le16toh(req->msg_id);
	size_t full = 16 + sizeof(*acc) + count;
	uint8_t *msg = out;
	int pfd[2];
	size_t i;

	fp.fault_done = true;
	fill_hdr(msg, id, VFIO_USER_REGION_READ, full, VFIO_USER_F_TYPE_REPLY, 0);
	memcpy(msg + 16, acc, sizeof(*acc));
	memset(msg + 32, 0, count);
	if (le32toh(acc->region) == VFIO_PCI_BAR0_REGION_INDEX &&
	    le64toh(acc->offset) == 0 && count >= 4)
		put32(msg + 32, FP_MAGIC);

	if (!strcmp(fp.fault, "unknown_id")) {
		fill_hdr(msg, id + 1000, VFIO_USER_REGION_READ, full,
			 VFIO_USER_F_TYPE_REPLY, 0);
	} else if (!strcmp(fp.fault, "reply_to_nothing")) {
		uint8_t dup[16 + 16];

		/* A second reply to the last request we answered. */
		fill_hdr(dup, fp.last_reply_id, VFIO_USER_DMA_MAP, 16,
			 VFIO_USER_F_TYPE_REPLY, 0);
		send_all(dup, 16);
	} else if (!strcmp(fp.fault, "trunc_hdr")) {
		send_all(msg, 9);
		return -EPIPE;
	} else if (!strcmp(fp.fault, "size_small")) {
		fill_hdr(msg, id, VFIO_USER_REGION_READ, 8,
			 VFIO_USER_F_TYPE_REPLY, 0);
	} else if (!strcmp(fp.fault, "size_huge")) {
		fill_hdr(msg, id, VFIO_USER_REGION_READ, 0xfffffff0,
			 VFIO_USER_F_TYPE_REPLY, 0);
	} else if (!strcmp(fp.fault, "size_long")) {
		/* 8 bytes more than the access count says */
		fill_hdr(msg, id, VFIO_USER_REGION_READ, full + 8,
			 VFIO_USER_F_TYPE_REPLY, 0);
		full += 8;
	} else if (!strcmp(fp.fault, "size_short")) {
		/* the header says no data, the access says count bytes */
		fill_hdr(msg, id, VFIO_USER_REGION_READ, 32,
			 VFIO_USER_F_TYPE_REPLY, 0);
		full = 32;
	} else if (!strcmp(fp.fault, "huge_count")) {
		put32(msg + 16 + 12, 0xffffffff);
	} else if (!strcmp(fp.fault, "wrong_cmd")) {
		fill_hdr(msg, id, VFIO_USER_REGION_WRITE, full,
			 VFIO_USER_F_TYPE_REPLY, 0);
	} else if (!strcmp(fp.fault, "err_zero")) {
		fill_hdr(msg, id, VFIO_USER_REGION_READ, 16,
			 VFIO_USER_F_TYPE_REPLY | VFIO_USER_F_ERROR, 0);
		full = 16;
	} else if (!strcmp(fp.fault, "err_huge")) {
		fill_hdr(msg, id, VFIO_USER_REGION_READ, 16,
			 VFIO_USER_F_TYPE_REPLY | VFIO_USER_F_ERROR, 5000);
		full = 16;
	} else if (!strcmp(fp.fault, "err_restart")) {
		/* ERESTART_RESTARTBLOCK: kernel-internal, never for users */
		fill_hdr(msg, id, VFIO_USER_REGION_READ, 16,
			 VFIO_USER_F_TYPE_REPLY | VFIO_USER_F_ERROR, 516);
		full = 16;
	} else if (!strcmp(fp.fault, "err_payload")) {
		fill_hdr(msg, id, VFIO_USER_REGION_READ, 16 + 65536,
			 VFIO_USER_F_TYPE_REPLY | VFIO_USER_F_ERROR, EIO);
		memset(msg + 16, 0x55, 65536);
		full = 16 + 65536;
	} else if (!strcmp(fp.fault, "bad_type")) {
		fill_hdr(msg, id, VFIO_USER_REGION_READ, full, 3, 0);
	} else if (!strcmp(fp.fault, "server_cmd_unknown")) {
		fill_hdr(msg, fp.next_id++, VFIO_USER_DEVICE_GET_INFO, 16,
			 VFIO_USER_F_TYPE_COMMAND, 0);
		full = 16;
	} else if (!strcmp(fp.fault, "dma_read_big")) {
		return send_dma(VFIO_USER_DMA_READ, 0, (uint64_t)fp.xfer + 1, 0, 0);
	} else if (!strcmp(fp.fault, "dma_write_big")) {
		return send_dma(VFIO_USER_DMA_WRITE, 0, (uint64_t)fp.xfer + 4096,
				fp.xfer + 4096, 0xaa);
	} else if (!strcmp(fp.fault, "dma_write_mismatch")) {
		return send_dma(VFIO_USER_DMA_WRITE, 0, 4096, 64, 0xaa);
	} else if (!strcmp(fp.fault, "flood")) {
		/* Commands we never read the replies of. */
		for (i = 0; i < 100000; i++)
			if (send_dma(VFIO_USER_DMA_READ, 1ULL << 50, 4096, 0, 0))
				break;
		pause();
		return -EPIPE;
	} else if (!strcmp(fp.fault, "slow")) {
		return send_slowly(msg, full, 2000);
	} else if (!strcmp(fp.fault, "trickle")) {
		return send_slowly(msg, full, 100000);
	} else if (!strcmp(fp.fault, "withhold")) {
		return 0;	/* never answered; later requests are */
	} else if (!strcmp(fp.fault, "hold_reply")) {
		/* (the consumer is waiting by now, not about to) */
		usleep(100000);
		if (send_all(msg, full / 2))
			return -EPIPE;
		hold();
		fp.sent++;
		return send_all(msg + full / 2, full - full / 2);
	} else if (!strcmp(fp.fault, "close_mid")) {
		send_all(msg, full / 2);
		usleep(300000);
		return -EPIPE;
	} else if (!strcmp(fp.fault, "hang")) {
		pause();
		return -EPIPE;
	} else if (!strcmp(fp.fault, "fds")) {
		if (pipe(pfd))
			return -errno;
		fp.fds_pipe = pfd[0];
		if (send_with_fd(msg, full, pfd[1]))
			return -EPIPE;
		close(pfd[1]);
		fp.sent++;
		return 0;
	} else if (!strcmp(fp.fault, "reply_flag_reserved")) {
		fill_hdr(msg, id, VFIO_USER_REGION_READ, full,
			 VFIO_USER_F_TYPE_REPLY | 0x40, 0);
	}
	return send_msg(msg, full);
}

static int handle_region(const struct vfio_user_hdr *req, uint8_t *p,
			 size_t len, bool write)
{
	struct vfio_user_region_access acc;
	uint32_t count, region;
	uint64_t offset;
	uint8_t *mem;
	size_t size;

	if (len < sizeof(acc))
		return reply_err(req, EINVAL);
	memcpy(&acc, p, sizeof(acc));
	offset = le64toh(acc.offset);
	region = le32toh(acc.region);
	count = le32toh(acc.count);
	if (region == VFIO_PCI_CONFIG_REGION_INDEX) {
		mem = fp.cfg;
		size = sizeof(fp.cfg);
	} else if (region == VFIO_PCI_BAR0_REGION_INDEX) {
		mem = fp.bar0;
		size = sizeof(fp.bar0);
	} else if (region == VFIO_PCI_BAR1_REGION_INDEX) {
		mem = fp.bar1;
		size = sizeof(fp.bar1);
	} else {
		return reply_err(req, EINVAL);
	}
	if (offset > size || count > size - offset ||
	    (write && len != sizeof(acc) + count))
		return reply_err(req, EINVAL);

	if (!write && strcmp(fp.fault, "none") && !fp.fault_done &&
	    strcmp(fp.fault, "slow_reader") && strcmp(fp.fault, "hold_request"))
		return region_read_fault(req, &acc);

	if (write) {
		memcpy(mem + offset, p + sizeof(acc), count);
		if (mem == fp.bar0 && offset <= REG_DOORBELL &&
		    offset + count >= REG_DOORBELL + 4) {
			uint32_t op = get32(mem + REG_DOORBELL);
			uint64_t addr = get64(mem + REG_ADDR);
			uint64_t n = get64(mem + REG_COUNT);
			uint8_t fill = mem[REG_FILL];

			put32(mem + REG_RESULT, FP_NO_REPLY);
			fp.pending = true;
			fp.pending_id = le16toh(req->msg_id);
			fp.pending_acc = acc;
			if (op == 1)
				return send_dma(VFIO_USER_DMA_READ, addr, n, 0, 0);
			if (op == 2)
				return send_dma(VFIO_USER_DMA_WRITE, addr, n, n, fill);
			return send_dma(VFIO_USER_DMA_WRITE, addr, n, n / 2, fill);
		}
		acc.count = htole32(count);
		return reply(req, &acc, sizeof(acc));
	}

	if (mem == fp.bar0) {
		put32(mem, FP_MAGIC);
		put32(mem + REG_IRQ_FDS, fp.irq_fds);
		if (fp.fds_pipe >= 0) {
			struct pollfd pf = { .fd = fp.fds_pipe, .events = POLLIN };

			put32(mem + REG_FDS, poll(&pf, 1, 2000) == 1 &&
			      (pf.revents & POLLHUP));
		}
	}
	{
		static uint8_t buf[FP_BAR1_SIZE + 16];

		memcpy(buf, &acc, sizeof(acc));
		memcpy(buf + sizeof(acc), mem + offset, count);
		return reply(req, buf, sizeof(acc) + count);
	}
}

/* The client's reply to our DMA command. */
static int handle_dma_reply(const struct vfio_user_hdr *hdr, uint8_t *p,
			    size_t len)
{
	uint32_t flags = le32toh(hdr->flags);
	uint32_t result = 0;

	if (flags & VFIO_USER_F_ERROR)
		result = le32toh(hdr->error_no);
	else if (fp.dma_cmd == VFIO_USER_DMA_READ && len > 16)
		memcpy(fp.bar0 + REG_DATA, p + 16,
		       len - 16 < 4096 ? len - 16 : 4096);
	put32(fp.bar0 + REG_RESULT, result);
	if (!fp.pending)
		return 0;
	fp.pending = false;
	{
		struct vfio_user_hdr req = {
			.msg_id = htole16(fp.pending_id),
			.command = htole16(VFIO_USER_REGION_WRITE),
		};

		return reply(&req, &fp.pending_acc, sizeof(fp.pending_acc));
	}
}

/* --mutate: sometimes a DMA command of ours before a region reply. */
static int maybe_inject_dma(void)
{
	uint64_t addr;

	if (!fp.mutate || fp.pending || rnd_below(16))
		return 0;
	addr = rnd_below(2) ? fp.dma_addr + rnd_below(8192) : rnd();
	if (rnd_below(2))
		return send_dma(VFIO_USER_DMA_READ, addr, 1 + rnd_below(256), 0, 0);
	return send_dma(VFIO_USER_DMA_WRITE, addr, 64, 64, rnd());
}

/*
 * --mig-endless: DEVICE_FEATURE, MIG_DATA_READ, MIG_DATA_WRITE
 */
#define FP_MIG_RUNNING		2
#define FP_MIG_STOP_COPY	3
#define FP_MIG_RESUMING		4
#define FP_MIG_NR_STATES	6	/* ERROR..RUNNING_P2P; no PRE_COPY */

static uint8_t mig_out[FP_MAX_MSG];

static int handle_feature(const struct vfio_user_hdr *req, const uint8_t *p,
			  size_t len)
{
	uint32_t flags, feature, state;
	uint64_t v;

	if (len < 8)
		return reply_err(req, EINVAL);
	flags = get32(p + 4);
	feature = flags & VFIO_USER_DEVICE_FEATURE_MASK;
	if (feature != VFIO_USER_DEVICE_FEATURE_MIGRATION &&
	    feature != VFIO_USER_DEVICE_FEATURE_MIG_DEVICE_STATE &&
	    feature != VFIO_USER_DEVICE_FEATURE_MIG_DATA_SIZE)
		return reply_err(req, EOPNOTSUPP);
	if (flags & VFIO_USER_DEVICE_FEATURE_PROBE)
		return reply(req, p, len);	/* a PROBE reply repeats it */
	switch (flags & (VFIO_USER_DEVICE_FEATURE_MASK |
			 VFIO_USER_DEVICE_FEATURE_GET |
			 VFIO_USER_DEVICE_FEATURE_SET)) {
	case VFIO_USER_DEVICE_FEATURE_GET | VFIO_USER_DEVICE_FEATURE_MIGRATION:
		v = VFIO_USER_MIGRATION_STOP_COPY | VFIO_USER_MIGRATION_P2P;
		break;
	case VFIO_USER_DEVICE_FEATURE_GET | VFIO_USER_DEVICE_FEATURE_MIG_DATA_SIZE:
		v = 1 << 20;
		break;
	case VFIO_USER_DEVICE_FEATURE_GET | VFIO_USER_DEVICE_FEATURE_MIG_DEVICE_STATE:
		v = fp.mig_state;	/* device_state, data_fd 0 */
		break;
	case VFIO_USER_DEVICE_FEATURE_SET | VFIO_USER_DEVICE_FEATURE_MIG_DEVICE_STATE:
		if (len != 16)
			return reply_err(req, EINVAL);
		state = get32(p + 8);
		if (!state || state >= FP_MIG_NR_STATES)
			return reply_err(req, EINVAL);
		if (state == FP_MIG_STOP_COPY && fp.mig_state != FP_MIG_STOP_COPY)
			fp.mig_bytes = 0;
		fp.mig_state = state;
		return reply(req, p, len);	/* a SET reply repeats the request */
	default:
		return reply_err(req, EOPNOTSUPP);
	}
	put32(mig_out, 16);
	put32(mig_out + 4, flags);
	v = htole64(v);
	memcpy(mig_out + 8, &v, 8);
	return reply(req, mig_out, 16);
}

/* Every read gets all it asked for: the stream never ends. */
static int handle_mig_read(const struct vfio_user_hdr *req, const uint8_t *p,
			   size_t len)
{
	uint32_t size, i;

	if (len != 8)
		return reply_err(req, EINVAL);
	size = get32(p + 4);
	if (fp.mig_state != FP_MIG_STOP_COPY)
		return reply_err(req, EINVAL);
	if (size > fp.xfer || get32(p) < 8 + (uint64_t)size)
		return reply_err(req, E2BIG);
	put32(mig_out, 8 + size);
	put32(mig_out + 4, size);
	for (i = 0; i < size; i++)
		mig_out[8 + i] = (uint8_t)(fp.mig_bytes + i);
	fp.mig_bytes += size;
	return reply(req, mig_out, 8 + size);
}

static int handle_mig_write(const struct vfio_user_hdr *req, const uint8_t *p,
			    size_t len)
{
	if (len < 8 || len - 8 != get32(p + 4))
		return reply_err(req, EINVAL);
	if (fp.mig_state != FP_MIG_RESUMING)
		return reply_err(req, EINVAL);
	return reply(req, NULL, 0);
}

static uint8_t in[FP_MAX_MSG];

static void serve(void)
{
	struct vfio_user_hdr hdr;
	uint32_t size, got;
	int ret = 0;

	fp.fault_done = false;
	fp.pending = false;
	fp.fds_pipe = -1;
	fp.irq_fds = 0;
	fp.mig_state = FP_MIG_RUNNING;
	while (!ret) {
		uint32_t irq_fds_before = fp.irq_fds;

		if (fp.mutate && fp.sent >= fp.count)
			return;
		if (recv_all(&hdr, sizeof(hdr)))
			return;
		size = le32toh(hdr.size);
		if (size < 16 || size - 16 > sizeof(in))
			return;
		got = 0;
		if (size - 16 > FP_HOLD_CHUNK && fault_is("hold_request") &&
		    le16toh(hdr.command) == VFIO_USER_REGION_WRITE) {
			/* The client is left in the middle of its send. */
			fp.fault_done = true;
			if (recv_all(in, FP_HOLD_CHUNK))
				return;
			got = FP_HOLD_CHUNK;
			hold();
		}
		if (recv_all(in + got, size - 16 - got))
			return;
		if (fault_is("slow_reader") &&
		    le16toh(hdr.command) == VFIO_USER_REGION_READ)
			fp.slow_reader = true;
		if ((le32toh(hdr.flags) & VFIO_USER_F_TYPE_MASK) ==
		    VFIO_USER_F_TYPE_REPLY) {
			ret = handle_dma_reply(&hdr, in, size - 16);
			continue;
		}
		switch (le16toh(hdr.command)) {
		case VFIO_USER_VERSION:
			ret = handle_version(&hdr);
			break;
		case VFIO_USER_DEVICE_GET_INFO:
			ret = handle_device_info(&hdr);
			break;
		case VFIO_USER_DEVICE_GET_REGION_INFO:
			ret = handle_region_info(&hdr, in, size - 16);
			break;
		case VFIO_USER_DEVICE_GET_IRQ_INFO:
			ret = handle_irq_info(&hdr, in, size - 16);
			break;
		case VFIO_USER_REGION_READ:
		case VFIO_USER_REGION_WRITE:
			ret = maybe_inject_dma();
			if (!ret)
				ret = handle_region(&hdr, in, size - 16,
						    le16toh(hdr.command) ==
						    VFIO_USER_REGION_WRITE);
			break;
		case VFIO_USER_DEVICE_SET_IRQS:
			if (fp.set_irqs_delay_us)
				usleep(fp.set_irqs_delay_us);
			ret = reply(&hdr, NULL, 0);
			break;
		case VFIO_USER_DMA_MAP:
			/* The DMA window's fd, if any, is not an IRQ's. */
			fp.irq_fds = irq_fds_before;
			ret = reply(&hdr, NULL, 0);
			break;
		case VFIO_USER_DEVICE_RESET:
			fp.mig_state = FP_MIG_RUNNING;
			ret = reply(&hdr, NULL, 0);
			break;
		case VFIO_USER_DMA_UNMAP:
			ret = reply(&hdr, NULL, 0);
			break;
		case VFIO_USER_DEVICE_FEATURE:
			ret = fp.mig_endless ? handle_feature(&hdr, in, size - 16) :
			      reply_err(&hdr, ENOSYS);
			break;
		case VFIO_USER_MIG_DATA_READ:
			ret = fp.mig_endless ? handle_mig_read(&hdr, in, size - 16) :
			      reply_err(&hdr, ENOSYS);
			break;
		case VFIO_USER_MIG_DATA_WRITE:
			ret = fp.mig_endless ? handle_mig_write(&hdr, in, size - 16) :
			      reply_err(&hdr, ENOSYS);
			break;
		default:
			ret = reply_err(&hdr, ENOSYS);
			break;
		}
	}
}

static void usage(void)
{
	int i;

	fprintf(stderr,
		"usage: fault_server --socket PATH [--fault NAME] [--xfer N] [--msix N]\n"
		"                    [--set-irqs-delay-us US] [--mig-endless]\n"
		"       fault_server --socket PATH --mutate SEED --count N [--rate R]\n"
		"                    [--dma-addr IOVA] [--stats FILE]\nfaults:");
	for (i = 0; fault_names[i]; i++)
		fprintf(stderr, " %s", fault_names[i]);
	fprintf(stderr, "\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "fault", required_argument, NULL, 'f' },
		{ "xfer", required_argument, NULL, 'x' },
		{ "mutate", required_argument, NULL, 'm' },
		{ "count", required_argument, NULL, 'c' },
		{ "rate", required_argument, NULL, 'r' },
		{ "dma-addr", required_argument, NULL, 'a' },
		{ "stats", required_argument, NULL, 'o' },
		{ "msix", required_argument, NULL, 'v' },
		{ "set-irqs-delay-us", required_argument, NULL, 'd' },
		{ "mig-endless", no_argument, NULL, 'e' },
		{ }
	};
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	const char *path = NULL, *stats = NULL;
	sigset_t usr1;
	int lfd, c, i;
	bool known = false;

	fp.fault = "none";
	fp.xfer = 1 << 20;
	fp.rate = 64;
	fp.next_id = 1;
	fp.msix = FP_MSIX;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's': path = optarg; break;
		case 'f': fp.fault = optarg; break;
		case 'x': fp.xfer = strtoul(optarg, NULL, 0); break;
		case 'm':
			fp.mutate = true;
			fp.rng = strtoull(optarg, NULL, 0) * 2654435761ULL + 1;
			break;
		case 'c': fp.count = strtoul(optarg, NULL, 0); break;
		case 'r': fp.rate = strtoul(optarg, NULL, 0); break;
		case 'a': fp.dma_addr = strtoull(optarg, NULL, 0); break;
		case 'o': stats = optarg; break;
		case 'v': fp.msix = strtoul(optarg, NULL, 0); break;
		case 'd': fp.set_irqs_delay_us = strtoul(optarg, NULL, 0); break;
		case 'e': fp.mig_endless = true; break;
		default: usage();
		}
	}
	for (i = 0; fault_names[i]; i++)
		known |= !strcmp(fault_names[i], fp.fault);
	if (!path || !known || strlen(path) >= sizeof(sun.sun_path))
		usage();
	if (fp.xfer < 512 || fp.xfer > (1 << 20))
		usage();
	if (!fp.msix || fp.msix > FP_MAX_MSIX)
		usage();
	signal(SIGPIPE, SIG_IGN);
	/* SIGUSR1 ends a hold (hold()); until then it waits, pending. */
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, NULL);

	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	strcpy(sun.sun_path, path);
	unlink(path);
	if (lfd < 0 || bind(lfd, (void *)&sun, sizeof(sun)) || listen(lfd, 8)) {
		perror("fault_server: socket");
		return 1;
	}
	do {
		fp.fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fp.fd < 0)
			continue;
		fp.conns++;
		memset(fp.cfg, 0, sizeof(fp.cfg));
		memset(fp.bar0, 0, sizeof(fp.bar0));
		put32(fp.cfg, 0x00ff4e58);
		fp.slow_reader = false;
		serve();
		close(fp.fd);
		if (fp.fds_pipe >= 0)
			close(fp.fds_pipe);
	} while (fp.mutate && fp.sent < fp.count);

	if (fp.mutate) {
		FILE *f = stats ? fopen(stats, "w") : NULL;

		printf("fault_server: seed-mutated %lu messages, %lu mutated, %lu connections\n",
		       fp.sent, fp.mutated, fp.conns);
		if (f) {
			fprintf(f, "%lu %lu %lu\n", fp.sent, fp.mutated, fp.conns);
			fclose(f);
		}
	}
	unlink(path);
	return 0;
}
