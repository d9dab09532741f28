"""Throughput of the Protocol V2 codec, in messages per second (median of several runs).

How this works. The per-message cases use the original benchmark's workload
(``src/bin/test_protocol.rs`` in AlphaPulse protocol_v2): one TLV of type 3 with a
24-byte payload, a 58-byte message, a fresh sequence number for every message, the
CRC-32 computed on construction and verified on parsing. The batch cases encode and
decode arrays of 74-byte Trade messages with ``mycelium.protocol.batch``, checksums
included. Each case runs ``--runs`` times with the garbage collector paused and reports
the median rate; the targets are those of issue 2, for this project's 2-core machine.

    python tools/bench_codec.py            # table
    python tools/bench_codec.py --quick    # fewer messages and runs, a smoke test
    python tools/bench_codec.py --json     # machine-readable
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from mycelium.protocol import MessageBuilder, encode_message, parse_message
from mycelium.protocol.batch import TRADE_MESSAGE_DTYPE, decode_batch, encode_batch

# PerfTestData {field1: u64, field2: u64, field3: u32, field4: u32} of the original benchmark
PAYLOAD = bytes.fromhex("111111111111111122222222222222223333333344444444")
TLV_TYPE = 3  # OrderBook
DOMAIN = 1  # MarketData
SOURCE = 1  # BinanceCollector
TIMESTAMP_NS = 1_700_000_000_123_456_789
MESSAGE_BYTES = 58


@dataclass
class Result:
    case: str
    messages: int
    msgs_per_s: float  # median over runs
    runs_msgs_per_s: list[float]
    target_msgs_per_s: float | None

    @property
    def verdict(self) -> str:
        if self.target_msgs_per_s is None:
            return ""
        return "ok" if self.msgs_per_s >= self.target_msgs_per_s else "BELOW TARGET"


def measure(run: Callable[[], None], messages: int, runs: int) -> list[float]:
    """Rates of ``runs`` timed calls of ``run``, each handling ``messages`` messages."""
    rates = []
    for _ in range(runs):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            run()
            elapsed = time.perf_counter() - start
        finally:
            gc.enable()
        rates.append(messages / elapsed)
    return rates


def per_message_cases(n: int) -> list[tuple[str, Callable[[], None], float | None]]:
    def builder_chain() -> None:
        for seq in range(n):
            (
                MessageBuilder(DOMAIN, SOURCE)
                .sequence(seq)
                .timestamp(TIMESTAMP_NS)
                .flags(0)
                .add_tlv(TLV_TYPE, PAYLOAD)
                .build()
            )

    def one_call() -> None:
        for seq in range(n):
            encode_message(
                DOMAIN, SOURCE, [(TLV_TYPE, PAYLOAD)], sequence=seq, timestamp=TIMESTAMP_NS
            )

    messages = [
        encode_message(DOMAIN, SOURCE, [(TLV_TYPE, PAYLOAD)], sequence=seq, timestamp=TIMESTAMP_NS)
        for seq in range(n)
    ]
    assert len(messages[0]) == MESSAGE_BYTES

    def parse() -> None:
        for raw in messages:
            for tlv in parse_message(raw).tlvs:
                tlv.type, tlv.payload  # noqa: B018 - a user reads them; so does the benchmark

    return [
        ("MessageBuilder chain", builder_chain, None),
        ("encode_message", one_call, 1.1e6),
        ("parse (every TLV read)", parse, 1.65e6),
    ]


def batch_cases(n: int) -> list[tuple[str, Callable[[], None], float | None]]:
    records = np.zeros(n, TRADE_MESSAGE_DTYPE)
    records["relay_domain"] = DOMAIN
    records["source"] = SOURCE
    records["sequence"] = np.arange(n)
    records["timestamp"] = TIMESTAMP_NS
    records["price"] = np.arange(n) * 100
    records["volume"] = 100_000_000
    out = bytearray(n * TRADE_MESSAGE_DTYPE.itemsize)
    encoded = bytes(encode_batch(records))

    def encode() -> None:
        encode_batch(records, out)

    def decode() -> None:
        decode_batch(encoded)

    return [
        ("batch encode (Trade, 74 B)", encode, 4e6),
        ("batch decode (Trade, 74 B)", decode, 10e6),
    ]


def run_all(per_message: int, batch: int, runs: int) -> list[Result]:
    results = []
    for count, cases in ((per_message, per_message_cases), (batch, batch_cases)):
        for name, run, target in cases(count):
            run()  # warm-up: caches, CRC tables, page faults
            rates = measure(run, count, runs)
            results.append(Result(name, count, statistics.median(rates), rates, target))
    return results


def print_table(results: list[Result], runs: int) -> None:
    print(
        f"Protocol V2 codec: median of {runs} runs, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"per-message workload: 1 TLV of type {TLV_TYPE}, {len(PAYLOAD)}-byte payload, "
        f"{MESSAGE_BYTES}-byte messages, fresh sequence, CRC-32 computed and verified"
    )
    print()
    print(f"{'case':<28} {'messages':>10} {'msg/s':>14} {'target':>12}  result")
    for r in results:
        target = f"{r.target_msgs_per_s:,.0f}" if r.target_msgs_per_s else "-"
        print(f"{r.case:<28} {r.messages:>10,} {r.msgs_per_s:>14,.0f} {target:>12}  {r.verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages and runs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--runs", type=int, help="timed runs per case (default 5, quick 3)")
    args = parser.parse_args(argv)
    runs = args.runs or (3 if args.quick else 5)
    per_message, batch = (20_000, 100_000) if args.quick else (200_000, 1_000_000)
    results = run_all(per_message, batch, runs)
    if args.json:
        doc = {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "runs": runs,
            "results": [asdict(r) | {"meets_target": r.verdict != "BELOW TARGET"} for r in results],
        }
        json.dump(doc, sys.stdout, indent=2)
        print()
    else:
        print_table(results, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
