"""Memory ordering for the data plane: the one place that argues why plain stores suffice.

How this works
--------------
Every cursor in shared memory is an aligned 8-byte word with exactly one writing process.
A writer *publishes* by writing the payload bytes first and storing the cursor last; a
reader *observes* by loading the cursor first and reading the bytes below it afterwards.

CPython performs ``memoryview.cast("Q")[i] = v`` as one aligned 8-byte ``mov`` (a
fixed-size ``memcpy`` the compiler emits as a single store), and ``mmap`` slice
assignment as a ``memcpy`` of the payload. On x86-64 (TSO, Intel SDM vol. 3 §8.2.2):

* stores are not reordered with other stores (Store/Store): the payload ``memcpy`` is
  visible to every core before the cursor store that follows it in program order;
* loads are not reordered with other loads (Load/Load): a reader that loaded cursor ``c``
  then reads bytes below ``c`` sees the bytes the writer wrote before storing ``c``;
* aligned 8-byte loads and stores are single-copy atomic: a cursor is never torn.

The one reordering TSO allows is a later load passing an earlier store (Store/Load).
It matters only for the sleep/wake handshake (reader: store "sleeping", load cursor;
writer: store cursor, load "sleeping"), where both sides may miss each other. We do not
fence there (pure Python cannot); instead a sleeping reader never blocks longer than
``BLOCK_SAFETY_S``, so a missed doorbell costs bounded latency, never a lost message.

AArch64 and other weakly ordered platforms reorder Store/Store and Load/Load, so the
argument above fails there and we refuse to run (``check_platform``) rather than risk
readers seeing a cursor before its payload.
"""

from __future__ import annotations

import platform

from mycelium.errors import MyceliumError

__all__ = ["BLOCK_SAFETY_S", "TSO_MACHINES", "UnsupportedPlatform", "check_platform"]

#: Machines whose memory model is total store order (or stronger) for plain stores.
TSO_MACHINES = frozenset({"x86_64", "amd64", "AMD64", "i686", "i386", "x86"})

#: Longest a blocked reader sleeps before re-checking its lanes: bounds a missed wake-up.
BLOCK_SAFETY_S = 0.02


class UnsupportedPlatform(MyceliumError):
    """The CPU's memory model does not order plain stores; the lock-free rings are unsafe."""


def check_platform(machine: str | None = None) -> None:
    """Raise UnsupportedPlatform unless this CPU orders stores as x86-64 TSO does."""
    machine = machine or platform.machine()
    if machine not in TSO_MACHINES:
        raise UnsupportedPlatform(
            f"Mycelium's shared-memory rings rely on x86-64 total store order; "
            f"{machine!r} reorders plain stores, so readers could see a cursor before "
            f"its payload. Refusing to run (see mycelium/shm/ordering.py)."
        )


check_platform()
