"""Logging for every long-running command: a validated level and a text or JSON format.

How this works
--------------
``setup_logging`` configures the root logger once per process. In ``json`` format each
record is one line of JSON with stable keys: ``ts`` (Unix seconds), ``level``, ``logger``,
``event`` and ``message``, plus whichever of ``EVENT_FIELDS`` the call passed in
``extra=`` (``client``, ``pid``, ``topic``, ...). Call sites pass those fields through
``fields()`` so the text format shows the same facts in its message. Nothing here is on
a data path: producers and consumers never log per message.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

from mycelium.errors import ConfigError

__all__ = ["EVENT_FIELDS", "LOG_FORMATS", "LOG_LEVELS", "JsonFormatter", "fields", "setup_logging"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
#: Keys an event may carry besides the message; JSON lines show each one that is set.
EVENT_FIELDS = ("event", "client", "pid", "topic", "group", "consumer", "producer", "lane")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, one record per line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", "log"),
            "message": record.getMessage(),
        }
        for key in EVENT_FIELDS[1:]:
            value = getattr(record, key, None)
            if value is not None:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def fields(event: str, **values: Any) -> dict[str, Any]:
    """The ``extra=`` of an event log call: its name plus the facts it is about."""
    unknown = set(values) - set(EVENT_FIELDS)
    assert not unknown, f"not an event field: {unknown}"
    return {"event": event, **values}


def setup_logging(level: str, fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Configure the root logger. Raises ConfigError for an unknown level or format
    (the CLI turns it into one error line and exit code 2)."""
    name = level.upper()
    if name not in LOG_LEVELS:
        raise ConfigError(
            f"unknown log level {level!r}; one of {', '.join(LOG_LEVELS)}", path="--log-level"
        )
    if fmt not in LOG_FORMATS:
        raise ConfigError(
            f"unknown log format {fmt!r}; one of {', '.join(LOG_FORMATS)}", path="--log-format"
        )
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter(TEXT_FORMAT)
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    logging.basicConfig(level=name, handlers=[handler], force=True)
