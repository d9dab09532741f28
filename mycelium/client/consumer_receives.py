"""The consumer's receives beyond plain bytes: a message with its origin (``Envelope``),
a read-only view into the ring, a batch as numpy records.

``ReceiveCore`` (the non-blocking ``poll_envelope``, ``poll_view``, ``poll_array``) is a
base of ``ConsumerCore`` and ``Receives`` (their sync drivers ``recv_envelope``,
``recv_view``, ``recv_array``, ``envelopes``) one of ``Consumer``: kept out of
``consumer.py`` so that file stays the subscription, the lanes and the hot path
(``poll``, ``recv``). The lanes are read in the same order as ``poll``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import numpy.typing as npt

from mycelium.client.envelope import Envelope
from mycelium.client.waiting import wait_sync
from mycelium.errors import ReceiveTimeout, RecordSizeMismatch, ZeroCopyUnavailable
from mycelium.shm.reader import LaneReader

if TYPE_CHECKING:
    from mycelium.client.topology import TopologyWatcher
    from mycelium.client.waiting import WaitPlan
    from mycelium.shm.wait import Sleeper

T = TypeVar("T")

__all__ = ["ReceiveCore", "Receives", "ViewBlock"]


class ReceiveCore:
    """Mixin of ``ConsumerCore``: envelope, view and array polls (never wait)."""

    topic: str
    watch: TopologyWatcher
    _order: list[LaneReader]
    _handed: list[LaneReader]
    _rr: int
    _lossy: bool
    _topic_of: dict[LaneReader, str]

    if TYPE_CHECKING:

        def refresh(self) -> None: ...

    def poll_envelope(self) -> Envelope | None:
        """The next message with its origin (``Envelope``), or None; the lanes in the same
        order as ``poll``. Raises CorruptFrame."""
        if self.watch.stale():
            self.refresh()
        hit = self._first(LaneReader.poll_envelope)
        if hit is None:
            return None
        reader, (payload, sequence, published_ns) = hit
        return Envelope(self._topic_of[reader], payload, reader.producer, sequence, published_ns)

    def poll_view(self) -> tuple[LaneReader, memoryview] | None:
        """The next message as a read-only view into the ring and the reader holding it
        (its slot stays before the frame until ``reader.release()``), or None.

        Raises ZeroCopyUnavailable on a lossy topic (its writer never waits, so it could
        overwrite a held frame), CorruptFrame.
        """
        watch = self.watch
        if watch.generation[0] != watch.gen:  # watch.stale(), inlined
            self.refresh()
        if self._lossy:
            raise ZeroCopyUnavailable(self.topic)
        order = self._order
        n = len(order)
        if n == 1 and not self._handed:  # one lane: no turns to take
            reader = order[0]
            view = reader.poll_view()
            return None if view is None else (reader, view)
        return self._first(LaneReader.poll_view)

    def _first(self, take: Callable[[LaneReader], T | None]) -> tuple[LaneReader, T] | None:
        """The first lane ``take`` gets a message from, and that message: lanes handed
        over first (their messages are older), then ours from the next turn, as ``poll``
        takes them (no list built per call: this is the per-message path)."""
        for reader in self._handed:
            got = take(reader)
            if got is not None:
                return reader, got
        order = self._order
        n = len(order)
        start = self._rr
        for k in range(n):
            i = (start + k) % n
            got = take(order[i])
            if got is not None:
                self._rr = i + 1
                return order[i], got
        return None

    def poll_array(self, dtype: np.dtype, max_n: int) -> np.ndarray | None:
        """Up to ``max_n`` waiting messages as records of ``dtype`` (one per message, one
        cursor store per lane), or None if none is waiting. The lanes in turn, as
        ``poll_many``. Raises RecordSizeMismatch if the next message of the first lane
        with any is not one record (it stays unread), CorruptFrame."""
        if self.watch.stale():
            self.refresh()
        order = self._order
        n = len(order)
        start = self._rr
        parts: list[np.ndarray] = []
        got = 0
        for reader in [*self._handed, *(order[(start + k) % n] for k in range(n))]:
            if got >= max_n:
                break
            rows = reader.poll_records(dtype.itemsize, max_n - got)
            if rows is None:
                continue
            if not len(rows):
                if got:
                    break  # deliver what we have; the odd one is refused next time
                raise RecordSizeMismatch(self._topic_of[reader], reader.next_size(), dtype.itemsize)
            parts.append(rows)
            got += len(rows)
        self._rr = (start + 1) % n if n else 0
        if not parts:
            return None
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return rows.reshape(-1).view(dtype)


class ViewBlock:
    """The block of ``Consumer.recv_view``: a class with slots rather than a generator
    (``contextlib.contextmanager``), whose frames and exception-driven exit cost more
    per message than the zero-copy read saves; one per consumer, reused (blocks do not
    nest), holding the consumer only from ``recv_view`` to the block's end."""

    __slots__ = ("_consumer", "_reader", "_timeout", "_view")

    def __init__(self) -> None:
        self._consumer: Receives | None = None
        self._timeout: float | None = None
        self._reader: LaneReader | None = None
        self._view: memoryview | None = None

    def __enter__(self) -> memoryview:
        c = self._consumer
        assert c is not None, "enter the block recv_view returns"
        if c._viewing:
            raise RuntimeError("a recv_view block is already open on this consumer")
        try:
            got = c.poll_view()
            if got is None:
                got = wait_sync(c.poll_view, c.state, c.plan(self._timeout))
                if got is None:
                    raise ReceiveTimeout(c.topic, self._timeout)
        except BaseException:
            self._consumer = None  # no block is open: let go of the consumer
            raise
        c._viewing = True
        self._reader, view = got
        self._view = view
        return view

    def __exit__(self, et: object, ev: object, tb: object) -> None:
        c, reader, view = self._consumer, self._reader, self._view
        self._consumer = self._reader = self._view = None
        if c is not None:
            c._viewing = False
        if view is not None:
            view.release()
        if reader is not None:
            reader.release()


class Receives(ReceiveCore):
    """Mixin of ``Consumer``: the sync drivers of the ``ReceiveCore`` polls."""

    state: Sleeper
    _closed: bool
    _viewing: bool
    _view_block: ViewBlock | None = None  # made on the first recv_view

    if TYPE_CHECKING:

        def plan(self, timeout: float | None) -> WaitPlan: ...

    def recv_array(
        self, dtype: npt.DTypeLike, max_n: int = 1000, timeout: float | None = 0.0
    ) -> np.ndarray:
        """Up to ``max_n`` messages as a numpy array of ``dtype`` records (one message per
        record: e.g. a structured dtype, or ``mycelium.protocol.batch.TRADE_MESSAGE_DTYPE``
        for ``decode_batch``); waits up to ``timeout`` for the first; may be empty.

        Vectorised. Raises RecordSizeMismatch (nothing consumed) when the next message is
        not ``dtype.itemsize`` bytes: ``recv`` reads it.
        """
        dt = np.dtype(dtype)
        batch = self.poll_array(dt, max_n)
        if batch is None and timeout != 0.0:
            batch = wait_sync(lambda: self.poll_array(dt, max_n), self.state, self.plan(timeout))
        return np.empty(0, dt) if batch is None else batch

    def recv_envelope(self, timeout: float | None = None) -> Envelope:
        """The next message with its topic, producer, sequence and publish time; raises
        as ``recv``. Works with every ack mode: manual ack covers it like ``recv``."""
        env = self.poll_envelope()
        if env is not None:
            return env
        env = wait_sync(self.poll_envelope, self.state, self.plan(timeout))
        if env is None:
            raise ReceiveTimeout(self.topic, timeout)
        return env

    def recv_view(self, timeout: float | None = None) -> ViewBlock:
        """``with c.recv_view(timeout=1.0) as view:`` the next message as a read-only
        memoryview into the ring, no copy. Valid inside the block only: our cursor (which
        the writer gates on) stays before the frame until the block ends, so no writer
        can overwrite it meanwhile; on exit the view is released (using it then raises
        ValueError) and the cursor moves on. Do not read from this consumer inside the
        block (a read moves the cursor) or keep buffers exported from the view.

        Refused on a lossy topic (ZeroCopyUnavailable, nothing read): its writer never
        waits for a reader, so a held frame could change under the view. Raises as
        ``recv`` otherwise (a timeout, CorruptFrame); RuntimeError if nested.
        """
        block = self._view_block
        if block is None:
            block = self._view_block = ViewBlock()
        block._consumer = self
        block._timeout = timeout
        return block

    def envelopes(self) -> Iterator[Envelope]:
        """Envelopes as they come, blocking between them, until the consumer is closed."""
        while not self._closed:
            try:
                yield self.recv_envelope(timeout=1.0)
            except TimeoutError:
                continue
