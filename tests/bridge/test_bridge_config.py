"""The ``[bridge]`` config section and the ``mycelium bridge`` command's refusals."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from bridge_kit import host_config

from mycelium.bridge.link import backoff_s
from mycelium.config import parse_config
from mycelium.errors import ConfigError


def test_bridge_section_is_read_with_import_as_its_toml_key() -> None:
    cfg = parse_config(
        host_config(
            'nats = ["nats://a:4222", "nats://b:4222"]\nexport = ["market_data"]\n'
            'import = ["signals", "execution"]\nreplicas = 3\nmax_bytes = 1048576\n'
        )
    )
    assert cfg.bridge.nats == ("nats://a:4222", "nats://b:4222")
    assert cfg.bridge.export == ("market_data",)
    assert cfg.bridge.import_ == ("signals", "execution")
    assert (cfg.bridge.replicas, cfg.bridge.max_bytes, cfg.bridge.storage) == (3, 1 << 20, "file")


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ('export = ["nope"]', "bridge.export[0]"),
        ('import = ["market_data", "nope"]', "bridge.import[1]"),
        ("replicas = 7", "bridge.replicas"),
        ('retention = "forever"', "bridge.retention"),
        ("max_in_flight = 0", "bridge.max_in_flight"),
        ('name = "has space"', "bridge.name"),
        ("reconnect_wait_min_ms = 900\nreconnect_wait_max_ms = 10", "bridge.reconnect_wait_max_ms"),
        ("bogus = 1", "bridge.bogus"),
    ],
)
def test_bad_bridge_settings_are_refused_with_their_key(section: str, path: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(host_config(section))
    assert err.value.path == path


def _bridge_cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mycelium", "bridge", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_bridge_command_with_nothing_to_bridge_exits_2_with_a_clear_message(
    tmp_path: Path,
) -> None:
    result = _bridge_cli("--socket", str(tmp_path / "none.sock"))
    assert result.returncode == 2
    assert "nothing to bridge" in result.stderr


def test_bridge_command_refuses_a_bad_config_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(host_config('export = ["nope"]'))
    result = _bridge_cli("--config", str(config))
    assert result.returncode == 2
    assert "bridge.export[0]" in result.stderr


def test_reconnect_backoff_doubles_with_full_jitter_and_stays_under_its_cap() -> None:
    cfg = parse_config(
        host_config("reconnect_wait_min_ms = 100\nreconnect_wait_max_ms = 2000")
    ).bridge
    rng = random.Random(7)
    assert backoff_s(0, cfg, rng) == 0.1
    for attempt, ceiling in ((1, 0.2), (2, 0.4), (3, 0.8), (10, 2.0), (60, 2.0)):
        waits = [backoff_s(attempt, cfg, rng) for _ in range(200)]
        assert all(0.1 <= w <= ceiling for w in waits)
        assert max(waits) - min(waits) > (ceiling - 0.1) / 2  # jittered, not fixed
