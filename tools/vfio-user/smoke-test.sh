#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
#
# Smoke test of vfio-user-sample as a new user would run it: start it on a
# socket, talk to it with a small independent client (Python, written from
# the spec), check the log lines and the clean exit on SIGTERM. Then a
# smaller client against minimal-server, the documentation's example: its two
# registers, and an error reply for any other access.
#
#   smoke-test.sh path/to/vfio-user-sample [path/to/minimal-server]
set -eu

sample=${1:?usage: $0 path/to/vfio-user-sample [path/to/minimal-server]}
minimal=${2:-$(dirname "$sample")/minimal-server}
dir=$(mktemp -d /tmp/vus-smoke.XXXXXX)
log=$dir/server.log
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT

# wait_sock NAME SOCKET: until the server listens (5 s)
wait_sock() {
	i=0
	while [ ! -S "$2" ]; do
		i=$((i + 1))
		[ $i -lt 100 ] || { echo "FAIL: $1: no socket"; cat "$log"; exit 1; }
		sleep 0.05
	done
}

"$sample" --help | grep -q "vendor 0x4e58 device 0x0001"

# dma-twin: the DMA engine with --twin-socket, a client that asks for it
for dev in dma null dma-twin; do
	sock=$dir/$dev.sock
	opts="--device ${dev%-twin}"
	[ "$dev" = dma ] && opts="$opts --verbose"	# logs each copy's path
	[ "$dev" = dma-twin ] && opts="$opts --twin-socket"
	# shellcheck disable=SC2086
	"$sample" --socket "$sock" $opts 2>"$log" &
	pid=$!
	wait_sock "$dev" "$sock"
	python3 - "$sock" "$dev" <<'PY'
import json, mmap, os, select, socket, struct, sys

path, dev = sys.argv[1], sys.argv[2]
HDR = struct.Struct("<HHIII")
mem = bytearray(1 << 16)          # client memory at IOVA 0x10000
IOVA = 0x10000
next_id = [0]
tw = []                           # the twin socket, once negotiated

def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b

def recv_msg(s):
    mid, cmd, size, flags, err = HDR.unpack(recv_exact(s, 16))
    return mid, cmd, flags, err, recv_exact(s, size - 16)

def cmd(s, c, payload=b""):
    mid = next_id[0]; next_id[0] += 1
    s.sendall(HDR.pack(mid, c, 16 + len(payload), 0, 0) + payload)
    while True:
        ready = select.select([s] + tw, [], [], 5)[0]
        assert ready, "no message within 5 s"
        src = ready[-1]
        rid, rc, flags, err, data = recv_msg(src)
        if flags & 0xf == 0:      # server command: DMA_READ 11 / DMA_WRITE 12
            assert src in tw or not tw, "DMA command on the main socket"
            addr, count = struct.unpack_from("<QQ", data)
            off = addr - IOVA
            if rc == 11:
                reply = struct.pack("<QQ", addr, count) + bytes(mem[off:off + count])
            else:
                mem[off:off + count] = data[16:16 + count]
                reply = struct.pack("<QQ", addr, count)
            src.sendall(HDR.pack(rid, rc, 16 + len(reply), 1, 0) + reply)
            continue
        assert src is s and rid == mid and rc == c, (rid, mid, rc, c)
        if flags & 0x20:
            raise OSError(err, "command %d failed" % c)
        return data

def rd(s, region, off, n):
    d = cmd(s, 9, struct.pack("<QII", off, region, n))
    return d[16:]

def wr(s, region, off, data):
    cmd(s, 10, struct.pack("<QII", off, region, len(data)) + data)

s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
caps = {"max_msg_fds": 1, "max_data_xfer_size": 1024}
if dev == "dma-twin":
    caps["twin_socket"] = {"supported": True}
caps = json.dumps({"capabilities": caps}).encode()
if dev == "dma-twin":
    # the twin socket comes as fd 0 of the VERSION reply
    payload = struct.pack("<HH", 0, 2) + caps + b"\0"
    s.sendall(HDR.pack(0, 1, 16 + len(payload), 0, 0) + payload)
    next_id[0] += 1
    h, fds, _, _ = socket.recv_fds(s, 16, 1)
    mid, c, size, flags, err = HDR.unpack(h)
    assert (mid, c, flags & 0x2f) == (0, 1, 1) and len(fds) == 1, (h, fds)
    v = recv_exact(s, size - 16)
    tw.append(socket.socket(fileno=fds[0]))
    assert tw[0].family == socket.AF_UNIX and tw[0].type == socket.SOCK_STREAM
    assert json.loads(v[4:-1])["capabilities"]["twin_socket"] == \
        {"supported": True, "fd_index": 0}, v
    dev = "dma"
else:
    v = cmd(s, 1, struct.pack("<HH", 0, 2) + caps + b"\0")
    assert "twin_socket" not in json.loads(v[4:-1])["capabilities"]
major, minor = struct.unpack_from("<HH", v)
assert (major, minor) == (0, 2)
info = cmd(s, 4, struct.pack("<IIII", 16, 0, 0, 0))
argsz, flags, nreg, nirq = struct.unpack("<IIII", info)
assert flags & 2 and nreg >= 9 and nirq >= 5, info
vid, did = struct.unpack("<HH", rd(s, 7, 0, 4))
assert vid == 0x4e58 and did == (1 if dev == "dma" else 2), (hex(vid), hex(did))
if dev == "dma":
    assert struct.unpack("<I", rd(s, 0, 0, 4))[0] == 0x31414d44
    cmd(s, 2, struct.pack("<IIQQQ", 32, 3, 0, IOVA, len(mem)))
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    hdr = HDR.pack(next_id[0], 8, 16 + 20, 0, 0)
    next_id[0] += 1
    socket.send_fds(s, [hdr + struct.pack("<IIIII", 20, 4 | 32, 2, 0, 1)], [efd])
    _, _, fl, _, _ = recv_msg(s)
    assert not fl & 0x20
    mem[0:3000] = os.urandom(3000)
    wr(s, 0, 0x08, struct.pack("<Q", IOVA))
    wr(s, 0, 0x10, struct.pack("<Q", IOVA + 0x8000))
    wr(s, 0, 0x18, struct.pack("<Q", 3000))
    wr(s, 0, 0x20, struct.pack("<I", 1))
    status = struct.unpack("<I", rd(s, 0, 0x24, 4))[0]
    error = struct.unpack("<I", rd(s, 0, 0x28, 4))[0]
    assert (status, error) == (2, 0), (status, error)
    assert mem[0:3000] == mem[0x8000:0x8000 + 3000]
    assert os.eventfd_read(efd) == 1
    def rd64(off):
        return struct.unpack("<Q", rd(s, 0, off, 8))[0]
    # SHM_BYTES, RD_MSGS, WR_MSGS: 3000 bytes in 1024-byte messages
    assert (rd64(0x48), rd64(0x50), rd64(0x58)) == (0, 3, 3)
    # TWIN_SOCKET: whether those went on the twin socket
    assert struct.unpack("<I", rd(s, 0, 0x60, 4))[0] == len(tw)
    # shared memory: a DMA region backed by a memfd; its copy sends nothing
    SHM = 0x100000
    mfd = os.memfd_create("guest")
    os.ftruncate(mfd, 1 << 16)
    shm = mmap.mmap(mfd, 1 << 16)
    hdr = HDR.pack(next_id[0], 2, 16 + 32, 0, 0)
    next_id[0] += 1
    socket.send_fds(s, [hdr + struct.pack("<IIQQQ", 32, 3, 0, SHM, 1 << 16)], [mfd])
    _, _, fl, _, _ = recv_msg(s)
    assert not fl & 0x20
    shm[0:3000] = os.urandom(3000)
    wr(s, 0, 0x08, struct.pack("<Q", SHM))
    wr(s, 0, 0x10, struct.pack("<Q", SHM + 0x8000))
    wr(s, 0, 0x20, struct.pack("<I", 1))
    status = struct.unpack("<I", rd(s, 0, 0x24, 4))[0]
    assert status == 2, status
    assert shm[0:3000] == shm[0x8000:0x8000 + 3000]
    assert (rd64(0x48), rd64(0x50), rd64(0x58)) == (3000, 3, 3)
    assert os.eventfd_read(efd) == 1
    # the memory goes away without DMA_UNMAP (as when the module zaps it):
    # the copy fails with EFAULT, the server lives on
    os.ftruncate(mfd, 0)
    wr(s, 0, 0x20, struct.pack("<I", 1))
    status = struct.unpack("<I", rd(s, 0, 0x24, 4))[0]
    error = struct.unpack("<I", rd(s, 0, 0x28, 4))[0]
    assert (status, error) == (3, 14), (status, error)
    assert (rd64(0x48), rd64(0x50), rd64(0x58)) == (3000, 3, 3)
else:
    wr(s, 0, 0x10, struct.pack("<I", 41))
    assert struct.unpack("<I", rd(s, 0, 0x10, 4))[0] == 42
s.close()
print("smoke: %s%s ok" % (dev, " (twin socket)" if tw else ""))
PY
	sleep 0.2
	kill -TERM "$pid"
	wait "$pid" || { echo "FAIL: $dev: exit status $?"; cat "$log"; exit 1; }
	pid=
	twin=no
	[ "$dev" = dma-twin ] && twin=yes
	grep -q "client connected (.*twin socket $twin)" "$log" ||
		{ echo "FAIL: no connect log (twin socket $twin)"; cat "$log"; exit 1; }
	grep -q "client disconnected" "$log" || { echo "FAIL: no disconnect log"; cat "$log"; exit 1; }
	[ ! -e "$sock" ] || { echo "FAIL: socket left behind"; exit 1; }
	if [ "$dev" = dma ]; then
		for path in "via DMA messages" "via shared memory"; do
			grep -q "copy .* $path: ok" "$log" ||
				{ echo "FAIL: no copy logged $path"; cat "$log"; exit 1; }
		done
	fi
	cat "$log"
done

# minimal-server: VERSION, BAR0 offset 0 reads 0x12345678, offset 4 keeps
# what was written, every other access gets an error reply (EINVAL from its
# callback, or the library's for one past the BAR) and the server lives on
# and serves a second client. It has no SIGTERM handler: killed by it.
sock=$dir/minimal.sock
"$minimal" "$sock" 2>"$log" &
pid=$!
wait_sock minimal-server "$sock"
python3 - "$sock" <<'PY' || { echo "FAIL: minimal-server"; cat "$log"; exit 1; }
import json, select, socket, struct, sys

HDR = struct.Struct("<HHIII")
next_id = [0]

def recv_exact(n):
    b = b""
    while len(b) < n:
        assert select.select([s], [], [], 5)[0], "no reply within 5 s"
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("server closed the socket")
        b += c
    return b

def cmd(c, payload=b""):
    """Return (errno, payload) of the reply to command c."""
    mid = next_id[0]; next_id[0] += 1
    s.sendall(HDR.pack(mid, c, 16 + len(payload), 0, 0) + payload)
    rid, rc, size, flags, err = HDR.unpack(recv_exact(16))
    data = recv_exact(size - 16)
    assert (rid, rc, flags & 0xf) == (mid, c, 1), (rid, mid, rc, c, flags)
    return (err if flags & 0x20 else 0), data

def rd(region, off, n):
    return cmd(9, struct.pack("<QII", off, region, n))

def wr(region, off, data):
    return cmd(10, struct.pack("<QII", off, region, len(data)) + data)

def rd32(off):
    err, d = rd(0, off, 4)
    assert err == 0 and len(d) == 20, (off, err, d)
    return struct.unpack_from("<I", d, 16)[0]

def connect():
    global s
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    next_id[0] = 0
    caps = json.dumps({"capabilities": {"max_msg_fds": 1}}).encode() + b"\0"
    err, v = cmd(1, struct.pack("<HH", 0, 2) + caps)
    assert err == 0 and struct.unpack_from("<HH", v) == (0, 2), (err, v)

connect()
err, d = rd(7, 0, 4)
assert err == 0 and struct.unpack_from("<HH", d, 16) == (0x4e58, 0xff), d
assert rd32(0) == 0x12345678, hex(rd32(0))
for val in (0xdeadbeef, 41):
    assert wr(0, 4, struct.pack("<I", val))[0] == 0
    assert rd32(4) == val, (hex(rd32(4)), hex(val))
assert wr(0, 0, struct.pack("<I", 7))[0] == 0   # offset 0 is read-only
assert rd32(0) == 0x12345678
for what, (err, _) in [("read at 8", rd(0, 8, 4)),
                       ("write at 8", wr(0, 8, b"\1\0\0\0")),
                       ("2-byte read at 0", rd(0, 0, 2)),
                       ("8-byte read at 0", rd(0, 0, 8)),
                       ("2-byte write at 4", wr(0, 4, b"\2\0")),
                       ("read at 0xffc", rd(0, 0xffc, 4))]:
    assert err == 22, (what, err)   # EINVAL
err, _ = rd(0, 0x1000, 4)           # past the BAR: the library refuses
assert err != 0, "read past BAR0 succeeded"
assert rd32(4) == 41                # still serving, scratch untouched
s.close()
connect()                           # the run loop takes the next client
assert (rd32(0), rd32(4)) == (0x12345678, 41)
s.close()
print("smoke: minimal-server ok")
PY
kill -0 "$pid" || { echo "FAIL: minimal-server exited"; cat "$log"; exit 1; }
kill -TERM "$pid"
rc=0
{ wait "$pid"; } 2>/dev/null || rc=$?	# no "Terminated" from the shell
pid=
[ $rc = 143 ] || { echo "FAIL: minimal-server: exit status $rc"; cat "$log"; exit 1; }
echo "smoke test passed"
