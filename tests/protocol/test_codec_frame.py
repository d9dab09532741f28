"""FrameDecoder: whole messages out of a stream cut anywhere."""

from __future__ import annotations

import random
from typing import Any

import pytest

from mycelium.protocol import (
    FrameDecoder,
    FrameTooLarge,
    InvalidMagic,
    MessageTooSmall,
    encode_message,
    parse_message,
)


def drain(decoder: FrameDecoder) -> list[bytes]:
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    return frames


def test_byte_by_byte_stream_of_every_vector(vectors_by_name: dict[str, Any]) -> None:
    messages = [bytes.fromhex(v["hex"]) for v in vectors_by_name.values()]
    decoder = FrameDecoder(max_frame_bytes=1 << 17)
    frames: list[bytes] = []
    for byte in b"".join(messages):
        decoder.receive_data(bytes([byte]))
        frames += drain(decoder)
    assert frames == messages
    assert decoder.buffered == 0


def test_random_chunks_with_compaction() -> None:
    rng = random.Random(7)
    messages = [
        encode_message(1, 1, [(3, rng.randbytes(rng.randrange(300)))], sequence=i, timestamp=i)
        for i in range(2000)
    ]
    stream = b"".join(messages)  # well past the compaction threshold
    decoder = FrameDecoder()
    frames: list[bytes] = []
    at = 0
    while at < len(stream):
        step = rng.randrange(1, 700)
        decoder.receive_data(memoryview(stream)[at : at + step])
        at += step
        frames += drain(decoder)
        assert decoder.buffered < 32 + 2 + 5 + 300
    assert frames == messages
    assert [parse_message(f).header.sequence for f in frames] == list(range(2000))


def test_misaligned_stream_and_oversized_frame_are_refused() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\x00" + encode_message(1, 1, []))
    with pytest.raises(InvalidMagic):
        decoder.next_frame()
    small = FrameDecoder(max_frame_bytes=100)
    small.receive_data(encode_message(1, 1, [(3, bytes(100))]))
    with pytest.raises(FrameTooLarge) as info:
        small.next_frame()
    assert (info.value.size, info.value.limit) == (134, 100)


def test_end_of_input() -> None:
    message = encode_message(1, 1, [(3, b"abc")])
    clean = FrameDecoder()
    clean.receive_data(message)
    clean.receive_data(b"")
    assert clean.next_frame() == message
    assert clean.next_frame() is None
    with pytest.raises(RuntimeError):
        clean.receive_data(b"more")
    cut = FrameDecoder()
    cut.receive_data(message[:-1])
    assert cut.next_frame() is None  # could still arrive
    cut.receive_data(b"")
    with pytest.raises(MessageTooSmall) as info:
        cut.next_frame()
    assert (info.value.need, info.value.got) == (len(message), len(message) - 1)
