"""The puller without a server: what it reads off an ack subject and a status line, how it
accounts its standing requests, and the nats-py internal it rides (refused by name when
missing, not at the first delivery)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from nats.aio.client import Client

from mycelium.bridge import headers
from mycelium.bridge.puller import REQUESTS_IN_FLIGHT, Puller, PullFailed, ack_fields


class _Bare:
    """A client object without ``_process_msg`` (as a future nats-py might be)."""

    def new_inbox(self) -> str:
        return "_INBOX.x"


class _Sent:
    """A client that records what is published and has the internal the puller wraps."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, str]] = []

    def new_inbox(self) -> str:
        return "_INBOX.x"

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, hdr: bytes | None
    ) -> None:
        """nats-py's, by signature."""

    async def publish(self, subject: str, payload: bytes = b"", reply: str = "") -> None:
        self.published.append((subject, payload, reply))


def _puller(batch: int = 3) -> tuple[Puller, _Sent]:
    nc = _Sent()
    return Puller(nc, "S", "D", batch, expires_s=1.0), nc  # type: ignore[arg-type]


def test_ack_subjects_of_both_forms_are_read() -> None:
    assert ack_fields("$JS.ACK.S.D.1.42.7.1700000000000000000.5") == (42, 7, 5)
    v2 = "$JS.ACK.dom.acchash.S.D.2.43.8.1700000000000000000.4.tok"
    assert ack_fields(v2) == (43, 8, 4)
    assert ack_fields(v2.rpartition(".")[0]) == (43, 8, 4)
    with pytest.raises(ValueError, match="not a JetStream ack subject"):
        ack_fields("_INBOX.abc.1")


def test_deliveries_fill_the_oldest_request_and_statuses_end_one() -> None:
    puller, nc = _puller(batch=2)
    asyncio.run(puller.top_up())
    assert len(nc.published) == REQUESTS_IN_FLIGHT
    subject, request, reply = nc.published[0]
    assert (subject, reply) == ("$JS.API.CONSUMER.MSG.NEXT.S.D", "_INBOX.x")
    assert b'"batch": 2' in request
    hdr = f"NATS/1.0\r\n{headers.ORIGIN}: A\r\n{headers.TOPIC}: t\r\n\r\n".encode()
    for seq in (1, 2):  # fills the first request
        puller._on_msg(b"_INBOX.x", f"$JS.ACK.S.D.1.{seq}.{seq}.0.9".encode(), b"m%d" % seq, hdr)
    puller._on_msg(b"_INBOX.x", b"$JS.ACK.S.D.1.3.3.0.8", b"m3", None)  # no headers: no origin
    puller._on_msg(
        b"_INBOX.x", b"", b"", b"NATS/1.0 408 Request Timeout\r\n\r\n"
    )  # ends the second
    asyncio.run(puller.top_up())
    assert len(nc.published) == 2 * REQUESTS_IN_FLIGHT  # both replaced
    got = asyncio.run(puller.take(10, timeout=0.0))
    assert [(d.seq, d.delivery, d.pending, d.data, d.origin) for d in got] == [
        (1, 1, 9, b"m1", "A"),
        (2, 2, 9, b"m2", "A"),
        (3, 3, 8, b"m3", None),
    ]
    asyncio.run(puller.ack(got[-1]))
    assert nc.published[-1] == ("$JS.ACK.S.D.1.3.3.0.8", b"", "")


@pytest.mark.parametrize(
    ("reply", "status", "said"),
    [
        (b"", b"NATS/1.0 409 Consumer Deleted\r\n\r\n", "NATS/1.0 409 Consumer Deleted"),
        (b"", b"NATS/1.0 503\r\n\r\n", "NATS/1.0 503"),
        (b"_INBOX.other.1", None, "not a JetStream ack subject"),
    ],
)
def test_another_status_or_a_malformed_delivery_fails_the_pull(
    reply: bytes, status: bytes | None, said: str
) -> None:
    puller, _ = _puller()
    puller._on_msg(b"_INBOX.x", reply, b"", status)
    with pytest.raises(PullFailed, match=re.escape(said)):
        asyncio.run(puller.take(10, timeout=0.0))


def test_a_nats_py_without_the_internal_is_refused_by_name() -> None:
    bare: Any = _Bare()
    with pytest.raises(RuntimeError, match=re.escape("Client._process_msg")):
        Puller(bare, "S", "D", 1, expires_s=1.0)


def test_the_installed_nats_py_has_it() -> None:
    Puller(Client(), "S", "D", 1, expires_s=1.0)
