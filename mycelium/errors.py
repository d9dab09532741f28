"""The one family of errors Mycelium raises: every class here subclasses MyceliumError.

OS-level failures (posix_ipc, mmap, socket) are translated into these at the single place
where each is called, so callers catch ``MyceliumError`` and nothing else.
"""

from __future__ import annotations

__all__ = [
    "BackpressureTimeout",
    "BrokerUnavailable",
    "ConfigError",
    "ControlProtocolError",
    "CorruptFrame",
    "LimitExceeded",
    "MessageTooLarge",
    "MyceliumError",
    "NonContiguousPayload",
    "PermissionDenied",
    "ReceiveTimeout",
    "SegmentError",
    "UnknownTopic",
    "UnsupportedPlatform",
]


class MyceliumError(Exception):
    """Root of every error Mycelium raises on purpose."""


class BrokerUnavailable(MyceliumError):
    """No coordinator answers on the control socket (not started, stopped, or refused us)."""


class UnknownTopic(MyceliumError, KeyError):
    """The topic is not configured on this broker."""

    def __init__(self, topic: str, known: tuple[str, ...] = ()) -> None:
        self.topic = topic
        self.known = tuple(known)
        hint = f"; known topics: {', '.join(self.known)}" if self.known else ""
        super().__init__(f"unknown topic {topic!r}{hint}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class MessageTooLarge(MyceliumError, ValueError):
    """A publish larger than the topic's max_message_size; nothing was written."""

    def __init__(self, size: int, max_size: int, topic: str = "") -> None:
        self.size = size
        self.max_size = max_size
        self.topic = topic
        where = f" on topic {topic!r}" if topic else ""
        super().__init__(f"message of {size} bytes exceeds max_message_size {max_size}{where}")


class NonContiguousPayload(MyceliumError, ValueError):
    """A payload buffer whose bytes are not one contiguous run; nothing was written."""


class BackpressureTimeout(MyceliumError, TimeoutError):
    """The ring stayed full past the wait bound because a reader is behind; nothing was written.

    For a batch, ``published`` counts the messages that went before the wait (the rest did not).
    ``topic`` names the topic of the publish ("" where only a lane is known, in ``mycelium.shm``).
    """

    def __init__(
        self,
        message: str,
        *,
        waited_s: float = 0.0,
        needed: int = 0,
        published: int = 0,
        topic: str = "",
    ) -> None:
        self.waited_s = waited_s
        self.needed = needed
        self.published = published
        self.topic = topic
        super().__init__(message)


class ReceiveTimeout(MyceliumError, TimeoutError):
    """Nothing arrived on ``topic`` within ``timeout_s`` seconds.

    A ``TimeoutError`` too, so code written for the built-in (``except TimeoutError``) still
    catches it.
    """

    def __init__(self, topic: str, timeout_s: float | None) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        super().__init__(f"no message on {topic!r} within {timeout_s}s")


class ConfigError(MyceliumError, ValueError):
    """A broker config is invalid; ``path`` names the offending key (e.g. ``topics[1].routing``)."""

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class CorruptFrame(MyceliumError):
    """A frame in shared memory failed its bounds checks; the reader skipped it and counted it."""


class SegmentError(MyceliumError):
    """A shared-memory segment is missing, of the wrong kind or version, or cannot be mapped."""


class ControlProtocolError(MyceliumError):
    """The peer on the control socket broke the protocol (bad frame, wrong version, bad state).

    ``code`` is the wire error code the coordinator answers with (e.g. ``bad_version``).
    """

    def __init__(self, message: str, code: str = "malformed") -> None:
        self.code = code
        super().__init__(message)


class PermissionDenied(BrokerUnavailable):
    """The coordinator refused this client's credentials (uid/gid not allowed)."""


class UnsupportedPlatform(MyceliumError):
    """Not a 64-bit interpreter on x86-64: the lock-free rings' ordering argument fails."""


class LimitExceeded(MyceliumError, ValueError):
    """A request crossed a hard limit (name length, entries, lanes, topology size); nothing
    was created. ``limit`` names the limit (docs/limits.md), ``maximum`` is its value."""

    def __init__(self, message: str, *, limit: str, maximum: int = 0) -> None:
        self.limit = limit
        self.maximum = maximum
        super().__init__(message)


class ZeroCopyUnavailable(MyceliumError, ValueError):
    """``recv_view`` on a lossy topic: its writer never waits for readers, so it could
    overwrite the bytes under a view. ``topic`` names it; ``recv`` copies instead."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        super().__init__(
            f"topic {topic!r} is lossy: its writer never waits, so a zero-copy view could be"
            " overwritten; use recv (a copy)"
        )


class RecordSizeMismatch(MyceliumError, ValueError):
    """``recv_array``: the next message is not one record of the dtype (``size`` bytes,
    not ``itemsize``); it was not consumed (``recv`` reads it)."""

    def __init__(self, topic: str, size: int, itemsize: int) -> None:
        self.topic, self.size, self.itemsize = topic, size, itemsize
        super().__init__(
            f"the next message on {topic!r} is {size} bytes, not one {itemsize}-byte record;"
            " it was left unread"
        )
