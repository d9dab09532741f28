#!/usr/bin/env python3
"""Every figure the README quotes, from one run of the tools, with its date, commit and load.

How this works
--------------
The tools measure; this script only runs them one after another and writes down what they
printed, so that no figure in the docs is older or from another tree than its neighbours.
It runs ``bench_codec.py``, ``bench_ring.py`` and ``bench_broker.py`` (each ``--json``),
``bench_delivery.py``, ``stress.py`` and ``leak_check.py`` (their summary lines), noting
the 1-minute load average before and after each, and reads the peer comparison that
``compare_peers.py`` wrote in the same session (``docs/benchmarks.json``). It saves
everything to ``docs/figures.json`` and rewrites the README's benchmark table between its
two marker lines. ``--render`` redraws the table from a saved ``docs/figures.json``
without measuring.

    python tools/compare_peers.py --json docs/benchmarks.json   # the peers (about 30 min)
    python tools/figures.py                                     # the rest, then the README
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FIGURES = ROOT / "docs" / "figures.json"
PEERS = ROOT / "docs" / "benchmarks.json"
BEGIN, END = "<!-- figures: begin (tools/figures.py) -->", "<!-- figures: end -->"
STRESS_RATE, STRESS_SIZE = 500_000, 512
LEAK = ["--rounds", "10", "--messages", "100000", "--size", "1024"]
#: (step, tool, its arguments, whether it prints JSON)
STEPS: tuple[tuple[str, str, list[str], bool], ...] = (
    ("codec", "bench_codec.py", ["--json"], True),
    ("ring", "bench_ring.py", ["--json"], True),
    ("broker", "bench_broker.py", ["--json", "--runs", "1"], True),
    ("delivery", "bench_delivery.py", [], False),
    ("stress", "stress.py", [], False),  # its arguments: --stress-s
    ("leak", "leak_check.py", LEAK, False),
)
STEP_TIMEOUT_S = 1800.0


def _commit() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    return out.stdout.strip() or "unknown"


def run_step(tool: str, args: list[str], is_json: bool) -> dict[str, Any]:
    """One tool, its output and the load average around it."""
    load0, t0 = os.getloadavg()[0], time.monotonic()
    cmd = [sys.executable, str(ROOT / "tools" / tool), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S,
                          check=False)  # fmt: skip
    step: dict[str, Any] = {
        "command": "python tools/" + " ".join([tool, *args]),
        "load1": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "seconds": round(time.monotonic() - t0, 1),
        "exit": proc.returncode,
    }
    if proc.returncode != 0 and not proc.stdout.strip():
        raise RuntimeError(f"{tool} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    if is_json:
        step["result"] = json.loads(proc.stdout)
    else:
        step["summary"] = proc.stdout.strip().splitlines()[-8:]
    return step


# -- the README table --------------------------------------------------------------------
def _m(x: float) -> str:
    return f"{x / 1e6:.2f} M"


def _load(step: dict[str, Any]) -> str:
    return "-".join(f"{x:.1f}" for x in sorted(set(step["load1"])))


def _line(lines: list[str], pattern: str) -> str:
    for text in lines:
        if found := re.search(pattern, text):
            return found.group(1)
    return "not printed"


def rows(fig: dict[str, Any], peers: dict[str, Any] | None) -> list[list[str]]:
    """The table's rows: what, command, figure, target, load."""
    codec = {r["case"]: r["msgs_per_s"] for r in fig["codec"]["result"]["results"]}
    ring = fig["ring"]["result"]
    tp = {(t["mode"].split(" ")[0], t["size"]): t["reader_msg_s"] for t in ring["throughput"]}
    lat = {t["strategy"]: t for t in ring["latency"] if t.get("samples")}
    b = fig["broker"]["result"]
    view, plain = b["view_1KiB"]["recv_msg_s"], b["per_message_1KiB"]["recv_msg_s"]
    stress, leak = fig["stress"]["summary"], fig["leak"]["summary"]
    out = [
        ["codec `encode_message` / parse (every TLV read), 58 B, CRC", "`tools/bench_codec.py`",
         f"{_m(codec['encode_message'])} / {_m(codec['parse (every TLV read)'])} msg/s",
         "1.1 M / 1.65 M", _load(fig["codec"])],
        ["codec batch encode / decode (numpy, Trade)", "same",
         f"{_m(codec['batch encode (Trade, 74 B)'])} / {_m(codec['batch decode (Trade, 74 B)'])} msg/s",
         "4 M / 10 M", _load(fig["codec"])],
        ["one ring, two processes: per message 64 B / 1 KiB (reader)", "`tools/bench_ring.py`",
         f"{_m(tp[('per', 64)])} / {_m(tp[('per', 1024)])} msg/s", "", _load(fig["ring"])],
        ["one ring, batched 64 B / 1 KiB", "same",
         f"{_m(tp[('batched', 64)])} / {_m(tp[('batched', 1024)])} msg/s", "", _load(fig["ring"])],
        ["one ring, latency p50 / p99 at 5,000 msg/s, 64 B", "same",
         ", ".join(f"{s} {t['p50']:.1f} / {t['p99']:.1f} us" for s, t in lat.items()),
         "p99 20 us spin / 100 us block", _load(fig["ring"])],
        ["broker, per message 64 B / 1 KiB (received)", "`tools/bench_broker.py`",
         f"{_m(b['per_message_64B']['recv_msg_s'])} / {_m(plain)} msg/s", "", _load(fig["broker"])],
        ["broker, batched 64 B / 1 KiB (received)", "same",
         f"{_m(b['batched_64B']['recv_msg_s'])} / {_m(b['batched_1KiB']['recv_msg_s'])} msg/s",
         "", _load(fig["broker"])],
        ["broker, `recv_view` 1 KiB against `recv`", "same",
         f"{_m(view)} msg/s, x{view / plain:.2f}", "x1.3", _load(fig["broker"])],
        ["broker, `recv_array` 64 B records: streaming / draining a full ring", "same",
         f"{_m(b['array_64B']['recv_msg_s'])} / {_m(b['array_drain_64B']['recv_msg_s'])}"
         " records/s", "20 M", _load(fig["broker"])],
        ["broker, one consumer of two topics against one of one topic, 64 B: per message"
         " / batched, live (drained)", "same",
         " / ".join(f"x{b[f'two_topic_{m}_64B']['ratio']:.2f}"
                    f" (x{b[f'two_topic_drain_{m}_64B']['ratio']:.2f})"
                    for m in ("per_message", "batched")), "x0.9", _load(fig["broker"])],
        ["broker, latency p50 / p99 at 5,000 msg/s, 64 B", "same",
         ", ".join(f"{k[8:]} {v['p50_us']:.1f} / {v['p99_us']:.1f} us"
                   for k, v in b.items() if k.startswith("latency_")),
         "p99 20 us spin / 100 us block", _load(fig["broker"])],
        ["manual `ack()` every 100 messages: cost against auto; a restarted durable's first"
         " backlog message", "`tools/bench_delivery.py`",
         _line(fig["delivery"]["summary"], r"\(cost (.*)\)") + "; "
         + _line(fig["delivery"]["summary"], r"first backlog\s+(.*) \(median"),
         "10%; 50 ms", _load(fig["delivery"])],
        ["500,000 msg/s of 512 B, sustained", f"`{fig['stress']['command']}`",
         _line(stress, r"delivery\s+(.*?);") + " delivered; CPU " + _line(stress, r"cpu\s+(.*) \(av"),
         "100%", _load(fig["stress"])],
        ["10 rounds of 100,000 x 1 KiB", f"`{fig['leak']['command']}`",
         _line(leak, r"RSS growth over the run: (.*)") + "; " + _line(leak, r"^(PASS|FAIL)$"),
         "< 100 MB", _load(fig["leak"])],
    ]  # fmt: skip
    if peers is not None:
        out += _peer_rows(peers)
    return out


def _peer_rows(peers: dict[str, Any]) -> list[list[str]]:
    """Mycelium against pyzmq at its defaults and the bare ring, fanout, CPU at a fixed rate."""
    res = peers["results"]
    where = f"`tools/compare_peers.py` ({peers['rounds']} rounds, {peers['commit']})"
    tput = res["throughput"]

    def ratio(row: str, other: str) -> str:
        ours, theirs = tput[row]["mycelium"], tput[row].get(other, {})
        if "recv_msg_s" not in ours or "recv_msg_s" not in theirs:
            return "not measured"
        return f"x{ours['recv_msg_s'] / theirs['recv_msg_s']:.2f}"

    fan = res["fanout"]

    def fanned(n: int) -> str:
        many = fan.get(f"N={n}", {}).get("mycelium", {})
        if "send_msg_s" not in many:
            return "not measured"
        return f"x{many['send_msg_s'] / fan['N=1']['mycelium']['send_msg_s']:.2f}"

    fixed = res["fixed_rate"]["100k msg/s 512 B"]["mycelium"]
    load = f"{min(c['load1'] for s in res.values() for r in s.values() for c in r.values()):.1f}"
    load += f"-{max(c['load1'] for s in res.values() for r in s.values() for c in r.values()):.1f}"
    return [
        ["against pyzmq PUSH/PULL (defaults), 64 B / 1 KiB received", where,
         f"{ratio('64 B', 'zmq push/pull')} / {ratio('1 KiB', 'zmq push/pull')}", "", load],
        ["against the bare pure-Python ring, 64 B / 1 KiB received", "same",
         f"{ratio('64 B', 'bare ring')} / {ratio('1 KiB', 'bare ring')}", "x0.75", load],
        ["producer rate with 16 / 50 fanout consumers, against 1", "same",
         f"{fanned(16)} / {fanned(50)}", "x0.7 / x0.5", load],
        ["consumer CPU, p99 one-way at 100,000 msg/s of 512 B", "same",
         f"{fixed['recv_cpu_frac']:.0%} of a core, p99 {fixed.get('lat_p99_us', 0):.0f} us",
         "10%, 100 us", load],
    ]  # fmt: skip


def render(fig: dict[str, Any], peers: dict[str, Any] | None) -> str:
    """The README's table block, markers included."""
    head = (f"Generated by `python tools/figures.py` on {fig['date']} at commit `{fig['commit']}`"
            f" ({fig['cpus']} CPUs, Python {fig['python']}); `load` is the 1-minute load average"
            " before and after each tool ran.")  # fmt: skip
    if peers is None:
        head += " No `docs/benchmarks.json` was found, so the peer rows are missing."
    table = ["| what | command | figure | target | load |", "| --- | --- | --- | --- | --- |"]
    table += ["| " + " | ".join(r) + " |" for r in rows(fig, peers)]
    return "\n".join([BEGIN, head, "", *table, END])


def rewrite_readme(block: str) -> None:
    text = README.read_text()
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    README.write_text(text[:start] + block + text[stop:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--render", action="store_true", help="redraw from docs/figures.json only")
    ap.add_argument("--stress-s", type=int, default=300, help="seconds of stress (default 300)")
    args = ap.parse_args(argv)
    if args.render:
        fig = json.loads(FIGURES.read_text())
    else:
        fig = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
            "commit": _commit(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        }
        stress = ["--duration", str(args.stress_s), "--rate", str(STRESS_RATE),
                  "--size", str(STRESS_SIZE)]  # fmt: skip
        for name, tool, tool_args, is_json in STEPS:
            tool_args = stress if name == "stress" else tool_args
            print(f"{name}: python tools/{tool} {' '.join(tool_args)}", flush=True)
            fig[name] = run_step(tool, tool_args, is_json)
        FIGURES.write_text(json.dumps(fig, indent=1))
    peers = json.loads(PEERS.read_text()) if PEERS.exists() else None
    block = render(fig, peers)
    rewrite_readme(block)
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
