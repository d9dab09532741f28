"""``tools/figures.py`` turns the tools' saved output into the README's table: every row
is rendered from the input (no figure typed by hand), a figure the run did not measure
says so, and only the text between the README's two markers changes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
DATA = Path(__file__).resolve().parents[1] / "data" / "figures_quick.json"
sys.path.insert(0, str(TOOLS))
import figures  # a tool, found through the path set above  # noqa: E402


@pytest.fixture
def saved() -> dict:
    return json.loads(DATA.read_text())


def test_table_carries_the_run_and_every_figure(saved: dict) -> None:
    block = figures.render(saved["figures"], saved["peers"])
    assert block.startswith(figures.BEGIN) and block.endswith(figures.END)
    assert "2026-12-01T23:20+00:00" in block and "`144ca8f`" in block
    codec = {r["case"]: r["msgs_per_s"] for r in saved["figures"]["codec"]["result"]["results"]}
    assert f"{codec['encode_message'] / 1e6:.2f} M" in block
    broker = saved["figures"]["broker"]["result"]
    ratio = broker["view_1KiB"]["recv_msg_s"] / broker["per_message_1KiB"]["recv_msg_s"]
    assert f"x{ratio:.2f}" in block
    assert "100.0000% delivered" in block
    # The quick peer run has no 16- or 50-consumer fanout: said, not invented.
    assert "not measured / not measured" in block
    rows = [line for line in block.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(figures.rows(saved["figures"], saved["peers"]))
    assert all(line.count("|") == 6 for line in rows)  # five cells each


def test_without_a_peer_run_the_table_says_so(saved: dict) -> None:
    block = figures.render(saved["figures"], None)
    assert "No `docs/benchmarks.json`" in block and "pyzmq" not in block


def test_only_the_marked_block_of_the_readme_changes(
    saved: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{figures.BEGIN}\nold table\n{figures.END}\noutro\n")
    monkeypatch.setattr(figures, "README", readme)
    block = figures.render(saved["figures"], saved["peers"])
    figures.rewrite_readme(block)
    text = readme.read_text()
    assert text == f"intro\n{block}\noutro\n" and "old table" not in text
