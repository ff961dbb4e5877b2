// SPDX-License-Identifier: GPL-2.0-only
/*
 * Unit tests of the VERSION capabilities parser, drivers/vfio/user/json.c,
 * built in userspace from the kernel source against the stand-in headers in
 * include/linux/ (see the Makefile). TAP output, one line per case:
 *
 *   - fixed vectors: what libvfio-user, QEMU and this module send, and the
 *     ways a server can get it wrong, each with the exact result expected;
 *   - every proper prefix of every valid vector is refused;
 *   - mutations: inputs derived from the valid vectors (bit flips, byte and
 *     token insertions, deletions, span copies, splices), and random
 *     strings. Each is parsed from a heap buffer of exactly its length, so
 *     under -fsanitize=address a read past the end is caught. The result
 *     must be 0 or one of the parser's errnos, and it is checked against
 *     json-c (JSON_TOKENER_STRICT) where json-c can judge: we never accept
 *     what json-c refuses, and we accept, with the same values, what it
 *     accepts unless the input uses one of json-c's extensions or one of
 *     the constraints json-c cannot see (depth, repeated or escaped keys).
 *
 * Usage: json_test [-n MUTATIONS] [-s SEED]
 * Defaults: 100000 mutations, a fixed seed; the seed is printed.
 *        json_test -c DIR
 * writes each vector to a file in DIR (a seed corpus for json_fuzz) and
 * exits.
 */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>

#include "caps.h"
#include "kselftest.h"

/* json.c's VFIO_USER_JSON_MAX_DEPTH and its key buffer */
#define T_MAX_DEPTH	8
#define T_MAX_INPUT	4096	/* VFIO_USER_MAX_VERSION_JSON */

/* Which caps fields a vector sets; the others must keep T_UNSET's values. */
#define T_FDS		(1U << 0)
#define T_XFER		(1U << 1)
#define T_MAPS		(1U << 2)
#define T_PGS		(1U << 3)

static const struct vfio_user_caps t_unset = {
	.minor = 0x5a5a,
	.max_msg_fds = 0xa5a5a5a5,
	.max_xfer = 0xa5a5a5a5,
	.max_dma_maps = 0xa5a5a5a5,
	.pgsizes = 0xa5a5a5a5a5a5a5a5ULL,
};

struct t_vec {
	const char *name;
	const char *in;
	size_t len;		/* 0: strlen(in) */
	int ret;
	unsigned int set;	/* T_* fields written, when ret == 0 */
	struct vfio_user_caps want;
};

#define LIBVFIO_USER_REPLY						\
	"{ \"capabilities\": { \"max_msg_fds\": 8, \"max_data_xfer_size\": "	\
	"1048576, \"migration\": { \"pgsize\": 4096 }, \"twin_socket\": { "	\
	"\"supported\": true, \"fd_index\": 0 } } }"

static const struct t_vec t_vecs[] = {
	/* ---- valid ---- */
	{ "empty_object", "{}", 0, 0, 0 },
	{ "empty_object_whitespace", " \t\r\n{ \r\n\t}\n\t ", 0, 0, 0 },
	{ "empty_capabilities", "{\"capabilities\":{}}", 0, 0, 0 },
	{ "libvfio_user_reply", LIBVFIO_USER_REPLY, 0, 0, T_FDS | T_XFER,
	  { .max_msg_fds = 8, .max_xfer = 1048576 } },
	{ "libvfio_user_reply_compact",
	  "{\"capabilities\":{\"max_msg_fds\":8,\"max_data_xfer_size\":1048576,"
	  "\"migration\":{\"pgsize\":4096}}}",
	  0, 0, T_FDS | T_XFER, { .max_msg_fds = 8, .max_xfer = 1048576 } },
	{ "qemu_caps",
	  "{\"capabilities\": {\"migration\": {\"pgsize\": 4096, "
	  "\"max_bitmap_size\": 268435456}, \"max_msg_fds\": 16, "
	  "\"max_data_xfer_size\": 1048576, \"pgsizes\": 4096, "
	  "\"max_dma_maps\": 65535, \"write_multiple\": true}}",
	  0, 0, T_FDS | T_XFER | T_PGS | T_MAPS,
	  { .max_msg_fds = 16, .max_xfer = 1048576, .pgsizes = 4096,
	    .max_dma_maps = 65535 } },
	{ "our_request",
	  "{\"capabilities\":{\"max_msg_fds\":0,\"max_data_xfer_size\":1048576,"
	  "\"pgsizes\":4096}}",
	  0, 0, T_FDS | T_XFER | T_PGS,
	  { .max_msg_fds = 0, .max_xfer = 1048576, .pgsizes = 4096 } },
	{ "pretty_printed_crlf",
	  "{\r\n\t\"capabilities\" :\r\n\t{\r\n\t\t\"max_dma_maps\"\t:\t7 ,\r\n"
	  "\t\t\"pgsizes\" : 2097152\r\n\t}\r\n}\r\n",
	  0, 0, T_MAPS | T_PGS, { .max_dma_maps = 7, .pgsizes = 2097152 } },
	{ "unknown_keys_nested",
	  "{\"vendor\":{\"a\":[1,-2.5e+3,true,false,null,\"s\",[],{}],"
	  "\"b\":{\"c\":[[[]]]}},\"capabilities\":{\"x\":[{\"y\":null}],"
	  "\"max_dma_maps\":42,\"z\":{}},\"w\":\"v\"}",
	  0, 0, T_MAPS, { .max_dma_maps = 42 } },
	{ "twin_socket",
	  "{\"capabilities\":{\"twin_socket\":{\"supported\":true,"
	  "\"fd_index\":0},\"max_msg_fds\":1}}",
	  0, 0, T_FDS, { .max_msg_fds = 1 } },
	{ "known_keys_elsewhere_ignored",
	  "{\"max_msg_fds\":\"x\",\"capabilities\":{\"migration\":"
	  "{\"max_msg_fds\":-1,\"pgsizes\":1.5}},\"pgsizes\":[]}",
	  0, 0, 0 },
	{ "unknown_number_forms",
	  "{\"a\":[0,-0,0.5,-0.5,1e10,1E-5,-1.5e+300,123456789012345678901234]}",
	  0, 0, 0 },
	{ "clamped",
	  "{\"capabilities\":{\"max_msg_fds\":1000,\"max_data_xfer_size\":"
	  "4294967296,\"max_dma_maps\":18446744073709551615,\"pgsizes\":"
	  "18446744073709551615}}",
	  0, 0, T_FDS | T_XFER | T_MAPS | T_PGS,
	  { .max_msg_fds = 253, .max_xfer = UINT32_MAX,
	    .max_dma_maps = UINT32_MAX, .pgsizes = UINT64_MAX } },
	{ "zero_values",
	  "{\"capabilities\":{\"max_msg_fds\":0,\"max_data_xfer_size\":0}}",
	  0, 0, T_FDS | T_XFER, { .max_msg_fds = 0, .max_xfer = 0 } },
	{ "string_escapes",
	  "{\"k\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\":\"v\\u0041\","
	  "\"capabilities\":{\"pgsizes\":4096}}",
	  0, 0, T_PGS, { .pgsizes = 4096 } },
	{ "escaped_key_is_not_ours",
	  "{\"capabilities\":{\"max_msg_fd\\u0073\":\"x\",\"pgsize\\u0073\":1.5}}",
	  0, 0, 0 },
	{ "utf8_and_del_in_strings",
	  "{\"caf\xc3\xa9\":\"\xe2\x82\xac\x7f\",\"capabilities\":{}}", 0, 0, 0 },
	{ "long_key_not_ours",
	  "{\"capabilities\":{\"max_msg_fds_with_a_suffix_longer_than_32\":1.5}}",
	  0, 0, 0 },
	{ "repeated_unknown_keys", "{\"a\":1,\"a\":2,\"capabilities\":"
	  "{\"b\":[],\"b\":{}}}", 0, 0, 0 },
	{ "depth_max", "{\"a\":[[[[[[[0]]]]]]]}", 0, 0, 0 },
	{ "depth_max_in_capabilities",
	  "{\"capabilities\":{\"m\":[[[[[{}]]]]],\"max_msg_fds\":3}}",
	  0, 0, T_FDS, { .max_msg_fds = 3 } },

	/* ---- invalid: not one object ---- */
	{ "empty_input", "", 0, -EINVAL },
	{ "whitespace_only", " \n\t", 0, -EINVAL },
	{ "array", "[]", 0, -EINVAL },
	{ "string", "\"capabilities\"", 0, -EINVAL },
	{ "number", "1", 0, -EINVAL },
	{ "null", "null", 0, -EINVAL },
	{ "trailing_garbage", "{}x", 0, -EINVAL },
	{ "two_objects", "{} {}", 0, -EINVAL },
	{ "extra_close", "{}}", 0, -EINVAL },
	{ "trailing_comma_after", "{},", 0, -EINVAL },
	{ "form_feed_whitespace", "{\f}", 0, -EINVAL },
	{ "vertical_tab_whitespace", "{\"a\":\v1}", 0, -EINVAL },
	{ "latin1_outside_string", "{\"a\":1\xe9}", 0, -EINVAL },
	{ "bom", "\xef\xbb\xbf{}", 0, -EINVAL },

	/* ---- invalid: structure ---- */
	{ "truncated_libvfio_user", "{ \"capabilities\": { \"max_msg_fds\": 8",
	  0, -EINVAL },
	{ "truncated_after_key", "{\"capabilities\"", 0, -EINVAL },
	{ "trailing_comma_object", "{\"a\":1,}", 0, -EINVAL },
	{ "trailing_comma_array", "{\"a\":[1,]}", 0, -EINVAL },
	{ "leading_comma", "{,\"a\":1}", 0, -EINVAL },
	{ "empty_member", "{\"a\":1,,\"b\":2}", 0, -EINVAL },
	{ "missing_colon", "{\"a\" 1}", 0, -EINVAL },
	{ "missing_value", "{\"a\":}", 0, -EINVAL },
	{ "key_only", "{\"a\"}", 0, -EINVAL },
	{ "unquoted_key", "{a:1}", 0, -EINVAL },
	{ "single_quotes", "{'a':1}", 0, -EINVAL },
	{ "number_key", "{\"a\":{1:2}}", 0, -EINVAL },
	{ "mismatched_brackets", "{\"a\":[}]}", 0, -EINVAL },
	{ "colon_in_array", "{\"a\":[1:2]}", 0, -EINVAL },
	{ "missing_separator", "{\"a\":1 \"b\":2}", 0, -EINVAL },
	{ "comment", "{\"a\":1/*c*/}", 0, -EINVAL },

	/* ---- invalid: strings ---- */
	{ "unterminated_string", "{\"a\":\"abc}", 0, -EINVAL },
	{ "unterminated_key", "{\"capabilities", 0, -EINVAL },
	{ "escape_at_end", "{\"a\":\"\\", 0, -EINVAL },
	{ "escaped_quote_unterminated", "{\"a\":\"\\\"}", 0, -EINVAL },
	{ "control_char", "{\"a\":\"x\x01y\"}", 0, -EINVAL },
	{ "raw_tab_in_string", "{\"a\":\"\t\"}", 0, -EINVAL },
	{ "raw_newline_in_key", "{\"a\nb\":1}", 0, -EINVAL },
	{ "unknown_escape", "{\"a\":\"\\x41\"}", 0, -EINVAL },
	{ "short_unicode_escape", "{\"a\":\"\\u12\"}", 0, -EINVAL },
	{ "bad_unicode_escape", "{\"a\":\"\\u12G4\"}", 0, -EINVAL },
	{ "unicode_escape_at_end", "{\"a\":\"\\u00", 0, -EINVAL },

	/* ---- invalid: literals and numbers in skipped values ---- */
	{ "short_literal", "{\"a\":tru}", 0, -EINVAL },
	{ "long_literal", "{\"a\":truex}", 0, -EINVAL },
	{ "capital_literal", "{\"a\":True}", 0, -EINVAL },
	{ "not_a_literal", "{\"a\":nope}", 0, -EINVAL },
	{ "truncated_literal", "{\"a\":nul", 0, -EINVAL },
	{ "leading_zero", "{\"a\":01}", 0, -EINVAL },
	{ "lone_minus", "{\"a\":-}", 0, -EINVAL },
	{ "double_minus", "{\"a\":--1}", 0, -EINVAL },
	{ "plus_sign", "{\"a\":+1}", 0, -EINVAL },
	{ "bare_fraction", "{\"a\":.5}", 0, -EINVAL },
	{ "empty_fraction", "{\"a\":1.}", 0, -EINVAL },
	{ "empty_exponent", "{\"a\":1e}", 0, -EINVAL },
	{ "signed_empty_exponent", "{\"a\":1E+}", 0, -EINVAL },
	{ "hex_number", "{\"a\":0x10}", 0, -EINVAL },
	{ "nan", "{\"a\":NaN}", 0, -EINVAL },
	{ "infinity", "{\"a\":-Infinity}", 0, -EINVAL },

	/* ---- invalid: our capabilities ---- */
	{ "capabilities_array", "{\"capabilities\":[]}", 0, -EINVAL },
	{ "capabilities_number", "{\"capabilities\":1}", 0, -EINVAL },
	{ "capabilities_null", "{\"capabilities\":null}", 0, -EINVAL },
	{ "capabilities_twice",
	  "{\"capabilities\":{\"max_msg_fds\":1},\"capabilities\":{}}",
	  0, -EINVAL },
	{ "key_twice", "{\"capabilities\":{\"pgsizes\":4096,\"pgsizes\":4096}}",
	  0, -EINVAL },
	{ "fraction", "{\"capabilities\":{\"max_msg_fds\":1.5}}", 0, -EINVAL },
	{ "zero_fraction", "{\"capabilities\":{\"max_msg_fds\":8.0}}", 0, -EINVAL },
	{ "exponent", "{\"capabilities\":{\"max_data_xfer_size\":1e6}}", 0,
	  -EINVAL },
	{ "capital_exponent", "{\"capabilities\":{\"max_data_xfer_size\":1E6}}",
	  0, -EINVAL },
	{ "negative", "{\"capabilities\":{\"max_msg_fds\":-1}}", 0, -EINVAL },
	{ "negative_zero", "{\"capabilities\":{\"max_msg_fds\":-0}}", 0, -EINVAL },
	{ "known_leading_zero", "{\"capabilities\":{\"max_msg_fds\":08}}", 0,
	  -EINVAL },
	{ "string_number", "{\"capabilities\":{\"max_msg_fds\":\"8\"}}", 0,
	  -EINVAL },
	{ "boolean", "{\"capabilities\":{\"max_dma_maps\":true}}", 0, -EINVAL },
	{ "null_value", "{\"capabilities\":{\"pgsizes\":null}}", 0, -EINVAL },
	{ "object_value", "{\"capabilities\":{\"pgsizes\":{}}}", 0, -EINVAL },
	{ "u64_max_plus_one",
	  "{\"capabilities\":{\"max_data_xfer_size\":18446744073709551616}}",
	  0, -ERANGE },
	{ "huge", "{\"capabilities\":{\"pgsizes\":"
	  "99999999999999999999999999999999999999999999999999}}", 0, -ERANGE },

	/* ---- invalid: nesting ---- */
	{ "depth_max_plus_one", "{\"a\":[[[[[[[[]]]]]]]]}", 0, -E2BIG },
	{ "depth_max_plus_one_in_capabilities",
	  "{\"capabilities\":{\"m\":[[[[[[[]]]]]]]}}", 0, -E2BIG },
	{ "depth_objects", "{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":"
	  "{\"h\":{}}}}}}}}}", 0, -E2BIG },

	/*
	 * ---- NUL: the caller refuses a NUL before the end; the parser,
	 * handed one anyway, refuses it like any stray byte ----
	 */
	{ "nul_in_object", "{\0}", 3, -EINVAL },
	{ "nul_in_string", "{\"a\":\"x\0y\"}", 11, -EINVAL },
	{ "nul_in_number", "{\"a\":1\0}", 8, -EINVAL },
	{ "nul_after_object", "{}\0", 3, -EINVAL },
	{ "nul_in_escape", "{\"a\":\"\\\0\"}", 10, -EINVAL },
};

/* ---- helpers ------------------------------------------------------------ */

/* Parses a copy of @s in a heap buffer of exactly @len bytes. */
static int t_parse(const char *s, size_t len, struct vfio_user_caps *caps)
{
	char *buf = malloc(len);	/* malloc(0): nothing may be read */
	int ret;

	if (!buf)
		ksft_exit_fail_msg("out of memory\n");
	memcpy(buf, s, len);
	*caps = t_unset;
	ret = vfio_user_parse_version_json(buf, len, caps);
	free(buf);
	return ret;
}

static bool t_errno_ok(int ret)
{
	return ret == 0 || ret == -EINVAL || ret == -ERANGE || ret == -E2BIG;
}

/* Prints @s (@len bytes) as a C string literal in a TAP comment. */
static void t_print_input(const char *what, const char *s, size_t len)
{
	size_t i;

	printf("# %s (%zu bytes): \"", what, len);
	for (i = 0; i < len && i < 600; i++) {
		unsigned char c = s[i];

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			printf("\\x%02x\"\"", c);
		else
			putchar(c);
	}
	printf("\"%s\n", i < len ? "..." : "");
}

/* Compares the fields named by @set with @want and the rest with t_unset. */
static bool t_caps_equal(const struct vfio_user_caps *got, unsigned int set,
			 const struct vfio_user_caps *want)
{
	const struct vfio_user_caps *w;

	if (got->minor != t_unset.minor)
		return false;
	w = set & T_FDS ? want : &t_unset;
	if (got->max_msg_fds != w->max_msg_fds)
		return false;
	w = set & T_XFER ? want : &t_unset;
	if (got->max_xfer != w->max_xfer)
		return false;
	w = set & T_MAPS ? want : &t_unset;
	if (got->max_dma_maps != w->max_dma_maps)
		return false;
	w = set & T_PGS ? want : &t_unset;
	return got->pgsizes == w->pgsizes;
}

static void t_print_caps(const char *what, const struct vfio_user_caps *c)
{
	printf("# %s: max_msg_fds %#x max_xfer %#x max_dma_maps %#x pgsizes %#llx\n",
	       what, c->max_msg_fds, c->max_xfer, c->max_dma_maps,
	       (unsigned long long)c->pgsizes);
}

static size_t t_len(const struct t_vec *v)
{
	return v->len ? v->len : strlen(v->in);
}

static bool t_is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* ---- fixed vectors -------------------------------------------------------- */

static void t_run_vectors(void)
{
	struct vfio_user_caps caps;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(t_vecs); i++) {
		const struct t_vec *v = &t_vecs[i];
		int ret = t_parse(v->in, t_len(v), &caps);
		bool ok = ret == v->ret;

		if (!ok) {
			t_print_input("input", v->in, t_len(v));
			ksft_print_msg("returned %d (%s), expected %d (%s)\n",
				       ret, strerror(-ret), v->ret,
				       strerror(-v->ret));
		} else if (!ret && !t_caps_equal(&caps, v->set, &v->want)) {
			t_print_input("input", v->in, t_len(v));
			t_print_caps("got ", &caps);
			t_print_caps("want", &v->want);
			ok = false;
		}
		ksft_test_result(ok, "vector %s\n", v->name);
	}
}

/* Every proper prefix of a valid vector that cuts into its object fails. */
static void t_run_prefixes(void)
{
	struct vfio_user_caps caps;
	unsigned int nvec = 0, ncut = 0;
	bool ok = true;
	size_t i, n, end;

	for (i = 0; i < ARRAY_SIZE(t_vecs); i++) {
		const struct t_vec *v = &t_vecs[i];

		if (v->ret)
			continue;
		nvec++;
		end = t_len(v);
		while (end && t_is_ws(v->in[end - 1]))
			end--;
		for (n = 0; n < end; n++, ncut++) {
			int ret = t_parse(v->in, n, &caps);

			if (ret >= 0 || !t_errno_ok(ret)) {
				t_print_input("prefix accepted", v->in, n);
				ksft_print_msg("of vector %s: returned %d\n",
					       v->name, ret);
				ok = false;
			}
		}
	}
	ksft_test_result(ok, "prefixes: %u cuts of %u valid vectors refused\n",
			 ncut, nvec);
}

/* Nesting far beyond the limit fails without recursing that deep. */
static void t_run_deep(void)
{
	static const char open[] = "{\"a\":";
	size_t depth = 100000, len = strlen(open) + 2 * depth + 1, i;
	struct vfio_user_caps caps;
	char *s = malloc(len);
	int ret;

	if (!s)
		ksft_exit_fail_msg("out of memory\n");
	memcpy(s, open, strlen(open));
	for (i = 0; i < depth; i++) {
		s[strlen(open) + i] = '[';
		s[strlen(open) + depth + i] = ']';
	}
	s[len - 1] = '}';
	ret = t_parse(s, len, &caps);
	free(s);
	ksft_test_result(ret == -E2BIG, "nesting %zu deep refused (%d)\n",
			 depth, ret);
}

/* The twin_socket capability: offered only in its one shape, never an error. */
static const struct {
	const char *in;
	bool twin;
	unsigned int index;
} t_twins[] = {
	{ "{\"capabilities\":{\"twin_socket\":{\"supported\":true,\"fd_index\":0}}}",
	  true, 0 },
	{ "{\"capabilities\":{\"max_msg_fds\":8,\"twin_socket\": { \"fd_index\" : 2 ,"
	  "\"x\":[1,{\"y\":null}], \"supported\" : true } }}", true, 2 },
	{ "{\"capabilities\":{\"twin_socket\":{\"supported\":false,\"fd_index\":0}}}",
	  false, 0 },
	{ "{\"capabilities\":{\"twin_socket\":{\"supported\":true}}}", false, 0 },
	{ "{\"capabilities\":{\"twin_socket\":{\"supported\":1,\"fd_index\":0}}}",
	  false, 0 },
	{ "{\"capabilities\":{\"twin_socket\":{\"supported\":true,\"fd_index\":256}}}",
	  false, 0 },
	{ "{\"capabilities\":{\"twin_socket\":{\"supported\":true,\"fd_index\":1,"
	  "\"fd_index\":0}}}", false, 0 },
	{ "{\"capabilities\":{\"twin_socket\":true}}", false, 0 },
	{ "{\"capabilities\":{\"twin_socket\":{\"supported\":true,\"fd_index\":0},"
	  "\"twin_socket\":{\"supported\":true,\"fd_index\":0}}}", false, 0 },
	{ "{\"twin_socket\":{\"supported\":true,\"fd_index\":0},\"capabilities\":{}}",
	  false, 0 },
};

static void t_run_twin(void)
{
	struct vfio_user_caps caps;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(t_twins); i++) {
		const char *in = t_twins[i].in;
		int ret = t_parse(in, strlen(in), &caps);
		bool ok = !ret && caps.twin_socket == t_twins[i].twin &&
			  (!caps.twin_socket ||
			   caps.twin_fd_index == t_twins[i].index);

		if (!ok) {
			t_print_input("input", in, strlen(in));
			ksft_print_msg("returned %d, twin_socket %d fd_index %u\n",
				       ret, caps.twin_socket,
				       caps.twin_fd_index);
		}
		ksft_test_result(ok, "twin_socket vector %zu: %s\n", i,
				 t_twins[i].twin ? "offered" : "not offered");
	}
}

/* ---- json-c as the reference ---------------------------------------------- */

static const char *const t_known[] = {
	"capabilities", "max_msg_fds", "max_data_xfer_size", "max_dma_maps",
	"pgsizes",
};

/*
 * What a lexical scan sees that json-c cannot tell us, or that json-c
 * accepts although RFC 8259 does not.
 */
struct t_scan {
	unsigned int depth;	/* deepest nesting of objects and arrays */
	bool extension;		/* json-c leniency: ', NaN, Infinity, 1., 00... */
	bool escape;		/* some string has an escape */
	bool repeated;		/* one of t_known appears twice as a string */
	bool odd_number;	/* -0 or 20+ digits: not json-c's to judge */
};

static void t_scan(const char *s, size_t len, struct t_scan *sc)
{
	unsigned int count[ARRAY_SIZE(t_known)] = { 0 };
	unsigned int level = 0, digits = 0;
	size_t i, k, start = 0;
	bool in_str = false;

	memset(sc, 0, sizeof(*sc));
	for (i = 0; i < len; i++) {
		unsigned char c = s[i];

		if (in_str) {
			if (c == '\\') {
				sc->escape = true;
				i++;
			} else if (c == '"') {
				in_str = false;
				for (k = 0; k < ARRAY_SIZE(t_known); k++)
					if (i - start == strlen(t_known[k]) &&
					    !memcmp(s + start, t_known[k],
						    i - start))
						count[k]++;
			} else if (c < 0x20) {
				sc->extension = true;
			}
			continue;
		}
		if (c >= '0' && c <= '9') {
			if (++digits >= 20)
				sc->odd_number = true;
			if (c == '0' && i && s[i - 1] == '-')
				sc->odd_number = true;
			/* json-c takes 00 and 01.5, not 01 */
			if (c == '0' && digits == 1 && i + 1 < len &&
			    s[i + 1] >= '0' && s[i + 1] <= '9' &&
			    (!i || !strchr(".eE+", s[i - 1])))
				sc->extension = true;
		} else {
			digits = 0;
		}
		switch (c) {
		case '"':
			in_str = true;
			start = i + 1;
			break;
		case '{':
		case '[':
			if (++level > sc->depth)
				sc->depth = level;
			break;
		case '}':
		case ']':
			if (level)
				level--;
			break;
		case '\'':
		case 'N':
		case 'I':
		case 'i':
			sc->extension = true;
			break;
		case '.':	/* json-c takes 1. and -.5 */
			if (i + 1 == len || s[i + 1] < '0' || s[i + 1] > '9' ||
			    !i || s[i - 1] < '0' || s[i - 1] > '9')
				sc->extension = true;
			break;
		default:
			if (c < 0x20 && !t_is_ws(c))
				sc->extension = true;
		}
	}
	for (k = 0; k < ARRAY_SIZE(t_known); k++)
		if (count[k] > 1)
			sc->repeated = true;
}

/* json-c's verdict: the tree if @s is exactly one JSON value, else NULL. */
static struct json_object *t_jsonc_parse(const char *s, size_t len)
{
	struct json_tokener *tok = json_tokener_new_ex(64);
	struct json_object *obj;
	size_t end;

	if (!tok)
		ksft_exit_fail_msg("json_tokener_new_ex failed\n");
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	obj = json_tokener_parse_ex(tok, s, len);
	if (obj) {
		for (end = json_tokener_get_parse_end(tok); end < len; end++)
			if (!t_is_ws(s[end]))
				break;
		if (end < len) {
			json_object_put(obj);
			obj = NULL;
		}
	}
	json_tokener_free(tok);
	return obj;
}

/*
 * What json.c should make of a document json-c accepted: 0 and the values,
 * or an error. Only for inputs without the t_scan flags.
 */
static int t_expect(struct json_object *top, unsigned int *set,
		    struct vfio_user_caps *want)
{
	static const unsigned int bits[] = { 0, T_FDS, T_XFER, T_MAPS, T_PGS };
	struct json_object *caps, *v;
	size_t k;
	u64 val;

	*set = 0;
	if (!json_object_is_type(top, json_type_object))
		return -EINVAL;
	if (!json_object_object_get_ex(top, "capabilities", &caps))
		return 0;
	if (!json_object_is_type(caps, json_type_object))
		return -EINVAL;
	for (k = 1; k < ARRAY_SIZE(t_known); k++) {
		if (!json_object_object_get_ex(caps, t_known[k], &v))
			continue;
		if (!json_object_is_type(v, json_type_int) ||
		    json_object_get_int64(v) < 0)
			return -EINVAL;
		val = json_object_get_uint64(v);
		*set |= bits[k];
		switch (bits[k]) {
		case T_FDS:
			want->max_msg_fds = val < 253 ? val : 253;
			break;
		case T_XFER:
			want->max_xfer = val < UINT32_MAX ? val : UINT32_MAX;
			break;
		case T_MAPS:
			want->max_dma_maps = val < UINT32_MAX ? val : UINT32_MAX;
			break;
		default:
			want->pgsizes = val;
		}
	}
	return 0;
}

struct t_stats {
	unsigned long inputs, accepted, compared, failures;
};

/* One input through json.c and, where it can judge, json-c. */
static void t_check(const char *s, size_t len, struct t_stats *st)
{
	struct vfio_user_caps caps, want = t_unset;
	struct json_object *ref = NULL;
	unsigned int set = 0;
	struct t_scan sc;
	int ret, exp;

	st->inputs++;
	ret = t_parse(s, len, &caps);
	if (!t_errno_ok(ret)) {
		t_print_input("bad return value", s, len);
		ksft_print_msg("returned %d\n", ret);
		goto fail;
	}
	if (!ret) {
		st->accepted++;
		if (caps.max_msg_fds > 253 && caps.max_msg_fds != t_unset.max_msg_fds) {
			t_print_input("max_msg_fds above 253", s, len);
			goto fail;
		}
	}
	if (memchr(s, '\0', len))
		return;		/* json-c stops at a NUL */

	ref = t_jsonc_parse(s, len);
	if (!ret && !ref) {
		t_print_input("accepted, json-c refuses", s, len);
		goto fail;
	}
	t_scan(s, len, &sc);
	if (!ref || sc.extension || sc.escape || sc.repeated || sc.odd_number)
		goto out;
	st->compared++;
	if (sc.depth > T_MAX_DEPTH)
		exp = -E2BIG;
	else
		exp = t_expect(ref, &set, &want);
	if (!exp != !ret) {
		t_print_input("json-c disagrees", s, len);
		ksft_print_msg("returned %d, expected %d\n", ret, exp);
		goto fail;
	}
	if (!ret && !t_caps_equal(&caps, set, &want)) {
		t_print_input("values differ from json-c's", s, len);
		t_print_caps("got ", &caps);
		t_print_caps("want", &want);
		goto fail;
	}
out:
	json_object_put(ref);
	return;
fail:
	json_object_put(ref);
	st->failures++;
}

/* ---- mutations ------------------------------------------------------------ */

static u64 t_rng_state;

/* xorshift64*: small, fast, reproducible from the printed seed */
static u64 t_rand(void)
{
	t_rng_state ^= t_rng_state >> 12;
	t_rng_state ^= t_rng_state << 25;
	t_rng_state ^= t_rng_state >> 27;
	return t_rng_state * 0x2545f4914f6cdd1dULL;
}

static size_t t_below(size_t n)
{
	return n ? t_rand() % n : 0;
}

/* JSON's punctuation and letters, and bytes it forbids outside strings */
static const char t_bytes[] = "{}[]\":,\\ -+.0123456789eEtrufalsn"
			      "'/\t\n\r\f\v\x01\x1f\x7f\x80\xc3\xff";

static const char *const t_tokens[] = {
	"\"max_msg_fds\"", "\"max_data_xfer_size\"", "\"max_dma_maps\"",
	"\"pgsizes\"", "\"capabilities\"", "\"migration\"", ":", ",", "{", "}",
	"[", "]", "{}", "[]", "true", "false", "null", "0", "-0", "1.5", "1e3",
	"4096", "18446744073709551615", "18446744073709551616", "\"\\u0041\"",
	"\"\\\"\"", "\"\"", "[[[[[[[[", "]]]]]]]]", "{\"a\":", "\"k\":1,",
};

/* Applies one random change to @buf (@*len bytes, room for T_MAX_INPUT). */
static void t_mutate(char *buf, size_t *len, const char *other, size_t olen)
{
	size_t n = *len, at = t_below(n + 1), cut, span, from;
	const char *tok;

	switch (t_below(10)) {
	case 0:		/* flip a bit */
		if (n)
			buf[t_below(n)] ^= 1 << t_below(8);
		break;
	case 1:		/* replace a byte */
		if (n)
			buf[t_below(n)] = t_bytes[t_below(sizeof(t_bytes) - 1)];
		break;
	case 2:		/* insert a byte */
		if (n < T_MAX_INPUT) {
			memmove(buf + at + 1, buf + at, n - at);
			buf[at] = t_bytes[t_below(sizeof(t_bytes) - 1)];
			n++;
		}
		break;
	case 3:		/* delete a byte */
		if (n && at < n) {
			memmove(buf + at, buf + at + 1, n - at - 1);
			n--;
		}
		break;
	case 4:		/* delete a span */
		span = t_below(n - at + 1);
		memmove(buf + at, buf + at + span, n - at - span);
		n -= span;
		break;
	case 5:		/* copy a span of itself somewhere */
		from = t_below(n + 1);
		span = t_below(n - from + 1);
		if (n + span <= T_MAX_INPUT) {
			memmove(buf + at + span, buf + at, n - at);
			memmove(buf + at, buf + from + (from >= at ? span : 0),
				span);
			n += span;
		}
		break;
	case 6:		/* truncate */
		n = at;
		break;
	case 7:		/* splice: our head, the other's tail */
		from = t_below(olen + 1);
		cut = olen - from;
		if (at + cut <= T_MAX_INPUT) {
			memcpy(buf + at, other + from, cut);
			n = at + cut;
		}
		break;
	default:	/* insert a token */
		tok = t_tokens[t_below(ARRAY_SIZE(t_tokens))];
		span = strlen(tok);
		if (n + span <= T_MAX_INPUT) {
			memmove(buf + at + span, buf + at, n - at);
			memcpy(buf + at, tok, span);
			n += span;
		}
		break;
	}
	*len = n;
}

static void t_run_mutations(unsigned long total)
{
	const struct t_vec *seeds[ARRAY_SIZE(t_vecs)];
	size_t nseeds = 0, i, len, k;
	char buf[T_MAX_INPUT];

	for (i = 0; i < ARRAY_SIZE(t_vecs); i++)
		if (!t_vecs[i].ret)
			seeds[nseeds++] = &t_vecs[i];

	for (i = 0; i < nseeds; i++) {
		const struct t_vec *v = seeds[i];
		unsigned long per = total / nseeds + (i < total % nseeds);
		struct t_stats st = { 0 };
		unsigned long m;

		for (m = 0; m < per; m++) {
			const struct t_vec *o = seeds[t_below(nseeds)];
			unsigned int rounds = 1 + t_below(4);

			len = t_len(v);
			memcpy(buf, v->in, len);
			while (rounds--)
				t_mutate(buf, &len, o->in, t_len(o));
			t_check(buf, len, &st);
			if (st.failures >= 5)
				break;
		}
		ksft_test_result(!st.failures,
				 "mutations of %s: %lu inputs, %lu accepted, %lu compared with json-c\n",
				 v->name, st.inputs, st.accepted, st.compared);
	}

	/* and strings of random bytes from the same alphabet */
	{
		struct t_stats st = { 0 };
		unsigned long m;

		for (m = 0; m < total / 10 && st.failures < 5; m++) {
			len = t_below(64);
			for (k = 0; k < len; k++)
				buf[k] = t_bytes[t_below(sizeof(t_bytes) - 1)];
			t_check(buf, len, &st);
		}
		ksft_test_result(!st.failures,
				 "random strings: %lu inputs, %lu accepted\n",
				 st.inputs, st.accepted);
	}
}

/* Each vector into a file of its own in @dir, named after it. */
static int t_write_corpus(const char *dir)
{
	char path[4096];
	size_t i;
	FILE *f;

	for (i = 0; i < ARRAY_SIZE(t_vecs); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, t_vecs[i].name);
		f = fopen(path, "w");
		if (!f || fwrite(t_vecs[i].in, 1, t_len(&t_vecs[i]), f) !=
			  t_len(&t_vecs[i]) || fclose(f)) {
			perror(path);
			return 1;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long mutations = 100000;
	unsigned int nvalid = 0;
	u64 seed = 0x76666f2d75736572ULL;	/* "vfio-user" */
	size_t i;
	int opt;

	while ((opt = getopt(argc, argv, "c:n:s:")) != -1) {
		switch (opt) {
		case 'c':
			return t_write_corpus(optarg);
		case 'n':
			mutations = strtoul(optarg, NULL, 0);
			break;
		case 's':
			seed = strtoull(optarg, NULL, 0);
			break;
		default:
			fprintf(stderr, "usage: %s [-n MUTATIONS] [-s SEED] | -c DIR\n",
				argv[0]);
			return 2;
		}
	}
	t_rng_state = seed ? seed : 1;

	for (i = 0; i < ARRAY_SIZE(t_vecs); i++)
		nvalid += !t_vecs[i].ret;

	ksft_print_header();
	/* vectors, prefixes, deep nesting, one per seed, random strings */
	ksft_set_plan(ARRAY_SIZE(t_vecs) + 2 + nvalid + 1 + ARRAY_SIZE(t_twins));
	ksft_print_msg("seed %#llx, %lu mutations\n",
		       (unsigned long long)seed, mutations);
	t_run_vectors();
	t_run_prefixes();
	t_run_deep();
	t_run_twin();
	t_run_mutations(mutations);
	ksft_finished();
}
