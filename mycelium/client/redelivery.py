"""Redelivery: a departed queue member's unread messages stay in shared memory.

How this works
--------------
When a queue consumer leaves or dies, the coordinator hands each of its lanes to a
surviving member of its group (or, with none left, to the next member that joins),
naming in the registry the departed holder (``previous``) and where its slot stood
(``resume_pos``, ``resume_count``). No copy is made in any process's heap:

* producers keep gating the lane on the previous holder's frozen slot until the heir has
  claimed its own slot at that position (``gate_ids``), so nothing unread is overwritten,
  and stop writing to it (``takes_messages``: it is closed and drained, then removed);
* the heir claims a slot at the resume position (``resume_at``) and reads the lane before
  its own lanes: older messages first.

So the frames survive their producer closing or dying, and the hand-over needs nothing
from the producer: it happens in the coordinator's sweep that notices the death.
"""

from __future__ import annotations

from mycelium.topology import ConsumerEntry, LaneEntry

__all__ = ["gate_ids", "redelivered", "resume_at", "takes_messages"]


def gate_ids(lane: LaneEntry) -> tuple[int, ...]:
    """The consumers a queue lane's writer must not overrun: its holder, and while a
    hand-over is not settled, the previous holder whose slot still marks the unread."""
    return (lane.consumer, lane.previous) if lane.previous else (lane.consumer,)


def takes_messages(lane: LaneEntry, holder: ConsumerEntry | None) -> bool:
    """Whether a producer may dispatch new messages to this queue lane: its holder is
    alive, or durable and away (its lane keeps filling, up to the ring, until it returns)."""
    return holder is not None and (holder.alive or bool(holder.durable)) and not lane.draining


def resume_at(lane: LaneEntry) -> tuple[int, int, int] | None:
    """Where the heir of a handed-over lane starts (position, message index) and the
    index below which what it reads was delivered before; None if not handed over."""
    return (lane.resume_pos, lane.resume_count, lane.resume_seen) if lane.previous else None


def redelivered(start: int, seen: int, read_to: int) -> int:
    """Messages an heir that started at index ``start`` and has read to ``read_to`` got
    that the previous holder had received (and not acknowledged) before."""
    return max(0, min(read_to, seen) - start)
