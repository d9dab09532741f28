"""Golden vectors for the Protocol V2 codec tests.

The vectors live in ``tests/data/protocol-v2`` (produced by the original Rust
implementation; see its README). A test that takes a ``vector``, ``negative`` or
``layouts`` argument runs once per vector; a missing vector file fails the run, it is
never skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

VECTORS_DIR = Path(__file__).resolve().parents[1] / "data" / "protocol-v2"


def _vector_file(name: str) -> Path:
    """The path of a golden vector file; a missing one is an error, never a skip."""
    path = VECTORS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"golden vector file missing: {path}")
    return path


def _load_jsonl(name: str) -> list[dict[str, Any]]:
    text = _vector_file(name).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


VECTORS = _load_jsonl("vectors.jsonl")
NEGATIVES = _load_jsonl("negative.jsonl")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for argname, cases in (("vector", VECTORS), ("negative", NEGATIVES)):
        if argname in metafunc.fixturenames:
            assert cases, f"no {argname} cases in {VECTORS_DIR}"
            metafunc.parametrize(argname, cases, ids=[case["name"] for case in cases])


@pytest.fixture(scope="session")
def layouts() -> dict[str, Any]:
    return json.loads(_vector_file("layouts.json").read_text())


@pytest.fixture(scope="session")
def vectors_by_name() -> dict[str, dict[str, Any]]:
    return {vector["name"]: vector for vector in VECTORS}
