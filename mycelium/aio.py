"""The public path of the asyncio handles (``from mycelium.aio import AsyncProducer``);
they live in ``mycelium.client.aio``."""

from mycelium.client.aio import AsyncConsumer, AsyncProducer

__all__ = ["AsyncConsumer", "AsyncProducer"]
