"""The bridge's NATS connection: connect options, backoff, streams and consumers.

How this works
--------------
The bridge reconnects itself instead of letting nats-py buffer and replay: nats-py
connects with ``allow_reconnect=False``, so when a connection dies everything sent on it
is settled (acked or failed) before the next connection carries anything. The exporter
then re-sends what was not acked, in order, on the new connection; that is what keeps a
producer's messages in order across a server crash. Each attempt starts at the next URL
of the list (cluster failover) and waits a capped, jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from mycelium.backoff import jittered_backoff_s
from mycelium.bridge import headers
from mycelium.bridge.puller import REQUESTS_IN_FLIGHT
from mycelium.config import BridgeConfig

__all__ = [
    "backoff_s",
    "close_quietly",
    "connect",
    "ensure_consumer",
    "ensure_stream",
    "max_ack_pending",
]

log = logging.getLogger("mycelium.bridge")

#: One connect attempt gives up after this long.
CONNECT_TIMEOUT_S = 2.0
#: nats-py's request timeout for stream and consumer management calls.
API_TIMEOUT_S = 5.0


def backoff_s(attempt: int, cfg: BridgeConfig, rng: random.Random | None = None) -> float:
    """Jittered: uniform in [min, min(max, min * 2**attempt)] seconds (attempt 0: min)."""
    low, high = cfg.reconnect_wait_min_ms / 1000, cfg.reconnect_wait_max_ms / 1000
    return jittered_backoff_s(attempt, low, high, rng=rng)


def _tls(cfg: BridgeConfig) -> ssl.SSLContext | None:
    if not (cfg.tls_ca or cfg.tls_cert):
        return None
    ctx = ssl.create_default_context(cafile=cfg.tls_ca)
    if cfg.tls_cert:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    return ctx


async def connect(
    cfg: BridgeConfig, attempt: int, name: str, on_lost: Callable[[], Awaitable[None]]
) -> Client:
    """One connection attempt, starting at server ``attempt % len(cfg.nats)``.

    Raises whatever nats-py raises (OSError, nats.errors.NoServersError, TimeoutError).
    """
    k = attempt % len(cfg.nats)
    servers = list(cfg.nats[k:] + cfg.nats[:k])
    options: dict[str, Any] = {
        "servers": servers,
        "name": f"mycelium-bridge-{name}",
        "allow_reconnect": False,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "max_reconnect_attempts": 0,
        "disconnected_cb": on_lost,
        "closed_cb": on_lost,
        "error_cb": _ignore,
    }
    tls = _tls(cfg)
    if tls is not None:
        options["tls"] = tls
    if cfg.creds:
        options["user_credentials"] = cfg.creds
    return await nats.connect(**options)


async def _ignore(exc: Exception) -> None:
    """nats-py reports errors here as well as raising them; the session sees the raise."""


async def ensure_stream(js: JetStreamContext, cfg: BridgeConfig, topic: str) -> str:
    """The topic's stream, created if absent; returns its name. Raises nats API errors."""
    name = headers.stream_name(cfg.subject_prefix, topic)
    try:
        await js.stream_info(name)
        return name
    except NotFoundError:
        pass
    await js.add_stream(
        js_api.StreamConfig(
            name=name,
            subjects=[headers.subject(cfg.subject_prefix, topic)],
            retention=js_api.RetentionPolicy(cfg.retention),
            storage=js_api.StorageType(cfg.storage),
            max_bytes=cfg.max_bytes or -1,
            num_replicas=cfg.replicas,
            duplicate_window=cfg.duplicate_window_ms / 1000,
        )
    )
    return name


def max_ack_pending(cfg: BridgeConfig) -> int:
    """What the import's durable consumer may have delivered and unacked: the standing
    pull requests and the batch being written (the bound on the bridge's memory)."""
    return cfg.fetch_batch * (REQUESTS_IN_FLIGHT + 1)


async def ensure_consumer(
    js: JetStreamContext, cfg: BridgeConfig, stream: str, host: str, topic: str
) -> str:
    """The host's durable pull consumer of a topic, created if absent; returns its name.

    Acks are cumulative (``AckPolicy.ALL``). A durable made by an earlier bridge is kept
    and its ``max_ack_pending`` (once one fetch) updated in place: it is an editable
    field, and the ack floor, hence where the import resumes, stays. One with another
    ack policy (not one a bridge makes; the policy cannot be edited) is made anew from its
    ack floor: what it acked beyond the floor comes again and the import cursor drops it.
    Raises nats API errors.
    """
    durable = headers.durable_name(host, topic)
    try:
        info = await js.consumer_info(stream, durable)
    except NotFoundError:
        info = None
    want = max_ack_pending(cfg)
    if info is not None and info.config.ack_policy == js_api.AckPolicy.ALL:
        if info.config.max_ack_pending != want:
            await js.add_consumer(stream, info.config.evolve(max_ack_pending=want))
        return durable
    start: dict[str, Any] = {"deliver_policy": js_api.DeliverPolicy(cfg.deliver)}
    if info is not None:
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        log.warning(
            "consumer %s has ack policy %s: made anew from %d",
            durable,
            info.config.ack_policy,
            floor + 1,
        )
        await js.delete_consumer(stream, durable)
        start = {
            "deliver_policy": js_api.DeliverPolicy.BY_START_SEQUENCE,
            "opt_start_seq": floor + 1,
        }
    await js.add_consumer(
        stream,
        js_api.ConsumerConfig(
            durable_name=durable,
            ack_policy=js_api.AckPolicy.ALL,
            ack_wait=cfg.ack_wait_ms / 1000,
            max_ack_pending=want,
            filter_subject=headers.subject(cfg.subject_prefix, topic),
            num_replicas=cfg.replicas,
            **start,
        ),
    )
    return durable


async def close_quietly(nc: Client) -> None:
    """Close a connection that may already be dead."""
    try:
        await asyncio.wait_for(nc.close(), CONNECT_TIMEOUT_S)
    except Exception:
        pass  # it is being replaced; nothing on it is trusted any more
