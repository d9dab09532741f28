"""Protocol V2 numbers: header constants, relay domains, sources, TLV types and fixed sizes.

How this works: every number here is the one the original AlphaPulse ``protocol_v2`` puts on
the wire. The golden vectors in ``tests/data/protocol-v2`` confirm the sources 1-4, 20, 22, 40,
42, 60, 62, 80 and 81 and the TLV types they use; ``layouts.json`` gives the fixed payload
sizes (``TLVType::expected_payload_size``). Names outside that evidence complete the
original's ranges. The codec keeps these as plain ints on its hot paths and uses the enums
for names and validation only (frozensets and a 256-entry tuple, built once here).
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "EXTENDED_TLV_MARKER",
    "FIXED_PAYLOAD_SIZES",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_EXTENDED_PAYLOAD",
    "MAX_STANDARD_PAYLOAD",
    "PROTOCOL_VERSION",
    "RelayDomain",
    "SourceType",
    "TLVType",
    "relay_domain_for_tlv_type",
    "tlv_type_name",
]

MAGIC = 0xDEADBEEF
PROTOCOL_VERSION = 1
HEADER_SIZE = 32
EXTENDED_TLV_MARKER = 255
MAX_STANDARD_PAYLOAD = 255
MAX_EXTENDED_PAYLOAD = 0xFFFF


class RelayDomain(IntEnum):
    """Which relay (and so which broker topic) carries a message."""

    MARKET_DATA = 1
    SIGNAL = 2
    EXECUTION = 3
    SYSTEM = 4


class SourceType(IntEnum):
    """The service that produced a message (header byte 6); ranges as in the original."""

    # Exchange collectors (1-19). The short names are ours; the *_COLLECTOR aliases are the
    # original's.
    BINANCE = 1
    KRAKEN = 2
    COINBASE = 3
    POLYGON = 4
    GEMINI = 5
    BINANCE_COLLECTOR = 1
    KRAKEN_COLLECTOR = 2
    COINBASE_COLLECTOR = 3
    POLYGON_COLLECTOR = 4
    GEMINI_COLLECTOR = 5
    # Strategies (20-39)
    ARBITRAGE_STRATEGY = 20
    MARKET_MAKER = 21
    TREND_FOLLOWER = 22
    KRAKEN_SIGNAL_STRATEGY = 23
    # Execution (40-59)
    PORTFOLIO_MANAGER = 40
    RISK_MANAGER = 41
    EXECUTION_ENGINE = 42
    # System services (60-79)
    DASHBOARD = 60
    METRICS_COLLECTOR = 61
    STATE_MANAGER = 62
    # Relays (80-99)
    MARKET_DATA_RELAY = 80
    SIGNAL_RELAY = 81
    EXECUTION_RELAY = 82


class TLVType(IntEnum):
    """TLV type numbers of the original (``protocol_v2/src/tlv/types.rs``): market data 1-19,
    signal 20-39, execution 40-59, portfolio/risk 60-79, compliance 80-99, system 100-119,
    vendor 200-254; 255 marks the extended form."""

    # Market data (1-19)
    TRADE = 1
    QUOTE = 2
    ORDER_BOOK = 3
    INSTRUMENT_META = 4
    L2_SNAPSHOT = 5
    L2_DELTA = 6
    L2_RESET = 7
    PRICE_UPDATE = 8
    VOLUME_UPDATE = 9
    POOL_LIQUIDITY = 10
    POOL_SWAP = 11
    POOL_MINT = 12
    POOL_BURN = 13
    POOL_TICK = 14
    POOL_STATE = 15
    POOL_SYNC = 16
    GAS_PRICE = 18
    # Signal (20-39)
    SIGNAL_IDENTITY = 20
    ASSET_CORRELATION = 21
    ECONOMICS = 22
    EXECUTION_ADDRESSES = 23
    VENUE_METADATA = 24
    STATE_REFERENCE = 25
    EXECUTION_CONTROL = 26
    POOL_ADDRESSES = 27
    MEV_BUNDLE = 28
    TERTIARY_VENUE = 29
    RISK_PARAMETERS = 30
    PERFORMANCE_METRICS = 31
    ARBITRAGE_SIGNAL = 32
    # Execution (40-59)
    ORDER_REQUEST = 40
    ORDER_STATUS = 41
    FILL = 42
    ORDER_CANCEL = 43
    ORDER_MODIFY = 44
    EXECUTION_REPORT = 45
    PORTFOLIO = 46
    POSITION = 47
    BALANCE = 48
    TRADE_CONFIRMATION = 49
    # Portfolio and risk (60-79), routed as signals
    RISK_DECISION = 60
    POSITION_UPDATE = 61
    RISK_ALERT = 62
    COLLATERAL_UPDATE = 63
    EXPOSURE_REPORT = 64
    PORTFOLIO_EVENT = 65
    RISK_THRESHOLD = 66
    FLASH_LOAN_RESULT = 67
    POST_TRADE_ANALYTICS = 68
    POSITION_QUERY = 69
    RISK_METRICS = 70
    CIRCUIT_BREAKER = 71
    STRATEGY_REGISTRATION = 72
    # Compliance and audit (80-99), routed as system
    COMPLIANCE_CHECK = 80
    AUDIT_TRAIL = 81
    REGULATORY_REPORT = 82
    TRADE_BREAKDOWN = 83
    SETTLEMENT_INSTRUCTION = 84
    CLEARING_REPORT = 85
    MARGIN_CALL = 86
    CUSTODY_EVENT = 87
    VENUE_CONNECTIVITY = 88
    CROSS_VENUE_SPREAD = 89
    ARBITRAGE_EXECUTION = 90
    # System (100-119)
    HEARTBEAT = 100
    SNAPSHOT = 101
    ERROR = 102
    CONFIG_UPDATE = 103
    SERVICE_DISCOVERY = 104
    RESOURCE_USAGE = 105
    STATE_INVALIDATION = 106
    SYSTEM_HEALTH = 107
    TRACE_CONTEXT = 108
    RECOVERY_REQUEST = 110
    RECOVERY_RESPONSE = 111
    SEQUENCE_SYNC = 112
    # Vendor (200-254): the original's ``VendorTLVType`` assignments; free for custom use
    POOL_INFO = 200
    POOL_CACHE_HEADER = 201
    PROPRIETARY_DATA = 202
    CUSTOM_METRICS = 203
    EXPERIMENTAL_SIGNAL = 204
    # Marker of the extended form, never a payload type of its own
    EXTENDED = 255


# Payload sizes the parser enforces for standard-form TLVs: the original's
# TLVType::expected_payload_size table, with two deliberate deviations. The original says
# Quote = 52 and ArbitrageSignal = 168, yet its own QuoteTLV / ArbitrageSignalTLV structs are
# 56 and 170 bytes, so it rejects the messages it builds. We enforce the struct sizes.
FIXED_PAYLOAD_SIZES: dict[int, int] = {
    TLVType.TRADE: 40,
    TLVType.QUOTE: 56,  # deviation: original registry says 52
    TLVType.GAS_PRICE: 32,
    TLVType.SIGNAL_IDENTITY: 16,
    TLVType.ASSET_CORRELATION: 24,
    TLVType.ECONOMICS: 32,
    TLVType.EXECUTION_ADDRESSES: 84,
    TLVType.VENUE_METADATA: 12,
    TLVType.STATE_REFERENCE: 24,
    TLVType.EXECUTION_CONTROL: 16,
    TLVType.POOL_ADDRESSES: 44,
    TLVType.MEV_BUNDLE: 40,
    TLVType.TERTIARY_VENUE: 24,
    TLVType.ARBITRAGE_SIGNAL: 170,  # deviation: original registry says 168
    TLVType.ORDER_REQUEST: 32,
    TLVType.ORDER_STATUS: 24,
    TLVType.FILL: 32,
    TLVType.ORDER_CANCEL: 16,
    TLVType.ORDER_MODIFY: 24,
    TLVType.EXECUTION_REPORT: 48,
    TLVType.RISK_DECISION: 32,
    TLVType.COLLATERAL_UPDATE: 48,
    TLVType.RISK_THRESHOLD: 40,
    TLVType.POSITION_QUERY: 32,
    TLVType.CIRCUIT_BREAKER: 24,
    TLVType.MARGIN_CALL: 48,
    TLVType.VENUE_CONNECTIVITY: 32,
    TLVType.CROSS_VENUE_SPREAD: 40,
    TLVType.HEARTBEAT: 16,
    TLVType.RESOURCE_USAGE: 64,
    TLVType.SYSTEM_HEALTH: 48,
    TLVType.RECOVERY_REQUEST: 24,
}

# Lookup structures for the hot paths: plain ints, built once.
FIXED_SIZE_BY_TYPE: tuple[int | None, ...] = tuple(FIXED_PAYLOAD_SIZES.get(t) for t in range(256))
VALID_RELAY_DOMAINS = frozenset(int(d) for d in RelayDomain)
KNOWN_SOURCES = frozenset(int(s) for s in SourceType)
# Indexed by a header byte (0-255): a tuple index is cheaper than a set lookup.
IS_RELAY_DOMAIN: tuple[bool, ...] = tuple(b in VALID_RELAY_DOMAINS for b in range(256))
IS_KNOWN_SOURCE: tuple[bool, ...] = tuple(b in KNOWN_SOURCES for b in range(256))

#: The original's ``TLVType::relay_domain`` table.
_DOMAIN_RANGES = (
    (range(1, 20), RelayDomain.MARKET_DATA),
    (range(20, 40), RelayDomain.SIGNAL),
    (range(40, 60), RelayDomain.EXECUTION),
    (range(60, 80), RelayDomain.SIGNAL),  # portfolio/risk: monitoring and analytics
    (range(80, 100), RelayDomain.SYSTEM),  # compliance and audit
    (range(100, 120), RelayDomain.SYSTEM),
)


def relay_domain_for_tlv_type(tlv_type: int) -> RelayDomain | None:
    """The relay domain a TLV type belongs to by the original's numbering ranges.

    Returns None for 0, the unallocated 120-199, vendor types 200-254 (which may travel in
    any domain) and the extended marker 255; the original falls back to MarketData there,
    which hides mistakes, so we make the caller decide.
    """
    for numbers, domain in _DOMAIN_RANGES:
        if tlv_type in numbers:
            return domain
    return None


def tlv_type_name(tlv_type: int) -> str:
    """A readable name for any TLV type byte, for tools and error reports. The vendor
    range reads "VENDOR" even where the enum names the original's assignment (POOL_INFO,
    ...): another vendor may put its own payload under the same number."""
    if 200 <= tlv_type <= 254:
        return "VENDOR"
    try:
        return TLVType(tlv_type).name
    except ValueError:
        return "UNKNOWN"
