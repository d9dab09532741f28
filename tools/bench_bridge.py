#!/usr/bin/env python3
"""Bridge benchmark: host A -> NATS JetStream -> host B on loopback, beside nats-py alone.

Starts a nats-server (JetStream, file storage, a temp dir), two brokers standing for two
hosts and a bridge on each (A exports ``market_data``, B imports it). Then, at 64 B and
1 KiB: the rate of messages published on A and received on B (first publish to last
receipt), beside nats-py's own JetStream publish rate (``publish_async``, every ack
awaited) in the same run; the target is the bridge at >= 80% of the latter. Then the
end-to-end latency at a paced rate (``time.perf_counter_ns()`` in each payload:
CLOCK_MONOTONIC, one clock for every process), beside a plain nats-py round trip
(core publish -> subscriber on another connection) at the same rate.

Every loop has a deadline; every process started is stopped by PID, even on failure.

    python tools/bench_bridge.py            # full run (on a quiet machine): medians of 3
    python tools/bench_bridge.py --quick    # a smoke run: small counts
    python tools/bench_bridge.py --json
"""

from __future__ import annotations

import argparse
import asyncio
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
from importlib import resources
from pathlib import Path
from typing import Any

RUN_DEADLINE_S = 300.0
READY_TIMEOUT_S = 30.0
STAMP = struct.Struct("<Q")
PUBLISH_BATCH = 256


def pace_until(due_ns: int) -> None:
    """Sleep until ``due_ns``, never spin: at 10,000 msg/s a spinning producer (as
    bench_broker's) takes a whole core from the two the pipeline it measures runs on (the
    nats-py round trip below sleeps too). A late wake-up publishes the next ones back to
    back, so the rate holds; each message is stamped when it is published."""
    left_s = (due_ns - time.perf_counter_ns()) / 1e9
    if left_s > 0:
        time.sleep(left_s)


def _producer(sock: str, n: int, size: int, rate: float, topic: str = "market_data") -> None:
    """Child: ``n`` messages of ``size`` bytes, stamped; batched when unpaced (rate 0)."""
    from mycelium import Producer

    pad = b"\0" * (size - STAMP.size)
    with Producer(socket_path=sock) as p:
        if not rate:
            for first in range(0, n, PUBLISH_BATCH):
                batch = [pad + STAMP.pack(0)] * min(PUBLISH_BATCH, n - first)
                done = 0
                while done < len(batch):
                    done += p.publish_many(topic, batch[done:])
            return
        period = int(1e9 / rate)
        due = time.perf_counter_ns()
        for _ in range(n):
            pace_until(due)
            p.publish(topic, STAMP.pack(time.perf_counter_ns()) + pad)
            due += period


def _receive(sock: str, n: int, stamped: bool, started: Any) -> tuple[float, list[int]]:
    """Receive ``n`` on B: (seconds from the producer's start to the last, latencies)."""
    from mycelium import Consumer

    lat: list[int] = []
    got = 0
    deadline = time.monotonic() + RUN_DEADLINE_S
    with Consumer("market_data", socket_path=sock) as c:
        started()
        t0 = time.perf_counter()
        while got < n and time.monotonic() < deadline:
            batch = c.recv_many(4096, timeout=0.1)
            now = time.perf_counter_ns()
            got += len(batch)
            if stamped:
                lat += [now - STAMP.unpack_from(m)[0] for m in batch]
        if got < n:
            raise RuntimeError(f"only {got} of {n} arrived through the bridge")
        return time.perf_counter() - t0, lat


class Proc:
    """A subprocess stopped by PID."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _wait(cond: Any, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up")
        time.sleep(0.05)


def _host(workdir: Path, name: str, url: str, section: str, procs: list[Proc]) -> str:
    """A broker and its bridge; returns the broker's socket."""
    from mycelium.client.admin import admin_request
    from mycelium.control.wire import StatsRequest
    from mycelium.errors import MyceliumError

    default = resources.files("mycelium").joinpath("default_config.toml").read_text("utf-8")
    cfg = workdir / f"{name}.toml"
    cfg.write_text(f'{default}\n[bridge]\nname = "{name}"\nnats = ["{url}"]\n{section}\n')
    sock = str(workdir / f"{name}.sock")
    py = sys.executable
    procs.append(Proc([py, "-m", "mycelium", "broker", "--socket", sock, "--config", str(cfg),
                       "--log-level", "WARNING"], workdir / f"{name}-broker.log"))  # fmt: skip

    def answers() -> bool:
        try:
            admin_request(StatsRequest(), sock)
            return True
        except MyceliumError:
            return False

    _wait(answers, f"broker {name}")
    state = workdir / f"bridge-{name}"
    procs.append(Proc([py, "-m", "mycelium", "bridge", "--socket", sock, "--config", str(cfg),
                       "--state-dir", str(state), "--log-level", "WARNING"],
                      workdir / f"{name}-bridge.log"))  # fmt: skip

    def connected() -> bool:
        try:
            return bool(json.loads((state / "status.json").read_text())["connected"])
        except (OSError, ValueError, KeyError):
            return False

    _wait(connected, f"bridge {name}")
    return sock


def bridge_run(socks: dict[str, str], n: int, size: int, rate: float) -> tuple[float, list[int]]:
    ctx = mp.get_context("spawn")
    child: list[Any] = []

    def start() -> None:
        proc = ctx.Process(target=_producer, args=(socks["A"], n, size, rate), daemon=True)
        proc.start()
        child.append(proc)

    try:
        return _receive(socks["B"], n, rate > 0, start)
    finally:
        for proc in child:
            proc.join(RUN_DEADLINE_S)
            if proc.is_alive():
                proc.kill()


async def _stream_reaches(url: str, stream: str, last_seq: int) -> int:
    """Poll until ``stream`` holds ``last_seq`` (0: just read it); returns its last sequence."""
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + RUN_DEADLINE_S
        while True:
            seq = int((await js.stream_info(stream)).state.last_seq)
            if seq >= last_seq or time.monotonic() > deadline:
                return seq
            await asyncio.sleep(0.01)
    finally:
        await nc.close()


def export_run(sock: str, url: str, n: int, size: int) -> float:
    """The export alone: A's ``signals`` (which B does not import) into JetStream; seconds
    from the producer's start until the stream holds all ``n``."""
    stream = "MYCELIUM_signals"
    target = asyncio.run(_stream_reaches(url, stream, 0)) + n
    proc = mp.get_context("spawn").Process(
        target=_producer, args=(sock, n, size, 0, "signals"), daemon=True
    )
    t0 = time.perf_counter()
    proc.start()
    try:
        if asyncio.run(_stream_reaches(url, stream, target)) < target:
            raise RuntimeError(f"the export did not put {n} into {stream}")
        return time.perf_counter() - t0
    finally:
        proc.join(RUN_DEADLINE_S)
        if proc.is_alive():
            proc.kill()


async def nats_publish_rate(url: str, n: int, size: int, in_flight: int, headers: bool) -> float:
    """nats-py alone: ``n`` JetStream publishes with ``in_flight`` acks outstanding, msg/s;
    with ``headers``, the bridge's six headers on each (its message id among them)."""
    import nats

    from mycelium.bridge.headers import export_headers

    nc = await nats.connect(url)
    try:
        js = nc.jetstream(publish_async_max_pending=in_flight)
        await js.add_stream(name=f"BENCH_{size}", subjects=[f"bench.{size}"])
        payload = b"\0" * size
        t0 = time.perf_counter()
        acks = [
            await js.publish_async(
                f"bench.{size}",
                payload,
                headers=export_headers("bench", "t", "p", k, k) if headers else None,
            )
            for k in range(n)
        ]
        await asyncio.gather(*acks)
        rate = n / (time.perf_counter() - t0)
        await js.delete_stream(f"BENCH_{size}")
        return rate
    finally:
        await nc.close()


async def nats_round_trip(url: str, n: int, rate: float) -> list[int]:
    """Plain nats-py, core publish to a subscriber on a second connection: latencies (ns)."""
    import nats

    pub, sub = await nats.connect(url), await nats.connect(url)
    lat: list[int] = []
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        lat.append(time.perf_counter_ns() - STAMP.unpack_from(msg.data)[0])
        if len(lat) >= n:
            done.set()

    try:
        await sub.subscribe("bench.rtt", cb=on_msg)
        await sub.flush()
        period = 1 / rate
        t0 = time.perf_counter()
        for k in range(n):
            await pub.publish("bench.rtt", STAMP.pack(time.perf_counter_ns()) + b"\0" * 56)
            await pub.flush()  # one message at a time: its latency, not a batch's
            ahead = t0 + (k + 1) * period - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)
        await asyncio.wait_for(done.wait(), RUN_DEADLINE_S)
        return lat
    finally:
        await pub.close()
        await sub.close()


def pct(lat: list[int], q: float) -> float:
    """The ``q`` quantile in microseconds."""
    return statistics.quantiles(lat, n=1000)[int(q * 1000) - 1] / 1000 if len(lat) > 1 else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    ap.add_argument("--messages", type=int, default=None, help="messages per throughput run")
    ap.add_argument("--rate", type=float, default=10_000, help="paced latency rate, msg/s")
    ap.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="bridge and nats-py runs per size, alternated; medians (default 3, quick 1)",
    )
    ap.add_argument("--json", action="store_true", help="print JSON only")
    args = ap.parse_args()
    n = args.messages or (5_000 if args.quick else 200_000)
    repeat = args.repeat or (1 if args.quick else 3)
    lat_n = int(args.rate * (0.5 if args.quick else 10))

    from mycelium.bridge.natsd import NatsServer

    results: dict[str, Any] = {"messages": n, "rate": args.rate, "repeat": repeat}
    results["load_average"] = [round(x, 2) for x in os.getloadavg()]
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="mycelium-bench-bridge-") as tmp:
        workdir = Path(tmp)
        server = NatsServer(workdir / "nats").start()
        try:
            socks = {
                "B": _host(workdir, "B", server.url, 'import = ["market_data"]', procs),
                "A": _host(workdir, "A", server.url, 'export = ["market_data", "signals"]', procs),
            }
            for size in (64, 1024):
                # Alternated, medians: on a shared machine a single run of either is noise.
                bridge_rates, alone_rates = [], []
                for _ in range(repeat):
                    secs, _ = bridge_run(socks, n, size, 0)
                    bridge_rates.append(n / secs)
                    alone_rates.append(
                        asyncio.run(nats_publish_rate(server.url, n, size, 1024, False))
                    )
                bridged, alone = statistics.median(bridge_rates), statistics.median(alone_rates)
                export_secs = export_run(socks["A"], server.url, n, size)
                with_headers = asyncio.run(nats_publish_rate(server.url, n, size, 1024, True))
                results[f"bridge_{size}B_msg_s"] = round(bridged)
                results[f"nats_py_js_publish_{size}B_msg_s"] = round(alone)
                results[f"nats_py_js_publish_headers_{size}B_msg_s"] = round(with_headers)
                results[f"ratio_{size}B"] = round(bridged / alone, 3)
                results[f"export_alone_{size}B_msg_s"] = round(n / export_secs)
                results[f"ratio_export_alone_{size}B"] = round(n / export_secs / alone, 3)
            _, lat = bridge_run(socks, lat_n, 64, args.rate)
            rtt = asyncio.run(nats_round_trip(server.url, lat_n, args.rate))
            results |= {
                "bridge_latency_p50_us": round(pct(lat, 0.5), 1),
                "bridge_latency_p99_us": round(pct(lat, 0.99), 1),
                "nats_py_core_p50_us": round(pct(rtt, 0.5), 1),
                "nats_py_core_p99_us": round(pct(rtt, 0.99), 1),
            }
        finally:
            for proc in reversed(procs):
                proc.stop()
            server.stop()
    results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for size in (64, 1024):
        print(f"A -> B through NATS, {size:>4} B: {results[f'bridge_{size}B_msg_s']:>9,} msg/s   "
              f"nats-py JetStream publish alone: {results[f'nats_py_js_publish_{size}B_msg_s']:>9,}"
              f" msg/s   ratio {results[f'ratio_{size}B']:.2f} (target >= 0.80)   "
              f"(nats-py with the bridge's headers: "
              f"{results[f'nats_py_js_publish_headers_{size}B_msg_s']:,} msg/s)")  # fmt: skip
        print(f"   A's export alone (local ring -> JetStream acked), {size:>4} B: "
              f"{results[f'export_alone_{size}B_msg_s']:>9,} msg/s   "
              f"ratio {results[f'ratio_export_alone_{size}B']:.2f}")  # fmt: skip
    print(f"latency at {args.rate:,.0f} msg/s, 64 B: bridge p50 {results['bridge_latency_p50_us']}"
          f" us / p99 {results['bridge_latency_p99_us']} us;   nats-py core pub->sub p50 "
          f"{results['nats_py_core_p50_us']} us / p99 {results['nats_py_core_p99_us']} us")  # fmt: skip
    print(f"load average (1, 5, 15 min) at the start {results['load_average']}, at the end "
          f"{results['load_average_end']}; throughput: medians of {repeat} alternated runs "
          f"of {n:,} messages")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
