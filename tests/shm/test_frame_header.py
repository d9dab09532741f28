"""The frame header's sequence and publish time, and the lane's producer identity, as
every reader of a lane sees them. Forbidden outcomes: a sequence that is not the lane's
1-based message number (for single publishes, mixed batches, runs and arrays alike, and
across wraps); a stale ring word shown as a publish time; an identity that changes when
a writer resumes the lane."""

from __future__ import annotations

import time

import numpy as np
import pytest
from shm_kit import ShmKit

from mycelium.errors import CorruptFrame
from mycelium.shm.layout import (
    LANE_COUNT_Q,
    LANE_PRODUCER_Q,
    LANE_RESERVED_Q,
    LANE_WRITE_Q,
    lane_tail_record_q,
)


def drain_envelopes(r) -> list[tuple[bytes, int, int]]:
    out = []
    while (got := r.poll_envelope()) is not None:
        out.append(got)
    return out


def test_sequences_count_every_publish_path_across_wraps(shm: ShmKit) -> None:
    lane = shm.lane(capacity=1 << 12, max_message=100)
    c = shm.consumer()
    r1 = shm.reader(lane, shm.state(c))
    w = shm.writer(lane, (c,))
    seqs: list[int] = []
    sent = 0
    for lap in range(40):  # 40 x ~1.3 KiB: the 4 KiB ring wraps many times
        w.publish(b"s" * (lap % 9))
        w.publish_many([b"m" * k for k in range(1, 6)])  # mixed sizes
        w.publish_many([b"r" * 40] * 20)  # a run
        w.publish_array(np.full((3, 16), lap, np.uint8))
        sent += 1 + 5 + 20 + 3
        got = drain_envelopes(r1)
        seqs += [s for _, s, _ in got]
        assert all(ns == 0 for _, _, ns in got)  # timestamps off: never a stale word
    assert seqs == list(range(1, sent + 1))


def test_times_are_stored_only_from_where_they_were_switched_on(shm: ShmKit) -> None:
    lane = shm.lane()
    c = shm.consumer()
    r = shm.reader(lane, shm.state(c))
    w = shm.writer(lane, (c,))
    w.publish(b"before")
    before = time.time_ns()
    w.timestamps = True
    w.publish(b"one")
    w.publish_many([b"x", b"yy"])
    w.publish_many([b"z" * 8] * 20)
    after = time.time_ns()
    w.timestamps = False
    w.publish(b"off")
    got = drain_envelopes(r)
    assert got[0][2] == 0 and got[-1][2] == 0
    assert all(before <= ns <= after for _, _, ns in got[1:-1])
    assert [s for _, s, _ in got] == list(range(1, 26))


def test_the_identity_is_recorded_once_and_survives_a_resume(shm: ShmKit) -> None:
    lane = shm.lane()
    c = shm.consumer()
    r = shm.reader(lane, shm.state(c))
    assert r.producer == ""  # no writer yet
    w = shm.writer(lane, (c,), producer_name="feed-1")
    ident = r.producer
    assert ident.startswith("feed-1/") and len(ident.split("/")[1]) == 16
    w.publish(b"a")
    w.close(final=False)
    w2 = shm.writer(lane, (c,), producer_name="other")  # a resumed lane keeps its numbering
    w2.publish(b"b")
    assert [(p, s) for p, s, _ in drain_envelopes(r)] == [(b"a", 1), (b"b", 2)]
    r3 = shm.reader(lane, shm.state(shm.consumer()), start="begin")
    assert r3.producer == ident


def test_an_impossible_identity_is_a_corrupt_frame(shm: ShmKit) -> None:
    lane = shm.lane()
    raw = shm.raw_lane(lane)
    raw.q[LANE_PRODUCER_Q + 1] = 1 << 40
    raw.q[LANE_PRODUCER_Q] = 5
    r = shm.reader(lane, shm.state(shm.consumer()))
    with pytest.raises(CorruptFrame, match="producer name length"):
        r.producer  # noqa: B018


def test_sequences_past_two_to_the_32(shm: ShmKit) -> None:
    """A lane whose count passes 2**32: the sequence is a full 64-bit word."""
    lane = shm.lane()
    raw = shm.raw_lane(lane)
    pos, count = 1 << 40, (1 << 32) - 3  # as if 2**32 - 3 messages had gone before
    for q in (LANE_WRITE_Q, LANE_RESERVED_Q):
        raw.q[q] = pos
    raw.q[LANE_COUNT_Q] = count
    for word, value in enumerate((pos, count, pos, count)):
        raw.q[lane_tail_record_q(0) + word] = value
    c = shm.consumer()
    r = shm.reader(lane, shm.state(c), start="begin")
    w = shm.writer(lane, (c,))
    w.publish_many([b"a", b"bb", b"c"])
    w.publish_many([b"r" * 8] * 20)
    w.publish(b"last")
    seqs = [s for _, s, _ in drain_envelopes(r)]
    assert seqs == list(range(count + 1, count + 25))
    assert seqs[2] == 1 << 32
