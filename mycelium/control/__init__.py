"""The control plane's sans-IO core: typed messages, their framing and the session table.

``wire`` turns control messages into length-prefixed msgpack frames and back;
``session`` says which request may come in which connection state. Neither touches a
socket: the coordinator and the client handles own the I/O and drive these.
"""

from mycelium.control.session import TRANSITIONS, ClientState, ServerSession, SessionState
from mycelium.control.wire import (
    FRAME_PREFIX_BYTES,
    MAX_CONTROL_FRAME_BYTES,
    PROTOCOL_VERSION,
    ControlFrameDecoder,
    Error,
    ErrorCode,
    Goodbye,
    Heartbeat,
    Hello,
    Message,
    Ok,
    ProducerRegistered,
    RegisterProducer,
    Reload,
    Reply,
    Request,
    Shutdown,
    StatsReply,
    StatsRequest,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Welcome,
    encode_frame,
)

__all__ = [
    "FRAME_PREFIX_BYTES",
    "MAX_CONTROL_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "TRANSITIONS",
    "ClientState",
    "ControlFrameDecoder",
    "Error",
    "ErrorCode",
    "Goodbye",
    "Heartbeat",
    "Hello",
    "Message",
    "Ok",
    "ProducerRegistered",
    "RegisterProducer",
    "Reload",
    "Reply",
    "Request",
    "ServerSession",
    "SessionState",
    "Shutdown",
    "StatsReply",
    "StatsRequest",
    "Subscribe",
    "Subscribed",
    "Unsubscribe",
    "Welcome",
    "encode_frame",
]
