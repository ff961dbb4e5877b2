#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-only
#
# Unmodified QEMU (Debian's qemu-system-x86_64, -device vfio-pci,sysfsdev=)
# maps a region the server backs with a memfd: the null sample with --mmap
# offers BAR4 (64 KiB) with two sparse-mmap areas, and the module passes
# the mapping through. As in qemu_test.sh there is no guest OS: this
# script plays the guest over qtest.
#
# Checks: QEMU mmaps both areas of BAR4 (its vfio_region_mmap trace);
# guest writes to BAR4's areas reach the server's memory with no
# REGION_WRITE on the wire, and the server's writes are read back by the
# guest; the hole between the areas still goes by message; after the
# server is killed and a new one attached under the running QEMU, the
# guest reads the new server's memory, not the old pattern.
#
# Runs as root with vfio_user_mdev loaded (tools/testing/vm/vm-run).
# Exit: 0 pass, 4 skip, 1 fail. Prints TAP.

set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tools/testing/selftests/vfio_user/qemu_lib.sh
. "$here/qemu_lib.sh"

TAP_PREFIX=qemu_mmap
NTESTS=5
# shellcheck source=tools/testing/selftests/vfio_user/qemu_tap.sh
. "$here/qemu_tap.sh"

tap_require_qemu
ql_init
[ -x "$QL_SAMPLE" ] || skip_all "sample server not built ($QL_SAMPLE)"
trap 'ql_cleanup; rm -rf "$QL_DIR"' EXIT
QL_SERVER_ARGS=(--device null --mmap)

echo "TAP version 13"
echo "1..$NTESTS"
note "$(qemu-system-x86_64 --version | head -n 1); kernel $(uname -r); work dir $QL_DIR"

BAR4=0xe1000000			# where the "guest" maps BAR4
REG_BAR4_OFFSET=0x28 REG_BAR4_DATA=0x30
AREA2=0x8000 HOLE=0x4000

# server_read OFF -> QL_VAL: BAR4's memory as the server sees it (BAR0).
server_read() {
	ql_bar_write64 $REG_BAR4_OFFSET "$1" &&
		ql_qtest_val readq $((QL_BAR0 + REG_BAR4_DATA))
}
server_write() {
	ql_bar_write64 $REG_BAR4_OFFSET "$1" &&
		ql_bar_write64 $REG_BAR4_DATA "$2"
}
region_writes() { grep -c 'REGION_WRITE' "$QL_DIR/server.log"; }

t_start() {
	ql_server_start && ql_mdev_create && ql_mdev_attach || return
	ql_qemu_start -trace 'vfio_region_mmap*' ||
		{ DETAIL="QMP did not come up: $(tail -n 3 "$QL_DIR/qemu.log")"; return 1; }
	# BAR0 and BAR4 mapped, memory space on.
	ql_cfg_write 0x10 4 $QL_BAR0 && ql_cfg_write 0x20 4 $BAR4 &&
		ql_cfg_write 0x04 2 0x0006 || return
	ql_cfg_read 0x20 4 && [ $((QL_VAL & ~0xf)) = $((BAR4)) ] ||
		{ DETAIL="BAR4 reads $QL_VAL"; return 1; }
	local maps
	maps=$(grep -c 'vfio_region_mmap' "$QL_DIR/qemu.log")
	DETAIL="QEMU: $maps vfio_region_mmap trace lines; mmap_pages $(ql_mdev_attr mmap_pages)"
	[ "$maps" -ge 2 ]
}

t_guest_writes() {
	local i before after v
	before=$(region_writes)
	for i in 0 1 2 3; do
		ql_qtest writeq $((BAR4 + i * 0x1000)) $((0x5a5a0000 + i)) || return
		ql_qtest writeq $((BAR4 + AREA2 + i * 0x1000)) $((0x6b6b0000 + i)) || return
	done
	after=$(region_writes)
	[ "$after" = "$before" ] ||
		{ DETAIL="$((after - before)) REGION_WRITEs for mapped writes"; return 1; }
	for i in 0 1 2 3; do
		server_read $((i * 0x1000)) && [ $((QL_VAL)) = $((0x5a5a0000 + i)) ] ||
			{ DETAIL="server sees $QL_VAL at $((i * 0x1000))"; return 1; }
		server_read $((AREA2 + i * 0x1000)) && [ $((QL_VAL)) = $((0x6b6b0000 + i)) ] ||
			{ DETAIL="server sees $QL_VAL at $((AREA2 + i * 0x1000))"; return 1; }
	done
	v=$(ql_mdev_attr mmap_pages)
	DETAIL="8 guest writes in both areas, 0 REGION_WRITEs, server reads them back; mmap_pages $v"
}

t_server_writes() {
	server_write 0x2010 0x1122334455667788 || return
	ql_qtest_val readq $((BAR4 + 0x2010)) && [ "$QL_VAL" = 0x1122334455667788 ] ||
		{ DETAIL="guest reads $QL_VAL"; return 1; }
	DETAIL="server write read back by the guest through the mapping"
}

t_hole_by_message() {
	local before after
	before=$(region_writes)
	ql_qtest writel $((BAR4 + HOLE)) 0x77 || return
	after=$(region_writes)
	[ "$after" -gt "$before" ] || { DETAIL="no REGION_WRITE for the hole"; return 1; }
	DETAIL="a write between the areas went as $((after - before)) REGION_WRITE"
}

t_new_server() {
	ql_server_kill
	for ((i = 0; i < 50; i++)); do
		[ "$(ql_mdev_attr mmap_pages)" = 0 ] && break
		sleep 0.1
	done
	[ "$(ql_mdev_attr mmap_pages)" = 0 ] || { DETAIL="mmap_pages $(ql_mdev_attr mmap_pages) after the kill"; return 1; }
	ql_server_start && ql_mdev_attach || { DETAIL="re-attach failed"; return 1; }
	ql_qtest_val readq $((BAR4 + 0x1000)) || return
	[ $((QL_VAL)) = 0 ] || { DETAIL="the guest reads $QL_VAL: the old server's memory"; return 1; }
	ql_qtest writeq $((BAR4 + 0x1000)) 0x600d && server_read 0x1000 &&
		[ $((QL_VAL)) = $((0x600d)) ] || { DETAIL="new server sees $QL_VAL"; return 1; }
	DETAIL="after kill + re-attach the guest sees the new server's memory (0, then its own write)"
}

check starts_and_maps_bar4 t_start
if ql_qemu_alive; then
	check guest_writes_reach_server t_guest_writes
	check server_writes_reach_guest t_server_writes
	check hole_goes_by_message t_hole_by_message
	check new_server_new_memory t_new_server
fi
while [ $n -lt $NTESTS ]; do not_ok skipped "QEMU did not start"; done

tap_finish
