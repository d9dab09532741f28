"""Client handles: the only layer besides the coordinator that knows both sockets and shm."""

from mycelium.client.consumer import Consumer, ConsumerCore
from mycelium.client.producer import Producer, ProducerCore

__all__ = ["Consumer", "ConsumerCore", "Producer", "ProducerCore"]
