"""The topology watcher: the one place a client checks whether the registry changed.

How this works
--------------
The coordinator bumps the registry's generation counter on every topology change. A
client keeps the generation it last acted on; ``stale()`` is one aligned 8-byte load and a
compare (the hot-path check before every publish and poll), and ``read()`` decodes the
topology; ``accept()`` marks it as acted on. Reading is the slow part (msgpack decode),
so an async driver calls ``read()`` off the event loop and only ``stale()`` on it. The two
per-message hot paths (``ProducerCore.offer``, ``ConsumerCore.poll``) spell the same
compare out, ``generation[0] != gen``: a method call there costs ~8%.
"""

from __future__ import annotations

from mycelium.shm.registry import RegistryView
from mycelium.topology import Topology

__all__ = ["TopologyWatcher"]


class TopologyWatcher:
    """The registry mapping and the generation this client last acted on."""

    __slots__ = ("gen", "generation", "registry", "topology")

    def __init__(self, registry_name: str) -> None:
        self.registry = RegistryView.attach(registry_name)
        self.generation = self.registry.generation_word  # the registry's one polled word
        self.gen = -1  # nothing read yet: the first check says stale
        self.topology = Topology()

    def stale(self) -> bool:
        """Whether the topology changed since the last ``read()`` (one 8-byte load)."""
        return self.generation[0] != self.gen

    def read(self) -> tuple[int, Topology]:
        """Decode the current topology (a consistent snapshot) and its generation."""
        return self.registry.read()

    def accept(self, gen: int, topology: Topology) -> None:
        """Mark ``topology`` (read at ``gen``) as the one this client acts on."""
        self.gen = gen
        self.topology = topology

    def close(self) -> None:
        self.registry.close()
