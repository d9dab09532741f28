"""Protocol V2, sans I/O: the wire format of AlphaPulse's relays, as bytes in and bytes out.

How this works. ``_codec`` parses and encodes single messages (``parse_message``,
``encode_message``, ``MessageBuilder``); ``_frame`` splits a byte stream into messages
(``FrameDecoder``); ``_typed`` holds the typed TLV payloads; ``batch`` encodes and decodes
arrays of fixed-layout messages with numpy; ``describe`` renders a message as JSON-ready
data. Nothing here opens a socket, a file or shared memory. Every error raised for bad
input is a ``ProtocolError`` (a ``MyceliumError`` and a ``ValueError``).
"""

from mycelium.protocol._codec import (
    TLV,
    Header,
    Message,
    MessageBuilder,
    encode_message,
    message_checksum,
    parse_message,
)
from mycelium.protocol._errors import (
    ChecksumMismatch,
    EncodeError,
    FrameTooLarge,
    InvalidExtendedTLV,
    InvalidMagic,
    InvalidRelayDomain,
    LayoutMismatch,
    MessageTooSmall,
    PayloadSizeMismatch,
    ProtocolError,
    TruncatedTLV,
    UnknownSource,
)
from mycelium.protocol._fixed_point import (
    FIXED_POINT_DECIMALS,
    FIXED_POINT_SCALE,
    from_fixed,
    to_fixed,
)
from mycelium.protocol._frame import DEFAULT_MAX_FRAME_BYTES, FrameDecoder
from mycelium.protocol._instrument import AssetType, InstrumentId, VenueId
from mycelium.protocol._typed import (
    TYPED_TLV_CLASSES,
    ArbitrageSignalTLV,
    GasPriceTLV,
    PoolSwapTLV,
    PoolSyncTLV,
    QuoteTLV,
    RecoveryRequestTLV,
    SystemHealthTLV,
    TradeTLV,
    TypedTLV,
)
from mycelium.protocol._types import (
    EXTENDED_TLV_MARKER,
    FIXED_PAYLOAD_SIZES,
    HEADER_SIZE,
    MAGIC,
    MAX_EXTENDED_PAYLOAD,
    MAX_STANDARD_PAYLOAD,
    PROTOCOL_VERSION,
    RelayDomain,
    SourceType,
    TLVType,
    relay_domain_for_tlv_type,
    tlv_type_name,
)

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "EXTENDED_TLV_MARKER",
    "FIXED_PAYLOAD_SIZES",
    "FIXED_POINT_DECIMALS",
    "FIXED_POINT_SCALE",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_EXTENDED_PAYLOAD",
    "MAX_STANDARD_PAYLOAD",
    "PROTOCOL_VERSION",
    "TLV",
    "TYPED_TLV_CLASSES",
    "ArbitrageSignalTLV",
    "AssetType",
    "ChecksumMismatch",
    "EncodeError",
    "FrameDecoder",
    "FrameTooLarge",
    "GasPriceTLV",
    "Header",
    "InstrumentId",
    "InvalidExtendedTLV",
    "InvalidMagic",
    "InvalidRelayDomain",
    "LayoutMismatch",
    "Message",
    "MessageBuilder",
    "MessageTooSmall",
    "PayloadSizeMismatch",
    "PoolSwapTLV",
    "PoolSyncTLV",
    "ProtocolError",
    "QuoteTLV",
    "RecoveryRequestTLV",
    "RelayDomain",
    "SourceType",
    "SystemHealthTLV",
    "TLVType",
    "TradeTLV",
    "TruncatedTLV",
    "TypedTLV",
    "UnknownSource",
    "VenueId",
    "encode_message",
    "from_fixed",
    "message_checksum",
    "parse_message",
    "relay_domain_for_tlv_type",
    "tlv_type_name",
    "to_fixed",
]
