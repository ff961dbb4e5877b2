// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * Unit tests of the library's device loop (struct vus_loop): many devices
 * served from one thread, with one client each (vus_client.h), through
 * listening sockets and attached socketpairs; removal and deletion from a
 * callback during a round; stop from another thread; the loop's fd in an
 * outside poll(). No VM, no kernel module.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/un.h>

#include "vfio-user-server.h"
#include "vus_client.h"
#include "kselftest_harness.h"

#define LT_DEVS		16
#define LT_OPS		200
#define LT_BAR0		4096

/* BAR0 of a loop test device: register 0 is scratch, 8 counts accesses. */
struct lt_dev {
	struct vus_dev *dev;
	unsigned int index;
	uint8_t regs[LT_BAR0];
	atomic_uint accesses;
	pthread_t served_by;		/* thread of the last access */
	/* with @victim: the first access of any device deletes or removes it */
	struct lt_dev **victim;
	struct vus_loop *victim_loop;	/* remove it from there, else delete */
	atomic_int *served;		/* devices whose access callback ran */
	/* with @nest: an access calls the loop's entry points from inside */
	struct vus_loop *nest;
	int nest_process, nest_run;
};

static int lt_access(struct vus_dev *dev, void *priv, uint64_t off,
		     void *buf, size_t count, bool is_write)
{
	struct lt_dev *d = priv;

	atomic_fetch_add(&d->accesses, 1);
	d->served_by = pthread_self();
	if (d->served)
		atomic_fetch_add(d->served, 1);
	if (d->victim && *d->victim) {
		struct lt_dev *v = *d->victim;

		if (v == d)
			v = d->index ? d - d->index : d + 1;
		*d->victim = NULL;
		if (d->victim_loop) {
			vus_loop__remove(d->victim_loop, v->dev);
		} else {
			vus_dev__delete(v->dev);
			v->dev = NULL;
		}
	}
	if (d->nest) {
		d->nest_process = vus_loop__process(d->nest);
		d->nest_run = vus_loop__run(d->nest);
		vus_loop__delete(d->nest);	/* ignored: a round is on */
	}
	if (is_write)
		memcpy(d->regs + off, buf, count);
	else
		memcpy(buf, d->regs + off, count);
	return 0;
}

static struct vus_dev *lt_dev_new(struct lt_dev *d, unsigned int index)
{
	VUS_OPTS(vus_dev_opts, o, .priv = d, .timeout_ms = 2000);
	VUS_OPTS(vus_region_opts, bar0, .size = LT_BAR0, .access = lt_access,
		 .priv = d);

	d->index = index;
	d->dev = vus_dev__new(&o);
	if (!d->dev)
		return NULL;
	if (vus_dev__add_region(d->dev, 0, &bar0)) {
		vus_dev__delete(d->dev);
		d->dev = NULL;
	}
	return d->dev;
}

static int lt_negotiate(struct cl *cl)
{
	struct cl_msg r;
	int err = cl_version(cl, 0, 2, NULL, &r);

	if (!err)
		cl_msg_free(&r);
	return err;
}

static int lt_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		close(fd);
		return -errno;
	}
	return fd;
}

static void lt_path(char *buf, size_t len, unsigned int i)
{
	snprintf(buf, len, "/tmp/vus-loop-test-%d-%u.sock", getpid(), i);
}

/* ---- one client thread per device ---------------------------------------- */

struct lt_client {
	unsigned int index;
	int err;			/* first failure, 0 if none */
	unsigned int ops;
};

/*
 * Connect through the device's listening socket, negotiate, then LT_OPS / 2
 * times write a value only this client uses and read it back; then the
 * same on a second connection (the first one closed): 2 * LT_OPS accesses.
 */
static void *lt_client_thread(void *arg)
{
	struct lt_client *c = arg;
	char path[108];
	struct cl cl;
	unsigned int i, round;

	lt_path(path, sizeof(path), c->index);
	for (round = 0; round < 2 && !c->err; round++) {
		memset(&cl, 0, sizeof(cl));
		cl.fd = lt_connect(path);
		if (cl.fd < 0) {
			c->err = cl.fd;
			break;
		}
		c->err = lt_negotiate(&cl);
		for (i = 0; i < LT_OPS / 2 && !c->err; i++) {
			uint32_t v = c->index << 16 | round << 15 | i, r = 0;

			c->err = cl_region_write(&cl, 0, 0, &v, 4);
			if (!c->err)
				c->err = cl_region_read(&cl, 0, 0, &r, 4);
			if (!c->err && r != v)
				c->err = -EBADMSG;
			if (!c->err)
				c->ops += 2;
		}
		close(cl.fd);
	}
	return NULL;
}

struct lt_server {
	struct vus_loop *loop;
	int ret;
};

static void *lt_server_thread(void *arg)
{
	struct lt_server *s = arg;

	do {
		s->ret = vus_loop__run(s->loop);
	} while (s->ret == -EINTR);
	return NULL;
}

/*
 * LT_DEVS devices listening on their own paths, one loop in one server
 * thread, LT_DEVS clients at once: every client gets its own device's
 * answers, every access is served by the loop's thread, every device
 * accepts a second client after the first goes away.
 */
TEST(many_devices_one_thread)
{
	static struct lt_dev d[LT_DEVS];
	struct lt_client c[LT_DEVS];
	pthread_t ct[LT_DEVS], st;
	struct lt_server s = { 0 };
	char path[108];
	unsigned int i;

	memset(d, 0, sizeof(d));
	s.loop = vus_loop__new(NULL);
	ASSERT_NE(NULL, s.loop);
	for (i = 0; i < LT_DEVS; i++) {
		ASSERT_NE(NULL, lt_dev_new(&d[i], i));
		lt_path(path, sizeof(path), i);
		ASSERT_EQ(0, vus_dev__listen(d[i].dev, path));
		ASSERT_EQ(0, vus_loop__add(s.loop, d[i].dev));
	}
	ASSERT_EQ(LT_DEVS, vus_loop__nr_devs(s.loop));
	ASSERT_EQ(0, pthread_create(&st, NULL, lt_server_thread, &s));
	for (i = 0; i < LT_DEVS; i++) {
		c[i] = (struct lt_client){ .index = i };
		ASSERT_EQ(0, pthread_create(&ct[i], NULL, lt_client_thread,
					    &c[i]));
	}
	for (i = 0; i < LT_DEVS; i++)
		pthread_join(ct[i], NULL);
	vus_loop__stop(s.loop);
	pthread_join(st, NULL);
	EXPECT_EQ(0, s.ret);
	for (i = 0; i < LT_DEVS; i++) {
		EXPECT_EQ(0, c[i].err) TH_LOG("client %u: %s", i,
					      strerror(-c[i].err));
		EXPECT_EQ(2 * LT_OPS, c[i].ops);
		EXPECT_EQ(2 * LT_OPS, atomic_load(&d[i].accesses));
		EXPECT_TRUE(pthread_equal(st, d[i].served_by));
	}
	vus_loop__delete(s.loop);
	for (i = 0; i < LT_DEVS; i++) {
		vus_dev__delete(d[i].dev);
		lt_path(path, sizeof(path), i);
		EXPECT_NE(0, access(path, F_OK));
	}
}

/* Attach a socketpair client to @d; returns the client's fd. */
static int lt_attach_pair(struct lt_dev *d)
{
	int sv[2], err;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return -errno;
	err = vus_dev__attach_fd(d->dev, sv[1]);
	if (err) {
		close(sv[0]);
		return err;
	}
	return sv[0];
}

/* Send a REGION_READ of register 0 without waiting; returns its msg_id. */
static int lt_send_read(struct cl *cl)
{
	struct vfio_user_region_access a = {
		.offset = 0, .region = 0, .count = htole32(4),
	};

	return cl_send(cl, VFIO_USER_REGION_READ, 0, &a, sizeof(a), NULL, 0);
}

/*
 * The loop's fd in an outside poll(), one round with vus_loop__process():
 * two devices are ready in the same round and whichever is served first
 * deletes (@remove false) or removes (@remove true) the other from its
 * callback. The other is not served by that round (no use after free:
 * run under valgrind by make check VALGRIND=1); a deleted device's client
 * sees its socket closed, a removed one is served again once added back.
 */
static void lt_victim(struct __test_metadata *_metadata, bool remove)
{
	struct lt_dev d[2];
	struct lt_dev *victim = &d[0];	/* "the other one", see lt_access() */
	struct cl cl[2];
	struct vus_loop *loop;
	struct pollfd pfd;
	atomic_int served = 0;
	int id[2], i, first, other;
	struct cl_msg r;

	memset(d, 0, sizeof(d));
	memset(cl, 0, sizeof(cl));
	loop = vus_loop__new(NULL);
	ASSERT_NE(NULL, loop);
	for (i = 0; i < 2; i++) {
		ASSERT_NE(NULL, lt_dev_new(&d[i], i));
		cl[i].fd = lt_attach_pair(&d[i]);
		ASSERT_LE(0, cl[i].fd);
		ASSERT_EQ(0, vus_loop__add(loop, d[i].dev));
	}
	/* VERSION for both, served by outside polls of the loop's fd */
	for (i = 0; i < 2; i++) {
		id[i] = cl_send(&cl[i], VFIO_USER_VERSION, 0,
				&(struct vfio_user_version){ .minor = htole16(2) },
				sizeof(struct vfio_user_version), NULL, 0);
		ASSERT_LE(0, id[i]);
	}
	pfd = (struct pollfd){ .fd = vus_loop__fd(loop), .events = POLLIN };
	for (i = 0; i < 10 && !(vus_dev__connected(d[0].dev) &&
				 vus_dev__connected(d[1].dev)); i++) {
		ASSERT_EQ(1, poll(&pfd, 1, 2000));
		ASSERT_LE(1, vus_loop__process(loop));
	}
	for (i = 0; i < 2; i++) {
		ASSERT_EQ(0, cl_wait(&cl[i], id[i], &r));
		cl_msg_free(&r);
	}

	for (i = 0; i < 2; i++) {
		d[i].victim = &victim;
		d[i].victim_loop = remove ? loop : NULL;
		d[i].served = &served;
		id[i] = lt_send_read(&cl[i]);
		ASSERT_LE(0, id[i]);
	}
	/* both sockets readable before the round starts */
	for (i = 0; i < 2; i++) {
		struct pollfd dp = { .fd = vus_dev__fd(d[i].dev), .events = POLLIN };

		ASSERT_EQ(1, poll(&dp, 1, 2000));
	}
	ASSERT_EQ(1, poll(&pfd, 1, 2000));
	ASSERT_EQ(1, vus_loop__process(loop));
	EXPECT_EQ(1, atomic_load(&served));
	ASSERT_EQ(NULL, victim);
	first = atomic_load(&d[0].accesses) ? 0 : 1;
	other = !first;
	EXPECT_EQ(0, atomic_load(&d[other].accesses));
	EXPECT_EQ(1, vus_loop__nr_devs(loop));
	ASSERT_EQ(0, cl_wait(&cl[first], id[first], &r));
	cl_msg_free(&r);
	EXPECT_EQ(0, vus_loop__process(loop));
	if (remove) {
		EXPECT_EQ(-ENOENT, vus_loop__remove(loop, d[other].dev));
		ASSERT_EQ(0, vus_loop__add(loop, d[other].dev));
		ASSERT_EQ(1, poll(&pfd, 1, 2000));
		EXPECT_EQ(1, vus_loop__process(loop));
		EXPECT_EQ(0, cl_wait(&cl[other], id[other], &r));
		cl_msg_free(&r);
		EXPECT_EQ(1, atomic_load(&d[other].accesses));
	} else {
		EXPECT_EQ(NULL, d[other].dev);
		EXPECT_NE(0, cl_wait(&cl[other], id[other], &r));
	}
	vus_loop__delete(loop);
	for (i = 0; i < 2; i++) {
		vus_dev__delete(d[i].dev);
		close(cl[i].fd);
	}
}

TEST(delete_other_device_from_callback)
{
	lt_victim(_metadata, false);
}

TEST(remove_other_device_from_callback)
{
	lt_victim(_metadata, true);
}

static void *lt_stopper(void *arg)
{
	usleep(100 * 1000);
	vus_loop__stop(arg);
	return NULL;
}

/*
 * vus_loop__stop() before vus_loop__run() makes it return at once (a
 * worker thread started late misses no stop); from another thread it
 * ends a run blocked with no device, and with idle devices.
 */
TEST(stop)
{
	struct vus_loop *loop = vus_loop__new(NULL);
	struct lt_dev d;
	pthread_t t;

	ASSERT_NE(NULL, loop);
	vus_loop__stop(loop);
	EXPECT_EQ(0, vus_loop__run(loop));
	ASSERT_EQ(0, pthread_create(&t, NULL, lt_stopper, loop));
	EXPECT_EQ(0, vus_loop__run(loop));
	pthread_join(t, NULL);
	memset(&d, 0, sizeof(d));
	ASSERT_NE(NULL, lt_dev_new(&d, 0));
	ASSERT_EQ(0, vus_loop__add(loop, d.dev));
	ASSERT_EQ(0, pthread_create(&t, NULL, lt_stopper, loop));
	EXPECT_EQ(0, vus_loop__run(loop));
	pthread_join(t, NULL);
	/* nothing ready: a round serves nothing */
	EXPECT_EQ(0, vus_loop__process(loop));
	/* deleting a device in a loop takes it out of the loop */
	vus_dev__delete(d.dev);
	EXPECT_EQ(0, vus_loop__nr_devs(loop));
	EXPECT_EQ(0, vus_loop__process(loop));
	vus_loop__delete(loop);
}

/*
 * Devices outlive the loop they were in: vus_loop__delete() only removes
 * them, and a removed device is served by vus_dev__process() again.
 */
TEST(devices_outlive_loop)
{
	struct vus_loop *loop = vus_loop__new(NULL);
	struct lt_dev d;
	struct pollfd pfd;
	struct cl cl;
	uint32_t v = 0x1234, r = 0;
	int fd, id;
	struct cl_msg m;

	ASSERT_NE(NULL, loop);
	memset(&d, 0, sizeof(d));
	memset(&cl, 0, sizeof(cl));
	ASSERT_NE(NULL, lt_dev_new(&d, 0));
	d.regs[0] = 0x34;
	d.regs[1] = 0x12;
	cl.fd = lt_attach_pair(&d);
	ASSERT_LE(0, cl.fd);
	ASSERT_EQ(0, vus_loop__add(loop, d.dev));
	vus_loop__delete(loop);

	fd = vus_dev__fd(d.dev);
	pfd = (struct pollfd){ .fd = fd, .events = POLLIN };
	id = cl_send(&cl, VFIO_USER_VERSION, 0,
		     &(struct vfio_user_version){ .minor = htole16(2) },
		     sizeof(struct vfio_user_version), NULL, 0);
	ASSERT_LE(0, id);
	ASSERT_EQ(1, poll(&pfd, 1, 2000));
	ASSERT_LE(1, vus_dev__process(d.dev));
	ASSERT_EQ(0, cl_wait(&cl, id, &m));
	cl_msg_free(&m);
	id = lt_send_read(&cl);
	ASSERT_LE(0, id);
	ASSERT_EQ(1, poll(&pfd, 1, 2000));
	ASSERT_LE(1, vus_dev__process(d.dev));
	ASSERT_EQ(0, cl_wait(&cl, id, &m));
	ASSERT_EQ(sizeof(struct vfio_user_region_access) + 4, m.len);
	memcpy(&r, m.payload + sizeof(struct vfio_user_region_access), 4);
	EXPECT_EQ(v, le32toh(r));
	cl_msg_free(&m);
	vus_dev__delete(d.dev);
	close(cl.fd);
}

/*
 * A callback of a loop's device calling the loop again: a nested round
 * would hand the device whose handler is running its next message, so
 * vus_loop__process() and vus_loop__run() fail with -EBUSY there, and
 * vus_loop__delete() is ignored (the round still uses the loop), which
 * goes on serving.
 */
TEST(loop_calls_from_a_callback)
{
	struct lt_dev d;
	struct cl cl;
	struct vus_loop *loop;
	struct pollfd pfd;
	struct cl_msg r;
	int id, i;

	memset(&d, 0, sizeof(d));
	memset(&cl, 0, sizeof(cl));
	loop = vus_loop__new(NULL);
	ASSERT_NE(NULL, loop);
	ASSERT_NE(NULL, lt_dev_new(&d, 0));
	cl.fd = lt_attach_pair(&d);
	ASSERT_LE(0, cl.fd);
	ASSERT_EQ(0, vus_loop__add(loop, d.dev));
	id = cl_send(&cl, VFIO_USER_VERSION, 0,
		     &(struct vfio_user_version){ .minor = htole16(2) },
		     sizeof(struct vfio_user_version), NULL, 0);
	ASSERT_LE(0, id);
	pfd = (struct pollfd){ .fd = vus_loop__fd(loop), .events = POLLIN };
	for (i = 0; i < 10 && !vus_dev__connected(d.dev); i++) {
		ASSERT_EQ(1, poll(&pfd, 1, 2000));
		ASSERT_LE(0, vus_loop__process(loop));
	}
	ASSERT_EQ(0, cl_wait(&cl, id, &r));
	cl_msg_free(&r);

	d.nest = loop;
	for (i = 0; i < 2; i++) {
		id = lt_send_read(&cl);
		ASSERT_LE(0, id);
		ASSERT_EQ(1, poll(&pfd, 1, 2000));
		ASSERT_EQ(1, vus_loop__process(loop));
		EXPECT_EQ(-EBUSY, d.nest_process);
		EXPECT_EQ(-EBUSY, d.nest_run);
		ASSERT_EQ(0, cl_wait(&cl, id, &r));
		cl_msg_free(&r);
		EXPECT_EQ(1, vus_loop__nr_devs(loop));
	}
	d.nest = NULL;
	vus_loop__delete(loop);
	vus_dev__delete(d.dev);
	close(cl.fd);
}

TEST(api_misuse)
{
	struct vus_loop *a, *b;
	struct lt_dev d;
	struct {
		struct vus_loop_opts o;
		uint64_t extra;
	} big;

	errno = 0;
	EXPECT_EQ(NULL, vus_loop__new(&(struct vus_loop_opts){
		.sz = sizeof(struct vus_loop_opts), .max_events = 257 }));
	EXPECT_EQ(EINVAL, errno);
	memset(&big, 0, sizeof(big));
	big.o.sz = sizeof(big);
	big.extra = 1;
	EXPECT_EQ(NULL, vus_loop__new(&big.o));
	big.extra = 0;
	a = vus_loop__new(&big.o);
	ASSERT_NE(NULL, a);
	vus_loop__delete(a);

	a = vus_loop__new(NULL);
	b = vus_loop__new(NULL);
	ASSERT_NE(NULL, a);
	ASSERT_NE(NULL, b);
	memset(&d, 0, sizeof(d));
	ASSERT_NE(NULL, lt_dev_new(&d, 0));
	EXPECT_EQ(-EINVAL, vus_loop__add(NULL, d.dev));
	EXPECT_EQ(-EINVAL, vus_loop__add(a, NULL));
	EXPECT_EQ(-EINVAL, vus_loop__remove(a, NULL));
	EXPECT_EQ(-EINVAL, vus_loop__process(NULL));
	EXPECT_EQ(-EINVAL, vus_loop__run(NULL));
	EXPECT_EQ(-EINVAL, vus_loop__fd(NULL));
	EXPECT_EQ(0, vus_loop__nr_devs(NULL));
	vus_loop__stop(NULL);
	vus_loop__delete(NULL);
	EXPECT_EQ(-ENOENT, vus_loop__remove(a, d.dev));
	EXPECT_EQ(0, vus_loop__add(a, d.dev));
	EXPECT_EQ(-EEXIST, vus_loop__add(a, d.dev));
	EXPECT_EQ(EEXIST, errno);
	EXPECT_EQ(-EBUSY, vus_loop__add(b, d.dev));
	EXPECT_EQ(-ENOENT, vus_loop__remove(b, d.dev));
	EXPECT_EQ(1, vus_loop__nr_devs(a));
	EXPECT_EQ(0, vus_loop__nr_devs(b));
	EXPECT_EQ(0, vus_loop__remove(a, d.dev));
	EXPECT_EQ(0, vus_loop__add(b, d.dev));
	EXPECT_LE(0, vus_loop__fd(a));
	EXPECT_NE(vus_loop__fd(a), vus_loop__fd(b));
	vus_loop__delete(a);
	vus_loop__delete(b);
	vus_dev__delete(d.dev);
}

TEST_HARNESS_MAIN
