// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio_user_mdev - VFIO mediated devices backed by vfio-user servers.
 *
 * The parent device, the mdev type, the mdev driver and module init/exit.
 * Each mdev becomes an emulated-IOMMU VFIO device whose operations are
 * forwarded over a UNIX socket to a vfio-user server (device.c).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/device.h>
#include <linux/mdev.h>
#include <linux/module.h>
#include <linux/vfio.h>
#include <linux/vfio_user.h>

#include "compat.h"
#include "vfio_user_mdev.h"

#define CREATE_TRACE_POINTS
#include "trace.h"

#define VFIO_USER_DRIVER_DESC	"VFIO mediated devices backed by vfio-user servers"
#define VFIO_USER_DEF_MAX_DEVICES	256

static unsigned int max_devices = VFIO_USER_DEF_MAX_DEVICES;
module_param(max_devices, uint, 0444);
MODULE_PARM_DESC(max_devices,
		 "Maximum number of vfio_user-pci mdevs (available_instances), default 256");

unsigned int vfio_user_max_xfer = VFIO_USER_DEF_MAX_XFER_SIZE;

/* Writable parameters: the core parses and range-checks them. */
static int vfio_user_max_xfer_set(const char *val,
				  const struct kernel_param *kp)
{
	return param_set_uint_minmax(val, kp, 4096, VFIO_USER_MAX_XFER_LIMIT);
}

static const struct kernel_param_ops vfio_user_max_xfer_ops = {
	.set = vfio_user_max_xfer_set,
	.get = param_get_uint,
};
module_param_cb(max_data_xfer_size, &vfio_user_max_xfer_ops,
		&vfio_user_max_xfer, 0644);
MODULE_PARM_DESC(max_data_xfer_size,
		 "Largest data payload per message we announce, 4096..16777216 bytes, default 1048576; read at each attach");

unsigned int vfio_user_poll_us;

static int vfio_user_poll_us_set(const char *val,
				 const struct kernel_param *kp)
{
	return param_set_uint_minmax(val, kp, 0, VFIO_USER_MAX_POLL_US);
}

static const struct kernel_param_ops vfio_user_poll_us_ops = {
	.set = vfio_user_poll_us_set,
	.get = param_get_uint,
};
module_param_cb(poll_us, &vfio_user_poll_us_ops, &vfio_user_poll_us, 0644);
MODULE_PARM_DESC(poll_us,
		 "Microseconds a consumer spins for its reply before it sleeps, 0..1000000, default 0 (never)");

/*
 * The parent: a device of class "vfio_user" that the mdevs hang off, so
 * the type directory reads vfio_user-pci. Registered in vfio_user_init(),
 * unregistered in vfio_user_exit(); static, its release does nothing.
 */
static struct vfio_user_parent {
	struct device dev;
	struct mdev_parent parent;
} vfio_user_parent;

static struct class vfio_user_class = {
	.name = VFIO_USER_NAME,
};

static struct mdev_type vfio_user_type_pci = {
	.sysfs_name = VFIO_USER_TYPE_PCI,
	.pretty_name = "vfio-user PCI device",
};

static struct mdev_type *vfio_user_types[] = {
	&vfio_user_type_pci,
};

static struct mdev_driver vfio_user_driver;

/* Serves DMA_READ/DMA_WRITE from servers; created in vfio_user_init(). */
struct workqueue_struct *vfio_user_wq;

/*
 * Lifecycle
 */

/**
 * vfio_user_probe() - create the VFIO device of a new mdev
 * @mdev: the mdev written to the type's create attribute
 *
 * The device starts detached: it can be opened only once a server is
 * attached.
 *
 * Context: process context, the mdev core's locks held. May sleep.
 * Return: 0 or a negative errno.
 */
static int vfio_user_probe(struct mdev_device *mdev)
{
	struct vfio_user_device *udev;
	int ret;

	udev = vfio_alloc_device(vfio_user_device, vdev, &mdev->dev,
				 &vfio_user_dev_ops);
	if (IS_ERR(udev))
		return PTR_ERR(udev);

	udev->mdev = mdev;
	dev_set_drvdata(&mdev->dev, udev);
	/* (flags 0, no migration, until a server offers it) */
	udev->vdev.mig_ops = &vfio_user_mig_ops;
#if VFIO_USER_HAVE_DIRTY_LOG
	udev->vdev.log_ops = &vfio_user_log_ops;
#endif

	ret = vfio_user_stats_add(udev);
	if (ret)
		goto err_put;
	ret = vfio_register_emulated_iommu_dev(&udev->vdev);
	if (ret)
		goto err_stats;
	ret = sysfs_create_groups(&mdev->dev.kobj, vfio_user_dev_groups);
	if (ret)
		goto err_unregister;
	return 0;

err_unregister:
	vfio_unregister_group_dev(&udev->vdev);
err_stats:
	vfio_user_stats_remove(udev);
err_put:
	vfio_put_device(&udev->vdev);
	return ret;
}

/**
 * vfio_user_remove() - remove the VFIO device of an mdev
 * @mdev: the mdev being removed
 *
 * Context: process context. Aborts an attach in progress, then blocks
 * until the consumer closes the device; the VFIO core calls the request
 * op meanwhile (every 10 s). Then drops the server connection.
 */
static void vfio_user_remove(struct mdev_device *mdev)
{
	struct vfio_user_device *udev = dev_get_drvdata(&mdev->dev);

	/* An attach in progress ends before anything waits for it. */
	vfio_user_abort_attach(udev, true);
	sysfs_remove_groups(&mdev->dev.kobj, vfio_user_dev_groups);
	vfio_unregister_group_dev(&udev->vdev);
	vfio_user_detach(udev, true);
	vfio_user_stats_remove(udev);
	vfio_put_device(&udev->vdev);
}

static ssize_t vfio_user_show_description(struct mdev_type *mtype, char *buf)
{
	return sysfs_emit(buf,
			  "PCI device emulated by a vfio-user server; attach it through its socket attribute\n");
}

static struct mdev_driver vfio_user_driver = {
	.device_api = VFIO_DEVICE_API_PCI_STRING,
	.driver = {
		.name = VFIO_USER_NAME,
		.owner = THIS_MODULE,
		.mod_name = KBUILD_MODNAME,
	},
	.probe = vfio_user_probe,
	.remove = vfio_user_remove,
	.show_description = vfio_user_show_description,
};

static void vfio_user_parent_release(struct device *dev)
{
}

static int __init vfio_user_init(void)
{
	int ret;

	BUILD_BUG_ON(sizeof(struct vfio_user_hdr) != VFIO_USER_HDR_SIZE);
	BUILD_BUG_ON(sizeof(struct vfio_user_version) != 4);
	BUILD_BUG_ON(sizeof(struct vfio_user_dma_map) != 32);
	BUILD_BUG_ON(sizeof(struct vfio_user_dma_unmap) != 24);
	BUILD_BUG_ON(sizeof(struct vfio_user_device_info) != 16);
	BUILD_BUG_ON(sizeof(struct vfio_user_region_info) != 32);
	BUILD_BUG_ON(sizeof(struct vfio_user_cap_header) != 8);
	BUILD_BUG_ON(sizeof(struct vfio_user_region_info_cap_sparse_mmap) != 16);
	BUILD_BUG_ON(sizeof(struct vfio_user_region_info_cap_type) != 16);
	BUILD_BUG_ON(sizeof(struct vfio_user_irq_info) != 16);
	BUILD_BUG_ON(sizeof(struct vfio_user_irq_set) != 20);
	BUILD_BUG_ON(sizeof(struct vfio_user_region_access) != 16);
	BUILD_BUG_ON(sizeof(struct vfio_user_dma_access) != 16);
	BUILD_BUG_ON(sizeof(struct vfio_user_device_feature) != 8);
	BUILD_BUG_ON(sizeof(struct vfio_user_device_feature_migration) != 8);
	BUILD_BUG_ON(sizeof(struct vfio_user_device_feature_mig_state) != 8);
	BUILD_BUG_ON(sizeof(struct vfio_user_device_feature_mig_data_size) != 8);
	BUILD_BUG_ON(sizeof(struct vfio_user_mig_data) != 8);

	if (!max_devices) {
		pr_err("max_devices must be at least 1\n");
		return -EINVAL;
	}
	vfio_user_driver.max_instances = max_devices;

	vfio_user_wq = alloc_workqueue("vfio_user", WQ_UNBOUND, 0);
	if (!vfio_user_wq)
		return -ENOMEM;

	ret = vfio_user_window_init();
	if (ret)
		goto err_wq;
	vfio_user_stats_init();

	ret = mdev_register_driver(&vfio_user_driver);
	if (ret)
		goto err_window;

	ret = class_register(&vfio_user_class);
	if (ret)
		goto err_driver;

	vfio_user_parent.dev.class = &vfio_user_class;
	vfio_user_parent.dev.release = vfio_user_parent_release;
	dev_set_name(&vfio_user_parent.dev, "%s", VFIO_USER_NAME);
	ret = device_register(&vfio_user_parent.dev);
	if (ret)
		goto err_put;

	ret = mdev_register_parent(&vfio_user_parent.parent,
				   &vfio_user_parent.dev, &vfio_user_driver,
				   vfio_user_types, ARRAY_SIZE(vfio_user_types));
	if (ret)
		goto err_device;
	return 0;

err_device:
	device_del(&vfio_user_parent.dev);
err_put:
	put_device(&vfio_user_parent.dev);
	class_unregister(&vfio_user_class);
err_driver:
	mdev_unregister_driver(&vfio_user_driver);
err_window:
	vfio_user_stats_exit();
	vfio_user_window_exit();
err_wq:
	destroy_workqueue(vfio_user_wq);
	return ret;
}

static void __exit vfio_user_exit(void)
{
	mdev_unregister_parent(&vfio_user_parent.parent);
	device_unregister(&vfio_user_parent.dev);
	class_unregister(&vfio_user_class);
	mdev_unregister_driver(&vfio_user_driver);
	vfio_user_stats_exit();
	vfio_user_window_exit();
	destroy_workqueue(vfio_user_wq);
}

module_init(vfio_user_init);
module_exit(vfio_user_exit);

MODULE_LICENSE("GPL");
MODULE_VERSION("0.1.0");
MODULE_DESCRIPTION(VFIO_USER_DRIVER_DESC);
MODULE_AUTHOR("vfio-user-mdev developers");
