"""Write the recorded sample feeds in mycelium/services/samples/.

The samples are what the adapters read with ``--input``: a Kraken WebSocket v2 session
(status, subscribe acks, trade and ticker updates, book snapshots and updates with
Kraken's checksums, heartbeats) and a Polygon JSON-RPC session (an ``eth_getLogs``
backfill reply, subscription ids, then ``eth_subscribe`` notifications of Sync/Swap and
V3 Mint/Burn logs and new heads, one reorged log marked ``removed``). They
come from the built-in generators with a fixed seed and a fixed clock, so running this
again rewrites them byte for byte.

    python tools/make_samples.py
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from mycelium.services import kraken, polygon

SAMPLES = Path(__file__).resolve().parents[1] / "mycelium" / "services" / "samples"
SEED = 7
START_NS = 1_700_000_000_000_000_000
TICK_NS = 10_000_000
LINES = 300


def clock() -> itertools.count[int]:
    return itertools.count(START_NS, TICK_NS)


def kraken_lines() -> list[str]:
    return list(itertools.islice(kraken.generate(SEED, clock()), LINES))


def polygon_lines() -> list[str]:
    """A backfill reply holding the first logs, then the live stream, one log reorged."""
    stream = list(itertools.islice(polygon.generate(SEED, clock()), LINES))
    logs = [
        json.loads(line)["params"]["result"] for line in stream[3:13]
    ]  # after the three replies
    backfill = json.dumps({"jsonrpc": "2.0", "id": 3, "result": [x for x in logs if "topics" in x]})
    reorged = json.loads(stream[-1])
    reorged["params"]["result"]["removed"] = True
    return [backfill, *stream, json.dumps(reorged)]


def main() -> None:
    for name, lines in (
        ("kraken_v2.jsonl", kraken_lines()),
        ("polygon_logs.jsonl", polygon_lines()),
    ):
        path = SAMPLES / name
        path.write_text("".join(line + "\n" for line in lines))
        print(f"wrote {len(lines)} lines to {path}")


if __name__ == "__main__":
    main()
