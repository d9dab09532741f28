"""The peer comparison's smoke run: ``tools/compare_peers.py --quick`` with the peers that
need nothing beyond the test extras finishes within two minutes and writes JSON with every
section, each figure carrying its load average; a peer that is not installed is listed
as skipped with the reason, never silently dropped."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[2] / "tools"
SECTIONS = ("throughput", "batched", "rtt", "fanout", "fixed_rate", "idle", "memory")


def test_quick_run_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "peers.json"
    proc = subprocess.run(
        [sys.executable, str(TOOLS / "compare_peers.py"), "--quick", "--json", str(out),
         "--docs", str(tmp_path), "--peers", "mycelium,bare ring,no-such-peer-installed"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "unknown peers" in proc.stderr  # a typo is refused
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(TOOLS / "compare_peers.py"), "--quick", "--json", str(out),
         "--docs", str(tmp_path), "--peers", "mycelium,bare ring"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert elapsed < 110, f"the smoke run took {elapsed:.0f} s"  # a loaded 2-core box
    data = json.loads(out.read_text())
    assert data["quick"] and data["commit"] and data["date"]
    for section in SECTIONS:
        rows = data["results"][section]
        assert rows, f"section {section} is empty"
        for by_peer in rows.values():
            for peer, cell in by_peer.items():
                assert "error" not in cell, f"{section} {peer}: {cell['error']}"
                assert "load1" in cell
    assert set(data["results"]["fanout"]) == {"N=1", "N=4"}
    assert data["results"]["throughput"]["64 B"]["mycelium"]["delivered"] == 1.0
    page = (tmp_path / "benchmarks.md").read_text()
    assert "## Fanout" in page and data["commit"] in page


def test_a_peer_not_installed_is_skipped_and_says_so() -> None:
    sys.path.insert(0, str(TOOLS))
    import peers

    real = peers.PEERS["zmq push/pull"]
    peers.PEERS["zmq push/pull"] = ("no_such_module_here", *real[1:])
    try:
        assert "not installed" in (peers.missing("zmq push/pull") or "")
    finally:
        peers.PEERS["zmq push/pull"] = real
