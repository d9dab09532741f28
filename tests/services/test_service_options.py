"""``mycelium service`` options of the adapters: ``--book-depth`` (Kraken's depths only)
and ``--pools FILE`` (a validated pools file), refused before anything starts when bad and
used end to end when good."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from service_helpers import wait_for

from mycelium import Consumer
from mycelium.protocol import TLVType
from mycelium.services import ServiceProcess

if TYPE_CHECKING:
    from conftest import BrokerProcess

DATA = Path(__file__).resolve().parents[1] / "data"
START_S = 30.0
CLI_TIMEOUT_S = 60


def run_service(*args: str) -> subprocess.CompletedProcess[str]:
    """``mycelium service ...`` on no broker: these runs must fail before connecting."""
    return subprocess.run([sys.executable, "-m", "mycelium", "service", *args,
                           "--socket", "/nonexistent/mycelium.sock"],
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S)  # fmt: skip


@pytest.mark.parametrize("depth", ["7", "0", "50", "2000"])
def test_a_depth_kraken_does_not_offer_is_refused(depth: str) -> None:
    done = run_service("kraken_collector", "--book-depth", depth)
    assert done.returncode == 2, done.stderr
    assert "10, 25, 100, 500, 1000" in done.stderr and depth in done.stderr


def test_the_options_belong_to_their_services() -> None:
    done = run_service("portfolio", "--book-depth", "25")
    assert done.returncode == 2 and "kraken_collector only" in done.stderr
    done = run_service("kraken_collector", "--pools", str(DATA / "uniswap_pools.toml"))
    assert done.returncode == 2 and "polygon_adapter and flash_arbitrage only" in done.stderr


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (("fee_bps = 30", "fees = 30"), "pools[0]: unknown key 'fees'; missing key 'fee_bps'"),
        (('dex = "UNISWAP_V3"', 'dex = "UNISWAP_V9"'), "pools[1].dex: unknown venue"),
        (("decimals = 18 }", "decimals = 99 }"), "pools[0].token0.decimals"),
        (("[[pools]]", "[[pools"), "pools file"),
    ],
)
def test_a_bad_pools_file_is_refused_naming_the_entry_and_key(
    tmp_path: Path, edit: tuple[str, str], reason: str
) -> None:
    bad = tmp_path / "pools.toml"
    bad.write_text((DATA / "uniswap_pools.toml").read_text().replace(*edit, 1))
    for name in ("polygon_adapter", "flash_arbitrage"):
        done = run_service(name, "--pools", str(bad))
        assert done.returncode == 2, done.stderr
        assert reason in done.stderr and str(bad) in done.stderr


def test_a_missing_pools_file_is_refused(tmp_path: Path) -> None:
    done = run_service("polygon_adapter", "--pools", str(tmp_path / "none.toml"))
    assert done.returncode == 2 and "none.toml" in done.stderr


@pytest.fixture
def started(broker: BrokerProcess, tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    """Services started by the test; each stopped (SIGTERM, then SIGKILL by PID)."""
    procs: list[ServiceProcess] = []
    yield procs
    for sp in procs:
        sp.stop()


def finished(sp: ServiceProcess) -> dict[str, object]:
    wait_for(lambda: not sp.running(), START_S, f"{sp.name} to finish its input")
    assert sp.stop() == 0, sp.log()
    return sp.stats()


def test_book_depth_reaches_the_collector(
    broker: BrokerProcess, tmp_path: Path, started: list[ServiceProcess]
) -> None:
    sample = str(DATA / "kraken_v2_book_btcusd.jsonl")
    sp = ServiceProcess("kraken_collector", broker.socket, tmp_path, "--input", sample,
                        "--book-depth", "25").start()  # fmt: skip
    started.append(sp)
    stats = finished(sp)
    assert stats["book_depth"] == 25
    assert (stats["published"], stats["book_checksum_mismatches"]) == (24, 0)


def test_the_pools_file_reaches_the_adapter(
    broker: BrokerProcess, tmp_path: Path, started: list[ServiceProcess]
) -> None:
    """The real Ethereum and Arbitrum logs are published once their pools are configured;
    the Polygon-only packaged table would ignore every one."""
    with Consumer("market_data", broker.socket) as md:
        sp = ServiceProcess("polygon_adapter", broker.socket, tmp_path, "--input",
                            str(DATA / "uniswap_logs.jsonl"), "--pools",
                            str(DATA / "uniswap_pools.toml")).start()  # fmt: skip
        started.append(sp)
        stats = finished(sp)
        assert (stats["received"], stats["published"], stats["ignored"]) == (6, 5, 1)
        # published before the adapter exited: each receive returns at once
        types = [md.recv_message(timeout=START_S).tlvs[0].type for _ in range(5)]
        assert types == [TLVType.POOL_SWAP, TLVType.POOL_SYNC, TLVType.POOL_SWAP,
                         TLVType.POOL_MINT, TLVType.POOL_BURN]  # fmt: skip
