#!/usr/bin/env python3
"""Sustained load through a real broker: paced producers, checking consumers, a verdict.

    python tools/stress.py --duration 300 --rate 500000 --size 512 [--consumers N] [--producers P]

Starts a broker on a private socket (``bench_broker.Broker``: the embedded default config,
so the load runs on the real market_data fanout topic and its 16 MiB lanes), then N
consumer processes and P producer processes. The producers publish numbered messages
(producer index and sequence number in the first 16 bytes) paced to R msg/s together:
a ``publish_many`` burst once at least a millisecond's worth is due, else a ~1 ms sleep
(so a producer costs what its messages cost, not a core); each ends with an END message. Every consumer checks every message: per producer, the next
sequence number and nothing else. A BackpressureTimeout is not a loss (nothing was
written): the producer counts it and publishes the rest again. Consumers wait with the
default strategy (spin, yield, then block on the doorbell); ``--no-spin`` makes them block
at once, which shows what the messages themselves cost in CPU.

Every second it prints what was sent and received (slowest consumer), the last second's
rates, the lag, and the RSS of the broker and of the client processes. At the end it
prints sent, received, the delivery ratio and the rates, and exits 1 if any message was
lost, duplicated or reordered, if the achieved send rate or the slowest consumer's
delivery rate is below 95% of R, or if anything was left in /dev/shm; 0 otherwise.
Every process it starts is stopped and nothing is left in /dev/shm, even on failure or
Ctrl-C (children ignore SIGINT, so the parent stops them in order).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import signal
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from bench_broker import READY_TIMEOUT_S, Broker

TOPIC = "market_data"
#: Producer index and sequence number at the start of every message.
HEAD = struct.Struct("<QQ")
END_SEQ = (1 << 64) - 1
PUBLISH_BURST = 1024
RECV_BATCH = 4096
#: A producer ahead of its schedule sleeps this long before looking again.
PACE_SLEEP_S = 0.001
#: Producers start together this long after the consumers are ready.
START_DELAY_S = 0.5
#: After the producers stop, consumers have this long to read what is left.
DRAIN_S = 60.0
#: How long children get to finish after being told to; then they are killed.
STOP_TIMEOUT_S = 10.0
REPORT_EVERY_S = 1.0
RATE_FLOOR = 0.95
MAX_EXAMPLES = 10
MIB = 1 << 20


# -- children -------------------------------------------------------------------------
def ignore_sigint() -> None:
    """Children leave Ctrl-C to the parent, which stops them in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def paced_producer(
    sock: str,
    index: int,
    rate: float,
    size: int,
    t0: float,
    duration: float,
    sent: Any,
    abort: Any,
    out: Any,
) -> None:
    """Publish ``rate`` msg/s of ``size`` bytes from ``t0`` for ``duration`` s, then END."""
    ignore_sigint()
    min_burst = max(1, min(PUBLISH_BURST, int(rate * PACE_SLEEP_S)))
    from mycelium import Producer
    from mycelium.errors import BackpressureTimeout

    buf = bytearray(PUBLISH_BURST * size)
    views = [memoryview(buf)[i * size : (i + 1) * size] for i in range(PUBLISH_BURST)]
    stalls = 0
    seq = 0
    with Producer(socket_path=sock, name=f"stress-producer-{index}") as p:
        time.sleep(max(0.0, t0 - time.monotonic()))
        cpu0 = time.process_time()
        end = t0 + duration
        last = t0
        while not abort.is_set():
            now = time.monotonic()
            if now >= end:
                break
            n = min(PUBLISH_BURST, int((now - t0) * rate) - seq)
            if n < min_burst:
                time.sleep(PACE_SLEEP_S)
                continue
            for i in range(n):
                HEAD.pack_into(buf, i * size, index, seq + i)
            try:
                seq += p.publish_many(TOPIC, views if n == PUBLISH_BURST else views[:n])
            except BackpressureTimeout as exc:
                stalls += 1
                seq += getattr(exc, "published", 0)
            sent.value = seq
            last = time.monotonic()
        while not abort.is_set():
            try:
                p.publish(TOPIC, HEAD.pack(index, END_SEQ))
                break
            except BackpressureTimeout:
                stalls += 1
        cpu_s = time.process_time() - cpu0
    out.put({"index": index, "sent": seq, "elapsed": last - t0, "stalls": stalls, "cpu_s": cpu_s})


@dataclass
class SeqCheck:
    """Checks streams of numbered messages: per producer, exactly the next number."""

    producers: int
    expect: list[int] = field(init=False)
    received: int = 0
    ended: int = 0
    errors: int = 0
    examples: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.expect = [0] * self.producers

    def feed(self, batch: list[bytes]) -> None:
        expect = self.expect
        unpack = HEAD.unpack_from
        received = len(batch)
        for data in batch:
            index, seq = unpack(data)
            if index >= self.producers or seq != expect[index]:
                if index < self.producers and seq == END_SEQ:
                    self.ended += 1
                    received -= 1
                    continue
                self.errors += 1
                if len(self.examples) < MAX_EXAMPLES:
                    got = "END" if seq == END_SEQ else seq
                    want = expect[index] if index < self.producers else "-"
                    self.examples.append(f"producer {index}: got {got}, expected {want}")
                if index >= self.producers:
                    continue
            expect[index] = seq + 1
        self.received += received

    @property
    def complete(self) -> bool:
        return self.ended >= self.producers


def checking_consumer(
    sock: str,
    index: int,
    producers: int,
    deadline: float,
    spin: bool,
    received: Any,
    ready: Any,
    abort: Any,
    out: Any,
) -> None:
    """Read and check until every producer's END (or abort, or ``deadline``); without
    ``spin``, block on the doorbell as soon as there is nothing to read."""
    ignore_sigint()
    from mycelium import Consumer

    check = SeqCheck(producers)
    t_last = 0.0
    waiting = {} if spin else {"spins": 0, "yields": 0}
    with Consumer(TOPIC, socket_path=sock, **waiting) as c:
        ready.set()
        cpu0 = time.process_time()
        while not check.complete and not abort.is_set() and time.monotonic() < deadline:
            batch = c.recv_many(RECV_BATCH, timeout=0.1)
            if batch:
                check.feed(batch)
                received.value = check.received
                t_last = time.monotonic()
        lost, corrupt = c.lost, c.corrupt
        cpu_s = time.process_time() - cpu0
    out.put(
        {
            "index": index,
            "received": check.received,
            "complete": check.complete,
            "errors": check.errors,
            "examples": check.examples,
            "t_last": t_last,
            "lost": lost,
            "corrupt": corrupt,
            "cpu_s": cpu_s,
        }
    )


# -- the parent -------------------------------------------------------------------------
def rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (0 once it is gone)."""
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time ``pid`` has used (0 once it is gone)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def open_fds(pid: int) -> int:
    """Open file descriptors of ``pid`` (0 once it is gone)."""
    try:
        return psutil.Process(pid).num_fds()
    except psutil.Error:
        return 0


class Children:
    """Client processes of one run, always reaped: told to stop, then killed by PID."""

    def __init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.abort = self.ctx.Event()
        self.procs: list[Any] = []

    def start(self, target: Any, *args: Any) -> Any:
        proc = self.ctx.Process(target=target, args=args, daemon=True)
        proc.start()
        self.procs.append(proc)
        return proc

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.is_alive()]

    def stop(self) -> list[int]:
        """Tell every child to stop, wait a bounded time, kill the rest; returns the killed."""
        self.abort.set()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
        killed = []
        for proc in self.procs:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
                proc.join(5)
                killed.append(proc.pid)
        return killed


def stop_broker(broker: Broker | None) -> list[str]:
    """Stop the broker; remove and return whatever of it is left in /dev/shm.

    Its clients must be gone first: then every object of this broker is an orphan.
    """
    if broker is None:
        return []
    from mycelium.coordinator.cleanup import remove_orphans
    from mycelium.shm.segment import broker_id_for

    broker.stop()
    return remove_orphans(broker_id_for(broker.sock))


def finish(children: Children, broker: Broker | None, finished: bool) -> bool:
    """Stop every child, then the broker, then remove what it left in /dev/shm.

    True if it left nothing: a broker whose clients all closed removes everything itself
    (after Ctrl-C it has usually stopped first, leaving its clients' segments for adoption).
    """
    killed = children.stop()
    left = stop_broker(broker)
    if killed:
        print(f"killed children that did not stop in {STOP_TIMEOUT_S:g}s: {killed}")
    if left:
        what = "FAIL: the broker left" if finished else "removed what the stopped broker left"
        print(f"{what} in /dev/shm: {left}" + (" (removed)" if finished else ""))
    return not left


def collect(out: Any, n: int, timeout: float) -> list[dict[str, Any]]:
    """Up to ``n`` results from ``out`` within ``timeout`` seconds."""
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(results) < n:
        try:
            results.append(out.get(timeout=max(0.01, deadline - time.monotonic())))
        except queue.Empty:
            break
    return results


def wait_ready(events: list[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for event in events:
        if not event.wait(max(0.0, deadline - time.monotonic())):
            raise RuntimeError(f"consumers not connected within {timeout}s")


@dataclass
class Progress:
    """The once-a-second line: totals, last-second rates, lag, memory."""

    broker_pid: int
    sent: list[Any]
    received: list[Any]
    clients: Children
    t0: float
    last: tuple[float, int, int] = (0.0, 0, 0)
    peak_broker_rss: int = 0
    peak_clients_rss: int = 0
    broker_cpu0_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.broker_cpu0_s = cpu_seconds(self.broker_pid)

    def broker_cpu_s(self) -> float:
        """CPU time the broker used since the load started."""
        return cpu_seconds(self.broker_pid) - self.broker_cpu0_s

    def line(self) -> str:
        now = time.monotonic()
        sent = sum(v.value for v in self.sent)
        got = min(v.value for v in self.received)
        then, sent0, got0 = self.last
        dt = max(now - then, 1e-9) if then else max(now - self.t0, 1e-9)
        self.last = (now, sent, got)
        broker_rss = rss(self.broker_pid)
        clients_rss = sum(rss(pid) for pid in self.clients.pids())
        self.peak_broker_rss = max(self.peak_broker_rss, broker_rss)
        self.peak_clients_rss = max(self.peak_clients_rss, clients_rss)
        return (
            f"[{now - self.t0:6.1f}s] sent {sent:>13,}  recv {got:>13,}  "
            f"rate {(sent - sent0) / dt:>9,.0f}/s  recv {(got - got0) / dt:>9,.0f}/s  "
            f"lag {sent - got:>9,}  broker {broker_rss / MIB:6.1f} MiB  "
            f"clients {clients_rss / MIB:7.1f} MiB"
        )


def run_with_broker(prefix: str, body: Callable[[Broker, Children], bool]) -> int:
    """Run ``body`` against a fresh broker on a socket in a temp dir, then stop every
    process and clean /dev/shm whatever happened. Returns the exit code: 0 if ``body``
    passed and nothing was left behind, 1 if not, 130 on Ctrl-C."""
    children = Children()
    broker = None
    ok = finished = clean = False
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            try:
                broker = Broker(Path(tmp))
                ok = body(broker, children)
                finished = True
            finally:
                clean = finish(children, broker, finished)
    except KeyboardInterrupt:
        print("interrupted; every process stopped and /dev/shm cleaned", file=sys.stderr)
        return 130
    return 0 if ok and clean else 1


def load(args: argparse.Namespace, broker: Broker, children: Children) -> bool:
    """Consumers first, then producers paced from a common start; report every second."""
    ctx = children.ctx
    consumer_out, producer_out = ctx.Queue(), ctx.Queue()
    received = [ctx.Value("Q", 0, lock=False) for _ in range(args.consumers)]
    sent = [ctx.Value("Q", 0, lock=False) for _ in range(args.producers)]
    ready = [ctx.Event() for _ in range(args.consumers)]
    t_end = time.monotonic() + READY_TIMEOUT_S + START_DELAY_S + args.duration + DRAIN_S
    for i in range(args.consumers):
        children.start(
            checking_consumer, broker.sock, i, args.producers, t_end, not args.no_spin,
            received[i], ready[i], children.abort, consumer_out,
        )  # fmt: skip
    wait_ready(ready, READY_TIMEOUT_S)
    t0 = time.monotonic() + START_DELAY_S
    share = args.rate / args.producers
    for i in range(args.producers):
        children.start(
            paced_producer, broker.sock, i, share, args.size, t0, args.duration, sent[i],
            children.abort, producer_out,
        )  # fmt: skip
    print(
        f"stress: {args.duration:g} s at {args.rate:,.0f} msg/s of {args.size} B, "
        f"{args.producers} producer(s), {args.consumers} consumer(s), topic {TOPIC}"
        + (", consumers block at once" if args.no_spin else ""),
        flush=True,
    )
    progress = Progress(broker.proc.pid, sent, received, children, t0)
    producers: list[dict[str, Any]] = []
    consumers: list[dict[str, Any]] = []
    next_tick = t0
    while len(consumers) < args.consumers and time.monotonic() < t_end:
        next_tick += REPORT_EVERY_S
        time.sleep(max(0.0, next_tick - time.monotonic()))
        producers += collect(producer_out, args.producers - len(producers), 0)
        consumers += collect(consumer_out, args.consumers - len(consumers), 0)
        if broker.proc.poll() is not None:
            print(f"FAIL: the broker exited with {broker.proc.returncode}", flush=True)
            return False
        print(progress.line(), flush=True)
    producers += collect(producer_out, args.producers - len(producers), STOP_TIMEOUT_S)
    return verdict(args, producers, consumers, t0, progress)


def verdict(
    args: argparse.Namespace,
    producers: list[dict[str, Any]],
    consumers: list[dict[str, Any]],
    t0: float,
    progress: Progress,
) -> bool:
    """Print the summary; True if nothing was lost and the rates held."""
    problems = []
    if len(producers) < args.producers:
        problems.append(f"only {len(producers)} of {args.producers} producers reported")
    if len(consumers) < args.consumers:
        problems.append(f"only {len(consumers)} of {args.consumers} consumers reported")
    sent = sum(p["sent"] for p in producers)
    elapsed = max((p["elapsed"] for p in producers), default=0.0)
    send_rate = sent / elapsed if elapsed > 0 else 0.0
    got = min((c["received"] for c in consumers), default=0)
    slowest_span = max((c["t_last"] - t0 for c in consumers), default=0.0)
    deliver_rate = got / slowest_span if slowest_span > 0 else 0.0
    errors = sum(c["errors"] for c in consumers)
    lost = sum(c["lost"] + c["corrupt"] for c in consumers)
    ratio = got / sent if sent else 0.0
    for c in consumers:
        if c["received"] != sent or not c["complete"]:
            problems.append(f"consumer {c['index']} received {c['received']:,} of {sent:,}")
        problems += [f"consumer {c['index']}: {e}" for e in c["examples"]]
    if errors or lost:
        problems.append(f"{errors} out-of-sequence messages, {lost} lost or corrupt")
    floor = RATE_FLOOR * args.rate
    if send_rate < floor:
        problems.append(f"send rate {send_rate:,.0f} msg/s is below {floor:,.0f}")
    if deliver_rate < floor:
        problems.append(f"delivery rate {deliver_rate:,.0f} msg/s is below {floor:,.0f}")
    stalls = sum(p["stalls"] for p in producers)
    span = max(elapsed, 1e-9)
    cpu = (
        f"broker {progress.broker_cpu_s() / span:.1%}, "
        f"producers {sum(p['cpu_s'] for p in producers) / span:.1%}, "
        f"consumers {sum(c['cpu_s'] for c in consumers) / span:.1%} of one core"
    )
    print(
        f"sent      {sent:>15,} msgs in {elapsed:.1f} s: {send_rate:>11,.0f} msg/s "
        f"({send_rate / args.rate:.1%} of {args.rate:,.0f})\n"
        f"received  {got:>15,} msgs (slowest of {len(consumers)} consumer(s)): "
        f"{deliver_rate:>11,.0f} msg/s\n"
        f"delivery  {ratio:.4%}; {errors} out of sequence; {lost} lost or corrupt; "
        f"{stalls} backpressure timeouts\n"
        f"memory    broker RSS peak {progress.peak_broker_rss / MIB:.1f} MiB, "
        f"clients RSS peak {progress.peak_clients_rss / MIB:.1f} MiB (total)\n"
        f"cpu       {cpu} (averaged over the run)"
    )
    for problem in problems:
        print(f"FAIL: {problem}")
    print("PASS" if not problems else "FAIL")
    return not problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, required=True, help="seconds of load")
    ap.add_argument("--rate", type=float, required=True, help="target msg/s, all producers")
    ap.add_argument("--size", type=int, required=True, help=f"bytes per message (>= {HEAD.size})")
    ap.add_argument("--consumers", type=int, default=1, help="fanout consumer processes")
    ap.add_argument("--producers", type=int, default=1, help="producer processes")
    ap.add_argument(
        "--no-spin", action="store_true", help="consumers block at once when there is nothing"
    )
    args = ap.parse_args()
    if args.size < HEAD.size or args.duration <= 0 or args.rate <= 0:
        ap.error(f"need --size >= {HEAD.size}, --duration > 0 and --rate > 0")
    if args.consumers < 1 or args.producers < 1:
        ap.error("need at least one consumer and one producer")
    return run_with_broker("myc-stress-", lambda broker, children: load(args, broker, children))


if __name__ == "__main__":
    sys.exit(main())
