"""Process bodies for the data-plane tests, and the self-checking payload they exchange.

Each function runs in a spawned child: it attaches segments by name (never inherits a
mapping), does one job with a deadline on every loop, and reports through a queue. A
payload carries its sequence number and length and is followed by a slice of a fixed
pseudo-random pattern chosen by the sequence number, so a reader can check that a frame
is whole, intact and in order without knowing what the writer did.
"""

from __future__ import annotations

import ctypes
import random
import struct
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from mycelium.client import waiting
from mycelium.client.waiting import SpinBudget, WaitPlan, wait_sync
from mycelium.shm import (
    ConsumerState,
    ConsumerStateView,
    LaneReader,
    LaneWriter,
    Segment,
    WaitStrategy,
)
from mycelium.shm.layout import KIND_LANE
from mycelium.shm.wait import DEFAULT_SPINS, DEFAULT_YIELDS

#: seq u64, total length u32, then pattern bytes.
HEAD = struct.Struct("<QI")
PATTERN = random.Random(20240611).randbytes(1 << 18)
PATTERN_OFFSETS = 4093
CHILD_DEADLINE_S = 60.0
T = TypeVar("T")
STAMP = struct.Struct("<q")
MASK64 = (1 << 64) - 1


def size_for(seq: int, lo: int, hi: int) -> int:
    """A deterministic, well-mixed payload length in [lo, hi] for message ``seq``."""
    return lo + (((seq * 0x9E3779B97F4A7C15) & MASK64) >> 40) % (hi - lo + 1)


def payload(seq: int, size: int) -> bytes:
    """Message ``seq`` of ``size`` bytes (size >= HEAD.size)."""
    o = seq % PATTERN_OFFSETS
    return HEAD.pack(seq, size) + PATTERN[o : o + size - HEAD.size]


def check(data: bytes | memoryview) -> int:
    """The sequence number of an intact payload; AssertionError names what is wrong."""
    seq, size = HEAD.unpack_from(data)
    assert len(data) == size, f"message {seq}: {len(data)} bytes, header says {size}"
    o = seq % PATTERN_OFFSETS
    assert bytes(data[HEAD.size :]) == PATTERN[o : o + size - HEAD.size], f"message {seq} torn"
    return seq


def wait_until(
    poll: Callable[[], T | None],
    state: ConsumerState,
    deadline: float | None,
    strategy: WaitStrategy | str = WaitStrategy.BLOCK,
    *,
    spins: int = DEFAULT_SPINS,
    yields: int = DEFAULT_YIELDS,
) -> T | None:
    """Poll a raw reader until a result or ``deadline``, with the consumer's own wait
    policy (``mycelium.client.waiting``), so these tests wait exactly as a consumer does."""
    result = poll()
    if result is not None:
        return result
    return wait_sync(poll, state, WaitPlan(WaitStrategy(strategy), spins, yields, deadline))


def next_batch(r: LaneReader, many: int, deadline: float) -> list[bytes]:
    """Up to ``many`` messages, waiting (block strategy) until some come or ``deadline``.

    Tests never spin on an empty lane: on a busy two-core machine a spinning reader
    would take the CPU its writer needs.
    """
    if many == 1:
        one = wait_until(r.poll, r.state, deadline)
        return [] if one is None else [one]
    return wait_until(lambda: r.poll_many(many) or None, r.state, deadline) or []


def _writer(lane: str, readers: list[tuple[str, str]], **kw: Any) -> tuple[LaneWriter, list]:
    w = LaneWriter(Segment.attach(lane, KIND_LANE, writable=True), **kw)
    views = [ConsumerStateView.attach(*r) for r in readers]
    w.set_readers(views)
    return w, views


def write_seq(lane: str, readers: list[tuple[str, str]], n: int, lo: int, hi: int,
              batch: int, out: Any, timeout_s: float = 10.0) -> None:  # fmt: skip
    """Publish messages 0..n-1 (sizes in [lo, hi]) in batches of ``batch``."""
    w, _ = _writer(lane, readers, backpressure_timeout_s=timeout_s)
    deadline = time.monotonic() + CHILD_DEADLINE_S
    seq = 0
    while seq < n and time.monotonic() < deadline:
        k = min(batch, n - seq)
        if k == 1:
            w.publish(payload(seq, size_for(seq, lo, hi)))
        else:
            w.publish_many([payload(s, size_for(s, lo, hi)) for s in range(seq, seq + k)])
        seq += k
    out.put(("writer", w.count))
    w.close()


def write_until_told(lane: str, readers: list[tuple[str, str]], lo: int, hi: int,
                     joins: Any, gated: Any, out: Any, n: int) -> None:  # fmt: skip
    """Publish n messages at full speed; whenever a consumer arrives on ``joins``, gate on
    it too (as a producer does after a topology change) and set ``gated``."""
    w, views = _writer(lane, readers, backpressure_timeout_s=10.0)
    deadline = time.monotonic() + CHILD_DEADLINE_S
    seq = 0
    while seq < n and time.monotonic() < deadline:
        if not joins.empty():
            views.append(ConsumerStateView.attach(*joins.get()))
            w.set_readers(views)
            gated.set()
        k = min(64, n - seq)
        w.publish_many([payload(s, size_for(s, lo, hi)) for s in range(seq, seq + k)])
        seq += k
    out.put(("writer", w.count))
    w.close()


def write_forever(lane: str, readers: list[tuple[str, str]], lo: int, hi: int,
                  batch: int) -> None:  # fmt: skip
    """Publish until killed (SIGKILL tests), or until the deadline."""
    w, _ = _writer(lane, readers, backpressure_timeout_s=CHILD_DEADLINE_S)
    deadline = time.monotonic() + CHILD_DEADLINE_S
    seq = 0
    while time.monotonic() < deadline:
        items = [payload(s, size_for(s, lo, hi)) for s in range(seq, seq + batch)]
        if batch == 1:
            w.publish(items[0])
        else:
            w.publish_many(items)
        seq += batch


def read_seq(lane: str, consumer: tuple[str, str], start: str, n: int, out: Any,
             name: str = "reader", many: int = 256) -> None:  # fmt: skip
    """Read until the lane's writer count reaches n and we drained it; check every frame."""
    state = ConsumerState.attach(*consumer)
    r = LaneReader(Segment.attach(lane, KIND_LANE), state, start=start)
    first_count = r.count
    deadline = time.monotonic() + CHILD_DEADLINE_S
    expect = None
    got = 0
    problems: list[str] = []
    while r.count < n and time.monotonic() < deadline:
        batch = next_batch(r, many, deadline)
        for data in batch:
            seq = check(data)
            if expect is not None and seq != expect and len(problems) < 10:
                problems.append(f"expected {expect}, got {seq}")
            expect = seq + 1
        got += len(batch)
    out.put((name, {"got": got, "first_count": first_count, "last": expect, "lost": state.lost,
                    "corrupt": state.corrupt, "problems": problems,
                    "received": state.received()}))  # fmt: skip
    r.close()
    state.close()


def block_idle(lane: str, consumer: tuple[str, str], seconds: float, go: Any, ready: Any) -> None:
    """Once ``go`` is set, wait with the block strategy for ``seconds`` for messages that
    never come (the test creates our consumer segment with our pid in between)."""
    go.wait(CHILD_DEADLINE_S)
    state = ConsumerState.attach(*consumer)
    r = LaneReader(Segment.attach(lane, KIND_LANE), state)
    ready.set()
    wait_until(r.poll, state, time.monotonic() + seconds, WaitStrategy.BLOCK)


def wake_latency(lane: str, consumer: tuple[str, str], n: int, out: Any) -> None:
    """Block straight on the doorbell ``n`` times; report the wake-up latencies (ns).

    The safety timeout is raised to the deadline, so only the doorbell can wake us early.
    """
    waiting.BLOCK_SAFETY_S = CHILD_DEADLINE_S
    state = ConsumerState.attach(*consumer)
    r = LaneReader(Segment.attach(lane, KIND_LANE), state)
    lat = []
    deadline = time.monotonic() + CHILD_DEADLINE_S
    for _ in range(n):
        data = wait_until(r.poll, state, deadline, WaitStrategy.BLOCK, spins=0, yields=0)
        if data is None:
            break
        lat.append(time.perf_counter_ns() - STAMP.unpack_from(data)[0])
    out.put(("latency", lat))


def read_all_doorbell_only(lane: str, consumer: tuple[str, str], n: int, ready: Any,
                           out: Any) -> None:  # fmt: skip
    """Read ``n`` messages, blocking on the doorbell whenever caught up (no spin, no
    yield); the safety timeout is raised to the deadline, so only a ring wakes us. Reports
    the sequence numbers seen and how many times we slept."""
    waiting.BLOCK_SAFETY_S = CHILD_DEADLINE_S
    state = ConsumerState.attach(*consumer)
    r = LaneReader(Segment.attach(lane, KIND_LANE), state, start="begin")
    ready.set()
    seqs: list[int] = []
    sleeps = 0
    deadline = time.monotonic() + CHILD_DEADLINE_S
    while len(seqs) < n:
        data = r.poll()
        if data is None:
            sleeps += 1
            data = wait_until(r.poll, state, deadline, WaitStrategy.BLOCK, spins=0, yields=0)
            if data is None:
                break
        seqs.append(check(data))
    out.put(("read", seqs, sleeps))


class CountingBell:
    """A doorbell that counts the waits that may sleep (acquires with a timeout)."""

    def __init__(self, bell: Any) -> None:
        self.bell = bell
        self.sleeps = 0

    def acquire(self, timeout: float | None = None) -> None:
        if timeout != 0:
            self.sleeps += 1
        self.bell.acquire(timeout)

    @property
    def value(self) -> int:
        return int(self.bell.value)


def read_adaptive(lane: str, consumer: tuple[str, str], n: int, ready: Any, out: Any) -> None:
    """Read ``n`` messages as a consumer does by default (poll, then the adaptive wait);
    report the CPU seconds and wall seconds from the first message to the last, how many
    waits there were and how many of them slept on the doorbell."""
    state = ConsumerState.attach(*consumer)
    bell = state.doorbell = CountingBell(state.doorbell)  # type: ignore[assignment]
    r = LaneReader(Segment.attach(lane, KIND_LANE), state, start="begin")
    budget = SpinBudget()
    ready.set()
    deadline = time.monotonic() + CHILD_DEADLINE_S
    got = waits = 0
    cpu0 = wall0 = 0.0
    while got < n:
        data = r.poll()
        if data is None:
            waits += 1
            plan = WaitPlan(WaitStrategy.ADAPTIVE, 0, 0, deadline, budget)
            data = wait_sync(r.poll, state, plan)
            if data is None:
                break
        if not got:
            cpu0, wall0 = time.process_time(), time.perf_counter()
        got += 1
    out.put(("adaptive", got, time.process_time() - cpu0, time.perf_counter() - wall0,
             waits - 1, bell.sleeps))  # fmt: skip


def write_through_readonly(lane: str) -> None:
    """Store a byte through a read-only mapping at the C level: the kernel must kill us."""
    seg = Segment.attach(lane, KIND_LANE)
    address = np.frombuffer(seg.mm, np.uint8).ctypes.data
    ctypes.memset(address + 4096, 0x55, 1)
