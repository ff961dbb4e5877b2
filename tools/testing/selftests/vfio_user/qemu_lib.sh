# SPDX-License-Identifier: GPL-2.0-only
# shellcheck shell=bash disable=SC2034
# (SC2034: the globals here are for the scripts that source this file)
#
# Helpers to drive an unmodified QEMU (Debian's qemu-system-x86_64) whose
# -device vfio-pci,sysfsdev= sits on a vfio_user mdev, without a guest OS:
# QEMU runs stopped (-S) with the qtest protocol on its stdin/stdout, so the
# caller plays the guest (port I/O to PCI config space, MMIO to the BAR,
# guest-RAM reads and writes), and QMP on a FIFO pair. Sourced by
# qemu_test.sh and by the `make run` demo (scripts/demo-guest).
#
# Everything lives in $QL_DIR (a fresh directory per run): qemu.log holds
# QEMU's stderr with its vfio/acpi trace events, server.log the sample
# server's, qmp-events the QMP events seen.
#
# Every wait is bounded: qtest/QMP replies by QL_TIMEOUT seconds, QEMU's
# exit by 10 s (then SIGKILL).

QL_TIMEOUT=${QL_TIMEOUT:-30}
QL_SLOT=4			# the device's PCI slot: 00:04.0
QL_CF8=$((0x80000000 | QL_SLOT << 11))
QL_BAR0=0xe0000000		# where the "guest" maps BAR0
QL_TYPE=/sys/class/vfio_user/vfio_user/mdev_supported_types/vfio_user-pci
QL_MDEVS=/sys/bus/mdev/devices

# The DMA sample's BAR0 registers (tools/vfio-user/dma.c, --help).
QL_REG_MAGIC=0x00 QL_REG_SRC=0x08 QL_REG_DST=0x10 QL_REG_LEN=0x18
QL_REG_DOORBELL=0x20 QL_REG_STATUS=0x24 QL_REG_ERROR=0x28
QL_REG_IRQ_CTRL=0x2c QL_REG_COUNT=0x30 QL_REG_SCRATCH=0x40
QL_REG_SHM_BYTES=0x48 QL_REG_RD_MSGS=0x50 QL_REG_WR_MSGS=0x58
QL_DMA_MAGIC=0x31414d44 QL_MSIX_TABLE=0x800

QL_REPLY=""
QL_QEMU_PID=""
QL_SRV_PID=""

ql_log() { [ -n "${QL_VERBOSE:-}" ] && printf '    | %s\n' "$*"; return 0; }
ql_now() { date +%s.%N; }
# ql_since T0: seconds since T0, two decimals.
ql_since() { awk -v a="$1" -v b="$(ql_now)" 'BEGIN { printf "%.2f", b - a }'; }

# ql_init: QL_DIR (fresh if unset), repository and tool paths.
ql_init() {
	local lib
	lib=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
	QL_DIR=${QL_DIR:-$(mktemp -d /tmp/vu-qemu.XXXXXX)}
	mkdir -p "$QL_DIR"
	if [ -n "${VFIO_USER_TOOLS:-}" ]; then
		QL_SAMPLE=$VFIO_USER_TOOLS/vfio-user-sample
	elif [ -x "$lib/vfio-user-sample" ]; then
		# kselftest build or install: beside the tests
		QL_SAMPLE=$lib/vfio-user-sample
	elif [ -x "$lib/../../tools/vfio-user/vfio-user-sample" ]; then
		# installed copy in build/selftests/vfio_user/
		QL_SAMPLE=$(cd "$lib/../../tools/vfio-user" && pwd)/vfio-user-sample
	else
		# source tree: tools/testing/selftests/vfio_user/
		QL_SAMPLE=$(cd "$lib/../../../.." && pwd)/build/tools/vfio-user/vfio-user-sample
	fi
	QL_QEMU=${QL_QEMU:-$(command -v qemu-system-x86_64)}
	QL_SOCK=$QL_DIR/dma.sock
}

# ---- the sample server -------------------------------------------------

# ql_server_start: the DMA sample on $QL_SOCK (verbose log appended to
# server.log), or the device and options in QL_SERVER_ARGS (an array);
# returns once the socket exists.
ql_server_start() {
	local i
	local -a dev=(--device dma)
	[ -n "${QL_SERVER_ARGS+set}" ] && dev=("${QL_SERVER_ARGS[@]}")
	rm -f "$QL_SOCK"
	"$QL_SAMPLE" --socket "$QL_SOCK" "${dev[@]}" --verbose \
		< /dev/null >> "$QL_DIR/server.log" 2>&1 &
	QL_SRV_PID=$!
	for ((i = 0; i < 200; i++)); do
		[ -S "$QL_SOCK" ] && return 0
		kill -0 "$QL_SRV_PID" 2> /dev/null || break
		sleep 0.05
	done
	echo "sample server did not come up (log: $QL_DIR/server.log)" >&2
	return 1
}

ql_server_kill() {
	[ -n "$QL_SRV_PID" ] || return 0
	kill -KILL "$QL_SRV_PID" 2> /dev/null
	wait "$QL_SRV_PID" 2> /dev/null
	QL_SRV_PID=""
}

# ---- the mdev ----------------------------------------------------------

# ql_mdev_create: a new mdev, its UUID in QL_UUID.
ql_mdev_create() {
	QL_UUID=$(cat /proc/sys/kernel/random/uuid)
	echo "$QL_UUID" > "$QL_TYPE/create"
}

ql_mdev_attr() { cat "$QL_MDEVS/$QL_UUID/vfio_user/$1"; }
ql_mdev_attach() { echo "$QL_SOCK" > "$QL_MDEVS/$QL_UUID/vfio_user/socket"; }
ql_mdev_exists() { [ -n "${QL_UUID:-}" ] && [ -e "$QL_MDEVS/$QL_UUID" ]; }

# ---- QEMU ----------------------------------------------------------------

# ql_qemu_start [EXTRA QEMU ARGS...]: QEMU with vfio-pci on $QL_UUID at
# 00:04.0, stopped, qtest on a coprocess pipe, QMP on FIFOs; returns once
# QMP is in command mode. QL_DEVICE, when set, is the whole -device
# argument instead (e.g. QEMU's own vfio-user-pci client; id vu0 and
# addr 4.0 are its to give); QL_NO_TRACE=1 leaves out the trace events
# (one line per BAR access: the bench's).
ql_qemu_start() {
	local -a args backend=() trace=()
	local iommufd=""
	if [ "${VU_VFIO_BACKEND:-container}" = iommufd ]; then
		# the device cdev on an iommufd context (QEMU >= 9.0)
		# shellcheck disable=SC2054 # (commas are QEMU's)
		backend=(-object iommufd,id=iommufd0)
		iommufd=,iommufd=iommufd0
	fi
	[ "${QL_NO_TRACE:-}" = 1 ] ||
		trace=(-trace 'vfio_msi*' -trace vfio_intx_enable -trace 'vfio_region_read'
		       -trace 'vfio_region_write' -trace 'vfio_pci_write_config'
		       -trace 'acpi_pci_unplug*' -trace acpi_pci_eject_slot)
	rm -f "$QL_DIR/qmp.in" "$QL_DIR/qmp.out"
	mkfifo "$QL_DIR/qmp.in" "$QL_DIR/qmp.out"
	exec {QL_QMP_W}<> "$QL_DIR/qmp.in" {QL_QMP_R}<> "$QL_DIR/qmp.out"
	: > "$QL_DIR/qmp-events"
	# shellcheck disable=SC2054 # commas belong to QEMU's option syntax
	args=(-machine pc -nodefaults -display none -m 256M -S
	      -qtest stdio -qtest-log /dev/null
	      -chardev "pipe,id=qmp,path=$QL_DIR/qmp" -mon chardev=qmp,mode=control
	      "${backend[@]}"
	      -device "${QL_DEVICE:-vfio-pci,sysfsdev=$QL_MDEVS/$QL_UUID,id=vu0,addr=$QL_SLOT.0$iommufd}"
	      "${trace[@]}" "$@")
	ql_log "qemu-system-x86_64 ${args[*]}"
	coproc QL_Q { exec "$QL_QEMU" "${args[@]}" 2>> "$QL_DIR/qemu.log"; }
	QL_QEMU_PID=$QL_Q_PID
	# the greeting, then capabilities negotiation
	ql_qmp_line || return 1
	ql_qmp '{"execute": "qmp_capabilities"}'
}

ql_qemu_alive() { [ -n "$QL_QEMU_PID" ] && kill -0 "$QL_QEMU_PID" 2> /dev/null; }

# ql_qemu_stop: quit through QMP, then signals; bounded (10 s).
ql_qemu_stop() {
	local i
	[ -n "$QL_QEMU_PID" ] || return 0
	if ql_qemu_alive; then
		{ printf '%s\n' '{"execute": "quit"}' >&"$QL_QMP_W"; } 2> /dev/null
		for ((i = 0; i < 100; i++)); do
			ql_qemu_alive || break
			sleep 0.1
		done
	fi
	if ql_qemu_alive; then
		kill -TERM "$QL_QEMU_PID" 2> /dev/null
		sleep 2
		kill -KILL "$QL_QEMU_PID" 2> /dev/null
	fi
	wait "$QL_QEMU_PID" 2> /dev/null
	QL_QEMU_PID=""
	exec {QL_QMP_W}>&- {QL_QMP_R}<&-
	return 0
}

# ql_qtest CMD...: one qtest command; the reply in QL_REPLY. Returns 0 for
# "OK ...", 1 for another reply, 2 when QEMU does not answer in time.
ql_qtest() {
	QL_REPLY=""
	ql_qemu_alive || { QL_REPLY="(QEMU is not running)"; return 2; }
	{ printf '%s\n' "$*" >&"${QL_Q[1]}"; } 2> /dev/null || return 2
	if ! IFS= read -r -t "$QL_TIMEOUT" QL_REPLY <&"${QL_Q[0]}"; then
		QL_REPLY="(no answer within $QL_TIMEOUT s)"
		return 2
	fi
	ql_log "qtest: $* -> ${QL_REPLY:0:80}"
	[[ $QL_REPLY == OK* ]]
}

# ql_qtest_val CMD...: the value of an "OK 0x..." reply, printed in hex
# (lowercase, no leading zeros), in QL_VAL.
ql_qtest_val() {
	ql_qtest "$@" || return
	QL_VAL=$(printf '0x%x' "${QL_REPLY#OK }")
}

# ql_qmp_line: the next line from QMP (events are logged and skipped
# by ql_qmp).
ql_qmp_line() {
	IFS= read -r -t "$QL_TIMEOUT" QL_QMP_REPLY <&"$QL_QMP_R"
}

# ql_qmp JSON: one QMP command; the reply line in QL_QMP_REPLY, events
# that arrive meanwhile appended to qmp-events. 0 on "return".
ql_qmp() {
	printf '%s\n' "$1" >&"$QL_QMP_W" || return 2
	while ql_qmp_line; do
		case $QL_QMP_REPLY in
		*'"event"'*) printf '%s\n' "$QL_QMP_REPLY" >> "$QL_DIR/qmp-events" ;;
		*'"return"'*) return 0 ;;
		*) return 1 ;;
		esac
	done
	QL_QMP_REPLY="(no QMP answer within $QL_TIMEOUT s)"
	return 2
}

# ql_qmp_wait_event NAME SECONDS: waits for a QMP event.
ql_qmp_wait_event() {
	local end=$((SECONDS + $2)) line
	grep -q "\"event\": \"$1\"" "$QL_DIR/qmp-events" && return 0
	while [ $SECONDS -lt $end ]; do
		IFS= read -r -t 1 line <&"$QL_QMP_R" || continue
		printf '%s\n' "$line" >> "$QL_DIR/qmp-events"
		[[ $line == *"\"event\": \"$1\""* ]] && return 0
	done
	return 1
}

# ql_hmp CMD: an HMP command through QMP; its output (newlines restored)
# in QL_HMP.
ql_hmp() {
	ql_qmp "{\"execute\": \"human-monitor-command\", \"arguments\": {\"command-line\": \"$1\"}}" || return
	QL_HMP=${QL_QMP_REPLY#*\"return\": \"}
	QL_HMP=${QL_HMP%\"\}*}
	QL_HMP=${QL_HMP//\\r/}
	QL_HMP=$(printf '%b' "${QL_HMP//\\\"/\"}")
}

# ---- the guest's view: PCI config space, BAR0, RAM ------------------------

# ql_cfg_read OFF SIZE(1|2|4) -> QL_VAL, through ports 0xcf8/0xcfc.
ql_cfg_read() {
	local off=$(($1)) op
	case $2 in 1) op=inb ;; 2) op=inw ;; *) op=inl ;; esac
	ql_qtest outl 0xcf8 $((QL_CF8 | (off & ~3))) || return
	ql_qtest_val "$op" $((0xcfc + (off & 3)))
}

# ql_cfg_write OFF SIZE VAL
ql_cfg_write() {
	local off=$(($1)) op
	case $2 in 1) op=outb ;; 2) op=outw ;; *) op=outl ;; esac
	ql_qtest outl 0xcf8 $((QL_CF8 | (off & ~3))) || return
	ql_qtest "$op" $((0xcfc + (off & 3))) "$3"
}

# ql_bar_read32 REG -> QL_VAL; ql_bar_write32/64 REG VAL
ql_bar_read32() { ql_qtest_val readl $((QL_BAR0 + $1)); }
ql_bar_write32() { ql_qtest writel $((QL_BAR0 + $1)) "$2"; }
ql_bar_write64() { ql_qtest writeq $((QL_BAR0 + $1)) "$2"; }

# ql_map_bar0: what firmware/the guest does: BAR0 at QL_BAR0, memory
# space and bus mastering on.
ql_map_bar0() {
	ql_cfg_write 0x10 4 $QL_BAR0 && ql_cfg_write 0x04 2 0x0006
}

# ql_find_cap ID -> QL_CAP (offset of the capability in config space)
ql_find_cap() {
	local hops=0
	ql_cfg_read 0x34 1 || return
	QL_CAP=$((QL_VAL))
	while [ "$QL_CAP" -ne 0 ] && [ $hops -lt 48 ]; do
		ql_cfg_read "$QL_CAP" 1 || return
		[ $((QL_VAL)) -eq $(($1)) ] && return 0
		ql_cfg_read $((QL_CAP + 1)) 1 || return
		QL_CAP=$((QL_VAL))
		hops=$((hops + 1))
	done
	return 1
}

# ql_msix_setup ADDR DATA: MSI-X table entry 0 -> (ADDR, DATA), unmasked,
# MSI-X enabled in the capability (as a guest driver does). With ADDR in
# guest RAM the interrupt message becomes a visible memory write.
ql_msix_setup() {
	local t=$((QL_BAR0 + QL_MSIX_TABLE))
	ql_find_cap 0x11 || return
	ql_cfg_read $((QL_CAP + 2)) 2 || return
	ql_cfg_write $((QL_CAP + 2)) 2 $((QL_VAL | 0x8000)) || return
	ql_qtest writel $t "$1" && ql_qtest writel $((t + 4)) 0 &&
		ql_qtest writel $((t + 8)) "$2" && ql_qtest writel $((t + 12)) 0
}

# ql_random_hex BYTES: random data as one hex string.
ql_random_hex() {
	od -An -v -tx1 -N "$1" /dev/urandom | tr -d ' \n'
}

# ql_dma_copy SRC DST LEN IRQ(0|1): programs the DMA engine and rings the
# doorbell; the copy is done when the doorbell write returns. QL_VAL holds
# STATUS afterwards (2 = done).
ql_dma_copy() {
	ql_bar_write64 $QL_REG_SRC "$1" && ql_bar_write64 $QL_REG_DST "$2" &&
		ql_bar_write64 $QL_REG_LEN "$3" &&
		ql_bar_write32 $QL_REG_IRQ_CTRL "$4" &&
		ql_bar_write32 $QL_REG_DOORBELL 1 &&
		ql_bar_read32 $QL_REG_STATUS
}

# ql_wait_pid PID SECONDS: waits for a child, bounded; its exit status,
# or 124 when it is still running.
ql_wait_pid() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		kill -0 "$1" 2> /dev/null || break
		sleep 0.1
	done
	kill -0 "$1" 2> /dev/null && return 124
	wait "$1"
}

# ql_wait_mem32 ADDR VALUE SECONDS: polls a guest-RAM word; the time it
# took in QL_WAITED.
ql_wait_mem32() {
	local end t0
	t0=$(ql_now)
	end=$((SECONDS + $3))
	while [ $SECONDS -le $end ]; do
		ql_qtest_val readl "$1" || return
		if [ $((QL_VAL)) -eq $(($2)) ]; then
			QL_WAITED=$(ql_since "$t0")
			return 0
		fi
		sleep 0.02
	done
	return 1
}

# ql_cleanup: QEMU, server, mdev (bounded), for traps.
ql_cleanup() {
	ql_qemu_stop
	ql_server_kill
	if ql_mdev_exists; then
		timeout 30 sh -c "echo 1 > $QL_MDEVS/$QL_UUID/remove" 2> /dev/null
	fi
	return 0
}
