"""Payloads are buffers measured in bytes: typed views round-trip, strided views are refused."""

from __future__ import annotations

import struct
from array import array

import numpy as np
import pytest
from shm_kit import ShmKit

from mycelium.errors import MessageTooLarge, MyceliumError, NonContiguousPayload
from mycelium.shm import LaneReader, LaneWriter
from mycelium.shm.runs import WRITER_RUN_MIN_ITEMS


def lane_pair(shm: ShmKit) -> tuple[LaneWriter, LaneReader]:
    lane = shm.lane(capacity=1 << 14, max_message=256)
    c = shm.consumer()
    return shm.writer(lane, (c,)), shm.reader(lane, shm.state(c))


def test_a_typed_memoryview_is_sized_in_bytes(shm) -> None:
    w, r = lane_pair(shm)
    values = array("d", [1.5, -2.25, 3e300])
    w.publish(memoryview(values))
    got = r.poll()
    assert got == values.tobytes() and len(got) == 24
    assert struct.unpack("<3d", got) == tuple(values)


def test_typed_views_in_batches_are_sized_in_bytes(shm) -> None:
    w, r = lane_pair(shm)
    rows = [array("d", [float(i)] * 4) for i in range(WRITER_RUN_MIN_ITEMS)]
    assert w.publish_many([memoryview(x) for x in rows]) == len(rows)  # a run
    mixed = [memoryview(array("i", [1, 2])), b"abc", bytearray(b"xy"), np.arange(3, dtype="<u2")]
    assert w.publish_many(mixed) == len(mixed)
    got = r.poll_many(100)
    assert got == [x.tobytes() for x in rows] + [
        array("i", [1, 2]).tobytes(),
        b"abc",
        b"xy",
        np.arange(3, dtype="<u2").tobytes(),
    ]


def test_a_too_large_typed_view_is_measured_in_bytes(shm) -> None:
    w, r = lane_pair(shm)
    with pytest.raises(MessageTooLarge) as info:
        w.publish(memoryview(array("d", [0.0] * 33)))  # 33 items, 264 bytes > 256
    assert info.value.size == 264
    assert w.count == 0 and r.poll() is None


@pytest.mark.parametrize("batch", [False, True])
def test_a_non_contiguous_view_is_refused_and_nothing_written(shm, batch) -> None:
    w, r = lane_pair(shm)
    strided = memoryview(bytearray(b"abcdefgh"))[::2]
    with pytest.raises(NonContiguousPayload, match="contiguous") as info:
        if batch:
            w.publish_many([b"ok", strided])
        else:
            w.publish(strided)
    assert isinstance(info.value, MyceliumError)
    with pytest.raises(NonContiguousPayload):
        w.publish(np.zeros((4, 4), np.uint8)[:, 1])
    assert w.count == 0 and w.position == 0 and r.poll() is None
    w.publish(bytes(strided))  # the copy the error suggests goes through
    assert r.poll() == b"aceg"


@pytest.mark.parametrize(
    "data", [b"abc", bytearray(b"abc"), memoryview(array("d", [1.0]))], ids=type
)
def test_a_closed_writer_refuses_every_payload_once(shm, data) -> None:
    """The hot path sends a refused copy round again sized in bytes, at most once: a
    mapping that refuses flat bytes (closed) raises, it does not recurse."""
    w, _ = lane_pair(shm)
    w.publish(b"first")  # past the first claim: the next publish takes the hot path
    w.close(final=False)
    with pytest.raises(ValueError):
        w.publish(data)
