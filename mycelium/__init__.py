"""Mycelium: a shared-memory message broker for Python processes on one machine.

Producers write frames into lock-free single-writer rings in POSIX shared memory;
consumers map them read-only; a coordinator daemon names the segments and watches over
them without ever touching a message. See README.md and docs/.

The handles are imported lazily, so ``mycelium.protocol`` or ``mycelium.config`` alone
do not load the data plane.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mycelium.client import Consumer, Producer
    from mycelium.client.envelope import Envelope
    from mycelium.shm.wait import WaitStrategy

__all__ = ["Consumer", "Envelope", "Producer", "WaitStrategy"]
__version__ = "0.1.0"

_LAZY = {
    "Consumer": "mycelium.client",
    "Envelope": "mycelium.client.envelope",
    "Producer": "mycelium.client",
    "WaitStrategy": "mycelium.shm.wait",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mycelium' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
