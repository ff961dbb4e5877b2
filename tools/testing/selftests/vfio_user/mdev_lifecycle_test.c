// SPDX-License-Identifier: GPL-2.0-only
/*
 * mdev lifecycle of vfio_user_mdev: the type directory, create and remove,
 * bad input to create, and a device that has no server yet.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include "kselftest_harness.h"
#include "vfio_user_util.h"

#define MANY_DEVICES	64

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned long available(struct __test_metadata *_metadata)
{
	unsigned long n = 0;

	EXPECT_EQ(0, vu_sysfs_read_ul(VU_TYPE_DIR "/available_instances", &n));
	return n;
}

FIXTURE(mdev) {
	char uuids[MANY_DEVICES][VU_UUID_LEN + 1];
	int nr;
};

FIXTURE_SETUP(mdev)
{
	if (access(VU_TYPE_DIR, F_OK))
		SKIP(return, "vfio_user_mdev is not loaded");
	self->nr = 0;
}

FIXTURE_TEARDOWN(mdev)
{
	int i;

	for (i = self->nr - 1; i >= 0; i--)
		if (vu_mdev_exists(self->uuids[i]))
			vu_mdev_remove(self->uuids[i]);
}

static const char *new_uuid(FIXTURE_DATA(mdev) *self)
{
	char *uuid = self->uuids[self->nr++];

	vu_uuid_gen(uuid);
	return uuid;
}

TEST_F(mdev, type_attributes)
{
	char buf[256];

	ASSERT_EQ(0, vu_sysfs_read(VU_TYPE_DIR "/device_api", buf, sizeof(buf)));
	EXPECT_STREQ("vfio-pci", buf);
	ASSERT_EQ(0, vu_sysfs_read(VU_TYPE_DIR "/name", buf, sizeof(buf)));
	EXPECT_STREQ("vfio-user PCI device", buf);
	ASSERT_EQ(0, vu_sysfs_read(VU_TYPE_DIR "/description", buf, sizeof(buf)));
	EXPECT_NE(NULL, strstr(buf, "vfio-user"));
	EXPECT_LE((unsigned long)MANY_DEVICES, available(_metadata));
}

TEST_F(mdev, create_remove_one)
{
	unsigned long before = available(_metadata);
	const char *uuid = new_uuid(self);
	char buf[64], path[64];
	struct stat st;
	int group;

	ASSERT_EQ(0, vu_mdev_create(uuid));
	ASSERT_TRUE(vu_mdev_exists(uuid));
	EXPECT_EQ(before - 1, available(_metadata));

	ASSERT_EQ(0, vu_mdev_attr_read(uuid, "state", buf, sizeof(buf)));
	EXPECT_STREQ("detached", buf);

	group = vu_mdev_group(uuid);
	ASSERT_LE(0, group);
	snprintf(path, sizeof(path), "/dev/vfio/%d", group);
	ASSERT_EQ(0, stat(path, &st));
	EXPECT_TRUE(S_ISCHR(st.st_mode));

	ASSERT_EQ(0, vu_mdev_remove(uuid));
	EXPECT_FALSE(vu_mdev_exists(uuid));
	EXPECT_NE(0, access(path, F_OK));
	EXPECT_EQ(before, available(_metadata));
}

TEST_F_TIMEOUT(mdev, create_remove_many, 120)
{
	unsigned long before = available(_metadata);
	int groups[MANY_DEVICES];
	int i, j;

	for (i = 0; i < MANY_DEVICES; i++) {
		const char *uuid = new_uuid(self);

		ASSERT_EQ(0, vu_mdev_create(uuid));
		groups[i] = vu_mdev_group(uuid);
		ASSERT_LE(0, groups[i]);
	}
	EXPECT_EQ(before - MANY_DEVICES, available(_metadata));
	for (i = 0; i < MANY_DEVICES; i++)
		for (j = 0; j < i; j++)
			ASSERT_NE(groups[i], groups[j]);

	for (i = 0; i < MANY_DEVICES; i++) {
		ASSERT_EQ(0, vu_mdev_remove(self->uuids[i]));
		ASSERT_FALSE(vu_mdev_exists(self->uuids[i]));
	}
	EXPECT_EQ(before, available(_metadata));
}

TEST_F(mdev, create_rejects_bad_uuid)
{
	unsigned long before = available(_metadata);

	EXPECT_EQ(-EINVAL, vu_mdev_create("not-a-uuid"));
	EXPECT_EQ(-EINVAL, vu_mdev_create("0"));
	EXPECT_EQ(-EINVAL, vu_mdev_create("zzzzzzzz-1111-4222-8333-444444444444"));
	EXPECT_EQ(-EINVAL,
		  vu_mdev_create("11111111-1111-4222-8333-4444444444445555"));
	EXPECT_EQ(before, available(_metadata));
}

TEST_F(mdev, create_rejects_duplicate)
{
	unsigned long before = available(_metadata);
	const char *uuid = new_uuid(self);

	ASSERT_EQ(0, vu_mdev_create(uuid));
	EXPECT_EQ(-EEXIST, vu_mdev_create(uuid));
	EXPECT_EQ(before - 1, available(_metadata));
	EXPECT_EQ(0, vu_mdev_remove(uuid));
	EXPECT_EQ(before, available(_metadata));
}

TEST_F(mdev, remove_twice)
{
	const char *uuid = new_uuid(self);

	ASSERT_EQ(0, vu_mdev_create(uuid));
	ASSERT_EQ(0, vu_mdev_remove(uuid));
	/* The directory, and so the remove attribute, is gone. */
	EXPECT_EQ(-ENOENT, vu_mdev_remove(uuid));
}

/* The per-device attributes, top level and under vfio_user/ (the alias). */
static const char * const dev_attrs[] = {
	"state", "socket", "timeout_ms", "posted_writes", "dma_window",
	"dma_window_chunk", "dma_window_pinned", "mmap_pages",
};

static int top_read(const char *uuid, const char *attr, char *buf, size_t len)
{
	char path[256];

	snprintf(path, sizeof(path), VU_MDEV_DIR "/%s/%s", uuid, attr);
	return vu_sysfs_read(path, buf, len);
}

static int top_write(const char *uuid, const char *attr, const char *val)
{
	char path[256];

	snprintf(path, sizeof(path), VU_MDEV_DIR "/%s/%s", uuid, attr);
	return vu_sysfs_write(path, val);
}

/*
 * Every attribute is at the top level of the device (where mdevctl and
 * libvirt name it) and under vfio_user/: one file, two names, same mode;
 * a write through either name is read back through the other. The mdev
 * core's own entries are still there.
 */
TEST_F(mdev, attributes_top_level_and_alias)
{
	static const char * const core[] = {
		"remove", "mdev_type", "iommu_group", "driver", "uevent",
	};
	const char *uuid = new_uuid(self);
	char top[160], alias[160], path[256];
	struct stat st_top, st_alias;
	unsigned int i;

	ASSERT_EQ(0, vu_mdev_create(uuid));
	for (i = 0; i < ARRAY_SIZE(dev_attrs); i++) {
		snprintf(path, sizeof(path), VU_MDEV_DIR "/%s/%s", uuid,
			 dev_attrs[i]);
		ASSERT_EQ(0, stat(path, &st_top)) TH_LOG("%s", path);
		snprintf(path, sizeof(path), VU_MDEV_DIR "/%s/vfio_user/%s",
			 uuid, dev_attrs[i]);
		ASSERT_EQ(0, stat(path, &st_alias)) TH_LOG("%s", path);
		EXPECT_TRUE(S_ISREG(st_top.st_mode));
		EXPECT_EQ(st_alias.st_mode, st_top.st_mode)
			TH_LOG("%s: mode %o, alias %o", dev_attrs[i],
			       st_top.st_mode, st_alias.st_mode);
		ASSERT_EQ(0, top_read(uuid, dev_attrs[i], top, sizeof(top)));
		ASSERT_EQ(0, vu_mdev_attr_read(uuid, dev_attrs[i], alias,
					       sizeof(alias)));
		EXPECT_STREQ(alias, top) TH_LOG("%s", dev_attrs[i]);
	}
	for (i = 0; i < ARRAY_SIZE(core); i++) {
		snprintf(path, sizeof(path), VU_MDEV_DIR "/%s/%s", uuid,
			 core[i]);
		EXPECT_EQ(0, access(path, F_OK)) TH_LOG("%s", path);
	}

	/* Written at the top level, read through the alias, and back. */
	ASSERT_EQ(0, top_write(uuid, "timeout_ms", "1234"));
	ASSERT_EQ(0, vu_mdev_attr_read(uuid, "timeout_ms", alias, sizeof(alias)));
	EXPECT_STREQ("1234", alias);
	ASSERT_EQ(0, vu_mdev_attr_write(uuid, "timeout_ms", "4321"));
	ASSERT_EQ(0, top_read(uuid, "timeout_ms", top, sizeof(top)));
	EXPECT_STREQ("4321", top);
	ASSERT_EQ(0, top_write(uuid, "dma_window", "4M"));
	ASSERT_EQ(0, vu_mdev_attr_read(uuid, "dma_window", alias, sizeof(alias)));
	EXPECT_STREQ("4194304", alias);
	ASSERT_EQ(0, vu_mdev_attr_write(uuid, "dma_window_chunk", "2M"));
	ASSERT_EQ(0, top_read(uuid, "dma_window_chunk", top, sizeof(top)));
	EXPECT_STREQ("2097152", top);
	/* Both names check the same way. */
	EXPECT_EQ(-EINVAL, top_write(uuid, "timeout_ms", "0"));
	EXPECT_EQ(-EINVAL, vu_mdev_attr_write(uuid, "timeout_ms", "0"));
	EXPECT_EQ(-ENOENT, top_write(uuid, "socket", "/tmp/vu-no-such.sock"));
	ASSERT_EQ(0, vu_mdev_attr_read(uuid, "state", alias, sizeof(alias)));
	EXPECT_STREQ("detached", alias);

	ASSERT_EQ(0, vu_mdev_remove(uuid));
	EXPECT_FALSE(vu_mdev_exists(uuid));
}

/* Opening a device with no server behind it fails at once, never blocks. */
TEST_F(mdev, open_before_attach_fails_fast)
{
	const char *uuid = new_uuid(self);
	int container, group, fd;
	double t0, dt;

	ASSERT_EQ(0, vu_mdev_create(uuid));
	t0 = now_s();
	fd = vu_vfio_open(uuid, &container, &group);
	dt = now_s() - t0;
	if (fd >= 0) {
		close(fd);
		close(group);
		close(container);
	}
	EXPECT_EQ(-ENOTCONN, fd);
	/* A bound far below any server timeout: no wait happened. */
	EXPECT_GT(5.0, dt);
}

/* Removing an mdev whose group a consumer holds (without the device). */
TEST_F(mdev, remove_with_group_open)
{
	const char *uuid = new_uuid(self);
	char path[64];
	int group, gfd;

	ASSERT_EQ(0, vu_mdev_create(uuid));
	group = vu_mdev_group(uuid);
	ASSERT_LE(0, group);
	snprintf(path, sizeof(path), "/dev/vfio/%d", group);
	gfd = open(path, O_RDWR);
	ASSERT_LE(0, gfd);
	EXPECT_EQ(0, vu_mdev_remove(uuid));
	EXPECT_FALSE(vu_mdev_exists(uuid));
	EXPECT_EQ(0, close(gfd));
}

TEST_HARNESS_MAIN
