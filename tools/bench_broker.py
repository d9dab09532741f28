#!/usr/bin/env python3
"""Broker benchmark: throughput and end-to-end latency through a real broker.

Runs the original plan's workload (2,000,000 messages of 1 KiB, one producer process,
one consumer process) through a broker started on a private socket, then the same with
``publish_many``/``recv_many`` (64 B and 1 KiB), zero-copy ``recv_view`` (1 KiB) and
numpy ``publish_array``/``recv_array`` (64 B records, streaming, and draining a full ring:
the consumer's own rate, with no producer to wait for), a consumer of two topics fed by
two producers against one of one topic (64 B, per message and batched; "live" with the
producers running, "drained" from rings filled before it reads, which is the consumer's
own cost: live, three busy processes share the cores where the single topic has two),
then end-to-end latency at a paced rate for the blocking and the spinning consumer. If
pyzmq is installed it runs the same throughput workload over PUSH/PULL ``ipc://``
(pyzmq's default settings) in the same run and prints the ratio.

Each side measures its own rate with its own clock (first to last message). Latency
embeds ``time.perf_counter_ns()`` (CLOCK_MONOTONIC: the same clock in every process) in
each payload. Every loop has a deadline; the broker and all children are stopped and
nothing is left in /dev/shm, even on failure.

    python tools/bench_broker.py            # full run
    python tools/bench_broker.py --quick    # smaller counts
    python tools/bench_broker.py --json
    python tools/bench_broker.py --quick --two-topic   # only the two-topic consumer
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RUN_DEADLINE_S = 300.0
READY_TIMEOUT_S = 30.0
STAMP = struct.Struct("<Q")
RECV_BATCH = 4096
#: recv_array's max_n for a backlog drain: more than a ring holds, so one call per stretch.
DRAIN_MAX_N = 1 << 24
PUBLISH_BATCH = 256


# -- children -------------------------------------------------------------------------
#: Throughput modes: name -> (how the consumer reads, how the producer writes).
MODES = {
    "per_message": ("recv", "publish"),
    "batched": ("recv_many", "publish_many"),
    "view": ("recv_view", "publish"),  # zero-copy receive, one message at a time
    "array": ("recv_array", "publish_array"),  # numpy records, one message each
}


def _consumer(sock: str, topic: str, n: int, mode: str, wait: str, ready: Any, out: Any) -> None:
    import numpy as np

    from mycelium import Consumer

    with Consumer(topic, socket_path=sock, wait=wait) as c:
        ready.set()
        got = 0
        first = c.recv(timeout=READY_TIMEOUT_S)
        for _ in c.topics[1:]:  # one untimed first message per producer
            c.recv(timeout=READY_TIMEOUT_S)
        t0 = time.perf_counter()
        got = len(c.topics)
        deadline = time.monotonic() + RUN_DEADLINE_S
        if mode == "recv_many":
            while got < n and time.monotonic() < deadline:
                got += len(c.recv_many(RECV_BATCH, timeout=1.0))
        elif mode == "recv_array":
            record = np.dtype((np.void, len(first)))
            while got < n and time.monotonic() < deadline:
                got += len(c.recv_array(record, RECV_BATCH, timeout=1.0))
        elif mode == "recv_view":
            view = c.recv_view
            while got < n:
                with view(timeout=5.0) as v:
                    v[0]  # touch it: a view of bytes that stay in the ring
                got += 1
        else:
            recv = c.recv
            while got < n:
                recv(timeout=5.0)
                got += 1
        elapsed = time.perf_counter() - t0
        out.put({"received": got, "recv_s": elapsed, "first_len": len(first)})


def _producer(
    sock: str, topic: str, n: int, size: int, mode: str, out: Any, start: Any = None
) -> None:
    import numpy as np

    from mycelium import Producer

    payload = b"\xab" * size
    with Producer(socket_path=sock) as p:
        p.publish(topic, payload)  # registers the topic; not timed
        if start is not None:
            start.wait(READY_TIMEOUT_S)  # the other producers are registered too
        t0 = time.perf_counter()
        if mode == "publish_array":
            records = np.frombuffer(payload * PUBLISH_BATCH, np.dtype((np.void, size)))
            sent = 1
            while sent < n:
                k = min(PUBLISH_BATCH, n - sent)
                sent += p.publish_array(topic, records[:k])
        elif mode == "publish_many":
            batch = [payload] * PUBLISH_BATCH
            sent = 1
            while sent < n:
                k = min(PUBLISH_BATCH, n - sent)
                sent += p.publish_many(topic, batch[:k] if k < PUBLISH_BATCH else batch)
        else:
            publish = p.publish
            for _ in range(n - 1):
                publish(topic, payload)
        out.put({"sent": n, "send_s": time.perf_counter() - t0})


def _backlog_consumer(
    sock: str, topic: str, size: int, filled: Any, drained: Any, ready: Any, out: Any
) -> None:
    """Wait until the producer has filled the ring, then drain the backlog with
    ``recv_array`` (one call takes up to a whole ring): the consumer's own rate, with no
    producer to wait for."""
    import numpy as np

    from mycelium import Consumer

    record = np.dtype((np.void, size))
    with Consumer(topic, socket_path=sock) as c:
        ready.set()
        if not filled.wait(RUN_DEADLINE_S):
            raise RuntimeError("the producer did not fill the ring")
        backlog = c.backlog  # maps the producer's new lane first: not part of the drain
        got = 0
        t0 = time.perf_counter()
        while n := len(c.recv_array(record, DRAIN_MAX_N, timeout=0.0)):
            got += n
        elapsed = time.perf_counter() - t0
        drained.set()
        out.put({"received": got, "recv_s": elapsed, "backlog": backlog})


def _fill_producer(sock: str, topic: str, size: int, filled: Any, drained: Any, out: Any) -> None:
    """Publish records until the ring is full (``offer_array`` never waits), tell the
    consumer, and stay idle (not closing, not exiting) until it has drained them."""
    import numpy as np

    from mycelium import Producer

    rows = np.full((PUBLISH_BATCH, size), 0xAB, np.uint8)
    sent = 0
    with Producer(socket_path=sock) as p:
        while (k := p.offer_array(topic, rows)) == PUBLISH_BATCH:
            sent += k
        out.put({"sent": sent + k})
        filled.set()
        drained.wait(RUN_DEADLINE_S)


def backlog_drain(sock: str, size: int, runs: int) -> dict[str, float]:
    """Median records/s of ``recv_array`` draining a full ring of ``size``-byte records."""
    rates, backlog = [], 0
    ctx = mp.get_context("spawn")
    for _ in range(runs):
        filled, drained = ctx.Event(), ctx.Event()
        prod, cons = _run_pair(
            (_backlog_consumer, sock, "market_data", size, filled, drained),
            (_fill_producer, sock, "market_data", size, filled, drained),
        )
        if not cons["received"] == cons["backlog"] == prod["sent"]:
            raise RuntimeError(f"lost records: {cons['received']} of {prod['sent']}")
        rates.append(cons["received"] / cons["recv_s"])
        backlog = prod["sent"]
    return {"recv_msg_s": statistics.median(rates), "backlog": backlog}


#: Latency cases: name -> (wait strategy, spins, yields) of the consumer. "doorbell" skips
#: the spin and yield phases, so every message is delivered by waking a sleeping consumer.
LATENCY_CASES = {
    "spin": ("spin", 2000, 200),
    "block": ("block", 2000, 200),
    "doorbell": ("block", 0, 0),
}
#: A paced producer sleeps while its next send is further away than this, then spins.
PACE_SPIN_S = 150e-6


def _latency_consumer(sock: str, n: int, case: str, ready: Any, out: Any) -> None:
    from mycelium import Consumer

    wait, spins, yields = LATENCY_CASES[case]
    lat = []
    with Consumer("signals", socket_path=sock, wait=wait, spins=spins, yields=yields) as c:
        ready.set()
        for _ in range(n):
            data = c.recv(timeout=10.0)
            lat.append(time.perf_counter_ns() - STAMP.unpack_from(data)[0])
    out.put(lat)


def pace_until(due_ns: int) -> None:
    """Return at ``due_ns`` (perf_counter_ns): sleep while it is far off, leaving the core
    to the consumer and the broker, and spin only the last PACE_SPIN_S, for precision."""
    left_s = (due_ns - time.perf_counter_ns()) / 1e9
    if left_s > PACE_SPIN_S:
        time.sleep(left_s - PACE_SPIN_S)
    while time.perf_counter_ns() < due_ns:  # bounded by PACE_SPIN_S
        pass


def _latency_producer(sock: str, n: int, rate: float, size: int) -> None:
    from mycelium import Producer

    pad = b"\0" * (size - STAMP.size)
    period_ns = int(1e9 / rate)
    with Producer(socket_path=sock) as p:
        p.publish("signals", STAMP.pack(time.perf_counter_ns()) + pad)
        due = time.perf_counter_ns()
        for _ in range(1, n):
            due += period_ns
            pace_until(due)
            p.publish("signals", STAMP.pack(time.perf_counter_ns()) + pad)


def _zmq_consumer(addr: str, n: int, ready: Any, out: Any) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.bind(addr)
    ready.set()
    s.recv()
    t0 = time.perf_counter()
    for _ in range(n - 1):
        s.recv(copy=True)
    out.put({"received": n, "recv_s": time.perf_counter() - t0})
    s.close()
    ctx.term()


def _zmq_producer(addr: str, n: int, size: int, out: Any) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)  # pyzmq's defaults (HWM 1000), as a user would run it
    s.connect(addr)
    payload = b"\xab" * size
    s.send(payload)
    t0 = time.perf_counter()
    send = s.send
    for _ in range(n - 1):
        send(payload)
    out.put({"sent": n, "send_s": time.perf_counter() - t0})
    s.close(linger=10_000)
    ctx.term()


# -- orchestration ----------------------------------------------------------------------
class Broker:
    """A broker subprocess on a private socket, always stopped."""

    def __init__(self, workdir: Path) -> None:
        self.sock = str(workdir / "bench.sock")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mycelium", "broker", "--socket", self.sock,
             "--log-level", "WARNING"],
        )  # fmt: skip
        from mycelium.client.admin import admin_request
        from mycelium.control.wire import StatsRequest
        from mycelium.errors import MyceliumError

        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                admin_request(StatsRequest(), self.sock)
                return
            except MyceliumError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("broker did not start") from None
                time.sleep(0.02)

    def rss(self) -> int:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _run_pair(consumer: tuple, producer: tuple) -> tuple[dict, dict]:
    """Start a consumer, wait until it is ready, start a producer; collect both results."""
    prods, cons = _run_group(consumer, [producer])
    return prods[0], cons


def _run_group(consumer: tuple, producers: list[tuple]) -> tuple[list[dict], dict]:
    """Start a consumer, wait until it is ready, start the producers; collect results."""
    ctx = mp.get_context("spawn")
    ready, out_c, out_p = ctx.Event(), ctx.Queue(), ctx.Queue()
    c = ctx.Process(target=consumer[0], args=(*consumer[1:], ready, out_c), daemon=True)
    c.start()
    procs = [c]
    # Several producers start their timed loops together (spawning one takes ~0.3 s).
    start = ctx.Barrier(len(producers)) if len(producers) > 1 else None
    try:
        if not ready.wait(READY_TIMEOUT_S):
            raise RuntimeError("consumer not ready")
        for producer in producers:
            args = (*producer[1:], out_p) if start is None else (*producer[1:], out_p, start)
            p = ctx.Process(target=producer[0], args=args, daemon=True)
            p.start()
            procs.append(p)
        prods = [out_p.get(timeout=RUN_DEADLINE_S) for _ in producers]
        cons = out_c.get(timeout=RUN_DEADLINE_S)
        for proc in procs:
            proc.join(10)
        return prods, cons
    finally:
        for proc in procs:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
                proc.join(5)


def throughput(sock: str, n: int, size: int, mode: str, runs: int) -> dict[str, float]:
    """Median send and receive rates over ``runs`` runs (``mode``: a key of MODES)."""
    send, recv = [], []
    reads, writes = MODES[mode]
    for _ in range(runs):
        prod, cons = _run_pair(
            (_consumer, sock, "market_data", n, reads, "block"),
            (_producer, sock, "market_data", n, size, writes),
        )
        if cons["received"] < n:
            raise RuntimeError(f"lost messages: {cons['received']} of {n}")
        send.append(prod["sent"] / prod["send_s"])
        recv.append((cons["received"] - 1) / cons["recv_s"])
    return {"send_msg_s": statistics.median(send), "recv_msg_s": statistics.median(recv)}


#: The two-topic consumer's topics, each fed by its own producer process.
TWO_TOPICS = ("market_data", "signals")
TWO_TOPIC_MODES = ("per_message", "batched")


def two_topic_throughput(sock: str, n: int, mode: str, runs: int) -> dict[str, float]:
    """One consumer of two topics fed by two producers (n/2 each) against one consumer of
    one topic fed by one producer (n), 64 B, runs interleaved: receive rates and ratio."""
    reads, writes = MODES[mode]
    half = n // 2
    single, double = [], []
    for _ in range(runs):
        _, cons = _run_group(
            (_consumer, sock, TWO_TOPICS[0], 2 * half, reads, "block"),
            [(_producer, sock, TWO_TOPICS[0], 2 * half, 64, writes)],
        )
        single.append((cons["received"] - 1) / cons["recv_s"])
        _, cons = _run_group(
            (_consumer, sock, list(TWO_TOPICS), 2 * half, reads, "block"),
            [(_producer, sock, t, half, 64, writes) for t in TWO_TOPICS],
        )
        if cons["received"] < 2 * half:
            raise RuntimeError(f"lost messages: {cons['received']} of {2 * half}")
        double.append((cons["received"] - len(TWO_TOPICS)) / cons["recv_s"])
    one, two = statistics.median(single), statistics.median(double)
    return {"single_topic_msg_s": one, "two_topic_msg_s": two, "ratio": two / one}


#: The drain case's messages per lane: the rings hold them all before the consumer starts.
DRAIN_PER_LANE = 40_000


def _drain_consumer(
    sock: str, topics: Any, n: int, reads: str, ready: Any, go: Any, out: Any
) -> None:
    """Subscribe, then, once the rings are full, read ``n`` with no producer running."""
    from mycelium import Consumer

    with Consumer(topics, socket_path=sock) as c:
        ready.set()
        go.wait(READY_TIMEOUT_S)
        got, t0 = 0, time.perf_counter()
        if reads == "recv_many":
            while got < n:
                got += len(c.recv_many(RECV_BATCH, timeout=5.0))
        else:
            recv = c.recv
            while got < n:
                recv(timeout=5.0)
                got += 1
        out.put(got / (time.perf_counter() - t0))


def drain_throughput(sock: str, mode: str, runs: int) -> dict[str, float]:
    """The consumer's own cost: two topics of DRAIN_PER_LANE each against one topic of
    twice that, all published before it reads (no producer competes for a core)."""
    from mycelium import Producer

    ctx = mp.get_context("spawn")
    reads = MODES[mode][0]
    rates: dict[int, list[float]] = {1: [], 2: []}
    with Producer(socket_path=sock) as p:
        for _ in range(runs):
            for k in (1, 2):
                topics = list(TWO_TOPICS[:k])
                ready, go, out = ctx.Event(), ctx.Event(), ctx.Queue()
                args = (sock, topics, 2 * DRAIN_PER_LANE, reads, ready, go, out)
                c = ctx.Process(target=_drain_consumer, args=args, daemon=True)
                c.start()
                try:
                    if not ready.wait(READY_TIMEOUT_S):
                        raise RuntimeError("drain consumer not ready")
                    for t in topics:
                        p.publish_many(t, [b"\xab" * 64] * (2 * DRAIN_PER_LANE // k))
                    go.set()
                    rates[k].append(out.get(timeout=RUN_DEADLINE_S))
                    c.join(10)
                finally:
                    if c.is_alive():
                        os.kill(c.pid, signal.SIGKILL)
                        c.join(5)
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    return {"single_topic_msg_s": one, "two_topic_msg_s": two, "ratio": two / one}


def zmq_throughput(workdir: Path, n: int, size: int, runs: int) -> dict[str, float] | None:
    try:
        import zmq  # noqa: F401
    except ImportError:
        return None
    send, recv = [], []
    for i in range(runs):
        addr = f"ipc://{workdir}/zmq{i}.ipc"
        prod, cons = _run_pair((_zmq_consumer, addr, n), (_zmq_producer, addr, n, size))
        send.append(prod["sent"] / prod["send_s"])
        recv.append((cons["received"] - 1) / cons["recv_s"])
    return {"send_msg_s": statistics.median(send), "recv_msg_s": statistics.median(recv)}


def latency(sock: str, n: int, rate: float, case: str, size: int = 64) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    c = ctx.Process(target=_latency_consumer, args=(sock, n, case, ready, out), daemon=True)
    c.start()
    procs = [c]
    try:
        if not ready.wait(READY_TIMEOUT_S):
            raise RuntimeError("latency consumer not ready")
        p = ctx.Process(target=_latency_producer, args=(sock, n, rate, size), daemon=True)
        p.start()
        procs.append(p)
        lat = out.get(timeout=RUN_DEADLINE_S)
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
                proc.join(5)
    warm = sorted(lat[len(lat) // 100 :])  # the first 1% warms caches and the JIT-less VM

    def pct(q: float) -> float:
        return warm[min(len(warm) - 1, int(q * len(warm)))] / 1000

    return {"p50_us": pct(0.50), "p95_us": pct(0.95), "p99_us": pct(0.99),
            "p99.9_us": pct(0.999), "max_us": warm[-1] / 1000, "n": len(lat)}  # fmt: skip


def two_topic_results(sock: str, n: int, runs: int) -> dict[str, Any]:
    """Live (producers running) and drained (rings filled first), per mode."""
    out: dict[str, Any] = {}
    for m in TWO_TOPIC_MODES:
        out[f"two_topic_{m}_64B"] = two_topic_throughput(sock, n, m, runs)
        out[f"two_topic_drain_{m}_64B"] = drain_throughput(sock, m, runs)
    return out


def print_two_topic(results: dict[str, Any]) -> None:
    for mode in TWO_TOPIC_MODES:
        for case, what in (("", "live"), ("drain_", "drained")):
            r = results[f"two_topic_{case}{mode}_64B"]
            print(f"  two-topic consumer, {mode} 64 B, {what}: {r['two_topic_msg_s']:,.0f} msg/s"
                  f" vs one topic {r['single_topic_msg_s']:,.0f} msg/s: x{r['ratio']:.2f}"
                  " (target x0.9)")  # fmt: skip


def two_topic_only(n: int, runs: int, as_json: bool) -> int:
    """``--two-topic``: the two-topic section alone, on a broker of its own."""
    results: dict[str, Any] = {"messages": n, "runs": runs}
    with tempfile.TemporaryDirectory(prefix="myc-bench-") as tmp:
        broker = Broker(Path(tmp))
        try:
            results |= two_topic_results(broker.sock, n, runs)
        finally:
            broker.stop()
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        print(f"mycelium two-topic consumer: {n:,} messages per run, median of {runs}")
        print_two_topic(results)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="200k messages, 1 run each")
    ap.add_argument("--messages", type=int, default=None, help="messages per throughput run")
    ap.add_argument("--runs", type=int, default=None, help="runs per figure (median)")
    ap.add_argument("--rate", type=float, default=5_000, help="paced latency rate, msg/s")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    ap.add_argument("--two-topic", action="store_true", help="only the two-topic consumer")
    args = ap.parse_args()
    n = args.messages or (200_000 if args.quick else 2_000_000)
    runs = args.runs or (1 if args.quick else 3)
    lat_n = 20_000 if args.quick else 100_000
    results: dict[str, Any] = {"messages": n, "runs": runs}
    if args.two_topic:
        return two_topic_only(n, runs, args.json)
    with tempfile.TemporaryDirectory(prefix="myc-bench-") as tmp:
        broker = Broker(Path(tmp))
        try:
            results["per_message_1KiB"] = throughput(broker.sock, n, 1024, "per_message", runs)
            results["batched_1KiB"] = throughput(broker.sock, n, 1024, "batched", runs)
            results["batched_64B"] = throughput(broker.sock, n, 64, "batched", runs)
            results["per_message_64B"] = throughput(broker.sock, n, 64, "per_message", runs)
            results["view_1KiB"] = throughput(broker.sock, n, 1024, "view", runs)
            results["array_64B"] = throughput(broker.sock, n, 64, "array", runs)
            results["array_drain_64B"] = backlog_drain(broker.sock, 64, runs)
            results |= two_topic_results(broker.sock, n, runs)
            for case in LATENCY_CASES:
                results[f"latency_{case}"] = latency(broker.sock, lat_n, args.rate, case)
            results["broker_rss_bytes"] = broker.rss()
        finally:
            broker.stop()
        z = zmq_throughput(Path(tmp), n, 1024, runs)
    if z is not None:
        results["zmq_1KiB"] = z
        ours = results["per_message_1KiB"]
        results["ratio_vs_zmq"] = {
            "send": ours["send_msg_s"] / z["send_msg_s"],
            "recv": ours["recv_msg_s"] / z["recv_msg_s"],
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"mycelium broker benchmark: {n:,} messages per run, median of {runs}")
    keys = ("per_message_1KiB", "view_1KiB", "per_message_64B", "batched_1KiB", "batched_64B",
            "array_64B", "zmq_1KiB")  # fmt: skip
    for key in keys:
        if key in results:
            r = results[key]
            print(
                f"  {key:<18} send {r['send_msg_s']:>12,.0f} msg/s   recv {r['recv_msg_s']:>12,.0f} msg/s"
            )
    view, plain = results["view_1KiB"]["recv_msg_s"], results["per_message_1KiB"]["recv_msg_s"]
    print(f"  recv_view / recv at 1 KiB: x{view / plain:.2f} (target x1.3)")
    print(
        f"  recv_array 64 B records, streaming: {results['array_64B']['recv_msg_s'] / 1e6:.2f} M/s"
    )
    drain = results["array_drain_64B"]
    print(f"  recv_array 64 B records, draining a full ring ({drain['backlog']:,} records):"
          f" {drain['recv_msg_s'] / 1e6:.2f} M/s (target 20 M/s)")  # fmt: skip
    print_two_topic(results)
    if "ratio_vs_zmq" in results:
        r = results["ratio_vs_zmq"]
        print(
            f"  vs pyzmq PUSH/PULL ipc, defaults (1 KiB): send x{r['send']:.2f}  recv x{r['recv']:.2f}"
        )
    for case in LATENCY_CASES:
        key = f"latency_{case}"
        r = results[key]
        print(f"  {key:<18} p50 {r['p50_us']:.1f} us  p95 {r['p95_us']:.1f} us  "
              f"p99 {r['p99_us']:.1f} us  p99.9 {r['p99.9_us']:.1f} us  ({r['n']:,} msgs at {args.rate:,.0f}/s)")  # fmt: skip
    print(f"  broker RSS {results['broker_rss_bytes'] / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
