"""Backpressure: a lossless writer never overwrites unread bytes; it waits, bounded, then
raises BackpressureTimeout having written nothing."""

from __future__ import annotations

import signal
import time

import pytest
import shm_workers
from harness import wait_for
from shm_workers import check, payload

from mycelium.errors import BackpressureTimeout
from mycelium.shm.layout import frame_bytes


def test_timeout_writes_nothing_and_the_reader_gets_exactly_what_came_before(shm) -> None:
    lane = shm.lane(capacity=4096, max_message=100)
    c = shm.consumer()
    r = shm.reader(lane, shm.state(c))
    w = shm.writer(lane, (c,), backpressure_timeout_s=0.05)
    sent = 0
    t0 = time.monotonic()
    with pytest.raises(BackpressureTimeout) as info:
        while sent < 1000:
            w.publish(payload(sent, 100))
            sent += 1
    assert time.monotonic() - t0 >= 0.05
    assert info.value.needed > 0
    assert sent == 4096 // frame_bytes(100)
    count, position = w.count, w.position
    with pytest.raises(BackpressureTimeout):  # again: still nothing written
        w.publish(payload(sent, 100))
    assert (w.count, w.position) == (count, position)
    got = []
    while (d := r.poll()) is not None:
        got.append(check(d))
    assert got == list(range(sent))


@pytest.mark.parametrize("sizes", ["equal", "mixed"])
def test_publish_many_reports_how_many_it_published_before_timing_out(shm, sizes) -> None:
    lane = shm.lane(capacity=4096, max_message=100)
    c = shm.consumer()
    r = shm.reader(lane, shm.state(c))
    w = shm.writer(lane, (c,), backpressure_timeout_s=0)
    items = [payload(s, 50 if sizes == "equal" else 12 + s) for s in range(80)]
    with pytest.raises(BackpressureTimeout) as info:
        w.publish_many(items)
    published = info.value.published
    assert 0 < published < len(items) and w.count == published
    assert [check(d) for d in r.poll_many(1000)] == list(range(published))
    w.publish_many(items[published:])  # the rest goes once the reader made room
    assert [check(d) for d in r.poll_many(1000)] == list(range(published, len(items)))


def test_a_waiting_writer_goes_on_when_a_reader_in_another_process_reads(shm, children) -> None:
    """The writer waits for the reader (never overruns it) rather than timing out."""
    lane = shm.lane(capacity=4096, max_message=200)
    c = shm.consumer()
    out = children.queue()
    reader = children.start(shm_workers.read_seq, lane, c, "begin", 20_000, out, "reader", 7)
    writer = children.start(shm_workers.write_seq, lane, [c], 20_000, 12, 200, 16, out, 10.0)
    results = dict(out.get(timeout=60) for _ in range(2))
    assert children.join(writer) == 0 and children.join(reader) == 0
    res = results["reader"]
    assert results["writer"] == 20_000
    assert res["got"] == 20_000 and res["last"] == 20_000 and res["problems"] == []
    assert res["lost"] == 0 and res["corrupt"] == 0


def test_a_dead_reader_stops_holding_the_writer_back(shm, children) -> None:
    lane = shm.lane(capacity=4096, max_message=100)
    go, ready = children.event(), children.event()
    c = shm.consumer_names()
    proc = children.start(shm_workers.block_idle, lane, c, 60.0, go, ready)
    shm.consumer(pid=proc.pid, names=c)  # liveness is judged by the pid in the segment
    go.set()
    assert ready.wait(30)
    w = shm.writer(lane, (c,), backpressure_timeout_s=10)
    view = w.readers[0]
    wait_for(lambda: view.find_slot(w.lane_uid) is not None, what="the reader's slot")
    proc.kill()
    assert children.join(proc) == -signal.SIGKILL
    t0 = time.monotonic()
    for s in range(200):  # several laps: only possible once the dead gate is dropped
        w.publish(payload(s, 100))
    assert time.monotonic() - t0 < 5
    assert w.readers == []


def test_a_reader_known_before_it_claims_is_gated_from_that_moment(shm) -> None:
    """set_readers() before the consumer claims its slot: nothing published after it is
    overwritten before the consumer joins, even if it joins late."""
    lane = shm.lane(capacity=4096, max_message=100)
    c = shm.consumer()
    w = shm.writer(lane, backpressure_timeout_s=0)
    for s in range(50):
        w.publish(payload(s, 100))
    w.set_readers([shm.view(c)])  # pending: gated at the current position
    start = w.count
    sent = start
    with pytest.raises(BackpressureTimeout):
        while True:
            w.publish(payload(sent, 100))
            sent += 1
    r = shm.reader(lane, shm.state(c), start="begin")
    got = [check(d) for d in r.poll_many(1000)]
    assert got[-(sent - start) :] == list(range(start, sent))
