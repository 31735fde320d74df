"""Log lines: text or JSON, one per event, never a secret.

``configure(level, fmt)`` sets up the root logger on standard error. In ``json`` format
every line is one object with ``ts`` (RFC 3339, UTC), ``level``, ``event`` (the
core's event name, or ``message`` for plain log calls) and the event's fields. Core
events (``natsrv.core.effects.Event``) are logged by the shell with :func:`log_event`;
their fields never hold a password, key, MESSAGE-INTEGRITY value or REST secret, and
nothing is logged per packet.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

EVENTS = logging.getLogger("natsrv.events")


def log_event(name: str, fields: dict[str, object], level: int = logging.INFO) -> None:
    """Log one core event with its fields."""
    if EVENTS.isEnabledFor(level):
        EVENTS.log(level, "%s", name, extra={"natsrv_event": name, "natsrv_fields": fields})


def _text_value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return json.dumps(text) if (not text or any(c in text for c in ' "=')) else text


class TextFormatter(logging.Formatter):
    """``2026-12-06T03:10:00Z INFO allocation-created username=alice client=...``"""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
        event = getattr(record, "natsrv_event", None)
        if event is None:
            line = f"{stamp} {record.levelname} {record.name}: {record.getMessage()}"
        else:
            fields: dict[str, Any] = getattr(record, "natsrv_fields", {})
            pairs = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items() if v is not None)
            line = f"{stamp} {record.levelname} {event} {pairs}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``event`` and the fields."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        out: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
        }
        event = getattr(record, "natsrv_event", None)
        if event is None:
            out["event"] = "message"
            out["logger"] = record.name
            out["message"] = record.getMessage()
        else:
            out["event"] = event
            out.update(getattr(record, "natsrv_fields", {}))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(level: str = "info", fmt: str = "text") -> None:
    """Log to standard error at ``level`` in ``fmt`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


__all__ = ["EVENTS", "JsonFormatter", "TextFormatter", "configure", "log_event"]
