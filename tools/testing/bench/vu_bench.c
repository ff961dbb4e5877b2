// SPDX-License-Identifier: GPL-2.0-only
/*
 * vu_bench - measurements for `make bench`, run as root in the test VM.
 *
 *   vu_bench pingpong N               raw AF_UNIX ping-pong, REGION_READ sizes
 *   vu_bench bar-read UUID N          4-byte BAR0 reads through the module
 *   vu_bench bar-write UUID N         4-byte BAR0 writes through the module
 *   vu_bench mtty UUID N              1-byte reads of an mtty mdev (VFIO floor)
 *   vu_bench dma UUID MIB [MODE [PATH]]
 *                                     DMA-engine runs of MIB MiB, and memcpy:
 *                                     MODE copy (the device copies SRC to DST,
 *                                     the default), read (SRC only) or write
 *                                     (DST only); PATH the way the device must
 *                                     have moved the data: msg (DMA_READ/
 *                                     DMA_WRITE messages, the default) or shm
 *                                     (its mappings of the module's DMA
 *                                     window, no message)
 *   vu_bench dma-first UUID MIB       first touch of the DMA window: MIB MiB
 *                                     copied right after VFIO_IOMMU_MAP_DMA
 *                                     (the server's faults pin and map), then
 *                                     again (pinned), then unmapped
 *   vu_bench irq UUID N               null device: write IRQ reg, wait eventfd
 *   vu_bench doorbell UUID N          null device with --mmap: N 4-byte
 *                                     doorbell stores to the mapped sparse
 *                                     area of BAR4, then N REGION_WRITEs
 *                                     (pwrite) of the same doorbell; exits 1
 *                                     when BAR4 is not mmap-able or either
 *                                     way did not reach the server's memory
 *   vu_bench eventfd N                raw eventfd ping-pong between processes
 *   vu_bench stream MIB               raw AF_UNIX stream of 1 MiB messages:
 *                                     the transport floor for DMA
 *
 * Throughputs (dma, dma-first, stream) are the median of THRU_RUNS runs
 * after one warm-up run: the first pass of a fresh server faults its
 * buffers in and has TCG translate the code paths, and is not the steady
 * state. The dma tests read the device's SHM_BYTES, RD_MSGS and WR_MSGS
 * registers around every doorbell and exit 1 when a copy did not take the
 * path the test claims.
 *   vu_bench scale SECS UUID...       one reader thread per device, ops/s
 *   vu_bench user-rt SOCKET N         the same 4-byte BAR0 read as REGION_READ
 *                                     from a userspace client: the server's
 *                                     own cost, without the module
 *
 * Each prints one JSON object on stdout. Latencies are per operation in ns:
 * median, p99, mean; every figure is only compared with others of the same
 * VM run (TCG distorts absolute time). Per-op samples go to $VU_SAMPLES
 * (one number per line) when set, for the histogram.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/vfio.h>
#include <linux/vfio_user.h>
#include <sys/un.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define MDEV_DIR	"/sys/bus/mdev/devices"

static void xfer(int fd, void *buf, size_t len, int out);

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "vu_bench: %s: %s\n", what, strerror(errno));
	exit(1);
}

static unsigned long long ctxt_total(void)
{
	unsigned long long v = 0;
	char line[256];
	FILE *f = fopen("/proc/stat", "r");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "ctxt %llu", &v) == 1)
			break;
	fclose(f);
	return v;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Writes @n samples to @path (one per line) when @path is set. */
static void save_samples(const char *path, const uint64_t *s, long n)
{
	FILE *f;
	long i;

	if (!path || !*path)
		return;
	f = fopen(path, "w");
	for (i = 0; f && i < n; i++)
		fprintf(f, "%llu\n", (unsigned long long)s[i]);
	if (f)
		fclose(f);
}

/*
 * Prints median, p99 and mean of @n samples as JSON members named
 * @prefix median_ns etc. (no braces, no leading comma); sorts @s.
 */
static void print_stats_as(const char *prefix, uint64_t *s, long n)
{
	double sum = 0;
	long i;

	for (i = 0; i < n; i++)
		sum += s[i];
	qsort(s, n, sizeof(*s), cmp_u64);
	printf("\"%smedian_ns\": %llu, \"%sp99_ns\": %llu, \"%smean_ns\": %.0f",
	       prefix, (unsigned long long)s[n / 2],
	       prefix, (unsigned long long)s[(long)(n * 0.99)], prefix, sum / n);
}

/* Prints the stats of @n samples as JSON members (no braces). */
static void print_stats(uint64_t *s, long n)
{
	save_samples(getenv("VU_SAMPLES"), s, n);
	printf("\"ops\": %ld, ", n);
	print_stats_as("", s, n);
}

/* A VFIO device fd for an mdev (container with type1, like QEMU). */
static int open_mdev(const char *uuid, int *container)
{
	char path[256], link[256];
	int c, g, fd;
	ssize_t n;

	snprintf(path, sizeof(path), MDEV_DIR "/%s/iommu_group", uuid);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		die("iommu_group");
	link[n] = '\0';
	snprintf(path, sizeof(path), "/dev/vfio/%s", strrchr(link, '/') + 1);
	c = open("/dev/vfio/vfio", O_RDWR);
	g = open(path, O_RDWR);
	if (c < 0 || g < 0)
		die("open vfio");
	if (ioctl(g, VFIO_GROUP_SET_CONTAINER, &c) ||
	    ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		die("container");
	fd = ioctl(g, VFIO_GROUP_GET_DEVICE_FD, uuid);
	if (fd < 0)
		die("device fd");
	*container = c;
	return fd;
}

static uint64_t region_off(int fd, unsigned int index)
{
	struct vfio_region_info info = { .argsz = sizeof(info), .index = index };

	if (ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, &info))
		die("region info");
	return info.offset;
}

static void bar_rw(const char *uuid, long n, int write, uint64_t reg, int width)
{
	unsigned long long c0, c1;
	uint64_t *s, bar, t;
	uint32_t v = 0;
	int c, fd;
	long i;

	fd = open_mdev(uuid, &c);
	bar = region_off(fd, VFIO_PCI_BAR0_REGION_INDEX) + reg;
	s = calloc(n, sizeof(*s));
	c0 = ctxt_total();
	for (i = 0; i < n; i++) {
		t = now_ns();
		if ((write ? pwrite(fd, &v, width, bar) :
			     pread(fd, &v, width, bar)) != width)
			die("bar access");
		s[i] = now_ns() - t;
	}
	c1 = ctxt_total();
	printf("{\"test\": \"%s\", ", write ? "bar_write" : "bar_read");
	print_stats(s, n);
	printf(", \"ctxt_per_op\": %.2f}\n", (double)(c1 - c0) / n);
}

/* The transport floor: the same bytes a REGION_READ moves, raw. */
/*
 * The forked peer of a raw measurement runs on $VU_PEER_CPU when set:
 * run-bench pins clients to CPU 0 and servers (and peers) to CPU 1, so
 * that every pair of processes sits the same way and the ratios compare
 * like with like (otherwise the scheduler's placement moves the floor
 * by up to 50% between runs under TCG).
 */
static void peer_cpu(void)
{
	const char *c = getenv("VU_PEER_CPU");
	cpu_set_t set;

	if (!c || !*c)
		return;
	CPU_ZERO(&set);
	CPU_SET(atoi(c), &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		die("sched_setaffinity");
}

static void pingpong(long n)
{
	char req[32] = { 0 }, rep[36] = { 0 };
	unsigned long long c0, c1;
	int sv[2];
	uint64_t *s, t;
	pid_t pid;
	long i;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		die("socketpair");
	pid = fork();
	if (!pid) {
		peer_cpu();
		close(sv[0]);
		while (read(sv[1], req, sizeof(req)) == sizeof(req))
			if (write(sv[1], rep, sizeof(rep)) != sizeof(rep))
				break;
		_exit(0);
	}
	close(sv[1]);
	s = calloc(n, sizeof(*s));
	c0 = ctxt_total();
	for (i = 0; i < n; i++) {
		t = now_ns();
		if (write(sv[0], req, sizeof(req)) != sizeof(req) ||
		    recv(sv[0], rep, sizeof(rep), MSG_WAITALL) != sizeof(rep))
			die("pingpong");
		s[i] = now_ns() - t;
	}
	c1 = ctxt_total();
	close(sv[0]);
	waitpid(pid, NULL, 0);
	printf("{\"test\": \"pingpong\", ");
	print_stats(s, n);
	printf(", \"ctxt_per_op\": %.2f}\n", (double)(c1 - c0) / n);
}

/* Raw eventfd: one process signals, the other wakes (and answers). */
static void eventfd_pingpong(long n)
{
	int a = eventfd(0, 0), b = eventfd(0, 0);
	uint64_t v = 1, *s, t;
	pid_t pid;
	long i;

	pid = fork();
	if (!pid) {
		peer_cpu();
		for (i = 0; i < n; i++)
			if (read(a, &v, 8) != 8 || write(b, &v, 8) != 8)
				break;
		_exit(0);
	}
	s = calloc(n, sizeof(*s));
	for (i = 0; i < n; i++) {
		t = now_ns();
		if (write(a, &v, 8) != 8 || read(b, &v, 8) != 8)
			die("eventfd");
		s[i] = now_ns() - t;
	}
	waitpid(pid, NULL, 0);
	printf("{\"test\": \"eventfd\", ");
	print_stats(s, n);
	printf("}\n");
}

/* Throughput runs: one warm-up, then THRU_RUNS measured; the median. */
#define THRU_RUNS	3

static double median_mib_s(uint64_t *t, long mib)
{
	qsort(t, THRU_RUNS, sizeof(*t), cmp_u64);
	return mib / (t[THRU_RUNS / 2] / 1e9);
}

/* MIB MiB in 1 MiB writes from one process to another: kernel copies. */
static void stream(long mib)
{
	const size_t chunk = 1 << 20;
	char *buf = malloc(chunk);
	uint64_t t, runs[THRU_RUNS];
	int sv[2], r;
	pid_t pid;
	long i;

	if (!buf || socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		die("stream");
	memset(buf, 0x3c, chunk);
	pid = fork();
	if (!pid) {
		peer_cpu();
		close(sv[0]);
		for (i = 0; i < (THRU_RUNS + 1) * mib; i++)
			xfer(sv[1], buf, chunk, 1);
		_exit(0);
	}
	close(sv[1]);
	for (r = -1; r < THRU_RUNS; r++) {
		t = now_ns();
		for (i = 0; i < mib; i++)
			xfer(sv[0], buf, chunk, 0);
		if (r >= 0)
			runs[r] = now_ns() - t;
	}
	waitpid(pid, NULL, 0);
	printf("{\"test\": \"stream\", \"bytes\": %ld, \"runs\": %d, \"mib_s\": %.1f}\n",
	       mib << 20, THRU_RUNS, median_mib_s(runs, mib));
}

static void set_msix_eventfd(int fd, int efd)
{
	char buf[sizeof(struct vfio_irq_set) + sizeof(int)];
	struct vfio_irq_set *set = (void *)buf;

	set->argsz = sizeof(buf);
	set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
	set->index = VFIO_PCI_MSIX_IRQ_INDEX;
	set->start = 0;
	set->count = 1;
	memcpy(set->data, &efd, sizeof(int));
	if (ioctl(fd, VFIO_DEVICE_SET_IRQS, set))
		die("SET_IRQS");
}

/* null device: REGION_WRITE to IRQ (raises MSI-X 0) then eventfd wake. */
static void irq(const char *uuid, long n)
{
	uint64_t bar, *s, t, v;
	uint32_t vec = 0;
	int c, fd, efd;
	long i;

	fd = open_mdev(uuid, &c);
	efd = eventfd(0, 0);
	set_msix_eventfd(fd, efd);
	bar = region_off(fd, VFIO_PCI_BAR0_REGION_INDEX);
	s = calloc(n, sizeof(*s));
	for (i = 0; i < n; i++) {
		t = now_ns();
		if (pwrite(fd, &vec, 4, bar + 0x1c) != 4 || read(efd, &v, 8) != 8)
			die("irq");
		s[i] = now_ns() - t;
	}
	printf("{\"test\": \"irq\", ");
	print_stats(s, n);
	printf("}\n");
}

static void mtty(const char *uuid, long n)
{
	uint64_t bar, *s, t;
	int c, fd;
	char b;
	long i;

	fd = open_mdev(uuid, &c);
	bar = region_off(fd, VFIO_PCI_BAR0_REGION_INDEX);
	s = calloc(n, sizeof(*s));
	for (i = 0; i < n; i++) {
		t = now_ns();
		if (pread(fd, &b, 1, bar + 5) != 1)	/* LSR: no side effect */
			die("mtty read");
		s[i] = now_ns() - t;
	}
	printf("{\"test\": \"mtty_read\", ");
	print_stats(s, n);
	printf("}\n");
}

/* The DMA sample's BAR0 registers (tools/vfio-user/sample.h). */
#define DMA_REG_SRC		0x08
#define DMA_REG_DST		0x10
#define DMA_REG_LEN		0x18
#define DMA_REG_DOORBELL	0x20
#define DMA_REG_STATUS		0x24
#define DMA_REG_SCRATCH		0x40
#define DMA_REG_SHM_BYTES	0x48
#define DMA_REG_RD_MSGS		0x50
#define DMA_REG_WR_MSGS		0x58
#define DMA_STATUS_DONE		2
#define DMA_MAX_LEN		(64UL << 20)	/* per doorbell */

/* Where the consumer's buffers sit in IOVA space (inside the window). */
#define DMA_IOVA		(1ULL << 32)

static void bar_write64(int fd, uint64_t bar, uint64_t reg, uint64_t v)
{
	if (pwrite(fd, &v, 8, bar + reg) != 8)
		die("bar write");
}

static uint64_t bar_read64(int fd, uint64_t bar, uint64_t reg)
{
	uint64_t v;

	if (pread(fd, &v, 8, bar + reg) != 8)
		die("bar read");
	return v;
}

/* The DMA sample's path counters, and what one test expects of them. */
struct dma_path {
	int shm;		/* expected: 1 shared memory, 0 messages */
	int rd, wr;		/* the doorbell reads SRC, writes DST */
	uint64_t bytes;		/* totals of the test's doorbells */
	uint64_t shm_bytes;
	uint64_t rd_msgs;
	uint64_t wr_msgs;
	long doorbells;
};

static void dma_path_init(struct dma_path *p, const char *path, uint32_t bell)
{
	if (!strcmp(path, "shm"))
		p->shm = 1;
	else if (strcmp(path, "msg"))
		die("dma path (msg or shm)");
	p->rd = bell != 3;
	p->wr = bell != 2;
}

/*
 * Rings the doorbell (@bell) for the copy programmed in the device and
 * returns the ns the write took: the device copies before it answers.
 * Exits when the copy failed or took another path than @p expects:
 * shared memory sends no DMA_READ/DMA_WRITE and counts all @len bytes in
 * SHM_BYTES; messages send them, in each direction the doorbell moves
 * data, and count nothing in SHM_BYTES.
 */
static uint64_t dma_ring(int fd, uint64_t bar, uint32_t bell, uint64_t len,
			 struct dma_path *p, const char *what)
{
	uint64_t shm0, rd0, wr0, shm, rd, wr, t;
	uint32_t st = 0;

	shm0 = bar_read64(fd, bar, DMA_REG_SHM_BYTES);
	rd0 = bar_read64(fd, bar, DMA_REG_RD_MSGS);
	wr0 = bar_read64(fd, bar, DMA_REG_WR_MSGS);
	t = now_ns();
	if (pwrite(fd, &bell, 4, bar + DMA_REG_DOORBELL) != 4)
		die("doorbell");
	t = now_ns() - t;
	if (pread(fd, &st, 4, bar + DMA_REG_STATUS) != 4 ||
	    st != DMA_STATUS_DONE) {
		fprintf(stderr, "vu_bench: %s failed (status %u)\n", what, st);
		exit(1);
	}
	shm = bar_read64(fd, bar, DMA_REG_SHM_BYTES) - shm0;
	rd = bar_read64(fd, bar, DMA_REG_RD_MSGS) - rd0;
	wr = bar_read64(fd, bar, DMA_REG_WR_MSGS) - wr0;
	if (p->shm ? rd || wr || shm != len :
		     shm || (p->rd && !rd) || (p->wr && !wr) ||
		     (!p->rd && rd) || (!p->wr && wr)) {
		fprintf(stderr,
			"vu_bench: %s: expected %s, but the device counted %llu DMA_READ and %llu DMA_WRITE messages and %llu shared-memory bytes for a %llu-byte copy\n",
			what, p->shm ? "shared memory" : "DMA messages",
			(unsigned long long)rd, (unsigned long long)wr,
			(unsigned long long)shm, (unsigned long long)len);
		exit(1);
	}
	p->bytes += len;
	p->shm_bytes += shm;
	p->rd_msgs += rd;
	p->wr_msgs += wr;
	p->doorbells++;
	return t;
}

static void dma_path_print(const struct dma_path *p)
{
	printf(", \"path\": \"%s\", \"doorbells\": %ld, \"dma_bytes\": %llu, \"shm_bytes\": %llu, \"rd_msgs\": %llu, \"wr_msgs\": %llu",
	       p->shm ? "shm" : "msg", p->doorbells,
	       (unsigned long long)p->bytes, (unsigned long long)p->shm_bytes,
	       (unsigned long long)p->rd_msgs, (unsigned long long)p->wr_msgs);
}

/*
 * One DMA-engine run of @mib MiB, and memcpy of the same size. @mode:
 * "copy" (the device copies SRC to DST), "read" (reads SRC only, doorbell
 * value 2) or "write" (writes DST only, value 3). @path: "msg" or "shm",
 * checked at every doorbell (dma_ring()). For shm also memcpy between
 * buffers of 4 KiB pages: the server's mappings of the window are 4 KiB
 * PFN mappings, the consumer's buffers transparent huge pages.
 */
static void dma(const char *uuid, long mib, const char *mode, const char *path)
{
	size_t sz = (size_t)mib << 20;
	struct vfio_iommu_type1_dma_map map = {
		.argsz = sizeof(map),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.iova = DMA_IOVA, .size = 2 * sz,
	};
	uint32_t bell = 1, fill = 0xa7;
	uint64_t bar, t, t_dma[THRU_RUNS], t_mem[THRU_RUNS], t_4k[THRU_RUNS];
	struct dma_path p = { 0 };
	char *buf, *b4k = NULL;
	char what[64];
	size_t i;
	int c, fd, r;

	if (!strcmp(mode, "read"))
		bell = 2;
	else if (!strcmp(mode, "write"))
		bell = 3;
	else if (strcmp(mode, "copy"))
		die("dma mode");
	if (sz > DMA_MAX_LEN)
		die("dma size (at most 64 MiB)");
	dma_path_init(&p, path, bell);
	snprintf(what, sizeof(what), "DMA %s via %s", mode, path);
	fd = open_mdev(uuid, &c);
	buf = mmap(NULL, 2 * sz, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (buf == MAP_FAILED)
		die("mmap");
	memset(buf, 0x5a, sz);
	memset(buf + sz, 0, sz);
	if (p.shm) {
		b4k = mmap(NULL, 2 * sz, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (b4k == MAP_FAILED || madvise(b4k, 2 * sz, MADV_NOHUGEPAGE))
			die("mmap 4k");
		memset(b4k, 0x5a, sz);
		memset(b4k + sz, 0, sz);
	}
	map.vaddr = (uintptr_t)buf;
	if (ioctl(c, VFIO_IOMMU_MAP_DMA, &map))
		die("MAP_DMA");
	bar = region_off(fd, VFIO_PCI_BAR0_REGION_INDEX);
	bar_write64(fd, bar, DMA_REG_SRC, DMA_IOVA);
	bar_write64(fd, bar, DMA_REG_DST, DMA_IOVA + sz);
	bar_write64(fd, bar, DMA_REG_LEN, sz);
	for (r = -1; r < THRU_RUNS; r++) {
		/* Each run starts from a cleared destination, fill changes. */
		memset(buf + sz, 0, sz);
		fill = 0xa7 + r;
		if (pwrite(fd, &fill, 4, bar + DMA_REG_SCRATCH) != 4)
			die("scratch");
		t = dma_ring(fd, bar, bell, sz, &p, what);
		if (bell == 1 && memcmp(buf, buf + sz, sz)) {
			fprintf(stderr, "vu_bench: DMA copy: data differs\n");
			exit(1);
		}
		for (i = 0; bell == 3 && i < sz; i += 4096)
			if ((uint8_t)buf[sz + i] != (uint8_t)fill) {
				fprintf(stderr, "vu_bench: DMA write: data differs\n");
				exit(1);
			}
		if (r < 0)
			continue;
		t_dma[r] = t;
		t = now_ns();
		memcpy(buf + sz, buf, sz);
		t_mem[r] = now_ns() - t;
		if (!b4k)
			continue;
		t = now_ns();
		memcpy(b4k + sz, b4k, sz);
		t_4k[r] = now_ns() - t;
	}
	printf("{\"test\": \"dma_%s\", \"bytes\": %zu, \"runs\": %d, \"dma_mib_s\": %.1f, \"memcpy_mib_s\": %.1f",
	       mode, sz, THRU_RUNS, median_mib_s(t_dma, mib),
	       median_mib_s(t_mem, mib));
	if (b4k) {
		printf(", \"memcpy_4k_mib_s\": %.1f", median_mib_s(t_4k, mib));
		munmap(b4k, 2 * sz);
	}
	dma_path_print(&p);
	printf("}\n");
	munmap(buf, 2 * sz);
	close(fd);
	close(c);
}

/* A number in the mdev's vfio_user/@name sysfs attribute. */
static unsigned long mdev_attr(const char *uuid, const char *name)
{
	char path[256];
	unsigned long v;
	FILE *f;

	snprintf(path, sizeof(path), MDEV_DIR "/%s/vfio_user/%s", uuid, name);
	f = fopen(path, "r");
	if (!f || fscanf(f, "%lu", &v) != 1)
		die(name);
	fclose(f);
	return v;
}

static unsigned long window_pinned(const char *uuid)
{
	return mdev_attr(uuid, "dma_window_pinned");
}

/*
 * One pass: @sz bytes from DMA_IOVA to DMA_IOVA + @sz, in doorbells of at
 * most DMA_MAX_LEN; returns the ns the doorbell writes took.
 */
static uint64_t dma_first_pass(int fd, uint64_t bar, size_t sz,
			       struct dma_path *p, const char *what)
{
	uint64_t t = 0, off, n;

	for (off = 0; off < sz; off += n) {
		n = sz - off < DMA_MAX_LEN ? sz - off : DMA_MAX_LEN;
		bar_write64(fd, bar, DMA_REG_SRC, DMA_IOVA + off);
		bar_write64(fd, bar, DMA_REG_DST, DMA_IOVA + sz + off);
		bar_write64(fd, bar, DMA_REG_LEN, n);
		t += dma_ring(fd, bar, 1, n, p, what);
	}
	return t;
}

/*
 * First touch of the shared-memory window: the consumer's buffers (@mib
 * MiB source, @mib MiB destination, populated once) are mapped with
 * VFIO_IOMMU_MAP_DMA; the first copy faults in the server's mappings,
 * which pins and maps them (2 MiB per fault); the second copy runs on
 * pinned pages; VFIO_IOMMU_UNMAP_DMA zaps and unpins. Each round checks
 * dma_window_pinned: every page of both buffers after the first copy,
 * none after the unmap. One warm-up round, THRU_RUNS measured; also the
 * pin + map rate, (2 * @mib MiB) / (first - second), and memcpy.
 */
static void dma_first(const char *uuid, long mib)
{
	size_t sz = (size_t)mib << 20;
	struct vfio_iommu_type1_dma_map map = {
		.argsz = sizeof(map),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.iova = DMA_IOVA, .size = 2 * sz,
	};
	struct vfio_iommu_type1_dma_unmap unmap = {
		.argsz = sizeof(unmap), .iova = DMA_IOVA, .size = 2 * sz,
	};
	uint64_t t1[THRU_RUNS], t2[THRU_RUNS], t_pin[THRU_RUNS], t_mem[THRU_RUNS];
	unsigned long want = 2 * sz / getpagesize(), pinned;
	struct dma_path p = { 0 };
	uint64_t bar, a, b, t;
	double pin_gib_s = 0;
	int bad, c, fd, r, n = 0;
	char *buf;

	dma_path_init(&p, "shm", 1);
	if (sz % (2 << 20))
		die("dma-first size (a multiple of 2 MiB)");
	fd = open_mdev(uuid, &c);
	buf = mmap(NULL, 2 * sz, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (buf == MAP_FAILED)
		die("mmap");
	map.vaddr = (uintptr_t)buf;
	bar = region_off(fd, VFIO_PCI_BAR0_REGION_INDEX);
	for (r = -1; r < THRU_RUNS; r++) {
		memset(buf, 0x5a + r, sz);
		memset(buf + sz, 0, sz);
		if (window_pinned(uuid))
			die("pages pinned before MAP_DMA");
		if (ioctl(c, VFIO_IOMMU_MAP_DMA, &map))
			die("MAP_DMA");
		a = dma_first_pass(fd, bar, sz, &p, "first copy via shm");
		pinned = window_pinned(uuid);
		bad = memcmp(buf, buf + sz, sz);
		if (bad || pinned != want) {
			fprintf(stderr, "vu_bench: first copy: data %s, %lu pages pinned, %lu expected\n",
				bad ? "differs" : "ok", pinned, want);
			exit(1);
		}
		memset(buf + sz, 0, sz);
		b = dma_first_pass(fd, bar, sz, &p, "second copy via shm");
		if (memcmp(buf, buf + sz, sz)) {
			fprintf(stderr, "vu_bench: second copy: data differs\n");
			exit(1);
		}
		if (ioctl(c, VFIO_IOMMU_UNMAP_DMA, &unmap))
			die("UNMAP_DMA");
		pinned = window_pinned(uuid);
		if (pinned) {
			fprintf(stderr, "vu_bench: %lu pages still pinned after UNMAP_DMA\n",
				pinned);
			exit(1);
		}
		if (r < 0)
			continue;
		t = now_ns();
		memcpy(buf + sz, buf, sz);
		t_mem[r] = now_ns() - t;
		t1[r] = a;
		t2[r] = b;
		if (a > b)
			t_pin[n++] = a - b;
	}
	/* the pin rate only when every round's first copy was the slower */
	if (n == THRU_RUNS) {
		qsort(t_pin, n, sizeof(*t_pin), cmp_u64);
		pin_gib_s = 2.0 * mib / 1024 / (t_pin[n / 2] / 1e9);
	}
	printf("{\"test\": \"dma_first\", \"bytes\": %zu, \"runs\": %d, \"first_mib_s\": %.1f, \"second_mib_s\": %.1f, \"memcpy_mib_s\": %.1f, \"pinned_pages\": %lu",
	       sz, THRU_RUNS, median_mib_s(t1, mib), median_mib_s(t2, mib),
	       median_mib_s(t_mem, mib), want);
	if (pin_gib_s > 0)
		printf(", \"pin_map_gib_s\": %.2f", pin_gib_s);
	dma_path_print(&p);
	printf("}\n");
	munmap(buf, 2 * sz);
	close(fd);
	close(c);
}

/* The null sample's window on BAR4's memory (tools/vfio-user/sample.h). */
#define NULL_REG_BAR4_OFFSET	0x28
#define NULL_REG_BAR4_DATA	0x30

/* Doorbell values: the high byte tells the two ways apart. */
#define DOORBELL_MMAP		0xa5000000u
#define DOORBELL_MSG		0x5a000000u
#define DOORBELL_SEQ		0x00ffffffu

/* GET_REGION_INFO with its whole capability chain; the caller frees it. */
static struct vfio_region_info *region_info_caps(int fd, unsigned int index)
{
	struct vfio_region_info *info = NULL;
	uint32_t sz = sizeof(*info);

	for (;;) {
		info = realloc(info, sz);
		if (!info)
			die("region info");
		memset(info, 0, sz);
		info->argsz = sz;
		info->index = index;
		if (ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, info))
			die("region info");
		if (info->argsz <= sz)
			return info;
		sz = info->argsz;
	}
}

/*
 * Where a doorbell can sit in the mmap-able region @info: the start of its
 * first sparse-mmap area of at least a page, or of the region when it has
 * no sparse-mmap capability. The offset in the region, or -1.
 */
static int64_t mmap_area(const struct vfio_region_info *info)
{
	const struct vfio_region_info_cap_sparse_mmap *sp;
	const struct vfio_info_cap_header *h;
	uint64_t pg = getpagesize();
	uint32_t off = 0, i;

	if (info->flags & VFIO_REGION_INFO_FLAG_CAPS)
		off = info->cap_offset;
	for (; off && off + sizeof(*h) <= info->argsz; off = h->next) {
		h = (const void *)((const char *)info + off);
		if (h->id != VFIO_REGION_INFO_CAP_SPARSE_MMAP)
			continue;
		sp = (const void *)h;
		if (off + sizeof(*sp) > info->argsz ||
		    off + sizeof(*sp) + sp->nr_areas * sizeof(sp->areas[0]) >
		    info->argsz)
			return -1;
		for (i = 0; i < sp->nr_areas; i++)
			if (sp->areas[i].size >= pg &&
			    !(sp->areas[i].offset % pg))
				return sp->areas[i].offset;
		return -1;
	}
	return info->size >= pg ? 0 : -1;
}

/* BAR4's memory at @off (8-byte aligned) as the null server sees it. */
static uint64_t null_bar4_peek(int fd, uint64_t bar0, uint64_t off)
{
	bar_write64(fd, bar0, NULL_REG_BAR4_OFFSET, off);
	return bar_read64(fd, bar0, NULL_REG_BAR4_DATA);
}

/* Saves @s as the samples of one way: $VU_SAMPLES with _@way inserted. */
static void doorbell_samples(const char *way, const uint64_t *s, long n)
{
	const char *base = getenv("VU_SAMPLES");
	char path[512];
	size_t len;

	if (!base || !*base)
		return;
	len = strlen(base);
	if (len > 8 && !strcmp(base + len - 8, ".samples"))
		len -= 8;
	snprintf(path, sizeof(path), "%.*s_%s.samples", (int)len, base, way);
	save_samples(path, s, n);
}

/*
 * A 4-byte doorbell in the null sample's BAR4 (--mmap), written @n times
 * each way, at the same place: (a) a store to the consumer's MAP_SHARED
 * mapping of a sparse-mmap area, which is the server's memory (no
 * message); (b) a pwrite on the device fd, a REGION_WRITE the module
 * sends and waits for. Per-write latencies of both; @n stores back to
 * back (the median of THRU_RUNS runs after a warm-up) as the store's own
 * cost, since one store is shorter than the two clock reads around it
 * (clock_*: the two reads with nothing between).
 *
 * Exits 1 unless the path is the one named: BAR4 has
 * VFIO_REGION_INFO_FLAG_MMAP and an area of a page; after the stores the
 * module maps a page (mmap_pages) and the server's memory, read through
 * BAR0's BAR4_OFFSET/BAR4_DATA, holds the last value stored; after the
 * REGION_WRITEs it and the mapping hold the last value written, and they
 * switched context (the server sleeps in epoll: a message wakes it).
 */
static void doorbell(const char *uuid, long n)
{
	uint64_t bar0, reg, t, seen_mmap, seen_msg, runs[THRU_RUNS];
	uint64_t *s_clk, *s_mmap, *s_msg, med_mmap, med_msg;
	unsigned long long c0, c1, c2, c3;
	uint32_t v, last_mmap, last_msg, seen_map, seq = 0;
	struct vfio_region_info *info;
	volatile uint32_t *db;
	unsigned long pages;
	long pg = getpagesize(), i;
	int64_t area;
	void *map;
	int c, fd, r;

	fd = open_mdev(uuid, &c);
	bar0 = region_off(fd, VFIO_PCI_BAR0_REGION_INDEX);
	info = region_info_caps(fd, VFIO_PCI_BAR4_REGION_INDEX);
	if (!(info->flags & VFIO_REGION_INFO_FLAG_MMAP)) {
		fprintf(stderr, "vu_bench: doorbell: BAR4 lacks VFIO_REGION_INFO_FLAG_MMAP (flags %#x): no mapping to measure\n",
			info->flags);
		exit(1);
	}
	area = mmap_area(info);
	if (area < 0) {
		fprintf(stderr, "vu_bench: doorbell: BAR4 (%llu bytes) has no mmap-able area of a page\n",
			(unsigned long long)info->size);
		exit(1);
	}
	reg = info->offset + area;
	map = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_SHARED, fd, reg);
	if (map == MAP_FAILED)
		die("mmap BAR4");
	db = map;
	s_clk = calloc(n, sizeof(*s_clk));
	s_mmap = calloc(n, sizeof(*s_mmap));
	s_msg = calloc(n, sizeof(*s_msg));
	if (!s_clk || !s_mmap || !s_msg)
		die("calloc");

	/* Warm-up: faults the page in, has TCG translate the loops. */
	for (i = 0; i < 1000; i++) {
		*db = DOORBELL_MMAP | (seq++ & DOORBELL_SEQ);
		asm volatile("" ::: "memory");
	}
	for (i = 0; i < n; i++) {
		t = now_ns();
		s_clk[i] = now_ns() - t;
	}
	c0 = ctxt_total();
	for (i = 0; i < n; i++) {
		v = DOORBELL_MMAP | (seq++ & DOORBELL_SEQ);
		t = now_ns();
		*db = v;
		asm volatile("" ::: "memory");
		s_mmap[i] = now_ns() - t;
	}
	c1 = ctxt_total();
	for (r = -1; r < THRU_RUNS; r++) {
		t = now_ns();
		for (i = 0; i < n; i++) {
			*db = DOORBELL_MMAP | (seq++ & DOORBELL_SEQ);
			asm volatile("" ::: "memory");
		}
		if (r >= 0)
			runs[r] = now_ns() - t;
	}
	last_mmap = DOORBELL_MMAP | ((seq - 1) & DOORBELL_SEQ);
	pages = mdev_attr(uuid, "mmap_pages");
	seen_mmap = null_bar4_peek(fd, bar0, area);
	if (!pages || (uint32_t)seen_mmap != last_mmap) {
		fprintf(stderr, "vu_bench: doorbell: after stores of %#x through the mapping the module maps %lu pages and the server's BAR4 holds %#x at %#llx: the stores did not reach the server's memory\n",
			last_mmap, pages, (uint32_t)seen_mmap,
			(unsigned long long)area);
		exit(1);
	}

	c2 = ctxt_total();
	for (i = 0; i < n; i++) {
		v = DOORBELL_MSG | (seq++ & DOORBELL_SEQ);
		t = now_ns();
		if (pwrite(fd, &v, 4, reg) != 4)
			die("doorbell REGION_WRITE");
		s_msg[i] = now_ns() - t;
	}
	c3 = ctxt_total();
	last_msg = v;
	seen_msg = null_bar4_peek(fd, bar0, area);
	seen_map = *db;
	if ((uint32_t)seen_msg != last_msg || seen_map != last_msg) {
		fprintf(stderr, "vu_bench: doorbell: after REGION_WRITEs of %#x the server's BAR4 holds %#x, the mapping %#x\n",
			last_msg, (uint32_t)seen_msg, seen_map);
		exit(1);
	}
	if (c3 - c2 < (unsigned long long)n / 2) {
		fprintf(stderr, "vu_bench: doorbell: %ld REGION_WRITEs switched context %llu times: they did not wake the server\n",
			n, c3 - c2);
		exit(1);
	}

	doorbell_samples("mmap", s_mmap, n);
	doorbell_samples("msg", s_msg, n);
	qsort(runs, THRU_RUNS, sizeof(*runs), cmp_u64);
	printf("{\"test\": \"doorbell\", \"ops\": %ld, \"region_flags\": %u, \"area_offset\": %lld, ",
	       n, info->flags, (long long)area);
	print_stats_as("mmap_", s_mmap, n);
	printf(", \"mmap_ctxt_per_op\": %.2f, \"mmap_loop_ns_per_op\": %.2f, ",
	       (double)(c1 - c0) / n, (double)runs[THRU_RUNS / 2] / n);
	print_stats_as("clock_", s_clk, n);
	printf(", ");
	print_stats_as("msg_", s_msg, n);
	med_mmap = s_mmap[n / 2];
	med_msg = s_msg[n / 2];
	printf(", \"msg_ctxt_per_op\": %.2f, \"msg_over_mmap\": %.2f",
	       (double)(c3 - c2) / n,
	       (double)med_msg / (med_mmap ? med_mmap : 1));
	printf(", \"mmap_pages\": %lu, \"mmap_last\": %u, \"mmap_server\": %u, \"msg_last\": %u, \"msg_server\": %u, \"msg_mapping\": %u}\n",
	       pages, last_mmap, (uint32_t)seen_mmap, last_msg,
	       (uint32_t)seen_msg, seen_map);
	munmap(map, pg);
	free(info);
	free(s_clk);
	free(s_mmap);
	free(s_msg);
	close(fd);
	close(c);
}

struct scaler {
	int fd;
	uint64_t bar;
	volatile int *stop;
	long ops;
};

static void *scale_thread(void *arg)
{
	struct scaler *s = arg;
	uint32_t v;

	while (!*s->stop) {
		if (pread(s->fd, &v, 4, s->bar) != 4)
			die("scale read");
		s->ops++;
	}
	return NULL;
}

static void scale(double secs, int n, char **uuids)
{
	struct scaler *s = calloc(n, sizeof(*s));
	pthread_t *t = calloc(n, sizeof(*t));
	volatile int stop = 0;
	uint64_t t0, t1;
	long total = 0;
	int i, c;

	for (i = 0; i < n; i++) {
		s[i].fd = open_mdev(uuids[i], &c);
		s[i].bar = region_off(s[i].fd, VFIO_PCI_BAR0_REGION_INDEX);
		s[i].stop = &stop;
	}
	t0 = now_ns();
	for (i = 0; i < n; i++)
		pthread_create(&t[i], NULL, scale_thread, &s[i]);
	usleep(secs * 1e6);
	stop = 1;
	for (i = 0; i < n; i++) {
		pthread_join(t[i], NULL);
		total += s[i].ops;
	}
	t1 = now_ns();
	printf("{\"test\": \"scale\", \"devices\": %d, \"ops\": %ld, \"ops_per_s\": %.0f}\n",
	       n, total, total / ((t1 - t0) / 1e9));
}

static void xfer(int fd, void *buf, size_t len, int out)
{
	size_t done = 0;
	ssize_t n;

	while (done < len) {
		n = out ? write(fd, (char *)buf + done, len - done) :
			  read(fd, (char *)buf + done, len - done);
		if (n <= 0)
			die("user-rt socket");
		done += n;
	}
}

/* A minimal userspace vfio-user client: VERSION, then REGION_READs. */
static void user_rt(const char *path, long n)
{
	static const char json[] = "{\"capabilities\":{\"max_msg_fds\":0}}";
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct {
		struct vfio_user_hdr hdr;
		struct vfio_user_region_access acc;
		uint32_t data;
	} __attribute__((packed)) req, rep;
	struct {
		struct vfio_user_hdr hdr;
		struct vfio_user_version ver;
		char json[sizeof(json)];
	} __attribute__((packed)) v = {
		.hdr = { .command = VFIO_USER_VERSION, .size = sizeof(v) },
		.ver = { .major = 0, .minor = 2 },
	};
	char rbuf[4096];
	uint64_t *s, t;
	int fd;
	long i;

	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	strncpy(sa.sun_path, path, sizeof(sa.sun_path) - 1);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
		die("user-rt connect");
	memcpy(v.json, json, sizeof(json));
	xfer(fd, &v, sizeof(v), 1);
	xfer(fd, rbuf, sizeof(struct vfio_user_hdr), 0);
	if (((struct vfio_user_hdr *)rbuf)->size > sizeof(rbuf))
		die("user-rt version");
	xfer(fd, rbuf + 16, ((struct vfio_user_hdr *)rbuf)->size - 16, 0);

	memset(&req, 0, sizeof(req));
	req.hdr.command = VFIO_USER_REGION_READ;
	req.hdr.size = sizeof(req.hdr) + sizeof(req.acc);
	req.acc.region = VFIO_PCI_BAR0_REGION_INDEX;
	req.acc.count = 4;
	s = calloc(n, sizeof(*s));
	for (i = 0; i < n; i++) {
		req.hdr.msg_id = i + 1;
		t = now_ns();
		xfer(fd, &req, req.hdr.size, 1);
		xfer(fd, &rep, sizeof(rep), 0);
		s[i] = now_ns() - t;
		if (rep.hdr.msg_id != req.hdr.msg_id || rep.hdr.flags != 1)
			die("user-rt reply");
	}
	close(fd);
	printf("{\"test\": \"user_rt\", ");
	print_stats(s, n);
	printf("}\n");
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "pingpong"))
		pingpong(atol(argv[2]));
	else if (argc >= 3 && !strcmp(argv[1], "stream"))
		stream(atol(argv[2]));
	else if (argc >= 3 && !strcmp(argv[1], "eventfd"))
		eventfd_pingpong(atol(argv[2]));
	else if (argc >= 4 && !strcmp(argv[1], "bar-read"))
		bar_rw(argv[2], atol(argv[3]), 0, 0, 4);
	else if (argc >= 4 && !strcmp(argv[1], "bar-write"))
		bar_rw(argv[2], atol(argv[3]), 1, 0x40, 4);
	else if (argc >= 4 && !strcmp(argv[1], "mtty"))
		mtty(argv[2], atol(argv[3]));
	else if (argc >= 4 && !strcmp(argv[1], "dma"))
		dma(argv[2], atol(argv[3]), argc >= 5 ? argv[4] : "copy",
		    argc >= 6 ? argv[5] : "msg");
	else if (argc >= 4 && !strcmp(argv[1], "dma-first"))
		dma_first(argv[2], atol(argv[3]));
	else if (argc >= 4 && !strcmp(argv[1], "doorbell"))
		doorbell(argv[2], atol(argv[3]));
	else if (argc >= 4 && !strcmp(argv[1], "irq"))
		irq(argv[2], atol(argv[3]));
	else if (argc >= 4 && !strcmp(argv[1], "user-rt"))
		user_rt(argv[2], atol(argv[3]));
	else if (argc >= 4 && !strcmp(argv[1], "scale"))
		scale(atof(argv[2]), argc - 3, argv + 3);
	else {
		fprintf(stderr, "usage: see the comment at the top of vu_bench.c\n");
		return 2;
	}
	return 0;
}
