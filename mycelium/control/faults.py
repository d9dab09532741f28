"""The one table between exceptions and ``Error`` replies, used by both ends.

How this works
--------------
The coordinator turns whatever a request raised into an ``Error`` (``to_error``): a
refusal it meant (unknown topic, a limit, a bad reload) keeps its class's code and data
fields; anything else is ``internal``. The client turns the ``Error`` back into the
matching ``mycelium.errors`` class (``from_error``) from the code and the data fields,
never by parsing the message. A code this build does not know becomes
ControlProtocolError carrying it, so a newer coordinator's codes still surface.
"""

from __future__ import annotations

from mycelium.control.wire import Error, ErrorCode
from mycelium.errors import (
    BrokerUnavailable,
    ConfigError,
    ControlProtocolError,
    LimitExceeded,
    MyceliumError,
    PermissionDenied,
    SegmentError,
    UnknownTopic,
)

__all__ = ["from_error", "to_error"]

#: An internal error's message is cut here: it may quote a hostile request.
_MESSAGE_CHARS = 1000
#: Codes that mean "this broker will not serve you now": the client sees BrokerUnavailable.
_UNAVAILABLE = frozenset(
    {ErrorCode.TOO_MANY_CONNECTIONS, ErrorCode.TIMEOUT, ErrorCode.SHUTTING_DOWN}
)


def to_error(exc: BaseException) -> Error:
    """The Error reply for an exception raised while handling a request."""
    match exc:
        case UnknownTopic():
            data: dict[str, object] = {"topic": exc.topic, "known": list(exc.known)}
            return Error(code=ErrorCode.UNKNOWN_TOPIC, message=str(exc), data=data)
        case LimitExceeded():
            data = {"limit": exc.limit, "maximum": exc.maximum}
            return Error(code=ErrorCode.LIMIT_EXCEEDED, message=str(exc), data=data)
        case ConfigError():
            return Error(code=ErrorCode.CONFIG_ERROR, message=str(exc), data={"path": exc.path})
        case SegmentError():
            return Error(code=ErrorCode.SEGMENT_ERROR, message=str(exc))
        case ControlProtocolError():
            return Error(code=exc.code, message=str(exc))
        case BrokerUnavailable():
            return Error(code=ErrorCode.SHUTTING_DOWN, message=str(exc))
    return Error(code=ErrorCode.INTERNAL, message=f"{type(exc).__name__}: {exc}"[:_MESSAGE_CHARS])


def from_error(reply: Error) -> MyceliumError:
    """The MyceliumError an Error reply stands for (to be raised by the caller)."""
    code, data = reply.code, reply.data
    if code == ErrorCode.UNKNOWN_TOPIC:
        return UnknownTopic(str(data.get("topic", "")), tuple(map(str, data.get("known", ()))))
    if code == ErrorCode.LIMIT_EXCEEDED:
        maximum = data.get("maximum", 0)
        return LimitExceeded(
            reply.message,
            limit=str(data.get("limit", "")),
            maximum=maximum if isinstance(maximum, int) else 0,
        )
    if code == ErrorCode.CONFIG_ERROR:
        error = ConfigError(reply.message)
        error.path = str(data.get("path", ""))
        return error
    if code == ErrorCode.SEGMENT_ERROR:
        return SegmentError(reply.message)
    if code == ErrorCode.NOT_ALLOWED:
        return PermissionDenied(f"the broker refused us: {reply.message}")
    if code in _UNAVAILABLE:
        return BrokerUnavailable(f"the broker refused us: {reply.message}")
    return ControlProtocolError(f"the broker answered {code}: {reply.message}", code)
