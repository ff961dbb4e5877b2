// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libvfio-user-server: copies that survive a vanished client mapping
 * (layer 0). Calls nothing else of the library.
 *
 * The library maps fd-backed DMA regions MAP_SHARED. The client may take
 * the memory away before it sends DMA_UNMAP (the vfio_user_mdev module
 * zaps our mapping when its consumer unmaps the IOVA range), and the next
 * access raises SIGBUS. vus_copy_guarded() turns that into -EFAULT:
 *
 * - One process-wide SA_SIGINFO handler, installed the first time a client
 *   maps an fd-backed region (vus_sigbus_init(), pthread_once()), never
 *   removed. The action it replaced is kept and chained to.
 * - A copy in progress publishes a &struct vus_guard (a sigjmp_buf and the
 *   address ranges that may fault) in a thread-local pointer. The handler
 *   siglongjmp()s back into the copy only for a fault (si_code > 0) of
 *   this thread at an address inside those ranges. Any other SIGBUS — the
 *   application's own mapping, another thread, kill() — goes to the
 *   previous action as if we were not there: its handler (with its mask),
 *   ignored if it was ignored and sent by kill(), else the default action
 *   (terminate with a core dump).
 * - Async-signal-safe: the handler reads and writes thread-local data and
 *   calls only siglongjmp(), sigaction(), pthread_sigmask(), sigaddset(),
 *   sigemptyset() and raise(); it jumps only out of memcpy(), which is
 *   async-signal-safe and holds no lock. The handler hands the copy the
 *   signal mask of before the fault (from its ucontext), which the copy
 *   restores after the jump: sigsetjmp() need not save the mask, so a
 *   guarded copy costs no system call unless it faults.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <ucontext.h>

#include "vus-internal.h"

/*
 * struct vus_guard - one guarded copy in progress, on the copier's stack.
 * [@lo[i], @hi[i]) are the addresses whose SIGBUS ends the copy; @prev is
 * the guard this one hides (none in practice: a copy calls nothing).
 */
struct vus_guard {
	sigjmp_buf env;
	uintptr_t lo[2];
	uintptr_t hi[2];
	struct vus_guard *prev;
};

/*
 * The copy in progress on this thread. initial-exec: the handler must not
 * be the first to touch a dynamically allocated TLS block.
 */
static __thread struct vus_guard *volatile vus_guard
	__attribute__((tls_model("initial-exec")));
/* The signal mask of before the fault, for the copy the handler ended. */
static __thread sigset_t vus_fault_mask
	__attribute__((tls_model("initial-exec")));

static pthread_once_t vus_sigbus_once = PTHREAD_ONCE_INIT;
static struct sigaction vus_sigbus_old;	/* written once, before ours runs */
static int vus_sigbus_err;		/* result of the installation */

static bool vus_guard_covers(const struct vus_guard *g, const void *addr)
{
	uintptr_t a = (uintptr_t)addr;

	return (a >= g->lo[0] && a < g->hi[0]) ||
	       (a >= g->lo[1] && a < g->hi[1]);
}

/* Do what the action we replaced would have done with this SIGBUS. */
static void vus_sigbus_chain(int sig, siginfo_t *si, void *uc)
{
	const struct sigaction *old = &vus_sigbus_old;
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	sigset_t mask;

	if ((old->sa_flags & SA_SIGINFO) ||
	    (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN)) {
		mask = old->sa_mask;
		pthread_sigmask(SIG_BLOCK, &mask, NULL);
		if (old->sa_flags & SA_NODEFER) {
			sigemptyset(&mask);
			sigaddset(&mask, sig);
			pthread_sigmask(SIG_UNBLOCK, &mask, NULL);
		}
		if (old->sa_flags & SA_RESETHAND)
			sigaction(sig, &dfl, NULL);
		if (old->sa_flags & SA_SIGINFO)
			old->sa_sigaction(sig, si, uc);
		else
			old->sa_handler(sig);
		return;
	}
	/* a signal sent with kill() and ignored before stays ignored */
	if (old->sa_handler == SIG_IGN && si->si_code <= 0)
		return;
	/*
	 * The default action. A fault cannot be ignored either: the kernel
	 * forces it. Returning runs the faulting access again, which now
	 * meets the default action; a sent signal is raised again.
	 */
	sigaction(sig, &dfl, NULL);
	if (si->si_code <= 0)
		raise(sig);
}

static void vus_sigbus_handler(int sig, siginfo_t *si, void *uc)
{
	struct vus_guard *g = vus_guard;
	int saved_errno = errno;

	if (g && si->si_code > 0 && vus_guard_covers(g, si->si_addr)) {
		vus_fault_mask = ((ucontext_t *)uc)->uc_sigmask;
		vus_guard = g->prev;
		siglongjmp(g->env, 1);
	}
	vus_sigbus_chain(sig, si, uc);
	errno = saved_errno;
}

static void vus_sigbus_install(void)
{
	struct sigaction sa = {
		.sa_sigaction = vus_sigbus_handler,
		.sa_flags = SA_SIGINFO,
	};

	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, NULL, &vus_sigbus_old)) {
		vus_sigbus_err = -errno;
		return;
	}
	/* run where and how the previous handler asked to */
	sa.sa_flags |= vus_sigbus_old.sa_flags & (SA_ONSTACK | SA_RESTART);
	if (sigaction(SIGBUS, &sa, NULL))
		vus_sigbus_err = -errno;
}

/*
 * Install the SIGBUS handler once per process. Returns 0, or -errno if it
 * could not be installed (then vus_copy_guarded() must not be used on
 * memory that may vanish).
 */
int vus_sigbus_init(void)
{
	pthread_once(&vus_sigbus_once, vus_sigbus_install);
	return vus_sigbus_err;
}

/*
 * memcpy() @len bytes from @src to @dst. A SIGBUS while reading @src (if
 * @src_may_fault) or writing @dst (if @dst_may_fault) ends the copy with
 * -EFAULT; bytes before the fault may have been copied. Needs a successful
 * vus_sigbus_init() first.
 */
int vus_copy_guarded(void *dst, const void *src, size_t len,
		     bool dst_may_fault, bool src_may_fault)
{
	struct vus_guard g = { .prev = vus_guard };

	if (dst_may_fault) {
		g.lo[0] = (uintptr_t)dst;
		g.hi[0] = (uintptr_t)dst + len;
	}
	if (src_may_fault) {
		g.lo[1] = (uintptr_t)src;
		g.hi[1] = (uintptr_t)src + len;
	}
	if (sigsetjmp(g.env, 0)) {
		/* the handler restored vus_guard; SIGBUS is blocked still */
		pthread_sigmask(SIG_SETMASK, &vus_fault_mask, NULL);
		return -EFAULT;
	}
	vus_guard = &g;
	atomic_signal_fence(memory_order_seq_cst);
	memcpy(dst, src, len);
	atomic_signal_fence(memory_order_seq_cst);
	vus_guard = g.prev;
	return 0;
}

int vus_dma_memcpy(void *dst, const void *src, size_t len)
{
	int err;

	if ((!dst || !src) && len)
		return vus_err(-EINVAL);
	err = vus_sigbus_init();
	if (err)
		return vus_err(err);
	return vus_err(vus_copy_guarded(dst, src, len, true, true));
}
