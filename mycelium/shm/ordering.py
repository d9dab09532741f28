"""Memory ordering for the data plane: the one place that argues why plain stores suffice.

How this works
--------------
Every cursor in shared memory is an aligned 8-byte word with exactly one writing process.
A writer *publishes* by writing the payload bytes first and storing the cursor last; a
reader *observes* by loading the cursor first and reading the bytes below it afterwards.

CPython performs ``memoryview.cast("Q")[i] = v`` as one aligned 8-byte ``mov`` (a
fixed-size ``memcpy`` the compiler emits as a single store), and ``mmap`` slice
assignment (like numpy's copies) as a ``memcpy`` of the payload. glibc's ``memcpy`` ends
its non-temporal path with ``sfence`` and fast-string stores are ordered with later
stores, so a copy behaves as plain stores. On x86-64 (TSO, Intel SDM vol. 3 §8.2.2):

* stores are not reordered with other stores (Store/Store): the payload ``memcpy`` is
  visible to every core before the cursor store that follows it in program order;
* loads are not reordered with other loads (Load/Load): a reader that loaded cursor ``c``
  then reads bytes below ``c`` sees the bytes the writer wrote before storing ``c``;
* aligned 8-byte loads and stores are single-copy atomic: a cursor is never torn.

The same two rules carry the lane's *reservation* (the writer stores it before writing
any byte below it; a reader loads it after copying a frame, so a frame the writer touched
during the copy is caught) and every double-buffered record (registry topology, lane
tail): write the idle buffer, then store the version that selects it; a reader loads the
version, the buffer, and the version again.

The one reordering TSO allows is a later load passing an earlier store (Store/Load).
Two handshakes are exposed to it, and both close it with ``full_fence()``, a locked
read-modify-write (CPython's ``Lock.acquire``/``release`` are a compare-and-swap and an
atomic add in glibc's ``sem_trywait``/``sem_post``; any ``lock``-prefixed instruction is
a full barrier on x86-64):

* a reader joining a lane stores its slot, fences, then loads the write cursor; the
  writer stores its cursor, fences, then scans the slots (``LaneWriter`` slow path).
  So either the writer sees the slot or the reader sees the writer's latest cursor:
  a new reader is never overrun unseen.
* the sleep/wake handshake (reader: store "sleeping", load cursor; writer: store cursor,
  load "sleeping"). The reader fences; the writer does not, since a fence per publish
  would cost more than the whole rest of it. A wake-up can therefore be missed when the
  writer's cursor store is still in its store buffer at the instant the reader checks;
  a sleeping reader never blocks longer than ``BLOCK_SAFETY_S``, so a missed doorbell
  costs bounded latency, never a lost message.

AArch64 and other weakly ordered platforms reorder Store/Store and Load/Load, so the
argument above fails there and we refuse to run (``check_platform``) rather than risk
readers seeing a cursor before its payload. A 32-bit interpreter is refused too, even on
an x86-64 kernel: there an 8-byte cursor store is two 4-byte stores and a reader can see
it torn. The check asks the interpreter (``sys.maxsize``, ``struct.calcsize("P")``), not
only the kernel (``platform.machine()`` says x86_64 for a 32-bit Python on a 64-bit box).
"""

from __future__ import annotations

import platform
import struct
import sys
import threading

from mycelium.errors import UnsupportedPlatform

__all__ = ["BLOCK_SAFETY_S", "TSO_MACHINES", "UnsupportedPlatform", "check_platform", "full_fence"]

#: 64-bit x86 machine names: total store order and single-copy atomic 8-byte stores.
TSO_MACHINES = frozenset({"x86_64", "amd64", "AMD64"})
#: A 64-bit interpreter: its aligned u64 stores are one ``mov``, never two halves.
POINTER_BITS = 64

#: Longest a blocked reader sleeps before re-checking its lanes: bounds a missed wake-up.
BLOCK_SAFETY_S = 0.02

_FENCE_LOCK = threading.Lock()


def check_platform() -> None:
    """Raise UnsupportedPlatform unless this is a 64-bit interpreter on x86-64 (TSO).

    Read at call time, so a test can monkeypatch ``sys.maxsize``, ``struct.calcsize`` or
    ``platform.machine``.
    """
    machine = platform.machine()
    bits = min(struct.calcsize("P") * 8, sys.maxsize.bit_length() + 1)
    if machine not in TSO_MACHINES:
        reason = f"the CPU is {machine!r}, which reorders plain stores"
    elif bits != POINTER_BITS:
        reason = f"this Python is {bits}-bit, so an 8-byte cursor store can tear"
    else:
        return
    raise UnsupportedPlatform(
        f"Mycelium's shared-memory rings need a 64-bit Python on x86-64; {reason}. "
        f"Refusing to run (see mycelium/shm/ordering.py)."
    )


def full_fence() -> None:
    """A Store/Load barrier: stores before it are visible before loads after it (~60 ns).

    Only on slow paths (joining a lane, rescanning readers, going to sleep).
    """
    _FENCE_LOCK.acquire()
    _FENCE_LOCK.release()


check_platform()
