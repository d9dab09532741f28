"""Who is at the other end of a Unix control socket, as the kernel says (SO_PEERCRED).

Both ends use it: the coordinator to check a client against the allowed uids and gids,
a client to learn its broker's uid, the only owner besides itself and root whose
segments it will map.
"""

from __future__ import annotations

import socket
import struct

__all__ = ["peer_credentials"]

_PEERCRED = struct.Struct("3i")


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket. Raises OSError."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    return _PEERCRED.unpack(raw)
