"""The lane in one process: frames, wraps, batches, views, joins, counts, resume."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shm_kit import ShmKit, new_broker_id
from shm_workers import check, payload, size_for

from mycelium.errors import BackpressureTimeout, MessageTooLarge, SegmentError
from mycelium.shm import LaneReader, LaneWriter, Segment
from mycelium.shm.lane_header import create_lane_segment
from mycelium.shm.layout import (
    FRAME_HEADER_BYTES,
    KIND_LANE,
    LANE_DATA_OFF,
    WRAP_MARKER,
    frame_bytes,
)
from mycelium.shm.runs import READER_RUN_MIN_FRAMES, WRITER_RUN_MIN_ITEMS


def drain(reader: LaneReader, limit: int = 10**7) -> list[bytes]:
    out: list[bytes] = []
    while len(out) < limit:
        batch = reader.poll_many(1024)
        if not batch:
            return out
        out += batch
    return out


def test_roundtrip_every_size_up_to_max(shm) -> None:
    lane = shm.lane(capacity=4096, max_message=256)
    c = shm.consumer()
    r = shm.reader(lane, shm.state(c))
    w = shm.writer(lane, (c,))
    for n in range(257):
        msg = bytes([n % 251]) * n
        w.publish(msg)
        assert r.poll() == msg
        assert r.poll() is None
    assert r.count == w.count == 257


def test_too_large_writes_nothing(shm) -> None:
    lane = shm.lane(capacity=4096, max_message=100)
    c = shm.consumer()
    r = shm.reader(lane, shm.state(c))
    w = shm.writer(lane, (c,))
    with pytest.raises(MessageTooLarge) as info:
        w.publish(b"x" * 101)
    assert (info.value.size, info.value.max_size) == (101, 100)
    with pytest.raises(MessageTooLarge):
        w.publish_many([b"a", b"x" * 101])
    with pytest.raises(MessageTooLarge):
        w.publish_many([b"x" * 101] * WRITER_RUN_MIN_ITEMS)
    assert w.count == 0 and w.position == 0
    assert r.poll() is None


def test_wrap_at_every_offset_and_length(shm) -> None:
    """For every 8-byte offset of the ring and every payload length mod 8, a frame that
    does not fit before the end wraps (or fits exactly) and reads back intact."""
    cap, max_msg = 512, 64
    lane = shm.lane(capacity=cap, max_message=max_msg)
    c = shm.consumer()
    r = shm.reader(lane, shm.state(c))
    w = shm.writer(lane, (c,))
    seg = Segment.attach(lane, KIND_LANE)
    wrapped_at = set()
    seq = 0
    # Every offset a frame can end at (none ends at 8 or 16: a header alone is 24 bytes).
    targets = [0, *range(FRAME_HEADER_BYTES, cap, 8)]
    for target in targets:
        for length in range(56, 64):  # frame 80..88 bytes: every residue mod 8
            # Position the writer at `target` with filler frames.
            while w.position % cap != target:
                off = w.position % cap
                gap = target - off
                if gap < FRAME_HEADER_BYTES:  # behind us or too close: finish the lap
                    gap = cap - off
                room = min(gap, frame_bytes(max_msg))
                if 0 < gap - room < FRAME_HEADER_BYTES:  # leave a gap a frame can fill
                    room -= FRAME_HEADER_BYTES
                w.publish(b"f" * max(room - FRAME_HEADER_BYTES, 0))  # < a header: it wraps
                assert r.poll() is not None
            before = w.position
            w.publish(payload(seq, length))
            if w.position - before > frame_bytes(length):
                marker = int.from_bytes(
                    seg.mm[LANE_DATA_OFF + target : LANE_DATA_OFF + target + 8], "little"
                )
                assert marker == WRAP_MARKER
                wrapped_at.add(target)
            assert check(r.poll()) == seq
            seq += 1
    seg.close()
    # Every offset where the longest of those frames cannot fit saw a wrap marker.
    assert wrapped_at == {t for t in targets if t + frame_bytes(63) > cap}


def test_publish_many_equal_sizes_uses_one_run(shm) -> None:
    lane = shm.lane(capacity=1 << 17, max_message=256)
    c = shm.consumer()
    r = shm.reader(lane, shm.state(c))
    w = shm.writer(lane, (c,))
    for n in (0, 1, 7, 8, 13, 64, 255):
        items = [bytes([i % 256]) * n for i in range(300)]
        assert w.publish_many(items) == 300
        assert drain(r) == items
    assert r.count == w.count == 7 * 300


def test_publish_many_runs_across_laps(shm) -> None:
    """Equal-size runs larger than the ring: each lap is its own numpy copy, wraps included."""
    lane = shm.lane(capacity=4096, max_message=100)
    c = shm.consumer()
    state = shm.state(c)
    r = shm.reader(lane, state)
    w = shm.writer(lane, (c,), backpressure_timeout_s=0)
    got: list[bytes] = []
    for round_ in range(50):
        items = [payload(round_ * 40 + i, 60) for i in range(40)]
        w.publish_many(items)
        got += drain(r)
    assert [check(d) for d in got] == list(range(2000))


def test_publish_many_mixed_sizes(shm) -> None:
    lane = shm.lane(capacity=4096, max_message=200)
    c = shm.consumer()
    r = shm.reader(lane, shm.state(c))
    w = shm.writer(lane, (c,))
    seq = 0
    for _ in range(200):
        items = [payload(s, size_for(s, 12, 200)) for s in range(seq, seq + 13)]
        w.publish_many(items)
        assert [check(d) for d in drain(r)] == list(range(seq, seq + 13))
        seq += 13


def test_poll_many_stops_a_run_where_sizes_change(shm) -> None:
    lane = shm.lane(capacity=1 << 16, max_message=256)
    c = shm.consumer()
    r = shm.reader(lane, shm.state(c))
    w = shm.writer(lane, (c,))
    items = [b"a" * 16] * (READER_RUN_MIN_FRAMES + 3) + [b"b" * 17] + [b"c" * 16] * 40
    for it in items:
        w.publish(it)
    assert r.poll_many(5) == items[:5]
    assert drain(r) == items[5:]


def test_publish_array_rows_are_messages(shm) -> None:
    lane = shm.lane(capacity=1 << 14, max_message=64)
    c = shm.consumer()
    r = shm.reader(lane, shm.state(c))
    w = shm.writer(lane, (c,))
    rows = np.arange(500 * 24, dtype=np.uint32).astype(np.uint8).reshape(500, 24)
    got = []
    for chunk in np.array_split(rows, 10):
        assert w.publish_array(np.ascontiguousarray(chunk)) == len(chunk)
        got += drain(r)
    assert got == [row.tobytes() for row in rows]
    with pytest.raises(ValueError):
        w.publish_array(rows.astype(np.int16))
    with pytest.raises(MessageTooLarge):
        w.publish_array(np.zeros((2, 65), np.uint8))


def test_view_is_zero_copy_read_only_and_holds_the_writer_back(shm) -> None:
    lane = shm.lane(capacity=4096, max_message=1000)
    c = shm.consumer()
    r = shm.reader(lane, shm.state(c))
    w = shm.writer(lane, (c,), backpressure_timeout_s=0)
    w.publish(b"first" * 100)
    view = r.poll_view()
    assert bytes(view) == b"first" * 100
    with pytest.raises(TypeError):
        view[0] = 0
    # While the view is out the writer cannot reuse its bytes: it fills the rest, then stops.
    with pytest.raises(BackpressureTimeout):
        for i in range(100):
            w.publish(bytes([i]) * 1000)
    assert bytes(view) == b"first" * 100
    r.release()
    assert [d[0] for d in drain(r)] == [0, 1, 2]
    w.publish(b"z" * 1000)  # every byte is free again, the view's included
    assert r.poll() == b"z" * 1000
    assert r.poll_view() is None


def test_reader_joining_at_end_gets_only_new_messages_with_exact_count(shm) -> None:
    lane = shm.lane(capacity=1 << 14, max_message=200)
    w = shm.writer(lane)
    for s in range(5000):  # many laps: the head checkpoint is somewhere behind the cursor
        w.publish(payload(s, size_for(s, 12, 200)))
    state = shm.state(shm.consumer())
    r = shm.reader(lane, state, start="end")
    assert r.count == w.count == 5000
    assert r.poll() is None and r.backlog() == 0
    w.set_readers([shm.view((state.seg.name, state.doorbell.name))])
    for s in range(5000, 5100):
        w.publish(payload(s, size_for(s, 12, 200)))
    assert [check(d) for d in drain(r)] == list(range(5000, 5100))
    assert state.received() == 100 and state.lost == 0


def test_reader_joining_at_begin_of_a_lapped_lane_reads_from_the_tail(shm) -> None:
    lane = shm.lane(capacity=1 << 13, max_message=200)
    w = shm.writer(lane)
    for s in range(3000):
        w.publish(payload(s, size_for(s, 12, 200)))
    state = shm.state(shm.consumer())
    r = shm.reader(lane, state, start="begin")
    first = r.count
    assert 0 < first < 3000
    got = [check(d) for d in drain(r)]
    assert got == list(range(first, 3000))  # oldest intact frame onwards, nothing torn
    assert state.lost == 0 and state.received() == len(got)


def test_begin_on_a_fresh_lane_gets_everything(shm) -> None:
    lane = shm.lane()
    w = shm.writer(lane)
    items = [payload(s, 40) for s in range(100)]
    w.publish_many(items)
    r = shm.reader(lane, shm.state(shm.consumer()), start="begin")
    assert drain(r) == items


def test_several_readers_gate_on_the_slowest(shm) -> None:
    lane = shm.lane(capacity=4096, max_message=100)
    fast_c, slow_c = shm.consumer(), shm.consumer()
    fast = shm.reader(lane, shm.state(fast_c))
    slow = shm.reader(lane, shm.state(slow_c))
    w = shm.writer(lane, (fast_c, slow_c), backpressure_timeout_s=0)
    sent = 0
    with pytest.raises(BackpressureTimeout):
        while True:
            w.publish(payload(sent, 100))
            sent += 1
            assert fast.poll() is not None
    assert sent == 4096 // frame_bytes(100)
    assert [check(d) for d in drain(slow)] == list(range(sent))
    w.publish(payload(sent, 100))  # the slow one caught up: room again


def test_writer_resumes_where_the_lane_stands(shm) -> None:
    lane = shm.lane(capacity=4096, max_message=100)
    c = shm.consumer()
    r = shm.reader(lane, shm.state(c))
    w = shm.writer(lane, (c,))
    for s in range(100):
        w.publish(payload(s, 50))
        assert check(r.poll()) == s
    w.close(final=False)
    assert not r.closed
    w2 = shm.writer(lane, (c,))
    assert w2.count == 100
    for s in range(100, 300):
        w2.publish(payload(s, 50))
        assert check(r.poll()) == s
    w2.close()
    assert r.closed and r.drained()


def test_backlog_drained_and_counts(shm) -> None:
    lane = shm.lane()
    c = shm.consumer()
    state = shm.state(c)
    r = shm.reader(lane, state)
    w = shm.writer(lane, (c,))
    w.publish_many([b"x"] * 10)
    assert r.backlog() == 10 and not r.drained()
    r.poll_many(4)
    assert r.backlog() == 6
    drain(r)
    assert r.backlog() == 0 and r.drained() and state.received() == 10


@pytest.mark.parametrize(
    "entry",
    [
        lambda w: w.publish_many([b"a", b"b"]),
        lambda w: w.publish(b"a"),
        lambda w: w.publish_array(np.zeros((2, 8), np.uint8)),
    ],
    ids=["publish_many", "publish", "publish_array"],
)
def test_writer_refuses_a_second_thread(shm, entry) -> None:
    w = shm.writer(shm.lane())
    w.publish(b"first")  # the owner's publish has passed its limit: the check is not a claim's
    errors = []

    def other() -> None:
        try:
            entry(w)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join(10)
    assert errors and "single-writer" in str(errors[0])
    assert w.count == 1  # nothing written


def test_bad_geometry_is_refused(shm) -> None:
    with pytest.raises(ValueError):
        create_lane_segment(f"/myc-{shm.broker_id}-Lbad", 3000, 100, 1, 1)
    with pytest.raises(ValueError):
        create_lane_segment(f"/myc-{shm.broker_id}-Lbad", 256, 100, 1, 1)  # < 4 frames
    with pytest.raises(ValueError):
        create_lane_segment(f"/myc-{shm.broker_id}-Lbad", 4096, 100, 0, 1)
    assert shm.leftovers() == []


def test_writer_needs_a_writable_mapping(shm) -> None:
    lane = shm.lane()
    seg = Segment.attach(lane, KIND_LANE)
    with pytest.raises(SegmentError):
        LaneWriter(seg)
    seg.close()


ops = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(12, 200)),
        st.tuples(st.just("many"), st.integers(1, 40), st.booleans()),
        st.tuples(st.just("read"), st.integers(1, 50)),
        st.tuples(st.just("resume"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(schedule=ops, capacity=st.sampled_from([1024, 4096]), lossy=st.booleans())
def test_random_schedules_deliver_in_order_and_count_every_loss(schedule, capacity, lossy):
    """Any interleaving of publishes, batches, reads and writer restarts: a lossless reader
    gets every message once and in order; a lossy one a subsequence, the rest in ``lost``."""
    shm = ShmKit(new_broker_id())  # one per example: each example's mappings are closed
    try:
        run_schedule(shm, schedule, capacity, lossy)
    finally:
        shm.teardown()


def run_schedule(shm, schedule, capacity: int, lossy: bool) -> None:
    lane = shm.lane(capacity=capacity, max_message=200, lossy=lossy)
    c = shm.consumer()
    state = shm.state(c)
    r = shm.reader(lane, state)
    w = shm.writer(lane, (c,), backpressure_timeout_s=0)
    seq = 0
    got: list[int] = []

    def send(items: list[bytes]) -> None:
        nonlocal seq
        try:
            seq += w.publish_many(items)
        except BackpressureTimeout as exc:
            seq += exc.published

    for op in schedule:
        if op[0] == "publish":
            send([payload(seq, op[1])])
        elif op[0] == "many":
            size = size_for(seq, 12, 200)
            send([payload(seq + i, size if op[2] else size_for(seq + i, 12, 200))
                  for i in range(op[1])])  # fmt: skip
        elif op[0] == "read":
            got += [check(d) for d in r.poll_many(op[1])]
        else:
            w.close(final=False)
            w = shm.writer(lane, (c,), backpressure_timeout_s=0)
    got += [check(d) for d in drain(r)]
    assert w.count == seq
    if lossy:
        assert got == sorted(set(got))
        assert state.lost + len(got) == seq
    else:
        assert got == list(range(seq)) and state.lost == 0


def test_a_view_outlives_closing_its_reader(shm) -> None:
    lane = shm.lane()
    c = shm.consumer()
    r = LaneReader(Segment.attach(lane, KIND_LANE), shm.state(c))
    w = shm.writer(lane, (c,))
    w.publish(b"kept")
    view = r.poll_view()
    r.close()  # the mapping stays until the view is dropped
    assert bytes(view) == b"kept"
    view.release()
