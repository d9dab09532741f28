"""Where an adapter's input lines come from: a recorded file, a generator, or a live
WebSocket.

How this works
--------------
Every source is an iterator of JSON text lines, the exact text an exchange or a node
sends, so the adapters have one code path for all three. ``paced`` spaces any iterator
out to a rate by waiting on the service's stop event (never a busy loop; a stop ends it
at once). ``live_lines`` speaks just enough RFC 6455 to subscribe to a public feed and
read text frames; the framing itself (``encode_frame``/``FrameParser``) is sans-IO. It
reconnects with backoff until stopped, and also when the feed falls silent for longer than
its ``LiveLink.max_silence_s`` (a heartbeat watchdog: Kraken sends a heartbeat every
second, so silence means a dead connection even when TCP has not noticed). Requests an
adapter queues on the link's ``outbox`` (a resubscription) are sent on the open
connection. Nothing in the tests depends on the network.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import queue
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FrameParser", "LiveLink", "encode_frame", "file_lines", "live_lines", "paced"]

log = logging.getLogger("mycelium.services")

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
#: A WebSocket read returns to check the stop event this often.
READ_TIMEOUT_S = 1.0
RECONNECT_MAX_S = 30.0
#: Largest frame a feed may send us.
MAX_FRAME_BYTES = 16 << 20


@dataclass
class LiveLink:
    """What an adapter and its live connection share: requests to send, the silence
    after which the connection counts as dead, and how often that happened."""

    max_silence_s: float | None = None
    outbox: queue.SimpleQueue[dict[str, Any]] = field(default_factory=queue.SimpleQueue)
    silent_reconnects: int = 0


def file_lines(path: str | os.PathLike[str]) -> Iterator[str]:
    """The non-empty lines of a recorded JSON-lines file."""
    with Path(path).open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                yield line


def paced(items: Iterable[str], rate: float | None, stop: threading.Event) -> Iterator[str]:
    """``items`` at most ``rate`` per second (None or 0: as fast as they come), ending
    as soon as ``stop`` is set."""
    start = time.monotonic()
    for i, item in enumerate(items):
        if rate:
            delay = start + i / rate - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
        if stop.is_set():
            return
        yield item


# -- WebSocket (RFC 6455), client side ----------------------------------------------------
def encode_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final frame; a client masks every frame it sends (``mask``: 4 random bytes)."""
    mask = os.urandom(4) if mask is None else mask
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


class FrameParser:
    """Bytes in, whole messages out: ``feed(data)`` returns ``(opcode, payload)`` pairs,
    fragmented messages joined, control frames passed through as they come."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._opcode = OP_TEXT

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out = []
        while (frame := self._next_frame()) is not None:
            fin, opcode, payload = frame
            if opcode >= OP_CLOSE:
                out.append((opcode, payload))
                continue
            if opcode != OP_CONT:
                self._opcode, self._parts = opcode, []
            self._parts.append(payload)
            if fin:
                out.append((self._opcode, b"".join(self._parts)))
                self._parts = []
        return out

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        fin, opcode = bool(buf[0] & 0x80), buf[0] & 0x0F
        masked, n = bool(buf[1] & 0x80), buf[1] & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                return None
            (n,) = struct.unpack_from("!H", buf, 2)
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                return None
            (n,) = struct.unpack_from("!Q", buf, 2)
            pos = 10
        if n > MAX_FRAME_BYTES:
            raise ConnectionError(f"WebSocket frame of {n} bytes exceeds {MAX_FRAME_BYTES}")
        key = b""
        if masked:
            key = bytes(buf[pos : pos + 4])
            pos += 4
        if len(buf) < pos + n:
            return None
        payload = bytes(buf[pos : pos + n])
        if masked:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        del buf[: pos + n]
        return fin, opcode, payload


def _handshake(url: str) -> socket.socket:
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    sock = socket.create_connection((host, port), timeout=10)
    if secure:
        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    key = base64.b64encode(os.urandom(16)).decode()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk or len(head) > 65536:
            raise ConnectionError(f"WebSocket handshake with {url} failed")
        head += chunk
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status + b" ":
        raise ConnectionError(
            f"WebSocket upgrade refused by {url}: {status.decode(errors='replace')}"
        )
    sock.settimeout(READ_TIMEOUT_S)
    return sock


def _session(
    url: str, subscribe: list[dict[str, Any]], stop: threading.Event, link: LiveLink
) -> Iterator[str]:
    """One connection: subscribe, then yield text messages until closed or stopped."""
    sock = _handshake(url)
    parser = FrameParser()
    try:
        for request in subscribe:
            sock.sendall(encode_frame(OP_TEXT, json.dumps(request).encode()))
        heard = time.monotonic()
        while not stop.is_set():
            while not link.outbox.empty():
                sock.sendall(encode_frame(OP_TEXT, json.dumps(link.outbox.get()).encode()))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                silent = time.monotonic() - heard
                if link.max_silence_s is not None and silent > link.max_silence_s:
                    link.silent_reconnects += 1
                    raise ConnectionError(f"no message for {silent:.1f}s") from None
                continue
            if not data:
                raise ConnectionError("the feed closed the connection")
            heard = time.monotonic()
            for opcode, payload in parser.feed(data):
                if opcode == OP_TEXT:
                    yield payload.decode("utf-8", errors="replace")
                elif opcode == OP_PING:
                    sock.sendall(encode_frame(OP_PONG, payload))
                elif opcode == OP_CLOSE:
                    raise ConnectionError("the feed sent a close frame")
    finally:
        sock.close()


def live_lines(
    url: str,
    subscribe: list[dict[str, Any]],
    stop: threading.Event,
    link: LiveLink | None = None,
) -> Iterator[str]:
    """Text messages of a live WebSocket feed, reconnecting with backoff until stopped."""
    link = LiveLink() if link is None else link
    delay = 1.0
    while not stop.is_set():
        try:
            for line in _session(url, subscribe, stop, link):
                delay = 1.0
                yield line
        except OSError as exc:  # ConnectionError, ssl.SSLError, socket errors
            log.warning("feed %s: %s; reconnecting in %.0fs", url, exc, delay)
            if stop.wait(delay):
                return
            delay = min(delay * 2, RECONNECT_MAX_S)
