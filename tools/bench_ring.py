#!/usr/bin/env python3
"""Ring benchmark: one writer process, one reader process, one lane, no broker.

How this works
--------------
The parent creates a lane and a consumer state segment under a private broker id, then
for each case spawns a writer and a reader process (``multiprocessing`` spawn), pinned
to different CPUs when there are two, and starts them together.

* Throughput: 64 B and 1 KiB frames, per message (``publish``/``poll``) and batched
  (``publish_many``/``poll_many`` of ``BATCH`` items). Each process times itself with its
  own clock, from its first to its last message, and reports msg/s.
* Latency: the writer publishes 64 B frames at a paced rate, each carrying
  ``time.perf_counter_ns()`` (CLOCK_MONOTONIC: one clock for every process); the reader
  waits with the spin, yield or block strategy (block: straight to the doorbell) and
  records arrival minus stamp. p50/p99/p99.9 and max, in microseconds.

Each row also says how much CPU other processes used while it ran ("other", % of one
core): on a shared machine that, not the ring, is what moves the tail latencies.
Every loop has a deadline; children are killed and every segment is unlinked in
``finally``, even on failure.

    python tools/bench_ring.py            # full run (about half a minute)
    python tools/bench_ring.py --quick    # smaller counts
    python tools/bench_ring.py --json     # machine-readable
    python tools/bench_ring.py --ring-mib 4   # another ring size (default 16 MiB)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import secrets
import struct
import sys
import time
from typing import Any

import numpy as np
import psutil
from bench_broker import pace_until

from mycelium.client.waiting import WaitPlan, wait_sync
from mycelium.shm import (
    ConsumerState,
    ConsumerStateView,
    LaneReader,
    LaneWriter,
    Segment,
    WaitStrategy,
    create_consumer_segment,
    create_lane_segment,
    list_segments,
    segment_name,
)
from mycelium.shm.layout import KIND_LANE
from mycelium.shm.segment import unlink_quietly

#: The market_data topic's ring (buffer_size 100000 x 128 B hint, rounded up).
RING_BYTES = 16 << 20
MAX_MESSAGE = 65536
SIZES = (64, 1024)
BATCH = 256
STAMP = struct.Struct("<q")
#: Per-case bounds: children that do not finish in time are killed and the case fails.
CASE_DEADLINE_S = 120.0
READY_TIMEOUT_S = 30.0
#: A reader polling an empty lane looks at the clock once per this many empty polls.
CLOCK_EVERY = 4096
#: Paced rates (messages/s) and sample counts for the latency cases.
LATENCY_PLAN = {
    WaitStrategy.SPIN: (5_000, 25_000),
    WaitStrategy.YIELD: (5_000, 25_000),
    WaitStrategy.BLOCK: (5_000, 25_000),
}
TARGETS = {
    "per_message_64": 2.0e6,
    "per_message_1024": 1.6e6,
    "batched_64": 10.0e6,
    "latency_p99_spin_us": 20.0,
    "latency_p99_block_us": 100.0,
}


# -- children -------------------------------------------------------------------------
def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _writer(
    names: dict[str, str], case: dict[str, Any], cpu: int | None, ready: Any, go: Any, out: Any
) -> None:
    _pin(cpu)
    writer = LaneWriter(Segment.attach(names["lane"], KIND_LANE, writable=True))
    view = ConsumerStateView.attach(names["state"], names["doorbell"])
    writer.set_readers([view])
    n, size = case["n"], case["size"]
    ready.set()
    if not go.wait(READY_TIMEOUT_S):
        return
    try:
        if case["kind"] == "latency":
            _paced(writer, n, case["rate"], size)
            out.put(("writer", {}))
            return
        deadline = time.perf_counter() + CASE_DEADLINE_S
        msg = b"x" * size
        t0 = time.perf_counter()
        if case["kind"] == "batched":
            items = [msg] * BATCH
            publish_many = writer.publish_many
            for _ in range(n // BATCH):
                publish_many(items)
        else:
            publish = writer.publish
            for done in range(0, n, CLOCK_EVERY):
                for _ in range(min(CLOCK_EVERY, n - done)):
                    publish(msg)
                if time.perf_counter() > deadline:
                    break
        t1 = time.perf_counter()
        out.put(("writer", {"msgs": writer.count, "seconds": t1 - t0}))
    finally:
        writer.close()
        view.close()


def _paced(writer: LaneWriter, n: int, rate: float, size: int) -> None:
    """Publish ``n`` stamped frames at ``rate``/s (``pace_until`` between them)."""
    period_ns = int(1e9 / rate)
    pad = b"\0" * (size - STAMP.size)
    clock = time.perf_counter_ns
    publish = writer.publish
    due = clock() + period_ns
    for _ in range(n):
        pace_until(due)
        publish(STAMP.pack(clock()) + pad)
        due += period_ns


def _reader(
    names: dict[str, str], case: dict[str, Any], cpu: int | None, ready: Any, go: Any, out: Any
) -> None:
    _pin(cpu)
    state = ConsumerState.attach(names["state"], names["doorbell"])
    reader = LaneReader(Segment.attach(names["lane"], KIND_LANE), state, start="end")
    ready.set()
    try:
        if not go.wait(READY_TIMEOUT_S):
            return
        if case["kind"] == "latency":
            out.put(("reader", _latency(reader, state, case)))
        else:
            out.put(("reader", _drain(reader, case)))
    finally:
        reader.close()
        state.close()


def _drain(reader: LaneReader, case: dict[str, Any]) -> dict[str, Any]:
    """Read ``n`` messages as fast as they come; time from the first to the last."""
    n = case["n"] if case["kind"] != "batched" else case["n"] // BATCH * BATCH
    deadline = time.monotonic() + CASE_DEADLINE_S
    got = 0
    t0 = 0.0
    idle = 0
    if case["kind"] == "batched":
        poll_many = reader.poll_many
        while got < n:
            batch = poll_many(BATCH)
            if batch:
                if not got:
                    t0 = time.perf_counter()
                got += len(batch)
            else:
                idle += 1
                if not idle % CLOCK_EVERY and time.monotonic() > deadline:
                    break
        first = BATCH
    else:
        poll = reader.poll
        while got < n:
            if poll() is not None:
                if not got:
                    t0 = time.perf_counter()
                got += 1
            else:
                idle += 1
                if not idle % CLOCK_EVERY and time.monotonic() > deadline:
                    break
        first = 1
    t1 = time.perf_counter()
    return {"msgs": got - first, "seconds": t1 - t0, "lost": reader.state.lost}


def _latency(reader: LaneReader, state: ConsumerState, case: dict[str, Any]) -> dict[str, Any]:
    """Receive ``n`` stamped frames with the case's wait strategy; one-way latency in us."""
    strategy = WaitStrategy(case["strategy"])
    plain = strategy is WaitStrategy.BLOCK  # block: straight to the doorbell, no spin phase
    spins, yields = (0, 0) if plain else (2000, 200)
    n = case["n"]
    lat = np.empty(n, np.int64)
    clock = time.perf_counter_ns
    deadline = time.monotonic() + CASE_DEADLINE_S
    got = 0
    while got < n:
        data = reader.poll()
        if data is None:
            data = wait_sync(reader.poll, state, WaitPlan(strategy, spins, yields, deadline))
        now = clock()
        if data is None:
            break
        lat[got] = now - STAMP.unpack_from(data)[0]
        got += 1
    us = lat[:got] / 1e3
    if not got:
        return {"samples": 0}
    p50, p99, p999 = (float(p) for p in np.percentile(us, [50, 99, 99.9]))
    return {"samples": got, "p50": p50, "p99": p99, "p99_9": p999, "max": float(us.max())}


# -- parent ---------------------------------------------------------------------------
def _run_case(
    ctx: Any, broker: str, index: int, case: dict[str, Any], cpus: tuple, ring_bytes: int
) -> dict[str, Any]:
    names = {
        "lane": segment_name(broker, "L", index),
        "state": segment_name(broker, "C", index),
        "doorbell": segment_name(broker, "D", index),
    }
    lane = create_lane_segment(names["lane"], ring_bytes, MAX_MESSAGE, index + 1, os.getpid())
    state = create_consumer_segment(names["state"], names["doorbell"], index + 1, os.getpid())
    lane.close()
    state.close()
    out = ctx.Queue()
    go = ctx.Event()
    procs = []
    try:
        for role, target, cpu in (("reader", _reader, cpus[1]), ("writer", _writer, cpus[0])):
            ready = ctx.Event()
            p = ctx.Process(target=target, args=(names, case, cpu, ready, go, out), name=role)
            p.start()
            procs.append(p)
            if not ready.wait(READY_TIMEOUT_S):
                raise RuntimeError(f"{role} did not start")
        meter = _OtherLoad([p.pid for p in procs])
        go.set()
        results = {}
        deadline = time.monotonic() + CASE_DEADLINE_S + READY_TIMEOUT_S
        while len(results) < 2:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"case {case} timed out")
            role, result = out.get(timeout=left)
            results[role] = result
        results["other_cpu_pct"] = meter.percent()
        for p in procs:
            p.join(timeout=READY_TIMEOUT_S)
        return results
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        unlink_quietly(names["lane"])
        unlink_quietly(names["state"])
        unlink_quietly("sem:" + names["doorbell"])


class _OtherLoad:
    """CPU used by every process but ours while a case runs, in % of one core: a figure
    taken while other work shared the CPUs says so."""

    def __init__(self, pids: list[int]) -> None:
        self._procs = [psutil.Process(pid) for pid in pids] + [psutil.Process()]
        self._start = (time.monotonic(), self._busy(), self._ours())

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0)

    def _ours(self) -> float:
        total = 0.0
        for p in self._procs:
            with contextlib.suppress(psutil.Error):
                c = p.cpu_times()
                total += c.user + c.system
        return total

    def percent(self) -> float:
        t0, busy0, ours0 = self._start
        wall = max(time.monotonic() - t0, 1e-9)
        others = (self._busy() - busy0) - (self._ours() - ours0)
        return max(0.0, 100.0 * others / wall)


def _cases(quick: bool) -> list[dict[str, Any]]:
    per_msg = 400_000 if quick else 2_000_000
    batched = 2_000_000 if quick else 10_000_000
    cases = []
    for size in SIZES:
        cases.append({"kind": "message", "size": size, "n": per_msg})
    for size in SIZES:
        cases.append({"kind": "batched", "size": size, "n": batched})
    for strategy, (rate, samples) in LATENCY_PLAN.items():
        n = samples // 5 if quick else samples
        cases.append({"kind": "latency", "size": 64, "n": n, "rate": rate, "strategy": strategy})
    return cases


def _rate(r: dict[str, Any]) -> float:
    return r["msgs"] / r["seconds"] if r.get("seconds") else 0.0


def _report(
    rows: list[tuple[dict[str, Any], dict[str, Any]]], cpus: tuple, quick: bool, ring_bytes: int
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "ring_bytes": ring_bytes,
        "batch": BATCH,
        "pinned_cpus": list(cpus) if cpus[0] is not None else None,
        "quick": quick,
        "throughput": [],
        "latency": [],
    }
    for case, res in rows:
        if case["kind"] == "latency":
            report["latency"].append({"strategy": str(case["strategy"]), "rate": case["rate"],
                                      **res["reader"], "other_cpu_pct": res["other_cpu_pct"]})  # fmt: skip
        else:
            report["throughput"].append({
                "mode": "per message" if case["kind"] == "message" else f"batched ({BATCH})",
                "size": case["size"],
                "writer_msg_s": _rate(res["writer"]),
                "reader_msg_s": _rate(res["reader"]),
                "lost": res["reader"].get("lost", 0),
                "other_cpu_pct": res["other_cpu_pct"],
            })  # fmt: skip
    report["targets"] = _check(report)
    return report


def _check(report: dict[str, Any]) -> dict[str, bool]:
    tp = {(t["mode"].split(" ")[0], t["size"]): min(t["writer_msg_s"], t["reader_msg_s"])
          for t in report["throughput"]}  # fmt: skip
    lat = {t["strategy"]: t.get("p99", float("inf")) for t in report["latency"]}
    return {
        "per message 64 B >= 2M msg/s": tp.get(("per", 64), 0) >= TARGETS["per_message_64"],
        "per message 1 KiB >= 1.6M msg/s": tp.get(("per", 1024), 0) >= TARGETS["per_message_1024"],
        "batched 64 B >= 10M msg/s": tp.get(("batched", 64), 0) >= TARGETS["batched_64"],
        "p99 spin <= 20 us": lat.get("spin", 1e9) <= TARGETS["latency_p99_spin_us"],
        "p99 block <= 100 us": lat.get("block", 1e9) <= TARGETS["latency_p99_block_us"],
    }


def _print(report: dict[str, Any]) -> None:
    cpus = report["pinned_cpus"]
    print(f"mycelium ring bench: ring {report['ring_bytes'] >> 20} MiB, writer and reader "
          f"{'pinned to CPUs ' + str(cpus) if cpus else 'not pinned'}"
          f"{', quick' if report['quick'] else ''}")  # fmt: skip
    print("(other: CPU used by other processes during the case, % of one core)")
    print(f"{'throughput':<16}{'size':>7}{'writer msg/s':>15}{'reader msg/s':>15}{'other':>8}")
    for t in report["throughput"]:
        print(f"{t['mode']:<16}{t['size']:>5} B{t['writer_msg_s'] / 1e6:>13.2f} M"
              f"{t['reader_msg_s'] / 1e6:>13.2f} M{t['other_cpu_pct']:>7.0f}%")  # fmt: skip
    print(f"{'latency 64 B':<16}{'rate/s':>7}{'samples':>9}{'p50 us':>9}{'p99 us':>9}"
          f"{'p99.9 us':>10}{'max us':>9}{'other':>8}")  # fmt: skip
    for t in report["latency"]:
        if not t.get("samples"):
            print(f"{t['strategy']:<16}{t['rate']:>7}  no samples")
            continue
        print(f"{t['strategy']:<16}{t['rate']:>7}{t['samples']:>9}{t['p50']:>9.1f}"
              f"{t['p99']:>9.1f}{t['p99_9']:>10.1f}{t['max']:>9.1f}"
              f"{t['other_cpu_pct']:>7.0f}%")  # fmt: skip
    for name, ok in report["targets"].items():
        print(f"target {name:<34} {'met' if ok else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller counts (a few seconds)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the two processes")
    ap.add_argument("--ring-mib", type=int, default=RING_BYTES >> 20,
                    help="ring size in MiB, a power of two (default: market_data's 16)")  # fmt: skip
    args = ap.parse_args(argv)
    avail = sorted(os.sched_getaffinity(0))
    cpus = (avail[0], avail[1]) if len(avail) >= 2 and not args.no_pin else (None, None)
    broker = "bench" + secrets.token_hex(4)
    ctx = mp.get_context("spawn")
    rows = []
    try:
        for i, case in enumerate(_cases(args.quick)):
            rows.append((case, _run_case(ctx, broker, i, case, cpus, args.ring_mib << 20)))
    finally:
        for name in list_segments(broker):
            unlink_quietly(name)
    report = _report(rows, cpus, args.quick, args.ring_mib << 20)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
    return 0 if all(report["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
