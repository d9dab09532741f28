"""The control session table: which request is accepted in which state, and what follows."""

from __future__ import annotations

from typing import Any, get_args

import pytest

from mycelium.control.session import TRANSITIONS, ClientState, ServerSession, SessionState
from mycelium.control.wire import (
    PROTOCOL_VERSION,
    DeleteDurable,
    ErrorCode,
    Goodbye,
    Heartbeat,
    Hello,
    RegisterProducer,
    Reload,
    ReportFigures,
    Request,
    Shutdown,
    StatsRequest,
    Subscribe,
    Unsubscribe,
)
from mycelium.errors import ControlProtocolError

HELLO = Hello(version=PROTOCOL_VERSION, pid=4321, role="consumer", name="strategy")
SAMPLE: dict[type, Any] = {
    Hello: HELLO,
    RegisterProducer: RegisterProducer(topic="market_data"),
    Subscribe: Subscribe(topic="signals"),
    Unsubscribe: Unsubscribe(consumer_id=1),
    Heartbeat: Heartbeat(pid=4321),
    StatsRequest: StatsRequest(),
    Reload: Reload(),
    Shutdown: Shutdown(),
    DeleteDurable: DeleteDurable(name="portfolio"),
    Goodbye: Goodbye(),
    ReportFigures: ReportFigures(name="B", connected=False),
}

#: The whole protocol, written out independently of the module's table.
EXPECTED: dict[tuple[SessionState, type], SessionState | None] = {
    (state, kind): None for state in SessionState for kind in SAMPLE
}
EXPECTED[SessionState.AWAIT_HELLO, Hello] = SessionState.READY
for _kind in (RegisterProducer, Subscribe, Unsubscribe, Heartbeat, StatsRequest, Reload, Shutdown,
              DeleteDurable, ReportFigures):  # fmt: skip
    EXPECTED[SessionState.READY, _kind] = SessionState.READY
EXPECTED[SessionState.READY, Goodbye] = SessionState.CLOSED


def _session_in(state: SessionState) -> ServerSession:
    """A session brought to ``state`` through the protocol itself."""
    session = ServerSession(client_id=17)
    if state is not SessionState.AWAIT_HELLO:
        session.receive(HELLO)
    if state is SessionState.CLOSED:
        session.receive(Goodbye())
    assert session.state is state
    return session


def test_sample_covers_every_request_type() -> None:
    assert set(SAMPLE) == set(get_args(Request))


@pytest.mark.parametrize(
    ("state", "kind"), list(EXPECTED), ids=lambda v: getattr(v, "name", None) or v.__name__
)
def test_transition(state: SessionState, kind: type) -> None:
    session = _session_in(state)
    expected = EXPECTED[state, kind]
    if expected is None:
        with pytest.raises(ControlProtocolError) as info:
            session.receive(SAMPLE[kind])
        assert info.value.code == ErrorCode.OUT_OF_ORDER
        assert kind.__name__ in str(info.value) and state.name in str(info.value)
        assert session.state is SessionState.CLOSED
    else:
        session.receive(SAMPLE[kind])
        assert session.state is expected


def test_table_is_the_expected_protocol() -> None:
    allowed = {k: v for k, v in EXPECTED.items() if v is not None}
    assert allowed == TRANSITIONS


def test_hello_records_the_client() -> None:
    session = ServerSession(client_id=17)
    assert (session.role, session.pid, session.hello) == (None, None, None)
    session.receive(HELLO)
    assert (session.role, session.pid, session.client_id) == ("consumer", 4321, 17)
    assert session.hello == HELLO


@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1, -1])
def test_bad_version_is_refused_and_closes(version: int) -> None:
    session = ServerSession(client_id=1)
    with pytest.raises(ControlProtocolError) as info:
        session.receive(Hello(version=version, pid=1, role="producer"))
    assert info.value.code == ErrorCode.BAD_VERSION
    assert str(version) in str(info.value) and str(PROTOCOL_VERSION) in str(info.value)
    assert session.state is SessionState.CLOSED
    assert session.hello is None


def test_an_error_leaves_the_session_closed_for_good() -> None:
    session = _session_in(SessionState.READY)
    with pytest.raises(ControlProtocolError):
        session.receive(HELLO)
    with pytest.raises(ControlProtocolError):
        session.receive(Heartbeat(pid=1))
    assert session.state is SessionState.CLOSED


def test_close_without_goodbye() -> None:
    session = _session_in(SessionState.READY)
    session.close()
    assert session.state is SessionState.CLOSED
    with pytest.raises(ControlProtocolError):
        session.receive(StatsRequest())


def test_client_states() -> None:
    assert [s.name for s in ClientState] == ["CONNECTING", "CONNECTED", "RECONNECTING", "CLOSED"]
