#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-only
#
# qemu_test.sh's checks with a newer unmodified QEMU: Debian's QEMU from
# trixie-backports (11.x), run from the trixie chroot by qemu_chroot.sh,
# on the legacy VFIO container, or, with VU_VFIO_BACKEND=iommufd
# (run_tests.sh's "qemu11_test.sh@iommufd" on a kernel with /dev/iommu),
# on the device cdev with -object iommufd.
#
# Skips when the chroot has no QEMU >= 10 (the host's `make check` installs
# it for scripts/interop-qemu before the VM runs).

here=$(cd "$(dirname "$0")" && pwd)
export QL_QEMU=$here/qemu_chroot.sh TAP_PREFIX=qemu11
if [ "$(id -u)" != 0 ]; then	# (qemu_chroot.sh's unshare and chroot)
	echo "1..0 # SKIP must run as root"
	exit 4
fi
v=$("$QL_QEMU" --version 2> /dev/null |
    sed -n '1s/^QEMU emulator version \([0-9]*\)\..*/\1/p')
if [ -z "$v" ] || [ "$v" -lt 10 ]; then
	echo "1..0 # SKIP no QEMU >= 10 in the trixie chroot (${v:-none})"
	exit 4
fi
exec "$here/qemu_test.sh"
