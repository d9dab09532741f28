"""Client processes for test_limits: a crowd of connected handles that waits to be killed."""

from __future__ import annotations

import threading
from typing import Any

from mycelium import Consumer, Producer


def crowd(socket: str, topic: str, count: int, ready: Any) -> None:
    """Hold ``count`` connected handles (half consumers, half producers) until killed."""
    handles: list[Any] = []
    for i in range(count):
        if i % 2:
            handles.append(Consumer(topic, socket_path=socket))
        else:
            handles.append(Producer(socket_path=socket))
    ready.set()
    threading.Event().wait()
