"""Golden vectors for the Protocol V2 codec tests.

The vectors live in ``shared/protocol-v2`` beside the repository (produced by the original
Rust implementation; see its README). A test that takes a ``vector``, ``negative`` or
``layouts`` argument runs once per vector, or is skipped with the reason when the
directory is missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

VECTORS_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "protocol-v2"
MISSING = f"golden vectors not found at {VECTORS_DIR.resolve()}"


def _load_jsonl(name: str) -> list[dict[str, Any]]:
    path = VECTORS_DIR / name
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


VECTORS = _load_jsonl("vectors.jsonl")
NEGATIVES = _load_jsonl("negative.jsonl")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for argname, cases in (("vector", VECTORS), ("negative", NEGATIVES)):
        if argname in metafunc.fixturenames:
            if cases:
                metafunc.parametrize(argname, cases, ids=[case["name"] for case in cases])
            else:
                metafunc.parametrize(
                    argname, [pytest.param(None, marks=pytest.mark.skip(reason=MISSING))]
                )


@pytest.fixture(scope="session")
def layouts() -> dict[str, Any]:
    path = VECTORS_DIR / "layouts.json"
    if not path.is_file():
        pytest.skip(MISSING)
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def vectors_by_name() -> dict[str, dict[str, Any]]:
    if not VECTORS:
        pytest.skip(MISSING)
    return {vector["name"]: vector for vector in VECTORS}
