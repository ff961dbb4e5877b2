#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-only
#
# libvirt on vfio_user mdevs, used the way its users use it: Debian 12's
# libvirtd (9.0, the monolithic daemon) with the QEMU driver and Debian's
# QEMU (TCG, no disk, no guest OS).
#
# Checks: libvirtd lists an mdev attached through the top-level socket
# attribute; a transient domain (virsh create) with
# <hostdev mode='subsystem' type='mdev' model='vfio-pci'> on it starts and
# the guest's bus shows the sample's 4e58:0001 (virsh qemu-monitor-command
# --hmp 'info pci'); nodedev-destroy refuses the mdev while the domain has
# it; virsh destroy releases it (state and attributes unchanged) and
# nodedev-destroy then removes it without hanging. With mdevctl: a
# definition made by mdevctl (top-level attribute names, timeout_ms listed
# before socket) is a libvirt node device; nodedev-autostart,
# nodedev-start (the device comes up attached, the attributes written in
# their order), nodedev-destroy and nodedev-undefine act on it; and
# nodedev-create under the vfio_user parent fails as documented
# (libvirt's node device driver takes only parents of some fixed kinds).
#
# libvirt learns that a device came or went only from udev events: without
# a udev daemon, nodedev-destroy of a device started after libvirtd cannot
# work. The test starts systemd-udevd when none runs and it is installed
# (LV_UDEVD=0: never), else that one check is skipped.
#
# Everything libvirt writes is on tmpfs in a private mount namespace (the
# test re-runs itself under unshare): /etc/libvirt (a copy, with the
# qemu.conf below), /etc/mdevctl.d, /var/lib/libvirt, /var/log/libvirt,
# /var/cache/libvirt, /run/libvirt. Where one of them does not exist (they
# come with libvirt-daemon-system, which the test does not need), its
# parent is made writable in the namespace: an overlay whose upper
# directory is in the work directory, so that the root (read-only in the
# VM) is never written. The libvirt-qemu user that
# libvirtd insists on (even with user = "root") is added to bound copies
# of /etc/passwd and /etc/group when missing. Every wait is bounded;
# libvirtd, the domain, udevd, the servers and the mdevs are gone on exit.
#
# Runs as root with vfio_user_mdev loaded (tools/testing/vm/vm-run).
# Exit: 0 pass, 4 skip (not root, no libvirtd/virsh/QEMU driver, no QEMU,
# no unshare), 1 fail. Prints TAP.

set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tools/testing/selftests/vfio_user/qemu_lib.sh
. "$here/qemu_lib.sh"

TAP_PREFIX=${TAP_PREFIX:-libvirt}
NTESTS=13
# shellcheck source=tools/testing/selftests/vfio_user/qemu_tap.sh
. "$here/qemu_tap.sh"

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LV_TIMEOUT=${LV_TIMEOUT:-180}	# one virsh call (the first probes QEMU: ~25 s in TCG)
LV_DOM=vfio-user-test

tap_require_qemu
command -v libvirtd > /dev/null ||
	skip_all "libvirtd is not installed (apt-get install --no-install-recommends libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients)"
command -v virsh > /dev/null || skip_all "virsh is not installed (libvirt-clients)"
compgen -G '/usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so' > /dev/null ||
	skip_all "libvirt's QEMU driver is not installed (libvirt-daemon-driver-qemu)"
command -v unshare > /dev/null || skip_all "unshare (util-linux) is not installed"

# The work directory is made and removed out here, where the namespace's
# mounts (some of them binds of the root's directories) are not seen.
if [ -z "${LIBVIRT_TEST_NS:-}" ]; then
	ql_init
	LIBVIRT_TEST_NS=1 QL_DIR=$QL_DIR unshare --mount --propagation private "$0" "$@"
	rc=$?
	rm -rf "$QL_DIR"
	exit $rc
fi

ql_init
[ -x "$QL_SAMPLE" ] || skip_all "sample server not built ($QL_SAMPLE)"
have_mdevctl=0
command -v mdevctl > /dev/null && have_mdevctl=1

LV_DIR=$QL_DIR/libvirt
mkdir -p "$LV_DIR"
lv_pid="" udevd_pid="" srv2_pid="" qemu_pid=""
uuid2=$(cat /proc/sys/kernel/random/uuid)
uuid3=$(cat /proc/sys/kernel/random/uuid)
sock2=$QL_DIR/dma2.sock

# ---- helpers ---------------------------------------------------------------

# lv_check NAME FUNCTION: one TAP line; FUNCTION's DETAIL goes on it.
lv_check() {
	DETAIL=""
	if "$2"; then
		ok "$1" "$DETAIL"
	else
		not_ok "$1" "${DETAIL:-failed}"
	fi
}
lv_skip() { ok "$1" "SKIP $2"; }

# lv_virsh ARGS...: virsh on libvirtd's system socket, bounded; its
# output (both streams) in LV_OUT, its status returned.
lv_virsh() {
	LV_OUT=$(timeout "$LV_TIMEOUT" virsh -q -c qemu:///system "$@" 2>&1)
}

# lv_wait SECONDS CMD...: polls CMD every 0.2 s, bounded.
lv_wait() {
	local end=$((SECONDS + $1))
	shift
	while [ $SECONDS -lt $end ]; do
		"$@" && return 0
		sleep 0.2
	done
	"$@"
}

# lv_shadow DIR: DIR writable in this namespace, its entries kept: an
# overlay with an upper directory in LV_DIR, or where overlayfs is not
# available a tmpfs with DIR's entries bound back (a mount each: slow).
lv_shadow() {
	local d=$1 keep=$LV_DIR/shadow$1 e n
	mkdir -p "$keep/upper" "$keep/work" || return
	mount -t overlay -o "lowerdir=$d,upperdir=$keep/upper,workdir=$keep/work" \
		libvirt-test "$d" 2> /dev/null && return 0
	mkdir -p "$keep/lower" && mount --rbind "$d" "$keep/lower" || return
	mount -t tmpfs -o mode=0755 libvirt-test "$d" || return
	for e in "$keep/lower"/* "$keep/lower"/.[!.]*; do
		[ -e "$e" ] || [ -L "$e" ] || continue
		n=${e##*/}
		if [ -L "$e" ]; then
			cp -P "$e" "$d/$n"
		elif [ -d "$e" ]; then
			mkdir "$d/$n" && mount --rbind "$e" "$d/$n"
		else
			touch "$d/$n" && mount --rbind "$e" "$d/$n"
		fi || return
	done
}

# lv_tmpfs DIR: DIR on a private tmpfs, with a copy of what it held; a
# missing DIR is made in its parent's overlay instead (the upper directory
# is in LV_DIR: a tmpfs in the VM).
lv_tmpfs() {
	local d=$1 copy=$LV_DIR/copy$1
	if [ ! -d "$d" ]; then
		lv_shadow "${d%/*}" && mkdir "$d"
		return
	fi
	mkdir -p "$copy" && cp -a "$d/." "$copy/" || return
	mount -t tmpfs -o mode=0755 libvirt-test "$d" || return
	cp -a "$copy/." "$d/"
}

# lv_add_user NAME: NAME as a system user and group, in bound copies of
# /etc/passwd and /etc/group, when it does not exist.
lv_add_user() {
	local id=64055
	getent passwd "$1" > /dev/null && return 0
	while getent passwd $id > /dev/null || getent group $id > /dev/null; do
		id=$((id + 1))
	done
	cp /etc/passwd "$LV_DIR/passwd" && cp /etc/group "$LV_DIR/group" || return
	echo "$1:x:$id:$id:libvirt qemu (test):/var/lib/libvirt:/usr/sbin/nologin" >> "$LV_DIR/passwd"
	echo "$1:x:$id:" >> "$LV_DIR/group"
	mount --bind "$LV_DIR/passwd" /etc/passwd && mount --bind "$LV_DIR/group" /etc/group
}

lv_setup() {
	local d
	modprobe -q overlay
	for d in /etc/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt /run/libvirt; do
		lv_tmpfs "$d" || { echo "cannot put $d on a tmpfs"; return 1; }
	done
	if [ $have_mdevctl = 1 ]; then
		lv_tmpfs /etc/mdevctl.d || return
		mkdir -p /etc/mdevctl.d/scripts.d/callouts /etc/mdevctl.d/scripts.d/notifiers
	fi
	# No systemd, dbus, virtlogd, cgroup controllers or AppArmor here; QEMU
	# runs as root in this namespace.
	cat > /etc/libvirt/qemu.conf <<-EOF
		user = "root"
		group = "root"
		stdio_handler = "file"
		cgroup_controllers = [ ]
		namespaces = [ ]
		security_driver = "none"
		remember_owner = 0
	EOF
	cat > /etc/libvirt/libvirtd.conf <<-EOF
		log_filters = "1:node_device 1:util.mdev 1:qemu.qemu_hostdev"
		log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
	EOF
	lv_add_user libvirt-qemu || { echo "cannot add the libvirt-qemu user"; return 1; }
}

# A udev daemon, for libvirt to see devices come and go: ours when none
# runs (the VM has none) and systemd-udevd is installed.
lv_udevd_start() {
	local u=/lib/systemd/systemd-udevd
	[ -S /run/udev/control ] && return 0
	[ "${LV_UDEVD:-1}" != 0 ] && [ -x $u ] || return 1
	mkdir -p /run/udev || return 1
	$u > "$LV_DIR/udevd.log" 2>&1 &
	udevd_pid=$!
	lv_wait 20 test -S /run/udev/control
}

lv_libvirtd_start() {
	libvirtd --pid-file "$LV_DIR/libvirtd.pid" > "$LV_DIR/libvirtd.out" 2>&1 &
	lv_pid=$!
	lv_wait 60 lv_libvirtd_up
}
lv_libvirtd_up() { [ -S /run/libvirt/libvirt-sock ] || ! kill -0 "$lv_pid" 2> /dev/null; }

lv_server2_start() {
	"$QL_SAMPLE" --socket "$sock2" --device dma --verbose \
		< /dev/null >> "$QL_DIR/server2.log" 2>&1 &
	srv2_pid=$!
	lv_wait 10 test -S "$sock2"
}

# lv_nodedev UUID: libvirt's node device name of the mdev, in NODEDEV.
lv_nodedev() {
	lv_virsh nodedev-list --cap mdev --all || return
	NODEDEV=$(printf '%s\n' "$LV_OUT" | grep -m1 "${1//-/_}")
}

lv_attr() { cat "$QL_MDEVS/$1/$2" 2>&1; }
lv_group_free() {	# the mdev's VFIO group can be opened: nobody holds it
	local g
	g=$(basename "$(readlink "$QL_MDEVS/$1/iommu_group")")
	( exec 3< "/dev/vfio/$g" ) 2> /dev/null
}
lv_gone() { [ ! -e "$QL_MDEVS/$1" ]; }
lv_domain_gone() { ! lv_virsh domid "$LV_DOM"; }
lv_qemu_gone() { [ -z "$qemu_pid" ] || ! kill -0 "$qemu_pid" 2> /dev/null; }
lv_defined() { mdevctl list --defined 2> /dev/null | grep -q "^$1 vfio_user vfio_user-pci $2"; }
lv_not_listed() { lv_virsh nodedev-list --cap mdev --all && [[ $LV_OUT != *"${1//-/_}"* ]]; }
lv_active() { lv_virsh nodedev-info "$1" && [[ $LV_OUT =~ Active:\ +yes ]]; }

lv_cleanup() {
	local i
	if [ -n "$lv_pid" ] && kill -0 "$lv_pid" 2> /dev/null; then
		lv_virsh destroy "$LV_DOM"
		kill -TERM "$lv_pid" 2> /dev/null
		for ((i = 0; i < 100; i++)); do
			kill -0 "$lv_pid" 2> /dev/null || break
			sleep 0.1
		done
		kill -KILL "$lv_pid" 2> /dev/null
	fi
	[ -n "$lv_pid" ] && wait "$lv_pid" 2> /dev/null
	# a QEMU libvirtd left behind
	[ -n "$qemu_pid" ] && kill -KILL "$qemu_pid" 2> /dev/null
	if [ -n "$udevd_pid" ]; then
		kill -TERM "$udevd_pid" 2> /dev/null
		wait "$udevd_pid" 2> /dev/null
	fi
	for i in "$uuid2" "$uuid3"; do
		[ -e "$QL_MDEVS/$i" ] &&
			timeout 30 sh -c "echo 1 > $QL_MDEVS/$i/remove" 2> /dev/null
	done
	if [ -n "$srv2_pid" ]; then
		kill -KILL "$srv2_pid" 2> /dev/null
		wait "$srv2_pid" 2> /dev/null
	fi
	ql_cleanup
}
trap lv_cleanup EXIT

# ---- the checks --------------------------------------------------------------

# lv_lap NAME: the seconds since the last lap, appended to LAPS.
lv_lap() {
	LAPS+=" $1 $(ql_since "$lap0") s;"
	lap0=$(ql_now)
}

t_libvirtd() {
	local t0 lap0 LAPS=""
	t0=$(ql_now) lap0=$t0
	lv_setup > "$LV_DIR/setup.log" 2>&1 ||
		{ DETAIL="setup: $(tail -n 2 "$LV_DIR/setup.log")"; return 1; }
	lv_lap mounts
	# Before libvirtd starts: without udev it lists only what exists then.
	ql_server_start && ql_mdev_create || { DETAIL="server or mdev"; return 1; }
	echo "$QL_SOCK" > "$QL_MDEVS/$QL_UUID/socket" ||
		{ DETAIL="attach through the top-level socket failed"; return 1; }
	lv_lap "server, mdev"
	if [ $have_mdevctl = 1 ]; then
		lv_server2_start || { DETAIL="second server did not come up"; return 1; }
		mdevctl define -u "$uuid2" -p vfio_user -t vfio_user-pci &&
			mdevctl modify -u "$uuid2" --addattr=timeout_ms --value=7000 &&
			mdevctl modify -u "$uuid2" --addattr=socket --value="$sock2" ||
			{ DETAIL="mdevctl define/modify failed"; return 1; }
		lv_lap "mdevctl define"
	fi
	if ! lv_udevd_start; then
		udevd_pid=""
		note "udev: none (libvirt sees no device come or go after its start)"
	elif [ -n "$udevd_pid" ]; then
		note "udev: systemd-udevd started by the test (pid $udevd_pid)"
	else
		note "udev: a udev daemon runs"
	fi
	lv_lap udev
	lv_libvirtd_start && kill -0 "$lv_pid" 2> /dev/null ||
		{ DETAIL="libvirtd did not come up: $(tail -n 3 "$LV_DIR/libvirtd.out")"; return 1; }
	lv_lap "libvirtd's socket"
	lv_virsh version || { DETAIL="virsh version: $LV_OUT"; return 1; }
	lv_lap "virsh version"
	note "$(printf '%s' "$LV_OUT" | tr '\n' ';')"
	note "times:$LAPS"
	[[ $LV_OUT == *"Running hypervisor: QEMU"* ]] || { DETAIL="virsh version: $LV_OUT"; return 1; }
	DETAIL="up and answering in $(ql_since "$t0") s"
}

t_nodedev_active() {
	lv_nodedev "$QL_UUID" && [ -n "$NODEDEV" ] ||
		{ DETAIL="$QL_UUID not in nodedev-list --cap mdev: $LV_OUT"; return 1; }
	NODEDEV1=$NODEDEV
	lv_virsh nodedev-dumpxml "$NODEDEV1" || { DETAIL="dumpxml: $LV_OUT"; return 1; }
	[[ $LV_OUT == *"<type id='vfio_user-pci'/>"* ]] ||
		{ DETAIL="dumpxml has no type vfio_user-pci: $LV_OUT"; return 1; }
	DETAIL="$NODEDEV1"
}

t_domain_start() {
	cat > "$LV_DIR/domain.xml" <<-EOF
		<domain type='qemu'>
		  <name>$LV_DOM</name>
		  <memory unit='MiB'>128</memory>
		  <vcpu>1</vcpu>
		  <os><type arch='x86_64' machine='pc'>hvm</type></os>
		  <devices>
		    <emulator>$QL_QEMU</emulator>
		    <controller type='usb' model='none'/>
		    <memballoon model='none'/>
		    <hostdev mode='subsystem' type='mdev' model='vfio-pci'>
		      <source><address uuid='$QL_UUID'/></source>
		    </hostdev>
		  </devices>
		</domain>
	EOF
	local t0
	t0=$(ql_now)
	lv_virsh create "$LV_DIR/domain.xml" || { DETAIL="virsh create: $LV_OUT"; return 1; }
	qemu_pid=$(cat "/run/libvirt/qemu/$LV_DOM.pid" 2> /dev/null)
	lv_virsh domstate "$LV_DOM"
	[ "$LV_OUT" = running ] || { DETAIL="domstate: $LV_OUT"; return 1; }
	# -device '{"driver":"vfio-pci","id":"hostdev0","sysfsdev":"/sys/bus/mdev/devices/UUID",...}'
	grep -qE "vfio-pci.*sysfsdev\"?[:=]\"?$QL_MDEVS/$QL_UUID" "/var/log/libvirt/qemu/$LV_DOM.log" ||
		{ DETAIL="no vfio-pci with sysfsdev=$QL_MDEVS/$QL_UUID on QEMU's command line"; return 1; }
	DETAIL="running in $(ql_since "$t0") s, QEMU pid $qemu_pid, -device vfio-pci with sysfsdev $QL_MDEVS/$QL_UUID"
}

t_info_pci() {
	lv_virsh qemu-monitor-command "$LV_DOM" --hmp 'info pci' ||
		{ DETAIL="qemu-monitor-command: $LV_OUT"; return 1; }
	printf '%s\n' "$LV_OUT" > "$LV_DIR/info-pci"
	# "Class 00ff: PCI device 4e58:0001" ... 'id "hostdev0"'
	local dev
	dev=$(grep -B1 -A6 'PCI device 4e58:0001' "$LV_DIR/info-pci" | tr -s ' \n' ' ')
	[ -n "$dev" ] || { DETAIL="no 4e58:0001: $(tr -s ' \n' ' ' < "$LV_DIR/info-pci")"; return 1; }
	[[ $dev == *'id "hostdev0"'* ]] || { DETAIL="4e58:0001 is not hostdev0: $dev"; return 1; }
	DETAIL=$(printf '%s' "$dev" | sed 's/^ *//; s/ *$//' | cut -c1-150)
}

t_in_use() {
	[ "$(lv_attr "$QL_UUID" state)" = ready ] ||
		{ DETAIL="state: $(lv_attr "$QL_UUID" state)"; return 1; }
	lv_group_free "$QL_UUID" && { DETAIL="the VFIO group is not held by QEMU"; return 1; }
	if lv_virsh nodedev-destroy "$NODEDEV1"; then
		DETAIL="nodedev-destroy succeeded under a running domain"
		return 1
	fi
	[[ $LV_OUT == *"device in use"* ]] || { DETAIL="nodedev-destroy: $LV_OUT"; return 1; }
	[ -e "$QL_MDEVS/$QL_UUID" ] || { DETAIL="the mdev is gone"; return 1; }
	DETAIL="refused: $(printf '%s' "$LV_OUT" | grep -m1 'device in use' | sed 's/^error: //')"
}

t_destroy() {
	local t0 s p pinned mm
	t0=$(ql_now)
	lv_virsh destroy "$LV_DOM" || { DETAIL="virsh destroy: $LV_OUT"; return 1; }
	lv_wait 20 lv_qemu_gone || { DETAIL="QEMU $qemu_pid still runs"; return 1; }
	lv_domain_gone || { DETAIL="the domain is still listed"; return 1; }
	lv_wait 10 lv_group_free "$QL_UUID" || { DETAIL="the VFIO group is still held"; return 1; }
	s=$(lv_attr "$QL_UUID" state) p=$(lv_attr "$QL_UUID" socket)
	pinned=$(lv_attr "$QL_UUID" dma_window_pinned) mm=$(lv_attr "$QL_UUID" mmap_pages)
	DETAIL="state=$s socket=$p dma_window_pinned=$pinned mmap_pages=$mm"
	[ "$s" = ready ] && [ "$p" = "$QL_SOCK" ] && [ "$pinned" = 0 ] && [ "$mm" = 0 ] ||
		return 1
	[ "$(lv_attr "$QL_UUID" vfio_user/state)" = ready ] ||
		{ DETAIL="$DETAIL; vfio_user/state: $(lv_attr "$QL_UUID" vfio_user/state)"; return 1; }
	DETAIL="released in $(ql_since "$t0") s; $DETAIL (also through vfio_user/)"
}

t_remove() {
	local t0
	t0=$(ql_now)
	if ! lv_virsh nodedev-destroy "$NODEDEV1"; then
		DETAIL="nodedev-destroy: $LV_OUT"
		return 1
	fi
	lv_wait 30 lv_gone "$QL_UUID" || { DETAIL="the mdev is still there"; return 1; }
	DETAIL="nodedev-destroy (mdevctl stop) removed it in $(ql_since "$t0") s"
}

t_defined() {
	lv_wait 20 lv_nodedev "$uuid2"
	[ -n "$NODEDEV" ] || { DETAIL="$uuid2 not in nodedev-list --cap mdev --all: $LV_OUT"; return 1; }
	NODEDEV2=$NODEDEV
	lv_virsh nodedev-dumpxml "$NODEDEV2" || { DETAIL="dumpxml: $LV_OUT"; return 1; }
	local x
	x=$(printf '%s' "$LV_OUT" | tr -s ' \n' ' ')
	[[ $x == *"<attr name='timeout_ms' value='7000'/> <attr name='socket' value='$sock2'/>"* ]] ||
		{ DETAIL="attributes not as defined: $x"; return 1; }
	lv_virsh nodedev-list --cap mdev --inactive
	[[ $LV_OUT == *"$NODEDEV2"* ]] || { DETAIL="not listed as inactive: $LV_OUT"; return 1; }
	DETAIL="$NODEDEV2, inactive, attrs timeout_ms then socket"
}

t_autostart() {
	lv_virsh nodedev-autostart "$NODEDEV2" || { DETAIL="nodedev-autostart: $LV_OUT"; return 1; }
	lv_defined "$uuid2" auto || { DETAIL="mdevctl list --defined: $(mdevctl list --defined)"; return 1; }
	lv_virsh nodedev-autostart --disable "$NODEDEV2" || { DETAIL="--disable: $LV_OUT"; return 1; }
	lv_defined "$uuid2" manual || { DETAIL="mdevctl list --defined: $(mdevctl list --defined)"; return 1; }
	DETAIL="mdevctl list --defined: auto, then manual"
}

t_start() {
	local t0 s p t
	t0=$(ql_now)
	lv_virsh nodedev-start "$NODEDEV2" || { DETAIL="nodedev-start: $LV_OUT"; return 1; }
	s=$(lv_attr "$uuid2" state) p=$(lv_attr "$uuid2" socket) t=$(lv_attr "$uuid2" timeout_ms)
	DETAIL="state=$s socket=$p timeout_ms=$t"
	[ "$s" = ready ] && [ "$p" = "$sock2" ] && [ "$t" = 7000 ] || return 1
	DETAIL="started in $(ql_since "$t0") s: $DETAIL"
}

lv_have_udev() { [ -S /run/udev/control ]; }

t_stop() {
	local t0
	t0=$(ql_now)
	lv_wait 30 lv_active "$NODEDEV2" || { DETAIL="libvirt never saw it active: $LV_OUT"; return 1; }
	lv_virsh nodedev-destroy "$NODEDEV2" || { DETAIL="nodedev-destroy: $LV_OUT"; return 1; }
	lv_wait 30 lv_gone "$uuid2" || { DETAIL="the mdev is still there"; return 1; }
	DETAIL="active seen through udev; removed in $(ql_since "$t0") s"
}

t_undefine() {
	lv_gone "$uuid2" || mdevctl stop -u "$uuid2"
	lv_virsh nodedev-undefine "$NODEDEV2" || { DETAIL="nodedev-undefine: $LV_OUT"; return 1; }
	lv_defined "$uuid2" "" && { DETAIL="mdevctl still lists it"; return 1; }
	lv_wait 20 lv_not_listed "$uuid2" || { DETAIL="libvirt still lists it: $LV_OUT"; return 1; }
	DETAIL="gone from mdevctl and libvirt"
}

t_create_refused() {
	cat > "$LV_DIR/nodedev.xml" <<-EOF
		<device>
		  <parent>vfio_user</parent>
		  <capability type='mdev'>
		    <type id='vfio_user-pci'/>
		    <uuid>$uuid3</uuid>
		    <attr name='socket' value='$sock2'/>
		  </capability>
		</device>
	EOF
	if lv_virsh nodedev-create "$LV_DIR/nodedev.xml"; then
		DETAIL="nodedev-create succeeded: update Documentation/vfio/vfio-user-mdev.rst"
		return 1
	fi
	[[ $LV_OUT == *"invalid parent device 'vfio_user'"* ]] ||
		{ DETAIL="nodedev-create: $LV_OUT"; return 1; }
	lv_gone "$uuid3" || { DETAIL="an mdev was created"; return 1; }
	DETAIL="as documented: $(printf '%s' "$LV_OUT" | grep -m1 'invalid parent' | sed 's/^error: //')"
}

# ---- run -----------------------------------------------------------------

echo "TAP version 13"
echo "1..$NTESTS"
note "$("$QL_QEMU" --version | head -n 1); $(libvirtd --version); kernel $(uname -r); work dir $QL_DIR"

lv_check libvirtd_up t_libvirtd
if [ $failed -gt 0 ]; then
	for ((i = n + 1; i <= NTESTS; i++)); do
		not_ok "not_run" "libvirtd did not come up"
	done
	note "libvirtd log, last lines:"
	tail -n 20 /var/log/libvirt/libvirtd.log "$LV_DIR/libvirtd.out" 2> /dev/null | sed 's/^/#   /'
	exit 1
fi
lv_check nodedev_lists_attached_mdev t_nodedev_active
lv_check domain_with_mdev_hostdev_starts t_domain_start
lv_check guest_bus_shows_4e58_0001 t_info_pci
lv_check nodedev_destroy_refused_in_use t_in_use
lv_check destroy_releases_the_mdev t_destroy
lv_check nodedev_destroy_removes_mdev t_remove
if [ $have_mdevctl = 1 ]; then
	lv_check mdevctl_definition_is_a_nodedev t_defined
	lv_check nodedev_autostart t_autostart
	lv_check nodedev_start t_start
	if lv_have_udev; then
		lv_check nodedev_destroy_started t_stop
	else
		mdevctl stop -u "$uuid2" > /dev/null 2>&1
		lv_skip nodedev_destroy_started "needs a udev daemon: libvirt marks a device active on its udev event"
	fi
	lv_check nodedev_undefine t_undefine
else
	for t in mdevctl_definition_is_a_nodedev nodedev_autostart nodedev_start \
		 nodedev_destroy_started nodedev_undefine; do
		lv_skip "$t" "mdevctl is not installed"
	done
fi
lv_check nodedev_create_under_vfio_user_refused t_create_refused

if [ $failed -gt 0 ]; then
	note "libvirtd log ($LV_DIR, /var/log/libvirt/libvirtd.log), last lines:"
	tail -n 25 /var/log/libvirt/libvirtd.log 2> /dev/null | sed 's/^/#   /'
	cp "/var/log/libvirt/qemu/$LV_DOM.log" "$QL_DIR/qemu.log" 2> /dev/null
fi
tap_finish
