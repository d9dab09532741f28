"""A reader trusts no write cursor: one the lane's geometry cannot produce (misaligned,
behind the reader, past the writer's reservation, e.g. +2^63 or +1 MiB) is one counted
CorruptFrame, then the lane is skipped until its writer publishes a sane cursor again.
Forbidden outcomes: a replay of old ring bytes, more messages than were published, a
reader that never delivers again, an error that is not a MyceliumError, a hang."""

from __future__ import annotations

import time

import pytest
import shm_workers
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from shm_kit import ShmKit
from shm_workers import check, payload, size_for

from mycelium.errors import CorruptFrame, MyceliumError
from mycelium.shm import LaneReader, LaneWriter, Segment
from mycelium.shm.layout import KIND_LANE, LANE_COUNT_Q, LANE_WRITE_Q

SIZE_LO, SIZE_HI = 12, 200
DEADLINE_S = 60.0


def publish(w: LaneWriter, first: int, n: int) -> int:
    w.publish_many([payload(s, size_for(s, SIZE_LO, SIZE_HI)) for s in range(first, first + n)])
    return first + n


def read_all(r: LaneReader) -> list[int]:
    seqs: list[int] = []
    while batch := r.poll_many(256):
        seqs += [check(d) for d in batch]
    return seqs


ATTACKS = {
    "plus_2_63": lambda c: c + (1 << 63),
    "plus_1_mib": lambda c: c + (1 << 20),
    "misaligned": lambda c: c + 3,
    "behind": lambda c: c - 64,
}


@pytest.mark.parametrize("capacity", [1 << 16, 1 << 22], ids=["ring_64k", "ring_4m"])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_an_impossible_cursor_is_one_error_and_the_lane_recovers(
    shm: ShmKit, capacity: int, attack: str
) -> None:
    lane = shm.lane(capacity=capacity, max_message=SIZE_HI)
    c = shm.consumer()
    state = shm.state(c)
    r = shm.reader(lane, state)
    w = shm.writer(lane, (c,))
    raw = shm.raw_lane(lane)
    seq, seqs = 0, []
    while w.position < 3 * capacity:  # lap the ring: old frames lie all over it
        seq = publish(w, seq, 100)
        seqs += read_all(r)
    real = raw.q[LANE_WRITE_Q]
    raw.q[LANE_WRITE_Q] = ATTACKS[attack](real) % (1 << 64)
    raw.q[LANE_COUNT_Q] = raw.q[LANE_COUNT_Q] + 1000
    with pytest.raises(CorruptFrame, match="impossible write cursor"):
        r.poll_many(256)
    for _ in range(3):  # skipped, not counted again
        assert r.poll() is None and r.poll_many(10) == [] and r.poll_view() is None
    assert r.drained()
    assert state.corrupt == 1 and r.position == real
    seq = publish(w, seq, 300)  # the writer publishes sanely again: the lane recovers
    seqs += read_all(r)
    assert seqs == list(range(seq))  # everything once, in order, nothing else
    assert (state.lost, state.corrupt) == (0, 1)


def test_an_impossible_cursor_at_join_is_not_trusted(shm: ShmKit) -> None:
    """A reader joining at the end of a lane whose cursor is +2^63 joins at the head
    checkpoint, not at the bogus cursor, and counts the bad cursor once on its first poll."""
    lane = shm.lane(capacity=1 << 16, max_message=SIZE_HI)
    w = shm.writer(lane)
    raw = shm.raw_lane(lane)
    seq = publish(w, 0, 1000)
    raw.q[LANE_WRITE_Q] = raw.q[LANE_WRITE_Q] + (1 << 63)
    state = shm.state(shm.consumer())
    r = shm.reader(lane, state, start="end")
    assert r.position <= w.position
    with pytest.raises(CorruptFrame):
        r.poll()
    assert r.poll() is None and state.corrupt == 1
    before = r.count
    seq = publish(w, seq, 10)
    got = read_all(r)
    # From the head checkpoint on: messages that were published, each once, none old.
    assert got and got[0] <= 1000 and got == list(range(got[0], seq))
    assert r.count - before == len(got)


# -- property: a writer in another process, a scribbler here -------------------------
impossible = st.one_of(
    st.integers(1, 7).map(lambda d: ("misaligned", d)),
    st.integers(1, 1 << 20).map(lambda d: ("behind", -8 * d)),
    st.integers(1 << 20, (1 << 64) - 1).map(lambda d: ("ahead", d & -8)),
)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # each example is a process: no shrink
)
@given(
    scribbles=st.lists(
        # Scribbled by 80% of the stream at the latest: the writer, at most a ring (682
        # frames) ahead, then still has messages to publish, and only its next sane cursor
        # store ends the reader's distrust (an idle writer's lane stays skipped by design).
        st.tuples(st.floats(0.0, 0.8), impossible, st.integers(0, (1 << 64) - 1)),
        min_size=1,
        max_size=20,
    )
)
def test_scribbled_cursors_while_traffic_flows(shm: ShmKit, children, scribbles) -> None:
    """Random impossible cursors and random counts stored while a writer process
    publishes: every message delivered is intact, delivered once and in order, never more
    than were published; every error is a MyceliumError; the stream always completes."""
    n = 5_000
    lane = shm.lane(capacity=1 << 14, max_message=SIZE_HI)
    c = shm.consumer()
    state = shm.state(c)
    r = shm.reader(lane, state)
    out = children.queue()
    proc = children.start(shm_workers.write_seq, lane, [c], n, SIZE_LO, SIZE_HI, 1, out, 30.0)
    raw = Segment.attach(lane, KIND_LANE, writable=True)
    try:
        todo = sorted(scribbles, key=lambda s: s[0])
        seqs: list[int] = []
        deadline = time.monotonic() + DEADLINE_S
        while (not seqs or seqs[-1] < n - 1) and time.monotonic() < deadline:
            while seqs and todo and todo[0][0] * n <= len(seqs):  # the writer is running
                _, (_, delta), count = todo.pop(0)
                raw.q[LANE_WRITE_Q] = (raw.q[LANE_WRITE_Q] + delta) % (1 << 64)
                raw.q[LANE_COUNT_Q] = count
            try:
                seqs += [check(d) for d in shm_workers.next_batch(r, 64, deadline)]
            except MyceliumError:
                continue
        assert children.join(proc) == 0
        assert seqs and seqs[-1] == n - 1, "the stream did not complete"
        assert seqs == sorted(set(seqs)), "a message delivered twice or out of order"
        assert state.corrupt <= len(scribbles)
    finally:
        raw.close()
