"""Races between a writer at full speed and readers joining, leaving and rejoining.

Each test names the outcomes that are forbidden whatever the interleaving; the rest
(how many messages a reader saw, how many it lost where losing is allowed) is free.
"""

from __future__ import annotations

import itertools
import time

import shm_workers
from harness import wait_for
from shm_workers import check, next_batch

from mycelium.shm import Segment
from mycelium.shm.layout import KIND_LANE, LANE_COUNT_Q

DEADLINE_S = 60.0


def assert_never_silent(seqs: list[int], first: int, lost: int, corrupt: int) -> None:
    """Forbidden: a message twice or out of order, a gap not counted in ``lost``, and
    CorruptFrame (corrupt > 0) where there is only a race. (Torn frames fail check().)"""
    assert all(b > a for a, b in itertools.pairwise(seqs)), "duplicate or out of order"
    gaps = sum(b - a - 1 for a, b in itertools.pairwise([first - 1, *seqs]))
    assert lost == gaps, f"{gaps} messages skipped but {lost} counted lost"
    assert corrupt == 0


def test_reader_joining_before_the_writer_knows_it(shm, children) -> None:
    """The consumer claims its slot and reads before the producer gates on it. Losing
    messages in that window is allowed, losing them silently is not."""
    n = 300_000
    lane = shm.lane(capacity=1 << 13, max_message=200)
    joins, gated, out = children.queue(), children.event(), children.queue()
    proc = children.start(shm_workers.write_until_told, lane, [], 12, 200, joins, gated, out, n)
    raw = Segment.attach(lane, KIND_LANE)
    wait_for(lambda: raw.q[LANE_COUNT_Q] >= 20_000, what="the stream to be under way")
    c = shm.consumer()
    state = shm.state(c)
    r = shm.reader(lane, state, start="end")
    first = r.count
    seqs: list[int] = []
    deadline = time.monotonic() + DEADLINE_S
    for _ in range(50):  # read a little, ungated: the writer laps an 8 KiB ring quickly
        seqs.extend(check(d) for d in r.poll_many(16))
    joins.put(c)
    while r.count < n and time.monotonic() < deadline:
        seqs.extend(check(d) for d in next_batch(r, 256, deadline))
    assert children.join(proc) == 0
    assert seqs and seqs[-1] == n - 1
    assert_never_silent(seqs, first, state.lost, state.corrupt)
    assert state.received() == len(seqs)
    raw.close()


def test_begin_reader_on_a_live_lapped_lane(shm, children) -> None:
    """start="begin" while the writer laps the ring: the history may be overrun before
    the writer gates on us; every frame delivered is intact and every skip is counted."""
    n = 200_000
    lane = shm.lane(capacity=1 << 13, max_message=200)
    joins, gated, out = children.queue(), children.event(), children.queue()
    proc = children.start(shm_workers.write_until_told, lane, [], 12, 200, joins, gated, out, n)
    raw = Segment.attach(lane, KIND_LANE)
    wait_for(lambda: raw.q[LANE_COUNT_Q] >= 20_000, what="the stream to be under way")
    c = shm.consumer()
    state = shm.state(c)
    r = shm.reader(lane, state, start="begin")
    first = r.count
    seqs = [check(d) for d in r.poll_many(64)]
    joins.put(c)
    deadline = time.monotonic() + DEADLINE_S
    while r.count < n and time.monotonic() < deadline:
        seqs.extend(check(d) for d in next_batch(r, 1, deadline))
    assert children.join(proc) == 0
    assert seqs[-1] == n - 1
    assert_never_silent(seqs, first, state.lost, state.corrupt)
    raw.close()


def test_rejoining_reader_is_never_overrun(shm, children) -> None:
    """A consumer the writer already gates on leaves (releasing its slot, so the writer
    runs free) and rejoins at the end, over and over, while the writer laps a small ring.

    The writer stores its cursor, fences, scans the slots; the reader stores its slot,
    fences, loads the cursor: one of them sees the other. Forbidden: any loss, any gap
    within one membership, any torn frame, CorruptFrame.
    """
    n = 400_000
    lane = shm.lane(capacity=1 << 13, max_message=200)
    c = shm.consumer()
    state = shm.state(c)
    out = children.queue()
    proc = children.start(shm_workers.write_seq, lane, [c], n, 12, 200, 16, out, 30.0)
    raw = Segment.attach(lane, KIND_LANE)
    joins = 0
    deadline = time.monotonic() + DEADLINE_S
    while raw.q[LANE_COUNT_Q] < n - 1000 and time.monotonic() < deadline:
        r = shm.reader(lane, state, start="end")
        first = r.count
        seqs: list[int] = []
        for _ in range(20):
            seqs.extend(check(d) for d in r.poll_many(32))
        assert_never_silent(seqs, first, state.lost, state.corrupt)
        r.close()  # releases the slot
        joins += 1
    r = shm.reader(lane, state, start="end")  # stay to the end so the writer can finish
    while r.count < n and time.monotonic() < deadline:
        next_batch(r, 4096, deadline)
    assert children.join(proc) == 0
    assert joins >= 20 and state.lost == 0
    raw.close()
