// SPDX-License-Identifier: GPL-2.0-only
/*
 * The request path against what a consumer's task and a server do to it:
 *
 *   interrupted  1 MiB BAR writes and reads, verified, while a POSIX timer
 *                signals the consumer thread every 200 us (a handler
 *                without SA_RESTART), or while a tracer attaches,
 *                interrupts and detaches again and again: no failure, no
 *                EINTR, the device stays ready
 *   killed       SIGKILL to a consumer blocked in the middle of a reply or
 *                of its request: it exits within 1 s, and once the server
 *                goes on the next consumer works (the message was finished)
 *   slow_server  a reply trickled a byte per 100 ms, or withheld while
 *                other requests are answered: the call fails at timeout_ms
 *                and the device reads broken
 *   hung_attach  an attach whose VERSION is never answered: state and
 *                socket read at once, and removing the mdev aborts it
 *   reattach     a re-attach that replays 2048 MSI-X eventfds to a slow
 *                server stalls neither state reads nor another mdev
 *   big_xfer     max_data_xfer_size 16 MiB: 16 MiB accesses, verified,
 *                and a clean kernel log
 *
 * The servers: the sample's null device (a 16 MiB memory BAR2) and the
 * fault_server (hostile.h) with its hold_reply, hold_request, trickle,
 * withhold and version_hang faults, --msix and --set-irqs-delay-us.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/vfio.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "vfio_user_util.h"
#include "hostile.h"

#define XFER_PARAM	"/sys/module/vfio_user_mdev/parameters/max_data_xfer_size"
#define MIB		(1u << 20)
#define NULL_MAGIC	0x314c554e	/* the sample's null device, BAR0 0 */
#define REG_IRQ_FDS	0x124		/* fault_server: eventfds received */
#define MSIX_VECTORS	2048
/* A sysfs read that takes longer stalled (TCG: ms; debug kernel 30 ms). */
#define NO_STALL_S	0.1
/*
 * The same while a re-attach keeps both CPUs busy: a register read of
 * another mdev took up to 0.2 s on the debug kernel next to other VMs; a
 * stall behind the replay is the whole replay, 10 s and more.
 */
#define BUSY_NO_STALL_S	0.5

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id	_sigev_un._tid
#endif

/* Fills @buf with a pattern that differs for every @seed and offset. */
static void fill(void *buf, size_t len, uint64_t seed)
{
	uint64_t *w = buf;
	size_t i;

	for (i = 0; i < len / 8; i++)
		w[i] = (seed << 40) ^ (i * 0x9e3779b97f4a7c15ull);
}

static void *map_buf(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/*
 * interrupted: a consumer thread doing 1 MiB writes and reads of BAR2 while
 * its task is interrupted, by signals or by a tracer.
 */
static const char *const null_args[] = {
	"--device", "null", "--bar-size", "16M", NULL,
};

FIXTURE(interrupted) {
	struct vu_server srv;
	char uuid[VU_UUID_LEN + 1];
	int container, group, fd;
};

FIXTURE_VARIANT(interrupted) {
	bool timer;	/* SIGUSR1 every 200 us at the consumer thread */
	bool tracer;	/* PTRACE_SEIZE/INTERRUPT/waitpid/DETACH, over and over */
};

FIXTURE_VARIANT_ADD(interrupted, posix_timer) { .timer = true };
FIXTURE_VARIANT_ADD(interrupted, ptrace) { .tracer = true };

FIXTURE_SETUP(interrupted)
{
	int ret;

	self->fd = self->group = self->container = -1;
	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	ret = vu_server_start(&self->srv, SAMPLE, null_args);
	if (ret == -ENOENT)
		SKIP(return, "sample server not built");
	ASSERT_EQ(0, ret);
	vu_uuid_gen(self->uuid);
	self->fd = vu_open_attached(self->uuid, &self->srv, &self->container,
				    &self->group);
	ASSERT_LE(0, self->fd);
}

FIXTURE_TEARDOWN(interrupted)
{
	vu_consumer_teardown(self->uuid, &self->fd, &self->group,
			     &self->container);
	vu_server_stop(&self->srv);
}

struct consumer {
	int fd;
	uint64_t bar2;
	unsigned int ios;	/* 1 MiB writes to do, each read back */
	/* set by the thread */
	pid_t tid;
	int started, finished;
	/* set by the main thread: start the I/O; the thread may exit */
	int go, release;
	unsigned int done, failures, eintr, first_at;
	int first_err;		/* errno, or -1: short, -2: data differ */
	double secs;
};

static void *consumer_thread(void *arg)
{
	struct consumer *c = arg;
	uint8_t *w = NULL, *r = NULL;
	unsigned int i;
	double t0;
	ssize_t n;

	c->tid = gettid();
	w = map_buf(MIB);
	r = map_buf(MIB);
	__atomic_store_n(&c->started, 1, __ATOMIC_SEQ_CST);
	while (!__atomic_load_n(&c->go, __ATOMIC_SEQ_CST))
		usleep(1000);
	t0 = vu_now();
	for (i = 0; w && r && i < c->ios; i++) {
		uint64_t at = c->bar2 + (i % 16) * (uint64_t)MIB;
		int err = 0;

		fill(w, MIB, i + 1);
		n = pwrite(c->fd, w, MIB, at);
		if (n == MIB) {
			memset(r, 0, MIB);
			n = pread(c->fd, r, MIB, at);
		}
		if (n < 0)
			err = errno;
		else if (n != MIB)
			err = -1;
		else if (memcmp(w, r, MIB))
			err = -2;
		if (err == EINTR) {
			c->eintr++;
			continue;
		}
		if (err) {
			if (!c->failures++) {
				c->first_err = err;
				c->first_at = i;
			}
			/* EIO: broken, every later call fails at once */
			if (err > 0)
				break;
			continue;
		}
		c->done++;
	}
	c->secs = vu_now() - t0;
	__atomic_store_n(&c->finished, 1, __ATOMIC_SEQ_CST);
	/* A tracer must be gone before the thread: it waits for this tid. */
	while (!__atomic_load_n(&c->release, __ATOMIC_SEQ_CST))
		usleep(1000);
	if (w)
		munmap(w, MIB);
	if (r)
		munmap(r, MIB);
	return NULL;
}

static unsigned long signals_seen;

static void on_usr1(int sig)
{
	__atomic_add_fetch(&signals_seen, 1, __ATOMIC_RELAXED);
}

/* Shared with the tracer process. */
struct tracer_state {
	int stop;
	unsigned long cycles;
	int err;		/* errno of the first failed ptrace call */
	int op;			/* which: 1 SEIZE, 2 INTERRUPT, 3 waitpid, 4 DETACH */
};

static void tracer_loop(pid_t tid, struct tracer_state *ts)
{
	int st;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	while (!__atomic_load_n(&ts->stop, __ATOMIC_SEQ_CST)) {
		if (ptrace(PTRACE_SEIZE, tid, 0, 0)) {
			ts->err = errno;
			ts->op = 1;
			break;
		}
		if (ptrace(PTRACE_INTERRUPT, tid, 0, 0)) {
			ts->err = errno;
			ts->op = 2;
			break;
		}
		if (waitpid(tid, &st, __WALL) != tid) {
			ts->err = errno;
			ts->op = 3;
			break;
		}
		if (ptrace(PTRACE_DETACH, tid, 0, 0)) {
			ts->err = errno;
			ts->op = 4;
			break;
		}
		__atomic_add_fetch(&ts->cycles, 1, __ATOMIC_SEQ_CST);
		/*
		 * A breath between attaches: under TCG a tracer that never
		 * pauses stops the tracee so often that its own user-space
		 * work (filling and comparing 1 MiB) crawls. Most attaches
		 * still land in a region access, which is most of the time.
		 */
		usleep(2000);
	}
	_exit(0);
}

/*
 * Under TCG a 1 MiB write plus its read-back and compare takes some 85 ms
 * (measured, 6.12, nothing interrupting): 32 of them are about 3 s.
 * VU_SIGNAL_IOS changes the number.
 */
TEST_F_TIMEOUT(interrupted, bar_io_1mib, 120)
{
	struct consumer c = { .fd = self->fd, .first_err = 0 };
	struct tracer_state *ts = NULL;
	struct sigaction sa = { .sa_handler = on_usr1 };
	struct sigevent sev = {
		.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGUSR1,
	};
	struct itimerspec its = {
		.it_interval = { .tv_nsec = 200000 },
		.it_value = { .tv_nsec = 200000 },
	};
	timer_t timer = 0;
	char state[160];
	pid_t tracer = -1;
	pthread_t t;
	int st;

	c.ios = env_ul("VU_SIGNAL_IOS", 32);
	ASSERT_EQ(0, region_off(self->fd, VFIO_PCI_BAR2_REGION_INDEX, &c.bar2));
	/* no SA_RESTART: an interrupted call would return EINTR */
	sigemptyset(&sa.sa_mask);
	ASSERT_EQ(0, sigaction(SIGUSR1, &sa, NULL));

	ASSERT_EQ(0, pthread_create(&t, NULL, consumer_thread, &c));
	while (!__atomic_load_n(&c.started, __ATOMIC_SEQ_CST))
		usleep(1000);
	if (variant->timer) {
		sev.sigev_notify_thread_id = c.tid;
		ASSERT_EQ(0, timer_create(CLOCK_MONOTONIC, &sev, &timer));
		ASSERT_EQ(0, timer_settime(timer, 0, &its, NULL));
	}
	if (variant->tracer) {
		ts = mmap(NULL, sizeof(*ts), PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		ASSERT_NE(MAP_FAILED, ts);
		memset(ts, 0, sizeof(*ts));
		tracer = fork();
		ASSERT_LE(0, tracer);
		if (!tracer)
			tracer_loop(c.tid, ts);
	}
	__atomic_store_n(&c.go, 1, __ATOMIC_SEQ_CST);
	while (!__atomic_load_n(&c.finished, __ATOMIC_SEQ_CST))
		usleep(10000);
	if (variant->timer)
		timer_delete(timer);
	if (variant->tracer) {
		__atomic_store_n(&ts->stop, 1, __ATOMIC_SEQ_CST);
		EXPECT_EQ(tracer, waitpid(tracer, &st, 0));
	}
	__atomic_store_n(&c.release, 1, __ATOMIC_SEQ_CST);
	ASSERT_EQ(0, pthread_join(t, NULL));

	TH_LOG("%u of %u I/Os in %.2f s, %lu signals, %lu tracer cycles",
	       c.done, c.ios, c.secs, signals_seen, ts ? ts->cycles : 0);
	EXPECT_EQ(0, c.eintr);
	EXPECT_EQ(0, c.failures)
		TH_LOG("first failure at I/O %u: %s", c.first_at,
		       c.first_err == -1 ? "short count" :
		       c.first_err == -2 ? "data differ" : strerror(c.first_err));
	EXPECT_EQ(c.ios, c.done);
	EXPECT_TRUE(state_is(self->uuid, "ready", state, sizeof(state)))
		TH_LOG("state: %s", state);
	if (variant->timer)	/* the consumer was interrupted, many times */
		EXPECT_LE(c.ios, signals_seen);
	if (variant->tracer) {
		EXPECT_EQ(0, ts->err)
			TH_LOG("tracer: ptrace step %d: %s", ts->op, strerror(ts->err));
		EXPECT_LE(10, ts->cycles);
		munmap(ts, sizeof(*ts));
	}
}

/*
 * killed: SIGKILL to a consumer (a child process) blocked on a server
 * that holds the rest of a message until told (SIGUSR1).
 */
FIXTURE(killed) {
	struct vu_server srv;
	char uuid[VU_UUID_LEN + 1];
	int container, group, fd;
};

FIXTURE_VARIANT(killed) {
	const char *fault;
	bool write;	/* a 1 MiB BAR1 write, else a 64 KiB BAR1 read */
};

/* The server sent the header and half of the reply. */
FIXTURE_VARIANT_ADD(killed, mid_reply) { .fault = "hold_reply" };
/* The server read the header and 64 KiB of the write, then stopped. */
FIXTURE_VARIANT_ADD(killed, mid_request) { .fault = "hold_request", .write = true };

FIXTURE_SETUP(killed)
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
	ASSERT_EQ(0, vu_mdev_create(self->uuid));
	/* Far beyond the test: nothing here may end by a timeout. */
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "timeout_ms", "30000"));
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
}

FIXTURE_TEARDOWN(killed)
{
	vu_consumer_teardown(self->uuid, &self->fd, &self->group,
			     &self->container);
	vu_server_stop(&self->srv);
}

#define KILL_READ	(64u << 10)

/* The child: opens the device, says so on @ready, blocks in one access. */
static void blocked_consumer(const char *uuid, bool do_write, int ready)
{
	int c = -1, g = -1, fd;
	uint64_t bar1 = 0;
	uint8_t *buf;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	fd = vu_vfio_open(uuid, &c, &g);
	if (fd < 0)
		_exit(10);
	if (region_off(fd, VFIO_PCI_BAR1_REGION_INDEX, &bar1))
		_exit(11);
	buf = map_buf(MIB);
	if (!buf)
		_exit(12);
	fill(buf, MIB, 0x5a);
	if (write(ready, "x", 1) != 1)
		_exit(13);
	if (do_write)
		pwrite(fd, buf, MIB, bar1);
	else
		pread(fd, buf, KILL_READ, bar1);
	_exit(20);	/* not blocked after all */
}

TEST_F_TIMEOUT(killed, exits_within_1s, 90)
{
	uint8_t tail[4096], *want;
	int p[2], st = 0;
	char state[160];
	uint64_t bar1 = 0;
	uint32_t v = 0;
	double t0, dt;
	pid_t pid;
	char x;

	ASSERT_EQ(0, pipe(p));
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		close(p[0]);
		blocked_consumer(self->uuid, variant->write, p[1]);
	}
	close(p[1]);
	ASSERT_EQ(1, read(p[0], &x, 1)) TH_LOG("the consumer could not open the device");
	close(p[0]);
	/* the server answers half after 100 ms, or stops reading at once */
	usleep(500000);
	ASSERT_EQ(0, waitpid(pid, &st, WNOHANG))
		TH_LOG("the consumer was not blocked: exit %d",
		       WIFEXITED(st) ? WEXITSTATUS(st) : -1);

	t0 = vu_now();
	ASSERT_EQ(0, kill(pid, SIGKILL));
	ASSERT_EQ(pid, waitpid(pid, &st, 0));
	dt = vu_now() - t0;
	EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	EXPECT_GT(1.0, dt) TH_LOG("the killed consumer took %.2f s to exit", dt);

	/* The server goes on: it finishes the message the child left. */
	ASSERT_EQ(0, vu_server_signal(&self->srv, SIGUSR1));
	state_is(self->uuid, "", state, sizeof(state));
	self->fd = vu_vfio_open(self->uuid, &self->container, &self->group);
	ASSERT_LE(0, self->fd) TH_LOG("next consumer: %s; state: %s",
				      strerror(-self->fd), state);
	EXPECT_EQ(0, __bar_read32(self->fd, 0, &v));
	EXPECT_EQ(FP_MAGIC, v);
	if (variant->write) {
		/* The killed consumer's write landed whole. */
		want = map_buf(MIB);
		ASSERT_NE(NULL, want);
		fill(want, MIB, 0x5a);
		ASSERT_EQ(0, region_off(self->fd, VFIO_PCI_BAR1_REGION_INDEX, &bar1));
		ASSERT_EQ(sizeof(tail), pread(self->fd, tail, sizeof(tail),
					      bar1 + MIB - sizeof(tail)));
		EXPECT_EQ(0, memcmp(tail, want + MIB - sizeof(tail), sizeof(tail)));
		munmap(want, MIB);
	}
	EXPECT_TRUE(state_is(self->uuid, "ready", state, sizeof(state)))
		TH_LOG("state: %s", state);
}

/*
 * slow_server: a reply that is overdue, however the server keeps the
 * connection busy meanwhile, fails at timeout_ms. 2 s, not hostile_test's
 * 1 s: timeout_ms also bounds the whole attach, and the fault_server's
 * (some 50 messages) takes over 1 s on the debug kernel next to other VMs.
 */
#define SLOW_TIMEOUT_MS	2000
#define TRICKLE_READ	32

FIXTURE(slow_server) {
	struct vu_server srv;
	char uuid[VU_UUID_LEN + 1];
	int container, group, fd;
};

FIXTURE_VARIANT(slow_server) {
	const char *fault;
	bool traffic;	/* other requests answered while ours waits */
};

/* A 32-byte read's 64-byte reply, a byte per 100 ms: 6.4 s. */
FIXTURE_VARIANT_ADD(slow_server, trickle) { .fault = "trickle" };
FIXTURE_VARIANT_ADD(slow_server, withheld_under_traffic) {
	.fault = "withhold", .traffic = true,
};

FIXTURE_SETUP(slow_server)
{
	const char *args[] = { "--fault", variant->fault, NULL };
	char ms[16];
	int ret;

	self->fd = self->group = self->container = -1;
	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	ret = fault_server_start(&self->srv, args);
	if (ret == -ENOENT)
		SKIP(return, "fault_server not built");
	ASSERT_EQ(0, ret);
	vu_uuid_gen(self->uuid);
	ASSERT_EQ(0, vu_mdev_create(self->uuid));
	snprintf(ms, sizeof(ms), "%d", SLOW_TIMEOUT_MS);
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "timeout_ms", ms));
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
	self->fd = vu_vfio_open(self->uuid, &self->container, &self->group);
	ASSERT_LE(0, self->fd);
}

FIXTURE_TEARDOWN(slow_server)
{
	vu_consumer_teardown(self->uuid, &self->fd, &self->group,
			     &self->container);
	vu_server_stop(&self->srv);
}

struct overdue {
	int fd;
	int ret;
	double start, end;
	int done;
};

static void *overdue_thread(void *arg)
{
	struct overdue *o = arg;
	uint8_t buf[TRICKLE_READ];

	o->start = vu_now();
	o->ret = __bar_rw(o->fd, 0, buf, sizeof(buf), false);
	o->end = vu_now();
	__atomic_store_n(&o->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

/*
 * Slack: the deadline is jiffies (4 ms at HZ=250) and a TCG guest
 * schedules the waiter up to about half a second late under load; the
 * project's SLACK_S (1.5 s) covers both. The servers here take 6.4 s
 * (trickle) or forever (withhold) to answer, far outside it: a wait that
 * other traffic or a started message extends ends after 6.4 s (trickle),
 * or 2 s after the traffic stops at 6 s (withhold).
 */
TEST_F_TIMEOUT(slow_server, fails_at_timeout, 60)
{
	struct overdue o = { .fd = self->fd };
	unsigned int answered = 0;
	int traffic_err = 0;
	char state[160];
	uint32_t v;
	pthread_t t;
	double t0, dt;

	ASSERT_EQ(0, pthread_create(&t, NULL, overdue_thread, &o));
	if (variant->traffic) {
		/* ours first, then a request every 20 ms, each answered */
		usleep(200000);
		while (!__atomic_load_n(&o.done, __ATOMIC_SEQ_CST) &&
		       vu_now() - o.start < 6) {
			traffic_err = __bar_read32(self->fd, REG_ADDR, &v);
			if (traffic_err)
				break;
			answered++;
			usleep(20000);
		}
	}
	ASSERT_EQ(0, pthread_join(t, NULL));
	dt = o.end - o.start;
	TH_LOG("the call returned %d after %.2f s (%u other requests answered meanwhile)",
	       o.ret, dt, answered);
	EXPECT_EQ(-ETIMEDOUT, o.ret);
	EXPECT_LE(SLOW_TIMEOUT_MS / 1000.0 - 0.05, dt);
	EXPECT_GT(SLOW_TIMEOUT_MS / 1000.0 + SLACK_S, dt);
	EXPECT_TRUE(state_is(self->uuid, "broken: ", state, sizeof(state)))
		TH_LOG("state: %s", state);
	if (variant->traffic) {
		/* (the traffic did flow while ours was overdue) */
		EXPECT_LE(5, answered);
		EXPECT_TRUE(traffic_err == 0 || traffic_err == -EIO)
			TH_LOG("other request: %d", traffic_err);
	}
	/* and later calls fail at once */
	t0 = vu_now();
	EXPECT_EQ(-EIO, __bar_read32(self->fd, 0, &v));
	EXPECT_GT(0.5, vu_now() - t0);
}

/*
 * hung_attach: an attach to a server that never answers VERSION, with a
 * timeout_ms far longer than the test's bounds.
 */
FIXTURE(hung_attach) {
	struct vu_server srv;
	char uuid[VU_UUID_LEN + 1];
};

FIXTURE_SETUP(hung_attach)
{
	const char *args[] = { "--fault", "version_hang", NULL };
	int ret;

	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	ret = fault_server_start(&self->srv, args);
	if (ret == -ENOENT)
		SKIP(return, "fault_server not built");
	ASSERT_EQ(0, ret);
	vu_uuid_gen(self->uuid);
	ASSERT_EQ(0, vu_mdev_create(self->uuid));
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "timeout_ms", "5000"));
}

FIXTURE_TEARDOWN(hung_attach)
{
	if (vu_mdev_exists(self->uuid))
		vu_mdev_remove(self->uuid);
	vu_server_stop(&self->srv);
}

struct attacher {
	const char *uuid;
	const char *path;
	int ret;
	double end;
	int done;
};

static void *attach_thread(void *arg)
{
	struct attacher *a = arg;

	a->ret = vu_mdev_attr_write(a->uuid, "socket", a->path);
	a->end = vu_now();
	__atomic_store_n(&a->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

/* Waits for @flag at most @secs; true if it was set. */
static bool wait_flag(int *flag, double secs)
{
	double t0 = vu_now();

	while (!__atomic_load_n(flag, __ATOMIC_SEQ_CST)) {
		if (vu_now() - t0 > secs)
			return false;
		usleep(5000);
	}
	return true;
}

/*
 * Reads state and socket ten times while an attach hangs, timing each.
 * A read that waits for the attach waits for all of it (seconds), every
 * time; one read in ten late by over 0.1 s is TCG (two vCPUs on a host
 * that may run other VMs, a debug kernel: 0.107 s seen once).
 */
#define PROBES		10

struct prober {
	const char *uuid;
	double worst_state, worst_socket;
	int slow_state, slow_socket;	/* reads over NO_STALL_S */
	char state[160], socket[160];
	int errs;
	int done;
};

static void *probe_thread(void *arg)
{
	struct prober *p = arg;
	double t0, dt;
	int i;

	for (i = 0; i < PROBES; i++) {
		t0 = vu_now();
		p->errs += !!vu_mdev_attr_read(p->uuid, "state", p->state,
					       sizeof(p->state));
		dt = vu_now() - t0;
		p->worst_state = dt > p->worst_state ? dt : p->worst_state;
		p->slow_state += dt > NO_STALL_S;
		t0 = vu_now();
		p->errs += !!vu_mdev_attr_read(p->uuid, "socket", p->socket,
					       sizeof(p->socket));
		dt = vu_now() - t0;
		p->worst_socket = dt > p->worst_socket ? dt : p->worst_socket;
		p->slow_socket += dt > NO_STALL_S;
		usleep(30000);
	}
	__atomic_store_n(&p->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

TEST_F_TIMEOUT(hung_attach, remove_aborts_attach, 60)
{
	struct attacher a = { .uuid = self->uuid, .path = self->srv.socket };
	struct prober p = { .uuid = self->uuid };
	pthread_t t, tp;
	double t0, dt;
	int ret;

	ASSERT_EQ(0, pthread_create(&t, NULL, attach_thread, &a));
	usleep(300000);
	ASSERT_FALSE(__atomic_load_n(&a.done, __ATOMIC_SEQ_CST))
		TH_LOG("the attach did not hang: %d", a.ret);

	/*
	 * The reads, in a thread of their own: should one block behind the
	 * attach, the remove below is still tried while the attach hangs.
	 */
	ASSERT_EQ(0, pthread_create(&tp, NULL, probe_thread, &p));
	EXPECT_TRUE(wait_flag(&p.done, 3)) TH_LOG("reads of state or socket block");

	/* Removing the mdev aborts the attach, at once. */
	EXPECT_FALSE(__atomic_load_n(&a.done, __ATOMIC_SEQ_CST))
		TH_LOG("the attach ended before the remove: %d", a.ret);
	t0 = vu_now();
	ret = vu_mdev_remove(self->uuid);
	dt = vu_now() - t0;
	TH_LOG("remove took %.2f s", dt);
	EXPECT_EQ(0, ret);
	EXPECT_GT(1.0, dt);
	ASSERT_TRUE(wait_flag(&a.done, 20)) TH_LOG("the attach still hangs");
	ASSERT_EQ(0, pthread_join(t, NULL));
	EXPECT_GT(1.0, a.end - t0)
		TH_LOG("the attach returned %.2f s after the remove started",
		       a.end - t0);
	EXPECT_EQ(-ENODEV, a.ret) TH_LOG("the aborted attach: %s", strerror(-a.ret));
	EXPECT_FALSE(vu_mdev_exists(self->uuid));

	ASSERT_EQ(0, pthread_join(tp, NULL));
	TH_LOG("slowest reads while attaching: state %.3f s, socket %.3f s; over %.1f s: %d, %d of %d",
	       p.worst_state, p.worst_socket, NO_STALL_S, p.slow_state,
	       p.slow_socket, PROBES);
	EXPECT_EQ(0, p.errs);
	EXPECT_GE(1, p.slow_state);
	EXPECT_GE(1, p.slow_socket);
	EXPECT_GT(1.0, p.worst_state);
	EXPECT_GT(1.0, p.worst_socket);
	EXPECT_STREQ("connecting", p.state);
	/* (the path being attached, or none yet) */
	EXPECT_TRUE(!p.socket[0] || !strcmp(p.socket, self->srv.socket))
		TH_LOG("socket reads '%s'", p.socket);
}

/*
 * reattach: a consumer with 2048 MSI-X eventfds; the re-attach replays
 * them to a server that holds every SET_IRQS reply 1 ms (TCG adds some
 * 4 ms per message: an eventfd a message is about 10 s, 8 a message 1.3 s).
 */
FIXTURE(reattach) {
	struct vu_server srv, slow, other;
	char uuid[VU_UUID_LEN + 1], uuid2[VU_UUID_LEN + 1];
	int container, group, fd;
	int container2, group2, fd2;
	int efd[MSIX_VECTORS];
};

static const char *const msix_args[] = { "--msix", "2048", NULL };
static const char *const msix_slow_args[] = {
	"--msix", "2048", "--set-irqs-delay-us", "1000", NULL,
};

FIXTURE_SETUP(reattach)
{
	struct rlimit rl = { .rlim_cur = 8192, .rlim_max = 8192 };
	int ret, i;

	self->fd = self->group = self->container = -1;
	self->fd2 = self->group2 = self->container2 = -1;
	for (i = 0; i < MSIX_VECTORS; i++)
		self->efd[i] = -1;
	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	/* 2048 eventfds, and as many installed again during the replay */
	ASSERT_EQ(0, setrlimit(RLIMIT_NOFILE, &rl));
	ret = fault_server_start(&self->srv, msix_args);
	if (ret == -ENOENT)
		SKIP(return, "fault_server not built");
	ASSERT_EQ(0, ret);
	ASSERT_EQ(0, fault_server_start(&self->slow, msix_slow_args));
	ASSERT_EQ(0, fault_server_start(&self->other, NULL));

	vu_uuid_gen(self->uuid);
	ASSERT_EQ(0, vu_mdev_create(self->uuid));
	/*
	 * The replay alone is some 10 s if sent one eventfd a message, over
	 * a minute on the debug kernel: should timeout_ms bound the whole
	 * attach, it must not end it.
	 */
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "timeout_ms", "240000"));
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
	self->fd = vu_vfio_open(self->uuid, &self->container, &self->group);
	ASSERT_LE(0, self->fd);

	vu_uuid_gen(self->uuid2);
	self->fd2 = vu_open_attached(self->uuid2, &self->other,
				     &self->container2, &self->group2);
	ASSERT_LE(0, self->fd2);
}

FIXTURE_TEARDOWN(reattach)
{
	int i;

	vu_consumer_teardown(self->uuid, &self->fd, &self->group,
			     &self->container);
	vu_consumer_teardown(self->uuid2, &self->fd2, &self->group2,
			     &self->container2);
	for (i = 0; i < MSIX_VECTORS; i++)
		if (self->efd[i] >= 0)
			close(self->efd[i]);
	vu_server_stop(&self->srv);
	vu_server_stop(&self->slow);
	vu_server_stop(&self->other);
}

TEST_F_TIMEOUT(reattach, msix_2048_no_stall, 300)
{
	size_t sz = sizeof(struct vfio_irq_set) + MSIX_VECTORS * sizeof(int);
	struct attacher a = { .uuid = self->uuid, .path = self->slow.socket };
	struct vfio_irq_info info = {
		.argsz = sizeof(info), .index = VFIO_PCI_MSIX_IRQ_INDEX,
	};
	double worst_state = 0, worst_read = 0, t0, dt, start;
	struct vfio_irq_set *set;
	unsigned int samples = 0, bad_reads = 0;
	char state[160];
	uint32_t v = 0;
	pthread_t t;
	int i;

	ASSERT_EQ(0, ioctl(self->fd, VFIO_DEVICE_GET_IRQ_INFO, &info));
	ASSERT_EQ(MSIX_VECTORS, info.count);
	set = calloc(1, sz);
	ASSERT_NE(NULL, set);
	set->argsz = sz;
	set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
	set->index = VFIO_PCI_MSIX_IRQ_INDEX;
	set->count = MSIX_VECTORS;
	for (i = 0; i < MSIX_VECTORS; i++) {
		self->efd[i] = eventfd(0, EFD_CLOEXEC);
		ASSERT_LE(0, self->efd[i]);
		((int *)set->data)[i] = self->efd[i];
	}
	ASSERT_EQ(0, ioctl(self->fd, VFIO_DEVICE_SET_IRQS, set))
		TH_LOG("SET_IRQS: %s", strerror(errno));
	free(set);
	ASSERT_EQ(0, __bar_read32(self->fd, REG_IRQ_FDS, &v));
	ASSERT_EQ(MSIX_VECTORS, v);

	/* Re-attach to the slow server; meanwhile, the others' ops. */
	start = vu_now();
	ASSERT_EQ(0, pthread_create(&t, NULL, attach_thread, &a));
	while (!__atomic_load_n(&a.done, __ATOMIC_SEQ_CST) &&
	       vu_now() - start < 240) {
		t0 = vu_now();
		if (vu_mdev_attr_read(self->uuid, "state", state, sizeof(state)))
			bad_reads++;
		dt = vu_now() - t0;
		worst_state = dt > worst_state ? dt : worst_state;
		t0 = vu_now();
		if (__bar_read32(self->fd2, 0, &v) || v != FP_MAGIC)
			bad_reads++;
		dt = vu_now() - t0;
		worst_read = dt > worst_read ? dt : worst_read;
		samples++;
		usleep(10000);
	}
	ASSERT_EQ(0, pthread_join(t, NULL));
	TH_LOG("re-attach took %.2f s; %u samples, slowest state read %.3f s, slowest read of the other mdev %.3f s",
	       a.end - start, samples, worst_state, worst_read);
	EXPECT_EQ(0, a.ret) TH_LOG("re-attach: %s", strerror(-a.ret));
	EXPECT_EQ(0, bad_reads);
	EXPECT_GT(BUSY_NO_STALL_S, worst_state);
	EXPECT_GT(BUSY_NO_STALL_S, worst_read);
	/* (the replay was slow enough for the samples to mean something) */
	EXPECT_LE(5, samples);

	/* The slow server got every eventfd; the device works. */
	EXPECT_TRUE(state_is(self->uuid, "ready", state, sizeof(state)))
		TH_LOG("state: %s", state);
	ASSERT_EQ(0, __bar_read32(self->fd, REG_IRQ_FDS, &v));
	EXPECT_EQ(MSIX_VECTORS, v);
	ASSERT_EQ(0, __bar_read32(self->fd, 0, &v));
	EXPECT_EQ(FP_MAGIC, v);
}

/*
 * big_xfer: max_data_xfer_size 16 MiB on both sides; 16 MiB preads and
 * pwrites of the null device's 16 MiB BAR2, each one message.
 */
FIXTURE(big_xfer) {
	struct vu_server srv;
	char uuid[VU_UUID_LEN + 1];
	int container, group, fd;
	int kmsg, kmsg_all;	/* our attach log line; any kernel report */
};

static const char *const big_args[] = {
	"--device", "null", "--bar-size", "16M", "--max-xfer", "16M", NULL,
};

FIXTURE_SETUP(big_xfer)
{
	int ret;

	self->fd = self->group = self->container = -1;
	self->kmsg = self->kmsg_all = -1;
	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	if (access(XFER_PARAM, W_OK))
		SKIP(return, "no writable max_data_xfer_size parameter");
	ret = vu_server_start(&self->srv, SAMPLE, big_args);
	if (ret == -ENOENT)
		SKIP(return, "sample server not built");
	ASSERT_EQ(0, ret);
	self->kmsg = vu_kmsg_open();
	ASSERT_LE(0, self->kmsg);
	self->kmsg_all = vu_kmsg_open();
	ASSERT_LE(0, self->kmsg_all);
	vu_uuid_gen(self->uuid);
	ASSERT_EQ(0, vu_mdev_create(self->uuid));
	ASSERT_EQ(0, vu_mdev_attr_write(self->uuid, "timeout_ms", "30000"));
}

FIXTURE_TEARDOWN(big_xfer)
{
	vu_consumer_teardown(self->uuid, &self->fd, &self->group,
			     &self->container);
	if (!access(XFER_PARAM, W_OK))
		vu_sysfs_write(XFER_PARAM, "1048576");
	vu_server_stop(&self->srv);
	if (self->kmsg >= 0)
		close(self->kmsg);
	if (self->kmsg_all >= 0)
		close(self->kmsg_all);
}

TEST_F_TIMEOUT(big_xfer, pread_pwrite_16mib, 120)
{
	const size_t sz = 16 * MIB;
	char state[160], line[512] = "";
	uint8_t *w, *r;
	uint64_t bar2 = 0;
	uint32_t v = 0;
	ssize_t n;
	int round;

	/* read at each attach (the teardown puts the default back) */
	ASSERT_EQ(0, vu_sysfs_write(XFER_PARAM, "16777216"));
	ASSERT_EQ(0, vu_mdev_attach(self->uuid, &self->srv));
	/* the attach's log line: both sides said 16 MiB */
	EXPECT_TRUE(vu_kmsg_has(self->kmsg, "max_data_xfer_size 16777216,"))
		TH_LOG("the attach did not negotiate 16 MiB");
	self->fd = vu_vfio_open(self->uuid, &self->container, &self->group);
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(0, region_off(self->fd, VFIO_PCI_BAR2_REGION_INDEX, &bar2));
	ASSERT_EQ(0, __bar_read32(self->fd, 0, &v));
	ASSERT_EQ(NULL_MAGIC, v);
	w = map_buf(sz);
	r = map_buf(sz);
	ASSERT_NE(NULL, w);
	ASSERT_NE(NULL, r);
	for (round = 0; round < 2; round++) {
		fill(w, sz, 0x1600 + round);
		memset(r, 0, sz);
		n = pwrite(self->fd, w, sz, bar2);
		EXPECT_EQ((ssize_t)sz, n) TH_LOG("pwrite: %s", n < 0 ? strerror(errno) : "short");
		n = pread(self->fd, r, sz, bar2);
		EXPECT_EQ((ssize_t)sz, n) TH_LOG("pread: %s", n < 0 ? strerror(errno) : "short");
		EXPECT_EQ(0, memcmp(w, r, sz)) TH_LOG("round %d: data differ", round);
	}
	EXPECT_FALSE(vu_kmsg_any(self->kmsg_all,
				 "WARNING:|BUG:|Oops|page allocation failure|UBSAN:",
				 line, sizeof(line)))
		TH_LOG("kernel log: %s", line);
	EXPECT_TRUE(state_is(self->uuid, "ready", state, sizeof(state)))
		TH_LOG("state: %s", state);
	munmap(w, sz);
	munmap(r, sz);
}

TEST_HARNESS_MAIN
