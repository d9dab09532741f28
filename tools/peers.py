"""The transports ``compare_peers.py`` measures, each behind one small interface.

How this works
--------------
A peer is a name, a ``setup(workdir, consumers)`` run in the parent that returns a spec
(everything a child needs: socket paths, addresses, queues) and a ``teardown``, plus two
child-side openers: ``sender(spec, channel)`` and ``receiver(spec, channel, index)``. A
sender has ``send(data)`` and ``close()``; ``send_many(items)`` where the peer has a batch
API. A receiver has ``recv(timeout_s)`` (bytes, or None at the timeout), optionally
``recv_many(n)``, and ``close()``. Channels are named ("data", "ping", "pong"); every
channel fans out to every receiver index. A peer whose module is missing is reported as
skipped with the reason (``missing()``); nothing here imports a peer's module at import
time, so the tool runs with any subset installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import mmap
import os
import secrets
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TOPICS = {"data": "market_data", "ping": "signals", "pong": "execution"}
CHANNELS = tuple(TOPICS)
LEN = struct.Struct("<I")
Q = struct.Struct("<Q")
#: zmq's default high-water mark is 1000 messages; "tuned" raises it as the README did.
ZMQ_TUNED_HWM = 100_000
#: Receivers poll this often for their deadline while nothing arrives.
RECV_SLICE_S = 0.05


def _rcv_deadline(timeout_s: float | None) -> float:
    return time.monotonic() + (3600.0 if timeout_s is None else timeout_s)


# -- Mycelium: the real broker and client ------------------------------------------------
class _MyceliumSender:
    def __init__(self, spec: dict[str, Any], channel: str) -> None:
        from mycelium import Producer

        self.p = Producer(socket_path=spec["sock"])
        # The per-topic handle, as the docs advise for a hot loop: it opens the topic (and
        # maps its lane) here, before the clock starts, as the other peers connect here.
        self.pub = self.p.topic(TOPICS[channel])
        self.send = self.pub.publish

    def send_many(self, items: list[bytes]) -> None:
        self.pub.publish_many(items)

    def close(self) -> None:
        self.p.close()


class _MyceliumReceiver:
    def __init__(self, spec: dict[str, Any], channel: str, index: int) -> None:
        from mycelium import Consumer

        self.c = Consumer(TOPICS[channel], socket_path=spec["sock"])

    def recv(self, timeout_s: float | None) -> bytes | None:
        try:
            return self.c.recv(timeout=timeout_s)
        except TimeoutError:
            return None

    def recv_many(self, n: int) -> list[bytes]:
        return self.c.recv_many(n, timeout=RECV_SLICE_S)

    def close(self) -> None:
        self.c.close()


def _mycelium_setup(workdir: Path, consumers: int) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_broker import Broker

    broker = Broker(workdir)
    return {"sock": broker.sock, "_broker": broker}


def _mycelium_teardown(spec: dict[str, Any]) -> None:
    spec["_broker"].stop()


# -- the bare ring: the ceiling ----------------------------------------------------------
RING_CAP = 1 << 24
RING_HEAD = 4096
RING_WRAP = (1 << 64) - 1


class _BareRing:
    """A pure-Python shm ring: length word, payload, one cursor each side. No checks, no
    dispatch, no doorbell: what Python itself costs for a message through shared memory."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            self.mm = mmap.mmap(fd, RING_HEAD + RING_CAP)
        finally:
            os.close(fd)
        self.q = memoryview(self.mm).cast("Q")
        self.mask = RING_CAP - 1

    def close(self) -> None:
        self.q.release()
        self.mm.close()


class _RingSender(_BareRing):
    def __init__(self, spec: dict[str, Any], channel: str) -> None:
        super().__init__(spec[channel])
        self.readers = spec["consumers"]
        self.pos = self.q[0]
        self.limit = self.pos

    def _room(self, need: int) -> None:
        while True:
            low = min(self.q[8 * (1 + i)] for i in range(self.readers))
            self.limit = low + RING_CAP
            if self.pos + need <= self.limit:
                return
            os.sched_yield()

    def send(self, data: bytes) -> None:
        n = len(data)
        fb = (n + 15) & -8
        pos = self.pos
        off = pos & self.mask
        if off + fb > RING_CAP:  # wrap: mark and start the lap over
            if pos + RING_CAP - off + fb > self.limit:
                self._room(RING_CAP - off + fb)
            self.q[(RING_HEAD + off) >> 3] = RING_WRAP
            pos += RING_CAP - off
            off = 0
        if pos + fb > self.limit:
            self._room(pos + fb - self.pos)
        self.q[(RING_HEAD + off) >> 3] = n
        start = RING_HEAD + off + 8
        self.mm[start : start + n] = data
        self.pos = pos + fb
        self.q[0] = self.pos


class _RingReceiver(_BareRing):
    def __init__(self, spec: dict[str, Any], channel: str, index: int) -> None:
        super().__init__(spec[channel])
        self.slot = 8 * (1 + index)
        self.pos = self.q[self.slot]

    def _poll(self) -> bytes | None:
        pos = self.pos
        if pos == self.q[0]:
            return None
        off = pos & self.mask
        n = self.q[(RING_HEAD + off) >> 3]
        if n == RING_WRAP:
            pos += RING_CAP - off
            off = 0
            n = self.q[RING_HEAD >> 3]
        start = RING_HEAD + off + 8
        data = self.mm[start : start + n]
        self.pos = pos + ((n + 15) & -8)
        self.q[self.slot] = self.pos
        return data

    def recv(self, timeout_s: float | None) -> bytes | None:
        data = self._poll()
        if data is not None:
            return data
        deadline = _rcv_deadline(timeout_s)
        spins = 0
        while True:
            data = self._poll()
            if data is not None:
                return data
            spins += 1
            if spins % 256 == 0:  # the ceiling spins; it yields now and then on a shared box
                os.sched_yield()
                if time.monotonic() > deadline:
                    return None


def _ring_setup(workdir: Path, consumers: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"consumers": consumers}
    for ch in CHANNELS:
        path = f"/dev/shm/myc-bench-ring-{secrets.token_hex(4)}-{ch}"
        with open(path, "wb") as f:
            f.truncate(RING_HEAD + RING_CAP)
        spec[ch] = path
    return spec


def _ring_teardown(spec: dict[str, Any]) -> None:
    for ch in CHANNELS:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(spec[ch])


# -- the per-domain relay model ----------------------------------------------------------
def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


class _RelaySender:
    """A producer of the relay model: length-prefixed frames over a Unix socket."""

    def __init__(self, spec: dict[str, Any], channel: str) -> None:
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(spec[channel])
        self.s.sendall(b"P")

    def send(self, data: bytes) -> None:
        self.s.sendall(LEN.pack(len(data)) + data)

    def close(self) -> None:
        self.s.close()


class _RelayReceiver:
    def __init__(self, spec: dict[str, Any], channel: str, index: int) -> None:
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(spec[channel])
        self.s.sendall(b"S")
        self.f = self.s.makefile("rb", buffering=1 << 16)
        self.s.settimeout(None)

    def recv(self, timeout_s: float | None) -> bytes | None:
        self.s.settimeout(timeout_s)
        try:
            head = self.f.read(LEN.size)
            if len(head) < LEN.size:
                return None
            return self.f.read(LEN.unpack(head)[0])
        except (TimeoutError, OSError):
            return None

    def close(self) -> None:
        self.f.close()
        self.s.close()


def relay_main(path: str) -> None:
    """The relay process (a model of the original's per-domain relays): accepts producers
    ("P") and subscribers ("S") on one Unix socket, forwards each frame to every
    subscriber. One thread per producer; written in Python, as the model says."""
    import threading

    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(128)
    subs: list[socket.socket] = []
    lock = threading.Lock()

    def pump(conn: socket.socket) -> None:
        f = conn.makefile("rb", buffering=1 << 16)
        while True:
            head = f.read(LEN.size)
            if len(head) < LEN.size:
                return
            frame = head + f.read(LEN.unpack(head)[0])
            with lock:
                for s in subs:
                    s.sendall(frame)

    while True:
        conn, _ = srv.accept()
        kind = _read_exact(conn, 1)
        if kind == b"S":
            with lock:
                subs.append(conn)
        else:
            threading.Thread(target=pump, args=(conn,), daemon=True).start()


def _relay_setup(workdir: Path, consumers: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"_procs": []}
    for ch in CHANNELS:
        path = str(workdir / f"relay-{ch}.sock")
        code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import peers; peers.relay_main({path!r})"
        spec["_procs"].append(subprocess.Popen([sys.executable, "-c", code]))
        spec[ch] = path
    deadline = time.monotonic() + 30
    while not all(os.path.exists(spec[ch]) for ch in CHANNELS):
        if time.monotonic() > deadline:
            raise RuntimeError("relay did not start")
        time.sleep(0.01)
    return spec


def _procs_teardown(spec: dict[str, Any]) -> None:
    for p in spec["_procs"]:
        p.kill()
        p.wait(5)


# -- pyzmq ----------------------------------------------------------------------------
class _ZmqSender:
    def __init__(self, spec: dict[str, Any], channel: str) -> None:
        import zmq

        self.ctx = zmq.Context()
        self.s = self.ctx.socket(zmq.PUB if spec["pubsub"] else zmq.PUSH)
        if spec["hwm"]:
            self.s.setsockopt(zmq.SNDHWM, spec["hwm"])
        self.s.bind(spec[channel])
        self.send = self.s.send
        if spec["pubsub"]:
            time.sleep(0.3)  # PUB drops what it sends before subscribers connect (slow joiner)

    def close(self) -> None:
        self.s.close(linger=1000)
        self.ctx.term()


class _ZmqReceiver:
    def __init__(self, spec: dict[str, Any], channel: str, index: int) -> None:
        import zmq

        self.ctx = zmq.Context()
        self.s = self.ctx.socket(zmq.SUB if spec["pubsub"] else zmq.PULL)
        if spec["hwm"]:
            self.s.setsockopt(zmq.RCVHWM, spec["hwm"])
        if spec["pubsub"]:
            self.s.setsockopt(zmq.SUBSCRIBE, b"")
        self.s.connect(spec[channel])
        self.zmq = zmq

    def recv(self, timeout_s: float | None) -> bytes | None:
        try:
            return self.s.recv(self.zmq.NOBLOCK)
        except self.zmq.Again:
            pass
        if self.s.poll(None if timeout_s is None else int(timeout_s * 1000)):
            return self.s.recv()
        return None

    def close(self) -> None:
        self.s.close(linger=0)
        self.ctx.term()


def _zmq_setup(pubsub: bool, hwm: int) -> Any:
    def setup(workdir: Path, consumers: int) -> dict[str, Any]:
        spec: dict[str, Any] = {"pubsub": pubsub, "hwm": hwm}
        for ch in CHANNELS:
            spec[ch] = f"ipc://{workdir}/zmq-{secrets.token_hex(3)}-{ch}"
        return spec

    return setup


# -- multiprocessing.Queue and faster-fifo: one queue per receiver -----------------------
class _QueueSender:
    def __init__(self, spec: dict[str, Any], channel: str) -> None:
        self.qs = spec[channel]
        if len(self.qs) == 1:
            self.send = self.qs[0].put

    def send(self, data: bytes) -> None:
        for q in self.qs:
            q.put(data)

    def close(self) -> None:
        pass


class _QueueReceiver:
    def __init__(self, spec: dict[str, Any], channel: str, index: int) -> None:
        self.q = spec[channel][index]

    def recv(self, timeout_s: float | None) -> bytes | None:
        import queue

        try:
            return self.q.get(timeout=timeout_s)  # type: ignore[no-any-return]
        except queue.Empty:
            return None

    def close(self) -> None:
        pass


def _mpq_setup(workdir: Path, consumers: int) -> dict[str, Any]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    return {ch: [ctx.Queue() for _ in range(consumers)] for ch in CHANNELS}


def _ff_setup(workdir: Path, consumers: int) -> dict[str, Any]:
    from faster_fifo import Queue

    return {ch: [Queue(max_size_bytes=64 << 20) for _ in range(consumers)] for ch in CHANNELS}


# -- eclipse-zenoh ---------------------------------------------------------------------
def _zenoh_session(spec: dict[str, Any], listen: bool) -> Any:
    import zenoh

    conf = zenoh.Config()
    conf.insert_json5("scouting/multicast/enabled", "false")
    key = "listen/endpoints" if listen else "connect/endpoints"
    conf.insert_json5(key, f'["{spec["endpoint"]}"]')
    return zenoh.open(conf)


class _ZenohSender:
    def __init__(self, spec: dict[str, Any], channel: str) -> None:
        self.session = _zenoh_session(spec, listen=False)
        self.pub = self.session.declare_publisher(f"bench/{channel}")
        self.send = self.pub.put
        time.sleep(0.5)  # let the subscribers' declarations reach us

    def close(self) -> None:
        self.pub.undeclare()
        self.session.close()


class _ZenohReceiver:
    """Samples arrive on zenoh's thread through a callback, into a queue we wait on."""

    def __init__(self, spec: dict[str, Any], channel: str, index: int) -> None:
        import queue

        self.q: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self.empty = queue.Empty
        self.session = _zenoh_session(spec, listen=False)
        put = self.q.put
        self.sub = self.session.declare_subscriber(
            f"bench/{channel}", lambda sample: put(bytes(sample.payload.to_bytes()))
        )

    def recv(self, timeout_s: float | None) -> bytes | None:
        try:
            return self.q.get(timeout=timeout_s)
        except self.empty:
            return None

    def close(self) -> None:
        self.sub.undeclare()
        self.session.close()


def zenoh_router(endpoint: str) -> None:
    """A zenoh peer that only listens: senders and receivers connect through it."""
    import threading

    spec = {"endpoint": endpoint}
    session = _zenoh_session(spec, listen=True)
    threading.Event().wait()
    session.close()


def _zenoh_setup(workdir: Path, consumers: int) -> dict[str, Any]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"tcp/127.0.0.1:{port}"
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import peers; peers.zenoh_router({endpoint!r})"
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("zenoh router did not start")
        time.sleep(0.05)
    return {"endpoint": endpoint, "_procs": [proc]}


# -- iceoryx2's Python API ------------------------------------------------------------
#: Samples a subscriber may hold unread: with RetryUntilDelivered the publisher waits
#: for room beyond that (lossless, like Mycelium's default lanes).
IOX_BUFFER = 4096
#: An empty iceoryx2 subscriber has no blocking receive here: it sleeps this long between
#: polls once a short spin found nothing.
IOX_POLL_S = 50e-6


def _iox_service(spec: dict[str, Any], channel: str) -> tuple[Any, Any, Any]:
    import ctypes

    import iceoryx2 as iox2

    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    service = (
        node.service_builder(iox2.ServiceName.new(f"{spec['prefix']}-{channel}"))
        .publish_subscribe(iox2.Slice[ctypes.c_uint8])
        .max_subscribers(64)
        .subscriber_max_buffer_size(IOX_BUFFER)
        .enable_safe_overflow(False)
        .open_or_create()
    )
    return iox2, node, service


class _IoxSender:
    def __init__(self, spec: dict[str, Any], channel: str) -> None:
        import ctypes

        iox2, self.node, self.service = _iox_service(spec, channel)
        self.pub = (
            self.service.publisher_builder()
            .initial_max_slice_len(2048)
            .allocation_strategy(iox2.AllocationStrategy.PowerOfTwo)
            .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
            .create()
        )
        self.memmove = ctypes.memmove

    def send(self, data: bytes) -> None:
        sample = self.pub.loan_slice_uninit(len(data))
        self.memmove(sample.payload().as_ptr(), data, len(data))
        sample.assume_init().send()

    def close(self) -> None:
        self.pub.delete()


class _IoxReceiver:
    def __init__(self, spec: dict[str, Any], channel: str, index: int) -> None:
        import ctypes

        _, self.node, self.service = _iox_service(spec, channel)
        self.sub = self.service.subscriber_builder().buffer_size(IOX_BUFFER).create()
        self.string_at = ctypes.string_at

    def _poll(self) -> bytes | None:
        sample = self.sub.receive()
        if sample is None:
            return None
        payload = sample.payload()
        data = self.string_at(payload.as_ptr(), payload.len())
        sample.delete()
        return data  # type: ignore[no-any-return]

    def recv(self, timeout_s: float | None) -> bytes | None:
        deadline = _rcv_deadline(timeout_s)
        for _ in range(200):
            data = self._poll()
            if data is not None:
                return data
        while time.monotonic() < deadline:
            data = self._poll()
            if data is not None:
                return data
            time.sleep(IOX_POLL_S)
        return None

    def close(self) -> None:
        self.sub.delete()


def _iox_setup(workdir: Path, consumers: int) -> dict[str, Any]:
    return {"prefix": f"myc-bench-{secrets.token_hex(4)}"}


# -- the table ---------------------------------------------------------------------------
def _nothing(spec: dict[str, Any]) -> None:
    """Nothing to tear down (queues go with their last handle)."""


#: name -> (module it needs, setup, teardown, sender class, receiver class, note)
PEERS: dict[str, tuple[str | None, Any, Any, Any, Any, str]] = {
    "mycelium": ("posix_ipc", _mycelium_setup, _mycelium_teardown, _MyceliumSender,
                 _MyceliumReceiver, "real broker and client, default (adaptive) wait"),
    "bare ring": (None, _ring_setup, _ring_teardown, _RingSender, _RingReceiver,
                  "pure-Python shm ring, no checks: the ceiling; spins"),
    "relay (model)": (None, _relay_setup, _procs_teardown, _RelaySender, _RelayReceiver,
                      "a Python model of the per-domain relay over Unix sockets"),
    "zmq push/pull": ("zmq", _zmq_setup(False, 0), _nothing, _ZmqSender, _ZmqReceiver,
                      "pyzmq defaults (HWM 1000), ipc://"),
    "zmq push/pull hwm": ("zmq", _zmq_setup(False, ZMQ_TUNED_HWM), _nothing, _ZmqSender,
                          _ZmqReceiver, f"pyzmq, HWM {ZMQ_TUNED_HWM}"),
    "zmq pub/sub": ("zmq", _zmq_setup(True, 0), _nothing, _ZmqSender, _ZmqReceiver,
                    "pyzmq defaults (HWM 1000: drops when full), ipc://"),
    "zmq pub/sub hwm": ("zmq", _zmq_setup(True, ZMQ_TUNED_HWM), _nothing, _ZmqSender,
                        _ZmqReceiver, f"pyzmq, HWM {ZMQ_TUNED_HWM}"),
    "zenoh": ("zenoh", _zenoh_setup, _procs_teardown, _ZenohSender, _ZenohReceiver,
              "eclipse-zenoh over tcp://127.0.0.1 through a listening peer"),
    "iceoryx2": ("iceoryx2", _iox_setup, _nothing, _IoxSender, _IoxReceiver,
                 "iceoryx2's Python API, lossless; polls (50 us sleeps when empty)"),
    "faster-fifo": ("faster_fifo", _ff_setup, _nothing, _QueueSender, _QueueReceiver,
                    "one queue per receiver"),
    "mp.Queue": (None, _mpq_setup, _nothing, _QueueSender, _QueueReceiver,
                 "multiprocessing.Queue, one per receiver"),
}  # fmt: skip

#: Peers that do not fan out (PUSH/PULL load-balances): no fanout rows for them.
NO_FANOUT = frozenset({"zmq push/pull", "zmq push/pull hwm"})
#: Peers that may drop under load (PUB/SUB past its HWM): their receivers stop at a timeout.
MAY_DROP = frozenset({"zmq pub/sub", "zmq pub/sub hwm"})


def missing(name: str) -> str | None:
    """Why peer ``name`` cannot run here (its module is not installed), or None."""
    module = PEERS[name][0]
    if module is not None and importlib.util.find_spec(module) is None:
        return f"not installed (pip install '.[bench]'): no module {module!r}"
    return None


def open_sender(name: str, spec: dict[str, Any], channel: str) -> Any:
    return PEERS[name][3](spec, channel)


def open_receiver(name: str, spec: dict[str, Any], channel: str, index: int) -> Any:
    return PEERS[name][4](spec, channel, index)


def setup(name: str, workdir: Path, consumers: int) -> dict[str, Any]:
    return PEERS[name][1](workdir, consumers)  # type: ignore[no-any-return]


def teardown(name: str, spec: dict[str, Any]) -> None:
    PEERS[name][2](spec)


def child_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """What a child may receive: the spec without the parent's private handles."""
    return {k: v for k, v in spec.items() if not k.startswith("_")}
