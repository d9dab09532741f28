"""A consumer's subscriptions: one per topic it reads, all waiting on one doorbell.

How this works
--------------
``Consumer("market_data")`` holds one subscription; ``Consumer(["market_data",
"signals"])`` one per topic, each with its own consumer id, state segment (cursors,
heartbeat, sleeping flag) and, for a durable consumer, its own durable position, all over
one control connection. The first subscription's doorbell is the only one: the later
Subscribes ask the coordinator to share it (``Subscribe.doorbell_of``), so every
producer of every topic rings the same semaphore and producers never need to know that
a consumer reads several topics. ``SharedDoorbell`` is what the wait then arms: every
subscription's sleeping flag, and the one doorbell to block on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import posix_ipc

from mycelium.errors import ConfigError
from mycelium.shm.consumer_state import ConsumerState

__all__ = ["SharedDoorbell", "Subscription", "topic_label", "topics_of"]


def topics_of(topic: str | Sequence[str]) -> tuple[str, ...]:
    """The topics a consumer reads: one string, or a sequence of distinct strings.

    Raises ConfigError for an empty sequence, a duplicate, a non-string item, or
    something that is not a sequence at all.
    """
    if isinstance(topic, str):
        return (topic,)
    if isinstance(topic, (bytes, bytearray, memoryview)) or not isinstance(topic, Sequence):
        raise ConfigError(f"a topic name or a sequence of them, not {type(topic).__name__}")
    topics = tuple(topic)
    if not topics:
        raise ConfigError("a consumer needs at least one topic")
    for t in topics:
        if not isinstance(t, str):
            raise ConfigError(f"topic names are str, not {type(t).__name__} ({t!r})")
    if len(set(topics)) < len(topics):
        twice = sorted({t for t in topics if topics.count(t) > 1})
        raise ConfigError(f"topic {', '.join(map(repr, twice))} listed more than once")
    return topics


def topic_label(topic: str | Sequence[str]) -> str:
    """How a handle names what it reads (``c.topic``, errors): the topic itself, or the
    topics joined by commas."""
    return ",".join(topics_of(topic))


@dataclass(slots=True)
class Subscription:
    """One topic's subscription of a consumer: its id, group and state segment."""

    topic: str
    id: int
    group: str
    state: ConsumerState
    #: From the topology: a queue topic (our cursors outlive us: an heir reads on) ...
    queue: bool = False
    #: ... and a lossy one (its writers never wait: no zero-copy view).
    lossy: bool = False


class SharedDoorbell:
    """The sleeping flags of all of a consumer's subscriptions and the one doorbell they
    share: ``arm``/``disarm`` (``mycelium.shm.wait``) raise and lower every flag, the
    wait blocks on the one semaphore, whichever topic's producer rings it."""

    __slots__ = ("doorbell", "states")

    def __init__(self, states: Sequence[ConsumerState]) -> None:
        self.states = tuple(states)
        self.doorbell: posix_ipc.Semaphore = self.states[0].doorbell

    def set_sleeping(self, flag: bool) -> None:
        for state in self.states:
            state.set_sleeping(flag)
