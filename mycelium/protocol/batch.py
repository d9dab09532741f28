"""Batches of fixed-layout messages as numpy structured arrays: one call for N messages.

How this works. A fixed-layout message is a header plus exactly one standard-form TLV of a
typed class (``TradeTLV``: 32 + 2 + 40 = 74 bytes). ``message_dtype(kind)`` is a packed
structured dtype for that record (header fields, ``tlv_type``, ``tlv_length``, then the
payload's fields under their layout names), so N messages back to back *are* an array of
N records. ``encode_batch`` copies the records into the output buffer, stamps the constant
fields and computes every checksum; ``decode_batch`` views a buffer as records without
copying and checks magic, checksum, sizes, TLV header, relay domain and source for all
records at once, raising the error ``parse_message`` would raise for the first bad record,
with its ``index``.

The CRC-32 is computed column-wise. CRC is affine over GF(2): for messages of one length,
crc(M) = crc(zeros) XOR the XOR over positions of a contribution that depends only on the
position and the bytes there. We read the checksummed bytes as little-endian 16-bit words
and keep one 65536-entry table per word position (counted from the end, so all record sizes
share them), then for each position do one gather and one XOR over all N records, in
chunks that stay in cache. That costs about 40-50 ns per 74-byte record on our CI machine,
against about 370 ns for a ``zlib.crc32`` call per row from Python.
"""

from __future__ import annotations

import zlib
from functools import cache

import numpy as np

from mycelium.protocol._codec import Buffer, message_checksum
from mycelium.protocol._errors import (
    ChecksumMismatch,
    InvalidMagic,
    InvalidRelayDomain,
    LayoutMismatch,
    MessageTooSmall,
    ProtocolError,
    UnknownSource,
)
from mycelium.protocol._typed import TYPED_TLV_CLASSES, QuoteTLV, TradeTLV, TypedTLV
from mycelium.protocol._types import (
    HEADER_SIZE,
    IS_KNOWN_SOURCE,
    IS_RELAY_DOMAIN,
    MAGIC,
    PROTOCOL_VERSION,
    VALID_RELAY_DOMAINS,
)

__all__ = [
    "QUOTE_MESSAGE_DTYPE",
    "TRADE_MESSAGE_DTYPE",
    "decode_batch",
    "encode_batch",
    "message_dtype",
]

_HEADER_FIELDS = [
    ("magic", "<u4"),
    ("relay_domain", "u1"),
    ("version", "u1"),
    ("source", "u1"),
    ("flags", "u1"),
    ("sequence", "<u8"),
    ("timestamp", "<u8"),
    ("payload_size", "<u4"),
    ("checksum", "<u4"),
    ("tlv_type", "u1"),
    ("tlv_length", "u1"),
]
_NUMPY_CODES = {"B": "u1", "H": "<u2", "I": "<u4", "i": "<i4", "Q": "<u8", "q": "<i8"}
_CRC_HEAD_WORDS = 14  # bytes [0:28] as 16-bit words; the checksum is words 14 and 15
_CRC_CHUNK_ROWS = 4096  # rows per pass: keeps the transposed block in L1/L2
_DOMAIN_OK = np.array(IS_RELAY_DOMAIN)
_SOURCE_OK = np.array(IS_KNOWN_SOURCE)


_DTYPES: dict[int, np.dtype] = {}  # id(kind) -> dtype: a class lives as long as the module


def message_dtype(kind: type[TypedTLV]) -> np.dtype:
    """The packed record dtype of a header plus one standard-form ``kind`` TLV (cached)."""
    cached = _DTYPES.get(id(kind))
    if cached is not None:
        return cached
    tlv_fields: list[tuple[str, str] | tuple[str, str, tuple[int]]] = []
    for name, code in zip(kind._NAMES, kind._CODES, strict=True):
        if code.endswith("s"):  # byte strings and u128 stay raw bytes
            tlv_fields.append((name, "u1", (int(code[:-1]),)))
        else:
            tlv_fields.append((name, _NUMPY_CODES[code]))
    # The TLV type rides in the metadata: two kinds may share a layout (PoolMint/PoolBurn).
    dtype = np.dtype(_HEADER_FIELDS + tlv_fields, metadata={"tlv_type": kind.TLV_TYPE})
    assert dtype.itemsize == HEADER_SIZE + 2 + kind.SIZE and dtype.itemsize % 2 == 0
    _DTYPES[id(kind)] = dtype
    return dtype


TRADE_MESSAGE_DTYPE = message_dtype(TradeTLV)
QUOTE_MESSAGE_DTYPE = message_dtype(QuoteTLV)


def encode_batch(records: np.ndarray, out: bytearray | memoryview | None = None) -> memoryview:
    """Encode N messages from an array of ``message_dtype(kind)`` records in one call.

    The caller fills relay_domain, source, flags, sequence, timestamp and the payload
    fields; magic, version, payload_size, tlv_type, tlv_length and checksum are computed
    (whatever ``records`` holds there is ignored). Writes into ``out`` when given (a
    writable buffer of at least N * itemsize bytes), else into a new bytearray, and
    returns a memoryview of the N messages. Raises ``InvalidRelayDomain`` /
    ``UnknownSource`` (with ``index``) before anything is written.
    """
    kind = _kind_of(records.dtype)
    n = len(records)
    bad = _bad_domain_or_source(records)
    if bad.any():
        i = int(bad.argmax())
        raise _header_error(int(records["relay_domain"][i]), int(records["source"][i]), i)
    nbytes = n * records.dtype.itemsize
    if out is None:
        out = bytearray(nbytes)
    elif len(out) < nbytes:
        raise ValueError(f"out holds {len(out)} bytes, the batch needs {nbytes}")
    encoded = np.frombuffer(out, dtype=records.dtype, count=n)
    encoded[...] = records
    encoded["magic"] = MAGIC
    encoded["version"] = PROTOCOL_VERSION
    encoded["payload_size"] = 2 + kind.SIZE
    encoded["tlv_type"] = kind.TLV_TYPE
    encoded["tlv_length"] = kind.SIZE
    encoded["checksum"] = _crc32_rows(encoded)
    return memoryview(out)[:nbytes]


def decode_batch(
    buf: Buffer, kind: type[TypedTLV] | None = None, *, verify_checksum: bool = True
) -> np.ndarray:
    """View a buffer of back-to-back fixed-layout messages as a record array, checked.

    ``kind`` (a typed TLV class) defaults to the type of the first message's TLV. No bytes
    are copied: the array is a view of ``buf``. For the first bad message, raises what
    ``parse_message`` would check first, with its ``index``: ``InvalidMagic``,
    ``ChecksumMismatch``, ``LayoutMismatch`` (payload_size, tlv_type or tlv_length not
    those of ``kind``), ``InvalidRelayDomain``, ``UnknownSource``; ``MessageTooSmall`` for
    a partial record at the end.
    """
    if kind is None:
        kind = _kind_of_first_message(buf)
    dtype = message_dtype(kind)
    n, partial = divmod(len(buf), dtype.itemsize)
    records = np.frombuffer(buf, dtype=dtype, count=n)
    bad = records["magic"] != MAGIC
    if verify_checksum:
        bad |= _crc32_rows(records) != records["checksum"]
    bad |= records["payload_size"] != 2 + kind.SIZE
    bad |= records["tlv_type"] != kind.TLV_TYPE
    bad |= records["tlv_length"] != kind.SIZE
    bad |= _bad_domain_or_source(records)
    if bad.any():
        i = int(bad.argmax())
        raise _record_error(records[i], i, kind, verify_checksum)
    if partial:
        raise MessageTooSmall(dtype.itemsize, partial, index=n)
    return records


def _record_error(
    record: np.void, i: int, kind: type[TypedTLV], verify_checksum: bool
) -> ProtocolError:
    """The first check, in parse order, that record ``i`` fails."""
    if record["magic"] != MAGIC:
        return InvalidMagic(MAGIC, int(record["magic"]), index=i)
    if verify_checksum:
        calculated = message_checksum(record.tobytes())
        if calculated != record["checksum"]:
            return ChecksumMismatch(int(record["checksum"]), calculated, index=i)
    for field, expected in (
        ("payload_size", 2 + kind.SIZE),
        ("tlv_type", kind.TLV_TYPE),
        ("tlv_length", kind.SIZE),
    ):
        if record[field] != expected:
            return LayoutMismatch(field, expected, int(record[field]), index=i)
    return _header_error(int(record["relay_domain"]), int(record["source"]), i)


def _bad_domain_or_source(records: np.ndarray) -> np.ndarray:
    bad: np.ndarray = ~(_DOMAIN_OK[records["relay_domain"]] & _SOURCE_OK[records["source"]])
    return bad


def _header_error(relay_domain: int, source: int, i: int) -> ProtocolError:
    if relay_domain not in VALID_RELAY_DOMAINS:
        return InvalidRelayDomain(relay_domain, index=i)
    return UnknownSource(source, index=i)


def _kind_of(dtype: np.dtype) -> type[TypedTLV]:
    metadata: dict[str, int] = dict(dtype.metadata or {})
    tagged = TYPED_TLV_CLASSES.get(metadata.get("tlv_type", -1))
    if tagged is not None and message_dtype(tagged) == dtype:
        return tagged
    for kind in TYPED_TLV_CLASSES.values():
        if message_dtype(kind) == dtype:
            return kind
    raise TypeError(f"not a batch record dtype (use message_dtype(kind)): {dtype}")


def _kind_of_first_message(buf: Buffer) -> type[TypedTLV]:
    if len(buf) < HEADER_SIZE + 2:
        raise MessageTooSmall(HEADER_SIZE + 2, len(buf), index=0)
    tlv_type = buf[HEADER_SIZE]
    try:
        return TYPED_TLV_CLASSES[tlv_type]
    except KeyError:
        raise ProtocolError(
            f"message 0: TLV type {tlv_type} has no fixed batch layout "
            f"(known: {sorted(TYPED_TLV_CLASSES)})"
        ) from None


def _crc32_rows(records: np.ndarray) -> np.ndarray:
    """CRC-32 of every record (bytes [0:28] + [32:]), as uint32, column-wise."""
    n = len(records)
    words = records.view(np.uint8).reshape(n, records.dtype.itemsize).view("<u2")
    columns = [*range(_CRC_HEAD_WORDS), *range(_CRC_HEAD_WORDS + 2, words.shape[1])]
    count = len(columns)
    tables = _word_tables(count)[::-1]  # column k sits count-1-k words from the end
    initial = zlib.crc32(bytes(2 * count))
    crcs = np.empty(n, dtype=np.uint32)
    for start in range(0, n, _CRC_CHUNK_ROWS):
        block = np.ascontiguousarray(words[start : start + _CRC_CHUNK_ROWS, columns].T)
        acc = np.full(block.shape[1], initial, dtype=np.uint32)
        for table, column in zip(tables, block, strict=True):
            acc ^= table.take(column)
        crcs[start : start + _CRC_CHUNK_ROWS] = acc
    return crcs


@cache
def _word_tables(count: int) -> np.ndarray:
    """``tables[d][w]``: what 16-bit LE word ``w`` adds to the CRC register when ``d`` words
    follow it. Built from the byte-wise table by running zero bytes through it."""
    byte_table = np.array([zlib.crc32(bytes([b])) ^ zlib.crc32(b"\0") for b in range(256)])
    byte_table = byte_table.astype(np.uint32)
    # by_distance[e][b]: contribution of byte b followed by e zero bytes
    by_distance = np.empty((2 * count, 256), dtype=np.uint32)
    by_distance[0] = byte_table
    for e in range(1, 2 * count):
        prev = by_distance[e - 1]
        by_distance[e] = byte_table[prev & 0xFF] ^ (prev >> 8)
    words = np.arange(1 << 16, dtype=np.uint32)
    low, high = words & 0xFF, words >> 8
    return np.stack([by_distance[2 * d + 1][low] ^ by_distance[2 * d][high] for d in range(count)])
