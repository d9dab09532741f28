"""A name for every client: the one its Hello gave, else its program name and pid.

The coordinator reads the peer's command line (same uid, so ``/proc`` lets it) instead of
trusting clients to name themselves, so old clients and unnamed handles still show up in
status, logs and metrics as something an operator recognises (``portfolio[4242]``).
"""

from __future__ import annotations

import os

import psutil

__all__ = ["MAX_NAME_CHARS", "client_name", "program_name"]

#: Longer names are cut: a name is a label in status tables and metrics, not a payload.
MAX_NAME_CHARS = 64


def program_name(cmdline: list[str]) -> str:
    """What an operator calls the program of ``cmdline``: the script or module run by a
    Python interpreter (``python -m mycelium service portfolio`` -> ``mycelium``), else the
    executable's name."""
    if not cmdline:
        return "unknown"
    args = cmdline[1:] if os.path.basename(cmdline[0]).startswith("python") else cmdline
    for i, arg in enumerate(args):
        if arg == "-m" and i + 1 < len(args):
            return args[i + 1]
        if arg == "-c":
            return "python"
        if not arg.startswith("-"):
            return os.path.basename(arg) or "unknown"
    return os.path.basename(cmdline[0]) or "unknown"


def client_name(given: str, pid: int) -> str:
    """``given`` if the client chose one, else ``<program>[<pid>]``."""
    if given:
        return given[:MAX_NAME_CHARS]
    try:
        cmdline = psutil.Process(pid).cmdline()
    except (psutil.Error, OSError):
        cmdline = []
    return f"{program_name(cmdline)[: MAX_NAME_CHARS - 12]}[{pid}]"
