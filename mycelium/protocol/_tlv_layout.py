"""How a typed TLV payload class becomes its wire layout (see ``_typed`` for the classes).

Each class is a ``@dataclass(slots=True)`` whose fields are declared in offset order with
an ``Annotated`` width (``U64``, ``I64``, ``Address``, ...). The ``@typed_tlv(tlv_type,
size)`` decorator reads those annotations once and compiles one ``struct.Struct`` for the
whole payload, so ``from_bytes`` is a single ``unpack_from`` and ``to_bytes`` a single
``pack``. u128 fields travel as 16 little-endian bytes and are converted to Python ints.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import fields
from typing import Annotated, Any, ClassVar, Self, TypeVar, get_type_hints

from mycelium.protocol._errors import EncodeError, PayloadSizeMismatch

__all__ = [
    "I32",
    "I64",
    "TYPED_TLV_CLASSES",
    "U8",
    "U16",
    "U32",
    "U64",
    "U128",
    "Address",
    "AddressPadding",
    "TypedTLV",
    "typed_tlv",
]

# Field widths: the metadata string is the struct code; "u128" is 16 LE bytes as an int.
U8 = Annotated[int, "B"]
U16 = Annotated[int, "H"]
U32 = Annotated[int, "I"]
I32 = Annotated[int, "i"]
U64 = Annotated[int, "Q"]
I64 = Annotated[int, "q"]
U128 = Annotated[int, "u128"]
Address = Annotated[bytes, "20s"]
AddressPadding = Annotated[bytes, "12s"]

_U128_CODE = "u128"


class TypedTLV:
    """Base of the typed payload classes: ``from_bytes``/``to_bytes``/``to_dict``."""

    __slots__ = ()

    TLV_TYPE: ClassVar[int]
    SIZE: ClassVar[int]
    _STRUCT: ClassVar[struct.Struct]
    _NAMES: ClassVar[tuple[str, ...]]
    _CODES: ClassVar[tuple[str, ...]]  # struct code of each field, u128 as "16s"
    _U128: ClassVar[tuple[int, ...]]  # positions of u128 fields in _NAMES

    @classmethod
    def from_bytes(cls, payload: bytes | bytearray | memoryview) -> Self:
        """Decode a payload; raises ``PayloadSizeMismatch`` unless it is exactly ``SIZE``."""
        if len(payload) != cls.SIZE:
            raise PayloadSizeMismatch(cls.TLV_TYPE, cls.SIZE, len(payload))
        values = cls._STRUCT.unpack_from(payload)
        if cls._U128:
            wide = list(values)
            for i in cls._U128:
                wide[i] = int.from_bytes(wide[i], "little")
            return cls(*wide)
        return cls(*values)

    def to_bytes(self) -> bytes:
        """Encode to the wire payload; raises ``EncodeError`` for out-of-range fields."""
        values = [getattr(self, name) for name in self._NAMES]
        try:
            for i in self._U128:
                values[i] = values[i].to_bytes(16, "little")
            return self._STRUCT.pack(*values)
        except (struct.error, OverflowError) as exc:
            raise EncodeError(f"{type(self).__name__}: {exc}") from None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Inverse of ``to_dict``: u128 fields may be ints or decimal strings, byte fields
        bytes or hex. Missing fields take their defaults; unknown names raise TypeError."""
        converted = dict(values)
        for i, name in enumerate(cls._NAMES):
            value = converted.get(name)
            if isinstance(value, str):
                converted[name] = int(value) if i in cls._U128 else bytes.fromhex(value)
        return cls(**converted)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields in the golden vectors' notation: ints, u128 as decimal
        strings, byte fields as hex."""
        out: dict[str, Any] = {}
        for i, name in enumerate(self._NAMES):
            value = getattr(self, name)
            if i in self._U128:
                value = str(value)
            elif isinstance(value, bytes):
                value = value.hex()
            out[name] = value
        return out


_T = TypeVar("_T", bound=type[TypedTLV])
TYPED_TLV_CLASSES: dict[int, type[TypedTLV]] = {}


def typed_tlv(tlv_type: int, size: int, *, register: bool = True) -> Callable[[_T], _T]:
    """Compile a dataclass's annotated fields into its wire struct and register it (not a
    layout of this project's own, which tools must not apply to the original's messages)."""

    def compile_layout(cls: _T) -> _T:
        hints = get_type_hints(cls, include_extras=True)
        names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]  # a dataclass
        codes = [hints[name].__metadata__[0] for name in names]
        cls.TLV_TYPE = tlv_type
        cls._NAMES = names
        cls._U128 = tuple(i for i, code in enumerate(codes) if code == _U128_CODE)
        cls._CODES = tuple("16s" if code == _U128_CODE else code for code in codes)
        cls._STRUCT = struct.Struct("<" + "".join(cls._CODES))
        cls.SIZE = cls._STRUCT.size
        if size != cls.SIZE:
            raise TypeError(f"{cls.__name__} layout is {cls.SIZE} bytes, expected {size}")
        if register:
            TYPED_TLV_CLASSES[tlv_type] = cls
        return cls

    return compile_layout
