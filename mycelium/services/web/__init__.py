"""The dashboard as a web page: ``mycelium service dashboard --http``, ``mycelium demo --http``.

How this works
--------------
``server.WebServer`` serves one self-contained page (``index.html``, ``app.js``,
``app.css``: no CDN, no build step) and a WebSocket that pushes the dashboard's view as
JSON at most every ``UPDATE_EVERY_S``; ``feed.Feed`` builds those documents. The
consumer is the ordinary ``Dashboard`` service, so the page costs the producers nothing.
See docs/services.md.
"""

from __future__ import annotations

from mycelium.services.web.server import DEFAULT_HOST, UPDATE_EVERY_S, WebServer, parse_listen

__all__ = ["DEFAULT_HOST", "UPDATE_EVERY_S", "WebServer", "parse_listen"]
