// SPDX-License-Identifier: LGPL-2.1-or-later
/*
 * libvfio-user-server: VERSION negotiation (layer 4). Parses the client's
 * capabilities with json-c, answers with ours, records what was agreed in
 * &vus_dev.peer, and creates the twin socket when the client asked for it
 * and the device offers it (its client end goes with the reply). Calls
 * msg.c and util.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <json-c/json.h>

#include "vus-internal.h"

static int vus_json_u64(json_object *caps, const char *key, uint64_t min,
			uint64_t max, uint64_t *val)
{
	json_object *o;
	uint64_t v;

	if (!json_object_object_get_ex(caps, key, &o))
		return 0;
	if (!json_object_is_type(o, json_type_int))
		return -EINVAL;
	if (json_object_get_int64(o) < 0)
		return -EINVAL;
	/* above INT64_MAX json-c keeps an unsigned value */
	v = json_object_get_uint64(o);
	if (v < min || v > max)
		return -EINVAL;
	*val = v;
	return 0;
}

/*
 * Parse the client's capabilities into @peer; *@twin tells whether it asked
 * for the twin socket ("twin_socket": {"supported": true}).
 */
static int vus_parse_caps(struct vus_dev *dev, const char *json, size_t len,
			  struct vus_peer_caps *peer, bool *twin)
{
	struct json_tokener *tok;
	json_object *root, *caps, *o;
	uint64_t v;
	int err = -EINVAL;

	tok = json_tokener_new_ex(16);
	if (!tok)
		return -ENOMEM;
	root = json_tokener_parse_ex(tok, json, len);
	if (!root || json_tokener_get_error(tok) != json_tokener_success ||
	    (size_t)json_tokener_get_parse_end(tok) != len ||
	    !json_object_is_type(root, json_type_object))
		goto out;
	if (!json_object_object_get_ex(root, "capabilities", &caps)) {
		err = 0;
		goto out;
	}
	if (!json_object_is_type(caps, json_type_object))
		goto out;

	v = peer->max_msg_fds;
	if (vus_json_u64(caps, "max_msg_fds", 0, VUS_SCM_MAX_FD, &v))
		goto out;
	peer->max_msg_fds = v;
	v = peer->max_data_xfer_size;
	if (vus_json_u64(caps, "max_data_xfer_size", 1, UINT32_MAX, &v))
		goto out;
	peer->max_data_xfer_size = v;
	v = peer->max_dma_maps;
	if (vus_json_u64(caps, "max_dma_maps", 1, UINT32_MAX, &v))
		goto out;
	peer->max_dma_maps = v;
	v = peer->pgsizes;
	if (vus_json_u64(caps, "pgsizes", 1, UINT64_MAX, &v))
		goto out;
	peer->pgsizes = v;
	if (json_object_object_get_ex(caps, "twin_socket", &o)) {
		json_object *sup;

		if (!json_object_is_type(o, json_type_object))
			goto out;
		if (json_object_object_get_ex(o, "supported", &sup)) {
			if (!json_object_is_type(sup, json_type_boolean))
				goto out;
			*twin = json_object_get_boolean(sup);
		}
	}
	if (json_object_object_get_ex(caps, "write_multiple", &o) &&
	    !json_object_is_type(o, json_type_boolean))
		goto out;
	err = 0;
out:
	if (root)
		json_object_put(root);
	json_tokener_free(tok);
	(void)dev;
	return err;
}

int vus_handle_version(struct vus_dev *dev, struct vus_msg *m,
		       struct vus_reply *r)
{
	const uint8_t *p = m->buf + HDR;
	size_t len = m->size - HDR;
	struct vfio_user_version v;
	struct vus_peer_caps peer = {
		.max_msg_fds = VFIO_USER_DEF_MAX_MSG_FDS,
		.max_data_xfer_size = VFIO_USER_DEF_MAX_XFER_SIZE,
		.max_dma_maps = VFIO_USER_DEF_MAX_DMA_MAPS,
		.pgsizes = 4096,
	};
	json_object *root, *caps, *tw;
	bool twin_asked = false;
	int twin_fd = -1;
	const char *json;
	size_t jlen;
	int err;

	if (dev->negotiated || len < sizeof(v))
		return -EINVAL;
	memcpy(&v, p, sizeof(v));
	if (le16toh(v.major) != VFIO_USER_MAJOR) {
		/* spec: the server closes the connection */
		vus_send_error(dev, m, ENOTSUP);
		vus_conn_broken(dev, "unsupported major version", -ENOTSUP);
		m->flags |= VFIO_USER_F_NO_REPLY;
		return -ENOTSUP;
	}
	peer.major = VFIO_USER_MAJOR;
	peer.minor = VUS_MIN(le16toh(v.minor), VFIO_USER_MINOR);

	jlen = len - sizeof(v);
	if (jlen) {
		json = (const char *)p + sizeof(v);
		if (json[jlen - 1] != '\0' || strlen(json) != jlen - 1 ||
		    jlen - 1 > VUS_VERSION_JSON_MAX)
			return -EINVAL;
		if (jlen > 1) {
			err = vus_parse_caps(dev, json, jlen - 1, &peer,
					     &twin_asked);
			if (err)
				return err;
		}
	}

	/*
	 * The twin socket travels as fd 0 of our reply: only to a client that
	 * asked for it, takes fds and wants the reply. Without it (socketpair
	 * failed) the client is served on one socket, as if not offered.
	 */
	if (twin_asked && dev->opts.twin_socket && peer.max_msg_fds >= 1 &&
	    !(m->flags & VFIO_USER_F_NO_REPLY)) {
		err = vus_twin_open(dev, &twin_fd);
		if (err)
			pr_warn("cannot create the twin socket (%s), serving the client without it\n",
				strerror(-err));
	}

	err = -ENOMEM;
	root = json_object_new_object();
	caps = json_object_new_object();
	if (!root || !caps) {
		json_object_put(root);
		json_object_put(caps);
		goto err_twin;
	}
	json_object_object_add(root, "capabilities", caps);
	json_object_object_add(caps, "max_msg_fds",
			       json_object_new_int64(dev->max_fds));
	json_object_object_add(caps, "max_data_xfer_size",
			       json_object_new_int64(dev->max_xfer));
	json_object_object_add(caps, "max_dma_maps",
			       json_object_new_int64(dev->max_dma_maps));
	json_object_object_add(caps, "pgsizes",
			       json_object_new_uint64(dev->pgsizes));
	if (twin_fd >= 0) {
		tw = json_object_new_object();
		if (!tw)
			goto err_json;
		json_object_object_add(caps, "twin_socket", tw);
		json_object_object_add(tw, "supported",
				       json_object_new_boolean(true));
		json_object_object_add(tw, "fd_index", json_object_new_int(0));
	}
	json = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN);
	if (!json)
		goto err_json;
	jlen = strlen(json) + 1;
	r->buf = malloc(sizeof(v) + jlen);
	if (!r->buf)
		goto err_json;
	v.major = htole16(peer.major);
	v.minor = htole16(peer.minor);
	memcpy(r->buf, &v, sizeof(v));
	memcpy((char *)r->buf + sizeof(v), json, jlen);
	r->len = sizeof(v) + jlen;
	r->fd = twin_fd;
	r->close_fd = true;
	json_object_put(root);

	dev->peer = peer;
	dev->negotiated = true;
	pr_info("client connected: version %u.%u, max_data_xfer_size %u, max_msg_fds %u, twin socket %s\n",
		peer.major, peer.minor, peer.max_data_xfer_size,
		peer.max_msg_fds, twin_fd >= 0 ? "yes" : "no");
	if (dev->ops.connect)
		dev->ops.connect(dev, dev->priv);
	return 0;

err_json:
	json_object_put(root);
err_twin:
	if (twin_fd >= 0) {
		close(twin_fd);
		vus_twin_close(dev);
	}
	return err;
}
