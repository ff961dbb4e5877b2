#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-only
#
# Unmodified QEMU (Debian's qemu-system-x86_64) drives a vfio_user mdev
# attached to the DMA sample server through -device vfio-pci,sysfsdev=.
# No guest OS: QEMU runs stopped (-S) and this script plays the guest over
# the qtest protocol (config space through ports 0xcf8/0xcfc, BAR0 MMIO,
# guest RAM reads/writes) and asks QEMU itself over QMP.
#
# Checks: QEMU starts and the device enumerates with the sample's IDs and
# BAR; config and BAR accesses reach the server; a DMA copy between two
# guest-RAM buffers; MSI-X: QEMU hands down eventfds and the completion
# interrupt reaches QEMU (its MSI-X message lands in guest RAM); server
# death fails QEMU's accesses fast; re-attach brings the device back under
# the running QEMU; a hung server costs QEMU one timeout_ms, not a hang; mdev removal asks QEMU to release the device (REQ ->
# ACPI unplug request) and completes once it does.
#
# Runs as root with vfio_user_mdev loaded (tools/testing/vm/vm-run).
# Exit: 0 pass, 4 skip, 1 fail. Prints TAP.

set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tools/testing/selftests/vfio_user/qemu_lib.sh
. "$here/qemu_lib.sh"

TAP_PREFIX=${TAP_PREFIX:-qemu}
NTESTS=12
# shellcheck source=tools/testing/selftests/vfio_user/qemu_tap.sh
. "$here/qemu_tap.sh"

tap_require_qemu
ql_init
[ -x "$QL_SAMPLE" ] || skip_all "sample server not built ($QL_SAMPLE)"
[ -d /sys/module/vfio_pci_core ] || modprobe vfio_pci_core 2> /dev/null || true
trap 'ql_cleanup; rm -rf "$QL_DIR"' EXIT

echo "TAP version 13"
echo "1..$NTESTS"
note "$("$QL_QEMU" --version | head -n 1); VFIO ${VU_VFIO_BACKEND:-container}; kernel $(uname -r); work dir $QL_DIR"

# QL_PAT_LEN: the DMA copy's size; QL_SLOW: how many times the bounds on
# failing fast are stretched (the debug kernel: 16 KiB and 3, where QEMU
# itself runs several times slower)
PAT_LEN=${QL_PAT_LEN:-65536}
SLOW=${QL_SLOW:-1}
SRC=0x100000 DST=0x200000 MSI_ADDR=0x300000 MSI_DATA=0x4d534958

t_start() {
	ql_server_start && ql_mdev_create && ql_mdev_attach || return
	DETAIL="server state: $(ql_mdev_attr state)"
	local t0
	t0=$(ql_now)
	ql_qemu_start || { DETAIL="QMP did not come up: $(tail -n 3 "$QL_DIR/qemu.log")"; return 1; }
	ql_qtest outl 0xcf8 $QL_CF8 || return
	DETAIL="QEMU up with vfio-pci on $QL_UUID in $(ql_since "$t0") s"
}

t_enumerate() {
	local sys
	ql_qmp '{"execute": "query-pci"}' || { DETAIL="query-pci: $QL_QMP_REPLY"; return 1; }
	# "slot": 4, ... "id": {"device": 1, "vendor": 20056 ...} (0x4e58 = 20056)
	sys=$(printf '%s' "$QL_QMP_REPLY" | python3 -c '
import json, sys
for bus in json.load(sys.stdin)["return"]:
    for d in bus["devices"]:
        if d["slot"] == 4:
            b = [r for r in d["regions"] if r["bar"] == 0]
            print("%04x:%04x %s bar0=%s" % (d["id"]["vendor"], d["id"]["device"],
                  d.get("qdev_id"), b[0]["size"] if b else None))')
	DETAIL="query-pci 00:04.0: $sys"
	[[ $sys == "4e58:0001 vu0 bar0=4096" ]] || return 1
	ql_cfg_read 0 4 && [ "$QL_VAL" = 0x14e58 ] ||
		{ DETAIL="$DETAIL; config dword 0 via qtest: $QL_VAL"; return 1; }
	DETAIL="$DETAIL; config space via 0xcf8/0xcfc: $QL_VAL"
}

t_config_bar() {
	local before after
	ql_map_bar0 || return
	ql_cfg_read 0x10 4 && [ "$QL_VAL" = $QL_BAR0 ] || { DETAIL="BAR0 reads $QL_VAL"; return 1; }
	before=$(grep -c 'REGION_READ' "$QL_DIR/server.log")
	ql_bar_read32 $QL_REG_MAGIC && [ "$QL_VAL" = $QL_DMA_MAGIC ] ||
		{ DETAIL="MAGIC $QL_VAL"; return 1; }
	ql_bar_write32 $QL_REG_SCRATCH 0x5a5aa5a5 && ql_bar_read32 $QL_REG_SCRATCH &&
		[ "$QL_VAL" = 0x5a5aa5a5 ] || { DETAIL="SCRATCH $QL_VAL"; return 1; }
	after=$(grep -c 'REGION_READ' "$QL_DIR/server.log")
	DETAIL="BAR0 at $QL_BAR0; MAGIC $QL_DMA_MAGIC, SCRATCH round trip; server saw $((after - before)) REGION_READs"
	[ "$after" -gt "$before" ]
}

t_dma() {
	local pat t0
	pat=$(ql_random_hex $PAT_LEN)
	ql_qtest write $SRC $PAT_LEN "0x$pat" && ql_qtest memset $DST $PAT_LEN 0 || return
	t0=$(ql_now)
	ql_dma_copy $SRC $DST $PAT_LEN 0 || return
	[ "$QL_VAL" = 0x2 ] || { DETAIL="STATUS $QL_VAL"; return 1; }
	ql_qtest read $DST $PAT_LEN || return
	[ "$QL_REPLY" = "OK 0x$pat" ] || { DETAIL="destination differs from source"; return 1; }
	DETAIL="$PAT_LEN random bytes guest RAM $SRC -> $DST in $(ql_since "$t0") s, verified"
}

t_msix_setup() {
	ql_qtest writel $MSI_ADDR 0 || return
	ql_msix_setup $MSI_ADDR $MSI_DATA || { DETAIL="MSI-X setup"; return 1; }
	sleep 0.5
	grep -q 'vfio_msix_vector_do_use .* vector 0 used' "$QL_DIR/qemu.log" ||
		{ DETAIL="no vfio_msix_vector_do_use in QEMU's trace"; return 1; }
	grep -q 'DEVICE_SET_IRQS' "$QL_DIR/server.log" ||
		{ DETAIL="the server saw no SET_IRQS"; return 1; }
	DETAIL="MSI-X cap @$(printf '0x%x' "$QL_CAP"); QEMU: vfio_msix_vector_do_use vector 0; server: DEVICE_SET_IRQS"
}

# msix_copy_and_irq: one copy with the completion interrupt; the MSI-X
# message (MSI_DATA written to MSI_ADDR by QEMU's vfio_msi_interrupt
# handler) must show up in guest RAM.
msix_copy_and_irq() {
	local pat before
	before=$(grep -c 'vfio_msi_interrupt' "$QL_DIR/qemu.log")
	pat=$(ql_random_hex 4096)
	ql_qtest writel $MSI_ADDR 0 && ql_qtest write $SRC 4096 "0x$pat" &&
		ql_qtest memset $DST 4096 0 || return
	ql_dma_copy $SRC $DST 4096 1 && [ "$QL_VAL" = 0x2 ] || { DETAIL="STATUS $QL_VAL"; return 1; }
	ql_qtest read $DST 4096 && [ "$QL_REPLY" = "OK 0x$pat" ] ||
		{ DETAIL="copied data differs"; return 1; }
	ql_wait_mem32 $MSI_ADDR $MSI_DATA 10 ||
		{ DETAIL="no MSI-X message in guest RAM at $MSI_ADDR (reads $QL_VAL)"; return 1; }
	[ "$(grep -c 'vfio_msi_interrupt' "$QL_DIR/qemu.log")" -gt "$before" ] ||
		{ DETAIL="no vfio_msi_interrupt trace"; return 1; }
	DETAIL="MSI-X message $MSI_DATA landed at $MSI_ADDR $QL_WAITED s after the copy; trace: $(grep 'vfio_msi_interrupt' "$QL_DIR/qemu.log" | tail -n 1)"
}

t_msix_irq() { msix_copy_and_irq; }

t_server_death() {
	local t0 dt
	ql_server_kill
	sleep 0.2
	t0=$(ql_now)
	ql_bar_read32 $QL_REG_MAGIC || { DETAIL="qtest readl did not complete: $QL_REPLY"; return 1; }
	dt=$(ql_since "$t0")
	[ "$QL_VAL" = 0xffffffff ] || { DETAIL="readl after server death: $QL_VAL"; return 1; }
	DETAIL="BAR read -> $QL_VAL after ${dt} s (QEMU: $(grep -m1 -o 'vfio_region_read.*failed.*' "$QL_DIR/qemu.log" | head -c 90)); state: $(ql_mdev_attr state)"
	awk -v d="$dt" -v s="$SLOW" 'BEGIN { exit !(d < 5 * s) }'
}

t_reattach() {
	# timeout_ms takes effect at the next attach: this one (for
	# hung_server_bounded below).
	echo 1000 > "$QL_MDEVS/$QL_UUID/vfio_user/timeout_ms" || { DETAIL="cannot set timeout_ms"; return 1; }
	ql_server_start && ql_mdev_attach || { DETAIL="attach failed"; return 1; }
	ql_bar_read32 $QL_REG_MAGIC && [ "$QL_VAL" = $QL_DMA_MAGIC ] ||
		{ DETAIL="MAGIC after re-attach: $QL_VAL"; return 1; }
	DETAIL="state $(ql_mdev_attr state); MAGIC $QL_VAL under the same QEMU"
}

t_reattach_dma_irq() {
	msix_copy_and_irq || return
	DETAIL="after re-attach: $DETAIL"
}

# A server that stops answering (SIGSTOP): QEMU's access fails after the
# mdev's timeout_ms instead of hanging; a fresh server is attached after.
t_hung_server() {
	local t0 dt
	kill -STOP "$QL_SRV_PID"
	t0=$(ql_now)
	ql_bar_read32 $QL_REG_MAGIC
	dt=$(ql_since "$t0")
	kill -CONT "$QL_SRV_PID"
	[ "$QL_VAL" = 0xffffffff ] || { DETAIL="readl from a stopped server: $QL_REPLY"; return 1; }
	DETAIL="BAR read -> $QL_VAL after $dt s (timeout_ms 1000); state: $(ql_mdev_attr state)"
	awk -v d="$dt" -v s="$SLOW" 'BEGIN { exit !(d >= 0.9 && d < 4 * s) }' || return 1
	ql_server_kill
	ql_server_start && ql_mdev_attach && ql_bar_read32 $QL_REG_MAGIC &&
		[ "$QL_VAL" = $QL_DMA_MAGIC ] || { DETAIL="$DETAIL; re-attach failed: $QL_VAL"; return 1; }
	DETAIL="$DETAIL; re-attached, MAGIC $QL_VAL"
}

t_remove_req() {
	local rpid t0 i rc
	t0=$(ql_now)
	(echo 1 > "$QL_MDEVS/$QL_UUID/remove") &
	rpid=$!
	# The module signals QEMU's REQ eventfd; QEMU's vfio-pci answers with
	# a hot-unplug request to the guest (ACPI on the pc machine).
	for ((i = 0; i < 150; i++)); do
		grep -q acpi_pci_unplug_request "$QL_DIR/qemu.log" && break
		sleep 0.1
	done
	if ! grep -q acpi_pci_unplug_request "$QL_DIR/qemu.log"; then
		DETAIL="QEMU did not request an unplug within 15 s"
		ql_qemu_stop
		ql_wait_pid "$rpid" 30
		return 1
	fi
	# The remove write waits for QEMU to let go (the bus link
	# /sys/bus/mdev/devices/UUID is already gone at this point).
	if ! kill -0 "$rpid" 2> /dev/null; then
		wait "$rpid"
		DETAIL="removal did not wait for QEMU (remove exit $?)"
		return 1
	fi
	# Play the guest's ACPI: eject slot 4 (PCI hotplug register 0xae08).
	ql_qtest outl 0xae08 $((1 << QL_SLOT)) || return
	ql_wait_pid "$rpid" 20
	rc=$?
	if [ $rc = 124 ]; then
		DETAIL="removal still blocked 20 s after the eject"
		ql_qemu_stop
		ql_wait_pid "$rpid" 30
		return 1
	fi
	[ $rc = 0 ] || { DETAIL="remove write failed"; return 1; }
	[ ! -e "/sys/class/vfio_user/vfio_user/$QL_UUID" ] || { DETAIL="mdev still there"; return 1; }
	ql_qmp_wait_event DEVICE_DELETED 10 || { DETAIL="no DEVICE_DELETED event"; return 1; }
	ql_qtest readl $SRC || { DETAIL="QEMU unresponsive after the unplug"; return 1; }
	DETAIL="REQ -> QEMU acpi_pci_unplug_request -> eject -> DEVICE_DELETED; removal done in $(ql_since "$t0") s, QEMU still running"
}

t_qemu_quit() {
	local t0
	t0=$(ql_now)
	ql_qemu_stop
	DETAIL="QEMU quit in $(ql_since "$t0") s"
}

check starts t_start
if ql_qemu_alive; then
	check enumerates_4e58_0001 t_enumerate
	check config_and_bar_reach_server t_config_bar
	check dma_copy_guest_ram t_dma
	check msix_enable_set_irqs t_msix_setup
	check msix_interrupt_reaches_qemu t_msix_irq
	check server_death_fails_fast t_server_death
	check reattach_same_qemu t_reattach
	check reattach_dma_and_irq t_reattach_dma_irq
	check hung_server_bounded t_hung_server
	check remove_asks_qemu t_remove_req
	check qemu_quits t_qemu_quit
fi
while [ $n -lt $NTESTS ]; do not_ok skipped "QEMU did not start"; done

tap_finish
