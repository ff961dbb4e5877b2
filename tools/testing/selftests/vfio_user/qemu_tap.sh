# SPDX-License-Identifier: GPL-2.0-only
#
# TAP for the QEMU tests (qemu_test.sh, qemu_mmap_test.sh), sourced after
# qemu_lib.sh: TAP_PREFIX names the test group; n and failed count.

KSFT_SKIP=4
n=0 failed=0

skip_all() {
	echo "1..0 # SKIP $*"
	exit $KSFT_SKIP
}

# ok NAME [DETAIL]; not_ok NAME DETAIL
ok() { n=$((n + 1)); echo "ok $n $TAP_PREFIX.$1${2:+ # $2}"; }
not_ok() {
	n=$((n + 1)) failed=$((failed + 1))
	echo "not ok $n $TAP_PREFIX.$1 # $2"
}
# check NAME FUNCTION: runs FUNCTION; its DETAIL goes to the TAP line.
check() {
	DETAIL=""
	if "$2"; then
		ok "$1" "$DETAIL"
	else
		not_ok "$1" "${DETAIL:-failed}; last qtest reply: ${QL_REPLY:0:60}"
	fi
}
note() { echo "# $*"; }

# The checks every QEMU test makes first.
tap_require_qemu() {
	local q=${QL_QEMU:-qemu-system-x86_64}
	command -v "$q" > /dev/null || skip_all "$q not installed"
	[ "$(id -u)" = 0 ] || skip_all "must run as root"
	[ -d /sys/class/vfio_user/vfio_user ] || skip_all "vfio_user_mdev is not loaded"
}

# The end: with failures, the last lines of QEMU's and the server's logs.
tap_finish() {
	if [ $failed -gt 0 ]; then
		note "QEMU log ($QL_DIR/qemu.log), last lines:"
		tail -n 30 "$QL_DIR/qemu.log" | sed 's/^/#   /'
		note "server log, last lines:"
		tail -n 15 "$QL_DIR/server.log" | sed 's/^/#   /'
		exit 1
	fi
	exit 0
}
