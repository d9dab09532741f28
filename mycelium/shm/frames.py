"""Frames: how a ring's bytes are cut into messages, and the one walk that reads them.

How this works
--------------
A frame is a 24-byte header (the payload length, the sequence, the publish time;
``layout.py``), then the payload padded to 8 bytes
(``frame_bytes``), so every header is aligned. A frame never straddles the
end of the ring: the writer stores ``WRAP_MARKER`` instead and starts it at offset 0.
``frame_at`` reads one header at a position, follows a wrap marker and checks the frame
against ``max_message``, the ring's end and a published cursor before a byte of payload
is touched; ``walk_frames`` repeats it. The reader's hot paths inline the common case
(an ordinary frame) and fall back to ``frame_at`` for everything else.
"""

from __future__ import annotations

from collections.abc import Iterator

from mycelium.errors import CorruptFrame
from mycelium.shm.layout import FRAME_HEADER_BYTES, WRAP_MARKER, frame_bytes

__all__ = ["BadFrame", "frame_at", "frame_bytes", "walk_frames"]


class BadFrame(CorruptFrame):
    """A header failed its checks; ``why`` says which (the caller decides corrupt vs overrun)."""


def frame_at(
    dq: memoryview, cap: int, max_message: int, pos: int, end: int
) -> tuple[int, int, int]:
    """The frame published at ``pos`` (below ``end``) as (start, length, end of frame).

    ``dq`` is the ring as 8-byte words. A wrap marker leads to the frame at the next lap.
    Raises BadFrame if the header cannot describe a frame that lies wholly below ``end``.
    """
    mask = cap - 1
    n = dq[(pos & mask) >> 3]
    if n == WRAP_MARKER:
        if (pos | mask) + 1 + FRAME_HEADER_BYTES > end:
            raise BadFrame(f"wrap marker at {pos} with no frame published after it")
        pos = (pos | mask) + 1
        n = dq[0]
    if n > max_message:
        raise BadFrame(f"frame length {n} at {pos} exceeds max_message {max_message}")
    stop = pos + frame_bytes(n)
    if stop > end or (pos & mask) + FRAME_HEADER_BYTES + n > cap:
        raise BadFrame(f"frame of {n} bytes at {pos} runs past the published cursor {end}")
    return pos, n, stop


def walk_frames(
    dq: memoryview, cap: int, max_message: int, pos: int, end: int
) -> Iterator[tuple[int, int, int]]:
    """Every frame from the boundary ``pos`` up to ``end``, as ``frame_at`` returns them.

    Raises BadFrame at the first header that fails (the frames before it were yielded).
    """
    while pos < end:
        frame = frame_at(dq, cap, max_message, pos, end)
        yield frame
        pos = frame[2]
