#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-only
#
# mdevctl manages a vfio_user-pci device: define, modify (the timeout_ms and
# socket attributes, by their top-level names, timeout_ms first), start (the
# device is created, timeout_ms set, then attached: state "ready"), list,
# stop, undefine; a definition naming the old vfio_user/socket (the alias)
# still starts; and a start whose server is absent fails and leaves no
# device behind. Prints TAP; exits 0 pass, 4 skip (not root, no mdevctl),
# 1 fail. Runs as root with vfio_user_mdev loaded (tools/testing/vm/vm-run).
#
# mdevctl keeps its definitions in /etc/mdevctl.d, which has no
# environment override. The test never touches the real one: it re-runs
# itself in a private mount namespace with a tmpfs over /etc/mdevctl.d
# (the VM's root is read-only anyway). No udev or systemd is needed:
# define/start/stop/undefine only write files and sysfs.

set -u
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../../../.." && pwd)
sample=$top/build/tools/vfio-user/vfio-user-sample
# (a kselftest build or install has it beside the tests)
[ -x "$here/vfio-user-sample" ] && sample=$here/vfio-user-sample
sample=${VFIO_USER_SAMPLE:-$sample}
confdir=/etc/mdevctl.d
parent=vfio_user
type=vfio_user-pci

skip() {
	echo "1..0 # SKIP $*"
	exit 4
}

[ "$(id -u)" = 0 ] || skip "must run as root"
command -v mdevctl > /dev/null || skip "mdevctl is not installed (apt-get install mdevctl)"
command -v unshare > /dev/null || skip "unshare (util-linux) is not installed"

if [ -z "${MDEVCTL_TEST_NS:-}" ]; then
	MDEVCTL_TEST_NS=1 exec unshare --mount --propagation private "$0" "$@"
fi
mount -t tmpfs -o mode=0755 mdevctl-test "$confdir" ||
	{ echo "1..0 # cannot mount a tmpfs over $confdir"; exit 1; }
mkdir -p "$confdir/scripts.d/callouts" "$confdir/scripts.d/notifiers"

work=$(mktemp -d /tmp/mdevctl_test.XXXXXX)
sock=$work/server.sock
uuid=$(cat /proc/sys/kernel/random/uuid)
uuid2=$(cat /proc/sys/kernel/random/uuid)
uuid3=$(cat /proc/sys/kernel/random/uuid)
srv_pid=

cleanup() {
	local u
	for u in "$uuid" "$uuid2" "$uuid3"; do
		[ -e "/sys/bus/mdev/devices/$u" ] && echo 1 > "/sys/bus/mdev/devices/$u/remove"
	done
	if [ -n "$srv_pid" ]; then
		kill "$srv_pid" 2> /dev/null
		wait "$srv_pid" 2> /dev/null
	fi
	rm -rf "$work"
}
trap cleanup EXIT

n=0 fail=0
check() {	# check NAME CMD...: one TAP line from CMD's exit status
	local name=$1
	shift
	n=$((n + 1))
	if "$@" > "$work/out" 2>&1; then
		echo "ok $n $name"
	else
		echo "not ok $n $name"
		sed 's/^/# /' "$work/out"
		fail=1
	fi
}

# wait_for SECONDS CMD...: polls CMD every 0.1 s.
wait_for() {
	local i tries=$(($1 * 10))
	shift
	for ((i = 0; i < tries; i++)); do
		"$@" && return 0
		sleep 0.1
	done
	"$@"
}

defined() { mdevctl list --defined | grep -q "^$1 $parent $type manual"; }
active() { mdevctl list | grep -q "^$1 $parent $type"; }
attr_is() { [ "$(cat "/sys/bus/mdev/devices/$1/$2" 2>&1)" = "$3" ]; }
state_is() { attr_is "$1" state "$2"; }
socket_is() { attr_is "$1" socket "$2"; }
gone() { [ ! -e "/sys/bus/mdev/devices/$1" ]; }
not() { ! "$@"; }
defined_not_started() { defined "$1" && gone "$1"; }
ready_on() { state_is "$1" ready && socket_is "$1" "$2" && attr_is "$1" timeout_ms 7000; }
ready_both_names() {
	state_is "$1" ready && attr_is "$1" vfio_user/state ready &&
		socket_is "$1" "$2" && attr_is "$1" vfio_user/socket "$2"
}
stop_and_undefine() { mdevctl stop -u "$1" && gone "$1" && mdevctl undefine -u "$1"; }
stopped_still_defined() { gone "$1" && defined "$1"; }
gone_and_undefine() { gone "$1" && mdevctl undefine -u "$1"; }

[ -d /sys/class/mdev_bus/$parent ] ||
	{ echo "1..0 # no mdev parent $parent: load vfio_user_mdev"; exit 1; }
[ -x "$sample" ] || { echo "1..0 # no sample server $sample (make tools)"; exit 1; }

echo "TAP version 13"
echo "1..18"

"$sample" --socket "$sock" > "$work/server.log" 2>&1 &
srv_pid=$!
check "sample server listens" wait_for 10 test -S "$sock"

check "define" mdevctl define -u "$uuid" -p "$parent" -t "$type"
# mdevctl writes the attributes in their order: timeout_ms before socket.
check "modify --addattr=timeout_ms" \
	mdevctl modify -u "$uuid" --addattr=timeout_ms --value=7000
check "modify --addattr=socket" \
	mdevctl modify -u "$uuid" --addattr=socket --value="$sock"
check "list --defined shows the device, not started" defined_not_started "$uuid"
check "the definition holds the attributes in order" \
	grep -qz "\"timeout_ms\": \"7000\".*\"socket\": \"$sock\"" "$confdir/$parent/$uuid"
check "start" mdevctl start -u "$uuid"
check "started device is ready on the socket, timeout_ms set" ready_on "$uuid" "$sock"
check "list shows the active device" active "$uuid"
check "stop" mdevctl stop -u "$uuid"
check "stopped device is gone, still defined" stopped_still_defined "$uuid"
check "undefine" mdevctl undefine -u "$uuid"
check "undefined device is not listed" not defined "$uuid"

# Definitions written before the attributes moved up name vfio_user/socket:
# the alias keeps them working.
mdevctl define -u "$uuid3" -p "$parent" -t "$type" > /dev/null 2>&1
mdevctl modify -u "$uuid3" --addattr=vfio_user/socket --value="$sock" > /dev/null 2>&1
check "start of a definition naming vfio_user/socket (the alias)" mdevctl start -u "$uuid3"
check "it is ready, through both names" ready_both_names "$uuid3" "$sock"
check "stop and undefine it" stop_and_undefine "$uuid3"

# A definition whose server is absent: start fails, no device is left.
mdevctl define -u "$uuid2" -p "$parent" -t "$type" > /dev/null 2>&1
mdevctl modify -u "$uuid2" --addattr=socket --value="$work/absent.sock" > /dev/null 2>&1
check "start with an absent server fails" not mdevctl start -u "$uuid2"
check "failed start leaves no device" gone_and_undefine "$uuid2"

exit $fail
