"""A bounded control plane against a real broker: every limit refuses clearly, leaves
nothing behind, and no hostile client costs the others their service."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

import pytest
from broker_helpers import BrokerProcess, Processes, mycelium, wait_for
from limit_workers import crowd

from mycelium import Consumer, Producer
from mycelium.client.admin import admin_request
from mycelium.control.faults import from_error, to_error
from mycelium.control.limits import (
    LANES_PER_CONSUMER,
    MAX_CONSUMERS_PER_CONNECTION,
    MAX_ENTRIES_PER_PROCESS,
)
from mycelium.control.wire import (
    MAX_CONTROL_FRAME_BYTES,
    PROTOCOL_VERSION,
    ControlFrameDecoder,
    Error,
    ErrorCode,
    Goodbye,
    Hello,
    Reply,
    StatsReply,
    StatsRequest,
    Subscribe,
    Subscribed,
    encode_frame,
)
from mycelium.coordinator.server import bounded_stats_reply, registry_name_for
from mycelium.errors import (
    BrokerUnavailable,
    ConfigError,
    LimitExceeded,
    MyceliumError,
    PermissionDenied,
    SegmentError,
    UnknownTopic,
)
from mycelium.shm.registry import Registry
from mycelium.topology import ConsumerEntry, Topology

SMALL = "lane_bytes = 65536\nmax_message_size = 1024\n"
TOPICS = f'[[topics]]\nname = "t"\n{SMALL}\n[[topics]]\nname = "q"\nrouting = "queue"\n{SMALL}'
#: Broker RSS growth allowed under 1,000 connections each holding a full request buffer
#: (measured: 37 MiB).
HOSTILE_RSS_GROWTH_BYTES = 64 << 20


def _connect(path: str) -> socket.socket:
    """A connected socket; a full listen backlog (EAGAIN) is retried until the broker accepts."""

    def attempt() -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10.0)
        try:
            sock.connect(path)
        except BlockingIOError:
            sock.close()
            return None
        return sock

    sock: socket.socket = wait_for(attempt, 30.0, f"a connection to {path}")
    return sock


def _ask(sock: socket.socket, frame: bytes) -> Reply:
    """Send a frame and read the reply (a refusal may come before the frame is read)."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(frame)
    decoder = ControlFrameDecoder(expect=Reply)
    while (reply := decoder.next_message()) is None:
        data = sock.recv(65536)
        assert data, "the broker closed the connection"
        decoder.receive_data(data)
    return reply


def _hello() -> bytes:
    return encode_frame(Hello(version=PROTOCOL_VERSION, pid=os.getpid(), role="consumer"))


@pytest.fixture
def limited(make_broker) -> BrokerProcess:  # type: ignore[no-untyped-def]
    return make_broker(TOPICS)


def test_every_error_code_round_trips_to_its_class() -> None:
    cases: list[MyceliumError] = [
        UnknownTopic("nope", ("t", "q")),
        LimitExceeded("too long", limit="group_name_chars", maximum=128),
        ConfigError("bad", "topics[0].routing"),
        SegmentError("gone"),
    ]
    for exc in cases:
        back = from_error(to_error(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
    unknown = from_error(to_error(cases[0]))
    assert isinstance(unknown, UnknownTopic) and unknown.known == ("t", "q")
    assert from_error(to_error(cases[2])).path == "topics[0].routing"  # type: ignore[attr-defined]
    assert isinstance(from_error(Error(code=ErrorCode.NOT_ALLOWED, message="x")), PermissionDenied)
    assert isinstance(to_error(RuntimeError("bug")), Error)
    assert to_error(RuntimeError("bug")).code == ErrorCode.INTERNAL


def test_unknown_topic_carries_its_fields(limited: BrokerProcess) -> None:
    with pytest.raises(UnknownTopic) as info:
        Consumer("nope", socket_path=limited.socket)
    assert info.value.topic == "nope" and set(info.value.known) == {"t", "q"}


def test_a_huge_group_name_is_refused_and_leaves_nothing(limited: BrokerProcess) -> None:
    before = set(limited.leftovers())
    with _connect(limited.socket) as sock:
        _ask(sock, _hello())
        reply = _ask(sock, encode_frame(Subscribe(topic="q", group="g" * 1000)))
        assert isinstance(reply, Error) and reply.code == ErrorCode.LIMIT_EXCEEDED
        assert reply.data["limit"] == "group_name_chars"
        assert isinstance(_ask(sock, encode_frame(StatsRequest())), StatsReply)  # still open
    with pytest.raises(LimitExceeded, match="group name"):
        Consumer("q", group="bad name!", socket_path=limited.socket)
    with _connect(limited.socket) as sock:  # 1 MB: over the request frame limit, closed
        _ask(sock, _hello())
        reply = _ask(sock, encode_frame(Subscribe(topic="q", group="g" * 1_000_000)))
        assert isinstance(reply, Error) and reply.code == ErrorCode.TOO_LARGE
    assert set(limited.leftovers()) == before
    with (
        Consumer("q", group="fine", socket_path=limited.socket) as c,
        Producer(socket_path=limited.socket) as p,
    ):
        p.publish("q", b"after")
        assert c.recv(timeout=5.0) == b"after"
        stats = limited.stats()
        assert [x["group"] for x in stats["consumers"]] == ["fine"]
    assert mycelium("status", "--socket", limited.socket).returncode == 0


def test_subscriptions_per_connection_are_bounded(limited: BrokerProcess) -> None:
    before = set(limited.leftovers())
    with _connect(limited.socket) as sock:
        _ask(sock, _hello())
        for _ in range(MAX_CONSUMERS_PER_CONNECTION):
            assert isinstance(_ask(sock, encode_frame(Subscribe(topic="t"))), Subscribed)
        reply = _ask(sock, encode_frame(Subscribe(topic="t")))
        assert isinstance(reply, Error) and reply.code == ErrorCode.LIMIT_EXCEEDED
        assert reply.data["maximum"] == MAX_CONSUMERS_PER_CONNECTION
        stats = admin_request(StatsRequest(), limited.socket)
        assert isinstance(stats, StatsReply)
        assert len(stats.stats["consumers"]) == MAX_CONSUMERS_PER_CONNECTION
        _ask(sock, encode_frame(Goodbye()))
    wait_for(lambda: set(limited.leftovers()) == before, 10.0, "the subscriptions released")


_ROUND_TRIP = """
import sys
from mycelium import Consumer, Producer
with Consumer("t", socket_path=sys.argv[1]) as c, Producer(socket_path=sys.argv[1]) as p:
    p.publish("t", b"other")
    assert c.recv(timeout=10.0) == b"other"
"""


def test_entries_per_process_are_bounded_and_others_are_served(limited: BrokerProcess) -> None:
    """One process fills its 1,024 entries over many connections: the 1,025th (a consumer
    or a producer) is refused with LimitExceeded, leaves nothing, and another process
    still subscribes and publishes."""
    before = set(limited.leftovers())
    connections = MAX_ENTRIES_PER_PROCESS // MAX_CONSUMERS_PER_CONNECTION
    socks: list[socket.socket] = []
    try:
        for _ in range(connections):  # each says Hello at once: the handshake has a deadline
            socks.append(sock := _connect(limited.socket))
            _ask(sock, _hello())
            for _ in range(MAX_CONSUMERS_PER_CONNECTION):
                assert isinstance(_ask(sock, encode_frame(Subscribe(topic="t"))), Subscribed)
        held = set(limited.leftovers())
        with pytest.raises(LimitExceeded) as info:
            Consumer("t", socket_path=limited.socket)
        assert info.value.limit == "entries_per_process"
        assert info.value.maximum == MAX_ENTRIES_PER_PROCESS
        assert str(MAX_ENTRIES_PER_PROCESS) in str(info.value)
        with pytest.raises(LimitExceeded) as info, Producer(socket_path=limited.socket) as p:
            p.publish("t", b"x")
        assert info.value.limit == "entries_per_process"
        assert set(limited.leftovers()) == held, "a refused entry left a segment"
        other = subprocess.run(
            [sys.executable, "-c", _ROUND_TRIP, limited.socket],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert other.returncode == 0, other.stderr
        assert len(limited.stats()["consumers"]) == MAX_ENTRIES_PER_PROCESS
    finally:
        for sock in socks:
            with contextlib.suppress(OSError, AssertionError):
                _ask(sock, encode_frame(Goodbye()))
            sock.close()
    wait_for(lambda: set(limited.leftovers()) == before, 30.0, "the entries released")


def test_producer_257_is_refused_and_consumers_get_everything(limited: BrokerProcess) -> None:
    producers: list[Producer] = []
    with Consumer("t", socket_path=limited.socket) as c:
        try:
            for i in range(LANES_PER_CONSUMER):
                p = Producer(socket_path=limited.socket)
                producers.append(p)
                p.publish("t", b"%d" % i)
            extra = Producer(socket_path=limited.socket)
            producers.append(extra)
            with pytest.raises(LimitExceeded) as info:
                extra.publish("t", b"never")
            assert info.value.limit == "lanes_per_topic"
            got = set()
            deadline = time.monotonic() + 60
            while len(got) < LANES_PER_CONSUMER and time.monotonic() < deadline:
                got.update(c.recv_many(timeout=1.0))
            assert got == {b"%d" % i for i in range(LANES_PER_CONSUMER)}
            assert c.lost == 0
        finally:
            for p in producers:
                p.close()


def _dribblers(path: str, count: int, after_hello: bool) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = _connect(path)
        if after_hello:
            assert not isinstance(_ask(sock, _hello()), Error)
        sock.sendall(b"\x00\x00")  # half a length prefix: a frame that never completes
        sock.setblocking(False)
        socks.append(sock)
    return socks


def test_slowloris_connections_are_closed_at_the_deadline(make_broker) -> None:  # type: ignore[no-untyped-def]
    timeout_s = 2.0
    b = make_broker(f"[server]\nconnection_timeout_ms = {int(timeout_s * 1000)}\n" + TOPICS)
    rss_before = b.stats()["broker"]["rss_bytes"]
    started = time.monotonic()
    socks = _dribblers(b.socket, 150, False) + _dribblers(b.socket, 150, True)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    open_ = set(socks)
    try:
        while open_ and time.monotonic() - started < timeout_s * 10:
            for s in list(open_):  # a byte per round: each would reset a per-read timer
                try:
                    s.send(b"\x01")
                except OSError:
                    pass
            for key, _ in sel.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data or b"timeout" in data:
                    open_.discard(sock)
                    sel.unregister(sock)
        elapsed = time.monotonic() - started
        assert not open_, f"{len(open_)} dribbling connections still open"
        assert elapsed < timeout_s * 6, elapsed
        rss_after = b.stats()["broker"]["rss_bytes"]
        assert rss_after - rss_before < HOSTILE_RSS_GROWTH_BYTES
    finally:
        for s in socks:
            s.close()


def test_memory_under_1000_hostile_connections_is_bounded(make_broker) -> None:  # type: ignore[no-untyped-def]
    b = make_broker("[server]\nconnection_timeout_ms = 120000\n" + TOPICS)
    rss_before = b.stats()["broker"]["rss_bytes"]
    socks = []
    try:
        # 999: the status request below needs the last slot of max_connections (1000).
        for _ in range(999):
            sock = _connect(b.socket)
            sock.sendall(b"\x00\x00\x3f\xff" + b"\x00" * 16000)  # one byte short of 16 KiB
            socks.append(sock)
        grown = b.stats()["broker"]["rss_bytes"] - rss_before
        print(f"broker RSS growth with 1000 hostile connections: {grown / 2**20:.1f} MiB")
        assert grown < HOSTILE_RSS_GROWTH_BYTES, grown
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: b.stats()["broker"]["connections"] == 1, 30.0, "connections closed")


def test_shutdown_with_100_clients_logs_no_traceback(
    limited: BrokerProcess, procs: Processes
) -> None:
    ready = procs.event()
    child = procs.start(crowd, limited.socket, "t", 100, ready)
    assert ready.wait(120), "the crowd never connected"
    wait_for(lambda: limited.stats()["broker"]["connections"] >= 100, 30.0, "100 clients")
    assert mycelium("shutdown", "--socket", limited.socket).returncode == 0
    assert limited.proc is not None
    limited.proc.wait(30)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    procs.join(child)
    log = limited.log()
    assert "Traceback" not in log and "AssertionError" not in log, log[-3000:]
    assert mycelium("cleanup", "--socket", limited.socket).returncode == 0
    assert limited.leftovers() == []


def test_a_client_past_the_connection_limit_is_told_why(make_broker) -> None:  # type: ignore[no-untyped-def]
    b = make_broker("[server]\nmax_connections = 2\n" + TOPICS)
    with (
        Consumer("t", socket_path=b.socket),
        Consumer("t", socket_path=b.socket),
        pytest.raises(BrokerUnavailable, match="max_connections"),
    ):
        Consumer("t", socket_path=b.socket)


def test_status_is_cut_to_fit_the_frame_limit() -> None:
    consumers = [{"id": i, "topic": "t", "group": "g" * 100} for i in range(20_000)]
    stats = {"broker": {}, "topics": [], "producers": [], "consumers": consumers}
    reply = bounded_stats_reply(stats)
    assert len(encode_frame(reply)) <= MAX_CONTROL_FRAME_BYTES
    assert reply.stats["truncated"] == {"producers": 0, "consumers": 20_000}
    assert 0 < len(reply.stats["consumers"]) < 20_000
    small = {"broker": {}, "topics": [], "producers": [], "consumers": consumers[:3]}
    assert bounded_stats_reply(small).stats == small


def test_a_topology_too_large_for_the_registry_is_refused() -> None:
    registry = Registry.create(registry_name_for(f"lim{os.getpid()}"))
    try:
        entry = ConsumerEntry(id=1, pid=1, topic="t", group="g" * 100, segment="s", doorbell="d")
        with pytest.raises(LimitExceeded) as info:
            registry.publish(Topology(consumers=[entry] * 20_000))
        assert info.value.limit == "topology_bytes"
        assert registry.generation == 0  # nothing was published
    finally:
        registry.close()
        registry.seg.unlink()
