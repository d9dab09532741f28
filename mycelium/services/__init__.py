"""The trading services: two market-data adapters, a strategy, a portfolio, a dashboard.

How this works
--------------
Each service is a ``Service`` (``base``) around sans-IO logic that the tests drive
directly: ``kraken`` and ``polygon`` decode feed JSON into TLVs, ``arbitrage.Detector``
turns market data into opportunities, ``portfolio.Book`` keeps positions, and
``dashboard.DashboardState`` collects what ``mycelium top`` shows. The pipeline::

    kraken_collector --\\                      /--> signals ----\\
                        >--> market_data --> flash_arbitrage      >--> portfolio, dashboard
    polygon_adapter ---/         |                \\--> execution --/
                                 \\--> dashboard

``SERVICES`` maps the names ``mycelium service NAME`` accepts to their classes;
``demo.run_demo`` runs all of them on a private broker. See docs/services.md.
"""

from __future__ import annotations

from mycelium.services.arbitrage import FlashArbitrage
from mycelium.services.base import Service, ServiceProcess
from mycelium.services.dashboard import Dashboard
from mycelium.services.kraken import KrakenCollector
from mycelium.services.polygon import PolygonAdapter
from mycelium.services.portfolio import Portfolio

__all__ = ["SERVICES", "Service", "ServiceProcess"]

SERVICES: dict[str, type[Service]] = {
    cls.name: cls for cls in (KrakenCollector, PolygonAdapter, FlashArbitrage, Portfolio, Dashboard)
}
