#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-only
#
# Runs every vfio_user selftest program and prints TAP, one line per
# program, with the programs' own TAP indented as comments. Must run as
# root with vfio_user_mdev loaded (tools/testing/vm/vm-run does both).
#
#   run_tests.sh [TEST...]     default: every *_test in $O (C, TEST_GEN_PROGS),
#                              every *_test.sh here (shell, TEST_PROGS)

set -u
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../../../.." && pwd)
O=${O:-$top/build/selftests/vfio_user}
export VFIO_USER_MDEV_KO=${VFIO_USER_MDEV_KO:-$top/build/kmod/$(uname -r)/vfio_user_mdev.ko}

if [ "$(id -u)" != 0 ]; then
	echo "1..0 # SKIP must run as root"
	exit 4
fi

if [ $# -gt 0 ]; then
	tests=("$@")
else
	mapfile -t tests < <(cd "$O" && ls -1 -- *_test 2>/dev/null)
	mapfile -t -O ${#tests[@]} tests < <(cd "$here" && ls -1 -- *_test.sh 2>/dev/null)
fi

echo "TAP version 13"
echo "1..${#tests[@]}"
n=0 fail=0
for t in "${tests[@]}"; do
	n=$((n + 1))
	echo "# selftests: vfio_user: $t"
	[ -w /dev/kmsg ] && echo "vfio_user selftest: starting $t" > /dev/kmsg
	prog=$O/$t
	case $t in *.sh) prog=$here/$t ;; esac	# scripts run from the source tree
	"$prog" 2>&1 | sed -e 's/^/# /'
	rc=${PIPESTATUS[0]}
	[ -w /dev/kmsg ] && echo "vfio_user selftest: $t exit $rc" > /dev/kmsg
	case $rc in
	0) echo "ok $n selftests: vfio_user: $t" ;;
	4) echo "ok $n selftests: vfio_user: $t # SKIP" ;;
	*) echo "not ok $n selftests: vfio_user: $t # exit=$rc"; fail=1 ;;
	esac
done
exit $fail
