"""Control-plane messages and their framing on the Unix socket, with no I/O in it.

How this works
--------------
Every control message is a msgspec Struct tagged by its class name in field ``"t"``.
On the wire a message is one frame: a 4-byte big-endian body length, then the msgpack
body. ``encode_frame`` turns a message into bytes; ``ControlFrameDecoder`` is fed whatever
bytes the socket produced (``receive_data``) and hands back whole messages
(``next_message``, None while a frame is incomplete), h11 style: the caller owns the
socket, this module only converts.

Unknown fields are ignored so an older peer can read a newer one's messages, but field
types are strict. Anything the peer sends that is not a valid frame raises
``ControlProtocolError`` with a ``code`` from ``ErrorCode``; if this module raises
anything else on received bytes, that is a bug. After such an error the stream cannot be
trusted: answer with an ``Error`` reply and close the connection.
"""

from __future__ import annotations

import enum
import struct
from typing import Any, Literal, TypeAlias, get_args

import msgspec

from mycelium.errors import ControlProtocolError

__all__ = [
    "FRAME_PREFIX_BYTES",
    "MAX_CONTROL_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "ControlFrameDecoder",
    "DeleteDurable",
    "Error",
    "ErrorCode",
    "Goodbye",
    "Heartbeat",
    "Hello",
    "Message",
    "Ok",
    "ProducerRegistered",
    "RegisterProducer",
    "Reload",
    "Reply",
    "ReportFigures",
    "ReportedTopic",
    "Request",
    "Shutdown",
    "StatsReply",
    "StatsRequest",
    "Subscribe",
    "Subscribed",
    "Unsubscribe",
    "Welcome",
    "encode_frame",
]

#: Bumped on any incompatible change; Hello carries it and a mismatch is refused.
PROTOCOL_VERSION = 1
#: Largest frame body (the length prefix excluded) either side sends or accepts.
MAX_CONTROL_FRAME_BYTES = 1 << 20
#: The body length, big-endian u32, before every frame.
_PREFIX = struct.Struct(">I")
FRAME_PREFIX_BYTES = _PREFIX.size


class ErrorCode(enum.StrEnum):
    """Why a request failed; carried in ``Error.code`` and ``ControlProtocolError.code``."""

    BAD_VERSION = "bad_version"
    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    UNKNOWN_MESSAGE = "unknown_message"
    OUT_OF_ORDER = "out_of_order"
    UNKNOWN_TOPIC = "unknown_topic"
    NOT_ALLOWED = "not_allowed"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    TIMEOUT = "timeout"
    #: Reload found the new config invalid; the broker keeps running on the old one.
    CONFIG_ERROR = "config_error"
    #: A name, entry count or size limit (docs/limits.md); nothing was created.
    LIMIT_EXCEEDED = "limit_exceeded"
    #: The coordinator could not create or map a segment.
    SEGMENT_ERROR = "segment_error"
    #: The coordinator is stopping; reconnect to its successor.
    SHUTTING_DOWN = "shutting_down"
    INTERNAL = "internal"


class _Message(msgspec.Struct, frozen=True, tag_field="t", tag=True):
    """Base of every control message: immutable and tagged with its class name in ``"t"``.

    Subclasses inherit both options.
    """


# --- requests: client -> coordinator -------------------------------------------------


class Hello(_Message, frozen=True):
    """First message of every connection; the coordinator answers Welcome or Error."""

    version: int
    pid: int
    role: Literal["producer", "consumer", "admin"]
    name: str = ""
    #: The client_id of a previous connection to take over after a reconnect (0: new).
    resume_id: int = 0


class RegisterProducer(_Message, frozen=True):
    """Ask for this client's lanes on ``topic``; answered by ProducerRegistered."""

    topic: str


class Subscribe(_Message, frozen=True):
    """Join ``topic`` (queue topics: in ``group``, "default" if None); answered by Subscribed."""

    topic: str
    group: str | None = None
    #: The consumer_id of a previous subscription to resume after a reconnect (0: new).
    resume_id: int = 0
    #: A durable consumer's name: resume its position (one live process per name).
    durable: str = ""
    #: The consumer_id of a subscription of this connection whose doorbell this one shares
    #: (a multi-topic consumer blocks on one doorbell); 0: a doorbell of its own.
    doorbell_of: int = 0


class Unsubscribe(_Message, frozen=True):
    """Leave a subscription; what it had not consumed goes to the rest of its group."""

    consumer_id: int


class Heartbeat(_Message, frozen=True):
    """Keeps the connection alive between other requests."""

    pid: int


class StatsRequest(_Message, frozen=True):
    """Ask for the broker's statistics; answered by StatsReply."""


class Reload(_Message, frozen=True):
    """Re-read the config file (as SIGHUP does)."""


class Shutdown(_Message, frozen=True):
    """Stop the broker gracefully."""


class DeleteDurable(_Message, frozen=True):
    """Remove an absent durable consumer (``mycelium consumer delete NAME``)."""

    name: str


class Goodbye(_Message, frozen=True):
    """Clean close: the client releases what it holds; no reply."""


class ReportedTopic(msgspec.Struct, frozen=True):
    """One topic's counters in a ReportFigures (names and counts bounded in limits.py)."""

    topic: str
    direction: Literal["export", "import"]
    figures: dict[str, int]


class ReportFigures(_Message, frozen=True):
    """A bridge's own figures, replacing its previous report; answered by Ok.

    The coordinator keeps the last one per connection and shows it in status and metrics
    until the connection closes, so a bridge that dies disappears from them.
    """

    name: str
    connected: bool
    server: str = ""
    reconnects: int = 0
    topics: list[ReportedTopic] = msgspec.field(default_factory=list)


# --- replies: coordinator -> client --------------------------------------------------


class Welcome(_Message, frozen=True):
    """Accepts a Hello: names the broker's shared-memory registry and the client's id."""

    version: int
    broker_id: str
    registry_name: str
    client_id: int
    broker_pid: int
    #: The broker's configured segment mode: no segment it hands out may be wider.
    segment_mode: int = 0o600


class ProducerRegistered(_Message, frozen=True):
    """The producer's id on ``topic``; its lanes appear in the registry."""

    topic: str
    producer_id: int


class Subscribed(_Message, frozen=True):
    """The new consumer's id, group, state segment and doorbell names."""

    topic: str
    consumer_id: int
    group: str
    state_name: str
    doorbell_name: str


class Ok(_Message, frozen=True):
    """A request with nothing else to return succeeded."""

    detail: str = ""


class StatsReply(_Message, frozen=True):
    """Broker statistics as a JSON-like dict."""

    stats: dict[str, Any]


class Error(_Message, frozen=True):
    """A request failed; ``code`` is an ErrorCode value (a str, so newer codes still decode).

    ``data`` carries the error's fields (UnknownTopic's topic and known topics, a limit's
    name and maximum), so the client rebuilds the error without parsing ``message``.
    """

    code: str
    message: str
    data: dict[str, Any] = msgspec.field(default_factory=dict)


Request: TypeAlias = (
    Hello
    | RegisterProducer
    | Subscribe
    | Unsubscribe
    | Heartbeat
    | StatsRequest
    | Reload
    | Shutdown
    | DeleteDurable
    | Goodbye
    | ReportFigures
)
Reply: TypeAlias = Welcome | ProducerRegistered | Subscribed | Ok | StatsReply | Error
Message: TypeAlias = Request | Reply

_ENCODER = msgspec.msgpack.Encoder()
#: Untyped decoder, used only to name the tag of a frame that failed typed decoding.
_ANY_DECODER = msgspec.msgpack.Decoder()
#: What msgspec raises on bytes that are not msgpack at all: bad structure, a string that
#: is not UTF-8, or nesting deeper than the C stack allows.
_UNDECODABLE = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def encode_frame(msg: Message) -> bytes:
    """One frame: length prefix and msgpack body. Raises ControlProtocolError (too_large)."""
    body = _ENCODER.encode(msg)
    if len(body) > MAX_CONTROL_FRAME_BYTES:
        raise ControlProtocolError(
            f"{type(msg).__name__} encodes to {len(body)} bytes, "
            f"over the {MAX_CONTROL_FRAME_BYTES}-byte control frame limit",
            code=ErrorCode.TOO_LARGE,
        )
    return _PREFIX.pack(len(body)) + body


def _tag_of(body: bytes) -> object:
    """The ``"t"`` field of a msgpack map body, or None; tells unknown tags from bad fields."""
    try:
        doc = _ANY_DECODER.decode(body)
    except _UNDECODABLE:
        return None
    return doc.get("t") if isinstance(doc, dict) else None


class ControlFrameDecoder:
    """Reassembles frames from a byte stream and decodes them into ``expect`` messages.

    Feed bytes with ``receive_data``; call ``next_message`` until it returns None (more
    bytes needed). A declared length over ``max_frame`` is refused as soon as its prefix
    is seen, without waiting for the body (nothing past the current chunk is buffered).
    """

    def __init__(self, max_frame: int = MAX_CONTROL_FRAME_BYTES, expect: Any = Request) -> None:
        self._max_frame = max_frame
        self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(expect)
        self._tags = frozenset(cls.__struct_config__.tag for cls in get_args(expect) or (expect,))
        # Consumed frames are cut from the front: CPython makes that amortised O(1).
        self._buf = bytearray()

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the socket."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes held of a frame not yet complete (0 between frames)."""
        return len(self._buf)

    def next_message(self) -> Any:
        """The next whole message, or None if more bytes are needed.

        Raises ControlProtocolError with code too_large, malformed or unknown_message.
        """
        if len(self._buf) < FRAME_PREFIX_BYTES:
            return None
        (length,) = _PREFIX.unpack_from(self._buf)
        if length > self._max_frame:
            raise ControlProtocolError(
                f"frame declares {length} bytes, over the {self._max_frame}-byte limit",
                code=ErrorCode.TOO_LARGE,
            )
        end = FRAME_PREFIX_BYTES + length
        if len(self._buf) < end:
            return None
        body = bytes(self._buf[FRAME_PREFIX_BYTES:end])
        del self._buf[:end]
        try:
            return self._decoder.decode(body)
        except msgspec.ValidationError as exc:
            tag = _tag_of(body)
            if isinstance(tag, str) and tag not in self._tags:
                raise ControlProtocolError(
                    f"unknown message type {tag!r}", code=ErrorCode.UNKNOWN_MESSAGE
                ) from exc
            raise ControlProtocolError(f"invalid message: {exc}", code=ErrorCode.MALFORMED) from exc
        except _UNDECODABLE as exc:
            raise ControlProtocolError(
                f"undecodable frame: {exc}", code=ErrorCode.MALFORMED
            ) from exc
