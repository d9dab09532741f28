"""The ORDER_REQUEST legs (TLV type 40, 32 bytes) the strategy sends to ``execution``.

How this works
--------------
The layout is the codec's ``OrderRequestTLV`` (this project's: the original fixes only
the type number and the size):

    signal_id u32 @0, venue u16 @4, side u8 @6 (0 buy, 1 sell), leg u8 @7,
    asset_id u64 @8, quantity i64 @16, limit_price i64 @24

``quantity`` is in units of the asset and ``limit_price`` in quote-token units per unit
(fees included), both 8-decimal fixed point. One arbitrage is one execution message with
two of these, leg 0 (buy) and leg 1 (sell), so a consumer of the queue always gets both
legs together.
"""

from __future__ import annotations

from mycelium.protocol import OrderRequestTLV

__all__ = ["BUY", "SELL", "OrderRequest"]

BUY, SELL = 0, 1
OrderRequest = OrderRequestTLV
