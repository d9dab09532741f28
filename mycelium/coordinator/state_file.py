"""Where a coordinator keeps the one name it must not recompute: its registry's.

How this works
--------------
Segment names carry a random token, so a restarted coordinator cannot derive its
predecessor's registry name; it reads it from ``<socket>.state``, a file beside the
socket that only the broker's uid can read. The directory must be the broker's own (or
root's) and not writable by anyone else unless sticky, or another user could swap the
file; the file must be the broker's, mode 0600, and no symlink. Anything else is refused
with BrokerUnavailable (the directory) or ignored with a warning (the file: a fresh
registry is made and nothing of the other user's is touched).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from pathlib import Path

from mycelium.errors import BrokerUnavailable

__all__ = [
    "check_runtime_dir",
    "forget_registry_name",
    "read_registry_name",
    "state_path",
    "write_registry_name",
]

log = logging.getLogger("mycelium.coordinator")

#: Mode of the runtime directory the coordinator creates for its socket.
RUNTIME_DIR_MODE = 0o700
STATE_FILE_MODE = 0o600
_STATE_FILE_MAX_BYTES = 4096


def state_path(socket_path: str) -> Path:
    return Path(f"{socket_path}.state")


def check_runtime_dir(directory: Path) -> None:
    """Create ``directory`` (0700) or check an existing one. Raises BrokerUnavailable if
    another user owns it or may write to it (unless sticky, as /tmp is)."""
    directory.mkdir(parents=True, exist_ok=True, mode=RUNTIME_DIR_MODE)
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise BrokerUnavailable(f"{directory} is not a directory")
    if st.st_uid not in (os.geteuid(), 0):
        raise BrokerUnavailable(
            f"{directory} belongs to uid {st.st_uid}; the broker keeps its socket and state "
            f"only in a directory of its own"
        )
    writable_by_others = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable_by_others and not st.st_mode & stat.S_ISVTX:
        raise BrokerUnavailable(
            f"{directory} (mode {stat.S_IMODE(st.st_mode):04o}) is writable by other users; "
            f"use a directory of mode 0700 or 0750"
        )


def read_registry_name(socket_path: str) -> str | None:
    """The registry name a predecessor left, or None (no file, or one not to be trusted)."""
    path = state_path(socket_path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("ignoring state file %s: %s", path, exc)
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & ~STATE_FILE_MODE:
            log.warning(
                "ignoring state file %s: owned by uid %d with mode %04o",
                path,
                st.st_uid,
                stat.S_IMODE(st.st_mode),
            )
            return None
        raw = os.read(fd, _STATE_FILE_MAX_BYTES)
    finally:
        os.close(fd)
    try:
        name = json.loads(raw)["registry"]
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring unreadable state file %s", path)
        return None
    return name if isinstance(name, str) else None


def write_registry_name(socket_path: str, name: str) -> None:
    """Record the registry name atomically (a fresh 0600 file renamed into place)."""
    path = state_path(socket_path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, STATE_FILE_MODE)
    try:
        os.write(fd, json.dumps({"registry": name}).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def forget_registry_name(socket_path: str) -> None:
    """The registry was removed (no client left): nothing to adopt next time."""
    with contextlib.suppress(FileNotFoundError):
        state_path(socket_path).unlink()
