"""The ``mycelium`` command line: broker, status/stats, decode, cleanup and friends.

Each command imports the layer it drives lazily, so ``mycelium decode`` never loads the
coordinator and ``mycelium --help`` starts fast.
"""

from __future__ import annotations

import json
import sys

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


def main() -> None:
    """Console-script entry point."""
    app()
