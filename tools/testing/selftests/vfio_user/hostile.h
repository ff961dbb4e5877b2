/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Helpers of the fault and fuzz suite (hostile_test, fuzz_test,
 * killloop_test, consumer_test, signal_test): the fault_server helper,
 * the kernel log, BAR accesses, DMA mappings and the fault_server's DMA
 * probe. Each returns 0 or -errno, for negative tests.
 */
#ifndef _VFIO_USER_HOSTILE_H
#define _VFIO_USER_HOSTILE_H

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>

#include "vfio_user_util.h"

#define FAULT_SERVER	"fault_server"
#define SAMPLE		"vfio-user-sample"
#define FP_MAGIC	0x544c5546
#define FP_NO_REPLY	0xffffffffu
#define DMA_MAGIC	0x31414d44
#define REG_ADDR	0x100
#define REG_COUNT	0x108
#define REG_FILL	0x110
#define REG_DOORBELL	0x114
#define REG_RESULT	0x118
#define REG_FDS		0x120
#define REG_DATA	0x1000
#define TIMEOUT_MS	1000
/* TCG: scheduling noise on top of timeout_ms. */
#define SLACK_S		1.5

/* Static: vu_server_restart() uses the arguments again later. */
static inline const char *const *dma_args(void)
{
	static const char *const args[] = { "--device", "dma", NULL };

	return args;
}
#define DMA_ARGS	dma_args()

/* Path of a helper built next to this test. */
static inline const char *helper_path(const char *name, char *buf, size_t len)
{
	char self[200];
	ssize_t n;

	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0)
		return NULL;
	self[n] = '\0';
	*strrchr(self, '/') = '\0';
	snprintf(buf, len, "%s/%s", self, name);
	return buf;
}

static inline int fault_server_start(struct vu_server *srv, const char *const *args)
{
	char prog[256];

	if (!helper_path(FAULT_SERVER, prog, sizeof(prog)))
		return -ENOENT;
	return vu_server_start_prog(srv, prog, args);
}

static inline int region_off(int fd, unsigned int index, uint64_t *off)
{
	struct vfio_region_info info = { .argsz = sizeof(info), .index = index };

	if (ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, &info))
		return -errno;
	*off = info.offset;
	return 0;
}

static inline int __bar_rw(int fd, uint64_t reg, void *buf, size_t len, bool write)
{
	uint64_t off = 0;
	ssize_t n;
	int ret;

	ret = region_off(fd, VFIO_PCI_BAR0_REGION_INDEX, &off);
	if (ret)
		return ret;
	n = write ? pwrite(fd, buf, len, off + reg) : pread(fd, buf, len, off + reg);
	if (n < 0)
		return -errno;
	return n == (ssize_t)len ? 0 : -EIO;
}

static inline int __bar_read32(int fd, uint64_t reg, uint32_t *v)
{
	return __bar_rw(fd, reg, v, 4, false);
}

static inline int __bar_write32(int fd, uint64_t reg, uint32_t v)
{
	return __bar_rw(fd, reg, &v, 4, true);
}

static inline int __bar_write64(int fd, uint64_t reg, uint64_t v)
{
	return __bar_rw(fd, reg, &v, 8, true);
}

static inline bool state_is(const char *uuid, const char *prefix, char *buf, size_t len)
{
	if (vu_mdev_attr_read(uuid, "state", buf, len))
		return false;
	return !strncmp(buf, prefix, strlen(prefix));
}

static inline bool is_consumer_error(int err)
{
	return err == -EIO || err == -EPROTO || err == -ETIMEDOUT;
}

static inline int dma_map(int container, void *vaddr, uint64_t iova, uint64_t size,
		   uint32_t flags)
{
	return vu_dma_map(container, vaddr, iova, size, flags);
}

static inline int dma_unmap(int container, uint64_t iova, uint64_t size)
{
	return vu_dma_unmap(container, iova, size);
}

/* Has the server do one DMA; returns the errno the kernel answered. */
static inline int probe(int fd, int op, uint64_t addr, uint64_t count, uint8_t fill,
		 uint32_t *result)
{
	int ret;

	ret = __bar_write64(fd, REG_ADDR, addr);
	ret = ret ?: __bar_write64(fd, REG_COUNT, count);
	ret = ret ?: __bar_write32(fd, REG_FILL, fill);
	ret = ret ?: __bar_write32(fd, REG_DOORBELL, op);
	ret = ret ?: __bar_read32(fd, REG_RESULT, result);
	return ret;
}

static inline unsigned long env_ul(const char *name, unsigned long def)
{
	const char *s = getenv(name);

	return s && *s ? strtoul(s, NULL, 0) : def;
}

#endif
