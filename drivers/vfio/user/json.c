// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio_user_mdev - the VERSION capabilities parser.
 *
 * The server's VERSION reply carries a NUL-terminated JSON object. This is
 * a small bounded parser: it walks one object, descends into
 * "capabilities" and reads the unsigned integers the module uses;
 * everything else is skipped, with nesting bounded. It has no state and
 * allocates nothing, so the same source is also built in userspace by the
 * unit tests in tools/testing/vfio_user_json/: include nothing here that
 * those tests do not stand in for (their include/linux/).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/errno.h>
#include <linux/limits.h>
#include <linux/minmax.h>
#include <linux/overflow.h>
#include <linux/string.h>
#include <linux/types.h>

#include "caps.h"

struct vfio_user_json {
	const char *p;
	const char *end;
};

/*
 * Most levels of objects and arrays, the top-level object included; the
 * parser recurses once per level.
 */
#define VFIO_USER_JSON_MAX_DEPTH	8

/* The capabilities the module reads, as bits of vfio_user_json_caps()'s seen. */
enum {
	VFIO_USER_JSON_MAX_MSG_FDS,
	VFIO_USER_JSON_MAX_XFER,
	VFIO_USER_JSON_MAX_DMA_MAPS,
	VFIO_USER_JSON_PGSIZES,
	VFIO_USER_JSON_NR_KEYS,
};

static const char * const vfio_user_json_keys[VFIO_USER_JSON_NR_KEYS] = {
	[VFIO_USER_JSON_MAX_MSG_FDS]	= "max_msg_fds",
	[VFIO_USER_JSON_MAX_XFER]	= "max_data_xfer_size",
	[VFIO_USER_JSON_MAX_DMA_MAPS]	= "max_dma_maps",
	[VFIO_USER_JSON_PGSIZES]	= "pgsizes",
};

static void vfio_user_json_ws(struct vfio_user_json *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' ||
				 *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static bool vfio_user_json_eat(struct vfio_user_json *j, char c)
{
	vfio_user_json_ws(j);
	if (j->p < j->end && *j->p == c) {
		j->p++;
		return true;
	}
	return false;
}

static bool vfio_user_json_at_digit(const struct vfio_user_json *j)
{
	return j->p < j->end && *j->p >= '0' && *j->p <= '9';
}

static bool vfio_user_json_isxdigit(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
	       (c >= 'A' && c <= 'F');
}

/* Length of the escape at j->p (a backslash); 0 if it is not a valid one. */
static size_t vfio_user_json_escape(const struct vfio_user_json *j)
{
	size_t left = j->end - j->p, i;

	if (left < 2)
		return 0;
	if (j->p[1] != 'u')
		return j->p[1] && strchr("\"\\/bfnrt", j->p[1]) ? 2 : 0;
	if (left < 6)
		return 0;
	for (i = 2; i < 6; i++)
		if (!vfio_user_json_isxdigit(j->p[i]))
			return 0;
	return 6;
}

/*
 * A string; copied into @out if given, truncated to @outlen - 1 bytes.
 * Escapes are checked, not decoded: they are copied with their backslash,
 * so a key written with an escape never matches one of ours.
 */
static int vfio_user_json_string(struct vfio_user_json *j, char *out,
				 size_t outlen)
{
	size_t n = 0, len;

	if (!vfio_user_json_eat(j, '"'))
		return -EINVAL;
	while (j->p < j->end && *j->p != '"') {
		if (*j->p == '\\')
			len = vfio_user_json_escape(j);
		else
			len = (unsigned char)*j->p >= 0x20;
		if (!len)
			return -EINVAL;
		for (; len; len--, j->p++)
			if (out && n + 1 < outlen)
				out[n++] = *j->p;
	}
	if (j->p >= j->end)
		return -EINVAL;
	j->p++;
	if (out)
		out[n] = '\0';
	return 0;
}

/* An unsigned JSON integer: no sign, fraction, exponent or leading zero. */
static int vfio_user_json_u64(struct vfio_user_json *j, u64 *val)
{
	const char *start;
	u64 v = 0;

	vfio_user_json_ws(j);
	start = j->p;
	while (vfio_user_json_at_digit(j)) {
		if (check_mul_overflow(v, 10ULL, &v) ||
		    check_add_overflow(v, (u64)(*j->p - '0'), &v))
			return -ERANGE;
		j->p++;
	}
	if (j->p == start || (*start == '0' && j->p - start > 1))
		return -EINVAL;
	if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
		return -EINVAL;
	*val = v;
	return 0;
}

/* Skips a run of digits; returns how many there were. */
static size_t vfio_user_json_digits(struct vfio_user_json *j)
{
	const char *start = j->p;

	while (vfio_user_json_at_digit(j))
		j->p++;
	return j->p - start;
}

/* Any JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int vfio_user_json_number(struct vfio_user_json *j)
{
	if (j->p < j->end && *j->p == '-')
		j->p++;
	if (j->p < j->end && *j->p == '0')
		j->p++;
	else if (!vfio_user_json_digits(j))
		return -EINVAL;
	if (j->p < j->end && *j->p == '.') {
		j->p++;
		if (!vfio_user_json_digits(j))
			return -EINVAL;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (!vfio_user_json_digits(j))
			return -EINVAL;
	}
	return 0;
}

static int vfio_user_json_literal(struct vfio_user_json *j, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n))
		return -EINVAL;
	j->p += n;
	return 0;
}

/* Skips one value inside a container that is @depth levels deep. */
static int vfio_user_json_skip(struct vfio_user_json *j, int depth)
{
	char close;
	int ret;

	vfio_user_json_ws(j);
	if (j->p >= j->end)
		return -EINVAL;
	switch (*j->p) {
	case '"':
		return vfio_user_json_string(j, NULL, 0);
	case '{':
	case '[':
		if (depth >= VFIO_USER_JSON_MAX_DEPTH)
			return -E2BIG;
		close = *j->p == '{' ? '}' : ']';
		j->p++;
		if (vfio_user_json_eat(j, close))
			return 0;
		do {
			if (close == '}' &&
			    (vfio_user_json_string(j, NULL, 0) ||
			     !vfio_user_json_eat(j, ':')))
				return -EINVAL;
			ret = vfio_user_json_skip(j, depth + 1);
			if (ret)
				return ret;
		} while (vfio_user_json_eat(j, ','));
		return vfio_user_json_eat(j, close) ? 0 : -EINVAL;
	case 't':
		return vfio_user_json_literal(j, "true");
	case 'f':
		return vfio_user_json_literal(j, "false");
	case 'n':
		return vfio_user_json_literal(j, "null");
	default:
		return vfio_user_json_number(j);
	}
}

/*
 * The members of a "twin_socket" object already checked as JSON (@s, @len
 * bytes): "supported": true and an "fd_index" integer below 256 offer the
 * twin socket. Anything else about it (another type, a repeated member)
 * only means no twin socket: an optional feature's shape never fails the
 * negotiation.
 */
static void vfio_user_json_twin(const char *s, size_t len,
				struct vfio_user_caps *caps)
{
	struct vfio_user_json j = { .p = s, .end = s + len };
	bool supported = false, have_index = false, bad = false;
	const char *value;
	u64 index = 0;
	char key[16];

	if (!vfio_user_json_eat(&j, '{') || vfio_user_json_eat(&j, '}'))
		return;
	do {
		if (vfio_user_json_string(&j, key, sizeof(key)) ||
		    !vfio_user_json_eat(&j, ':'))
			return;
		vfio_user_json_ws(&j);
		value = j.p;
		if (!strcmp(key, "supported") &&
		    !vfio_user_json_literal(&j, "true")) {
			supported = true;
			continue;
		}
		if (!strcmp(key, "fd_index") && !have_index &&
		    !vfio_user_json_u64(&j, &index) && index <= 255) {
			have_index = true;
			continue;
		}
		if (!strcmp(key, "supported") || !strcmp(key, "fd_index"))
			bad = true;
		j.p = value;
		if (vfio_user_json_skip(&j, 3))
			return;
	} while (vfio_user_json_eat(&j, ','));
	if (supported && have_index && !bad) {
		caps->twin_socket = true;
		caps->twin_fd_index = index;
	}
}

/* The "capabilities" object, at depth 2. Each key we read at most once. */
static int vfio_user_json_caps(struct vfio_user_json *j,
			       struct vfio_user_caps *caps)
{
	unsigned int seen = 0;
	bool twin = false;
	char key[32];
	int i, ret;
	u64 val;

	if (!vfio_user_json_eat(j, '{'))
		return -EINVAL;
	if (vfio_user_json_eat(j, '}'))
		return 0;
	do {
		if (vfio_user_json_string(j, key, sizeof(key)) ||
		    !vfio_user_json_eat(j, ':'))
			return -EINVAL;
		for (i = 0; i < VFIO_USER_JSON_NR_KEYS; i++)
			if (!strcmp(key, vfio_user_json_keys[i]))
				break;
		if (i == VFIO_USER_JSON_NR_KEYS) {
			const char *start;

			vfio_user_json_ws(j);
			start = j->p;
			ret = vfio_user_json_skip(j, 2);
			if (ret)
				return ret;
			if (!strcmp(key, "twin_socket")) {
				/* A repeated one offers nothing. */
				if (twin)
					caps->twin_socket = false;
				else
					vfio_user_json_twin(start, j->p - start,
							    caps);
				twin = true;
			}
			continue;
		}
		if (seen & (1U << i))
			return -EINVAL;
		seen |= 1U << i;
		ret = vfio_user_json_u64(j, &val);
		if (ret)
			return ret;
		switch (i) {
		case VFIO_USER_JSON_MAX_MSG_FDS:
			caps->max_msg_fds = min_t(u64, val, 253);
			break;
		case VFIO_USER_JSON_MAX_XFER:
			caps->max_xfer = min_t(u64, val, U32_MAX);
			break;
		case VFIO_USER_JSON_MAX_DMA_MAPS:
			caps->max_dma_maps = min_t(u64, val, U32_MAX);
			break;
		default:
			caps->pgsizes = val;
			break;
		}
	} while (vfio_user_json_eat(j, ','));
	return vfio_user_json_eat(j, '}') ? 0 : -EINVAL;
}

/**
 * vfio_user_parse_version_json() - read the server's VERSION capabilities
 * @s: the JSON text, without its terminating NUL
 * @len: length of @s
 * @caps: the fields the JSON names are overwritten, the others kept
 *
 * Accepts one JSON object (RFC 8259 grammar, whitespace around it) and
 * reads max_msg_fds (at most 253 kept), max_data_xfer_size and
 * max_dma_maps (at most U32_MAX kept) and pgsizes from its "capabilities"
 * member, and whether it offers the twin socket ("twin_socket":
 * {"supported": true, "fd_index": N}; any other shape of it offers
 * nothing, and never fails the parse); every other member is checked and
 * skipped. Those four must be
 * unsigned integers and, like "capabilities", appear at most once. A NUL
 * in @s is refused like any other stray byte: the caller checks the
 * message's NUL. Reads nothing outside @s; recursion is bounded by
 * %VFIO_USER_JSON_MAX_DEPTH. @caps may be partly written on failure.
 *
 * Context: any; does not sleep, allocate or print.
 * Return: 0; -EINVAL for malformed JSON or a malformed or repeated
 * capability, -ERANGE for a capability above U64_MAX, -E2BIG for nesting
 * deeper than %VFIO_USER_JSON_MAX_DEPTH.
 */
int vfio_user_parse_version_json(const char *s, size_t len,
				 struct vfio_user_caps *caps)
{
	struct vfio_user_json j = { .p = s, .end = s + len };
	bool have_caps = false;
	char key[32];
	int ret;

	if (!vfio_user_json_eat(&j, '{'))
		return -EINVAL;
	if (!vfio_user_json_eat(&j, '}')) {
		do {
			if (vfio_user_json_string(&j, key, sizeof(key)) ||
			    !vfio_user_json_eat(&j, ':'))
				return -EINVAL;
			if (!strcmp(key, "capabilities")) {
				if (have_caps)
					return -EINVAL;
				have_caps = true;
				ret = vfio_user_json_caps(&j, caps);
			} else {
				ret = vfio_user_json_skip(&j, 1);
			}
			if (ret)
				return ret;
		} while (vfio_user_json_eat(&j, ','));
		if (!vfio_user_json_eat(&j, '}'))
			return -EINVAL;
	}
	vfio_user_json_ws(&j);
	return j.p == j.end ? 0 : -EINVAL;
}
