"""Protocol V2 messages: parse bytes into a ``Message``, encode TLVs into bytes.

How this works. A message is a 32-byte little-endian header (magic, relay domain, version,
source, flags, sequence, timestamp, payload size, CRC-32) followed by ``payload_size`` bytes
of TLVs. A standard TLV is ``[type][len][payload]`` (payload <= 255 bytes); an extended TLV
is ``[255][0][type][len u16][payload]``. The CRC-32 (``zlib.crc32``) covers bytes [0:28]
and everything from byte 32 on.

``parse_message`` validates and decodes everything eagerly, in the order the error classes
document: the header is one ``unpack_from`` tuple turned into a ``Header`` named tuple, a
message with a single standard TLV (the common case) is checked with a few byte reads and
gets its one ``TLV`` directly, other messages get their TLV list from the validating walk.
Nothing is deferred, so a benchmark of ``parse_message`` times the whole parse. A standard
TLV's payload (at most 255 bytes) is a slice of ``raw`` (a copy for bytes, cheaper than a
view at that size); an extended TLV's payload is a zero-copy memoryview.

``encode_message`` and ``MessageBuilder`` share ``_tlv_head`` (one TLV header, with the
checks the parser would apply) and ``_seal`` (header + checksum around the joined TLVs).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from time import time_ns
from typing import NamedTuple, Self

from mycelium.protocol._errors import (
    ChecksumMismatch,
    EncodeError,
    InvalidExtendedTLV,
    InvalidMagic,
    InvalidRelayDomain,
    MessageTooSmall,
    PayloadSizeMismatch,
    TruncatedTLV,
    UnknownSource,
)
from mycelium.protocol._typed import TypedTLV
from mycelium.protocol._types import (
    EXTENDED_TLV_MARKER,
    FIXED_SIZE_BY_TYPE,
    HEADER_SIZE,
    IS_KNOWN_SOURCE,
    IS_RELAY_DOMAIN,
    KNOWN_SOURCES,
    MAGIC,
    MAX_EXTENDED_PAYLOAD,
    MAX_STANDARD_PAYLOAD,
    PROTOCOL_VERSION,
    VALID_RELAY_DOMAINS,
)

__all__ = [
    "TLV",
    "Header",
    "Message",
    "MessageBuilder",
    "encode_message",
    "message_checksum",
    "parse_message",
]

Buffer = bytes | bytearray | memoryview

_HEADER = struct.Struct("<IBBBBQQII")
_HEADER_NO_CRC = struct.Struct("<IBBBBQQI")  # bytes [0:28], the part the CRC covers
_unpack_header = _HEADER.unpack_from
_pack_header_no_crc = _HEADER_NO_CRC.pack
_pack_u32 = struct.Struct("<I").pack
_pack_standard_head = struct.Struct("<BB").pack
_pack_extended_head = struct.Struct("<BBBH").pack
_crc32 = zlib.crc32
_new_tuple = tuple.__new__

_CRC_END = 28  # the checksum field occupies bytes [28:32]
_FIRST_TLV = HEADER_SIZE


class Header(NamedTuple):
    """The 32-byte header, field order as on the wire. ``relay_domain`` and ``source`` are
    plain ints (wrap them in ``RelayDomain``/``SourceType`` for names)."""

    magic: int
    relay_domain: int
    version: int
    source: int
    flags: int
    sequence: int
    timestamp: int
    payload_size: int
    checksum: int


class TLV(NamedTuple):
    """One TLV: its type byte, its payload (a slice of the message) and its form."""

    type: int
    payload: Buffer
    extended: bool = False


class Message(NamedTuple):
    """A parsed, fully validated message: ``header``, ``tlvs`` and the ``raw`` bytes.

    A named tuple, so building one is a single allocation and each field read is a C-level
    getter. Payloads are views of ``raw``, so a mutable ``raw`` (bytearray) must not change
    while the message is in use.
    """

    header: Header
    tlvs: list[TLV]
    raw: Buffer

    def __repr__(self) -> str:
        return f"Message(header={self.header!r}, tlvs={self.tlvs!r})"


def message_checksum(raw: Buffer) -> int:
    """CRC-32 of a whole message as the header's checksum field should hold it."""
    return _crc32(raw[HEADER_SIZE:], _crc32(raw[:_CRC_END]))


def parse_message(raw: Buffer, verify_checksum: bool = True) -> Message:
    """Validate ``raw`` as exactly one Protocol V2 message and return it.

    Raises, in this order: ``MessageTooSmall`` (under 32 bytes), ``InvalidMagic``,
    ``ChecksumMismatch`` (unless ``verify_checksum`` is false), ``MessageTooSmall`` (fewer
    bytes than ``payload_size`` promises), ``TruncatedTLV`` / ``InvalidExtendedTLV`` /
    ``PayloadSizeMismatch`` (TLV walk; bytes after the declared payload count as a
    truncated TLV), ``InvalidRelayDomain``, ``UnknownSource``. All are ``ProtocolError``.
    """
    n = len(raw)
    if n < HEADER_SIZE:
        raise MessageTooSmall(HEADER_SIZE, n)
    h = _unpack_header(raw)
    if h[0] != MAGIC:
        raise InvalidMagic(MAGIC, h[0])
    if verify_checksum:  # message_checksum(raw), inlined: a call costs ~10% of a parse
        calculated = _crc32(raw[HEADER_SIZE:], _crc32(raw[:_CRC_END]))
        if calculated != h[8]:
            raise ChecksumMismatch(h[8], calculated)
    size = h[7]
    end = HEADER_SIZE + size
    if end > n:
        raise MessageTooSmall(end, n)
    # Fast path: exactly one standard TLV ([32] type, [33] length) filling the payload:
    # only its fixed size needs checking, and its TLV is built without the general walk.
    if end == n and size > 1 and raw[33] + 2 == size and raw[32] != EXTENDED_TLV_MARKER:
        tlv_type = raw[32]
        fixed = FIXED_SIZE_BY_TYPE[tlv_type]
        if fixed is not None and fixed != size - 2:
            raise PayloadSizeMismatch(tlv_type, fixed, size - 2, 0)
        tlvs = [_new_tuple(TLV, (tlv_type, raw[34:], False))]
    else:
        tlvs = _read_tlvs(raw, end)
    if not IS_RELAY_DOMAIN[h[1]]:
        raise InvalidRelayDomain(h[1])
    if not IS_KNOWN_SOURCE[h[3]]:
        raise UnknownSource(h[3])
    return _new_tuple(Message, (_new_tuple(Header, h), tlvs, raw))


def _read_tlvs(raw: Buffer, end: int) -> list[TLV]:
    """Walk and check the TLVs in ``raw[32:end]``; bytes past ``end`` are an error."""
    view = memoryview(raw)
    tlvs = []
    pos = _FIRST_TLV
    while pos < end:
        tlv_type = raw[pos]
        if tlv_type != EXTENDED_TLV_MARKER:
            start = pos + 2
            if start > end:
                raise TruncatedTLV(pos - _FIRST_TLV, "no room for the 2-byte TLV header")
            length = raw[pos + 1]
            extended = False
        else:
            start = pos + 5
            if start > end:
                raise TruncatedTLV(pos - _FIRST_TLV, "no room for the 5-byte extended header")
            if raw[pos + 1]:
                raise InvalidExtendedTLV(pos - _FIRST_TLV, raw[pos + 1])
            tlv_type = raw[pos + 2]
            length = raw[pos + 3] | raw[pos + 4] << 8
            extended = True
        stop = start + length
        if stop > end:
            raise TruncatedTLV(
                pos - _FIRST_TLV, f"needs {length} payload bytes, {end - start} remain"
            )
        if extended:
            payload: Buffer = view[start:stop]
        else:
            fixed = FIXED_SIZE_BY_TYPE[tlv_type]
            if fixed is not None and fixed != length:
                raise PayloadSizeMismatch(tlv_type, fixed, length, pos - _FIRST_TLV)
            payload = raw[start:stop]
        tlvs.append(_new_tuple(TLV, (tlv_type, payload, extended)))
        pos = stop
    if end < len(raw):
        raise TruncatedTLV(end - _FIRST_TLV, f"{len(raw) - end} bytes follow the declared payload")
    return tlvs


def _tlv_head(tlv_type: int, length: int, extended: bool) -> bytes:
    """The 2- or 5-byte header of one TLV, refusing what the parser would refuse."""
    if not 0 <= tlv_type < EXTENDED_TLV_MARKER:
        raise EncodeError(f"TLV type must be 0..254, got {tlv_type}")
    if length > MAX_STANDARD_PAYLOAD or extended:
        if length > MAX_EXTENDED_PAYLOAD:
            raise EncodeError(
                f"TLV payload of {length} bytes exceeds the extended form's {MAX_EXTENDED_PAYLOAD}"
            )
        return _pack_extended_head(EXTENDED_TLV_MARKER, 0, tlv_type, length)
    fixed = FIXED_SIZE_BY_TYPE[tlv_type]
    if fixed is not None and fixed != length:
        raise PayloadSizeMismatch(tlv_type, fixed, length)
    return _pack_standard_head(tlv_type, length)


def _seal(
    relay_domain: int, source: int, sequence: int, timestamp: int, flags: int, body: bytes
) -> bytes:
    """Put the header and checksum in front of the joined TLVs."""
    if relay_domain not in VALID_RELAY_DOMAINS:
        raise InvalidRelayDomain(relay_domain)
    if source not in KNOWN_SOURCES:
        raise UnknownSource(source)
    try:
        head = _pack_header_no_crc(
            MAGIC, relay_domain, PROTOCOL_VERSION, source, flags, sequence, timestamp, len(body)
        )
    except struct.error as exc:
        raise EncodeError(f"header field out of range: {exc}") from None
    return b"".join((head, _pack_u32(_crc32(body, _crc32(head))), body))


def encode_message(
    relay_domain: int,
    source: int,
    tlvs: Iterable[tuple[int, Buffer]],
    *,
    sequence: int = 0,
    timestamp: int | None = None,
    flags: int = 0,
) -> bytes:
    """Encode one message from ``(tlv_type, payload)`` pairs in one call: the hot path.

    Payloads are bytes-like; over 255 bytes they take the extended form. ``timestamp``
    defaults to now (ns). Raises ``EncodeError``, ``PayloadSizeMismatch``,
    ``InvalidRelayDomain`` or ``UnknownSource`` for input the parser would refuse.
    """
    parts: list[Buffer] = []
    for tlv_type, payload in tlvs:
        parts += (_tlv_head(tlv_type, len(payload), False), payload)
    return _seal(
        relay_domain,
        source,
        sequence,
        time_ns() if timestamp is None else timestamp,
        flags,
        b"".join(parts),
    )


class MessageBuilder:
    """Chainable builder mirroring the original's ``TLVMessageBuilder``.

    ``MessageBuilder(domain, source).sequence(n).timestamp(ns).flags(f)
    .add_tlv(type, payload_or_typed).build()`` returns the message bytes. Payloads over
    255 bytes use the extended form; ``extended=True`` forces it for smaller ones.
    """

    __slots__ = ("_flags", "_parts", "_relay_domain", "_sequence", "_source", "_timestamp")

    def __init__(self, relay_domain: int, source: int) -> None:
        self._relay_domain = relay_domain
        self._source = source
        self._sequence = 0
        self._timestamp: int | None = None
        self._flags = 0
        self._parts: list[Buffer] = []

    def sequence(self, sequence: int) -> Self:
        """Set the header sequence number (u64)."""
        self._sequence = sequence
        return self

    def timestamp(self, timestamp_ns: int) -> Self:
        """Set the header timestamp in ns (u64); the default is the time of ``build()``."""
        self._timestamp = timestamp_ns
        return self

    def flags(self, flags: int) -> Self:
        """Set the header flags byte."""
        self._flags = flags
        return self

    def add_tlv(self, tlv_type: int, payload: Buffer | TypedTLV, extended: bool = False) -> Self:
        """Append a TLV: a typed TLV object (its type must match) or a bytes-like payload.

        The payload is copied now, so a later change to a bytearray does not leak in.
        """
        if isinstance(payload, TypedTLV):
            if tlv_type != payload.TLV_TYPE:
                raise EncodeError(
                    f"{type(payload).__name__} is TLV type {payload.TLV_TYPE}, not {tlv_type}"
                )
            payload = payload.to_bytes()
        elif type(payload) is not bytes:
            payload = bytes(payload)
        self._parts += (_tlv_head(tlv_type, len(payload), extended), payload)
        return self

    def build(self) -> bytes:
        """The finished message with its checksum; the builder can be built again."""
        return _seal(
            self._relay_domain,
            self._source,
            self._sequence,
            time_ns() if self._timestamp is None else self._timestamp,
            self._flags,
            b"".join(self._parts),
        )
