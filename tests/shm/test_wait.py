"""Waiting: spin, yield, block; the doorbell rings only for a sleeping reader; an idle
blocked reader costs ~0% CPU; a busy one makes no syscall."""

from __future__ import annotations

import statistics
import time

import posix_ipc
import psutil
import pytest
import shm_workers
from harness import wait_for
from shm_workers import STAMP, wait_until

from mycelium.client import waiting
from mycelium.shm import ConsumerStateView, WaitStrategy
from mycelium.shm.gating import WAKE_SCAN_MAX


class CountingBell:
    """A doorbell stand-in that counts acquires (a syscall when it blocks)."""

    def __init__(self, bell: posix_ipc.Semaphore) -> None:
        self.bell = bell
        self.acquires = 0

    def acquire(self, timeout: float | None = None) -> None:
        self.acquires += 1
        self.bell.acquire(timeout)

    @property
    def value(self) -> int:
        return self.bell.value


@pytest.mark.parametrize("strategy", list(WaitStrategy))
def test_a_reader_that_finds_data_never_yields_or_sleeps(shm, monkeypatch, strategy) -> None:
    lane = shm.lane()
    c = shm.consumer()
    state = shm.state(c)
    r = shm.reader(lane, state)
    w = shm.writer(lane, (c,))
    yields = []
    monkeypatch.setattr(waiting.os, "sched_yield", lambda: yields.append(1))
    bell = CountingBell(state.doorbell)
    monkeypatch.setattr(state, "doorbell", bell)
    w.publish_many([b"m%d" % i for i in range(1000)])
    got = [wait_until(r.poll, state, time.monotonic() + 5, strategy) for _ in range(1000)]
    assert got == [b"m%d" % i for i in range(1000)]
    assert yields == [] and bell.acquires == 0 and not state.sleeping


@pytest.mark.parametrize("strategy", list(WaitStrategy))
def test_every_strategy_gives_up_at_the_deadline(shm, strategy) -> None:
    state = shm.state(shm.consumer())
    r = shm.reader(shm.lane(), state)
    t0 = time.monotonic()
    assert wait_until(r.poll, state, t0 + 0.05, strategy, spins=10, yields=10) is None
    assert 0.05 <= time.monotonic() - t0 < 2
    assert not state.sleeping


def test_strategy_accepts_config_strings(shm) -> None:
    state = shm.state(shm.consumer())
    r = shm.reader(shm.lane(), state)
    assert wait_until(r.poll, state, time.monotonic() + 0.01, "spin") is None


def test_writer_rings_only_a_sleeping_reader(shm) -> None:
    lane = shm.lane()
    c = shm.consumer()
    state = shm.state(c)
    shm.reader(lane, state)
    w = shm.writer(lane, (c,))
    bell = state.doorbell
    w.publish_many([b"x"] * 100)
    for _ in range(100):
        w.publish(b"x")
    assert bell.value == 0  # awake: no syscall for the writer
    state.set_sleeping(True)
    w.publish_many([b"y", b"z"])
    assert bell.value == 1  # asleep: a batch rings at once
    for _ in range(WAKE_SCAN_MAX):
        w.publish(b"x")
    assert bell.value >= 2  # and single publishes within the scan bound (test_wake_scan)
    state.set_sleeping(False)


def test_rings_posted_while_waking_are_taken_back(shm) -> None:
    lane = shm.lane()
    c = shm.consumer()
    state = shm.state(c)
    r = shm.reader(lane, state)
    for _ in range(5):
        state.doorbell.release()  # as a busy writer would while our flag was up
    w = shm.writer(lane, (c,))
    w.publish(b"x")
    assert wait_until(r.poll, state, time.monotonic() + 1, WaitStrategy.BLOCK, spins=0, yields=0)
    assert wait_until(r.poll, state, time.monotonic() + 0.05, spins=0, yields=0) is None
    assert state.doorbell.value == 0


def test_idle_blocked_reader_uses_almost_no_cpu(shm, children) -> None:
    lane = shm.lane()
    go, ready = children.event(), children.event()
    c = shm.consumer_names()
    proc = children.start(shm_workers.block_idle, lane, c, 2.5, go, ready)
    shm.consumer(pid=proc.pid, names=c)
    go.set()
    assert ready.wait(30)
    view = ConsumerStateView.attach(*c)
    wait_for(lambda: view.sleeping, what="the reader to block")
    child = psutil.Process(proc.pid)
    # Settled: a few block cycles (each a voluntary switch) have gone by since it blocked.
    blocked_at = child.num_ctx_switches().voluntary
    wait_for(lambda: child.num_ctx_switches().voluntary >= blocked_at + 5, what="block cycles")
    child.cpu_percent(None)
    busy = child.cpu_percent(interval=2.0)
    view.close()
    # A spinning or yielding reader takes most of a core; 10% is a loaded box's margin.
    assert busy < 10.0, f"an idle blocked reader used {busy}% CPU"
    assert children.join(proc) == 0


def test_doorbell_wakes_a_blocked_reader_quickly(shm, children) -> None:
    """The child's safety timeout is raised to a minute: only the doorbell can wake it."""
    lane = shm.lane()
    c = shm.consumer()
    out = children.queue()
    trials = 20
    proc = children.start(shm_workers.wake_latency, lane, c, trials, out)
    w = shm.writer(lane, (c,))
    view = w.readers[0]
    for i in range(trials):
        wait_for(lambda: view.sleeping, what="the reader to block")
        w.publish(STAMP.pack(time.perf_counter_ns()))
        wait_for(lambda i=i: view.received() > i, what="the reader to wake")
    _, lat = out.get(timeout=60)
    assert children.join(proc) == 0
    assert len(lat) == trials
    # Only the doorbell wakes it within its minute-long timeout; 50 ms of median is a loaded
    # 2-core box's scheduling margin (the latency itself is measured by tools/bench_ring.py).
    assert statistics.median(lat) < 50e6 and max(lat) < 1e9, f"wake-up latencies (ns): {lat}"


def test_a_signal_during_the_doorbell_wait_is_a_wake_up_not_an_error(shm) -> None:
    """A handled signal interrupts sem_timedwait (posix_ipc raises SignalError); the
    blocked reader must run the handler and keep waiting, then get the message."""
    import os
    import signal
    import threading

    lane = shm.lane()
    c = shm.consumer()
    state = shm.state(c)
    r = shm.reader(lane, state)
    seen = []
    old = signal.signal(signal.SIGUSR1, lambda *_: seen.append(1))

    def disturb_then_publish() -> None:
        w = shm.writer(lane, (c,))  # a writer belongs to the thread that made it
        wait_for(lambda: state.sleeping, 5, "the reader to block")
        os.kill(os.getpid(), signal.SIGUSR1)
        wait_for(lambda: seen, 5, "the signal handler to run")
        w.publish(b"after the signal")

    t = threading.Thread(target=disturb_then_publish)
    try:
        t.start()
        got = wait_until(
            r.poll, state, time.monotonic() + 10, WaitStrategy.BLOCK, spins=0, yields=0
        )
    finally:
        t.join(10)
        signal.signal(signal.SIGUSR1, old)
    assert seen == [1]
    assert got == b"after the signal"
