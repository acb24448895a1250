"""The bridge + local.vol graph per request, in-process and without a kernel:
``python -m benchmarks.bridge_inline OPS N`` (OPS: getattr,lookup,read,write,create).

Steps Session.dispatch inline (as the reader does) on prepared requests; replies go to
/dev/null.  Prints user µs per request (min over slices) -- run under callgrind with two
N and difference the instruction totals for a steady number."""
import os, sys, tempfile, time, shutil
import trio
from fuse_bridge import abi
from fuse_bridge.session import Session
from fuse_bridge.options import BridgeOptions
from xlators.core.graph import Graph

O = abi.Opcode
ops = sys.argv[1].split(",")
N = int(sys.argv[2])
brick = tempfile.mkdtemp(prefix="lean-brick-")
text = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "volfiles", "local.vol")).read()
text = text.replace("/var/lib/xlfs/brick", brick)
g = Graph.from_text(text); g.init(); g.activate()
opts = BridgeOptions()
for k in ("entry_timeout", "attribute_timeout", "negative_timeout"):
    setattr(opts, k, 0.0)
null = os.open("/dev/null", os.O_WRONLY)
s = Session(g, null, opts)
class Chan: fd = null
chan = Chan()
uniq = [2]

def req(opcode, nodeid, body):
    uniq[0] += 2
    b = bytearray(abi.IN_HEADER.pack(40 + len(body), opcode, uniq[0], nodeid, 0, 0, 1, 0) + body)
    return memoryview(b), len(b)

serve = getattr(s, "serve", None)      # newer sessions step the handler in serve()

def step(opcode, nodeid, body):
    buf, n = req(opcode, nodeid, body)
    if serve is not None:
        if serve(chan, buf, n) is not None:
            raise RuntimeError("handler waited")
        return
    coro = s.dispatch(chan, buf, n)
    try:
        coro.send(None)
    except StopIteration:
        return
    raise RuntimeError("handler waited")

def capture(opcode, nodeid, body):
    """Run one request, returning its reply bytes (via a pipe)."""
    r, w = os.pipe()
    Chan.fd = w
    step(opcode, nodeid, body)
    Chan.fd = null
    data = os.read(r, 1 << 20); os.close(r); os.close(w)
    return data

async def main():
    # INIT
    capture(O.INIT, 0, abi.INIT_IN_COMPAT.pack(7, 45, 131072, 0))
    assert s.client.initialized
    # create f with 4 KiB
    rep = capture(O.CREATE, 1, abi.CREATE_IN.pack(os.O_RDWR | os.O_CREAT, 0o644, 0, 0) + b"f\0")
    nodeid = int.from_bytes(rep[16:24], "little")
    fh = int.from_bytes(rep[16 + abi.ENTRY_OUT.size:16 + abi.ENTRY_OUT.size + 8], "little")
    wbody = abi.WRITE_IN.pack(fh, 0, 4096, 0, 0, 0) + b"x" * 4096
    assert len(capture(O.WRITE, nodeid, wbody)) == 24
    bodies = {
        "getattr": (O.GETATTR, nodeid, abi.GETATTR_IN.pack(0, 0)),
        "lookup": (O.LOOKUP, 1, b"f\0"),
        "read": (O.READ, nodeid, abi.READ_IN.pack(fh, 0, 4096, 0, 0, os.O_RDWR)),
        "write": (O.WRITE, nodeid, wbody),
    }
    for op in ops:
        if op == "create":
            cnt = [0]
            def one():
                cnt[0] += 1
                step(O.CREATE, 1, abi.CREATE_IN.pack(os.O_WRONLY | os.O_CREAT, 0o644, 0, 0)
                     + b"c%d\0" % cnt[0])
        else:
            a = bodies[op]
            def one(a=a):
                step(*a)
        for _ in range(200): one()
        best = 1e9
        per = max(1, N // 20)
        done = 0
        while done < N:
            t0 = time.process_time()
            for _ in range(per): one()
            best = min(best, (time.process_time() - t0) / per)
            done += per
        print(f"{op:8s} {best*1e6:6.2f} us/req (min of slices)", flush=True)

trio.run(main)
shutil.rmtree(brick)
