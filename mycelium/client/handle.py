"""What every synchronous client handle shares: closing as a context manager, and on
garbage collection as a last resort."""

from __future__ import annotations

from typing import Any, Self

__all__ = ["ClosingHandle"]


class ClosingHandle:
    """Mixin for handles with ``close()`` and a ``_closed`` flag."""

    _closed: bool
    close: Any  # provided by the core the handle is mixed into

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:  # interpreter shutdown: best effort only
                pass
