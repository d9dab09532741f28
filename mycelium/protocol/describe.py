"""A Protocol V2 message as JSON-ready data, for ``mycelium decode`` and debugging.

How this works: the message is parsed with the full checks of ``parse_message`` (so a bad
message raises the same ``ProtocolError``), then each part is rendered as plain ints and
strings: the header with the names of its relay domain and source, and every TLV with its
type name, form, length, payload hex and, where the type has a typed class and the payload
its size, the decoded fields.
"""

from __future__ import annotations

from typing import Any

from mycelium.protocol._codec import Buffer, parse_message
from mycelium.protocol._typed import TYPED_TLV_CLASSES
from mycelium.protocol._types import RelayDomain, SourceType, tlv_type_name

__all__ = ["describe_message"]


def describe_message(raw: Buffer, verify_checksum: bool = True) -> dict[str, Any]:
    """Parse ``raw`` and describe it; raises ``ProtocolError`` as ``parse_message`` does."""
    message = parse_message(raw, verify_checksum=verify_checksum)
    header = message.header._asdict()
    header["relay_domain_name"] = RelayDomain(header["relay_domain"]).name
    header["source_name"] = SourceType(header["source"]).name
    tlvs = []
    for tlv in message.tlvs:
        entry: dict[str, Any] = {
            "type": tlv.type,
            "type_name": tlv_type_name(tlv.type),
            "form": "extended" if tlv.extended else "standard",
            "length": len(tlv.payload),
            "payload_hex": bytes(tlv.payload).hex(),
        }
        typed = TYPED_TLV_CLASSES.get(tlv.type)
        if typed is not None and len(tlv.payload) == typed.SIZE:
            entry["struct"] = typed.__name__
            entry["fields"] = typed.from_bytes(tlv.payload).to_dict()
        tlvs.append(entry)
    return {"length": len(raw), "header": header, "tlvs": tlvs}
