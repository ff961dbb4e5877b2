#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
#
# peer_qtest.py: the guest operations of the peer bench (run-peer), played
# over QEMU's qtest protocol and timed one by one with clock_gettime.
#
# QEMU runs stopped (-S) with "-qtest stdio" as a coprocess of run-peer
# (qemu_lib.sh's ql_qemu_start); this program inherits the two pipe ends:
# QEMU's qtest replies on its stdin, its commands to QEMU on its stdout.
# The device is the DMA sample (tools/vfio-user/dma.c) at BAR0 = 0xe0000000,
# already mapped, with MSI-X entry 0 pointing at guest RAM (--msi-addr).
#
# Series (one JSON line each, appended to --results):
#   ram_read     readl of a guest-RAM word: the qtest round trip alone
#   mmio_read    readl of BAR0 SCRATCH
#   mmio_write   writel of BAR0 SCRATCH
#   msix         DOORBELL of a 4-byte copy with IRQ_CTRL 1 -> the MSI-X
#                message read back from guest RAM (polled with readl);
#                also the doorbell writel alone (trigger_*) and the rest
#                (after_trigger_*)
#   dma_PATH     a --dma-mib guest-RAM copy: DOORBELL -> the completion
#                interrupt's message in guest RAM; the device's SHM_BYTES,
#                RD_MSGS and WR_MSGS say which path the copies took
# Latency series carry median/p99 and net_*: for MMIO, each op follows a
# guest-RAM readl timed alone and net_* are the median/p99 of op minus
# that readl; for msix, minus two such qtest round trips (the doorbell's
# command and the poll that sees the message).

import argparse
import json
import os
import sys
import time

BAR0 = 0xE0000000
REG_SRC, REG_DST, REG_LEN = 0x08, 0x10, 0x18
REG_DOORBELL, REG_STATUS, REG_ERROR, REG_IRQ_CTRL = 0x20, 0x24, 0x28, 0x2C
REG_SCRATCH, REG_SHM_BYTES, REG_RD_MSGS, REG_WR_MSGS = 0x40, 0x48, 0x50, 0x58
STATUS_DONE, STATUS_ERROR = 2, 3


def now():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class Qtest:
    """One qtest command at a time over two inherited pipe ends."""

    def __init__(self, rfd, wfd, timeout):
        self.rfd, self.wfd, self.timeout = rfd, wfd, timeout
        self.buf = b""

    def cmd(self, line):
        data = (line + "\n").encode()
        while data:
            data = data[os.write(self.wfd, data):]
        while b"\n" not in self.buf:
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                raise RuntimeError("QEMU closed qtest after %r" % line)
            self.buf += chunk
        reply, self.buf = self.buf.split(b"\n", 1)
        reply = reply.decode()
        if not reply.startswith("OK"):
            raise RuntimeError("qtest %r -> %r" % (line, reply))
        return reply

    def val(self, line):
        return int(self.cmd(line).split()[1], 16)


def pct(sorted_ns, p):
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * p))]


def latency(q, line_of, n):
    """n ops, each timed alone; line_of(i) gives the i-th command."""
    lines = [line_of(i) for i in range(n)]
    out = []
    for line in lines:
        t0 = now()
        q.cmd(line)
        out.append(now() - t0)
    return out


def paired(q, line_of, n, ram_line):
    """n ops, each right after a guest-RAM readl timed alone: a load that
    changes during the series (other VMs on the host) moves both alike."""
    ops, ram = [], []
    for i in range(n):
        t0 = now()
        q.cmd(ram_line)
        t1 = now()
        q.cmd(line_of(i))
        ram.append(t1 - t0)
        ops.append(now() - t1)
    return ops, ram


def summary(samples):
    s = sorted(samples)
    return {"n": len(s), "median_ns": pct(s, 0.5), "p99_ns": pct(s, 0.99)}


def save_samples(path, samples):
    if path:
        with open(path, "w") as f:
            f.write("".join("%d\n" % x for x in samples))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="a, b or c (anp, bnp: a, b without posted writes)")
    ap.add_argument("--results", required=True)
    ap.add_argument("--samples", help="directory for per-op samples")
    ap.add_argument("--ops", type=int, default=0, help="MMIO ops (0: none)")
    ap.add_argument("--msix", type=int, default=0, help="interrupts (0: none)")
    ap.add_argument("--msi-addr", type=lambda x: int(x, 0), default=0x300000)
    ap.add_argument("--msi-data", type=lambda x: int(x, 0), default=0x4D534958)
    ap.add_argument("--dma-mib", type=int, default=0, help="copy size (0: none)")
    ap.add_argument("--dma-reps", type=int, default=3)
    ap.add_argument("--dma-path", default="msg", help="name of the series: dma_PATH")
    ap.add_argument("--timeout", type=float, default=120)
    a = ap.parse_args()

    q = Qtest(0, 1, a.timeout)
    res = open(a.results, "a")
    ram_addr = 0x400000
    rows = []

    def emit(row):
        row = dict({"test": "peer", "config": a.config}, **row)
        rows.append(row)
        res.write(json.dumps(row) + "\n")
        res.flush()
        print("peer %s: %s" % (a.config, json.dumps(row)), file=sys.stderr)

    def samples(name):
        return os.path.join(a.samples, "peer_%s_%s.samples" % (a.config, name)) if a.samples else None

    ram = None
    if a.ops or a.msix:
        # The qtest round trip without the device: a guest-RAM readl.
        n = max(a.ops, a.msix)
        q.cmd("writel 0x%x 0x12345678" % ram_addr)
        latency(q, lambda i: "readl 0x%x" % ram_addr, min(n, 100))
        s = latency(q, lambda i: "readl 0x%x" % ram_addr, n)
        save_samples(samples("ram_read"), s)
        ram = summary(s)
        emit(dict({"series": "ram_read"}, **ram))

    if a.ops:
        scratch = BAR0 + REG_SCRATCH
        for name, fn in (("mmio_read", lambda i: "readl 0x%x" % scratch),
                         ("mmio_write", lambda i: "writel 0x%x 0x%x" % (scratch, i))):
            latency(q, fn, min(a.ops, 100))
            s, floor = paired(q, fn, a.ops, "readl 0x%x" % ram_addr)
            save_samples(samples(name), s)
            r = summary(s)
            net = summary([x - y for x, y in zip(s, floor)])
            r["net_median_ns"], r["net_p99_ns"] = net["median_ns"], net["p99_ns"]
            r["paired_ram_median_ns"] = summary(floor)["median_ns"]
            emit(dict({"series": name}, **r))
        last = q.val("readl 0x%x" % scratch)
        if last != a.ops - 1:
            sys.exit("peer %s: SCRATCH reads %#x after writing %#x" % (a.config, last, a.ops - 1))

    if a.msix:
        # A 4-byte copy with its completion interrupt; the interrupt is
        # seen when QEMU's MSI-X message write lands in guest RAM.
        q.cmd("writel 0x%x 0xa5a5a5a5" % 0x500000)
        for reg, v in ((REG_SRC, 0x500000), (REG_DST, 0x500100), (REG_LEN, 4), (REG_IRQ_CTRL, 1)):
            q.cmd("writeq 0x%x 0x%x" % (BAR0 + reg, v) if reg != REG_IRQ_CTRL
                  else "writel 0x%x 0x%x" % (BAR0 + reg, v))
        # Per interrupt: the doorbell writel's own time (trigger: QEMU's
        # client posts it, the module waits for the server's reply, which
        # comes after the copy and the eventfd signal), then the RAM polls
        # until the message is there. net = total minus two qtest round
        # trips (the doorbell command's and the poll that sees the
        # message), each taken as the guest-RAM writel timed just before
        # (paired, like the MMIO ops); both clients pay the same polling
        # granularity. net_poll_* is the older figure (total minus every
        # poll at ram_read's median), which hides an interrupt that
        # arrives while the polls run, i.e. a posted doorbell's.
        total, net, netp, trig, floor, polls_all = [], [], [], [], [], 0
        for i in range(a.msix + min(a.msix, 10)):
            tf = now()
            q.cmd("writel 0x%x 0" % a.msi_addr)
            polls = 0
            t0 = now()
            q.cmd("writel 0x%x 1" % (BAR0 + REG_DOORBELL))
            tw = now()
            while True:
                polls += 1
                if q.val("readl 0x%x" % a.msi_addr) == a.msi_data:
                    break
                if now() - t0 > a.timeout * 1e9:
                    sys.exit("peer %s: no MSI-X message in guest RAM after %d s" % (a.config, a.timeout))
            dt = now() - t0
            if i < min(a.msix, 10):
                continue        # warm-up
            total.append(dt)
            trig.append(tw - t0)
            floor.append(t0 - tf)
            net.append(dt - 2 * (t0 - tf))
            netp.append(dt - polls * ram["median_ns"])
            polls_all += polls
        save_samples(samples("msix"), total)
        r = summary(total)
        n = summary(net)
        r["net_median_ns"], r["net_p99_ns"] = n["median_ns"], n["p99_ns"]
        n = summary(netp)
        r["net_poll_median_ns"], r["net_poll_p99_ns"] = n["median_ns"], n["p99_ns"]
        n = summary(trig)
        r["trigger_median_ns"], r["trigger_p99_ns"] = n["median_ns"], n["p99_ns"]
        n = summary([x - y for x, y in zip(trig, floor)])
        r["trigger_net_median_ns"] = n["median_ns"]
        n = summary([x - y for x, y in zip(total, trig)])
        r["after_trigger_median_ns"], r["after_trigger_p99_ns"] = n["median_ns"], n["p99_ns"]
        r["paired_ram_median_ns"] = summary(floor)["median_ns"]
        r["polls_per_op"] = polls_all / len(total)
        emit(dict({"series": "msix"}, **r))
        q.cmd("writel 0x%x 0" % (BAR0 + REG_IRQ_CTRL))

    if a.dma_mib:
        size = a.dma_mib << 20
        src, dst = 0x1000000, 0x1000000 + size + (16 << 20)
        q.cmd("memset 0x%x 0x%x 0x5a" % (src, size))
        for reg, v in ((REG_SRC, src), (REG_DST, dst), (REG_LEN, size)):
            q.cmd("writeq 0x%x 0x%x" % (BAR0 + reg, v))
        q.cmd("writel 0x%x 1" % (BAR0 + REG_IRQ_CTRL))

        def counters():
            return [q.val("readq 0x%x" % (BAR0 + r)) for r in (REG_SHM_BYTES, REG_RD_MSGS, REG_WR_MSGS)]

        times = []
        c0 = None
        for i in range(a.dma_reps + 1):        # the first is a warm-up (pins, maps)
            q.cmd("memset 0x%x 0x%x 0" % (dst, size))
            if i == 1:
                c0 = counters()
            q.cmd("writel 0x%x 0" % a.msi_addr)
            t0 = now()
            q.cmd("writel 0x%x 1" % (BAR0 + REG_DOORBELL))
            # Completion is the interrupt's message in guest RAM, not a
            # STATUS read: QEMU 11's client serves the server's DMA_READ/
            # DMA_WRITE in its main loop, which a register read waiting
            # for its reply blocks, so polling STATUS during a copy by
            # messages stalls it until the server's timeout.
            while q.val("readl 0x%x" % a.msi_addr) != a.msi_data:
                if now() - t0 > a.timeout * 1e9:
                    sys.exit("peer %s: no completion interrupt after %d s" % (a.config, a.timeout))
            dt = now() - t0
            st = q.val("readl 0x%x" % (BAR0 + REG_STATUS))
            if st != STATUS_DONE:
                sys.exit("peer %s: copy failed, ERROR %d" % (a.config, q.val("readl 0x%x" % (BAR0 + REG_ERROR))))
            for off in (0, size // 2, size - 4):
                v = q.val("readl 0x%x" % (dst + off))
                if v != 0x5a5a5a5a:
                    sys.exit("peer %s: destination +%#x reads %#x after the copy" % (a.config, off, v))
            if i:
                times.append(dt)
        c1 = counters()
        shm, rd, wr = (y - x for x, y in zip(c0, c1))
        path = "shm" if shm == size * a.dma_reps and not rd + wr else "msg" if rd + wr and not shm else "mixed"
        med = sorted(times)[len(times) // 2]
        emit({"series": "dma_" + a.dma_path, "bytes": size, "reps": a.dma_reps,
              "median_ns": med, "mib_s": size / (1 << 20) / (med / 1e9),
              "shm_bytes": shm, "rd_msgs": rd, "wr_msgs": wr, "path": path})


if __name__ == "__main__":
    main()
