"""Lossy lanes: the writer never waits; a reader it overran skips to intact data and counts
exactly what it skipped. Never silent, never torn."""

from __future__ import annotations

import itertools
import time

import pytest
import shm_workers
from shm_workers import check, next_batch, payload, size_for

from mycelium.errors import CorruptFrame


def test_overrun_is_counted_exactly(shm) -> None:
    lane = shm.lane(capacity=4096, max_message=200, lossy=True)
    c = shm.consumer()
    state = shm.state(c)
    r = shm.reader(lane, state)
    w = shm.writer(lane, (c,))
    n = 1000
    for s in range(n):  # about 25 laps; the reader reads nothing meanwhile
        w.publish(payload(s, size_for(s, 12, 200)))
    got = [check(d) for d in r.poll_many(10_000)]
    assert got == list(range(got[0], n))  # a contiguous, intact suffix
    assert state.lost == got[0] > 0  # every message before it is counted lost
    assert state.lost + len(got) == n
    assert state.received() == len(got)


@pytest.mark.parametrize("how", ["poll", "poll_many"])
def test_overrun_mid_stream_is_counted_where_it_happened(shm, how) -> None:
    lane = shm.lane(capacity=4096, max_message=100, lossy=True)
    c = shm.consumer()
    state = shm.state(c)
    r = shm.reader(lane, state)
    w = shm.writer(lane, (c,))
    seq = 0
    got: list[int] = []

    def read_some(k: int) -> None:
        for _ in range(k):
            batch = [r.poll()] if how == "poll" else r.poll_many(3)
            got.extend(check(d) for d in batch if d is not None)

    for _ in range(20):
        for _ in range(200):
            w.publish(payload(seq, 60))
            seq += 1
        read_some(10)
    read_some(10_000)
    assert got == sorted(set(got)) and got[-1] == seq - 1
    gaps = sum(b - a - 1 for a, b in itertools.pairwise([-1, *got]))
    assert state.lost == gaps > 0
    assert state.lost + len(got) == seq


def test_lossy_writer_never_waits_and_views_are_refused(shm) -> None:
    lane = shm.lane(capacity=4096, max_message=100, lossy=True)
    c = shm.consumer()
    r = shm.reader(lane, shm.state(c))
    w = shm.writer(lane, (c,), backpressure_timeout_s=0)
    w.publish_many([payload(s, 100) for s in range(500)])
    for s in range(500, 1000):
        w.publish(payload(s, 100))
    with pytest.raises(ValueError):
        r.poll_view()


def test_overruns_while_reading_across_processes(shm, children) -> None:
    """A full-speed writer laps a slow reader many times.

    Forbidden: a torn or garbled payload; a message twice or out of order; a gap not in
    ``lost``; an overrun reported as CorruptFrame.
    """
    n = 200_000
    lane = shm.lane(capacity=1 << 14, max_message=200, lossy=True)
    c = shm.consumer()
    state = shm.state(c)
    r = shm.reader(lane, state, start="begin")
    out = children.queue()
    proc = children.start(shm_workers.write_seq, lane, [c], n, 12, 200, 32, out)
    got: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while r.count < n and time.monotonic() < deadline:
            got.extend(check(d) for d in next_batch(r, 1, deadline))
    except CorruptFrame as exc:  # pragma: no cover - a forbidden outcome
        pytest.fail(f"overrun reported as corruption: {exc}")
    assert out.get(timeout=60) == ("writer", n)
    assert children.join(proc) == 0
    assert all(b > a for a, b in itertools.pairwise(got)), "duplicate or out of order"
    gaps = sum(b - a - 1 for a, b in itertools.pairwise([-1, *got]))
    assert state.lost == gaps, "a gap was not counted"
    assert state.lost + len(got) == n and state.corrupt == 0
    assert state.lost > 0  # the race did happen


@pytest.mark.parametrize("how", ["poll", "poll_many"])
def test_an_overwritten_header_that_looks_like_a_wrap_marker_is_an_overrun(shm, how) -> None:
    """The writer laps the reader and leaves 0xFF bytes (a WRAP_MARKER) right where the
    reader's next header was. Following it would deliver the first frame of the next lap
    and skip the rest silently; the check from where the read began catches it."""
    lane = shm.lane(capacity=1024, max_message=200, lossy=True)
    c = shm.consumer()
    state = shm.state(c)
    r = shm.reader(lane, state)
    w = shm.writer(lane, (c,))

    def msg(seq: int, size: int) -> bytes:
        return b"\xff" * 8 + seq.to_bytes(4, "little") + bytes(size - 12)

    sizes = [104] * 4 + [104] * 4 + [104, 104, 104, 80, 104]  # lap 0 to 512; to 1024; lap 1
    for seq, size in enumerate(sizes[:4]):
        w.publish(msg(seq, size))
    assert [d[8] for d in r.poll_many(10)] == [0, 1, 2, 3] and r.position == 512
    for seq, size in enumerate(sizes[4:], start=4):
        w.publish(msg(seq, size))
    # The frame at ring offset 488 put its first 8 payload bytes (0xFF) at offset 512.
    batch = r.poll_many(100) if how == "poll_many" else iter(r.poll, None)
    got = [int.from_bytes(d[8:12], "little") for d in batch]
    assert got == list(range(got[0], len(sizes)))
    assert state.lost == got[0] - 4 > 0 and state.lost + len(got) == len(sizes) - 4
