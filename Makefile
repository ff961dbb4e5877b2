# SPDX-License-Identifier: GPL-2.0-only
#
# vfio-user-mdev: top-level targets. The module itself is built by Kbuild
# (see Kbuild); everything lands under build/.
#
#   make              the module against KDIR (default: installed 6.12 headers)
#   make check        install dependencies, build everything, run all tests
#   make check-debug  the VM suite on the 6.12-debug kernel only
#   make soak         10^6 fuzzed messages, 1000 server kills (6.12-debug)
#   make run          the demo, in the test VM
#   make run-nested   the demo with a nested guest boot (slow: TCG in TCG)
#   make lint         sparse C=2, checkpatch --strict, W=1, kernel-doc
#   make bench        benchmarks in the VM: ratios, JSON and a histogram
#   make docs         Documentation/ with sphinx (warnings are errors), into build/docs
#   make install      server library, header, pkg-config file, sample server and
#                     its man page into $(DESTDIR)$(PREFIX) (default /usr/local);
#                     the module itself installs with DKMS (dkms.conf)
#   make clean

TOP	:= $(CURDIR)
BUILD	:= $(TOP)/build
KDIR	?= $(shell ls -d /usr/src/linux-headers-6.12.*-amd64 2>/dev/null | sort -V | tail -n 1)
SERIES	?= 6.12

KSRCS	:= $(shell find drivers include -name '*.[ch]') Kbuild

PREFIX	?= /usr/local
MANDIR	?= $(PREFIX)/share/man

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

# The suite on the 6.12-debug kernel only (KASAN, lockdep, kmemleak, iommufd).
check-debug:
	CHECK_KERNELS=6.12-debug scripts/check

# Long fault runs (not in check): 10^6 fuzzed messages and 1000 server
# kills on the 6.12-debug kernel, with the kmemleak scan at the end.
soak:
	scripts/soak

run:
	scripts/run-demo

# The slower demo: QEMU boots a tiny Linux guest (TCG inside the TCG VM)
# that finds the device and reads its register; prints the boot time.
run-nested:
	scripts/run-demo --nested
.PHONY: run-nested

lint:
	scripts/lint

# Cross-check of the server library and the DMA sample with QEMU's own
# vfio-user client (-device vfio-user-pci, QEMU >= 10.1 installed into the
# trixie chroot, cached); no module, no VM. Logs in build/interop-qemu.
interop: tools
	scripts/interop-qemu

# Benchmarks (not part of check): table, build/bench/results.json, latency.png.
bench:
	scripts/bench

# Debian's python3-sphinx, installed when missing.
docs:
	@command -v sphinx-build > /dev/null || { \
		echo "docs: installing python3-sphinx"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			python3-sphinx > /dev/null; }
	sphinx-build -W --keep-going -q -b html -d $(BUILD)/docs/doctrees \
		Documentation $(BUILD)/docs/html
	@echo "docs: $(BUILD)/docs/html/index.html"

install:
	$(MAKE) -C tools/lib/vfio-user install PREFIX=$(PREFIX) DESTDIR=$(DESTDIR)
	$(MAKE) -C tools/vfio-user install PREFIX=$(PREFIX) DESTDIR=$(DESTDIR)
	install -d $(DESTDIR)$(MANDIR)/man1
	install -m 0644 tools/vfio-user/vfio-user-sample.1 $(DESTDIR)$(MANDIR)/man1/

clean:
	rm -rf $(BUILD)/kmod $(BUILD)/selftests $(BUILD)/tools $(BUILD)/vm $(BUILD)/lint $(BUILD)/bench
	rm -f *.o *.ko *.mod *.mod.c modules.order Module.symvers .*.cmd
	find drivers -name '*.o' -o -name '.*.cmd' | xargs rm -f

# Also drops the cached kernels, initramfs and trixie chroot.
distclean: clean
	rm -rf $(BUILD)

.PHONY: all modules tools selftests deps check check-debug soak run lint bench docs install clean distclean interop
