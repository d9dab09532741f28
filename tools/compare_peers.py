#!/usr/bin/env python3
"""Mycelium against its peers, side by side in one interleaved run.

How this works
--------------
Every case runs each peer in turn (``peers.py``: Mycelium's real broker and client, a
bare pure-Python shm ring as the ceiling, a Python model of the per-domain relay, pyzmq
PUSH/PULL and PUB/SUB with default and tuned HWM, eclipse-zenoh, faster-fifo,
multiprocessing.Queue), and rounds repeat the whole sequence (A B C ... A B C ...), so a
change in the machine's load hits every peer alike; each figure is the median over the
rounds, with the 1-minute load average measured at its runs. Each run gets fresh
transports; receivers start first and say when they are ready, then the sender starts.
Each side times itself from its first message to its last, CPU by ``process_time``.

Sections: throughput (64 B, 1 KiB), batched (where the peer has a batch API), ping-pong
round trip (p50/p99/p99.9), fanout to N receivers (producer rate, aggregate deliveries,
CPU-seconds per million deliveries), a receiver's CPU and one-way latency at a fixed
100,000 msg/s of 512 B (1 ms bursts), an idle receiver's CPU, and memory (RSS of sender
and receiver processes). A peer that is not installed is skipped and says so. Every wait
has a deadline; children and transports are stopped in ``finally``.

    python tools/compare_peers.py                 # full run, writes docs/benchmarks.md
    python tools/compare_peers.py --quick         # smoke run (CI: tests/tools)
    python tools/compare_peers.py --peers mycelium,"bare ring" --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
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

sys.path.insert(0, str(Path(__file__).parent))
import peers  # a sibling module, found through the path set above

STAMP = struct.Struct("<q")
READY_S = 60.0
#: A receiver that sees nothing for this long stops (a peer that dropped messages).
GAP_S = 3.0
RUN_S = 120.0
BATCH = 256
FIXED_RATE = 100_000
FIXED_SIZE = 512
BURST_S = 1e-3
SECTIONS = ("throughput", "batched", "rtt", "fanout", "fixed_rate", "idle", "memory")
DOCS = Path(__file__).resolve().parent.parent / "docs"
#: What the peers' own libraries leave in /dev/shm when their processes have exited
#: (zenoh's shared-memory files, iceoryx2's node records): removed after the run if new.
PEER_LEFTOVERS = ("*.zenoh", "iox2_*")
SHM = Path("/dev/shm")


# -- children ----------------------------------------------------------------------------
def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def child_recv(name: str, spec: dict, channel: str, index: int, n: int, batched: bool,
               ready: Any, out: Any) -> None:  # fmt: skip
    r = peers.open_receiver(name, spec, channel, index)
    try:
        ready.set()
        first = r.recv(READY_S)
        if first is None:
            out.put({"received": 0})
            return
        cpu0, t0 = time.process_time(), time.perf_counter()
        got, lat, last = 1, [], t0
        stamped = len(first) >= STAMP.size and first[:1] != b"\xab"
        many = getattr(r, "recv_many", None) if batched else None
        while got < n:
            if many is not None:
                batch = many(min(BATCH * 4, n - got))
                if not batch:
                    if time.perf_counter() - last > GAP_S:
                        break
                    continue
                got += len(batch)
            else:
                data = r.recv(GAP_S)
                if data is None:
                    break
                got += 1
                if stamped:
                    lat.append(time.perf_counter_ns() - STAMP.unpack_from(data)[0])
            last = time.perf_counter()
        out.put({"received": got, "recv_s": last - t0, "cpu_s": time.process_time() - cpu0,
                 "lat_ns": lat, "rss": _rss()})  # fmt: skip
    finally:
        r.close()


def child_send(name: str, spec: dict, n: int, size: int, batched: bool, rate: float,
               out: Any) -> None:  # fmt: skip
    s = peers.open_sender(name, spec, "data")
    try:
        body = b"\xab" * size
        cpu0, t0 = time.process_time(), time.perf_counter()
        if rate:  # bursts of rate * BURST_S stamped messages, one every BURST_S
            per = max(1, int(rate * BURST_S))
            pad = b"\0" * (size - STAMP.size)
            due = time.perf_counter()
            sent = 0
            while sent < n:
                for _ in range(min(per, n - sent)):
                    s.send(STAMP.pack(time.perf_counter_ns()) + pad)
                sent += per
                due += BURST_S
                left = due - time.perf_counter()
                if left > 0:
                    time.sleep(left)
        elif batched and hasattr(s, "send_many"):
            batch = [body] * BATCH
            for i in range(0, n, BATCH):
                s.send_many(batch if n - i >= BATCH else batch[: n - i])
        else:
            send = s.send
            for _ in range(n):
                send(body)
        out.put({"sent": n, "send_s": time.perf_counter() - t0,
                 "cpu_s": time.process_time() - cpu0, "rss": _rss()})  # fmt: skip
    finally:
        s.close()


def child_echo(name: str, spec: dict, n: int, ready: Any, out: Any) -> None:
    r = peers.open_receiver(name, spec, "ping", 0)
    s = peers.open_sender(name, spec, "pong")
    try:
        ready.set()
        while True:
            data = r.recv(GAP_S * 3)
            if data is None or data == b"stop":
                break
            s.send(data)
        out.put({})
    finally:
        s.close()
        r.close()


def child_ping(name: str, spec: dict, n: int, ready: Any, out: Any) -> None:
    r = peers.open_receiver(name, spec, "pong", 0)
    ready.set()
    s = peers.open_sender(name, spec, "ping")
    try:
        for _ in range(20):  # the first ping may go before the echo is wired (slow joiners)
            s.send(b"warm")
            if r.recv(1.0) is not None:
                break
        rtt = []
        for _ in range(n):
            t = time.perf_counter_ns()
            s.send(STAMP.pack(t))
            if r.recv(GAP_S) is None:
                break
            rtt.append(time.perf_counter_ns() - t)
        s.send(b"stop")
        out.put({"rtt_ns": rtt})
    finally:
        s.close()
        r.close()


def child_idle(name: str, spec: dict, seconds: float, ready: Any, out: Any) -> None:
    r = peers.open_receiver(name, spec, "data", 0)
    try:
        ready.set()
        cpu0, t0 = time.process_time(), time.perf_counter()
        end = t0 + seconds
        while time.perf_counter() < end:
            r.recv(end - time.perf_counter())
        out.put({"cpu_frac": (time.process_time() - cpu0) / (time.perf_counter() - t0)})
    finally:
        r.close()


# -- running one case ------------------------------------------------------------------
class Run:
    """The children and transports of one peer's run, always stopped."""

    def __init__(self, name: str, consumers: int) -> None:
        self.name = name
        self.ctx = mp.get_context("spawn")
        self.workdir = Path(tempfile.mkdtemp(prefix="myc-peers-"))
        self.spec = peers.setup(name, self.workdir, consumers)
        self.procs: list[Any] = []

    def start(self, target: Any, *args: Any, ready: bool = True) -> tuple[Any, Any]:
        ev, out = self.ctx.Event(), self.ctx.Queue()
        a = (self.name, peers.child_spec(self.spec), *args)
        a = (*a, ev, out) if ready else (*a, out)
        p = self.ctx.Process(target=target, args=a, daemon=True)
        p.start()
        self.procs.append(p)
        if ready and not ev.wait(READY_S):
            raise RuntimeError(f"{self.name}: a child was not ready")
        return p, out

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
                p.join(5)
        peers.teardown(self.name, self.spec)
        with contextlib.suppress(OSError):
            for f in self.workdir.iterdir():
                f.unlink()
            self.workdir.rmdir()


def stream(name: str, n: int, size: int, consumers: int = 1, batched: bool = False,
           rate: float = 0.0) -> dict[str, Any]:  # fmt: skip
    with Run(name, consumers) as run:
        outs = [run.start(child_recv, "data", i, n, batched)[1] for i in range(consumers)]
        _, sout = run.start(child_send, n, size, batched, rate, ready=False)
        sent = sout.get(timeout=RUN_S)
        recvs = [o.get(timeout=RUN_S + GAP_S) for o in outs]
    got = sum(r["received"] for r in recvs)
    wall = max((r.get("recv_s", 0.0) for r in recvs), default=0.0) or 1e-9
    cpu = sent["cpu_s"] + sum(r.get("cpu_s", 0.0) for r in recvs)
    lat = sorted(x for r in recvs for x in r.get("lat_ns", []))
    res = {
        "send_msg_s": n / sent["send_s"],
        "recv_msg_s": got / consumers / wall,
        "deliveries_s": got / wall,
        "delivered": got / (n * consumers),
        "cpu_s_per_m": cpu / max(got, 1) * 1e6,
        "recv_cpu_frac": statistics.median(r.get("cpu_s", 0.0) / max(r.get("recv_s", 1e-9), 1e-9) for r in recvs),
        "rss_sender": sent["rss"],
        "rss_receiver": statistics.median(r.get("rss", 0) for r in recvs),
    }  # fmt: skip
    if lat:
        res |= {"lat_p50_us": _pct(lat, 50), "lat_p99_us": _pct(lat, 99)}
    return res


def rtt(name: str, n: int) -> dict[str, Any]:
    with Run(name, 1) as run:
        _, eout = run.start(child_echo, n)
        _, pout = run.start(child_ping, n)
        samples = sorted(pout.get(timeout=RUN_S)["rtt_ns"])
        eout.get(timeout=RUN_S)
    if not samples:
        raise RuntimeError(f"{name}: no round trip completed")
    return {"p50_us": _pct(samples, 50), "p99_us": _pct(samples, 99),
            "p999_us": _pct(samples, 99.9), "samples_us": _thin(samples)}  # fmt: skip


def idle(name: str, seconds: float) -> dict[str, Any]:
    with Run(name, 1) as run:
        _, out = run.start(child_idle, seconds)
        return {"cpu_frac": out.get(timeout=seconds + RUN_S)["cpu_frac"]}


def _pct(sorted_ns: list[int], p: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * p / 100))] / 1e3


def _thin(sorted_ns: list[int], keep: int = 400) -> list[float]:
    """Up to ``keep`` evenly spaced quantiles (us), enough for a CDF plot."""
    step = max(1, len(sorted_ns) // keep)
    return [x / 1e3 for x in sorted_ns[::step]]


# -- the whole comparison ------------------------------------------------------------
def cases(quick: bool) -> list[tuple[str, str, Any]]:
    """(section, row, function(peer) -> dict) in the order each round runs them."""
    k = 0.25 if quick else 10
    fan = (1, 4) if quick else (1, 4, 16, 50)
    out: list[tuple[str, str, Any]] = [
        ("throughput", "64 B", lambda p: stream(p, int(20_000 * k), 64)),
        ("throughput", "1 KiB", lambda p: stream(p, int(20_000 * k), 1024)),
        ("batched", "64 B x256", lambda p: stream(p, int(50_000 * k), 64, batched=True)),
        ("rtt", "64 B", lambda p: rtt(p, int(500 * k))),
    ]
    for nc in fan:
        out.append(("fanout", f"N={nc}", lambda p, nc=nc: stream(p, int(5_000 * k), 64, nc)))
    secs = 0.3 if quick else 3.0
    out += [
        ("fixed_rate", "100k msg/s 512 B",
         lambda p: stream(p, int(FIXED_RATE * secs), FIXED_SIZE, rate=FIXED_RATE)),
        ("idle", "receiver", lambda p: idle(p, secs)),
    ]  # fmt: skip
    return out


def run_all(names: list[str], quick: bool, rounds: int) -> dict[str, Any]:
    skipped = {n: why for n in names if (why := peers.missing(n))}
    live = [n for n in names if n not in skipped]
    todo = cases(quick)
    raw: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    loads: dict[tuple[str, str, str], list[float]] = {}
    for r in range(rounds):
        for section, row, fn in todo:
            for name in live:
                if section == "fanout" and name in peers.NO_FANOUT:
                    continue
                key = (section, row, name)
                print(f"round {r + 1}/{rounds}  {section:10} {row:18} {name}", flush=True)
                try:
                    res = fn(name)
                except Exception as exc:  # one peer failing must not stop the comparison
                    res = {"error": f"{type(exc).__name__}: {exc}"}
                raw.setdefault(key, []).append(res)
                loads.setdefault(key, []).append(os.getloadavg()[0])
    results: dict[str, Any] = {s: {} for s in SECTIONS}
    for (section, row, name), runs in raw.items():
        ok = [x for x in runs if "error" not in x]
        cell: dict[str, Any] = {"load1": round(statistics.median(loads[(section, row, name)]), 2)}
        if ok:
            for field in ok[0]:
                vals = [x[field] for x in ok if field in x]
                if vals and isinstance(vals[0], int | float):
                    cell[field] = statistics.median(vals)
                else:
                    cell[field] = vals[len(vals) // 2]
        else:
            cell["error"] = runs[-1]["error"]
        results[section].setdefault(row, {})[name] = cell
    for row, by_peer in results["throughput"].items():
        if row == "64 B":
            results["memory"]["rss per process"] = {
                n: {"sender_mib": c.get("rss_sender", 0) / 2**20,
                    "receiver_mib": c.get("rss_receiver", 0) / 2**20, "load1": c["load1"]}
                for n, c in by_peer.items()
            }  # fmt: skip
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "quick": quick,
        "rounds": rounds,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "peers": {n: peers.PEERS[n][5] for n in live},
        "skipped": skipped,
        "results": results,
    }


def _remove_peer_leftovers(before: set[str]) -> list[str]:
    """Unlink what the peers left in /dev/shm during this run (never what was there)."""
    gone = []
    for pattern in PEER_LEFTOVERS:
        for path in SHM.glob(pattern):
            if path.name not in before:
                with contextlib.suppress(OSError):
                    path.unlink()
                    gone.append(path.name)
    return gone


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts, one round")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3)")
    ap.add_argument("--peers", default=",".join(peers.PEERS), help="comma-separated peer names")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--docs", type=Path, default=None,
                    help="render benchmarks.md and plots here (default: docs/ unless --quick)")  # fmt: skip
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.peers.split(",") if n.strip()]
    unknown = [n for n in names if n not in peers.PEERS]
    if unknown:
        ap.error(f"unknown peers {unknown}; known: {list(peers.PEERS)}")
    rounds = args.rounds or (1 if args.quick else 3)
    before = {p.name for p in SHM.iterdir()}
    try:
        data = run_all(names, args.quick, rounds)
    finally:
        if gone := _remove_peer_leftovers(before):
            print(f"removed what the peers left in /dev/shm: {', '.join(sorted(gone))}")
    for n, why in data["skipped"].items():
        print(f"skipped {n}: {why}")
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
    docs = args.docs or (None if args.quick else DOCS)
    if docs is not None:
        import render_benchmarks

        render_benchmarks.render(data, docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
