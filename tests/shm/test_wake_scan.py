"""On a lane with more than ``WAKE_SCAN_EACH_UP_TO`` doorbells the writer scans the
"sleeping" flags every k publishes, k following what the scans see (gating.py).
Forbidden whatever the interleaving: a sleeping reader left unrung for more than
``WAKE_SCAN_MAX`` publishes, and a paced writer (publishes further apart than
``WAKE_GAP_S``) that does not ring on the very next publish."""

from __future__ import annotations

import itertools
import time

import shm_workers
from shm_kit import ShmKit
from shm_workers import payload

from mycelium.shm import ConsumerState, LaneWriter
from mycelium.shm.gating import WAKE_GAP_S, WAKE_SCAN_EACH_UP_TO, WAKE_SCAN_MAX

#: Enough consumers that the writer samples their flags instead of loading each per publish.
READERS = WAKE_SCAN_EACH_UP_TO + 2


def pause(seconds: float) -> None:
    """Pace the writer: let ``seconds`` go by between two publishes."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def streaming_lane(shm: ShmKit) -> tuple[LaneWriter, ConsumerState]:
    """A writer gating on READERS consumers that has streamed long enough for its scan
    interval to reach the maximum; returns it and the state of its first consumer."""
    lane = shm.lane(lossy=True)
    consumers = [shm.consumer() for _ in range(READERS)]
    states = [shm.state(c) for c in consumers]
    for state in states:
        shm.reader(lane, state)
    w = shm.writer(lane, tuple(consumers))
    for _ in range(10 * WAKE_SCAN_MAX):
        w.publish(b"x")
    assert all(state.doorbell.value == 0 for state in states)  # awake: no syscall
    return w, states[0]


def test_a_streaming_writer_rings_a_sleeper_within_the_scan_bound(shm) -> None:
    w, state = streaming_lane(shm)
    state.set_sleeping(True)
    try:
        late = 0
        while state.doorbell.value == 0:
            w.publish(b"x")
            late += 1
            assert late <= WAKE_SCAN_MAX, "a sleeping reader went unrung past the bound"
        for _ in range(3):  # found asleep: from now on every publish rings it
            w.publish(b"x")
        assert state.doorbell.value == 4
    finally:
        state.set_sleeping(False)


def test_a_paced_writer_rings_on_the_next_publish(shm) -> None:
    w, state = streaming_lane(shm)
    for _ in range(WAKE_SCAN_MAX + 1):  # slowing down: the interval falls back to 1
        pause(2 * WAKE_GAP_S)
        w.publish(b"x")
    state.set_sleeping(True)
    try:
        pause(2 * WAKE_GAP_S)
        w.publish(b"x")
        assert state.doorbell.value == 1, "a paced publish did not ring the sleeper"
    finally:
        state.set_sleeping(False)


def test_a_reader_sleeping_whenever_caught_up_is_always_rung(shm, children) -> None:
    """The reader blocks on its doorbell each time it catches up, and only a ring can wake
    it (its safety timeout is the deadline), while the writer streams at full speed to it
    and idle consumers, then slows to a paced tail. Forbidden: a stall (a sleeper never
    rung), and a message lost, repeated, reordered or torn."""
    stream, tail = 30_000, 2 * WAKE_SCAN_MAX + 1
    lane = shm.lane(capacity=1 << 23, max_message=256, lossy=True)  # never lapped here
    c = shm.consumer()
    idle = [shm.consumer() for _ in range(READERS - 1)]
    ready, out = children.event(), children.queue()
    proc = children.start(shm_workers.read_all_doorbell_only, lane, c, stream + tail, ready, out)
    w = shm.writer(lane, (c, *idle))
    assert ready.wait(shm_workers.CHILD_DEADLINE_S)
    for seq in range(stream):
        w.publish(payload(seq, 16 + seq % 200))
    for seq in range(stream, stream + tail):
        time.sleep(1e-3)  # pacing the writer (not waiting for a condition)
        w.publish(payload(seq, 16))
    kind, seqs, sleeps = out.get(timeout=shm_workers.CHILD_DEADLINE_S + 10)
    assert children.join(proc) == 0
    assert kind == "read" and len(seqs) == stream + tail, f"stalled after {len(seqs)} messages"
    assert seqs[0] == 0 and all(b == a + 1 for a, b in itertools.pairwise(seqs))
    assert sleeps >= tail // 4, f"the race was not exercised: {sleeps} sleeps"
