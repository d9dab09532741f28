"""The ``mycelium`` command line: broker, status, decode, bridge, services, demo.

``app`` (``cli/app.py``) holds the shared options; each module here adds one group of
commands to it when imported.
"""

from __future__ import annotations

import sys

import typer

from mycelium.cli import bridge, broker, decode, services  # noqa: F401  (they add the commands)
from mycelium.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point. A refused platform is one line, not an import traceback."""
    from mycelium.errors import UnsupportedPlatform

    try:
        app()
    except UnsupportedPlatform as exc:
        typer.echo(f"mycelium: {exc}", err=True)
        sys.exit(2)
