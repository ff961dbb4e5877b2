/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * vfio-user-sample: back ends (device models) behind one ops struct.
 */
#ifndef __VFIO_USER_SAMPLE_H
#define __VFIO_USER_SAMPLE_H

#include <stdbool.h>
#include <stdint.h>

#include "vfio-user-server.h"

/* Test PCI IDs of the samples (not assigned by the PCI-SIG). */
#define SAMPLE_VENDOR_ID	0x4e58
#define SAMPLE_DMA_DEVICE_ID	0x0001
#define SAMPLE_NULL_DEVICE_ID	0x0002
#define SAMPLE_CLASS_CODE	0xff0000	/* unassigned class */

/* Options common to all back ends, from the command line. */
struct sample_opts {
	const char *socket;
	uint64_t bar_size;	/* null: size of the large BAR2 */
	bool mmap;		/* null: offer BAR4 for mmap (sparse) */
	bool verbose;
};

/*
 * struct sample_backend - one device model.
 * @name: --device value
 * @help: one paragraph for --help (register layout)
 * @vendor_id: PCI vendor ID
 * @device_id: PCI device ID
 * @setup: describe the device on @dev (after vus_dev__setup_pci());
 *	return 0 or -errno
 * @ops: callbacks passed to vus_dev__new(); connect/disconnect are
 *	wrapped by the main program for logging
 * @priv: the back end's state, passed as callback priv
 */
struct sample_backend {
	const char *name;
	const char *help;
	uint16_t vendor_id;
	uint16_t device_id;
	int (*setup)(struct vus_dev *dev, const struct sample_opts *o,
		     void *priv);
	void (*reset)(void *priv);
	void *priv;
};

extern struct sample_backend sample_dma_backend;
extern struct sample_backend sample_null_backend;

void sample_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern bool sample_verbose;

/* Raise vector 0 of the best enabled interrupt: MSI-X, MSI, INTx. */
int sample_raise_irq(struct vus_dev *dev, unsigned int msix_vector);

#endif /* __VFIO_USER_SAMPLE_H */
