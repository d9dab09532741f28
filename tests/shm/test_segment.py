"""Segments: exclusive creation, 0600 mode, identity checks on attach, read-only mappings."""

from __future__ import annotations

import os
import signal
import stat

import posix_ipc
import pytest
import shm_workers

from mycelium.errors import SegmentError
from mycelium.shm import Segment, broker_id_for, list_segments, segment_name
from mycelium.shm.layout import (
    IDENTITY,
    KIND_CONSUMER,
    KIND_LANE,
    KIND_REGISTRY,
    LAYOUT_VERSION,
    MAGIC,
)
from mycelium.shm.segment import SHM_DIR, unlink_quietly


def mode_of(name: str) -> int:
    return stat.S_IMODE(os.stat(SHM_DIR / name.lstrip("/")).st_mode)


def raw(name: str, size: int, *identity: int) -> None:
    """A segment created outside Segment, with the identity line we are told."""
    shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=size)
    os.pwrite(shm.fd, IDENTITY.pack(*identity), 0)
    shm.close_fd()


def test_created_mode_0600_by_default_and_configurable(shm) -> None:
    lane = shm.lane()
    assert mode_of(lane) == 0o600
    shared = shm.lane(mode=0o640)
    assert mode_of(shared) == 0o640


def test_creation_is_exclusive(shm) -> None:
    name = segment_name(shm.broker_id, "X", 1)
    Segment.create(name, 4096, KIND_REGISTRY).close()
    with pytest.raises(SegmentError, match="already exists"):
        Segment.create(name, 4096, KIND_REGISTRY)


def test_names_carry_the_broker_id_and_are_listed_by_it(shm) -> None:
    lane = shm.lane()
    state, bell = shm.consumer()
    assert shm.broker_id in lane and shm.broker_id in state and shm.broker_id in bell
    listed = list_segments(shm.broker_id)
    assert lane in listed and state in listed and "sem:" + bell in listed
    assert broker_id_for("/tmp/a.sock") != broker_id_for("/tmp/b.sock")
    assert broker_id_for("/tmp/a.sock") == broker_id_for("/tmp/./a.sock")


@pytest.mark.parametrize(
    ("identity", "why"),
    [
        ((MAGIC ^ 1, LAYOUT_VERSION, KIND_LANE, 8192), "bad magic"),
        ((MAGIC, LAYOUT_VERSION + 1, KIND_LANE, 8192), "layout version"),
        ((MAGIC, LAYOUT_VERSION, KIND_CONSUMER, 8192), "is a consumer segment"),
        ((MAGIC, LAYOUT_VERSION, KIND_LANE, 4096), "declares 4096 bytes"),
    ],
)
def test_attach_refuses_a_foreign_identity(shm, identity, why) -> None:
    name = segment_name(shm.broker_id, "L", 99)
    raw(name, 8192, *identity)
    with pytest.raises(SegmentError, match=why):
        Segment.attach(name, KIND_LANE)


def test_attach_refuses_missing_and_tiny_segments(shm) -> None:
    with pytest.raises(SegmentError, match="does not exist"):
        Segment.attach(segment_name(shm.broker_id, "L", 1), KIND_LANE)
    name = segment_name(shm.broker_id, "L", 2)
    shm_obj = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=8)
    shm_obj.close_fd()
    with pytest.raises(SegmentError, match="too small"):
        Segment.attach(name, KIND_LANE)


def test_magic_is_written_after_the_body(shm) -> None:
    """A process attaching while the creator still fills the header is refused."""
    name = segment_name(shm.broker_id, "X", 1)
    seen = []

    def init(seg: Segment) -> None:
        with pytest.raises(SegmentError, match="bad magic"):
            Segment.attach(name, KIND_REGISTRY)
        seen.append(True)

    Segment.create(name, 4096, KIND_REGISTRY, init=init).close()
    assert seen
    Segment.attach(name, KIND_REGISTRY).close()


def test_failed_init_leaves_nothing(shm) -> None:
    name = segment_name(shm.broker_id, "X", 1)

    def init(seg: Segment) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        Segment.create(name, 4096, KIND_REGISTRY, init=init)
    assert shm.leftovers() == []


def test_read_only_mapping_refuses_writes_in_python(shm) -> None:
    seg = Segment.attach(shm.lane(), KIND_LANE)
    try:
        assert not seg.writable and seg.buf.readonly
        with pytest.raises(TypeError):
            seg.buf[0] = 1
        with pytest.raises(TypeError):
            seg.q[16] = 1
        with pytest.raises(TypeError):
            seg.mm[0:1] = b"x"
    finally:
        seg.close()


def test_a_write_through_a_readers_mapping_is_killed_by_the_kernel(shm, children) -> None:
    """Below Python too: the reader's mapping is PROT_READ, so a C-level store faults."""
    lane = shm.lane()
    proc = children.start(shm_workers.write_through_readonly, lane)
    assert children.join(proc) in (-signal.SIGSEGV, -signal.SIGBUS)
    seg = Segment.attach(lane, KIND_LANE)
    assert seg.mm[4096] == 0  # and nothing was written
    seg.close()


def test_unlink_removes_the_name_and_is_quiet_twice(shm) -> None:
    name = segment_name(shm.broker_id, "X", 1)
    seg = Segment.create(name, 4096, KIND_REGISTRY)
    assert seg.unlink() is True
    assert seg.unlink() is False
    assert unlink_quietly("sem:" + segment_name(shm.broker_id, "D", 1)) is False
    seg.close()
    assert shm.leftovers() == []
