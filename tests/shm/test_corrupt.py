"""Hostile memory: a reader facing a corrupt lane raises CorruptFrame, counts it, skips it,
never reads outside the ring and never hangs. Includes the hypothesis fuzz target."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.errors import CorruptFrame
from mycelium.shm import LaneReader, LaneWriter, Segment
from mycelium.shm.layout import (
    KIND_LANE,
    LANE_COUNT_Q,
    LANE_DATA_OFF,
    LANE_RESERVED_Q,
    LANE_TAIL_RECORDS_OFF,
    LANE_TAIL_VERSION_Q,
    LANE_WRITE_Q,
    WRAP_MARKER,
    frame_bytes,
)

CAP = 1024
MAX = 64
DQ0 = LANE_DATA_OFF // 8


class Hostile:
    """A lane whose 'writer' is the test: it stores whatever headers and cursors it likes."""

    def __init__(self, shm) -> None:
        self.shm = shm
        self.name = shm.lane(capacity=CAP, max_message=MAX)
        self.seg = shm.raw_lane(self.name)
        self.consumer = shm.consumer()
        self.state = shm.state(self.consumer)

    def header(self, pos: int, value: int) -> None:
        self.seg.q[DQ0 + (pos % CAP) // 8] = value

    def publish(self, cursor: int, count: int = 0) -> None:
        """Store count and cursor, having reserved up to the cursor as a writer does first."""
        self.seg.q[LANE_RESERVED_Q] = max(self.seg.q[LANE_RESERVED_Q], cursor)
        self.seg.q[LANE_COUNT_Q] = count
        self.seg.q[LANE_WRITE_Q] = cursor

    def begin_at(self, pos: int) -> None:
        """Make ``pos`` the tail and head of the live tail record (record 0, version 0)."""
        self.seg.q[LANE_TAIL_RECORDS_OFF // 8] = pos
        self.seg.q[LANE_TAIL_RECORDS_OFF // 8 + 2] = pos

    def reader(self, start: str = "begin") -> LaneReader:
        return self.shm.reader(self.name, self.state, start=start)


@pytest.fixture
def lane(shm) -> Hostile:
    return Hostile(shm)


@pytest.mark.parametrize(
    ("headers", "tail", "cursor", "good", "why"),
    [
        ({0: MAX + 1}, 0, 80, 0, "exceeds max_message"),
        ({0: 1 << 40}, 0, 80, 0, "exceeds max_message"),
        ({0: 40}, 0, 16, 0, "runs past the published cursor"),
        ({0: WRAP_MARKER}, 0, 8, 0, "wrap marker"),  # nothing published after the wrap
        ({64: WRAP_MARKER, 0: MAX + 5}, 64, CAP + 64, 0, "exceeds max_message"),
    ],
)
def test_bad_header_raises_counts_and_skips(lane, headers, tail, cursor, good, why) -> None:
    """``headers`` maps ring offsets to header words; the reader starts at ``tail``."""
    for offset, value in headers.items():
        lane.header(offset, value)
    lane.begin_at(tail)
    lane.publish(cursor)
    r = lane.reader()
    for _ in range(good):
        assert r.poll() is not None
    with pytest.raises(CorruptFrame, match=why):
        r.poll()
    assert lane.state.corrupt == 1
    assert r.position == (cursor + 7) & -8  # skipped everything published
    assert r.poll() is None  # and goes on


def test_frame_straddling_the_ring_end(lane) -> None:
    """A header 16 bytes before the end of the ring claiming 32 bytes: it would read past
    the ring although it ends below the published cursor."""
    lane.header(CAP - 16, 32)
    lane.begin_at(CAP - 16)
    lane.publish(CAP + 64)
    r = lane.reader()
    with pytest.raises(CorruptFrame, match="runs past"):
        r.poll()


def test_reader_goes_on_after_corruption(lane) -> None:
    lane.header(0, MAX + 1)
    lane.publish(64, 1)
    r = lane.reader()
    with pytest.raises(CorruptFrame):
        r.poll_many(10)
    w = LaneWriter(Segment.attach(lane.name, KIND_LANE, writable=True))
    w.publish(b"after")
    assert r.poll() == b"after"
    w.close()


def test_poll_many_returns_good_frames_then_raises(lane) -> None:
    w = LaneWriter(Segment.attach(lane.name, KIND_LANE, writable=True))
    r = lane.reader()
    w.publish_many([b"one", b"two"])
    lane.header(w.position, MAX + 1)  # a third 'frame' the writer never wrote
    lane.publish(w.position + 16, 3)
    assert r.poll_many(10) == [b"one", b"two"]
    with pytest.raises(CorruptFrame):
        r.poll_many(10)
    assert lane.state.corrupt == 1
    w.close(final=False)


def test_impossible_tail_after_a_garbage_reservation(lane) -> None:
    lane.header(0, 8)
    lane.publish(16, 1)
    lane.seg.q[LANE_RESERVED_Q] = 1 << 60  # 'everything was overwritten'
    r = lane.reader()
    with pytest.raises(CorruptFrame, match="impossible tail"):
        r.poll()
    assert r.poll() is None


def test_cursor_moving_backwards_reads_nothing(lane) -> None:
    lane.header(0, 8)
    lane.publish(frame_bytes(8), 1)
    r = lane.reader()
    assert r.poll() == bytes(8)
    lane.publish(0, 0)
    with pytest.raises(CorruptFrame, match="impossible write cursor"):  # once, counted
        r.poll()
    assert r.poll() is None and r.poll_many(5) == [] and r.poll_view() is None
    assert lane.state.corrupt == 1 and r.position == frame_bytes(8)


# -- fuzz ------------------------------------------------------------------------------
words = st.one_of(st.integers(0, 4 * CAP), st.integers(0, (1 << 64) - 1), st.just(WRAP_MARKER))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ring=st.binary(min_size=CAP, max_size=CAP),
    headers=st.lists(st.tuples(st.integers(0, CAP // 8 - 1), words), max_size=16),
    cursor=words,
    count=words,
    reserved=words,
    tail=st.lists(words, min_size=9, max_size=9),
    start=st.sampled_from(["begin", "end"]),
    calls=st.lists(st.sampled_from(["poll", "poll_many", "poll_view"]), min_size=1, max_size=12),
)
def test_fuzz_random_ring_contents(lane, ring, headers, cursor, count, reserved, tail, start,
                                   calls) -> None:  # fmt: skip
    """Random bytes and random words in the ring and its header: every read returns at
    most max_message bytes taken from the ring, or None, or raises CorruptFrame."""
    seg = lane.seg
    seg.mm[LANE_DATA_OFF : LANE_DATA_OFF + CAP] = ring
    for index, value in headers:
        seg.q[DQ0 + index] = value
    seg.q[LANE_WRITE_Q] = cursor
    seg.q[LANE_COUNT_Q] = count
    seg.q[LANE_RESERVED_Q] = reserved
    seg.q[LANE_TAIL_VERSION_Q] = tail[0]
    for i, value in enumerate(tail[1:]):
        seg.q[LANE_TAIL_RECORDS_OFF // 8 + i] = value
    ring_now = bytes(seg.mm[LANE_DATA_OFF : LANE_DATA_OFF + CAP])
    try:
        r = lane.reader(start)
    except CorruptFrame:
        return
    try:
        for call in calls:
            try:
                if call == "poll_many":
                    got = r.poll_many(7)
                else:
                    one = getattr(r, call)()
                    got = [] if one is None else [bytes(one)]
                    r.release()
            except CorruptFrame:
                continue
            for data in got:
                assert len(data) <= MAX
                assert data in ring_now  # taken from the ring, nowhere else
    finally:
        r.close()
