"""The batched publisher rides two nats-py internals: a nats-py without them is refused
when the publisher is made, with a message that names them, not at the first publish."""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from mycelium.bridge.publisher import BatchPublisher


class _Bare:
    """A client object without the internals (as a future nats-py might be)."""

    def new_inbox(self) -> str:
        return "_INBOX.x"


def test_a_nats_py_without_the_internals_is_refused_by_name() -> None:
    with pytest.raises(RuntimeError, match="_send_command, _flush_pending"):
        BatchPublisher(_Bare(), lambda token, ack: None)  # type: ignore[arg-type]


def test_the_installed_nats_py_has_them() -> None:
    publisher = BatchPublisher(Client(), lambda token, ack: None)
    assert publisher.prefix.startswith(b"_INBOX.")
