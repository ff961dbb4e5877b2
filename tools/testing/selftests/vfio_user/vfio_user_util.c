// SPDX-License-Identifier: GPL-2.0-only
/*
 * Helpers shared by the vfio_user selftests.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <dirent.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>

#include "vfio_user_util.h"

int vu_sysfs_write(const char *path, const char *val)
{
	size_t len = strlen(val);
	ssize_t n;
	int fd, ret = 0;

	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = write(fd, val, len);
	if (n < 0)
		ret = -errno;
	else if ((size_t)n != len)
		ret = -EIO;
	close(fd);
	return ret;
}

int vu_sysfs_read(const char *path, char *buf, size_t len)
{
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	if (n < 0) {
		n = -errno;
		close(fd);
		return n;
	}
	close(fd);
	buf[n] = '\0';
	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = '\0';
	return 0;
}

int vu_sysfs_read_ul(const char *path, unsigned long *val)
{
	char buf[64], *end;
	int ret;

	ret = vu_sysfs_read(path, buf, sizeof(buf));
	if (ret)
		return ret;
	errno = 0;
	*val = strtoul(buf, &end, 10);
	if (errno || end == buf || *end)
		return -EINVAL;
	return 0;
}

void vu_uuid_gen(char *uuid)
{
	unsigned char b[16];
	size_t got = 0;

	while (got < sizeof(b)) {
		ssize_t n = getrandom(b + got, sizeof(b) - got, 0);

		if (n > 0)
			got += n;
	}
	b[6] = (b[6] & 0x0f) | 0x40;
	b[8] = (b[8] & 0x3f) | 0x80;
	snprintf(uuid, VU_UUID_LEN + 1,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
		 b[10], b[11], b[12], b[13], b[14], b[15]);
}

int vu_mdev_create(const char *uuid)
{
	return vu_sysfs_write(VU_TYPE_DIR "/create", uuid);
}

int vu_mdev_remove(const char *uuid)
{
	char path[256];

	snprintf(path, sizeof(path), VU_MDEV_DIR "/%s/remove", uuid);
	return vu_sysfs_write(path, "1");
}

bool vu_mdev_exists(const char *uuid)
{
	char path[256];

	snprintf(path, sizeof(path), VU_MDEV_DIR "/%s", uuid);
	return access(path, F_OK) == 0;
}

int vu_mdev_attr_read(const char *uuid, const char *attr, char *buf, size_t len)
{
	char path[256];

	snprintf(path, sizeof(path), VU_MDEV_DIR "/%s/vfio_user/%s", uuid, attr);
	return vu_sysfs_read(path, buf, len);
}

int vu_mdev_attr_write(const char *uuid, const char *attr, const char *val)
{
	char path[256];

	snprintf(path, sizeof(path), VU_MDEV_DIR "/%s/vfio_user/%s", uuid, attr);
	return vu_sysfs_write(path, val);
}

unsigned long long vu_mdev_stat(const char *uuid, const char *name)
{
	unsigned long long v, found = ~0ULL;
	char path[256], key[128];
	FILE *f;

	snprintf(path, sizeof(path), VU_STATS_DIR "/%s/stats", uuid);
	f = fopen(path, "re");
	if (!f)
		return ~0ULL;
	while (fscanf(f, "%127s %llu", key, &v) == 2)
		if (!strcmp(key, name))
			found = v;
	fclose(f);
	return found;
}

bool vu_have_stats(const char *uuid)
{
	if (access(VU_STATS_DIR, F_OK))
		mount("nodev", "/sys/kernel/debug", "debugfs", 0, NULL);
	return vu_mdev_stat(uuid, "posted") != ~0ULL;
}

int vu_mdev_group(const char *uuid)
{
	char path[256], target[256], *base;
	ssize_t n;

	snprintf(path, sizeof(path), VU_MDEV_DIR "/%s/iommu_group", uuid);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return -errno;
	target[n] = '\0';
	base = strrchr(target, '/');
	return atoi(base ? base + 1 : target);
}

bool vu_iommufd(void)
{
	const char *b = getenv("VU_VFIO_BACKEND");

	return b && !strcmp(b, "iommufd");
}

const char *vu_backend_name(void)
{
	return vu_iommufd() ? "iommufd" : "container";
}

/* IOAS of each iommufd the helpers opened, by fd number. */
#define VU_MAX_FD	4096
static uint32_t vu_ioas[VU_MAX_FD];

static int vu_container_open(const char *uuid, int *container, int *group)
{
	struct vfio_group_status status = { .argsz = sizeof(status) };
	char path[64];
	int c, g, d, grp, ret;

	grp = vu_mdev_group(uuid);
	if (grp < 0)
		return grp;

	c = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
	if (c < 0)
		return -errno;
	snprintf(path, sizeof(path), "/dev/vfio/%d", grp);
	g = open(path, O_RDWR | O_CLOEXEC);
	if (g < 0) {
		ret = -errno;
		goto err_container;
	}
	if (ioctl(g, VFIO_GROUP_GET_STATUS, &status) ||
	    !(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
		ret = errno ? -errno : -ENODEV;
		goto err_group;
	}
	if (ioctl(g, VFIO_GROUP_SET_CONTAINER, &c) ||
	    ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)) {
		ret = -errno;
		goto err_group;
	}
	d = ioctl(g, VFIO_GROUP_GET_DEVICE_FD, uuid);
	if (d < 0) {
		ret = -errno;
		goto err_group;
	}
	*container = c;
	*group = g;
	return d;

err_group:
	close(g);
err_container:
	close(c);
	return ret;
}

int vu_cdev_path(const char *uuid, char *path, size_t len)
{
	char dir[128];
	struct dirent *de;
	DIR *d;
	int ret = -ENOENT;

	snprintf(dir, sizeof(dir), VU_MDEV_DIR "/%s/vfio-dev", uuid);
	d = opendir(dir);
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		if (!strncmp(de->d_name, "vfio", 4)) {
			snprintf(path, len, "/dev/vfio/devices/%s", de->d_name);
			ret = 0;
			break;
		}
	}
	closedir(d);
	return ret;
}

/* Opens the device cdev, binds it to @iommufd and attaches it to its IOAS. */
static int vu_cdev_open(const char *uuid, int iommufd)
{
	struct vfio_device_bind_iommufd bind = {
		.argsz = sizeof(bind), .iommufd = iommufd,
	};
	struct vfio_device_attach_iommufd_pt attach = {
		.argsz = sizeof(attach), .pt_id = vu_ioas[iommufd],
	};
	char path[64];
	int d, ret;

	ret = vu_cdev_path(uuid, path, sizeof(path));
	if (ret)
		return ret;
	d = open(path, O_RDWR | O_CLOEXEC);
	if (d < 0)
		return -errno;
	if (ioctl(d, VFIO_DEVICE_BIND_IOMMUFD, &bind) ||
	    ioctl(d, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach)) {
		ret = -errno;
		close(d);
		return ret;
	}
	return d;
}

static int vu_iommufd_open(const char *uuid, int *container, int *group)
{
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	int i, d, ret;

	i = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	if (i < 0)
		return -errno;
	if (i >= VU_MAX_FD) {
		close(i);
		return -EMFILE;
	}
	if (ioctl(i, IOMMU_IOAS_ALLOC, &alloc)) {
		ret = -errno;
		close(i);
		return ret;
	}
	vu_ioas[i] = alloc.out_ioas_id;
	d = vu_cdev_open(uuid, i);
	if (d < 0) {
		close(i);
		return d;
	}
	*container = i;
	*group = -1;
	return d;
}

int vu_vfio_open(const char *uuid, int *container, int *group)
{
	if (vu_iommufd())
		return vu_iommufd_open(uuid, container, group);
	return vu_container_open(uuid, container, group);
}

int vu_vfio_device_fd(const char *uuid, int container, int group)
{
	int d;

	if (vu_iommufd())
		return container >= 0 && container < VU_MAX_FD ?
		       vu_cdev_open(uuid, container) : -EBADF;
	d = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, uuid);
	return d < 0 ? -errno : d;
}

int vu_dma_map(int container, void *vaddr, uint64_t iova, uint64_t size,
	       uint32_t flags)
{
	if (vu_iommufd()) {
		struct iommu_ioas_map map = {
			.size = sizeof(map),
			.flags = IOMMU_IOAS_MAP_FIXED_IOVA,
			.user_va = (uintptr_t)vaddr, .length = size, .iova = iova,
		};

		if (container < 0 || container >= VU_MAX_FD)
			return -EBADF;
		map.ioas_id = vu_ioas[container];
		if (flags & VFIO_DMA_MAP_FLAG_READ)
			map.flags |= IOMMU_IOAS_MAP_READABLE;
		if (flags & VFIO_DMA_MAP_FLAG_WRITE)
			map.flags |= IOMMU_IOAS_MAP_WRITEABLE;
		return ioctl(container, IOMMU_IOAS_MAP, &map) ? -errno : 0;
	} else {
		struct vfio_iommu_type1_dma_map map = {
			.argsz = sizeof(map), .flags = flags,
			.vaddr = (uintptr_t)vaddr, .iova = iova, .size = size,
		};

		return ioctl(container, VFIO_IOMMU_MAP_DMA, &map) ? -errno : 0;
	}
}

int vu_dma_unmap(int container, uint64_t iova, uint64_t size)
{
	if (vu_iommufd()) {
		struct iommu_ioas_unmap unmap = {
			.size = sizeof(unmap), .iova = iova, .length = size,
		};

		if (container < 0 || container >= VU_MAX_FD)
			return -EBADF;
		unmap.ioas_id = vu_ioas[container];
		return ioctl(container, IOMMU_IOAS_UNMAP, &unmap) ? -errno : 0;
	} else {
		struct vfio_iommu_type1_dma_unmap unmap = {
			.argsz = sizeof(unmap), .iova = iova, .size = size,
		};

		return ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap) ? -errno : 0;
	}
}

const char *vu_module_path(void)
{
	const char *p = getenv("VFIO_USER_MDEV_KO");

	/* vm-run exports the module it loaded as VM_MODULE. */
	if (!p || !*p)
		p = getenv("VM_MODULE");
	return p && *p ? p : NULL;
}

bool vu_module_loaded(void)
{
	return access("/sys/module/vfio_user_mdev", F_OK) == 0;
}

int vu_module_load(void)
{
	return vu_module_load_params("");
}

int vu_module_load_params(const char *params)
{
	const char *path = vu_module_path();
	int fd, ret = 0;

	if (!path)
		return -ENOENT;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (syscall(SYS_finit_module, fd, params, 0))
		ret = -errno;
	close(fd);
	return ret;
}

int vu_module_unload(void)
{
	if (syscall(SYS_delete_module, "vfio_user_mdev", O_NONBLOCK))
		return -errno;
	return 0;
}

double vu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

const char *vu_tool_path(const char *name, char *buf, size_t len)
{
	const char *dir = getenv("VFIO_USER_TOOLS");
	char self[256];
	ssize_t n;

	if (dir && *dir) {
		snprintf(buf, len, "%s/%s", dir, name);
		return buf;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n < 0)
		return NULL;
	self[n] = '\0';
	*strrchr(self, '/') = '\0';
	/* a kselftest build or install: beside the test */
	snprintf(buf, len, "%s/%s", self, name);
	if (!access(buf, X_OK))
		return buf;
	/* build/selftests/vfio_user/X -> build/tools/vfio-user/NAME */
	snprintf(buf, len, "%s/../../tools/vfio-user/%s", self, name);
	return buf;
}

/*
 * Whether a socket is listening on @path: /proc/net/unix flags
 * __SO_ACCEPTCON (0x10000). The file exists from bind() on, but a connect
 * before listen() gets ECONNREFUSED.
 */
static bool vu_socket_listening(const char *path)
{
	char line[512], p[256];
	unsigned long flags;
	bool found = false;
	FILE *f;

	f = fopen("/proc/net/unix", "re");
	if (!f)
		return access(path, F_OK) == 0;
	while (!found && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%*s %*s %*s %lx %*s %*s %*s %255s", &flags, p) == 2)
			found = (flags & 0x10000) && !strcmp(p, path);
	}
	fclose(f);
	return found;
}

static int vu_server_spawn(struct vu_server *srv)
{
	const char *argv[32];
	int i = 0, j;
	double t0;
	pid_t pid;

	argv[i++] = srv->prog;
	argv[i++] = "--socket";
	argv[i++] = srv->socket;
	for (j = 0; srv->args && srv->args[j] && i < 31; j++)
		argv[i++] = srv->args[j];
	argv[i] = NULL;

	unlink(srv->socket);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (!pid) {
		int null = open("/dev/null", O_RDONLY);

		if (null >= 0)
			dup2(null, 0);
		/*
		 * Die with the test: a server left behind by a failed
		 * assertion would hold run_tests.sh's output pipe open.
		 */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		execv(srv->prog, (char *const *)argv);
		_exit(127);
	}
	srv->pid = pid;
	for (t0 = vu_now(); vu_now() - t0 < 20;) {
		int status;

		if (vu_socket_listening(srv->socket))
			return 0;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			fprintf(stderr, "%s exited before listening: status %#x\n",
				srv->prog, status);
			srv->pid = 0;
			return -ECHILD;
		}
		usleep(10000);
	}
	vu_server_signal(srv, SIGKILL);
	return -ETIMEDOUT;
}

int vu_server_start(struct vu_server *srv, const char *name,
		    const char *const *args)
{
	char prog[256];

	if (!vu_tool_path(name, prog, sizeof(prog)))
		return -ENOENT;
	return vu_server_start_prog(srv, prog, args);
}

int vu_server_start_prog(struct vu_server *srv, const char *prog,
			 const char *const *args)
{
	static int seq;

	memset(srv, 0, sizeof(*srv));
	snprintf(srv->prog, sizeof(srv->prog), "%s", prog);
	if (access(srv->prog, X_OK))
		return -errno;
	snprintf(srv->socket, sizeof(srv->socket), "/tmp/vu-%d-%d.sock",
		 getpid(), seq++);
	srv->args = args;
	return vu_server_spawn(srv);
}

int vu_server_restart(struct vu_server *srv)
{
	if (srv->pid)
		vu_server_signal(srv, SIGKILL);
	return vu_server_spawn(srv);
}

int vu_server_signal(struct vu_server *srv, int sig)
{
	int status;

	if (!srv->pid)
		return -ESRCH;
	if (kill(srv->pid, sig))
		return -errno;
	if (sig == SIGTERM || sig == SIGKILL) {
		waitpid(srv->pid, &status, 0);
		srv->pid = 0;
	}
	return 0;
}

void vu_server_stop(struct vu_server *srv)
{
	if (srv->pid) {
		kill(srv->pid, SIGCONT);
		vu_server_signal(srv, SIGKILL);
	}
	unlink(srv->socket);
}

int vu_mdev_attach(const char *uuid, const struct vu_server *srv)
{
	return vu_mdev_attr_write(uuid, "socket", srv->socket);
}

int vu_open_attached(const char *uuid, const struct vu_server *srv,
		     int *container, int *group)
{
	int ret;

	ret = vu_mdev_create(uuid);
	if (ret)
		return ret;
	ret = vu_mdev_attach(uuid, srv);
	if (ret)
		return ret;
	return vu_vfio_open(uuid, container, group);
}

void vu_consumer_teardown(const char *uuid, int *fd, int *group,
			  int *container)
{
	int *fds[] = { fd, group, container };
	unsigned int i;

	for (i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
	if (vu_mdev_exists(uuid))
		vu_mdev_remove(uuid);
}

long vu_pinned_pages(void)
{
	char line[128];
	long acq = -1, rel = -1, v;
	FILE *f;

	/* Fold the per-CPU deltas first: exact counts, not approximations. */
	vu_sysfs_write("/proc/sys/vm/stat_refresh", "1");
	f = fopen("/proc/vmstat", "re");

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "nr_foll_pin_acquired %ld", &v) == 1)
			acq = v;
		else if (sscanf(line, "nr_foll_pin_released %ld", &v) == 1)
			rel = v;
	}
	fclose(f);
	return acq < 0 || rel < 0 ? -ENOENT : acq - rel;
}

int vu_kmsg_open(void)
{
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	lseek(fd, 0, SEEK_END);
	return fd;
}

/*
 * Reads every kernel record since the last read and says whether one holds
 * any of the '|'-separated @alts; with @ours, only our module's records
 * count. The message of the first match goes to @line.
 */
static bool vu_kmsg_scan(int fd, const char *alts, bool ours, char *line,
			 size_t len)
{
	char rec[2048], want[256], *tok, *save, *msg;
	bool found = false, hit;
	ssize_t n;

	for (;;) {
		n = read(fd, rec, sizeof(rec) - 1);
		if (n < 0 && errno == EPIPE)
			continue;
		if (n <= 0)
			break;
		rec[n] = '\0';
		if (ours && !strstr(rec, "vfio_user"))
			continue;
		snprintf(want, sizeof(want), "%s", alts);
		hit = false;
		for (tok = strtok_r(want, "|", &save); tok && !hit;
		     tok = strtok_r(NULL, "|", &save))
			hit = strstr(rec, tok);
		if (!hit || found)
			continue;
		found = true;
		/* "prio,seq,usec,flags;message": the message */
		msg = strchr(rec, ';');
		msg = msg ? msg + 1 : rec;
		msg[strcspn(msg, "\n")] = '\0';
		if (line && len)
			snprintf(line, len, "%s", msg);
	}
	return found;
}

bool vu_kmsg_has(int fd, const char *alts)
{
	if (fd < 0)
		return true;	/* no /dev/kmsg: nothing to check */
	return vu_kmsg_scan(fd, alts, true, NULL, 0);
}

bool vu_kmsg_any(int fd, const char *alts, char *line, size_t len)
{
	return fd >= 0 && vu_kmsg_scan(fd, alts, false, line, len);
}

static int vu_region_rw(int fd, unsigned int index, uint64_t off, void *buf,
			size_t len, bool write)
{
	struct vfio_region_info info = { .argsz = sizeof(info), .index = index };
	ssize_t n;

	if (ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, &info))
		return -errno;
	n = write ? pwrite(fd, buf, len, info.offset + off) :
		    pread(fd, buf, len, info.offset + off);
	if (n < 0)
		return -errno;
	return n == (ssize_t)len ? 0 : -EIO;
}

int vu_region_read(int fd, unsigned int index, uint64_t off, void *buf,
		   size_t len)
{
	return vu_region_rw(fd, index, off, buf, len, false);
}

int vu_region_write(int fd, unsigned int index, uint64_t off,
		    const void *buf, size_t len)
{
	return vu_region_rw(fd, index, off, (void *)buf, len, true);
}

int vu_device_feature(int fd, uint32_t flags, void *data, size_t len)
{
	uint64_t buf[8] = { 0 };
	struct vfio_device_feature *f = (void *)buf;
	int ret;

	if (len > sizeof(buf) - sizeof(*f))
		return -E2BIG;
	f->argsz = sizeof(*f) + len;
	f->flags = flags;
	if (len)
		memcpy(f->data, data, len);
	ret = ioctl(fd, VFIO_DEVICE_FEATURE, f) ? -errno : 0;
	if (len)
		memcpy(data, f->data, len);
	return ret;
}
