/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Helpers shared by the vfio_user selftests: mdev lifecycle through sysfs,
 * VFIO group/container/device fds, module load and unload.
 *
 * Every helper returns 0 (or a value) on success and a negative errno on
 * failure, so negative tests can assert the exact errno.
 */
#ifndef _VFIO_USER_UTIL_H
#define _VFIO_USER_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VU_PARENT	"/sys/class/vfio_user/vfio_user"
#define VU_TYPE_DIR	VU_PARENT "/mdev_supported_types/vfio_user-pci"
#define VU_MDEV_DIR	"/sys/bus/mdev/devices"
#define VU_UUID_LEN	36

/* Writes @val to @path; returns 0 or -errno of the write. */
int vu_sysfs_write(const char *path, const char *val);
/* Reads @path into @buf (NUL-terminated, trailing newline cut). */
int vu_sysfs_read(const char *path, char *buf, size_t len);
/* Reads an unsigned decimal attribute. */
int vu_sysfs_read_ul(const char *path, unsigned long *val);

/* Random version-4 UUID string in @uuid (VU_UUID_LEN + 1 bytes). */
void vu_uuid_gen(char *uuid);

/* Creates/removes an mdev of type vfio_user-pci; -errno of the write. */
int vu_mdev_create(const char *uuid);
int vu_mdev_remove(const char *uuid);
bool vu_mdev_exists(const char *uuid);
/* Reads /sys/bus/mdev/devices/UUID/vfio_user/@attr. */
int vu_mdev_attr_read(const char *uuid, const char *attr, char *buf, size_t len);
int vu_mdev_attr_write(const char *uuid, const char *attr, const char *val);
/*
 * One counter of the device's debugfs stats file
 * (VU_STATS_DIR/UUID/stats, "name value" lines); ~0ULL if the file or the
 * counter is absent (debugfs not mounted, or a module without it).
 */
#define VU_STATS_DIR	"/sys/kernel/debug/vfio_user_mdev"
unsigned long long vu_mdev_stat(const char *uuid, const char *name);
/* Whether the device has its stats file; mounts debugfs if need be. */
bool vu_have_stats(const char *uuid);
/* IOMMU group number of the mdev, or -errno. */
int vu_mdev_group(const char *uuid);

/*
 * The consumer's path to the device, chosen by $VU_VFIO_BACKEND:
 *   container (default)  /dev/vfio/GROUP in a type1 container, the legacy path
 *   iommufd              the device cdev /dev/vfio/devices/vfioN bound to
 *                        /dev/iommu, attached to an IOAS (the module's
 *                        iommufd emulated ops); needs CONFIG_VFIO_DEVICE_CDEV
 */
bool vu_iommufd(void);
const char *vu_backend_name(void);

/*
 * Opens the device for a consumer. Container backend: /dev/vfio/GROUP, a
 * container with the type1 IOMMU, and the device fd from the group.
 * iommufd backend: /dev/iommu with a fresh IOAS as *@container (*@group is
 * -1) and the bound, attached device cdev. On success the device fd is
 * returned; on failure every fd is closed and -errno returned.
 */
int vu_vfio_open(const char *uuid, int *container, int *group);
/* Another device fd for an open consumer (group, or cdev bound to iommufd). */
int vu_vfio_device_fd(const char *uuid, int container, int group);
/* /dev/vfio/devices/vfioN of the mdev in @path; -ENOENT without a cdev. */
int vu_cdev_path(const char *uuid, char *path, size_t len);
/*
 * Maps/unmaps consumer memory for device DMA in @container (a type1
 * container or an iommufd, per backend); @flags are VFIO_DMA_MAP_FLAG_READ/
 * _WRITE. Returns 0 or -errno.
 */
int vu_dma_map(int container, void *vaddr, uint64_t iova, uint64_t size,
	       uint32_t flags);
int vu_dma_unmap(int container, uint64_t iova, uint64_t size);

/*
 * Exactly @len bytes at @off of region @index of device @fd (pread/pwrite
 * at the region's offset). Returns 0 or -errno (-EIO for a short access).
 */
int vu_region_read(int fd, unsigned int index, uint64_t off, void *buf,
		   size_t len);
int vu_region_write(int fd, unsigned int index, uint64_t off,
		    const void *buf, size_t len);
/*
 * One VFIO_DEVICE_FEATURE on device @fd with @len bytes of @data (at most
 * 48), copied in and back out. Returns 0 or -errno (-E2BIG for a longer
 * @data).
 */
int vu_device_feature(int fd, uint32_t flags, void *data, size_t len);

/*
 * A fixture's teardown: closes the device, group and container fds (any may
 * be -1; each is set to -1) and removes the mdev if it still exists.
 */
void vu_consumer_teardown(const char *uuid, int *fd, int *group,
			  int *container);

/* Module handling: path of vfio_user_mdev.ko from $VFIO_USER_MDEV_KO or $VM_MODULE. */
const char *vu_module_path(void);
bool vu_module_loaded(void);
int vu_module_load(void);
/* Loads the module with parameters, e.g. "max_devices=2". */
int vu_module_load_params(const char *params);
int vu_module_unload(void);

/*
 * A vfio-user server process for a test: started from build/tools with
 * --socket PATH (a fresh path under /tmp) and extra arguments; the start
 * helper returns once the socket exists.
 */
struct vu_server {
	int pid;
	char socket[108];
	char prog[256];
	const char *const *args;
};

/*
 * Path of a server program: $VFIO_USER_TOOLS/NAME, else NAME beside the
 * test (kselftest layout), else the build tree's build/tools/vfio-user/NAME.
 */
const char *vu_tool_path(const char *name, char *buf, size_t len);
int vu_server_start(struct vu_server *srv, const char *name,
		    const char *const *args);
/* The same with the program's path (e.g. a helper next to the test). */
int vu_server_start_prog(struct vu_server *srv, const char *prog,
			 const char *const *args);
/* Starts the same server again on the same socket path. */
int vu_server_restart(struct vu_server *srv);
/* Sends @sig and, for SIGTERM/SIGKILL, reaps the process. */
int vu_server_signal(struct vu_server *srv, int sig);
void vu_server_stop(struct vu_server *srv);

/* Attaches @uuid to @srv; waits nothing beyond the write itself. */
int vu_mdev_attach(const char *uuid, const struct vu_server *srv);
/* Creates an mdev, attaches it, opens it: returns the device fd or -errno. */
int vu_open_attached(const char *uuid, const struct vu_server *srv,
		     int *container, int *group);

double vu_now(void);

/*
 * Kernel log: vu_kmsg_open() opens /dev/kmsg at its end (-errno if it
 * cannot); vu_kmsg_has() says whether a vfio_user record logged after that
 * mark contains one of "a|b|c" (true when @fd < 0: nothing to check).
 */
int vu_kmsg_open(void);
bool vu_kmsg_has(int fd, const char *alts);
/*
 * Whether any kernel record logged after the mark (whoever logged it: a
 * WARNING's first line names no module) contains one of "a|b|c"; the
 * first such record is copied to @line. False when @fd < 0.
 */
bool vu_kmsg_any(int fd, const char *alts, char *line, size_t len);

/*
 * Pages pinned (FOLL_PIN) system-wide and not yet released, from
 * /proc/vmstat; -errno if the kernel does not count them.
 */
long vu_pinned_pages(void);

#endif
