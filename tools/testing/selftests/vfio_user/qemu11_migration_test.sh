#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-only
#
# Live migration of a running vfio_user mdev by an unmodified QEMU 11
# (Debian's, from the trixie chroot, run by qemu_chroot.sh) on the legacy
# VFIO container or iommufd: a source QEMU with -device vfio-pci,sysfsdev=A,
# enable-migration=on on mdev A (DMA sample, server 1) migrates over a UNIX
# socket into a destination QEMU started with -incoming defer on mdev B
# (DMA sample, server 2). As in qemu_test.sh there is no guest OS: each
# QEMU runs a firmware that halts at once, and this script plays both
# guests over qtest and asks both QEMUs over QMP. (QEMU does not count the
# type1 container as IOMMU dirty tracking, so its default
# enable-migration=auto blocks migration: =on is what a user must write.)
#
# Checks: the source VM runs with the device; the guest fills RAM, programs
# SCRATCH, MSI-X and a background copy paused a quarter of the way
# (STEPS); a migration cancelled while RAM is sent (throttled) and one
# cancelled at the switchover point (pause-before-switchover: VM and
# device already stopped) leave the source running with its device back in
# RUNNING and its state intact; then a migration completes (its time in
# the TAP line), the device writing guest RAM while RAM is sent: the source is in postmigrate with server 1 stopped after
# STOP_COPY, server 2 loaded the state and runs once the destination VM
# continues (it was started with -S, as libvirt does); there registers,
# config space and guest RAM read back, the paused copy finishes when
# STEPS lets it and its MSI-X message lands in guest RAM, a new copy works.
#
# Runs as root with vfio_user_mdev loaded (tools/testing/vm/vm-run). Skips
# without QEMU >= 11 in the chroot, the module, the sample server, or when
# the kernel offers no migration (QEMU: "migration is not supported in
# kernel"). VU_VFIO_BACKEND=iommufd: both QEMUs reach their mdev through
# an iommufd object; iommufd logs no dirty pages for an emulated-IOMMU
# device, so the migration then needs the mdev's own DMA log: skipped
# where the kernel has none (no iova_bitmap_set; not in make check: 439 s
# on the debug kernel, run it as qemu11_migration_test.sh@iommufd).
# VU_MIG_PRE_COPY=1: both servers offer PRE_COPY (vfio-user-sample
# --pre-copy; the module offers it from 6.2 on), so QEMU reads device
# state while RAM is sent and stops the source's device into STOP_COPY
# (PRE_COPY -> PRE_COPY_P2P -> STOP_COPY) rather than STOP; the checks
# expect those arcs instead.
# Exit: 0 pass, 4 skip, 1 fail. Prints TAP.

set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tools/testing/selftests/vfio_user/qemu_lib.sh
. "$here/qemu_lib.sh"

TAP_PREFIX=qemu11_migration
NTESTS=14
# shellcheck source=tools/testing/selftests/vfio_user/qemu_tap.sh
. "$here/qemu_tap.sh"

export QL_QEMU=$here/qemu_chroot.sh
[ "$(id -u)" = 0 ] || skip_all "must run as root"
[ -d /sys/class/vfio_user/vfio_user ] || skip_all "vfio_user_mdev is not loaded"
[ -d "$QL_TYPE" ] || skip_all "no mdev type $QL_TYPE"
v=$("$QL_QEMU" --version 2> /dev/null |
    sed -n '1s/^QEMU emulator version \([0-9]*\)\..*/\1/p')
[ -n "$v" ] && [ "$v" -ge 11 ] || skip_all "no QEMU >= 11 in the trixie chroot (${v:-none})"
ql_init
[ -x "$QL_SAMPLE" ] || skip_all "sample server not built ($QL_SAMPLE)"
if [ "${VU_VFIO_BACKEND:-container}" = iommufd ] &&
   ! grep -qE ' iova_bitmap_set($|[[:space:]])' /proc/kallsyms; then
	skip_all "iommufd logs nothing for the mdev and this kernel has no iova_bitmap for the mdev's own DMA log"
fi
# the source server's state at the switchover point, and its saving arc
MQ_STOPPED=STOP
MQ_SAVE_ARC="STOP->STOP_COPY"
if [ -n "${VU_MIG_PRE_COPY:-}" ]; then
	QL_SERVER_ARGS=(--device dma --pre-copy)
	MQ_STOPPED=STOP_COPY
	MQ_SAVE_ARC="RUNNING->PRE_COPY PRE_COPY->PRE_COPY_P2P PRE_COPY_P2P->STOP_COPY"
fi

TOP_DIR=$QL_DIR
# The "firmware": 64 KiB of HLT. With -qtest these QEMUs still run TCG (no
# qtest accelerator is built in), so a running VM (cont) would run SeaBIOS,
# which moves BAR0 and resets the machine when it finds nothing to boot;
# this one halts at the reset vector (interrupts off) and touches nothing.
HLT_BIOS=$TOP_DIR/hlt.bin
head -c 65536 /dev/zero | tr '\0' '\364' > "$HLT_BIOS"
SLOW=${QL_SLOW:-1}
MIG_TIMEOUT=$((120 * SLOW))	# bound on a migration's completion
# The pages of the server's shared-memory window the copy touched stay
# pinned, and type1 reports pinned pages dirty at every sync: each round
# re-sends them (3 MiB here), more than QEMU's default 300 ms of downtime
# carries at the bandwidth it measures under TCG (seen: no switchover in
# 60 s, or one after 21 s and 27 rounds).
DOWNTIME_MS=${QL_MIG_DOWNTIME_MS:-10000}
PAT_LEN=65536 STEP=4096 STEPS=4	# the background copy pauses after 16 KiB
PAUSED_AT=$((STEP * STEPS))
SRC=0x100000 DST=0x200000 MSI_ADDR=0x300000 MSI_DATA=0x4d534958
SCRATCH=0x5ca7c4ed
# Guest RAM the "guest" fills: zero pages cost QEMU a few bytes each and
# escape max-bandwidth, so without data a throttled migration of the
# 256 MiB guest ends within a second or two, before it can be cancelled.
FILL=0x1000000 FILL_LEN=0x2000000 FILL_BYTE=0xa5
QL_REG_PROGRESS=0x68 QL_REG_STEP=0x70 QL_REG_STEPS=0x74

# ---- two guests: a "side" is a server, an mdev and a QEMU -----------------
#
# qemu_lib.sh keeps one of each in its QL_* globals; side NAME saves the
# current side's and loads NAME's. Each side has its own directory
# (TOP_DIR/NAME: server.log, qemu.log, qmp-events, sockets, FIFOs).

declare -A SIDES=()
SIDE_VARS="QL_DIR QL_SOCK QL_UUID QL_SRV_PID QL_QEMU_PID QL_QMP_W QL_QMP_R MQ_QT_R MQ_QT_W MQ_MARK"
CUR=""
ALL_SIDES=""

side() {
	local v
	if [ -n "$CUR" ]; then
		for v in $SIDE_VARS; do SIDES[$CUR.$v]=${!v:-}; done
	fi
	CUR=$1
	case " $ALL_SIDES " in *" $1 "*) ;; *) ALL_SIDES="$ALL_SIDES $1" ;; esac
	for v in $SIDE_VARS; do printf -v "$v" '%s' "${SIDES[$CUR.$v]:-}"; done
	if [ -z "$QL_DIR" ]; then
		QL_DIR=$TOP_DIR/$1 QL_SOCK=$TOP_DIR/$1/dma.sock
		mkdir -p "$QL_DIR"
	fi
	QL_Q=("$MQ_QT_R" "$MQ_QT_W")
}

# side_up NAME [QEMU ARGS...]: NAME gets a DMA sample, a new mdev attached
# to it, and QEMU 11 on the mdev (qtest and QMP on FIFOs: two QEMUs at a
# time, where qemu_lib.sh's coprocess allows one), stopped (-S).
side_up() {
	local -a args backend=()
	local iommufd=""
	side "$1"
	shift
	ql_server_start && ql_mdev_create && ql_mdev_attach ||
		{ DETAIL="server, mdev or attach failed: $(tail -n 2 "$QL_DIR/server.log")"; return 1; }
	rm -f "$QL_DIR"/qmp.in "$QL_DIR"/qmp.out "$QL_DIR"/qtest.in "$QL_DIR"/qtest.out
	mkfifo "$QL_DIR/qmp.in" "$QL_DIR/qmp.out" "$QL_DIR/qtest.in" "$QL_DIR/qtest.out"
	exec {QL_QMP_W}<> "$QL_DIR/qmp.in" {QL_QMP_R}<> "$QL_DIR/qmp.out" \
	     {MQ_QT_W}<> "$QL_DIR/qtest.in" {MQ_QT_R}<> "$QL_DIR/qtest.out"
	QL_Q=("$MQ_QT_R" "$MQ_QT_W")
	: > "$QL_DIR/qmp-events"
	if [ "${VU_VFIO_BACKEND:-container}" = iommufd ]; then
		# shellcheck disable=SC2054 # commas belong to QEMU's option syntax
		backend=(-object iommufd,id=iommufd0)
		iommufd=,iommufd=iommufd0
	fi
	# shellcheck disable=SC2054 # commas belong to QEMU's option syntax
	args=(-machine pc -nodefaults -display none -m 256M -S -bios "$HLT_BIOS"
	      "${backend[@]}"
	      -qtest stdio -qtest-log /dev/null
	      -chardev "pipe,id=qmp,path=$QL_DIR/qmp" -mon chardev=qmp,mode=control
	      -device "vfio-pci,sysfsdev=$QL_MDEVS/$QL_UUID,id=vu0,addr=$QL_SLOT.0,enable-migration=on,migration-events=on$iommufd"
	      -trace 'vfio_msi*' -trace 'vfio_migration*' -trace 'vfio_save_setup'
	      -trace 'vfio_save_complete_precopy' -trace 'vfio_save_cleanup'
	      -trace 'vfio_load_state' -trace 'vfio_load_cleanup'
	      -trace 'vfio_vmstate_change*' -trace vfio_query_stop_copy_size
	      -trace vfio_device_dirty_tracking_start
	      "$@")
	ql_log "qemu-system-x86_64 ${args[*]}"
	"$QL_QEMU" "${args[@]}" < "$QL_DIR/qtest.in" > "$QL_DIR/qtest.out" \
		2>> "$QL_DIR/qemu.log" &
	QL_QEMU_PID=$!
	if ! ql_qmp_line || ! ql_qmp '{"execute": "qmp_capabilities"}'; then
		DETAIL="QMP did not come up: $(tail -n 3 "$QL_DIR/qemu.log")"
		return 1
	fi
	# the qtest channel answers
	ql_qtest outl 0xcf8 $QL_CF8 || { DETAIL="qtest: $QL_REPLY"; return 1; }
}

# side_down: QEMU, server and mdev of the current side gone (bounded).
side_down() {
	ql_cleanup
	[ -n "$MQ_QT_W" ] && exec {MQ_QT_W}>&- {MQ_QT_R}<&-
	MQ_QT_W="" MQ_QT_R=""
	QL_UUID=""
	return 0
}

cleanup() {
	local s
	for s in $ALL_SIDES; do
		side "$s"
		side_down
	done
	rm -rf "$TOP_DIR"
}
trap cleanup EXIT

# ---- QMP helpers -----------------------------------------------------------

# run_state -> MQ_RUN (query-status: running, paused, postmigrate, ...)
run_state() {
	MQ_RUN="?"
	ql_qmp '{"execute": "query-status"}' || return
	[[ $QL_QMP_REPLY =~ \"status\":\ \"([a-z-]+)\" ]] && MQ_RUN=${BASH_REMATCH[1]}
}

# mig_state -> MQ_MIG (query-migrate's status; "none" before any); the
# top-level "status" comes first in QEMU's reply (MigrationInfo's order).
mig_state() {
	MQ_MIG="none"
	ql_qmp '{"execute": "query-migrate"}' || return
	[[ $QL_QMP_REPLY =~ \"status\":\ \"([a-z-]+)\" ]] && MQ_MIG=${BASH_REMATCH[1]}
	return 0
}

# mig_wait "STATE..." SECONDS: polls query-migrate until its status is one
# of STATE (or failed/cancelled, which end a migration); MQ_WAITED the
# seconds it took. 0 when a wanted state was reached.
mig_wait() {
	local t0 end
	t0=$(ql_now)
	end=$((SECONDS + $2))
	while [ $SECONDS -le $end ]; do
		mig_state || return 2
		MQ_WAITED=$(ql_since "$t0")
		case " $1 " in *" $MQ_MIG "*) return 0 ;; esac
		case $MQ_MIG in failed|cancelled) return 1 ;; esac
		sleep 0.2
	done
	return 1
}

# mig_field NAME: a number from the last query-migrate reply ("total-time",
# "downtime"; "ram.transferred", "vfio.transferred").
mig_field() {
	printf '%s' "$QL_QMP_REPLY" | python3 -c '
import json, sys
r = json.load(sys.stdin)["return"]
for k in sys.argv[1].split("."):
    r = r.get(k, {}) if isinstance(r, dict) else {}
print(r if r != {} else "?")' "$1"
}

# vfio_events: the device states QEMU reported (VFIO_MIGRATION events), in
# order, space separated.
vfio_events() {
	sed -n 's/.*"VFIO_MIGRATION".*"device-state": "\([a-z-]*\)".*/\1/p' \
		"$QL_DIR/qmp-events" | tr '\n' ' '
}

# srv_mark: later srv_states calls list the arcs from here on.
srv_mark() { MQ_MARK=$(wc -l < "$QL_DIR/server.log"); }

# srv_states: the sample's migration arcs since srv_mark, as its log tells
# them ("RUNNING->RUNNING_P2P ...", a reset as "reset(STATE)->RUNNING"; the
# library's line and the sample's own for one arc count once), in MQ_ARCS;
# its state now (RUNNING when it never moved) in MQ_SRV.
srv_states() {
	local out
	out=$(awk -v mark="${MQ_MARK:-0}" '
		/migration: [A-Z_0-9]+ -> [A-Z_0-9]+$/ { a = $(NF - 2) "->" $NF; s = $NF }
		/migration: reset in [A-Z_0-9]+$/ { a = "reset(" $NF ")->RUNNING"; s = "RUNNING" }
		a != "" && a != last { if (NR > mark) arcs = arcs " " a; last = a }
		{ a = "" }
		END { print (s == "" ? "RUNNING" : s) arcs }' "$QL_DIR/server.log")
	MQ_SRV=${out%% *}
	MQ_ARCS=""
	[[ $out == *" "* ]] && MQ_ARCS=${out#* }
}

# wait_log PATTERN SECONDS: a line in the current side's server.log.
wait_log() {
	local end=$((SECONDS + $2))
	while ! grep -q -- "$1" "$QL_DIR/server.log"; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.1
	done
}

# mig_params: the source's parameters for a migration meant to reach the
# switchover: no throttle, DOWNTIME_MS. Where the kernel has no
# MIG_DATA_SIZE (6.1: QEMU's trace says ret -25 and QEMU assumes 100 GiB of
# device state, which no downtime fits) also avail-switchover-bandwidth
# 1 TiB/s, so that QEMU switches over all the same; MQ_NOTE says so.
mig_params() {
	local extra=""
	MQ_NOTE=""
	if grep -q 'vfio_query_stop_copy_size .* ret -' "$QL_DIR/qemu.log"; then
		extra=', "avail-switchover-bandwidth": 1099511627776'
		MQ_NOTE="; the kernel has no MIG_DATA_SIZE (QEMU assumes 100 GiB): avail-switchover-bandwidth 1 TiB/s"
	fi
	ql_qmp "{\"execute\": \"migrate-set-parameters\", \"arguments\": {\"max-bandwidth\": 1073741824, \"downtime-limit\": $DOWNTIME_MS$extra}}" ||
		{ DETAIL="parameters: $QL_QMP_REPLY"; return 1; }
}

# mig_start URI: the current side migrates to URI.
mig_start() {
	ql_qmp "{\"execute\": \"migrate\", \"arguments\": {\"uri\": \"$1\"}}" ||
		{ DETAIL="migrate: $QL_QMP_REPLY"; return 1; }
}

# dest_up NAME: a destination side listening on TOP_DIR/NAME/mig.sock.
dest_up() {
	side_up "$1" -incoming defer || return
	MQ_URI=unix:$QL_DIR/mig.sock
	ql_qmp "{\"execute\": \"migrate-incoming\", \"arguments\": {\"uri\": \"$MQ_URI\"}}" ||
		{ DETAIL="migrate-incoming: $QL_QMP_REPLY"; return 1; }
}

# dest_gone: the current (destination) side's QEMU ends after a cancelled
# migration; its exit status, 124 when it had to be stopped.
dest_gone() {
	local rc
	ql_wait_pid "$QL_QEMU_PID" $((15 * SLOW))
	rc=$?
	side_down
	return $rc
}

# device_intact WHAT: the source's device answers and kept the guest's
# state (SCRATCH, the copy paused at PAUSED_AT).
device_intact() {
	ql_bar_read32 $QL_REG_MAGIC && [ "$QL_VAL" = $QL_DMA_MAGIC ] ||
		{ DETAIL="$1: MAGIC $QL_VAL"; return 1; }
	ql_bar_read32 $QL_REG_SCRATCH && [ "$QL_VAL" = $SCRATCH ] ||
		{ DETAIL="$1: SCRATCH $QL_VAL"; return 1; }
	ql_bar_read32 $QL_REG_STATUS && [ "$QL_VAL" = 0x1 ] ||
		{ DETAIL="$1: STATUS $QL_VAL (the paused copy should be busy)"; return 1; }
	ql_qtest_val readq $((QL_BAR0 + QL_REG_PROGRESS)) && [ $((QL_VAL)) = $PAUSED_AT ] ||
		{ DETAIL="$1: PROGRESS $QL_VAL"; return 1; }
}

# mem_is ADDR HEX: guest RAM at ADDR holds the bytes of HEX, read 16 KiB
# at a time (one 64 KiB read took more than QL_TIMEOUT on a loaded host,
# and a late answer would be taken for the next command's).
mem_is() {
	local off=0 len=$((${#2} / 2)) n
	while [ $off -lt $len ]; do
		n=$((len - off > 16384 ? 16384 : len - off))
		ql_qtest read $(($1 + off)) $n || return 2
		[ "${QL_REPLY#OK 0x}" = "${2:$((off * 2)):$((n * 2))}" ] || return 1
		off=$((off + n))
	done
}

# mem_write ADDR HEX: the bytes of HEX into guest RAM, 16 KiB at a time.
mem_write() {
	local off=0 len=$((${#2} / 2)) n
	while [ $off -lt $len ]; do
		n=$((len - off > 16384 ? 16384 : len - off))
		ql_qtest write $(($1 + off)) $n "0x${2:$((off * 2)):$((n * 2))}" || return
		off=$((off + n))
	done
}

# ---- the checks ------------------------------------------------------------

t_source_runs() {
	run_state && [ "$MQ_RUN" = prelaunch ] || { DETAIL="source state $MQ_RUN"; return 1; }
	# (a guest would run: the migration stops it, the cancel restarts it)
	ql_qmp '{"execute": "cont"}' && run_state && [ "$MQ_RUN" = running ] ||
		{ DETAIL="cont: $QL_QMP_REPLY; state $MQ_RUN"; return 1; }
	DETAIL="QEMU $v on mdev $QL_UUID (server 1), enable-migration=on; running"
}

# As a guest driver: BAR0 and bus mastering on, SCRATCH, MSI-X vector 0 to
# guest RAM, SRC filled, then a background copy of PAT_LEN bytes that
# STEPS lets run STEPS steps of STEP bytes: it pauses, busy, at PAUSED_AT.
t_guest_state() {
	local i
	PAT=$(ql_random_hex $PAT_LEN)
	ql_map_bar0 && ql_bar_write32 $QL_REG_SCRATCH $SCRATCH || return
	ql_qtest writel $MSI_ADDR 0 && ql_msix_setup $MSI_ADDR $MSI_DATA ||
		{ DETAIL="MSI-X setup"; return 1; }
	mem_write $SRC "$PAT" && ql_qtest memset $DST $PAT_LEN 0 &&
		ql_qtest memset $FILL $FILL_LEN $FILL_BYTE || return
	ql_bar_write32 $QL_REG_STEP $STEP && ql_bar_write32 $QL_REG_STEPS $STEPS &&
		ql_bar_write64 $QL_REG_SRC $SRC && ql_bar_write64 $QL_REG_DST $DST &&
		ql_bar_write64 $QL_REG_LEN $PAT_LEN && ql_bar_write32 $QL_REG_IRQ_CTRL 1 &&
		ql_bar_write32 $QL_REG_DOORBELL 4 || return
	for ((i = 0; i < 100; i++)); do
		ql_qtest_val readq $((QL_BAR0 + QL_REG_PROGRESS)) || return
		[ $((QL_VAL)) -ge $PAUSED_AT ] && break
		sleep 0.1
	done
	sleep 0.5		# (paused: no further step)
	device_intact "background copy" || return
	ql_bar_read32 $QL_REG_STEPS && [ "$QL_VAL" = 0x0 ] || { DETAIL="STEPS $QL_VAL"; return 1; }
	mem_is $DST "${PAT:0:$((PAUSED_AT * 2))}" ||
		{ DETAIL="the first $PAUSED_AT bytes were not copied"; return 1; }
	DETAIL="$((FILL_LEN >> 20)) MiB of RAM filled; SCRATCH $SCRATCH, MSI-X vector 0 -> $MSI_ADDR, copy of $PAT_LEN bytes $SRC -> $DST paused at $PAUSED_AT (STATUS busy)"
}

# mig_abandon: after a failed check, no migration left running on the
# source (the next one would be refused) and the destination gone.
mig_abandon() {
	local dest=$1
	side src
	mig_state
	case $MQ_MIG in active|pre-switchover|device|setup)
		ql_qmp '{"execute": "migrate_cancel"}'
		mig_wait "cancelled failed completed" 30
		;;
	esac
	ql_qmp '{"execute": "migrate-set-capabilities", "arguments": {"capabilities": [{"capability": "pause-before-switchover", "state": false}]}}'
	side "$dest"
	side_down
	side src
}

# Cancelled while RAM is sent (64 KiB/s: the filled RAM takes minutes);
# without PRE_COPY the device is not touched before switchover.
cancel_active() {
	dest_up cancel1 || return
	side src
	srv_mark
	ql_qmp '{"execute": "migrate-set-parameters", "arguments": {"max-bandwidth": 65536}}' ||
		{ DETAIL="max-bandwidth: $QL_QMP_REPLY"; return 1; }
	mig_start "$MQ_URI" || return
	mig_wait active 20 || { DETAIL="migration $MQ_MIG, not active"; return 1; }
	sleep 1
	mig_state && [ "$MQ_MIG" = active ] || { DETAIL="after 1 s: $MQ_MIG"; return 1; }
	DETAIL="active, $(mig_field ram.transferred) RAM bytes sent"
	ql_qmp '{"execute": "migrate_cancel"}' || { DETAIL="migrate_cancel: $QL_QMP_REPLY"; return 1; }
	mig_wait cancelled 30 && [ "$MQ_MIG" = cancelled ] ||
		{ DETAIL="$DETAIL; after migrate_cancel: $MQ_MIG"; return 1; }
	DETAIL="$DETAIL; cancelled in $MQ_WAITED s"
	run_state && [ "$MQ_RUN" = running ] || { DETAIL="$DETAIL; source $MQ_RUN"; return 1; }
	srv_states
	[ "$MQ_SRV" = RUNNING ] || { DETAIL="$DETAIL; server 1: $MQ_ARCS"; return 1; }
	device_intact "after the cancel" || return
	DETAIL="$DETAIL; source running, server 1 RUNNING (arcs: ${MQ_ARCS:-none}), registers and paused copy intact"
	side cancel1
	dest_gone
	DETAIL="$DETAIL; destination QEMU exit $?"
}

t_cancel_active() { cancel_active || { mig_abandon cancel1; return 1; }; }

# Cancelled at the switchover point: QEMU stopped the VM and the device
# (pause-before-switchover), the cancel runs both again.
cancel_switchover() {
	dest_up cancel2 || return
	side src
	srv_mark
	: > "$QL_DIR/qmp-events"
	mig_params || return
	ql_qmp '{"execute": "migrate-set-capabilities", "arguments": {"capabilities": [{"capability": "pause-before-switchover", "state": true}]}}' ||
		{ DETAIL="parameters: $QL_QMP_REPLY"; return 1; }
	mig_start "$MQ_URI" || return
	mig_wait pre-switchover $MIG_TIMEOUT ||
		{ DETAIL="no pre-switchover: $MQ_MIG $(mig_field error-desc)"; return 1; }
	run_state
	srv_states
	DETAIL="pre-switchover after $MQ_WAITED s: source $MQ_RUN, server 1 $MQ_SRV ($MQ_ARCS), QEMU: $(vfio_events)"
	[ "$MQ_SRV" = "$MQ_STOPPED" ] || return 1
	srv_mark
	ql_qmp '{"execute": "migrate_cancel"}' || { DETAIL="$DETAIL; migrate_cancel: $QL_QMP_REPLY"; return 1; }
	mig_wait cancelled 30 && [ "$MQ_MIG" = cancelled ] ||
		{ DETAIL="$DETAIL; after migrate_cancel: $MQ_MIG"; return 1; }
	run_state && [ "$MQ_RUN" = running ] || { DETAIL="$DETAIL; source $MQ_RUN"; return 1; }
	srv_states
	[ "$MQ_SRV" = RUNNING ] || { DETAIL="$DETAIL; after the cancel server 1: $MQ_SRV ($MQ_ARCS)"; return 1; }
	device_intact "after the cancel" || return
	DETAIL="$DETAIL; cancelled: source running, server 1 $MQ_ARCS, QEMU: $(vfio_events); registers and paused copy intact$MQ_NOTE"
	ql_qmp '{"execute": "migrate-set-capabilities", "arguments": {"capabilities": [{"capability": "pause-before-switchover", "state": false}]}}' ||
		{ DETAIL="$DETAIL; capability off: $QL_QMP_REPLY"; return 1; }
	side cancel2
	dest_gone
	DETAIL="$DETAIL; destination QEMU exit $?"
}

t_cancel_switchover() { cancel_switchover || { mig_abandon cancel2; return 1; }; }

t_dest_up() {
	dest_up dst || return
	DETAIL="QEMU $v -incoming defer on mdev $QL_UUID (server 2), listening on $MQ_URI"
}

# The device writes guest RAM while QEMU sends RAM: the first pass runs
# at 1 MiB/s, and once it is past DST (more than 1 MiB sent: before FILL
# there are only a few dozen non-zero pages) STEPS lets the paused copy
# write one more STEP into DST, a page already sent. Only the dirty log
# (the container's, or the mdev's own where the kernel offers one and
# QEMU prefers it) makes QEMU send it again: t_dest_ram then reads the
# step in the destination's RAM. Then full speed to completion.
t_migrate() {
	local t0 i log note
	side src
	srv_mark
	: > "$QL_DIR/qmp-events"
	mig_params || return
	ql_qmp '{"execute": "migrate-set-capabilities", "arguments": {"capabilities": [{"capability": "pause-before-switchover", "state": false}]}}' ||
		{ DETAIL="parameters: $QL_QMP_REPLY"; return 1; }
	ql_qmp '{"execute": "migrate-set-parameters", "arguments": {"max-bandwidth": 1048576}}' ||
		{ DETAIL="max-bandwidth: $QL_QMP_REPLY"; return 1; }
	t0=$(ql_now)
	mig_start "$MQ_URI" || return
	for ((i = 0; i < 300 * SLOW; i++)); do
		mig_state || return
		[ "$MQ_MIG" = active ] && [ "$(mig_field ram.transferred)" -gt 1048576 ] 2>/dev/null && break
		sleep 0.1
	done
	[ "$MQ_MIG" = active ] || { DETAIL="migration $MQ_MIG, not active"; return 1; }
	ql_bar_write32 $QL_REG_STEPS 1 || return
	for ((i = 0; i < 100 * SLOW; i++)); do
		ql_qtest_val readq $((QL_BAR0 + QL_REG_PROGRESS)) || return
		[ $((QL_VAL)) -ge $((PAUSED_AT + STEP)) ] && break
		sleep 0.1
	done
	[ $((QL_VAL)) = $((PAUSED_AT + STEP)) ] || { DETAIL="PROGRESS $QL_VAL after one more step"; return 1; }
	mig_state && [ "$MQ_MIG" = active ] ||
		{ DETAIL="the step came after the RAM pass: migration $MQ_MIG"; return 1; }
	PAUSED_AT=$((PAUSED_AT + STEP))
	log="the container's dirty log"
	grep -q vfio_device_dirty_tracking_start "$QL_DIR/qemu.log" && log="the mdev's DMA log"
	note="; the device wrote DST+$((PAUSED_AT - STEP)) after $(ql_since "$t0") s, $(mig_field ram.transferred) RAM bytes sent (QEMU used $log)"
	mig_params || return
	MQ_NOTE="$note$MQ_NOTE"
	mig_wait completed $MIG_TIMEOUT ||
		{ DETAIL="migration $MQ_MIG after $(ql_since "$t0") s: $(mig_field error-desc)"; return 1; }
	MIG_SECONDS=$(ql_since "$t0")
	DETAIL="completed in $MIG_SECONDS s (QEMU: total-time $(mig_field total-time) ms, downtime $(mig_field downtime) ms, RAM $(mig_field ram.transferred) bytes, VFIO $(mig_field vfio.transferred) bytes)$MQ_NOTE"
}

t_source_let_go() {
	side src
	run_state && [ "$MQ_RUN" = postmigrate ] || { DETAIL="source state $MQ_RUN"; return 1; }
	srv_states
	DETAIL="source postmigrate; server 1: $MQ_ARCS; QEMU: $(vfio_events)"
	grep -q 'migration: state saved: ok' "$QL_DIR/server.log" ||
		{ DETAIL="$DETAIL; no 'state saved: ok'"; return 1; }
	[[ $MQ_ARCS == *"$MQ_SAVE_ARC"* ]] && [ "$MQ_SRV" = STOP ] || return 1
	ql_bar_read32 $QL_REG_MAGIC && [ "$QL_VAL" = $QL_DMA_MAGIC ] ||
		{ DETAIL="$DETAIL; MAGIC $QL_VAL"; return 1; }
	DETAIL="$DETAIL; the stopped device still answers reads"
}

# The destination VM was started with -S (as libvirt does): it stays
# paused after the migration and runs with cont; the device leaves
# RESUMING (the server loads the stream) on the way to RUNNING.
t_dest_runs() {
	side dst
	# (the source's "completed" may come before the destination's)
	mig_wait completed 30 || { DETAIL="incoming migration $MQ_MIG"; return 1; }
	run_state && [ "$MQ_RUN" = paused ] || { DETAIL="destination state $MQ_RUN"; return 1; }
	ql_qmp '{"execute": "cont"}' && run_state && [ "$MQ_RUN" = running ] ||
		{ DETAIL="cont: $QL_QMP_REPLY; state $MQ_RUN"; return 1; }
	wait_log 'migration: [A-Z_0-9]* -> RUNNING$' 10
	srv_states
	DETAIL="destination running; server 2: $MQ_ARCS; QEMU: $(vfio_events)"
	grep -q 'migration: state of version 1 loaded: ok' "$QL_DIR/server.log" ||
		{ DETAIL="$DETAIL; no 'state loaded: ok' in server 2's log"; return 1; }
	grep -q 'dma: state loaded, a copy in flight' "$QL_DIR/server.log" ||
		{ DETAIL="$DETAIL; server 2 did not load the copy in flight"; return 1; }
	[[ $MQ_ARCS == *"RESUMING->STOP"* ]] && [ "$MQ_SRV" = RUNNING ]
}

t_dest_registers() {
	local r name off want op
	side dst
	for r in "MAGIC $QL_REG_MAGIC $QL_DMA_MAGIC 4" "SCRATCH $QL_REG_SCRATCH $SCRATCH 4" \
		 "SRC $QL_REG_SRC $SRC 8" "DST $QL_REG_DST $DST 8" "LEN $QL_REG_LEN $PAT_LEN 8" \
		 "STATUS $QL_REG_STATUS 1 4" "IRQ_CTRL $QL_REG_IRQ_CTRL 1 4" \
		 "STEP $QL_REG_STEP $STEP 4" "STEPS $QL_REG_STEPS 0 4" \
		 "PROGRESS $QL_REG_PROGRESS $PAUSED_AT 8"; do
		read -r name off want op <<< "$r"
		[ "$op" = 8 ] && op=readq || op=readl
		ql_qtest_val $op $((QL_BAR0 + off)) || { DETAIL="$name: $QL_REPLY"; return 1; }
		[ $((QL_VAL)) = $((want)) ] || { DETAIL="$name reads $QL_VAL, not $want"; return 1; }
	done
	ql_cfg_read 0x04 2 && [ $((QL_VAL & 6)) = 6 ] || { DETAIL="command $QL_VAL"; return 1; }
	ql_cfg_read 0x10 4 && [ "$QL_VAL" = $QL_BAR0 ] || { DETAIL="BAR0 $QL_VAL"; return 1; }
	ql_find_cap 0x11 && ql_cfg_read $((QL_CAP + 2)) 2 && [ $((QL_VAL & 0x8000)) != 0 ] ||
		{ DETAIL="MSI-X control $QL_VAL"; return 1; }
	ql_qtest_val readl $((QL_BAR0 + QL_MSIX_TABLE + 8)) && [ "$QL_VAL" = $MSI_DATA ] ||
		{ DETAIL="MSI-X entry 0 data $QL_VAL"; return 1; }
	DETAIL="MAGIC, SCRATCH, SRC/DST/LEN, STATUS busy, IRQ_CTRL, STEP/STEPS, PROGRESS $PAUSED_AT; config: memory+master, BAR0 $QL_BAR0, MSI-X enabled, entry 0 $MSI_DATA"
}

t_dest_ram() {
	side dst
	local zero
	mem_is $SRC "$PAT" || { DETAIL="SRC differs in the destination's RAM"; return 1; }
	mem_is $DST "${PAT:0:$((PAUSED_AT * 2))}" ||
		{ DETAIL="DST's first $PAUSED_AT bytes differ"; return 1; }
	zero=$(printf '%0*d' $(((PAT_LEN - PAUSED_AT) * 2)) 0)
	mem_is $((DST + PAUSED_AT)) "$zero" ||
		{ DETAIL="DST past $PAUSED_AT is not zero"; return 1; }
	ql_qtest_val readl $FILL && [ "$QL_VAL" = 0xa5a5a5a5 ] &&
		ql_qtest_val readl $((FILL + FILL_LEN - 4)) && [ "$QL_VAL" = 0xa5a5a5a5 ] ||
		{ DETAIL="the filled RAM reads $QL_VAL"; return 1; }
	DETAIL="SRC ($PAT_LEN bytes), DST (copied $PAUSED_AT, rest zero) and the filled RAM as on the source"
}

t_dest_copy_finishes() {
	local i
	side dst
	ql_bar_write32 $QL_REG_STEPS 0xffffffff || return
	for ((i = 0; i < 100 * SLOW; i++)); do
		ql_bar_read32 $QL_REG_STATUS || return
		[ "$QL_VAL" != 0x1 ] && break
		sleep 0.1
	done
	[ "$QL_VAL" = 0x2 ] || { DETAIL="STATUS $QL_VAL"; ql_bar_read32 $QL_REG_ERROR; DETAIL="$DETAIL, ERROR $QL_VAL"; return 1; }
	mem_is $DST "$PAT" || { DETAIL="DST differs from SRC after the copy"; return 1; }
	ql_qtest_val readq $((QL_BAR0 + QL_REG_PROGRESS)) && [ $((QL_VAL)) = $PAT_LEN ] ||
		{ DETAIL="PROGRESS $QL_VAL"; return 1; }
	DETAIL="STEPS 0xffffffff: the copy went on from $PAUSED_AT to $PAT_LEN bytes; DST = SRC"
}

t_dest_msix() {
	side dst
	ql_wait_mem32 $MSI_ADDR $MSI_DATA $((10 * SLOW)) ||
		{ DETAIL="no MSI-X message at $MSI_ADDR (reads $QL_VAL)"; return 1; }
	grep -q 'vfio_msi_interrupt' "$QL_DIR/qemu.log" ||
		{ DETAIL="no vfio_msi_interrupt in the destination's trace"; return 1; }
	DETAIL="$MSI_DATA at $MSI_ADDR $QL_WAITED s after; $(grep 'vfio_msi_interrupt' "$QL_DIR/qemu.log" | tail -n 1)"
}

t_dest_new_copy() {
	local pat
	side dst
	pat=$(ql_random_hex 4096)
	ql_qtest writel $MSI_ADDR 0 && ql_qtest write $SRC 4096 "0x$pat" &&
		ql_qtest memset $DST 4096 0 || return
	ql_dma_copy $SRC $DST 4096 1 && [ "$QL_VAL" = 0x2 ] || { DETAIL="STATUS $QL_VAL"; return 1; }
	ql_qtest read $DST 4096 && [ "$QL_REPLY" = "OK 0x$pat" ] || { DETAIL="copy differs"; return 1; }
	ql_wait_mem32 $MSI_ADDR $MSI_DATA $((10 * SLOW)) || { DETAIL="no MSI-X message"; return 1; }
	DETAIL="4096 bytes copied, MSI-X after $QL_WAITED s"
}

t_quit() {
	local t0 s
	t0=$(ql_now)
	for s in dst src; do
		side $s
		ql_qemu_stop
	done
	DETAIL="both QEMUs quit in $(ql_since "$t0") s"
}

# ---- main -------------------------------------------------------------------

echo "TAP version 13"
DETAIL=""
if ! side_up src; then
	if grep -q 'migration is not supported in kernel' "$TOP_DIR/src/qemu.log"; then
		skip_all "the module offers no VFIO migration (QEMU $v: migration is not supported in kernel)"
	fi
	echo "1..$NTESTS"
	not_ok source_starts "$DETAIL"
	while [ $n -lt $NTESTS ]; do not_ok skipped "the source did not start"; done
	tap_finish
fi
echo "1..$NTESTS"
note "$("$QL_QEMU" --version | head -n 1); VFIO ${VU_VFIO_BACKEND:-container}; kernel $(uname -r); work dir $TOP_DIR"
check source_starts t_source_runs
check guest_programs_device t_guest_state
check cancel_while_ram_is_sent t_cancel_active
check cancel_at_switchover t_cancel_switchover
check destination_starts t_dest_up
check migrate_completes t_migrate
if [ -n "${MIG_SECONDS:-}" ]; then
	check source_stopped_after t_source_let_go
	check destination_loads_and_runs t_dest_runs
	check destination_registers t_dest_registers
	check destination_guest_ram t_dest_ram
	check paused_copy_finishes t_dest_copy_finishes
	check copy_msix_reaches_destination t_dest_msix
	check destination_new_copy t_dest_new_copy
fi
while [ $n -lt $((NTESTS - 1)) ]; do not_ok skipped "the migration did not complete"; done
check qemus_quit t_quit
[ -n "${MIG_SECONDS:-}" ] && note "migration time: $MIG_SECONDS s"

for s in $ALL_SIDES; do
	side "$s"
	[ -s "$QL_DIR/qemu.log" ] || continue
	[ $failed -gt 0 ] || continue
	note "side $s:"
	tail -n 15 "$QL_DIR/qemu.log" | sed 's/^/#   qemu: /'
	tail -n 15 "$QL_DIR/server.log" | sed 's/^/#   server: /'
done
[ $failed -gt 0 ] && exit 1
exit 0
