"""Config loading and validation: the embedded default, the examples, and every refusal."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from mycelium.config import (
    MAX_MESSAGE_SIZE_LIMIT_BYTES,
    BrokerConfig,
    PerformanceConfig,
    Routing,
    TopicConfig,
    config_to_dict,
    default_config,
    frame_bytes,
    load_config,
    next_pow2,
    parse_config,
)
from mycelium.errors import ConfigError, UnknownTopic

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
EMBEDDED = REPO / "mycelium" / "default_config.toml"
MIB = 1 << 20

#: The original three topics: (name, routing, buffer_size, max_message_size).
EXAMPLE_TOPICS = [
    ("market_data", Routing.FANOUT, 100_000, 65536),
    ("signals", Routing.FANOUT, 50_000, 32768),
    ("execution", Routing.QUEUE, 25_000, 16384),
]

# One valid topic table, to which bad cases append or which they replace.
TOPIC = '[[topics]]\nname = "a"\n'


def _refusal(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="test.toml")
    return info.value


def _topic_names(cfg: BrokerConfig) -> list[tuple[str, Routing, int, int]]:
    return [(t.name, t.routing, t.buffer_size, t.max_message_size) for t in cfg.topics]


def test_embedded_default_has_the_three_topics() -> None:
    cfg = default_config()
    assert _topic_names(cfg) == EXAMPLE_TOPICS
    assert cfg == load_config(None)
    assert cfg.server.socket_path is None
    assert cfg.server.socket_mode == 0o660
    assert cfg.server.segment_mode == 0o600


def test_configs_default_is_the_embedded_default() -> None:
    assert (CONFIGS / "default.toml").read_text() == EMBEDDED.read_text()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_example_configs_load(path: Path) -> None:
    cfg = load_config(path)
    assert _topic_names(cfg) == EXAMPLE_TOPICS


def test_trading_example_leaves_the_socket_to_the_environment() -> None:
    """A socket_path in an example would override $MYCELIUM_SOCKET for the broker only,
    and a plain `mycelium status` would not find it."""
    cfg = load_config(str(CONFIGS / "trading.toml"))
    assert cfg.server.socket_path is None
    assert cfg.performance != PerformanceConfig()


def test_missing_sections_take_defaults() -> None:
    cfg = parse_config(TOPIC)
    assert cfg.performance == PerformanceConfig()
    assert cfg.topics == (TopicConfig(name="a"),)
    assert cfg.server.max_connections == 1000


@pytest.mark.parametrize("written", ["fanout", "Fanout", "FANOUT", "queue", "Queue", "qUeUe"])
def test_routing_is_case_insensitive_and_normalised(written: str) -> None:
    cfg = parse_config(TOPIC + f'routing = "{written}"\n')
    assert cfg.topics[0].routing == written.lower()
    assert config_to_dict(cfg)["topics"][0]["routing"] == written.lower()


def test_octal_modes_are_ints() -> None:
    cfg = parse_config("[server]\nsocket_mode = 0o640\nsegment_mode = 0o660\n" + TOPIC)
    assert (cfg.server.socket_mode, cfg.server.segment_mode) == (0o640, 0o660)


def test_config_is_frozen() -> None:
    cfg = default_config()
    with pytest.raises(AttributeError):
        cfg.server.max_connections = 1  # type: ignore[misc]


def test_config_to_dict_round_trips_and_is_json_ready() -> None:
    cfg = load_config(CONFIGS / "trading.toml")
    doc = config_to_dict(cfg)
    assert msgspec.convert(doc, BrokerConfig) == cfg
    assert msgspec.json.decode(msgspec.json.encode(doc))["topics"][2]["routing"] == "queue"


def test_topic_lookup() -> None:
    cfg = default_config()
    assert cfg.topic("signals").buffer_size == 50_000
    with pytest.raises(UnknownTopic, match="market_data"):
        cfg.topic("nope")


BAD_CONFIGS = {
    # unknown keys, at every level
    "unknown top-level key": ("extra = 1\n" + TOPIC, "extra"),
    "unknown server key": ("[server]\nport = 1\n" + TOPIC, "server.port"),
    "unknown topic key": (TOPIC + "colour = 'red'\n", "topics[0].colour"),
    "unknown key, second topic": (TOPIC + '[[topics]]\nname = "b"\nx = 1\n', "topics[1].x"),
    "unknown performance key": (TOPIC + "[performance]\nturbo = true\n", "performance.turbo"),
    # wrong types
    "string for int": ('[server]\nmax_connections = "many"\n' + TOPIC, "server.max_connections"),
    "float for int": (TOPIC + "buffer_size = 1.5\n", "topics[0].buffer_size"),
    "int for bool": (TOPIC + "lossy = 1\n", "topics[0].lossy"),
    "bool for int": (TOPIC + "buffer_size = true\n", "topics[0].buffer_size"),
    "int for routing": (TOPIC + "routing = 1\n", "topics[0].routing"),
    "string for uid list": ('[server]\nallowed_uids = "0"\n' + TOPIC, "server.allowed_uids"),
    "string uid in list": ('[server]\nallowed_uids = [1, "2"]\n' + TOPIC, "server.allowed_uids[1]"),
    "topics as a table": ("[topics]\nname = 'a'\n", "topics"),
    "server as a value": ("server = 1\n" + TOPIC, "server"),
    # impossible values
    "zero buffer_size": (TOPIC + "buffer_size = 0\n", "topics[0].buffer_size"),
    "negative buffer_size": (TOPIC + "buffer_size = -5\n", "topics[0].buffer_size"),
    "zero max_message_size": (TOPIC + "max_message_size = 0\n", "topics[0].max_message_size"),
    "huge max_message_size": (
        TOPIC + f"max_message_size = {MAX_MESSAGE_SIZE_LIMIT_BYTES + 1}\n",
        "topics[0].max_message_size",
    ),
    "negative lane_bytes": (TOPIC + "lane_bytes = -1\n", "topics[0].lane_bytes"),
    "lane_bytes not a power of two": (TOPIC + "lane_bytes = 3000000\n", "topics[0].lane_bytes"),
    "lane_bytes under 4 frames": (
        TOPIC + "max_message_size = 65536\nlane_bytes = 131072\n",
        "topics[0].lane_bytes",
    ),
    "zero max_connections": ("[server]\nmax_connections = 0\n" + TOPIC, "server.max_connections"),
    "zero timeout": (
        "[server]\nconnection_timeout_ms = 0\n" + TOPIC,
        "server.connection_timeout_ms",
    ),
    "negative heartbeat": (
        "[server]\nheartbeat_interval_ms = -1\n" + TOPIC,
        "server.heartbeat_interval_ms",
    ),
    "client timeout under heartbeat": (
        "[server]\nheartbeat_interval_ms = 1000\nclient_timeout_ms = 500\n" + TOPIC,
        "server.client_timeout_ms",
    ),
    "zero backpressure timeout": (
        TOPIC + "backpressure_timeout_ms = 0\n",
        "topics[0].backpressure_timeout_ms",
    ),
    "socket mode too large": ("[server]\nsocket_mode = 0o1777\n" + TOPIC, "server.socket_mode"),
    "negative gid": ("[server]\nallowed_gids = [-1]\n" + TOPIC, "server.allowed_gids[0]"),
    "empty socket path": ('[server]\nsocket_path = ""\n' + TOPIC, "server.socket_path"),
    "metrics listen without a port": (
        '[metrics]\nlisten = "localhost"\n' + TOPIC,
        "metrics.listen",
    ),
    "metrics port out of range": (
        '[metrics]\nlisten = "127.0.0.1:70000"\n' + TOPIC,
        "metrics.listen",
    ),
    "unknown metrics key": ("[metrics]\nport = 9464\n" + TOPIC, "metrics.port"),
    "bad routing": (TOPIC + 'routing = "broadcast"\n', "topics[0].routing"),
    "bad wait strategy": (
        TOPIC + '[performance]\nwait_strategy = "sleep"\n',
        "performance.wait_strategy",
    ),
    "max_lane_bytes not a power of two": (
        TOPIC + "[performance]\nmax_lane_bytes = 1000000\n",
        "performance.max_lane_bytes",
    ),
    "zero bytes_per_message_hint": (
        TOPIC + "[performance]\nbytes_per_message_hint = 0\n",
        "performance.bytes_per_message_hint",
    ),
    # topics
    "duplicate topic": (TOPIC + '[[topics]]\nname = "b"\n' + TOPIC, "topics[2].name"),
    "empty topic name": ('[[topics]]\nname = ""\n', "topics[0].name"),
    "topic name with space": ('[[topics]]\nname = "a b"\n', "topics[0].name"),
    "topic name with slash": ('[[topics]]\nname = "a/b"\n', "topics[0].name"),
    "topic name too long": (f'[[topics]]\nname = "{"x" * 65}"\n', "topics[0].name"),
    "topic without name": ("[[topics]]\nrouting = 'fanout'\n", "topics[0].name"),
    "no topics key": ("[server]\n", "topics"),
    "empty topics": ("topics = []\n", "topics"),
    # syntax
    "TOML syntax error": (TOPIC + "buffer_size = \n", "test.toml"),
    "TOML duplicate key": (TOPIC + 'name = "b"\n', "test.toml"),
}


@pytest.mark.parametrize(("text", "path"), BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_is_refused_with_its_key_path(text: str, path: str) -> None:
    err = _refusal(text)
    assert err.path == path
    assert str(err).startswith(f"{path}: ")
    assert len(str(err)) > len(path) + 10  # a reason follows the path


def test_syntax_error_names_the_line() -> None:
    err = _refusal(TOPIC + "\nbuffer_size = \n")
    assert "line 4" in str(err)


def test_semantic_error_names_the_source() -> None:
    assert "test.toml" in str(_refusal("topics = []\n"))


def test_a_valid_topic_name_of_every_allowed_character() -> None:
    name = "Az09_.-" + "x" * 57
    assert parse_config(f'[[topics]]\nname = "{name}"\n').topics[0].name == name


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.path == str(missing)


def test_bad_file_error_path_is_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(TOPIC + "routing = 'nope'\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.path == "topics[0].routing"
    assert str(bad) in str(info.value)


@pytest.mark.parametrize(
    ("n", "expected"), [(0, 1), (1, 1), (2, 2), (3, 4), (4096, 4096), (4097, 8192)]
)
def test_next_pow2(n: int, expected: int) -> None:
    assert next_pow2(n) == expected


@pytest.mark.parametrize(("n", "expected"), [(0, 24), (1, 32), (8, 32), (9, 40), (65536, 65560)])
def test_frame_bytes(n: int, expected: int) -> None:
    assert frame_bytes(n) == expected


def test_frame_bytes_agrees_with_the_ring_layout() -> None:
    """The config sizes rings with the same frame arithmetic the lanes write with."""
    from mycelium.shm import layout

    for n in (0, 1, 7, 8, 9, 4095, 65536, MAX_MESSAGE_SIZE_LIMIT_BYTES):
        assert frame_bytes(n) == layout.frame_bytes(n)


@pytest.mark.parametrize(
    ("name", "lane_bytes"),
    [("market_data", 16 * MIB), ("signals", 8 * MIB), ("execution", 4 * MIB)],
)
def test_lane_size_of_the_examples(name: str, lane_bytes: int) -> None:
    cfg = default_config()
    assert cfg.topic(name).lane_bytes_effective(cfg.performance) == lane_bytes


def test_explicit_lane_bytes_wins() -> None:
    cfg = parse_config(TOPIC + "lane_bytes = 1048576\n")
    assert cfg.topics[0].lane_bytes_effective(cfg.performance) == MIB


def test_derived_lane_is_capped() -> None:
    perf = PerformanceConfig(max_lane_bytes=MIB)
    assert TopicConfig(name="a", buffer_size=10**9, max_message_size=1024).lane_bytes_effective(
        perf
    ) == (MIB)


@pytest.mark.parametrize(
    ("buffer_size", "max_message_size", "hint", "cap"),
    [
        (1, 1, 1, 1),
        (1, 65536, 1, 1024),
        (10, 1_000_000, 128, 1 << 20),
        (100_000, MAX_MESSAGE_SIZE_LIMIT_BYTES, 128, 1 << 20),
        (7, 4095, 3, 1 << 12),
        (100_000, 65536, 128, 1 << 28),
    ],
)
def test_a_max_size_frame_always_fits(
    buffer_size: int, max_message_size: int, hint: int, cap: int
) -> None:
    """Whatever the hint and cap, the ring holds four maximum-size frames."""
    topic = TopicConfig(name="a", buffer_size=buffer_size, max_message_size=max_message_size)
    perf = PerformanceConfig(bytes_per_message_hint=hint, max_lane_bytes=cap)
    lane = topic.lane_bytes_effective(perf)
    assert lane & (lane - 1) == 0
    assert lane >= 4 * frame_bytes(max_message_size)
