// SPDX-License-Identifier: GPL-2.0-only
/*
 * Loading and unloading vfio_user_mdev with mdevs present.
 *
 * Needs the module's path in $VFIO_USER_MDEV_KO (vm-run and run_tests.sh
 * set it). Every test leaves the module loaded.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "vfio_user_util.h"

#define RELOAD_CYCLES	10

FIXTURE(module) {
	int unused;
};

FIXTURE_SETUP(module)
{
	if (!vu_module_path())
		SKIP(return, "VFIO_USER_MDEV_KO is not set");
	if (!vu_module_loaded())
		ASSERT_EQ(0, vu_module_load());
}

FIXTURE_TEARDOWN(module)
{
	if (!vu_module_loaded())
		vu_module_load();
}

static void create_some(struct __test_metadata *_metadata,
			char uuids[][VU_UUID_LEN + 1], int n)
{
	int i;

	for (i = 0; i < n; i++) {
		vu_uuid_gen(uuids[i]);
		ASSERT_EQ(0, vu_mdev_create(uuids[i]));
	}
}

/* rmmod with unused mdevs present removes them and unloads cleanly. */
TEST_F(module, unload_with_devices)
{
	char uuids[4][VU_UUID_LEN + 1];
	int i;

	create_some(_metadata, uuids, 4);
	ASSERT_EQ(0, vu_module_unload());
	EXPECT_FALSE(vu_module_loaded());
	for (i = 0; i < 4; i++)
		EXPECT_FALSE(vu_mdev_exists(uuids[i]));
	EXPECT_NE(0, access(VU_PARENT, F_OK));

	ASSERT_EQ(0, vu_module_load());
	EXPECT_EQ(0, access(VU_TYPE_DIR "/create", F_OK));
}

/* A second load while loaded is refused; the loaded module keeps working. */
TEST_F(module, double_load_refused)
{
	char uuid[1][VU_UUID_LEN + 1];

	EXPECT_EQ(-EEXIST, vu_module_load());
	create_some(_metadata, uuid, 1);
	EXPECT_EQ(0, vu_mdev_remove(uuid[0]));
}

TEST_F_TIMEOUT(module, reload_cycles, 180)
{
	char uuids[2][VU_UUID_LEN + 1];
	unsigned long avail_first = 0, avail;
	int i;

	for (i = 0; i < RELOAD_CYCLES; i++) {
		ASSERT_EQ(0, vu_sysfs_read_ul(VU_TYPE_DIR "/available_instances",
					      &avail));
		if (!i)
			avail_first = avail;
		EXPECT_EQ(avail_first, avail);
		create_some(_metadata, uuids, 2);
		/* Remove one by hand, leave one for rmmod. */
		ASSERT_EQ(0, vu_mdev_remove(uuids[0]));
		ASSERT_EQ(0, vu_module_unload());
		ASSERT_FALSE(vu_mdev_exists(uuids[1]));
		ASSERT_EQ(0, vu_module_load());
	}
}

/* max_devices bounds available_instances; one more create gets -EUSERS. */
TEST_F(module, max_devices_param)
{
	char uuids[3][VU_UUID_LEN + 1];
	unsigned long avail;

	ASSERT_EQ(0, vu_module_unload());
	ASSERT_EQ(-EINVAL, vu_module_load_params("max_devices=0"));
	ASSERT_EQ(0, vu_module_load_params("max_devices=2"));
	ASSERT_EQ(0, vu_sysfs_read_ul(VU_TYPE_DIR "/available_instances", &avail));
	EXPECT_EQ(2UL, avail);
	create_some(_metadata, uuids, 2);
	vu_uuid_gen(uuids[2]);
	EXPECT_EQ(-EUSERS, vu_mdev_create(uuids[2]));
	ASSERT_EQ(0, vu_sysfs_read_ul(VU_TYPE_DIR "/available_instances", &avail));
	EXPECT_EQ(0UL, avail);
	ASSERT_EQ(0, vu_module_unload());
	ASSERT_EQ(0, vu_module_load());
}

TEST_HARNESS_MAIN
