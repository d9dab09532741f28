"""The throughput and latency benchmarks as tests: print the figures, check the targets.

Marked ``perf``, so CI skips them (``pytest -m perf`` runs them). Each runs a benchmark
tool with ``--json`` in a subprocess, prints what it measured and checks it:

* ``tools/bench_codec.py`` (Protocol V2 construction and parsing) and
  ``tools/bench_ring.py`` (one lane, no broker) carry their own targets: every one must
  be met.
* ``tools/bench_broker.py`` (through a real broker) is held to the original plan:
  1 KiB messages, one producer and one consumer process, at least 1,000,000 msg/s sent
  and 1,600,000 msg/s received; end-to-end latency under 100 us at p99 for the
  spinning, blocking and doorbell-only consumers, and under 20 us at p99 spinning.

A tool that is not there is skipped with the reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.perf

TOOLS = Path(__file__).resolve().parents[2] / "tools"
BENCH_TIMEOUT_S = 1800
#: The original plan's broker targets.
SEND_MSG_S = 1_000_000
RECV_MSG_S = 1_600_000
LATENCY_US = 100.0
SPIN_LATENCY_US = 20.0


def bench(name: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """Run ``tools/<name> --json``; print and return its report."""
    tool = TOOLS / name
    assert tool.is_file(), f"{tool} is missing"
    out = subprocess.run(
        [sys.executable, str(tool), "--json"],
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_S,
    )
    try:
        report = json.loads(out.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"{name} printed no JSON (exit {out.returncode}):\n{out.stdout}{out.stderr}")
    with capsys.disabled():
        print(f"\n$ tools/{name} --json\n{json.dumps(report, indent=2)}")
    return report


def test_codec_meets_its_targets(capsys: pytest.CaptureFixture[str]) -> None:
    results = bench("bench_codec.py", capsys)["results"]
    missed = [r for r in results if not r["meets_target"]]
    assert not missed, missed


def test_ring_meets_its_targets(capsys: pytest.CaptureFixture[str]) -> None:
    targets = bench("bench_ring.py", capsys)["targets"]
    assert targets and all(targets.values()), targets


def test_broker_meets_the_plans_throughput_and_latency(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = bench("bench_broker.py", capsys)
    per_message = report["per_message_1KiB"]
    assert per_message["send_msg_s"] >= SEND_MSG_S, per_message
    assert per_message["recv_msg_s"] >= RECV_MSG_S, per_message
    for case in ("spin", "block", "doorbell"):
        latency = report[f"latency_{case}"]
        assert latency["p99_us"] < LATENCY_US, (case, latency)
    assert report["latency_spin"]["p99_us"] < SPIN_LATENCY_US, report["latency_spin"]
