"""The Protocol V2 error family: every class here subclasses ``ProtocolError``.

How this works: the parser raises the class that names the first check a message failed
(length, magic, checksum, payload bounds, TLVs, relay domain, source, in that order); the
encoders raise the same classes for input that would produce a message the parser refuses,
plus ``EncodeError`` for values that do not fit the wire format at all. Every error carries
its facts as attributes (``expected``, ``actual``, ``offset``, ...) and, when it comes from
a batch, the ``index`` of the first bad message. If the codec raises anything else on bad
input, that is a bug.
"""

from __future__ import annotations

from mycelium.errors import MyceliumError

__all__ = [
    "ChecksumMismatch",
    "EncodeError",
    "FrameTooLarge",
    "InvalidExtendedTLV",
    "InvalidMagic",
    "InvalidRelayDomain",
    "LayoutMismatch",
    "MessageTooSmall",
    "PayloadSizeMismatch",
    "ProtocolError",
    "TruncatedTLV",
    "UnknownSource",
]


class ProtocolError(MyceliumError, ValueError):
    """Bytes that are not a valid Protocol V2 message, or input that cannot become one."""

    index: int | None = None
    """Position of the offending message in a batch; None for a single message."""

    def _at(self, message: str, index: int | None) -> str:
        self.index = index
        return message if index is None else f"message {index}: {message}"


class MessageTooSmall(ProtocolError):
    """Fewer bytes than the header, or than the header's ``payload_size`` promises."""

    def __init__(self, need: int, got: int, *, index: int | None = None) -> None:
        self.need = need
        self.got = got
        super().__init__(self._at(f"message too small: need {need} bytes, got {got}", index))


class InvalidMagic(ProtocolError):
    """The first four bytes are not 0xDEADBEEF: not a Protocol V2 message, or misaligned."""

    def __init__(self, expected: int, actual: int, *, index: int | None = None) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            self._at(f"invalid magic number: expected {expected:#x}, got {actual:#x}", index)
        )


class ChecksumMismatch(ProtocolError):
    """The CRC-32 in the header differs from the one computed over the message.

    Unlike the original (which always reported 0), ``calculated`` is the real value.
    """

    def __init__(self, expected: int, calculated: int, *, index: int | None = None) -> None:
        self.expected = expected
        self.calculated = calculated
        super().__init__(
            self._at(
                f"checksum mismatch: header says {expected:#010x}, calculated {calculated:#010x}",
                index,
            )
        )


class TruncatedTLV(ProtocolError):
    """A TLV runs past the end of the payload, or bytes follow the declared payload.

    ``offset`` is relative to the first payload byte (byte 32 of the message).
    """

    def __init__(self, offset: int, detail: str = "", *, index: int | None = None) -> None:
        self.offset = offset
        suffix = f": {detail}" if detail else ""
        super().__init__(self._at(f"truncated TLV at payload offset {offset}{suffix}", index))


class InvalidExtendedTLV(ProtocolError):
    """An extended TLV (marker 255) whose reserved byte is not zero."""

    def __init__(self, offset: int, reserved: int, *, index: int | None = None) -> None:
        self.offset = offset
        self.reserved = reserved
        super().__init__(
            self._at(
                f"invalid extended TLV at payload offset {offset}: reserved byte is {reserved}",
                index,
            )
        )


class PayloadSizeMismatch(ProtocolError):
    """A fixed-size TLV type carries a payload of another length (the original's PayloadTooLarge).

    Only the standard form is size-checked, as in the original.
    """

    def __init__(
        self,
        tlv_type: int,
        expected: int,
        actual: int,
        offset: int | None = None,
        *,
        index: int | None = None,
    ) -> None:
        self.tlv_type = tlv_type
        self.expected = expected
        self.actual = actual
        self.offset = offset
        where = "" if offset is None else f" at payload offset {offset}"
        super().__init__(
            self._at(f"TLV type {tlv_type}{where} must carry {expected} bytes, got {actual}", index)
        )


class InvalidRelayDomain(ProtocolError):
    """The header's relay domain is not one of 1-4."""

    def __init__(self, domain: int, *, index: int | None = None) -> None:
        self.domain = domain
        super().__init__(self._at(f"invalid relay domain: {domain}", index))


class UnknownSource(ProtocolError):
    """The header's source byte names no known ``SourceType``."""

    def __init__(self, source: int, *, index: int | None = None) -> None:
        self.source = source
        super().__init__(self._at(f"unknown source type: {source}", index))


class FrameTooLarge(ProtocolError):
    """A streamed header announces a message larger than the decoder's limit."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"message of {size} bytes exceeds the frame limit of {limit}")


class LayoutMismatch(ProtocolError):
    """A batch record whose size or TLV header does not match the batch's fixed layout."""

    def __init__(self, field: str, expected: int, actual: int, *, index: int | None = None) -> None:
        self.field = field
        self.expected = expected
        self.actual = actual
        super().__init__(self._at(f"{field} is {actual}, this layout needs {expected}", index))


class EncodeError(ProtocolError):
    """A value given to an encoder does not fit the wire format (type, length, field range)."""
