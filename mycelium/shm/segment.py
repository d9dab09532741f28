"""POSIX shared-memory segments: create, attach (read-only for readers), check, unlink.

How this works
--------------
A segment is a ``posix_ipc.SharedMemory`` object mapped with ``mmap``, populated up
front so the hot path never faults a page in. The creator sizes it, sets its mode (0600
unless configured), lets the caller fill the body, then writes the 64-byte identity line
(layout version, kind, size, and the magic last); every attach checks that line, so a
stale segment from an older layout or a name reused for another kind is refused with
``SegmentError`` instead of being misread. Readers open the object ``O_RDONLY`` and map
it ``PROT_READ``: a write through their mapping raises ``TypeError`` in Python, and the
kernel kills a C-level store with SIGSEGV.

Names are ``/myc-<broker id>-<kind letter><id>.<random>``: the broker id comes from the
socket path, so two brokers on one machine never collide, and ``list_segments`` can find
every segment of one broker (or all of them, for ``mycelium cleanup``). The random part
(``fresh_token``) is chosen by the coordinator and reaches clients only over the
peer-checked control socket, so another local user can neither predict a name nor plant
a segment under it before the coordinator creates it ``O_EXCL``.

Trust: every attach (and every doorbell open) checks the object's owner and mode with
``fstat``/``stat`` against the ``TRUST`` policy: owned by this process's uid, root, or a
broker uid learned from the control socket's peer credentials, and no mode bit beyond
the broker's configured segment mode. Anything else is refused with ``SegmentError``,
logged and counted (``TRUST.refused``). posix_ipc errors become ``SegmentError`` here and
nowhere else.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

import posix_ipc

from mycelium.errors import SegmentError
from mycelium.shm.layout import IDENTITY, KIND_LANE, KIND_NAMES, LAYOUT_VERSION, MAGIC

__all__ = [
    "NAME_PREFIX",
    "TRUST",
    "Segment",
    "TrustPolicy",
    "broker_id_for",
    "check_doorbell",
    "fresh_token",
    "list_segments",
    "owned_by_us",
    "segment_name",
    "unlink_quietly",
]

NAME_PREFIX = "myc-"
SHM_DIR = Path("/dev/shm")
DEFAULT_SEGMENT_MODE = 0o600
#: Widest mode a segment may have before a broker told us its configured one: group
#: access is a configuration choice, write access for others never is.
DEFAULT_MAX_MODE = 0o660
#: Random bytes in every name: 64 bits nobody else can guess.
TOKEN_BYTES = 8

log = logging.getLogger("mycelium.shm")
#: Shared mappings with their page tables filled at map time (Linux): the first touch of
#: each page on the hot path would otherwise be a page fault (~5 us, 1 message in 50).
MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


def broker_id_for(socket_path: str) -> str:
    """A short stable id for the broker on ``socket_path``: restarts keep it, others differ."""
    real = os.path.realpath(socket_path)
    return hashlib.blake2b(real.encode(), digest_size=4).hexdigest()


def fresh_token() -> str:
    """The unpredictable part of a new segment name."""
    return secrets.token_hex(TOKEN_BYTES)


class TrustPolicy:
    """Whose segments this process attaches: owners and the widest mode allowed."""

    def __init__(self) -> None:
        self.owners: set[int] = {os.geteuid(), 0}
        self.max_mode = DEFAULT_MAX_MODE
        #: Objects refused so far (wrong owner or mode), for stats.
        self.refused = 0

    def trust_broker(self, uid: int, mode: int | None = None) -> None:
        """Also accept objects of ``uid`` (a peer-checked broker), up to its ``mode``."""
        self.owners.add(uid)
        if mode is not None:
            self.max_mode = mode

    def check(self, name: str, st: os.stat_result) -> None:
        """Raise SegmentError (logged, counted) unless ``st`` is trusted."""
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid not in self.owners:
            problem = f"is owned by uid {st.st_uid}, not by the broker"
        elif mode & ~self.max_mode:
            problem = f"has mode {mode:04o}, wider than the configured {self.max_mode:04o}"
        else:
            return
        self.refused += 1
        log.warning("refused %s: it %s", name, problem)
        raise SegmentError(f"segment {name} {problem}; refusing to use it")


#: This process's policy (the coordinator sets its mode; clients add their broker's uid).
TRUST = TrustPolicy()


def check_doorbell(name: str) -> None:
    """Check a doorbell semaphore's owner and mode (posix_ipc cannot fstat one: its file
    in /dev/shm is stat'ed instead). Raises SegmentError."""
    try:
        st = os.stat(SHM_DIR / f"sem.{name.lstrip('/')}", follow_symlinks=False)
    except FileNotFoundError as exc:
        raise SegmentError(f"doorbell {name} does not exist") from exc
    except OSError as exc:
        raise SegmentError(f"cannot check doorbell {name}: {exc}") from exc
    TRUST.check(name, st)


def owned_by_us(name: str) -> bool:
    """Is the object ``name`` (``sem:`` for doorbells) owned by this uid (root: any)?"""
    entry = ("sem." if name.startswith("sem:") else "") + name.removeprefix("sem:").lstrip("/")
    try:
        uid = os.stat(SHM_DIR / entry, follow_symlinks=False).st_uid
    except OSError:
        return False
    return os.geteuid() in (0, uid)


def segment_name(broker_id: str, kind: str, ident: int | str = "") -> str:
    """The POSIX name of a segment (or doorbell) of ``broker_id``: ``/myc-<id>-<kind><ident>``."""
    return f"/{NAME_PREFIX}{broker_id}-{kind}{ident}"


def list_segments(broker_id: str | None = None) -> list[str]:
    """Names (with leading '/') of Mycelium objects in /dev/shm, of one broker or of all.

    Semaphores appear there as ``sem.<name>``; they are listed under their POSIX name too.
    """
    prefix = NAME_PREFIX + (f"{broker_id}-" if broker_id else "")
    names = []
    try:
        entries = sorted(os.listdir(SHM_DIR))
    except OSError:
        return []
    for entry in entries:
        base = entry.removeprefix("sem.")
        if base.startswith(prefix):
            names.append(("sem:" if entry.startswith("sem.") else "") + "/" + base)
    return names


def unlink_quietly(name: str) -> bool:
    """Unlink a segment (or ``sem:/name`` doorbell); True if it existed."""
    try:
        if name.startswith("sem:"):
            posix_ipc.unlink_semaphore(name[4:])
        else:
            posix_ipc.unlink_shared_memory(name)
    except (posix_ipc.ExistentialError, posix_ipc.PermissionsError):
        return False
    return True


class Segment:
    """One mapped shared-memory segment; ``buf``/``q`` are byte and u64 views of it."""

    __slots__ = ("buf", "kind", "mm", "name", "q", "size", "writable")

    def __init__(self, name: str, mm: mmap.mmap, size: int, kind: int, writable: bool) -> None:
        self.name = name
        self.mm = mm
        self.size = size
        self.kind = kind
        self.writable = writable
        self.buf = memoryview(mm)
        self.q = self.buf.cast("Q")

    @classmethod
    def create(
        cls,
        name: str,
        size: int,
        kind: int,
        mode: int = DEFAULT_SEGMENT_MODE,
        *,
        init: Callable[[Segment], None] | None = None,
    ) -> Segment:
        """Create a new segment exclusively, let ``init`` fill it, then write its identity.

        The magic is stored last, so a process attaching meanwhile is refused ("bad
        magic") rather than reading a half-initialised header. Raises SegmentError if the
        name exists or the object cannot be created.
        """
        try:
            shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=mode, size=size)
        except posix_ipc.ExistentialError as exc:
            raise SegmentError(f"segment {name} already exists") from exc
        except (posix_ipc.Error, OSError, ValueError) as exc:
            raise SegmentError(f"cannot create segment {name}: {exc}") from exc
        try:
            os.fchmod(shm.fd, mode)  # shm_open applies the umask; the configured mode wins
            mm = mmap.mmap(shm.fd, size, MAP_FLAGS, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            unlink_quietly(name)
            raise SegmentError(f"cannot map segment {name}: {exc}") from exc
        finally:
            shm.close_fd()
        seg = cls(name, mm, size, kind, writable=True)
        try:
            if init is not None:
                init(seg)
        except BaseException:
            seg.close()
            unlink_quietly(name)
            raise
        IDENTITY.pack_into(mm, 0, 0, LAYOUT_VERSION, kind, size)
        # Publish the segment: the body and identity stores above precede the magic
        # (Store/Store, ordering.py); pairs with the magic check in attach().
        seg.q[0] = MAGIC
        return seg

    @classmethod
    def attach(cls, name: str, kind: int, writable: bool = False) -> Segment:
        """Map an existing segment, read-only unless ``writable``, and check its identity.

        Raises SegmentError if it is missing, not a Mycelium segment of ``kind``, of
        another layout version, or not trusted (owner, mode: ``TRUST``).
        """
        flags = 0 if writable else posix_ipc.O_RDONLY  # posix_ipc opens O_RDWR by default
        try:
            shm = posix_ipc.SharedMemory(name, flags, read_only=not writable)
        except posix_ipc.ExistentialError as exc:
            raise SegmentError(f"segment {name} does not exist") from exc
        except (posix_ipc.Error, OSError) as exc:
            raise SegmentError(f"cannot open segment {name}: {exc}") from exc
        try:
            TRUST.check(name, os.fstat(shm.fd))
            size = shm.size
            if size < IDENTITY.size:
                raise SegmentError(f"segment {name} is too small ({size} bytes) to be ours")
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            mm = mmap.mmap(shm.fd, size, MAP_FLAGS, prot)
        except OSError as exc:
            raise SegmentError(f"cannot map segment {name}: {exc}") from exc
        finally:
            shm.close_fd()
        magic, version, found_kind, declared = IDENTITY.unpack_from(mm, 0)
        problem = None
        if magic != MAGIC:
            problem = "is not a Mycelium segment (bad magic)"
        elif version != LAYOUT_VERSION:
            problem = f"has layout version {version}, this build reads {LAYOUT_VERSION}"
        elif found_kind != kind:
            problem = (
                f"is a {KIND_NAMES.get(found_kind, found_kind)} segment, "
                f"expected {KIND_NAMES.get(kind, kind)}"
            )
        elif declared != size:
            problem = f"declares {declared} bytes but is {size}"
        if problem:
            mm.close()
            raise SegmentError(f"segment {name} {problem}")
        return cls(name, mm, size, kind, writable)

    @classmethod
    def attach_lane(cls, name: str, writable: bool = False) -> Segment:
        """Map a lane segment (``writable`` for its producer), so that callers above the
        shm layer never name a segment kind. Raises SegmentError as ``attach``."""
        return cls.attach(name, KIND_LANE, writable)

    def close(self) -> None:
        """Unmap. Zero-copy views a caller still holds keep the mapping alive until dropped."""
        self.q.release()
        self.buf.release()
        try:
            self.mm.close()
        except BufferError:
            pass  # a caller's view is alive; the mapping goes when the last view does

    def unlink(self) -> bool:
        """Remove the name (mappings stay valid); True if it existed."""
        return unlink_quietly(self.name)

    def __repr__(self) -> str:
        mode = "rw" if self.writable else "ro"
        return f"<Segment {self.name} {KIND_NAMES.get(self.kind)} {self.size}B {mode}>"
