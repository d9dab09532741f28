"""Fixed-size records read as one array (``poll_records``), chunk by chunk. Forbidden
outcomes: a record out of order, lost or repeated; a record of another size taken into
the array; more than ``max_n``; a frame consumed when the next one has the wrong size."""

from __future__ import annotations

import numpy as np
from shm_kit import ShmKit

from mycelium.shm.reader_records import RECORDS_CHUNK_FRAMES

N = 16  # record bytes: 40-byte frames


def records(first: int, k: int) -> np.ndarray:
    """k records numbered from ``first`` (the number in the first 8 bytes)."""
    rows = np.zeros((k, N), np.uint8)
    rows.view("<u8")[:, 0] = np.arange(first, first + k)
    return rows


def numbers(rows: np.ndarray) -> list[int]:
    return [int(x) for x in rows.view("<u8")[:, 0]]


def test_runs_across_chunks_and_wraps_stop_at_another_size(shm: ShmKit) -> None:
    k = 3 * RECORDS_CHUNK_FRAMES + 5  # several chunks per stretch
    lane = shm.lane(capacity=1 << 18, max_message=64)  # 256 KiB: ~6,500 frames a lap
    c = shm.consumer()
    r = shm.reader(lane, shm.state(c))
    w = shm.writer(lane, (c,))
    seen: list[int] = []
    sent = 0
    for _ in range(6):  # laps the ring: some stretches end at its end and go on at 0
        w.publish_array(records(sent, k))
        sent += k
        w.publish(b"odd")  # another size: the array stops before it
        got = r.poll_records(N, 1 << 20)
        assert got is not None and got.shape == (k, N)
        seen += numbers(got)
        empty = r.poll_records(N, 10)
        assert empty is not None and empty.shape == (0, N)  # the odd one stays unread
        assert r.poll() == b"odd"
    assert seen == list(range(sent))
    assert r.poll_records(N, 10) is None


def test_max_n_and_a_size_change_inside_a_chunk(shm: ShmKit) -> None:
    lane = shm.lane(capacity=1 << 18, max_message=64)
    c = shm.consumer()
    r = shm.reader(lane, shm.state(c))
    w = shm.writer(lane, (c,))
    w.publish_array(records(0, 100))
    w.publish(b"x" * 24)  # the 101st frame differs, mid-chunk
    w.publish_array(records(100, 10))
    first = r.poll_records(N, 30)
    assert first is not None and numbers(first) == list(range(30))
    rest = r.poll_records(N, 1000)
    assert rest is not None and numbers(rest) == list(range(30, 100))
    assert r.poll() == b"x" * 24
    last = r.poll_records(N, 1000)
    assert last is not None and numbers(last) == list(range(100, 110))
    assert r.count == 111
