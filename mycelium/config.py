"""Broker configuration: a TOML file decoded into frozen, typed, validated structs.

How this works
--------------
``tomllib`` turns the text into plain dicts; ``msgspec.convert`` turns those into the
structs below, which forbid unknown keys and carry per-field bounds as ``msgspec.Meta``
constraints, so a wrong type or an out-of-range number fails with the key's path.
Rules that span fields (duplicate topic names, ring sizes, timeouts relative to each
other) are checked afterwards in ``_cross_field_problems``. Every failure becomes one ``ConfigError``
whose ``path`` is the offending key (``topics[1].routing``), so the broker refuses to
start on a bad config and says exactly where.

Ring memory per lane
--------------------
``TopicConfig.lane_bytes_effective`` sizes each lane's ring (the segment adds one 4 KiB
header page). A fanout topic has one lane per producer; a queue topic one lane per
producer and live consumer of a group. With the default ``bytes_per_message_hint`` of
128 the three example topics get:

=============  ===========  ================  ====================  ==================
topic          buffer_size  max_message_size  buffer x hint         ring per lane
=============  ===========  ================  ====================  ==================
market_data    100000       65536             12 800 000 B          16 777 216 (16 MiB)
signals        50000        32768             6 400 000 B           8 388 608 (8 MiB)
execution      25000        16384             3 200 000 B           4 194 304 (4 MiB)
=============  ===========  ================  ====================  ==================

Four frames of the maximum size (262 176, 131 104 and 65 568 bytes) fit in every one,
so a maximum-size publish always fits whatever the wrap position.
"""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from mycelium.errors import ConfigError, UnknownTopic

__all__ = [
    "DEFAULT_CONFIG_RESOURCE",
    "MAX_MESSAGE_SIZE_LIMIT_BYTES",
    "MIN_FRAMES_PER_LANE",
    "BridgeConfig",
    "BrokerConfig",
    "MetricsConfig",
    "PerformanceConfig",
    "Routing",
    "ServerConfig",
    "TopicConfig",
    "config_to_dict",
    "default_config",
    "frame_bytes",
    "load_config",
    "next_pow2",
    "parse_config",
    "parse_listen",
]

#: Package data file holding the embedded default config.
DEFAULT_CONFIG_RESOURCE = "default_config.toml"
#: Largest max_message_size a topic may declare.
MAX_MESSAGE_SIZE_LIMIT_BYTES = 16 << 20
#: A lane ring holds at least this many maximum-size frames, so one always fits after a wrap.
MIN_FRAMES_PER_LANE = 4
#: Ring frame header: length, sequence, published_ns (mirrors ``mycelium.shm.layout``).
FRAME_HEADER_BYTES = 24
#: Frames are padded to this many bytes so every header is 8-byte aligned.
FRAME_ALIGN_BYTES = 8

_TOPIC_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_MODE_MAX = 0o777

# Field types with their bounds; msgspec reports a violation with the key's path.
_Positive = Annotated[int, msgspec.Meta(gt=0)]
_NonNegative = Annotated[int, msgspec.Meta(ge=0)]
_Mode = Annotated[int, msgspec.Meta(ge=0, le=_MODE_MAX)]
_TopicName = Annotated[str, msgspec.Meta(pattern=_TOPIC_NAME_PATTERN)]
_MessageSize = Annotated[int, msgspec.Meta(ge=1, le=MAX_MESSAGE_SIZE_LIMIT_BYTES)]


def next_pow2(n: int) -> int:
    """Smallest power of two >= ``n`` (1 for ``n <= 1``): ring capacities must be powers of two."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def frame_bytes(payload_len: int) -> int:
    """Ring bytes one frame of ``payload_len`` takes: the header plus the payload padded to 8."""
    padded = (payload_len + FRAME_ALIGN_BYTES - 1) & -FRAME_ALIGN_BYTES
    return FRAME_HEADER_BYTES + padded


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class Routing(enum.StrEnum):
    """How a topic delivers: to every consumer, or to one consumer per group."""

    FANOUT = "fanout"
    QUEUE = "queue"

    @classmethod
    def _missing_(cls, value: object) -> Routing | None:
        # The original configs wrote "Fanout" / "Queue"; msgspec consults this on a miss.
        return cls.__members__.get(value.upper()) if isinstance(value, str) else None


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Shared struct options: immutable, and unknown keys are errors.

    (``kw_only`` applies per class in msgspec, so each section sets it itself.)
    """


class ServerConfig(_Section, frozen=True, kw_only=True):
    """The coordinator's control socket, its limits and who may connect."""

    socket_path: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    max_connections: _Positive = 1000
    connection_timeout_ms: _Positive = 5000
    #: Extra uids allowed besides the broker's own uid and root.
    allowed_uids: tuple[_NonNegative, ...] = ()
    allowed_gids: tuple[_NonNegative, ...] = ()
    socket_mode: _Mode = 0o660
    segment_mode: _Mode = 0o600
    heartbeat_interval_ms: _Positive = 1000
    #: A client silent this long whose pid is also gone is dead (the pid check is primary).
    client_timeout_ms: _Positive = 5000


class PerformanceConfig(_Section, frozen=True, kw_only=True):
    """Tuning knobs; every one has a default, so the section is optional."""

    #: Average bytes one message takes in a ring, used to derive ring size from buffer_size.
    bytes_per_message_hint: _Positive = 128
    #: Cap for a derived ring (an explicit lane_bytes is not capped).
    max_lane_bytes: _Positive = 256 << 20
    spin_iterations: _NonNegative = 2000
    yield_iterations: _NonNegative = 200
    wait_strategy: Literal["spin", "yield", "block", "adaptive"] = "adaptive"
    stats_interval_ms: _Positive = 1000


class MetricsConfig(_Section, frozen=True, kw_only=True):
    """The Prometheus endpoint: off unless ``listen`` names a HOST:PORT."""

    listen: str | None = None


def parse_listen(value: str) -> tuple[str, int]:
    """(host, port) of a ``HOST:PORT`` (``[::1]:9464`` for IPv6). Raises ValueError."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT (for example 127.0.0.1:9464)")
    return host, int(port)


class TopicConfig(_Section, frozen=True, kw_only=True):
    """One topic: its routing, how much it buffers and the largest message it takes."""

    name: _TopicName
    routing: Routing = Routing.FANOUT
    #: Messages the topic buffers per lane.
    buffer_size: _Positive = 100_000
    #: Larger publishes are refused.
    max_message_size: _MessageSize = 65536
    #: Opt-in: the writer may overrun slow readers; the loss is counted, never silent.
    lossy: bool = False
    #: Opt-in: each frame stores its publish time (CLOCK_REALTIME ns), a clock read per
    #: publish; off, ``Envelope.published_ns`` is 0.
    timestamps: bool = False
    backpressure_timeout_ms: _Positive = 5000
    #: 0 derives the ring size (see lane_bytes_effective); else a power of two.
    lane_bytes: _NonNegative = 0
    #: How long an absent durable consumer holds producers back before it is dropped.
    durable_ttl_s: _Positive = 300

    def min_lane_bytes(self) -> int:
        """Smallest ring that holds MIN_FRAMES_PER_LANE frames of max_message_size."""
        return MIN_FRAMES_PER_LANE * frame_bytes(self.max_message_size)

    def lane_bytes_effective(self, perf: PerformanceConfig) -> int:
        """Ring bytes of each lane of this topic.

        The explicit ``lane_bytes`` if set; else ``buffer_size * bytes_per_message_hint``
        rounded up to a power of two, capped at ``max_lane_bytes`` but never below four
        maximum-size frames (rounded up to a power of two), so a maximum-size frame fits.
        """
        if self.lane_bytes:
            return self.lane_bytes
        wanted = next_pow2(self.buffer_size * perf.bytes_per_message_hint)
        return max(min(wanted, perf.max_lane_bytes), next_pow2(self.min_lane_bytes()))


class BridgeConfig(_Section, frozen=True, kw_only=True):
    """``[bridge]``: the NATS JetStream bridge of this host (``mycelium bridge``, docs/distribution.md).

    The broker ignores it; the bridge process reads it (its command-line options win).
    """

    nats: tuple[Annotated[str, msgspec.Meta(min_length=1)], ...] = ("nats://127.0.0.1:4222",)
    #: Origin host name in message ids and headers; default: the machine's hostname.
    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None
    subject_prefix: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,32}$")] = "mycelium"
    export: tuple[_TopicName, ...] = ()
    import_: tuple[_TopicName, ...] = msgspec.field(default=(), name="import")
    #: Import cursors and the status file; default: ``bridge-<name>`` beside the socket.
    state_dir: str | None = None
    #: ``HOST:PORT`` of the bridge's Prometheus endpoint; unset: none.
    metrics: str | None = None
    retention: Literal["limits", "interest", "workqueue"] = "limits"
    storage: Literal["file", "memory"] = "file"
    #: Stream byte limit; 0: unlimited.
    max_bytes: _NonNegative = 0
    replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    duplicate_window_ms: _Positive = 120_000
    max_in_flight: Annotated[int, msgspec.Meta(ge=1, le=65536)] = 1024
    publish_ack_timeout_ms: _Positive = 5000
    fetch_batch: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 256
    ack_wait_ms: _Positive = 5000
    deliver: Literal["all", "new"] = "all"
    reconnect_wait_min_ms: _Positive = 100
    reconnect_wait_max_ms: _Positive = 5000
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    creds: str | None = None


class BrokerConfig(_Section, frozen=True, kw_only=True):
    """A whole broker config; build it with load_config / parse_config, which validate it."""

    server: ServerConfig = ServerConfig()
    topics: tuple[TopicConfig, ...]
    performance: PerformanceConfig = PerformanceConfig()
    bridge: BridgeConfig = BridgeConfig()
    metrics: MetricsConfig = MetricsConfig()

    def topic(self, name: str) -> TopicConfig:
        """The topic called ``name``; raises UnknownTopic if none is."""
        for topic in self.topics:
            if topic.name == name:
                return topic
        raise UnknownTopic(name, tuple(t.name for t in self.topics))


def _cross_field_problems(cfg: BrokerConfig) -> Iterator[tuple[str, str]]:
    """(key path, reason) for each rule spanning fields, which per-field bounds cannot express."""
    if not cfg.topics:
        yield "topics", "at least one [[topics]] table is required"
    seen: dict[str, int] = {}
    for i, topic in enumerate(cfg.topics):
        if topic.name in seen:
            yield (
                f"topics[{i}].name",
                f"duplicate topic name {topic.name!r} (also topics[{seen[topic.name]}])",
            )
        seen.setdefault(topic.name, i)
        if topic.lane_bytes and (
            not _is_pow2(topic.lane_bytes) or topic.lane_bytes < topic.min_lane_bytes()
        ):
            yield (
                f"topics[{i}].lane_bytes",
                f"lane_bytes {topic.lane_bytes} must be 0 or a power of two >= "
                f"{topic.min_lane_bytes()} ({MIN_FRAMES_PER_LANE} frames of "
                f"max_message_size {topic.max_message_size})",
            )
    if not _is_pow2(cfg.performance.max_lane_bytes):
        yield (
            "performance.max_lane_bytes",
            f"max_lane_bytes {cfg.performance.max_lane_bytes} must be a power of two",
        )
    for key, names in (("bridge.export", cfg.bridge.export), ("bridge.import", cfg.bridge.import_)):
        for i, name in enumerate(names):
            if name not in seen:
                yield f"{key}[{i}]", f"{name!r} is not a topic of this config"
    if cfg.bridge.reconnect_wait_max_ms < cfg.bridge.reconnect_wait_min_ms:
        yield "bridge.reconnect_wait_max_ms", "must be >= reconnect_wait_min_ms"
    if cfg.metrics.listen is not None:
        try:
            parse_listen(cfg.metrics.listen)
        except ValueError as exc:
            yield "metrics.listen", str(exc)
    if cfg.server.client_timeout_ms <= cfg.server.heartbeat_interval_ms:
        yield (
            "server.client_timeout_ms",
            f"client_timeout_ms {cfg.server.client_timeout_ms} must exceed "
            f"heartbeat_interval_ms {cfg.server.heartbeat_interval_ms}, "
            "or every client would look dead between heartbeats",
        )


# msgspec reports "<reason> - at `$.topics[1].routing`" (no suffix at the root), and
# names the key itself inside the reason for unknown or missing fields.
_MSGSPEC_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MSGSPEC_FIELD = re.compile(r"^Object (?:contains unknown|missing required) field `(?P<key>[^`]*)`")


def _translate(exc: msgspec.ValidationError) -> tuple[str, str]:
    """(reason, key path) from a msgspec validation message, in our ``a[1].b`` form."""
    match = _MSGSPEC_AT.match(str(exc))
    assert match is not None  # the pattern matches any string
    reason, path = match["reason"], (match["path"] or "").lstrip(".")
    field = _MSGSPEC_FIELD.match(reason)
    if field:
        path = f"{path}.{field['key']}" if path else field["key"]
    return reason, path


def parse_config(text: str, source: str = "<string>") -> BrokerConfig:
    """Parse and validate TOML config text; ``source`` names it in errors.

    Raises ConfigError: for a TOML syntax error its ``path`` is ``source`` and the reason
    carries the line; otherwise its ``path`` is the offending key.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", path=source) from exc
    try:
        cfg = msgspec.convert(doc, BrokerConfig)
    except msgspec.ValidationError as exc:
        reason, path = _translate(exc)
        raise ConfigError(f"{reason} (in {source})", path=path) from exc
    for path, reason in _cross_field_problems(cfg):
        raise ConfigError(f"{reason} (in {source})", path=path)
    return cfg


def load_config(path: str | Path | None = None) -> BrokerConfig:
    """Load a config file, or the embedded default when ``path`` is None.

    Raises ConfigError if the file cannot be read or is invalid.
    """
    if path is None:
        text = resources.files("mycelium").joinpath(DEFAULT_CONFIG_RESOURCE).read_text("utf-8")
        return parse_config(text, source=f"<embedded {DEFAULT_CONFIG_RESOURCE}>")
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config: {exc}", path=str(path)) from exc
    return parse_config(text, source=str(path))


def default_config() -> BrokerConfig:
    """The embedded default: topics market_data (fanout), signals (fanout), execution (queue)."""
    return load_config(None)


def config_to_dict(cfg: BrokerConfig) -> dict[str, Any]:
    """Plain JSON-ready dict of ``cfg`` (for stats); msgspec.convert turns it back."""
    plain: dict[str, Any] = msgspec.to_builtins(cfg)
    return plain
