"""The lane across real processes (spawn): volume, several readers, every wrap alignment,
joining mid-stream, a writer killed mid-publish, maximum-size frames."""

from __future__ import annotations

import random
import signal
import time

import pytest
import shm_workers
from harness import wait_for
from shm_workers import check, next_batch, size_for

from mycelium.errors import CorruptFrame
from mycelium.shm import Segment
from mycelium.shm.layout import KIND_LANE, LANE_COUNT_Q, frame_bytes

READ_DEADLINE_S = 60.0


def read_all(r, n: int, many: int = 4096) -> list[int]:
    """Read until the reader has seen message n-1; every frame checked."""
    seqs: list[int] = []
    deadline = time.monotonic() + READ_DEADLINE_S
    while r.count < n and time.monotonic() < deadline:
        seqs.extend(check(d) for d in next_batch(r, many, deadline))
    return seqs


def test_a_million_messages_in_order_and_intact(shm, children) -> None:
    n = 1_000_000
    lane = shm.lane(capacity=1 << 20, max_message=256)
    c = shm.consumer()
    state = shm.state(c)
    r = shm.reader(lane, state)
    out = children.queue()
    proc = children.start(shm_workers.write_seq, lane, [c], n, 12, 100, 256, out)
    assert read_all(r, n) == list(range(n))
    assert out.get(timeout=60) == ("writer", n)
    assert children.join(proc) == 0
    assert state.lost == 0 and state.corrupt == 0 and state.received() == n


def test_several_readers_each_get_everything(shm, children) -> None:
    n = 100_000
    lane = shm.lane(capacity=1 << 14, max_message=200)
    consumers = [shm.consumer() for _ in range(3)]
    out = children.queue()
    readers = [  # one slow (poll), two batched: the writer waits for the slowest
        children.start(shm_workers.read_seq, lane, cons, "begin", n, out, f"r{i}", 1 if i else 256)
        for i, cons in enumerate(consumers)
    ]
    writer = children.start(shm_workers.write_seq, lane, consumers, n, 12, 200, 32, out)
    results = dict(out.get(timeout=120) for _ in range(4))
    for p in [writer, *readers]:
        assert children.join(p) == 0
    assert results["writer"] == n
    for i in range(3):
        res = results[f"r{i}"]
        assert res["problems"] == [] and res["got"] == n and res["last"] == n
        assert res["lost"] == 0 and res["corrupt"] == 0 and res["received"] == n


def test_wrap_around_at_every_alignment(shm, children) -> None:
    """Sizes cycle so that, over the run, the ring wraps at every 8-byte offset where a
    frame can fail to fit, with every payload length mod 8."""
    cap, lo, hi, n = 2048, 12, 300, 60_000
    wraps: set[tuple[int, int]] = set()
    pos = 0
    for s in range(n):  # replay the writer's arithmetic: where did it wrap?
        size = size_for(s, lo, hi)
        off, fb = pos % cap, frame_bytes(size)
        if off + fb > cap:
            wraps.add((off, size % 8))
            pos += cap - off
        pos += fb
    offsets = {off for off, _ in wraps}
    assert offsets == set(range(cap - frame_bytes(hi) + 8, cap, 8))
    assert {m for _, m in wraps} == set(range(8))
    lane = shm.lane(capacity=cap, max_message=hi)
    c = shm.consumer()
    r = shm.reader(lane, shm.state(c))
    out = children.queue()
    proc = children.start(shm_workers.write_seq, lane, [c], n, lo, hi, 7, out)
    assert read_all(r, n, many=5) == list(range(n))
    assert children.join(proc) == 0


@pytest.mark.parametrize(("max_message", "capacity"), [(1000, 4096), (65536, 1 << 19)])
def test_maximum_size_frames_on_the_smallest_ring(shm, children, max_message, capacity) -> None:
    """4 frames of max_message fill the ring exactly (1000 B) or nearly (64 KiB)."""
    n = 3000 if max_message < 4096 else 400
    lane = shm.lane(capacity=capacity, max_message=max_message)
    c = shm.consumer()
    r = shm.reader(lane, shm.state(c))
    out = children.queue()
    lo = max_message - 9  # every length mod 8 up to exactly max_message
    proc = children.start(shm_workers.write_seq, lane, [c], n, lo, max_message, 3, out)
    sizes = set()
    seqs = []
    deadline = time.monotonic() + READ_DEADLINE_S
    while r.count < n and time.monotonic() < deadline:
        for data in next_batch(r, 1, deadline):
            sizes.add(len(data))
            seqs.append(check(data))
    assert seqs == list(range(n))
    assert sizes == set(range(lo, max_message + 1))
    assert children.join(proc) == 0


def test_reader_joining_mid_stream(shm, children) -> None:
    """The producer learns of the consumer (set_readers) before it starts reading, as
    after a topology change: it then gets every message from its join on, none lost."""
    n = 300_000
    lane = shm.lane(capacity=1 << 15, max_message=200)
    joins, gated, out = children.queue(), children.event(), children.queue()
    proc = children.start(shm_workers.write_until_told, lane, [], 12, 200, joins, gated, out, n)
    raw = Segment.attach(lane, KIND_LANE)
    wait_for(lambda: raw.q[LANE_COUNT_Q] >= 50_000, what="the stream to be under way")
    c = shm.consumer()
    joins.put(c)
    assert gated.wait(30)
    state = shm.state(c)
    r = shm.reader(lane, state, start="end")
    first = r.count
    assert 50_000 <= first <= n
    seqs = read_all(r, n)
    assert seqs == list(range(first, n))
    assert state.lost == 0 and state.received() == n - first
    assert children.join(proc) == 0
    raw.close()


@pytest.mark.parametrize("batch", [1, 64])
def test_writer_killed_mid_publish_leaves_only_whole_frames(shm, children, batch) -> None:
    """SIGKILL the writer at a random moment while frames of up to 4 KiB are copied.

    Forbidden: a partial or torn frame, CorruptFrame, a gap, a reader that hangs.
    """
    lane = shm.lane(capacity=1 << 16, max_message=4096)
    c = shm.consumer()
    state = shm.state(c)
    r = shm.reader(lane, state)
    proc = children.start(shm_workers.write_forever, lane, [c], 12, 4096, batch)
    seqs: list[int] = []
    stop_after = random.randrange(2000, 20000)
    deadline = time.monotonic() + READ_DEADLINE_S
    try:
        while len(seqs) < stop_after and time.monotonic() < deadline:
            seqs.extend(check(d) for d in next_batch(r, 64, deadline))
        proc.kill()
        assert children.join(proc) == -signal.SIGKILL
        while batch_ := r.poll_many(64):
            seqs.extend(check(d) for d in batch_)
    except CorruptFrame as exc:  # pragma: no cover - a forbidden outcome
        pytest.fail(f"a killed writer left a corrupt frame: {exc}")
    assert seqs == list(range(len(seqs)))
    assert r.drained() and r.count == len(seqs) and state.lost == 0
