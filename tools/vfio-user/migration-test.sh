#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
#
# Migration test of vfio-user-sample, host only: for each device a source
# and a destination process, and a small independent client (Python,
# written from the spec: DEVICE_FEATURE, MIG_DATA_READ, MIG_DATA_WRITE)
# playing both VMMs. The client reads the source's state, writes it into
# the destination and checks that the destination's device is the
# source's: every register, the config space and MSI-X table, BAR memory
# (null: BAR4 through its mmap, BAR2 by message), and for the DMA engine a
# copy stopped half way that the destination finishes, interrupt included.
# Then what must fail does: writes to a stopped device, reads beyond
# max_data_xfer_size, corrupt and truncated streams, a stream from a device
# with another BAR size, migration with --no-migration.
#
#   migration-test.sh path/to/vfio-user-sample
set -eu

sample=${1:?usage: $0 path/to/vfio-user-sample}
dir=$(mktemp -d /tmp/vus-mig.XXXXXX)
pids=
cleanup() {
	for p in $pids; do
		kill "$p" 2>/dev/null || true
	done
	rm -rf "$dir"
}
trap cleanup EXIT

# start NAME OPTIONS...: a sample on $dir/NAME.sock, log in $dir/NAME.log
start() {
	name=$1
	shift
	"$sample" --socket "$dir/$name.sock" --verbose "$@" 2>"$dir/$name.log" &
	pids="$pids $!"
	i=0
	while [ ! -S "$dir/$name.sock" ]; do
		i=$((i + 1))
		[ $i -lt 100 ] || { echo "FAIL: $name: no socket"; cat "$dir/$name.log"; exit 1; }
		sleep 0.05
	done
}

start dma-src --device dma
start dma-dst --device dma
start null-src --device null --mmap --bar-size 64M
start null-dst --device null --mmap --bar-size 64M
start null-other --device null --bar-size 128M
start nomig --device dma --no-migration

if ! python3 - "$dir" <<'PY'; then
import array, json, mmap, os, select, socket, struct, sys, time, zlib

d = sys.argv[1]
HDR = struct.Struct("<HHIII")
E2BIG, EINVAL, EBUSY, EOPNOTSUPP = 7, 22, 16, 95
# DEVICE_FEATURE flags and states (spec: VFIO_USER_DEVICE_FEATURE)
GET, SET, PROBE = 1 << 16, 1 << 17, 1 << 18
F_MIGRATION, F_STATE, F_DATA_SIZE = 1, 2, 9
ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P = 0, 1, 2, 3, 4, 5


class Refused(Exception):
    def __init__(self, cmd, err):
        super().__init__("command %d: error %d" % (cmd, err))
        self.err = err


class Client:
    """One vfio-user client: commands, and the server's DMA_READ/DMA_WRITE
    served from @mem (IOVA @iova) while a reply is awaited."""

    def __init__(self, path, max_xfer=1024, mem=None, iova=0):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(10)       # a stuck server fails the test
        self.s.connect(path)
        self.id = 0
        self.mem, self.iova = mem, iova
        caps = {"capabilities": {"max_msg_fds": 8,
                                 "max_data_xfer_size": max_xfer}}
        v = self.cmd(1, struct.pack("<HH", 0, 2) +
                     json.dumps(caps).encode() + b"\0")
        assert struct.unpack_from("<HH", v) == (0, 2)

    def recv_exact(self, n, fds):
        b = b""
        while len(b) < n:
            assert select.select([self.s], [], [], 10)[0], "no reply in 10 s"
            data, anc, _, _ = self.s.recvmsg(n - len(b),
                                             socket.CMSG_SPACE(8 * 4))
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(cdata[:len(cdata) - len(cdata) % 4])
                    fds.extend(a)
            if not data:
                raise EOFError("server closed the socket")
            b += data
        return b

    def cmd(self, c, payload=b"", fds=(), want_fds=None):
        mid = self.id
        self.id = (self.id + 1) & 0xffff
        msg = HDR.pack(mid, c, 16 + len(payload), 0, 0) + payload
        if fds:
            socket.send_fds(self.s, [msg], list(fds))
        else:
            self.s.sendall(msg)
        while True:
            got = []
            rid, rc, size, flags, err = HDR.unpack(self.recv_exact(16, got))
            data = self.recv_exact(size - 16, got)
            if flags & 0xf == 0:        # the server's DMA_READ / DMA_WRITE
                self.serve_dma(rid, rc, data)
                continue
            assert (rid, rc, flags & 0xf) == (mid, c, 1), (rid, mid, rc, c)
            if flags & 0x20:
                assert size == 16, "an error reply carries no payload"
                raise Refused(c, err)
            if want_fds is not None:
                want_fds.extend(got)
            else:
                for f in got:
                    os.close(f)
            return data

    def serve_dma(self, rid, rc, data):
        addr, count = struct.unpack_from("<QQ", data)
        off = addr - self.iova
        assert rc in (11, 12) and 0 <= off and off + count <= len(self.mem)
        if rc == 11:
            reply = data[:16] + bytes(self.mem[off:off + count])
        else:
            self.mem[off:off + count] = data[16:16 + count]
            reply = data[:16]
        self.s.sendall(HDR.pack(rid, rc, 16 + len(reply), 1, 0) + reply)

    def close(self):
        self.s.close()

    # regions
    def rd(self, region, off, n):
        return self.cmd(9, struct.pack("<QII", off, region, n))[16:]

    def wr(self, region, off, data):
        self.cmd(10, struct.pack("<QII", off, region, len(data)) + data)

    def rd32(self, off):
        return struct.unpack("<I", self.rd(0, off, 4))[0]

    def rd64(self, off):
        return struct.unpack("<Q", self.rd(0, off, 8))[0]

    def wr32(self, off, v):
        self.wr(0, off, struct.pack("<I", v))

    def wr64(self, off, v):
        self.wr(0, off, struct.pack("<Q", v))

    def region_fd(self, index):
        fds = []
        self.cmd(5, struct.pack("<IIIIQQ", 4096, 0, index, 0, 0, 0),
                 want_fds=fds)
        assert len(fds) == 1, fds
        return fds[0]

    def dma_map(self, iova, size, fd=None):
        self.cmd(2, struct.pack("<IIQQQ", 32, 3, 0, iova, size),
                 fds=[fd] if fd is not None else ())

    def msix_efd(self, vector):
        efd = os.eventfd(0, os.EFD_NONBLOCK)
        self.cmd(8, struct.pack("<IIIII", 20, 4 | 32, 2, vector, 1), fds=[efd])
        return efd

    def reset(self):
        self.cmd(13)

    # migration
    def feature(self, flags, argsz=16, data=b""):
        return self.cmd(16, struct.pack("<II", argsz, flags) + data)

    def get(self, feature):
        r = self.feature(GET | feature)
        argsz, flags = struct.unpack_from("<II", r)
        assert len(r) == 16 and argsz == 16 and flags == GET | feature, r
        return struct.unpack_from("<Q", r, 8)[0]

    def state(self):
        return self.get(F_STATE) & 0xffffffff

    def set_state(self, s):
        req = struct.pack("<IIII", 16, SET | F_STATE, s, 0)
        assert self.cmd(16, req) == req   # the reply repeats the request

    def mig_read(self, n, argsz=None):
        r = self.cmd(17, struct.pack("<II", 8 + n if argsz is None else argsz, n))
        argsz, size = struct.unpack_from("<II", r)
        assert size <= n and len(r) == 8 + size and argsz == 8 + size
        return r[8:]

    def read_stream(self, chunk):
        out = b""
        while True:
            b = self.mig_read(chunk)
            out += b
            if len(b) < chunk:      # short: the end of the data
                return out

    def write_stream(self, data, chunk):
        for i in range(0, len(data), chunk):
            part = data[i:i + chunk]
            r = self.cmd(18, struct.pack("<II", 8 + len(part), len(part)) + part)
            assert r == b""

    def load(self, data, chunk=333):
        self.set_state(RESUMING)
        self.write_stream(data, chunk)
        self.set_state(STOP)


def refused(err, f, *args):
    try:
        f(*args)
    except Refused as e:
        assert e.err == err, (e.err, err)
        return
    raise AssertionError("not refused: %s%s" % (f.__name__, args))


def wait_for(what, f, timeout=10):
    end = time.time() + timeout
    while not f():
        assert time.time() < end, "timed out waiting for " + what
        time.sleep(0.01)


def regs(c, end):
    return [c.rd32(off) for off in range(0, end, 4)]


def config(c):
    return c.rd(7, 0, 256)


def frames(stream):
    """(offset, header) of each frame: u32 magic, u16 format, u16 flags,
    u16 vendor, u16 device, u32 version, u32 lib_len, u32 crc, u64 dev_len"""
    out, pos = [], 0
    while pos < len(stream):
        h = struct.unpack_from("<IHHHHIIIQ", stream, pos)
        assert h[0] == 0x4d535556, hex(h[0])     # "VUSM"
        out.append((pos, h))
        pos += 32 + h[6] + h[8]
    assert pos == len(stream)
    return out


def check_crc(stream):
    for pos, h in frames(stream):
        body = bytearray(stream[pos:pos + 32 + h[6] + h[8]])
        body[20:24] = b"\0\0\0\0"
        assert zlib.crc32(body) == h[7], "CRC is zlib's crc32"


def fix_crc(b, pos=0):
    h = struct.unpack_from("<IHHHHIIIQ", b, pos)
    n = 32 + h[6] + h[8]
    b[pos + 20:pos + 24] = b"\0\0\0\0"
    struct.pack_into("<I", b, pos + 20, zlib.crc32(bytes(b[pos:pos + n])))


def bad_streams(c, good, dev_name):
    """What the library refuses leaves the device in RESUMING; what the
    device refuses, in ERROR; DEVICE_RESET gets it back."""
    c.reset()
    c.set_state(RESUMING)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 1
    c.write_stream(bytes(flipped), 4096)
    refused(EINVAL, c.set_state, STOP)
    assert c.state() == RESUMING
    c.reset()
    c.set_state(RESUMING)
    c.write_stream(good[:-1], 4096)
    refused(EINVAL, c.set_state, STOP)
    assert c.state() == RESUMING
    c.write_stream(good[-1:], 4096)      # the rest arrives: fine
    c.set_state(STOP)
    # the device's own check: its register count, CRC made right
    c.reset()
    bad = bytearray(good)
    pos, h = frames(good)[-1]
    struct.pack_into("<I", bad, pos + 32 + h[6], 0x10)
    fix_crc(bad, pos)
    c.set_state(RESUMING)
    c.write_stream(bytes(bad), 4096)
    refused(EINVAL, c.set_state, STOP)
    assert c.state() == ERROR
    refused(EINVAL, c.set_state, RUNNING)
    c.reset()
    assert c.state() == RUNNING
    print("migration: %s: corrupt, truncated and refused streams ok" % dev_name)


def test_dma():
    SHM, MSG = 0x40000000, 0x100000
    msgmem = bytearray(1 << 16)
    mfd = os.memfd_create("guest")
    os.ftruncate(mfd, 1 << 20)
    shm = mmap.mmap(mfd, 1 << 20)
    src = Client(d + "/dma-src.sock", 1024, msgmem, MSG)
    assert src.get(F_MIGRATION) == 3        # STOP_COPY | P2P
    src.feature(PROBE | GET | SET | F_STATE, 8)
    assert src.state() == RUNNING
    src.dma_map(MSG, len(msgmem))
    src.dma_map(SHM, 1 << 20, mfd)
    sefd = src.msix_efd(0)
    # config space and the MSI-X table entry of vector 0
    src.wr(7, 4, struct.pack("<H", 6))      # memory, bus master
    src.wr(7, 0x10, struct.pack("<I", 0xfebf0000))
    src.wr(0, 0x800, struct.pack("<QII", 0xfee00000, 0x4021, 0))
    src.wr32(0x40, 0xdeadbeef)              # SCRATCH
    # a copy by DMA messages, done before the migration
    msgmem[0:3000] = os.urandom(3000)
    src.wr64(0x08, MSG)
    src.wr64(0x10, MSG + 0x8000)
    src.wr64(0x18, 3000)
    src.wr32(0x20, 1)
    assert (src.rd32(0x24), src.rd32(0x28)) == (2, 0)
    assert msgmem[0:3000] == msgmem[0x8000:0x8000 + 3000]
    assert os.eventfd_read(sefd) == 1
    # a background copy in shared memory, stopped after 3 steps of 4 KiB
    n = 256 << 10
    shm[0:n] = os.urandom(n)
    src.wr64(0x08, SHM)
    src.wr64(0x10, SHM + (512 << 10))
    src.wr64(0x18, n)
    src.wr32(0x70, 4096)                    # STEP
    src.wr32(0x74, 3)                       # STEPS
    src.wr32(0x20, 4)                       # DOORBELL: background
    wait_for("3 steps", lambda: src.rd64(0x68) == 3 * 4096)
    assert src.rd32(0x24) == 1              # busy
    # quiesced: writes still reach the device, but it copies nothing more
    src.set_state(RUNNING_P2P)
    src.wr32(0x74, 0xffffffff)
    for _ in range(20):
        assert src.rd64(0x68) == 3 * 4096
    time.sleep(0.1)
    assert src.rd64(0x68) == 3 * 4096
    src.set_state(STOP)
    refused(EBUSY, src.wr32, 0x40, 1)       # stopped: no writes
    before = regs(src, 0x78)
    cfg, table = config(src), src.rd(0, 0x800, 64)
    size = src.get(F_DATA_SIZE)
    src.set_state(STOP_COPY)
    refused(E2BIG, src.mig_read, 1025)      # beyond max_data_xfer_size
    refused(EINVAL, src.mig_read, 64, 8 + 63)   # argsz < 8 + size
    stream = src.read_stream(100)
    assert len(stream) == size, (len(stream), size)
    check_crc(stream)
    assert len(frames(stream)) == 1
    src.set_state(STOP)
    assert regs(src, 0x78) == before

    dst = Client(d + "/dma-dst.sock", 1024, msgmem, MSG)
    dst.dma_map(MSG, len(msgmem))
    dst.dma_map(SHM, 1 << 20, mfd)
    defd = dst.msix_efd(0)
    dst.load(stream)
    assert regs(dst, 0x78) == before, (regs(dst, 0x78), before)
    assert config(dst) == cfg and dst.rd(0, 0x800, 64) == table
    assert (dst.rd64(0x68), dst.rd32(0x24)) == (3 * 4096, 1)
    assert dst.rd32(0x40) == 0xdeadbeef
    # running, the destination's engine finishes the copy and interrupts
    dst.set_state(RUNNING)
    wait_for("the copy", lambda: dst.rd32(0x24) == 2)
    assert dst.rd64(0x68) == n and dst.rd32(0x28) == 0
    assert shm[0:n] == shm[512 << 10:(512 << 10) + n]
    assert os.eventfd_read(defd) == 1
    assert (dst.rd64(0x30), dst.rd64(0x38)) == (2, 3000 + n)  # COUNT, BYTES
    try:
        os.eventfd_read(sefd)
        raise AssertionError("the source interrupted after the migration")
    except BlockingIOError:
        pass
    assert src.rd64(0x68) == 3 * 4096 and src.state() == STOP
    print("migration: dma: registers, config, MSI-X table and a copy "
          "stopped after 12 KiB carried over and finished (%d bytes)"
          % len(stream))
    bad_streams(dst, stream, "dma")
    # no copy in flight, yet STATUS busy: refused
    bad = bytearray(stream)
    pos, h = frames(stream)[-1]
    dev = pos + 32 + h[6]
    regs_len = struct.unpack_from("<I", bad, dev)[0]
    assert struct.unpack_from("<I", bad, dev + 4 + 0x24)[0] == 1   # BUSY
    assert struct.unpack_from("<I", bad, dev + 4 + regs_len)[0] == 1
    struct.pack_into("<I", bad, dev + 4 + regs_len, 0)            # !active
    fix_crc(bad, pos)
    dst.reset()
    dst.set_state(RESUMING)
    dst.write_stream(bytes(bad), 4096)
    refused(EINVAL, dst.set_state, STOP)
    assert dst.state() == ERROR
    dst.reset()
    print("migration: dma: an idle engine with STATUS busy refused")
    src.close()
    dst.close()


def test_null():
    src = Client(d + "/null-src.sock", 4096)
    dst = Client(d + "/null-dst.sock", 4096)
    sfd, dfd = src.region_fd(4), dst.region_fd(4)
    smem = mmap.mmap(sfd, 64 << 10)
    dmem = mmap.mmap(dfd, 64 << 10)
    dmem[0:16] = b"stale bytes here"        # the load must clear them
    smem[0:16 << 10] = os.urandom(16 << 10)             # through the mmap
    smem[(40 << 10):(40 << 10) + 100] = b"x" * 100
    src.wr(4, 20 << 10, b"by message, outside the sparse areas")
    for off in (0, 10 << 20, (64 << 20) - 8):
        src.wr(2, off, struct.pack("<Q", 0x0123456789abcdef + off))
    src.wr64(0x08, 0x1122334455667788)      # SCRATCH
    src.wr32(0x10, 41)                      # PING
    src.wr32(0x18, 7)                       # SLOW
    src.wr64(0x28, 0x1000)                  # BAR4_OFFSET
    src.wr(7, 4, struct.pack("<H", 2))
    src.set_state(STOP)
    refused(EBUSY, src.wr, 4, 0, b"no")     # also library-backed memory
    before = regs(src, 0x38)
    assert regs(src, 0x38) == before        # ACCESSES: reads change nothing
    cfg, bar4 = config(src), bytes(smem)
    src.set_state(STOP_COPY)
    stream = src.read_stream(4096)
    src.set_state(STOP)
    check_crc(stream)
    # sparse: 16 KiB + 4 KiB of BAR4 and 3 pages of the 64 MiB BAR2
    assert len(stream) < 40 << 10, len(stream)

    dst.load(stream, 1000)
    assert regs(dst, 0x38) == before, (regs(dst, 0x38), before)
    assert config(dst) == cfg
    assert bytes(dmem) == bar4
    for off in (0, 10 << 20, (64 << 20) - 8):
        assert dst.rd(2, off, 8) == struct.pack("<Q", 0x0123456789abcdef + off)
    assert dst.rd(2, 5 << 20, 8) == b"\0" * 8
    dst.set_state(RUNNING)
    assert dst.rd32(0x10) == 42 and dst.rd64(0x30) == struct.unpack_from(
        "<Q", bar4, 0x1000)[0]
    print("migration: null: registers, config, BAR4 (mmap) and BAR2 "
          "carried over (%d bytes)" % len(stream))
    bad_streams(dst, stream, "null")

    # a device with another BAR2 size refuses the state
    other = Client(d + "/null-other.sock", 4096)
    other.set_state(RESUMING)
    other.write_stream(stream, 4096)
    refused(EINVAL, other.set_state, STOP)
    assert other.state() == ERROR
    other.reset()
    print("migration: null: a stream for another BAR size refused")
    for c in (src, dst, other):
        c.close()


def test_no_migration():
    c = Client(d + "/nomig.sock")
    refused(EOPNOTSUPP, c.feature, GET | F_MIGRATION)
    refused(EOPNOTSUPP, c.mig_read, 64)
    c.wr32(0x40, 5)
    assert c.rd32(0x40) == 5
    c.close()
    print("migration: --no-migration: DEVICE_FEATURE refused")


test_dma()
test_null()
test_no_migration()
PY
	for f in "$dir"/*.log; do
		echo "--- $f"
		cat "$f"
	done
	exit 1
fi

for name in dma-dst null-dst; do
	grep -q "migration: state of version 1 loaded: ok" "$dir/$name.log" ||
		{ echo "FAIL: $name: no load logged"; cat "$dir/$name.log"; exit 1; }
done
grep -q "migration: RUNNING_P2P -> STOP" "$dir/dma-src.log" ||
	{ echo "FAIL: no transition logged"; cat "$dir/dma-src.log"; exit 1; }
for p in $pids; do
	kill -TERM "$p"
	wait "$p" || { echo "FAIL: a sample exited with $?"; exit 1; }
done
pids=
echo "migration test passed"
