#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-only
#
# Runs every vfio_user selftest program and prints TAP, one line per
# program, with the programs' own TAP indented as comments. Must run as
# root with vfio_user_mdev loaded (tools/testing/vm/vm-run does both).
#
#   run_tests.sh [TEST...]     default: every *_test in $O (C, TEST_GEN_PROGS),
#                              every *_test.sh here (shell, TEST_PROGS)
#
# On a kernel with the VFIO device cdev and /dev/iommu (the 6.12-debug test
# kernel) the consumer-side programs run a second time with
# VU_VFIO_BACKEND=iommufd, listed as "TEST@iommufd" (a TEST@iommufd argument
# runs only that). With kmemleak (6.12-debug) the run ends with a leak scan
# of everything since the start, as one more TAP result.

set -u
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../../../.." && pwd)
O=${O:-$top/build/selftests/vfio_user}
export VFIO_USER_MDEV_KO=${VFIO_USER_MDEV_KO:-$top/build/kmod/$(uname -r)/vfio_user_mdev.ko}

if [ "$(id -u)" != 0 ]; then
	echo "1..0 # SKIP must run as root"
	exit 4
fi

# The programs that open the device as a consumer (not fuzz_test: what it
# varies is the server's messages, whatever the consumer's backend), and
# QEMU 11 (QEMU 7.2 has no iommufd backend).
iommufd_tests="mdev_lifecycle_test client_test hostile_test killloop_test consumer_test signal_test window_test mmap_test twin_test migration_test dma_log_test qemu11_test.sh"
# Under iommufd, some programs run only the cases the backend changes (the
# harness's -t/-f filters): pinning, vfio_dma_rw, the unmap callback, the
# device cdev's open and close.
declare -A iommufd_args=(
	[hostile_test]="-f dma"
	[client_test]="-t attach_and_detach -t device_region_irq_info -t bar_access
		-t dma_copy_with_msix -t dma_copy_odd_sizes_and_offsets
		-t dma_runs_off_the_mapping -t unmap_during_dma
		-t unmap_under_paused_copy
		-t server_exit_in_flight_fails_fast -t reattach_restarted_server
		-t rmmod_refused_while_open -t remove_asks_consumer"
	[migration_test]="-t offered -t p2p_arcs_pause_dma -t dma_round_trip
		-t close_ends_session -t server_killed_in_stop_copy"
)
if [ $# -gt 0 ]; then
	tests=("$@")
else
	mapfile -t tests < <(cd "$O" && ls -1 -- *_test 2>/dev/null)
	mapfile -t -O ${#tests[@]} tests < <(cd "$here" && ls -1 -- *_test.sh 2>/dev/null)
	if [ -c /dev/iommu ] && [ -d /sys/class/vfio-dev ]; then
		for t in $iommufd_tests; do
			[ -x "$O/$t" ] || [ -x "$here/$t" ] && tests+=("$t@iommufd")
		done
	fi
	# VU_SKIP: programs (as listed, with @iommufd) the default run leaves out
	for t in ${VU_SKIP:-}; do
		for i in "${!tests[@]}"; do
			[ "${tests[$i]}" = "$t" ] && unset "tests[$i]"
		done
	done
	tests=("${tests[@]}")
fi

kmemleak=/sys/kernel/debug/kmemleak
[ -w $kmemleak ] || kmemleak=
if [ -n "$kmemleak" ]; then
	# forget what boot left behind: only leaks from here on count
	echo scan > $kmemleak
	echo clear > $kmemleak
fi

# indent: the programs' output as TAP comments; with VU_TIMESTAMPS=1 each
# line carries the seconds since the program started (to find slow cases).
indent() {
	if [ "${VU_TIMESTAMPS:-0}" = 1 ]; then
		local line start=$SECONDS
		while IFS= read -r line; do
			printf '# [%4d] %s\n' $((SECONDS - start)) "$line"
		done
	else
		sed -e 's/^/# /'
	fi
}

echo "TAP version 13"
total=${#tests[@]}
[ -n "$kmemleak" ] && total=$((total + 1))
echo "1..$total"
n=0 fail=0
for t in "${tests[@]}"; do
	n=$((n + 1))
	echo "# selftests: vfio_user: $t"
	[ -w /dev/kmsg ] && echo "vfio_user selftest: starting $t" > /dev/kmsg
	prog=$O/${t%@*}
	case $t in *.sh|*.sh@*) prog=$here/${t%@*} ;; esac	# scripts run from the source tree
	backend=container args=()
	case $t in
	*@iommufd)
		backend=iommufd
		# shellcheck disable=SC2206 # (word splitting wanted)
		args=(${iommufd_args[${t%@*}]:-})
		;;
	esac
	t0=$SECONDS
	stdbuf=()
	[ "${VU_TIMESTAMPS:-0}" = 1 ] && stdbuf=(stdbuf -oL)
	VU_VFIO_BACKEND=$backend "${stdbuf[@]}" "$prog" "${args[@]}" 2>&1 | indent
	rc=${PIPESTATUS[0]}
	echo "# selftests: vfio_user: $t: $((SECONDS - t0)) s"
	[ -w /dev/kmsg ] && echo "vfio_user selftest: $t exit $rc" > /dev/kmsg
	case $rc in
	0) echo "ok $n selftests: vfio_user: $t" ;;
	4) echo "ok $n selftests: vfio_user: $t # SKIP" ;;
	*) echo "not ok $n selftests: vfio_user: $t # exit=$rc"; fail=1 ;;
	esac
done

if [ -n "$kmemleak" ]; then
	n=$((n + 1))
	# kmemleak reports objects older than 5 s that two scans found unreferenced
	sleep 6
	echo scan > $kmemleak
	echo scan > $kmemleak
	leaks=$(grep -c '^unreferenced object' $kmemleak)
	sed -e 's/^/# kmemleak: /' $kmemleak | head -n 200
	if [ "$leaks" = 0 ]; then
		echo "ok $n selftests: vfio_user: kmemleak (no leak since the start)"
	else
		echo "not ok $n selftests: vfio_user: kmemleak ($leaks leaks)"
		fail=1
	fi
fi
exit $fail
