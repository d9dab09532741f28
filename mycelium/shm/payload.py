"""Payloads: what a frame may carry (any C-contiguous buffer) and its size in bytes.

How this works
--------------
``bytes`` pass as they are (the common case costs one type check). Any other buffer is
viewed as flat bytes, so a ``memoryview(array('d', ...))`` is sized by ``nbytes``, not by
its item count; a non-contiguous buffer (a strided slice) is refused before anything is
written, since its bytes are not one run that a frame can copy.
"""

from __future__ import annotations

from mycelium.errors import NonContiguousPayload

__all__ = ["Payload", "payload_bytes"]

Payload = bytes | bytearray | memoryview


def payload_bytes(data: Payload) -> bytes | memoryview:
    """``data`` as a flat byte sequence whose ``len`` is its size in bytes.

    Raises NonContiguousPayload for a buffer whose bytes are not one contiguous run, and
    TypeError for an object that is not a buffer at all.
    """
    if type(data) is bytes:
        return data
    view = memoryview(data)
    if not view.c_contiguous:
        raise NonContiguousPayload(
            f"a payload must be one contiguous run of bytes, not a {view.ndim}-D strided "
            f"view of {view.nbytes} bytes; copy it first (bytes(view))"
        )
    if view.ndim == 1 and view.itemsize == 1:
        return data if type(data) is memoryview else view  # flat already: itself
    return view.cast("B")
