# SPDX-License-Identifier: GPL-2.0-only
#
# vfio-user-mdev: top-level targets. The module itself is built by Kbuild
# (see Kbuild); everything lands under build/.
#
#   make              the module against KDIR (default: installed 6.12 headers)
#   make check        install dependencies, build everything, run all tests
#   make run          the demo, in the test VM
#   make lint         sparse C=2, checkpatch --strict, W=1, kernel-doc
#   make clean

TOP	:= $(CURDIR)
BUILD	:= $(TOP)/build
KDIR	?= $(shell ls -d /usr/src/linux-headers-6.12.*-amd64 2>/dev/null | sort -V | tail -n 1)
SERIES	?= 6.12

KSRCS	:= $(shell find drivers include -name '*.[ch]') Kbuild

all: modules

modules: $(KSRCS)
	@test -n "$(KDIR)" || { echo "no kernel headers: apt-get install linux-headers-6.12-amd64 or set KDIR"; exit 1; }
	scripts/kmod-build $(KDIR) W=1

# The module for one Debian kernel series (6.1, 6.12, 7.3), as the VM uses it.
modules-%:
	scripts/kmod-build --series $* W=1

tools:
	$(MAKE) -C tools/lib/vfio-user
	$(MAKE) -C tools/vfio-user

selftests:
	$(MAKE) -C tools/testing/selftests/vfio_user

deps:
	scripts/deps

check:
	scripts/check

run:
	scripts/run-demo

lint:
	scripts/lint

clean:
	rm -rf $(BUILD)/kmod $(BUILD)/selftests $(BUILD)/tools $(BUILD)/vm $(BUILD)/lint
	rm -f *.o *.ko *.mod *.mod.c modules.order Module.symvers .*.cmd
	find drivers -name '*.o' -o -name '.*.cmd' | xargs rm -f

# Also drops the cached kernels, initramfs and trixie chroot.
distclean: clean
	rm -rf $(BUILD)

.PHONY: all modules tools selftests deps check run lint clean distclean
