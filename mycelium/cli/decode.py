"""``mycelium decode``: a Protocol V2 message as JSON, the services' TLVs decoded too."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from mycelium.cli.app import app


@app.command()
def decode(
    message: str = typer.Argument(
        "-", help="The message as hex, or '-' to read hex (or raw bytes) from stdin."
    ),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the checksum check."),
) -> None:
    """Print a Protocol V2 message as JSON: header, TLVs and typed fields."""
    from mycelium.protocol import ProtocolError
    from mycelium.protocol.describe import describe_message

    if message == "-":
        data = sys.stdin.buffer.read()
        try:
            raw = bytes.fromhex(data.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            raw = data
    else:
        try:
            raw = bytes.fromhex(message.strip())
        except ValueError as exc:
            typer.echo(f"error: not a hex string: {exc}", err=True)
            raise typer.Exit(2) from exc
    try:
        doc = describe_message(raw, verify_checksum=not no_verify)
    except ProtocolError as exc:
        typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from exc
    for entry in doc["tlvs"]:
        if "fields" not in entry:
            _describe_service_tlv(entry)
    typer.echo(json.dumps(doc, indent=2))


def _describe_service_tlv(entry: dict[str, Any]) -> None:
    """Fields of the TLVs the trading services emit that the codec's fixed-size table does
    not decode: the variable-size OrderBookTLV (instrument, sequence, every level's side,
    price and size as exact decimals) and the ORDER_REQUEST legs. A payload that does not
    decode keeps its hex, with the reason in ``decode_error``."""
    from mycelium.protocol import OrderBookTLV, OrderRequestTLV, ProtocolError, TLVType

    payload = bytes.fromhex(entry["payload_hex"])
    try:
        if entry["type"] == TLVType.ORDER_BOOK:
            book = OrderBookTLV.from_bytes(payload)
            entry["struct"], entry["fields"] = "OrderBookTLV", _book_fields(book)
        elif entry["type"] == TLVType.ORDER_REQUEST and len(payload) == OrderRequestTLV.SIZE:
            entry["struct"] = "OrderRequestTLV"
            entry["fields"] = OrderRequestTLV.from_bytes(payload).to_dict()
    except ProtocolError as exc:
        entry["decode_error"] = str(exc)


def _book_fields(book: Any) -> dict[str, Any]:
    """An OrderBookTLV for people: the pair by name, levels best first, bids then asks."""
    from mycelium.protocol import VenueId

    pair, quote = book.instrument, book.instrument.quote
    try:
        venue: str | int = VenueId(book.venue_id).name
    except ValueError:
        venue = book.venue_id
    levels = [
        {"side": side, "price": str(book.decimal(level.price)),
         "size": str(book.decimal(level.size)), "order_count": level.order_count}
        for side, levels in (("bid", book.bids), ("ask", book.asks)) for level in levels
    ]  # fmt: skip
    return {
        "instrument": {
            "symbol": pair.symbol,
            "quote": None if quote is None else quote.name,
            "venue": venue,
        },
        **book.to_dict(),
        "levels": levels,
    }
