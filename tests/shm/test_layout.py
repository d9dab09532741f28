"""The byte layout: every hot word on its own cache line, every region inside its segment."""

from __future__ import annotations

from mycelium.shm import layout
from mycelium.shm.layout import (
    CACHE_LINE,
    CONSUMER_MAX_SLOTS,
    CONSUMER_SEGMENT_BYTES,
    HOT_WORD_OFFSETS,
    LANE_DATA_OFF,
    LANE_TAIL_RECORD_BYTES,
    LANE_TAIL_RECORDS_OFF,
    PAGE,
    frame_bytes,
    lane_tail_record_q,
    slot_q,
)


def test_every_hot_word_starts_a_cache_line() -> None:
    for name, off in HOT_WORD_OFFSETS.items():
        assert off % CACHE_LINE == 0, f"{name} at {off} is not on a cache-line boundary"


def test_hot_words_of_one_segment_never_share_a_line() -> None:
    by_kind: dict[str, set[int]] = {}
    for name, off in HOT_WORD_OFFSETS.items():
        lines = by_kind.setdefault(name.split(".")[0], set())
        assert off // CACHE_LINE not in lines, f"{name} shares a cache line"
        lines.add(off // CACHE_LINE)


def test_lane_header_fits_before_the_ring() -> None:
    assert LANE_DATA_OFF % PAGE == 0
    lane_offsets = [v for k, v in HOT_WORD_OFFSETS.items() if k.startswith("lane.")]
    assert max(lane_offsets) + CACHE_LINE <= LANE_DATA_OFF
    # Both tail records sit on one line of their own, inside the header.
    start = lane_tail_record_q(0) * 8
    assert start == LANE_TAIL_RECORDS_OFF
    assert lane_tail_record_q(1) * 8 == start + LANE_TAIL_RECORD_BYTES
    assert 2 * LANE_TAIL_RECORD_BYTES <= CACHE_LINE


def test_consumer_slots_are_one_line_each_inside_the_segment() -> None:
    for i in (0, 1, CONSUMER_MAX_SLOTS - 1):
        assert (slot_q(i) * 8) % CACHE_LINE == 0
    assert slot_q(CONSUMER_MAX_SLOTS - 1) * 8 + CACHE_LINE <= CONSUMER_SEGMENT_BYTES


def test_frame_bytes_pads_to_eight() -> None:
    assert [frame_bytes(n) for n in (0, 1, 7, 8, 9, 16)] == [24, 32, 32, 32, 40, 40]
    assert all(frame_bytes(n) % 8 == 0 for n in range(100))


def test_layout_version_is_stored_in_every_identity() -> None:
    assert layout.IDENTITY.size <= CACHE_LINE
    assert layout.LAYOUT_VERSION >= 2
