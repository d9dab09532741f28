"""The trading services' commands: one service, the live ``top`` view, the whole demo."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import typer

from mycelium.cli.app import (
    ConfigFileOption,
    LogFormatOption,
    LogLevelOption,
    SocketOption,
    app,
    fail,
    setup_logging,
    socket_of,
)

HttpOption = typer.Option(
    None, "--http", help="Dashboard: serve the web page on [HOST:]PORT (default host 127.0.0.1)."
)
AllowRemoteOption = typer.Option(
    False, "--allow-remote", help="Let --http bind a non-loopback address (no authentication)."
)


def _listen(http: str | None, allow_remote: bool) -> tuple[str, int] | None:
    """``--http`` as (host, port), refused with exit code 2 when bad or not loopback."""
    if http is None:
        return None
    from mycelium.errors import ConfigError
    from mycelium.services.web import parse_listen

    try:
        return parse_listen(http, allow_remote=allow_remote)
    except ConfigError as exc:
        raise fail(str(exc), 2) from exc


def _market_options(name: str, book_depth: int | None, pools: Path | None) -> dict[str, Any]:
    """``--book-depth`` and ``--pools`` as constructor options, checked before anything
    starts: a depth Kraken does not offer, or a bad pools file, exits with code 2 and the
    reason (the file's bad entry and key)."""
    from mycelium.errors import ConfigError
    from mycelium.services.kraken import book_depth as checked_depth
    from mycelium.services.markets import load_pools

    options: dict[str, Any] = {}
    try:
        if book_depth is not None:
            if name != "kraken_collector":
                raise ConfigError("--book-depth is for kraken_collector only")
            options["depth"] = checked_depth(book_depth)
        if pools is not None:
            if name not in ("polygon_adapter", "flash_arbitrage"):
                raise ConfigError("--pools is for polygon_adapter and flash_arbitrage only")
            options["pools"] = load_pools(pools)
    except ConfigError as exc:
        raise fail(str(exc), 2) from exc
    return options


@app.command()
def service(
    name: str = typer.Argument(
        ..., help="kraken_collector, polygon_adapter, flash_arbitrage, portfolio or dashboard."
    ),
    socket: str | None = SocketOption,
    input: Path | None = typer.Option(
        None,
        "--input",
        "-i",
        exists=True,
        dir_okay=False,
        help="Adapters: replay this recorded JSON-lines feed.",
    ),
    live: bool = typer.Option(False, "--live", help="Adapters: read the live WebSocket feed."),
    rate: float | None = typer.Option(
        None, "--rate", help="Adapters: lines per second (default: generator 300, file unpaced)."
    ),
    seed: int = typer.Option(0, "--seed", help="Adapters: seed of the built-in generator."),
    book_depth: int | None = typer.Option(
        None,
        "--book-depth",
        help="kraken_collector: book levels per side (10, 25, 100, 500, 1000).",
    ),
    pools: Path | None = typer.Option(
        None,
        "--pools",
        help="polygon_adapter, flash_arbitrage: the pools TOML file (default $MYCELIUM_POOLS, "
        "else the packaged table).",
    ),
    duration: float | None = typer.Option(None, "--duration", help="Stop after S seconds."),
    stats_file: Path | None = typer.Option(
        None, "--stats-file", help="Keep the service's counters in this JSON file."
    ),
    log_level: str = LogLevelOption,
    log_format: str = LogFormatOption,
    http: str | None = HttpOption,
    allow_remote: bool = AllowRemoteOption,
) -> None:
    """Run one trading service in the foreground; prints its counters as JSON at the end."""
    from mycelium.errors import MyceliumError
    from mycelium.services import SERVICES
    from mycelium.services.adapter import FeedAdapter
    from mycelium.services.base import serve

    cls = SERVICES.get(name)
    setup_logging(log_level, log_format)
    if cls is None:
        raise fail(f"unknown service {name!r}; one of: {', '.join(SERVICES)}", 2)
    options: dict[str, Any] = {"duration": duration, "stats_file": stats_file}
    if issubclass(cls, FeedAdapter):
        options |= {"input": input, "live": live, "rate": rate, "seed": seed}
    elif input is not None or live or rate is not None:
        raise fail("--input, --live and --rate are for the adapters only", 2)
    if http is not None and name != "dashboard":
        raise fail("--http is for the dashboard only", 2)
    options |= _market_options(name, book_depth, pools)
    listen = _listen(http, allow_remote)
    try:
        svc = cls(socket, **options)
        with contextlib.ExitStack() as stack:
            if listen is not None:
                from mycelium.services.web import WebServer

                page = stack.enter_context(WebServer(svc, socket, *listen))  # type: ignore[arg-type]
                typer.echo(f"dashboard page: {page.url}", err=True)
            serve(svc)
    except (MyceliumError, ValueError, OSError) as exc:
        raise fail(f"{name}: {exc}") from exc
    typer.echo(json.dumps(svc.snapshot()))


@app.command()
def top(
    socket: str | None = SocketOption,
    config: Path | None = ConfigFileOption,
    refresh: float = typer.Option(1.0, "--refresh", help="Seconds between redraws."),
    once: bool = typer.Option(False, "--once", help="Print one frame and exit."),
    log_level: str = typer.Option("WARNING", "--log-level", help="DEBUG, INFO, WARNING, ERROR."),
    log_format: str = LogFormatOption,
) -> None:
    """Live view: topics, rates, lag per consumer, latest trades, signals and positions.

    Log lines go to the view's own log pane (never over the display)."""
    from mycelium.errors import ConfigError
    from mycelium.services.dashboard import broker_stats
    from mycelium.services.top import run_top

    setup_logging(log_level, log_format)
    try:
        socket = socket_of(socket, config)
    except ConfigError as exc:
        raise fail(f"bad config: {exc}", 2) from exc
    if broker_stats(socket) is None:
        raise fail("no Mycelium broker answers (try --socket or `mycelium demo`)")
    try:
        run_top(socket, refresh, once=once)
    except KeyboardInterrupt:
        pass


@app.command()
def demo(
    duration: float | None = typer.Option(
        None, "--duration", "-d", help="Stop after S seconds (default: at Ctrl-C)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="No live view; print per-service counts as JSON at the end."
    ),
    http: str | None = HttpOption,
    allow_remote: bool = AllowRemoteOption,
    log_level: str = typer.Option("WARNING", "--log-level", help="DEBUG, INFO, WARNING, ERROR."),
    log_format: str = LogFormatOption,
) -> None:
    """Run a private broker, every service on generated feeds, and the dashboard."""
    from mycelium.services.demo import run_demo

    listen = _listen(http, allow_remote)
    setup_logging(log_level, log_format)
    try:
        result = run_demo(duration, quiet=as_json, http=listen)
    except KeyboardInterrupt as exc:
        raise typer.Exit(130) from exc
    except (RuntimeError, OSError) as exc:
        raise fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo()
    for name, counts in result["services"].items():
        typer.echo(
            f"{name:17} received {counts.get('received', 0):>7}  "
            f"published {counts.get('published', 0):>7}  "
            f"malformed {counts.get('skipped_malformed', 0)}  errors {counts.get('errors', 0)}"
        )
