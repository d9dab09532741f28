"""The control socket under hostile or careless clients, end to end.

Each bad connection must get an ``Error`` with the right code and be closed, while
clients already connected carry on untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from broker_helpers import BrokerProcess, wait_for

from mycelium import Consumer, Producer
from mycelium.client.admin import admin_request
from mycelium.control.wire import (
    PROTOCOL_VERSION,
    ControlFrameDecoder,
    Error,
    ErrorCode,
    Heartbeat,
    Hello,
    Ok,
    Reply,
    StatsReply,
    StatsRequest,
    Subscribe,
    Welcome,
    encode_frame,
)
from mycelium.errors import BrokerUnavailable
from mycelium.shm.segment import broker_id_for

NOBODY = 65534
SOCKET_WAIT_S = 5.0


def config(server: str) -> str:
    return f'[server]\n{server}\n\n[[topics]]\nname = "t"\nrouting = "fanout"\n'


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(SOCKET_WAIT_S)
    sock.connect(path)
    return sock


def hello(version: int = PROTOCOL_VERSION) -> bytes:
    return encode_frame(Hello(version=version, pid=os.getpid(), role="admin"))


def replies_until_closed(sock: socket.socket) -> list[Reply]:
    """Every reply the broker sends until it closes the connection (fails on a hang).

    A broker that closes without reading all we sent makes the kernel reset the
    connection once its replies are read: that is a close too.
    """
    decoder = ControlFrameDecoder(expect=Reply)
    out = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            return out
        decoder.receive_data(data)
        while (reply := decoder.next_message()) is not None:
            out.append(reply)


def exchange(sock: socket.socket, frame: bytes) -> Reply:
    sock.sendall(frame)
    decoder = ControlFrameDecoder(expect=Reply)
    while (reply := decoder.next_message()) is None:
        data = sock.recv(65536)
        assert data, "the broker closed a good connection"
        decoder.receive_data(data)
    return reply


@pytest.fixture
def bystanders(broker: BrokerProcess) -> Iterator[Callable[[], None]]:
    """A producer and a consumer connected before the abuse; calling the fixture's value
    checks they still exchange messages on unbroken control channels."""
    with (
        Consumer("signals", socket_path=broker.socket) as c,
        Producer(socket_path=broker.socket) as p,
    ):
        sent = 0

        def still_working() -> None:
            nonlocal sent
            p.publish("signals", b"ping %d" % sent)
            assert c.recv(timeout=5.0) == b"ping %d" % sent
            sent += 1
            assert p.channel.reconnects == 0 and c.channel.reconnects == 0
            assert isinstance(p.channel.request(Heartbeat(pid=os.getpid())), Ok)
            assert isinstance(c.channel.request(Heartbeat(pid=os.getpid())), Ok)

        still_working()
        yield still_working


BAD_STREAMS = {
    "garbage": (b"", b"\x00\x00\x00\x05hello", ErrorCode.MALFORMED),
    "garbage_after_hello": (hello(), b"\x00\x00\x00\x03\xc1\xc1\xc1", ErrorCode.MALFORMED),
    "not_our_protocol": (b"", b"GET / HTTP/1.1\r\n\r\n", ErrorCode.TOO_LARGE),
    "oversized_length": (b"", b"\xff\xff\xff\xff", ErrorCode.TOO_LARGE),
    "oversized_after_hello": (hello(), b"\x00\x10\x00\x01" + b"\x00" * 64, ErrorCode.TOO_LARGE),
    "unknown_tag": (
        b"",
        len(body := msgspec.msgpack.encode({"t": "Bogus"})).to_bytes(4, "big") + body,
        ErrorCode.UNKNOWN_MESSAGE,
    ),
    "subscribe_before_hello": (
        b"",
        encode_frame(Subscribe(topic="signals")),
        ErrorCode.OUT_OF_ORDER,
    ),
    "second_hello": (hello(), hello(), ErrorCode.OUT_OF_ORDER),
    "wrong_version": (b"", hello(PROTOCOL_VERSION + 1), ErrorCode.BAD_VERSION),
}


@pytest.mark.parametrize("case", list(BAD_STREAMS))
def test_bad_stream_gets_error_and_is_closed(
    broker: BrokerProcess, bystanders: Callable[[], None], case: str
) -> None:
    first, bad, code = BAD_STREAMS[case]
    with connect(broker.socket) as sock:
        if first:
            assert isinstance(exchange(sock, first), Welcome)
        sock.sendall(bad)
        replies = replies_until_closed(sock)
    assert len(replies) == 1, replies
    (error,) = replies
    assert isinstance(error, Error) and error.code == code, error
    bystanders()
    assert broker.stats()["broker"]["connections"] == 3  # the bystanders and this request


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every uid may pass through (pytest's tmp_path is private to us)."""
    path = Path(tempfile.mkdtemp(prefix="myc-e2e-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_other_uid_is_refused(make_broker: Callable[..., BrokerProcess], open_dir: Path) -> None:
    """SO_PEERCRED: a socket anyone may open still refuses a uid that is not allowed; with
    the default 0660 mode the kernel already refuses the connect."""
    assert os.getuid() == 0, "needs root to become another uid (CI runs as root)"
    results = {}
    for mode in ("0o666", "0o660"):
        b = make_broker(config(f"socket_mode = {mode}"), start=False)
        b.socket = str(open_dir / f"{mode}.sock")
        b.broker_id = broker_id_for(b.socket)
        b.start()
        results[mode] = as_nobody(lambda path=b.socket: hello_outcome(path))
    assert results["0o666"] == ("reply", "not_allowed")
    assert results["0o660"] == ("connect", "PermissionError")


def hello_outcome(path: str) -> tuple[str, str]:
    """(stage, what happened) of a connect and Hello: the error code of a refusal."""
    try:
        sock = connect(path)
    except OSError as exc:
        return ("connect", type(exc).__name__)
    with sock:
        try:
            sock.sendall(hello())
        except OSError:
            pass  # refused before reading our Hello; the Error is still in our buffer
        replies = replies_until_closed(sock)
    return (
        "reply",
        replies[0].code if replies and isinstance(replies[0], Error) else repr(replies),
    )


def as_nobody(fn: Callable[[], tuple[str, str]]) -> tuple[str, str]:
    """Run ``fn`` in a forked child that dropped to uid/gid nobody; its result."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = fn()
        except BaseException as exc:
            result = ("child failed", repr(exc))
        try:
            os.write(write_end, "\0".join(result).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        out = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    stage, what = out.split("\0")
    return stage, what


def test_max_connections(make_broker: Callable[..., BrokerProcess]) -> None:
    broker = make_broker(config("max_connections = 3"))
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect(broker.socket)) for _ in range(3)]
        for sock in held:
            assert isinstance(exchange(sock, hello()), Welcome)
        with connect(broker.socket) as extra:
            replies = replies_until_closed(extra)
        assert [(type(r), r.code) for r in replies] == [(Error, "too_many_connections")]
        with pytest.raises(BrokerUnavailable, match="max_connections"):
            Producer(socket_path=broker.socket)
        assert all(isinstance(exchange(s, encode_frame(StatsRequest())), StatsReply) for s in held)
        held[0].close()
        wait_for(lambda: answers(broker.socket), what="a freed connection slot")


def answers(path: str) -> bool:
    try:
        admin_request(StatsRequest(), path)
    except BrokerUnavailable:
        return False
    return True


def test_connection_timeout_closes_silent_connections(
    make_broker: Callable[..., BrokerProcess],
) -> None:
    broker = make_broker(config("connection_timeout_ms = 300"))
    started = time.monotonic()  # before the broker's clocks start
    with (
        connect(broker.socket) as silent,
        connect(broker.socket) as partial,
        connect(broker.socket) as greeted,
    ):
        partial.sendall(hello()[:3])
        assert isinstance(exchange(greeted, hello()), Welcome)
        for sock in (silent, partial):
            replies = replies_until_closed(sock)
            assert [(type(r), r.code) for r in replies] == [(Error, "timeout")]
        assert 0.3 <= time.monotonic() - started < 10.0  # margin for a loaded 2-core box
        # A connection that said Hello has no deadline: it still answers afterwards.
        assert isinstance(exchange(greeted, encode_frame(Heartbeat(pid=os.getpid()))), Ok)
