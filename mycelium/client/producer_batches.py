"""The producer's batch and numpy-array publishing: many messages, one cursor store per lane.

``BatchOffers`` (``offer_many``, ``offer_array``: write what fits now, never wait) is a
base of ``ProducerCore`` and ``BatchPublishes`` (``publish_many``, ``publish_array``: wait
with the one backpressure policy until all went) one of ``Producer``: kept out of
``producer.py`` so that file stays the routing core and the one-message hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mycelium.client.routes import Payload, Route
from mycelium.errors import BackpressureTimeout, MessageTooLarge, NonContiguousPayload

if TYPE_CHECKING:
    from mycelium.backoff import Backpressure
    from mycelium.client.topology import TopologyWatcher

__all__ = ["BatchOffers", "BatchPublishes", "record_rows"]


def record_rows(records: np.ndarray) -> np.ndarray:
    """A 1-D array's records as the rows of a (k, itemsize) uint8 array (no copy).

    Raises NonContiguousPayload for a strided array, ValueError for another shape.
    """
    if not isinstance(records, np.ndarray) or records.ndim != 1:
        raise ValueError("publish_array takes a 1-D numpy array, one record per message")
    if not records.flags.c_contiguous:
        raise NonContiguousPayload(
            "publish_array needs a C-contiguous array (np.ascontiguousarray)"
        )
    return records.view(np.uint8).reshape(len(records), records.dtype.itemsize)


class BatchOffers:
    """Mixin of ``ProducerCore``: batch and array offers (never wait)."""

    watch: TopologyWatcher
    _routes: dict[str, Route]
    _limits: dict[str, int]

    if TYPE_CHECKING:

        def refresh(self) -> None: ...

        def open(self, topic: str) -> Route: ...

    def offer_many(self, topic: str, items: Sequence[Payload]) -> int:
        """Write what fits of a batch now (one cursor store per lane); returns how many
        went. Raises as ``offer``; MessageTooLarge before anything is written."""
        if self.watch.stale():
            self.refresh()
        if topic not in self._routes:
            self.open(topic)
        limit = self._limits[topic]
        if items and (largest := max(map(len, items))) > limit:
            raise MessageTooLarge(largest, limit, topic)
        return self._routes[topic].offer_many(items)

    def offer_array(self, topic: str, rows: np.ndarray) -> int:
        """``offer_many`` for the rows of a (k, n) uint8 array (one message per row),
        vectorised. Raises as ``offer_many``."""
        if self.watch.stale():
            self.refresh()
        if topic not in self._routes:
            self.open(topic)
        limit = self._limits[topic]
        if rows.shape[1] > limit:
            raise MessageTooLarge(rows.shape[1], limit, topic)
        return self._routes[topic].offer_rows(rows)


class BatchPublishes(BatchOffers):
    """Mixin of ``Producer``: the sync drivers of the ``BatchOffers``."""

    if TYPE_CHECKING:

        def backpressure(self, topic: str, timeout: float | None = None) -> Backpressure: ...

        def _pause(self, bp: Backpressure) -> None: ...

    def publish_many(self, topic: str, items: Sequence[Payload]) -> int:
        """Publish a batch with one cursor store per lane; returns the count published.
        BackpressureTimeout says in ``published`` how many went before it."""
        return self._publish_all(topic, items, self.offer_many)

    def publish_array(self, topic: str, records: np.ndarray) -> int:
        """Publish each record of a 1-D numpy array (e.g. a structured array, or a
        Protocol V2 batch from ``mycelium.protocol.batch``) as one message of
        ``dtype.itemsize`` bytes, vectorised; returns the count. Raises as
        ``publish_many``; NonContiguousPayload for an array that is not C-contiguous."""
        return self._publish_all(topic, record_rows(records), self.offer_array)

    def _publish_all(self, topic: str, items: Any, offer: Callable[[str, Any], int]) -> int:
        """Offer ``items`` (a sequence or array rows) until all are in, pausing by the
        topic's one backpressure policy whenever a ring is full."""
        done = offer(topic, items)
        k = len(items)
        if done < k:
            bp = self.backpressure(topic)
            while done < k:
                try:
                    self._pause(bp)
                except BackpressureTimeout as exc:
                    exc.published = done
                    raise
                done += offer(topic, items[done:])
        return k
