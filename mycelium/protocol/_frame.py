"""Streaming message framing, sans I/O: feed bytes in, take whole messages out.

How this works (h11 style). ``receive_data(b)`` appends to an internal buffer and never
parses; ``next_frame()`` looks at the buffered header, and once ``32 + payload_size`` bytes
are there returns exactly that message's bytes, else None ("feed me more"). Only the magic
and the size are checked here, because framing depends on them: the caller parses each
frame with ``parse_message``. ``receive_data(b"")`` marks end of input; a partial message
left at that point is reported as ``MessageTooSmall``. Consumed bytes are dropped lazily,
so framing a long stream costs O(total bytes).
"""

from __future__ import annotations

import struct

from mycelium.protocol._errors import FrameTooLarge, InvalidMagic, MessageTooSmall
from mycelium.protocol._types import HEADER_SIZE, MAGIC

__all__ = ["DEFAULT_MAX_FRAME_BYTES", "FrameDecoder"]

DEFAULT_MAX_FRAME_BYTES = HEADER_SIZE + (1 << 20)
_MAGIC_AND_SIZE = struct.Struct("<I20xI")  # magic @0, payload_size @24
_COMPACT_AT_BYTES = 1 << 16


class FrameDecoder:
    """Splits a byte stream into Protocol V2 messages: feed it with ``receive_data(chunk)``,
    then call ``next_frame()`` until it returns None, and parse each frame."""

    __slots__ = ("_buffer", "_eof", "_max_frame_bytes", "_start")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self._start = 0  # first unconsumed byte in _buffer
        self._eof = False
        self._max_frame_bytes = max_frame_bytes

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buffer) - self._start

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer more stream bytes; an empty ``data`` means the stream has ended."""
        if not data:
            self._eof = True
            return
        if self._eof:
            raise RuntimeError("receive_data() after end of input")
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next whole message, or None until more data arrives.

        Raises ``InvalidMagic`` when the stream is not at a message boundary,
        ``FrameTooLarge`` when a header announces more than ``max_frame_bytes``, and
        ``MessageTooSmall`` when the input ended inside a message.
        """
        buffer = self._buffer
        start = self._start
        available = len(buffer) - start
        if available < HEADER_SIZE:
            self._need_more(available, HEADER_SIZE)
            return None
        magic, payload_size = _MAGIC_AND_SIZE.unpack_from(buffer, start)
        if magic != MAGIC:
            raise InvalidMagic(MAGIC, magic)
        size = HEADER_SIZE + payload_size
        if size > self._max_frame_bytes:
            raise FrameTooLarge(size, self._max_frame_bytes)
        if available < size:
            self._need_more(available, size)
            return None
        frame = bytes(buffer[start : start + size])
        self._start = start + size
        if self._start >= _COMPACT_AT_BYTES and self._start * 2 >= len(buffer):
            del buffer[: self._start]
            self._start = 0
        return frame

    def _need_more(self, available: int, need: int) -> None:
        if self._eof and available:
            raise MessageTooSmall(need, available)
