#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Checks the layering that the comment at the top of vus-internal.h
# describes: every object of the library may use symbols of lower layers
# only. Prints one TAP line.
#
#   layers.sh path/to/vus-internal.h OBJDIR
set -eu

hdr=${1:?usage: $0 vus-internal.h OBJDIR}
objdir=${2:?usage: $0 vus-internal.h OBJDIR}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# " *   7  dev.c ..." sets the layer, " *      region.c ..." keeps it
sed -n '/^ \* Layers\./,/^ \*\//p' "$hdr" |
	awk '$2 ~ /^[0-9]+$/ && $3 ~ /\.c$/ { l = $2; print $3, l; next }
	     $2 ~ /\.c$/ && l != "" { print $2, l }' > "$tmp/layers"
[ -s "$tmp/layers" ] || { echo "not ok - layers: no table in $hdr"; exit 1; }

while read -r src layer; do
	nm --defined-only "$objdir/${src%.c}.o" |
		awk -v f="$src" -v l="$layer" '$2 ~ /^[TDBR]$/ { print $3, f, l }'
done < "$tmp/layers" > "$tmp/defs"

while read -r src layer; do
	nm --undefined-only "$objdir/${src%.c}.o" | awk '{ print $2 }' |
	while read -r sym; do
		awk -v s="$sym" -v f="$src" -v l="$layer" \
			'$1 == s && $3 + 0 >= l + 0 && $2 != f {
				printf "# %s (layer %s) uses %s of %s (layer %s)\n",
				       f, l, s, $2, $3 }' "$tmp/defs"
	done
done < "$tmp/layers" > "$tmp/violations"
if [ -s "$tmp/violations" ]; then
	cat "$tmp/violations"
	echo "not ok - layers: a file calls its own layer or above"
	exit 1
fi
n=$(wc -l < "$tmp/layers")
echo "ok - layers: $n files, each calls lower layers only"
