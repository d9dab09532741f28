"""Mycelium: a shared-memory message broker for Python processes on one machine.

Producers write frames into lock-free single-writer rings in POSIX shared memory;
consumers map them read-only; a coordinator daemon names the segments and watches over
them without ever touching a message. See README.md and docs/.
"""

from mycelium import errors
from mycelium.client import Consumer, Producer
from mycelium.shm.wait import WaitStrategy

__all__ = ["Consumer", "Producer", "WaitStrategy", "errors"]
__version__ = "0.1.0"
