"""Fixtures for the data-plane tests: real segments under private broker ids, always removed.

``shm`` hands each test a ``ShmKit`` (see shm_kit.py) under a fresh broker id and tears it
down in ``finally``: every mapping closed, every object of that id unlinked. ``children``
starts functions in spawned processes and kills whatever still runs at teardown. After the
session, nothing of any broker id handed out may remain in /dev/shm.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness import Processes
from shm_kit import BROKER_IDS, ShmKit, new_broker_id

from mycelium.shm import list_segments
from mycelium.shm.segment import unlink_quietly


@pytest.fixture
def shm() -> Iterator[ShmKit]:
    """A ShmKit under a fresh broker id; its objects are unlinked at teardown, always."""
    kit = ShmKit(new_broker_id())
    try:
        yield kit
    finally:
        kit.teardown()


@pytest.fixture
def children() -> Iterator[Processes]:
    kids = Processes()
    try:
        yield kids
    finally:
        kids.kill_all()


@pytest.fixture(scope="session", autouse=True)
def no_segment_left() -> Iterator[None]:
    """After the session: nothing of any test's broker id may remain in /dev/shm."""
    yield
    left = [name for bid in BROKER_IDS for name in list_segments(bid)]
    for name in left:
        unlink_quietly(name)
    assert not left, f"shared-memory objects left behind: {left}"
