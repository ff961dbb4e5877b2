// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libvfio-user-server: the device loop (layer 7): one epoll set over the
 * fds of many devices, so that one thread serves all of them
 * (vus_loop__run()) or hands one fd to an application's own event loop
 * (vus_loop__fd(), vus_loop__process()). A ready device is served with
 * vus_dev__process() (conn.c), nothing else of it is touched.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "vus-internal.h"

#define VUS_LOOP_DEF_EVENTS	64
#define VUS_LOOP_MAX_EVENTS	256

/*
 * struct vus_loop_entry - one device's membership of one loop.
 * Allocated by vus_loop__add(); epoll's event data and &vus_dev.loop_entry
 * point at it. vus_loop__remove() clears @dev and frees the entry, or,
 * while a round of vus_loop_round() may still find it in its event array,
 * moves it to &vus_loop.dead, freed when the outermost round ends.
 */
struct vus_loop_entry {
	struct vus_dev *dev;		/* NULL once removed */
	struct vus_loop_entry *next;	/* &vus_loop.entries or .dead */
	struct vus_loop_entry **pprev;	/* on &vus_loop.entries only */
};

/*
 * struct vus_loop - devices served from one thread.
 * Allocated by vus_loop__new(), freed by vus_loop__delete(), which removes
 * (never deletes) the devices still in it. Everything but @stop belongs to
 * the thread that runs the loop; @stop and @wake_efd may be used by any
 * thread or a signal handler (vus_loop__stop()).
 */
struct vus_loop {
	struct vus_loop_opts opts;
	unsigned int max_events;
	int epfd;
	int wake_efd;			/* data.ptr NULL in @epfd */
	struct vus_loop_entry *entries;
	struct vus_loop_entry *dead;
	unsigned int nr_devs;
	unsigned int in_round;		/* nesting of vus_loop_round() */
	atomic_bool stop;
};

/* vus_loop__stop() from a signal handler needs a lock-free @stop. */
_Static_assert(ATOMIC_BOOL_LOCK_FREE == 2,
	       "vus_loop.stop must be lock-free for signal handlers");

struct vus_loop *vus_loop__new(const struct vus_loop_opts *uopts)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	struct vus_loop *loop;
	int err;

	loop = calloc(1, sizeof(*loop));
	if (!loop)
		return vus_err_ptr(-ENOMEM);
	loop->epfd = -1;
	loop->wake_efd = -1;
	atomic_init(&loop->stop, false);
	err = VUS_OPTS_COPY(&loop->opts, uopts, vus_loop_opts);
	if (err)
		goto err_free;
	loop->max_events = loop->opts.max_events ?: VUS_LOOP_DEF_EVENTS;
	err = -EINVAL;
	if (loop->max_events > VUS_LOOP_MAX_EVENTS)
		goto err_free;

	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0)
		goto err_errno;
	loop->wake_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (loop->wake_efd < 0)
		goto err_errno;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wake_efd, &ev))
		goto err_errno;
	return loop;

err_errno:
	err = -errno;
err_free:
	vus_loop__delete(loop);
	return vus_err_ptr(err);
}

static void vus_loop_free_dead(struct vus_loop *loop)
{
	struct vus_loop_entry *e;

	while ((e = loop->dead)) {
		loop->dead = e->next;
		free(e);
	}
}

void vus_loop__delete(struct vus_loop *loop)
{
	if (!loop)
		return;
	if (loop->in_round) {
		/* the round in progress still uses it */
		pr_warn("loop: vus_loop__delete() from a callback of its own device ignored\n");
		return;
	}
	while (loop->entries)
		vus_loop__remove(loop, loop->entries->dev);
	vus_loop_free_dead(loop);
	if (loop->wake_efd >= 0)
		close(loop->wake_efd);
	if (loop->epfd >= 0)
		close(loop->epfd);
	free(loop);
}

int vus_loop__add(struct vus_loop *loop, struct vus_dev *dev)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct vus_loop_entry *e;

	if (!loop || !dev)
		return vus_err(-EINVAL);
	if (dev->loop)
		return vus_err(dev->loop == loop ? -EEXIST : -EBUSY);
	e = calloc(1, sizeof(*e));
	if (!e)
		return vus_err(-ENOMEM);
	e->dev = dev;
	ev.data.ptr = e;
	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, dev->epfd, &ev)) {
		int err = -errno;

		free(e);
		return vus_err(err);
	}
	e->next = loop->entries;
	if (e->next)
		e->next->pprev = &e->next;
	e->pprev = &loop->entries;
	loop->entries = e;
	loop->nr_devs++;
	dev->loop = loop;
	dev->loop_entry = e;
	return 0;
}

int vus_loop__remove(struct vus_loop *loop, struct vus_dev *dev)
{
	struct vus_loop_entry *e;

	if (!loop || !dev)
		return vus_err(-EINVAL);
	if (dev->loop != loop)
		return vus_err(-ENOENT);
	e = dev->loop_entry;
	/* the device's epoll fd is open: it is closed only after this */
	if (epoll_ctl(loop->epfd, EPOLL_CTL_DEL, dev->epfd, NULL))
		pr_debug("loop: remove: %s\n", strerror(errno));
	*e->pprev = e->next;
	if (e->next)
		e->next->pprev = e->pprev;
	e->dev = NULL;
	if (loop->in_round) {
		e->next = loop->dead;
		loop->dead = e;
	} else {
		free(e);
	}
	loop->nr_devs--;
	dev->loop = NULL;
	dev->loop_entry = NULL;
	return 0;
}

void vus_loop_forget(struct vus_dev *dev)
{
	if (dev->loop)
		vus_loop__remove(dev->loop, dev);
}

int vus_loop__fd(const struct vus_loop *loop)
{
	return loop ? loop->epfd : vus_err(-EINVAL);
}

unsigned int vus_loop__nr_devs(const struct vus_loop *loop)
{
	return loop ? loop->nr_devs : 0;
}

/*
 * One round: wait up to @timeout ms for ready devices, serve each once.
 * A device a callback removed (or deleted) during the round is skipped:
 * its entry stays allocated until the outermost round ends. Returns the
 * devices served, or the first fatal -errno.
 */
static int vus_loop_round(struct vus_loop *loop, int timeout)
{
	struct epoll_event ev[VUS_LOOP_MAX_EVENTS];
	int n, i, ret = 0;

	n = epoll_wait(loop->epfd, ev, loop->max_events, timeout);
	if (n < 0)
		return -errno;
	loop->in_round++;
	for (i = 0; i < n; i++) {
		struct vus_loop_entry *e = ev[i].data.ptr;
		int err;

		if (!e) {
			uint64_t v;

			if (read(loop->wake_efd, &v, sizeof(v)) < 0 &&
			    errno != EAGAIN)
				pr_debug("loop: wake eventfd: %s\n",
					 strerror(errno));
			continue;
		}
		if (!e->dev)
			continue;
		err = vus_dev__process(e->dev);
		if (err < 0) {
			ret = err;
			break;
		}
		ret++;
	}
	if (!--loop->in_round)
		vus_loop_free_dead(loop);
	return ret;
}

int vus_loop__process(struct vus_loop *loop)
{
	int n;

	if (!loop)
		return vus_err(-EINVAL);
	/* a device's handler still running would get its next message */
	if (loop->in_round)
		return vus_err(-EBUSY);
	n = vus_loop_round(loop, 0);
	if (n < 0)
		return vus_err(n == -EINTR ? 0 : n);
	return n;
}

int vus_loop__run(struct vus_loop *loop)
{
	int n;

	if (!loop)
		return vus_err(-EINVAL);
	if (loop->in_round)
		return vus_err(-EBUSY);
	while (!atomic_exchange(&loop->stop, false)) {
		n = vus_loop_round(loop, -1);
		if (n < 0)
			return vus_err(n);
	}
	return 0;
}

void vus_loop__stop(struct vus_loop *loop)
{
	uint64_t one = 1;
	int saved = errno;

	if (!loop)
		return;
	atomic_store(&loop->stop, true);
	/* a full counter (never in practice) already wakes the loop */
	if (write(loop->wake_efd, &one, sizeof(one)) < 0)
		errno = saved;
}
