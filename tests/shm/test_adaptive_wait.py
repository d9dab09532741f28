"""The default (adaptive) wait across processes: at a moderate, bursty rate the consumer
sleeps through the gaps and uses little CPU; with back-to-back traffic it keeps spinning
(it seldom sleeps). Each case reads with the real driver on a real lane."""

from __future__ import annotations

import time

import shm_workers
from shm_workers import payload

from mycelium.client.waiting import ADAPTIVE_SPIN_MAX_S

CHILD_S = shm_workers.CHILD_DEADLINE_S


def read_while(shm, children, publish_all) -> tuple[int, float, float, int, int]:
    """Start an adaptive reader, run ``publish_all(writer)``, return its report."""
    lane = shm.lane(capacity=1 << 22, max_message=600)
    c = shm.consumer()
    ready, out = children.event(), children.queue()
    n = publish_all(None)
    proc = children.start(shm_workers.read_adaptive, lane, c, n, ready, out)
    w = shm.writer(lane, (c,))
    assert ready.wait(CHILD_S)
    publish_all(w)
    kind, got, cpu_s, wall_s, waits, sleeps = out.get(timeout=CHILD_S + 10)
    assert children.join(proc) == 0
    assert kind == "adaptive" and got == n
    return got, cpu_s, wall_s, waits, sleeps


def test_a_moderate_bursty_rate_costs_the_consumer_little_cpu(shm, children) -> None:
    """25,000 msg/s of 512 B in bursts of 50 every 2 ms: today's fixed spin-and-yield
    budget takes a third to a half of a core here; the adaptive one sleeps the gaps."""
    bursts, size = 400, 50

    def publish_all(w) -> int:
        if w is not None:
            body = payload(0, 512)
            for _ in range(bursts):
                for _ in range(size):
                    w.publish(body)
                time.sleep(0.002)  # pacing the producer, not waiting for a condition
        return bursts * size

    _, cpu_s, wall_s, waits, sleeps = read_while(shm, children, publish_all)
    busy = cpu_s / wall_s
    # ~5% on a quiet box; 20% leaves a loaded 2-core box its margin and still fails a
    # consumer that spins or yields through each 2 ms gap.
    assert busy < 0.20, f"the consumer used {busy:.0%} of a core ({waits} waits, {sleeps} slept)"
    assert sleeps >= bursts // 2, f"only {sleeps} of {bursts} gaps were slept through"


def test_back_to_back_traffic_keeps_spinning(shm, children) -> None:
    """A message every ~5 us: each wait ends within microseconds, so it spins them out.
    A loaded box deschedules the writer now and then; each such stall may cost the reader
    a sleep or two (it slept the stall, then relearns), every other wait must spin."""
    n = 20_000
    stalls = 0

    def publish_all(w) -> int:
        nonlocal stalls
        if w is not None:
            body = payload(0, 64)
            last = time.perf_counter()
            for _ in range(n):
                w.publish(body)
                now = time.perf_counter()
                stalls += now - last > ADAPTIVE_SPIN_MAX_S / 2
                last = end = now + 5e-6
                while time.perf_counter() < end:
                    pass
        return n

    _, _, _, waits, sleeps = read_while(shm, children, publish_all)
    assert waits > n // 20, f"the reader hardly waited ({waits} waits): nothing was tested"
    assert sleeps <= 2 * stalls + waits // 10, f"{sleeps} of {waits} waits slept, {stalls} stalls"
