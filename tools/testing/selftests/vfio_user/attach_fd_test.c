// SPDX-License-Identifier: GPL-2.0-only
/*
 * Attach by a passed fd: writing "fd:N" to vfio_user/socket attaches the
 * device to the connected AF_UNIX stream socket behind the writer's fd N
 * (a server in another mount namespace, a socket-activated one); anything
 * else is refused with an errno that says what it is not.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <linux/vfio.h>

#include "kselftest_harness.h"
#include "vfio_user_util.h"

#define SAMPLE		"vfio-user-sample"
#define BAR0		VFIO_PCI_BAR0_REGION_INDEX
#define NULL_MAGIC	0x314c554e

static const char *const null_args[] = { "--device", "null", NULL };

static int connect_to(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (s < 0)
		return -errno;
	strncpy(a.sun_path, path, sizeof(a.sun_path) - 1);
	if (connect(s, (struct sockaddr *)&a, sizeof(a))) {
		close(s);
		return -errno;
	}
	return s;
}

static int attach_fd(const char *uuid, int fd)
{
	char val[32];

	snprintf(val, sizeof(val), "fd:%d", fd);
	return vu_mdev_attr_write(uuid, "socket", val);
}

FIXTURE(attach_fd) {
	struct vu_server srv;
	char uuid[VU_UUID_LEN + 1];
	int container, group, fd;
};

FIXTURE_SETUP(attach_fd)
{
	self->fd = self->group = self->container = -1;
	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	ASSERT_EQ(0, vu_server_start(&self->srv, SAMPLE, null_args));
	vu_uuid_gen(self->uuid);
	ASSERT_EQ(0, vu_mdev_create(self->uuid));
}

FIXTURE_TEARDOWN(attach_fd)
{
	vu_consumer_teardown(self->uuid, &self->fd, &self->group,
			     &self->container);
	vu_server_stop(&self->srv);
}

/* A connected socket: the device attaches and works after we close ours. */
TEST_F(attach_fd, connected_socket)
{
	char buf[64], want[32];
	uint32_t magic = 0;
	int s;

	s = connect_to(self->srv.socket);
	ASSERT_LE(0, s);
	ASSERT_EQ(0, attach_fd(self->uuid, s));
	close(s);
	ASSERT_EQ(0, vu_mdev_attr_read(self->uuid, "state", buf, sizeof(buf)));
	EXPECT_EQ(0, strncmp(buf, "ready", 5)) TH_LOG("state %s", buf);
	snprintf(want, sizeof(want), "fd:%d", s);
	ASSERT_EQ(0, vu_mdev_attr_read(self->uuid, "socket", buf, sizeof(buf)));
	EXPECT_EQ(0, strncmp(buf, want, strlen(want))) TH_LOG("socket %s", buf);
	self->fd = vu_vfio_open(self->uuid, &self->container, &self->group);
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(0, vu_region_read(self->fd, BAR0, 0, &magic, 4));
	EXPECT_EQ(NULL_MAGIC, magic);
}

/* Not a socket, not AF_UNIX, not a stream, not connected, not open. */
TEST_F(attach_fd, refused)
{
	char buf[64];
	int sv[2], fd;

	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	ASSERT_LE(0, fd);
	EXPECT_EQ(-ENOTSOCK, attach_fd(self->uuid, fd));
	close(fd);

	/* (netlink: every kernel with sockets has it, not always AF_INET) */
	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	ASSERT_LE(0, fd);
	EXPECT_EQ(-EAFNOSUPPORT, attach_fd(self->uuid, fd));
	close(fd);

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv));
	EXPECT_EQ(-EPROTOTYPE, attach_fd(self->uuid, sv[0]));
	close(sv[0]);
	close(sv[1]);

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ASSERT_LE(0, fd);
	EXPECT_EQ(-ENOTCONN, attach_fd(self->uuid, fd));
	close(fd);

	/* A number with nothing behind it. */
	EXPECT_EQ(-EBADF, attach_fd(self->uuid, 987));
	EXPECT_EQ(-EINVAL, vu_mdev_attr_write(self->uuid, "socket", "fd:x"));

	ASSERT_EQ(0, vu_mdev_attr_read(self->uuid, "state", buf, sizeof(buf)));
	EXPECT_EQ(0, strncmp(buf, "detached", 8)) TH_LOG("state %s", buf);
}

/* A socket already attached to a device is not taken by another. */
TEST_F(attach_fd, busy)
{
	char other[VU_UUID_LEN + 1];
	int s;

	s = connect_to(self->srv.socket);
	ASSERT_LE(0, s);
	ASSERT_EQ(0, attach_fd(self->uuid, s));
	vu_uuid_gen(other);
	ASSERT_EQ(0, vu_mdev_create(other));
	EXPECT_EQ(-EBUSY, attach_fd(other, s));
	EXPECT_EQ(0, vu_mdev_remove(other));
	close(s);
}

/*
 * Without CAP_SYS_ADMIN: refused by the module (the attribute is opened
 * as root, then written after dropping privileges), whatever the fd.
 */
TEST_F(attach_fd, unprivileged)
{
	char path[256], val[32];
	int s, attr, status;
	pid_t pid;

	s = connect_to(self->srv.socket);
	ASSERT_LE(0, s);
	snprintf(path, sizeof(path), "/sys/bus/mdev/devices/%s/vfio_user/socket",
		 self->uuid);
	attr = open(path, O_WRONLY | O_CLOEXEC);
	ASSERT_LE(0, attr);
	snprintf(val, sizeof(val), "fd:%d", s);
	pid = fork();
	ASSERT_LE(0, pid);
	if (!pid) {
		if (setresgid(65534, 65534, 65534) ||
		    setresuid(65534, 65534, 65534))
			_exit(2);
		_exit(write(attr, val, strlen(val)) < 0 && errno == EPERM ? 0 : 1);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFEXITED(status) && !WEXITSTATUS(status));
	close(attr);
	close(s);
}

TEST_HARNESS_MAIN
