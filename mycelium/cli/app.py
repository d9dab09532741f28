"""The ``mycelium`` Typer app and what its commands share: options, errors, logging.

Each command imports the layer it drives lazily, so ``mycelium decode`` never loads the
coordinator and ``mycelium --help`` starts fast.
"""

from __future__ import annotations

from pathlib import Path

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


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def setup_logging(level: str, fmt: str) -> None:
    """Validate and apply --log-level / --log-format: one error line and exit 2 if bad."""
    from mycelium.errors import ConfigError
    from mycelium.logs import setup_logging

    try:
        setup_logging(level, fmt)
    except ConfigError as exc:
        raise fail(str(exc), 2) from exc


def socket_of(socket: str | None, config: Path | None) -> str | None:
    """--socket, else the socket_path of --config's file, else None (the default).
    Raises ConfigError for an unreadable or invalid config."""
    if socket or config is None:
        return socket
    from mycelium.config import load_config

    return load_config(config).server.socket_path
