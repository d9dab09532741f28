"""The broker's commands: run it, ask it (status, reload, shutdown), clean up after it."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mycelium.cli.app import (
    ConfigFileOption,
    JsonOption,
    LogFormatOption,
    LogLevelOption,
    SocketOption,
    app,
    fail,
    setup_logging,
    socket_of,
)


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

    setup_logging(log_level, log_format)
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        raise fail(f"bad config: {exc}", 2) from exc
    if metrics is not None:
        try:
            parse_listen(metrics)
        except ValueError as exc:
            raise fail(f"--metrics: {exc}", 2) from exc
        cfg = msgspec.structs.replace(cfg, metrics=MetricsConfig(listen=metrics))
    path = resolve_socket_path(socket or cfg.server.socket_path)
    try:
        run_broker(cfg, path, str(config) if config else None)
    except (BrokerUnavailable, SegmentError) as exc:
        raise fail(str(exc), 1) from exc


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

    def refused(exc: MyceliumError, code: int) -> typer.Exit:
        if not as_json:
            return fail(str(exc), code)
        typer.echo(json.dumps({"error": {"type": type(exc).__name__, "message": str(exc)}}))
        return typer.Exit(code)

    try:
        target = socket_of(socket, config)
    except ConfigError as exc:
        raise refused(exc, 2) from exc
    try:
        doc = admin_request(StatsRequest(), target).stats  # type: ignore[union-attr]
    except MyceliumError as exc:
        raise refused(exc, 1) from exc
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
        raise fail(str(exc)) from exc
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
        raise fail(str(exc)) from exc
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
        raise fail(str(exc)) from exc
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
