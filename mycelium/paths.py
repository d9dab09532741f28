"""Where the broker's control socket lives when nobody says.

``$MYCELIUM_SOCKET``, else ``$XDG_RUNTIME_DIR/mycelium/broker.sock``, else
``/tmp/mycelium-$UID/broker.sock`` (API.md). The CLI, the coordinator and every client
resolve it here so they always agree.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SOCKET_ENV", "default_socket_path", "resolve_socket_path"]

SOCKET_ENV = "MYCELIUM_SOCKET"


def default_socket_path() -> str:
    """The default control socket path for this user and environment."""
    explicit = os.environ.get(SOCKET_ENV)
    if explicit:
        return explicit
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return str(Path(runtime) / "mycelium" / "broker.sock")
    return f"/tmp/mycelium-{os.getuid()}/broker.sock"


def resolve_socket_path(socket_path: str | os.PathLike[str] | None) -> str:
    """An explicit path wins; None means the default."""
    return os.fspath(socket_path) if socket_path else default_socket_path()
