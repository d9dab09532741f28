"""One broker per socket: an exclusive ``flock`` on ``<socket>.lock``.

It is held for the life of the process, so a second start is refused clearly and a
stale socket file left by a crashed broker is taken over. The lock file is removed on
exit (a starter that locked the removed file notices the path now names another and
tries again).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

from mycelium.coordinator.state_file import check_runtime_dir
from mycelium.errors import BrokerUnavailable

__all__ = ["release_socket_lock", "take_socket"]

log = logging.getLogger("mycelium.coordinator")


def _lock_path(socket_path: str) -> str:
    return f"{socket_path}.lock"


def take_socket(socket_path: str) -> int:
    """Hold the per-socket lock and clear a stale socket file; the lock's fd.

    Raises BrokerUnavailable if another broker holds it.
    """
    path = Path(socket_path)
    check_runtime_dir(path.parent)
    while True:
        fd = os.open(_lock_path(socket_path), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BrokerUnavailable(f"another broker is already running on {socket_path}") from None
        if _same_file(fd, _lock_path(socket_path)):
            break
        os.close(fd)  # an exiting broker removed the file we locked: lock the new one
    if path.exists() or path.is_socket():
        log.info("taking over stale socket %s", socket_path)
        path.unlink()
    return fd


def release_socket_lock(socket_path: str, fd: int) -> None:
    """Remove the lock file, then let go of the lock."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_lock_path(socket_path))  # still locked: nobody can hold it meanwhile
    os.close(fd)


def _same_file(fd: int, path: str) -> bool:
    """Whether ``fd`` is still the file at ``path`` (not one removed since we opened it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fs = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fs.st_dev, fs.st_ino)
