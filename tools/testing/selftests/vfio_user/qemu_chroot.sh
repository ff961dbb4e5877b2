#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-only
#
# qemu_chroot.sh [QEMU ARG...]: runs the qemu-system-x86_64 of the trixie
# chroot (Debian's QEMU from trixie-backports, which `make check` installs
# there for scripts/interop-qemu) as if it were installed here: in a private
# mount namespace, with this system's /dev, /proc, /sys and /tmp bound into
# the chroot, so that sysfsdev= paths, /dev/vfio, /dev/iommu and files under
# /tmp mean the same inside. The process stays the same (unshare and chroot
# exec), so its pid is QEMU's.
#
# VU_QEMU_CHROOT overrides the chroot (default build/chroot/trixie of this
# tree). Exits 127 when the chroot has no QEMU.

root=${VU_QEMU_CHROOT:-$(cd "$(dirname "$0")/../../../.." && pwd)/build/chroot/trixie}
if [ ! -x "$root/usr/bin/qemu-system-x86_64" ]; then
	echo "qemu_chroot.sh: no QEMU in $root" >&2
	exit 127
fi
if [ "${VU_QEMU_IN_NS:-}" != 1 ]; then
	VU_QEMU_IN_NS=1 exec unshare --mount --propagation private "$0" "$@"
fi
unset VU_QEMU_IN_NS
for d in dev proc sys tmp; do
	mount --rbind "/$d" "$root/$d" || exit 1
done
exec chroot "$root" /usr/bin/qemu-system-x86_64 "$@"
