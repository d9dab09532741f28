"""Process bodies of the trust tests: a producer of numbered, self-checking messages
that reports every error it met by class, so the test can tell a MyceliumError (allowed)
from a raw exception (a bug)."""

from __future__ import annotations

import struct
import time
import traceback
from collections import Counter
from typing import Any

from mycelium import Producer
from mycelium.errors import MyceliumError

#: seq u64, then seq scrambled: a torn or invented frame fails the check.
NUMBERED = struct.Struct("<QQ")
SCRAMBLE = 0x9E3779B97F4A7C15
MASK64 = (1 << 64) - 1
CHILD_DEADLINE_S = 60.0
BACKPRESSURE_S = 0.2


def numbered(seq: int) -> bytes:
    return NUMBERED.pack(seq, (seq * SCRAMBLE) & MASK64)


def check_numbered(data: bytes) -> int:
    """The sequence number of an intact message; AssertionError if it was never published."""
    assert len(data) == NUMBERED.size, f"a {len(data)}-byte message was never published"
    seq, mark = NUMBERED.unpack(data)
    assert mark == (seq * SCRAMBLE) & MASK64, f"message {seq} torn or invented"
    return seq


def publish_numbered(socket_path: str, topic: str, n: int, out: Any) -> None:
    """Publish messages 0..n-1 in order, retrying one a MyceliumError refused (a refused
    publish writes nothing); report ("done", sent, errors) or ("raw", traceback)."""
    errors: Counter[str] = Counter()
    sent = 0
    deadline = time.monotonic() + CHILD_DEADLINE_S
    try:
        try:
            with Producer(socket_path, backpressure_timeout=BACKPRESSURE_S) as p:
                while sent < n and time.monotonic() < deadline:
                    try:
                        p.publish(topic, numbered(sent))
                        sent += 1
                    except MyceliumError as exc:
                        errors[type(exc).__name__] += 1
                        time.sleep(0.001)  # a pause between retries, not a busy loop
        except MyceliumError as exc:  # connecting or closing
            errors[type(exc).__name__] += 1
    except Exception:
        out.put(("raw", traceback.format_exc()))
        return
    out.put(("done", sent, dict(errors)))
