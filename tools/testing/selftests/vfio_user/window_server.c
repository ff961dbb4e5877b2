// SPDX-License-Identifier: GPL-2.0-only
/*
 * window_server: a vfio-user server for window_test, built on the server
 * library, that reaches the client's memory only through the shared-memory
 * DMA regions it mmapped (never with DMA_READ/DMA_WRITE messages).
 *
 *   window_server --socket PATH
 *
 * BAR0 registers (little endian):
 *   0x00 u32 RO  magic 'WIN1'
 *   0x04 u32 RO  DMA regions mapped with an fd
 *   0x08 u64 RW  IOVA the toucher touches
 *   0x10 u32 RW  toucher: 0 stopped, 1 read and write, 2 read only
 *   0x18 u64 RO  touches done
 *   0x20 u64 RO  SIGBUS taken by the toucher
 *   0x28 u64 RW  copy source IOVA
 *   0x30 u64 RW  copy destination IOVA
 *   0x38 u64 RW  copy length
 *   0x40 u32 WO  copy doorbell: memcpy between the two mappings
 *   0x44 u32 RO  copy status: 0 done, 1 SIGBUS, 2 not in a mapped region
 *   0x48 u64 RO  bytes of fd-backed regions mapped
 *
 * The toucher is TOUCHERS threads that read (and write, incrementing) the
 * u64 at its IOVA in a loop; a SIGBUS there (the client unmapped the IOVA,
 * the module zapped it) is counted and the loop goes on a millisecond
 * later. Several, so that faults race each other and the unmaps.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vfio-user-server.h"

#define WIN_MAGIC	0x314e4957
#define MAX_REGIONS	64
#define TOUCHERS	3

struct win_region {
	uint64_t iova;
	uint64_t size;
	uint8_t *vaddr;
};

static struct win_region regions[MAX_REGIONS];
static pthread_mutex_t regions_lock = PTHREAD_MUTEX_INITIALIZER;

static _Atomic uint64_t touch_iova;
static _Atomic uint32_t touch_mode;
static _Atomic uint64_t touches, sigbus_taken;
static uint64_t copy_src, copy_dst, copy_len;
static uint32_t copy_status;

/* volatile: the stores around an access must stay where they are */
static __thread sigjmp_buf *volatile fault_jmp;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	if (fault_jmp)
		siglongjmp(*fault_jmp, 1);
	signal(SIGBUS, SIG_DFL);
	raise(SIGBUS);
}

/* The server's address of [iova, iova + len), if one mapped region has it. */
static void *win_ptr(uint64_t iova, uint64_t len)
{
	void *p = NULL;
	int i;

	pthread_mutex_lock(&regions_lock);
	for (i = 0; i < MAX_REGIONS; i++) {
		struct win_region *r = &regions[i];

		if (r->vaddr && iova >= r->iova && len <= r->size &&
		    iova - r->iova <= r->size - len) {
			p = r->vaddr + (iova - r->iova);
			break;
		}
	}
	pthread_mutex_unlock(&regions_lock);
	return p;
}

static void *toucher(void *arg)
{
	sigjmp_buf jb;

	for (;;) {
		uint32_t mode = atomic_load(&touch_mode);
		volatile uint64_t *p;

		if (!mode) {
			usleep(1000);
			continue;
		}
		p = win_ptr(atomic_load(&touch_iova), 8);
		if (!p) {
			usleep(1000);
			continue;
		}
		if (sigsetjmp(jb, 1)) {
			fault_jmp = NULL;
			atomic_fetch_add(&sigbus_taken, 1);
			usleep(1000);
			continue;
		}
		fault_jmp = &jb;
		if (mode == 1)
			*p = *p + 1;
		else
			(void)*p;
		fault_jmp = NULL;
		atomic_fetch_add(&touches, 1);
	}
	return NULL;
}

static uint32_t win_copy(void)
{
	void *src = win_ptr(copy_src, copy_len);
	void *dst = win_ptr(copy_dst, copy_len);

	if (!src || !dst)
		return 2;
	/* the library's guarded copy: -EFAULT for a SIGBUS */
	return vus_dma_memcpy(dst, src, copy_len) ? 1 : 0;
}

static uint64_t mapped(uint32_t *count)
{
	uint64_t bytes = 0;
	int i;

	*count = 0;
	pthread_mutex_lock(&regions_lock);
	for (i = 0; i < MAX_REGIONS; i++) {
		if (!regions[i].vaddr)
			continue;
		++*count;
		bytes += regions[i].size;
	}
	pthread_mutex_unlock(&regions_lock);
	return bytes;
}

static int win_bar0(struct vus_dev *dev, void *priv, uint64_t off, void *buf,
		    size_t count, bool is_write)
{
	uint64_t v = 0;
	uint32_t n;

	if (count != 4 && count != 8)
		return -EINVAL;
	if (is_write) {
		memcpy(&v, buf, count);
		v = le64toh(v);
		switch (off) {
		case 0x08:
			atomic_store(&touch_iova, v);
			return 0;
		case 0x10:
			atomic_store(&touch_mode, (uint32_t)v);
			return 0;
		case 0x28:
			copy_src = v;
			return 0;
		case 0x30:
			copy_dst = v;
			return 0;
		case 0x38:
			copy_len = v;
			return 0;
		case 0x40:
			copy_status = win_copy();
			return 0;
		}
		return -EINVAL;
	}
	switch (off) {
	case 0x00:
		v = WIN_MAGIC;
		break;
	case 0x04:
		mapped(&n);
		v = n;
		break;
	case 0x08:
		v = atomic_load(&touch_iova);
		break;
	case 0x10:
		v = atomic_load(&touch_mode);
		break;
	case 0x18:
		v = atomic_load(&touches);
		break;
	case 0x20:
		v = atomic_load(&sigbus_taken);
		break;
	case 0x44:
		v = copy_status;
		break;
	case 0x48:
		v = mapped(&n);
		break;
	default:
		return -EINVAL;
	}
	v = htole64(v);
	memcpy(buf, &v, count);
	return 0;
}

static int win_dma_map(struct vus_dev *dev, void *priv, uint64_t iova,
		       uint64_t size, uint32_t prot, void *vaddr)
{
	int i;

	if (!vaddr)
		return 0;
	pthread_mutex_lock(&regions_lock);
	for (i = 0; i < MAX_REGIONS && regions[i].vaddr; i++)
		;
	if (i < MAX_REGIONS)
		regions[i] = (struct win_region){ iova, size, vaddr };
	pthread_mutex_unlock(&regions_lock);
	return 0;
}

static void win_dma_unmap(struct vus_dev *dev, void *priv, uint64_t iova,
			  uint64_t size)
{
	int i;

	/* The toucher may still be in there: stop it first. */
	atomic_store(&touch_mode, 0);
	usleep(10000);
	pthread_mutex_lock(&regions_lock);
	for (i = 0; i < MAX_REGIONS; i++)
		if (regions[i].vaddr && regions[i].iova == iova)
			regions[i].vaddr = NULL;
	pthread_mutex_unlock(&regions_lock);
}

static const struct vus_dev_ops win_ops = {
	.dma_map = win_dma_map,
	.dma_unmap = win_dma_unmap,
};

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ }
	};
	struct sigaction sa = { .sa_sigaction = on_sigbus,
				.sa_flags = SA_SIGINFO | SA_NODEFER };
	VUS_OPTS(vus_dev_opts, dopts, .ops = &win_ops);
	VUS_OPTS(vus_pci_opts, popts, .vendor_id = 0x4e58, .device_id = 0x0003);
	VUS_OPTS(vus_region_opts, bar0, .size = 4096, .access = win_bar0);
	const char *path = NULL;
	struct vus_dev *dev;
	pthread_t t;
	int c, i, ret;

	while ((c = getopt_long(argc, argv, "s:", opts, NULL)) != -1) {
		if (c != 's') {
			fprintf(stderr, "usage: %s --socket PATH\n", argv[0]);
			return 2;
		}
		path = optarg;
	}
	if (!path) {
		fprintf(stderr, "usage: %s --socket PATH\n", argv[0]);
		return 2;
	}
	sigaction(SIGBUS, &sa, NULL);

	dev = vus_dev__new(&dopts);
	if (!dev || vus_dev__setup_pci(dev, &popts) ||
	    vus_dev__add_region(dev, 0, &bar0) || vus_dev__listen(dev, path)) {
		fprintf(stderr, "window_server: setup failed\n");
		return 1;
	}
	for (i = 0; i < TOUCHERS; i++)
		if (pthread_create(&t, NULL, toucher, NULL))
			return 1;
	do
		ret = vus_dev__run(dev);
	while (ret == -EINTR);
	vus_dev__delete(dev);
	return ret ? 1 : 0;
}
