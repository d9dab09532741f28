"""The ``mycelium`` command line: broker, status/stats, decode, cleanup and friends.

Each command imports the layer it drives lazily, so ``mycelium decode`` never loads the
coordinator and ``mycelium --help`` starts fast.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(
    name="mycelium",
    help="Mycelium: a shared-memory message broker for Protocol V2 on one machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Mycelium: a shared-memory message broker for Protocol V2 on one machine."""


@app.command()
def decode(
    message: str = typer.Argument(
        "-", help="The message as hex, or '-' to read hex (or raw bytes) from stdin."
    ),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the checksum check."),
) -> None:
    """Print a Protocol V2 message as JSON: header, TLVs and typed fields."""
    from mycelium.protocol import ProtocolError
    from mycelium.protocol.describe import describe_message

    if message == "-":
        data = sys.stdin.buffer.read()
        try:
            raw = bytes.fromhex(data.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raw = data
    else:
        try:
            raw = bytes.fromhex(message.strip())
        except ValueError as exc:
            typer.echo(f"error: not a hex string: {exc}", err=True)
            raise typer.Exit(2) from exc
    try:
        doc = describe_message(raw, verify_checksum=not no_verify)
    except ProtocolError as exc:
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc
    for entry in doc["tlvs"]:
        if "fields" not in entry:
            _describe_service_tlv(entry)
    typer.echo(json.dumps(doc, indent=2))


def _describe_service_tlv(entry: dict[str, Any]) -> None:
    """Fields of the TLVs the trading services emit that the codec's fixed-size table does
    not decode: the variable-size OrderBookTLV (instrument, sequence, every level's side,
    price and size as exact decimals) and the ORDER_REQUEST legs. A payload that does not
    decode keeps its hex, with the reason in ``decode_error``."""
    from mycelium.protocol import OrderBookTLV, OrderRequestTLV, ProtocolError, TLVType

    payload = bytes.fromhex(entry["payload_hex"])
    try:
        if entry["type"] == TLVType.ORDER_BOOK:
            book = OrderBookTLV.from_bytes(payload)
            entry["struct"], entry["fields"] = "OrderBookTLV", _book_fields(book)
        elif entry["type"] == TLVType.ORDER_REQUEST and len(payload) == OrderRequestTLV.SIZE:
            entry["struct"] = "OrderRequestTLV"
            entry["fields"] = OrderRequestTLV.from_bytes(payload).to_dict()
    except ProtocolError as exc:
        entry["decode_error"] = str(exc)


def _book_fields(book: Any) -> dict[str, Any]:
    """An OrderBookTLV for people: the pair by name, levels best first, bids then asks."""
    from mycelium.protocol import VenueId

    pair, quote = book.instrument, book.instrument.quote
    try:
        venue: str | int = VenueId(book.venue_id).name
    except ValueError:
        venue = book.venue_id
    levels = [
        {"side": side, "price": str(book.decimal(level.price)),
         "size": str(book.decimal(level.size)), "order_count": level.order_count}
        for side, levels in (("bid", book.bids), ("ask", book.asks)) for level in levels
    ]  # fmt: skip
    return {
        "instrument": {
            "symbol": pair.symbol,
            "quote": None if quote is None else quote.name,
            "venue": venue,
        },
        **book.to_dict(),
        "levels": levels,
    }


SocketOption = typer.Option(
    None,
    "--socket",
    "-s",
    help="Control socket path (default: the config's socket_path, $MYCELIUM_SOCKET, "
    "$XDG_RUNTIME_DIR/mycelium/broker.sock, /tmp/mycelium-$UID/broker.sock).",
)
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON.")
ConfigFileOption = typer.Option(
    None, "--config", "-c", help="Find the broker of this config (its [server] socket_path)."
)
LogLevelOption = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR.")
LogFormatOption = typer.Option(
    "text", "--log-format", help="text, or json: one JSON object per line, stable keys."
)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _setup_logging(level: str, fmt: str) -> None:
    """Validate and apply --log-level / --log-format: one error line and exit 2 if bad."""
    from mycelium.errors import ConfigError
    from mycelium.logs import setup_logging

    try:
        setup_logging(level, fmt)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from exc


def _socket_of(socket: str | None, config: Path | None) -> str | None:
    """--socket, else the socket_path of --config's file, else None (the default).
    Raises ConfigError for an unreadable or invalid config."""
    if socket or config is None:
        return socket
    from mycelium.config import load_config

    return load_config(config).server.socket_path


@app.command()
def broker(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Broker config (TOML); default: the embedded one."
    ),
    socket: str | None = SocketOption,
    metrics: str | None = typer.Option(
        None, "--metrics", help="Serve Prometheus /metrics on HOST:PORT (overrides [metrics])."
    ),
    log_level: str = LogLevelOption,
    log_format: str = LogFormatOption,
) -> None:
    """Run the coordinator in the foreground (SIGTERM/SIGINT stop it, SIGHUP reloads)."""
    import msgspec

    from mycelium.config import MetricsConfig, load_config, parse_listen
    from mycelium.coordinator.server import run_broker
    from mycelium.errors import BrokerUnavailable, ConfigError, SegmentError
    from mycelium.paths import resolve_socket_path

    _setup_logging(log_level, log_format)
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        raise _fail(f"bad config: {exc}", 2) from exc
    if metrics is not None:
        try:
            parse_listen(metrics)
        except ValueError as exc:
            raise _fail(f"--metrics: {exc}", 2) from exc
        cfg = msgspec.structs.replace(cfg, metrics=MetricsConfig(listen=metrics))
    path = resolve_socket_path(socket or cfg.server.socket_path)
    try:
        run_broker(cfg, path, str(config) if config else None)
    except (BrokerUnavailable, SegmentError) as exc:
        raise _fail(str(exc), 1) from exc


@app.command()
def status(
    socket: str | None = SocketOption,
    as_json: bool = JsonOption,
    config: Path | None = ConfigFileOption,
) -> None:
    """Topics, lanes, consumers, rates and lag of the running broker.

    With --json the output is always one JSON document, an error included
    (``{"error": {"type": ..., "message": ...}}``, exit 1)."""
    from mycelium.client.admin import admin_request
    from mycelium.control.wire import StatsRequest
    from mycelium.errors import ConfigError, MyceliumError

    def fail(exc: MyceliumError, code: int) -> typer.Exit:
        if not as_json:
            return _fail(str(exc), code)
        typer.echo(json.dumps({"error": {"type": type(exc).__name__, "message": str(exc)}}))
        return typer.Exit(code)

    try:
        target = _socket_of(socket, config)
    except ConfigError as exc:
        raise fail(exc, 2) from exc
    try:
        doc = admin_request(StatsRequest(), target).stats  # type: ignore[union-attr]
    except MyceliumError as exc:
        raise fail(exc, 1) from exc
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    from mycelium.coordinator.report import render_stats

    typer.echo(render_stats(doc))


@app.command()
def stats(
    socket: str | None = SocketOption,
    as_json: bool = JsonOption,
    config: Path | None = ConfigFileOption,
) -> None:
    """The same as ``status``."""
    status(socket, as_json, config)


@app.command()
def reload(socket: str | None = SocketOption) -> None:
    """Ask the broker to re-read its config (as SIGHUP does)."""
    from mycelium.client.admin import admin_request
    from mycelium.control.wire import Reload
    from mycelium.errors import MyceliumError

    try:
        reply = admin_request(Reload(), socket)
    except MyceliumError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(getattr(reply, "detail", "") or "reloaded")


consumer_app = typer.Typer(help="Durable consumers.", no_args_is_help=True)
app.add_typer(consumer_app, name="consumer")


@consumer_app.command("delete")
def consumer_delete(
    name: str = typer.Argument(..., help="The durable consumer's name."),
    socket: str | None = SocketOption,
) -> None:
    """Drop an absent durable consumer: producers stop holding messages for it."""
    from mycelium.client.admin import admin_request
    from mycelium.control.wire import DeleteDurable
    from mycelium.errors import MyceliumError

    try:
        reply = admin_request(DeleteDurable(name=name), socket)
    except MyceliumError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(getattr(reply, "detail", "") or f"deleted {name}")


@app.command()
def shutdown(socket: str | None = SocketOption) -> None:
    """Ask the broker to stop gracefully."""
    from mycelium.client.admin import admin_request
    from mycelium.control.wire import Shutdown
    from mycelium.errors import MyceliumError

    try:
        admin_request(Shutdown(), socket)
    except MyceliumError as exc:
        raise _fail(str(exc)) from exc
    typer.echo("broker is shutting down")


@app.command()
def cleanup(
    socket: str | None = typer.Option(
        None, "--socket", "-s", help="Only the broker on this socket (default: every broker)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed."),
) -> None:
    """Remove shared-memory segments left behind by dead brokers and clients."""
    from mycelium.coordinator.cleanup import find_orphans, foreign_objects, remove_orphans
    from mycelium.shm.segment import broker_id_for

    broker_id = broker_id_for(socket) if socket else None
    names = find_orphans(broker_id) if dry_run else remove_orphans(broker_id)
    verb = "would remove" if dry_run else "removed"
    for name in names:
        typer.echo(f"{verb} {name}")
    typer.echo(f"{verb} {len(names)} orphaned object(s)")
    if foreign := foreign_objects(broker_id):
        typer.echo(f"skipped {len(foreign)} object(s) of other users: run cleanup as their owner")


@app.command()
def bridge(
    socket: str | None = SocketOption,
    nats: list[str] = typer.Option(
        [], "--nats", help="NATS server URL; repeat (or comma-separate) for a cluster."
    ),
    export: list[str] = typer.Option([], "--export", help="Topic to export; repeatable."),
    import_: list[str] = typer.Option([], "--import", help="Topic to import; repeatable."),
    name: str | None = typer.Option(None, "--name", help="This host's name (default: hostname)."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Config (TOML) whose bridge section to use."
    ),
    state_dir: str | None = typer.Option(None, "--state-dir", help="Import cursors, status."),
    metrics: str | None = typer.Option(None, "--metrics", help="Serve /metrics on HOST:PORT."),
    creds: str | None = typer.Option(None, "--creds", help="NATS credentials file."),
    tls_ca: str | None = typer.Option(None, "--tls-ca", help="CA bundle for NATS TLS."),
    tls_cert: str | None = typer.Option(None, "--tls-cert", help="Client certificate (TLS)."),
    tls_key: str | None = typer.Option(None, "--tls-key", help="Client key (TLS)."),
    log_level: str = LogLevelOption,
    log_format: str = LogFormatOption,
) -> None:
    """Bridge topics to and from other hosts through NATS JetStream (docs/distribution.md)."""
    import msgspec

    from mycelium.bridge import run_bridge
    from mycelium.config import BridgeConfig, load_config
    from mycelium.errors import ConfigError, MyceliumError

    _setup_logging(log_level, log_format)
    try:
        cfg = load_config(config) if config else None
        base = cfg.bridge if cfg else BridgeConfig()
        given = {
            "nats": tuple(u for arg in nats for u in arg.split(",") if u),
            "export": tuple(export),
            "import": tuple(import_),
            "name": name,
            "state_dir": state_dir,
            "metrics": metrics,
            "creds": creds,
            "tls_ca": tls_ca,
            "tls_cert": tls_cert,
            "tls_key": tls_key,
        }
        merged = msgspec.to_builtins(base) | {k: v for k, v in given.items() if v}
        bridge_cfg = msgspec.convert(merged, BridgeConfig)
        socket = socket or (cfg.server.socket_path if cfg else None)
        run_bridge(bridge_cfg, socket)
    except msgspec.ValidationError as exc:
        raise _fail(f"bad bridge option: {exc}", 2) from exc
    except ConfigError as exc:
        raise _fail(f"bad config: {exc}", 2) from exc
    except (MyceliumError, OSError) as exc:
        raise _fail(f"bridge: {exc}") from exc


# -- trading services: service, top, demo (mycelium/services, docs/services.md) ---------------
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
        raise _fail(str(exc), 2) from exc


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
        raise _fail(str(exc), 2) from exc
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
    _setup_logging(log_level, log_format)
    if cls is None:
        raise _fail(f"unknown service {name!r}; one of: {', '.join(SERVICES)}", 2)
    options: dict[str, Any] = {"duration": duration, "stats_file": stats_file}
    if issubclass(cls, FeedAdapter):
        options |= {"input": input, "live": live, "rate": rate, "seed": seed}
    elif input is not None or live or rate is not None:
        raise _fail("--input, --live and --rate are for the adapters only", 2)
    if http is not None and name != "dashboard":
        raise _fail("--http is for the dashboard only", 2)
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
        raise _fail(f"{name}: {exc}") from exc
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

    _setup_logging(log_level, log_format)
    try:
        socket = _socket_of(socket, config)
    except ConfigError as exc:
        raise _fail(f"bad config: {exc}", 2) from exc
    if broker_stats(socket) is None:
        raise _fail("no Mycelium broker answers (try --socket or `mycelium demo`)")
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
    _setup_logging(log_level, log_format)
    try:
        result = run_demo(duration, quiet=as_json, http=listen)
    except KeyboardInterrupt as exc:
        raise typer.Exit(130) from exc
    except (RuntimeError, OSError) as exc:
        raise _fail(str(exc)) from exc
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


def main() -> None:
    """Console-script entry point. A refused platform is one line, not an import traceback."""
    from mycelium.errors import UnsupportedPlatform

    try:
        app()
    except UnsupportedPlatform as exc:
        typer.echo(f"mycelium: {exc}", err=True)
        sys.exit(2)
