"""The README's benchmark table is what ``tools/figures.py`` renders from the committed
run (``docs/figures.json`` and ``docs/benchmarks.json``): no figure typed by hand, every
row from the run, a figure the run lacks said to be missing, and only the text between
the README's two markers ever rewritten."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import figures  # a tool, found through the path set above  # noqa: E402


@pytest.fixture
def run() -> tuple[dict[str, Any], dict[str, Any]]:
    return json.loads(figures.FIGURES.read_text()), json.loads(figures.PEERS.read_text())


def test_the_readme_table_is_the_rendered_run(run: tuple[dict[str, Any], dict[str, Any]]) -> None:
    fig, peers = run
    block = figures.render(fig, peers)
    assert block in figures.README.read_text(), "README.md: rerun tools/figures.py --render"
    assert fig["date"] in block and f"`{fig['commit']}`" in block
    codec = {r["case"]: r["msgs_per_s"] for r in fig["codec"]["result"]["results"]}
    assert f"{codec['encode_message'] / 1e6:.2f} M" in block
    rows = [line for line in block.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + len(figures.rows(fig, peers))
    assert all(line.count("|") == 6 for line in rows)  # five cells each


def test_a_figure_the_run_lacks_is_said_to_be_missing(
    run: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    fig, peers = run
    quick = copy.deepcopy(peers)
    for n in ("N=16", "N=50"):  # a --quick peer run has fanout 1 and 4 only
        quick["results"]["fanout"].pop(n)
    assert "not measured / not measured" in figures.render(fig, quick)
    alone = figures.render(fig, None)
    assert "No `docs/benchmarks.json`" in alone and "pyzmq" not in alone


def test_only_the_marked_block_of_the_readme_changes(
    run: tuple[dict[str, Any], dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{figures.BEGIN}\nold table\n{figures.END}\noutro\n")
    monkeypatch.setattr(figures, "README", readme)
    block = figures.render(*run)
    figures.rewrite_readme(block)
    assert readme.read_text() == f"intro\n{block}\noutro\n"
