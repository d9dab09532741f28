"""The ``mycelium`` command line: broker, status/stats, decode, cleanup and friends.

Each command imports the layer it drives lazily, so ``mycelium decode`` never loads the
coordinator and ``mycelium --help`` starts fast.
"""

from __future__ import annotations

import json
import logging
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
    typer.echo(json.dumps(doc, indent=2))


SocketOption = typer.Option(
    None, "--socket", "-s", help="Control socket path (default: $MYCELIUM_SOCKET, ...)."
)
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON.")


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@app.command()
def broker(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Broker config (TOML); default: the embedded one."
    ),
    socket: str | None = SocketOption,
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING, ERROR."),
) -> None:
    """Run the coordinator in the foreground (SIGTERM/SIGINT stop it, SIGHUP reloads)."""
    from mycelium.config import load_config
    from mycelium.coordinator.server import run_broker
    from mycelium.errors import BrokerUnavailable, ConfigError, SegmentError
    from mycelium.paths import resolve_socket_path

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        raise _fail(f"bad config: {exc}", 2) from exc
    path = resolve_socket_path(socket or cfg.server.socket_path)
    try:
        run_broker(cfg, path, str(config) if config else None)
    except (BrokerUnavailable, SegmentError) as exc:
        raise _fail(str(exc), 1) from exc


def _stats(socket: str | None) -> dict[str, Any]:
    from mycelium.client.admin import admin_request
    from mycelium.control.wire import StatsRequest
    from mycelium.errors import MyceliumError

    try:
        reply = admin_request(StatsRequest(), socket)
    except MyceliumError as exc:
        raise _fail(str(exc)) from exc
    return reply.stats  # type: ignore[union-attr]


@app.command()
def status(socket: str | None = SocketOption, as_json: bool = JsonOption) -> None:
    """Topics, lanes, consumers, rates and lag of the running broker."""
    doc = _stats(socket)
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    from mycelium.coordinator.report import render_stats

    typer.echo(render_stats(doc))


@app.command()
def stats(socket: str | None = SocketOption, as_json: bool = JsonOption) -> None:
    """The same as ``status``."""
    status(socket, as_json)


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
    from mycelium.coordinator.cleanup import find_orphans, remove_orphans
    from mycelium.shm.segment import broker_id_for

    broker_id = broker_id_for(socket) if socket else None
    names = find_orphans(broker_id) if dry_run else remove_orphans(broker_id)
    verb = "would remove" if dry_run else "removed"
    for name in names:
        typer.echo(f"{verb} {name}")
    typer.echo(f"{verb} {len(names)} orphaned object(s)")


def main() -> None:
    """Console-script entry point."""
    app()
