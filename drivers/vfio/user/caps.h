/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * vfio_user_mdev - what VERSION negotiates, and the parser of the server's
 * VERSION capabilities (json.c).
 *
 * Kept apart from vfio_user_mdev.h because json.c includes only this and
 * a few basic kernel headers: the same json.c is built in userspace by the
 * unit tests in tools/testing/vfio_user_json/, whose stand-ins for those
 * kernel headers sit first on the include path.
 */
#ifndef _VFIO_USER_CAPS_H
#define _VFIO_USER_CAPS_H

#include <linux/types.h>

/**
 * struct vfio_user_caps - what VERSION negotiated
 * @minor: protocol minor version in use
 * @max_msg_fds: most fds the server takes in one message
 * @max_xfer: largest data payload of one message, both ways
 * @max_dma_maps: most DMA regions the server keeps
 * @pgsizes: page sizes the server supports for DMA
 * @twin_socket: the server offers the twin socket (server commands on a
 *	second socket it passes with the VERSION reply)
 * @twin_fd_index: which fd of the VERSION reply that socket is
 */
struct vfio_user_caps {
	u16 minor;
	u32 max_msg_fds;
	u32 max_xfer;
	u32 max_dma_maps;
	u64 pgsizes;
	bool twin_socket;
	u32 twin_fd_index;
};

int vfio_user_parse_version_json(const char *s, size_t len,
				 struct vfio_user_caps *caps);

#endif /* _VFIO_USER_CAPS_H */
