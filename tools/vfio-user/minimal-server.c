// SPDX-License-Identifier: GPL-2.0-only
/*
 * A complete vfio-user server: a PCI device with one 4 KiB BAR whose
 * offset 0 reads 0x12345678 and whose offset 4 is a scratch register.
 *   cc -o minimal-server minimal-server.c \
 *	$(pkg-config --cflags --libs vfio-user-server)
 *   ./minimal-server /run/minimal.sock		(then attach a device to it)
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <vfio-user-server.h>

static uint32_t scratch;

static int bar0_access(struct vus_dev *dev, void *priv, uint64_t offset,
		       void *buf, size_t count, bool is_write)
{
	uint32_t v;

	if (count != 4 || (offset != 0 && offset != 4))
		return -EINVAL;			/* an error reply */
	if (is_write) {
		if (offset == 4)
			memcpy(&scratch, buf, 4);
		return 0;
	}
	v = offset == 0 ? 0x12345678 : scratch;
	memcpy(buf, &v, 4);
	return 0;
}

int main(int argc, char **argv)
{
	VUS_OPTS(vus_dev_opts, dopts);
	VUS_OPTS(vus_pci_opts, popts, .vendor_id = 0x4e58, .device_id = 0x00ff,
		 .class_code = 0xff0000);
	VUS_OPTS(vus_region_opts, bar0, .size = 4096, .access = bar0_access);
	struct vus_dev *dev;
	int err;

	if (argc != 2) {
		fprintf(stderr, "usage: %s SOCKET\n", argv[0]);
		return 2;
	}
	dev = vus_dev__new(&dopts);
	if (!dev)
		return 1;
	err = vus_dev__setup_pci(dev, &popts);
	if (!err)
		err = vus_dev__add_region(dev, VFIO_PCI_BAR0_REGION_INDEX, &bar0);
	if (!err)
		err = vus_dev__listen(dev, argv[1]);
	while (!err || err == -EINTR)	/* run: one client after another */
		err = vus_dev__run(dev);
	fprintf(stderr, "minimal-server: %s\n", strerror(-err));
	vus_dev__delete(dev);
	return 1;
}
