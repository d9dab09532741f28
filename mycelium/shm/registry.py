"""The registry segment: the broker's topology, written only by the coordinator.

How this works
--------------
The topology (``mycelium.topology``: topics, producers, lanes, consumers) is one msgpack
document kept in two buffers. The coordinator writes the next version into the buffer
the current generation does not point at, then stores the new generation (its parity picks the buffer): the
store is the publish. A client checks one 8-byte word per poll; when it differs from the
generation it last read, it copies the live buffer, decodes it, and re-checks the
generation (a seqlock: if the coordinator published twice meanwhile, it reads again).

Each buffer opens with its length, the generation it was written for and the CRC-32 of
the document, so a reader trusts nothing it reads: a scribbled generation word (which
would point at the previous buffer, unstamped once it is stale), length or document is a
SegmentError, never an old or altered topology. The coordinator checks its own registry every sweep
(``intact``) and publishes again if a word was scribbled, which heals every client.

A restarted coordinator adopts the segment: it reads the last topology from it, keeps
the generation counting up, and clients never notice the restart in shared memory.
"""

from __future__ import annotations

import os
import struct
import time
import zlib

import msgspec

from mycelium.errors import LimitExceeded, SegmentError
from mycelium.shm.layout import (
    KIND_REGISTRY,
    REGISTRY_BUFFER_BYTES,
    REGISTRY_BUFFER_OFF,
    REGISTRY_COORDINATOR_Q,
    REGISTRY_GENERATION_Q,
    REGISTRY_SEGMENT_BYTES,
)
from mycelium.shm.segment import DEFAULT_SEGMENT_MODE, Segment
from mycelium.topology import Topology

__all__ = ["Registry", "RegistryView"]

#: A reader retries a torn read (coordinator published twice while we copied) this often.
READ_TRIES = 100


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Topology)
#: A buffer's head: document length, the generation it was written for, its CRC-32.
_HEAD = struct.Struct("<QQQ")
_BLOB_MAX_BYTES = REGISTRY_BUFFER_BYTES - _HEAD.size
_STAMP_OFF = 8
_U64 = (1 << 64) - 1


def _buffer_off(generation: int) -> int:
    return REGISTRY_BUFFER_OFF + (generation & 1) * REGISTRY_BUFFER_BYTES


class RegistryView:
    """A client's read-only view: ``generation`` is the one word to poll."""

    def __init__(self, seg: Segment) -> None:
        self.seg = seg
        self.q = seg.q
        #: The generation word alone: ``generation_word[0]`` is the one 8-byte load a
        #: client polls, as cheap as indexing ``q`` and with no layout offset in the caller.
        self.generation_word = seg.q[REGISTRY_GENERATION_Q : REGISTRY_GENERATION_Q + 1]

    @classmethod
    def attach(cls, name: str) -> RegistryView:
        return cls(Segment.attach(name, KIND_REGISTRY, writable=False))

    @property
    def generation(self) -> int:
        return self.q[REGISTRY_GENERATION_Q]

    @property
    def coordinator_pid(self) -> int:
        return self.q[REGISTRY_COORDINATOR_Q]

    def read(self) -> tuple[int, Topology]:
        """The current (generation, topology). Raises SegmentError if it cannot be read
        (torn by publishes for ``READ_TRIES`` tries, or scribbled)."""
        gen, blob = self._read_blob()
        try:
            return gen, _decoder.decode(blob)
        except msgspec.DecodeError as exc:
            raise SegmentError(f"{self.seg.name}: unreadable topology: {exc}") from exc

    def _read_blob(self) -> tuple[int, bytes]:
        mm = self.seg.mm
        problem = "it kept changing while being read"
        for _ in range(READ_TRIES):
            gen = self.q[REGISTRY_GENERATION_Q]
            off = _buffer_off(gen)
            length, stamp, crc = _HEAD.unpack_from(mm, off)
            if length > _BLOB_MAX_BYTES:
                problem = f"its buffer claims {length} bytes"
                continue  # torn (the coordinator is rewriting this buffer) or scribbled
            blob = mm[off + _HEAD.size : off + _HEAD.size + length]
            if self.q[REGISTRY_GENERATION_Q] != gen:
                continue
            if stamp != gen or zlib.crc32(blob) != crc:
                problem = f"generation {gen} does not match its buffer (scribbled?)"
                continue
            return gen, blob
        raise SegmentError(f"{self.seg.name}: unreadable topology: {problem}")

    def close(self) -> None:
        self.generation_word.release()
        self.seg.close()


class Registry(RegistryView):
    """The coordinator's writable registry (the single writer)."""

    @classmethod
    def create(cls, name: str, mode: int = DEFAULT_SEGMENT_MODE) -> Registry:
        """A new, empty registry under a fresh name (O_EXCL). Raises SegmentError."""
        return cls(Segment.create(name, REGISTRY_SEGMENT_BYTES, KIND_REGISTRY, mode))

    @classmethod
    def adopt(cls, name: str) -> tuple[Registry, Topology]:
        """Take over a predecessor's registry, learned from the broker's own state file.

        Raises SegmentError if it is gone, not trusted (owner, mode) or unreadable.
        """
        reg = cls(Segment.attach(name, KIND_REGISTRY, writable=True))
        try:
            reg._published = reg._read_blob()
            _, topo = reg.read()
        except SegmentError:
            reg.close()
            raise
        return reg, topo

    #: The (generation, document) we last published: what ``intact`` compares with.
    _published: tuple[int, bytes] = (0, b"")

    def intact(self) -> bool:
        """Whether the generation word and its buffer still hold what we last published.
        False after a scribble; publishing again repairs it for every reader."""
        try:
            return self._read_blob() == self._published
        except SegmentError:
            return False

    def publish(self, topology: Topology) -> int:
        """Write ``topology`` as the next generation; returns that generation.

        Raises LimitExceeded (nothing written) if it does not fit the buffer.
        """
        for counters in (
            topology.retired_published,
            topology.retired_delivered,
            topology.retired_timeouts,
            topology.retired_lost,
        ):  # sums of u64 words a scribbled segment may inflate: they wrap, as the words do
            for key, n in counters.items():
                counters[key] = n & _U64
        blob = _encoder.encode(topology)
        if len(blob) > _BLOB_MAX_BYTES:
            raise LimitExceeded(
                f"topology of {len(blob)} bytes exceeds the registry buffer",
                limit="topology_bytes",
                maximum=_BLOB_MAX_BYTES,
            )
        gen = (self.q[REGISTRY_GENERATION_Q] + 1) & _U64
        off = _buffer_off(gen)
        mm = self.seg.mm
        _HEAD.pack_into(mm, off, len(blob), gen, zlib.crc32(blob))
        mm[off + _HEAD.size : off + _HEAD.size + len(blob)] = blob
        self._published = (gen, blob)
        self.q[REGISTRY_COORDINATOR_Q] = os.getpid()
        self.q[REGISTRY_COORDINATOR_Q + 1] = time.time_ns()
        # Publish: buffer stores above precede this store (Store/Store); pairs with the
        # generation loads in RegistryView.read.
        self.q[REGISTRY_GENERATION_Q] = gen
        # Unstamp the previous buffer (its stamp becomes ours, of the other parity), so a
        # generation word scribbled back to it cannot pass off the stale topology. A reader
        # still copying it sees the generation move on and retries (the re-check in read).
        self.q[(_buffer_off(gen - 1) + _STAMP_OFF) // 8] = gen
        return gen
