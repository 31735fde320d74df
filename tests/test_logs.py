"""Log formatting: one JSON object per line with ts, level, event and the fields; a
text form with key=value pairs."""

from __future__ import annotations

import json
import logging

from natsrv.logs import JsonFormatter, TextFormatter


def record(event: str | None, fields: dict[str, object] | None = None) -> logging.LogRecord:
    rec = logging.LogRecord("natsrv.events", logging.INFO, __file__, 1, "%s", (event,), None)
    if event is not None:
        rec.natsrv_event = event
        rec.natsrv_fields = fields or {}
    rec.created = 1_795_000_000.25
    return rec


def test_json_lines_carry_ts_level_event_and_fields() -> None:
    line = JsonFormatter().format(record("allocation-ended", {"username": "alice",
                                                              "duration_s": 12.5}))
    obj = json.loads(line)
    assert obj == {"ts": "2026-11-18T11:06:40.250Z", "level": "info",
                   "event": "allocation-ended", "username": "alice", "duration_s": 12.5}
    plain = json.loads(JsonFormatter().format(record(None)))
    assert plain["event"] == "message" and plain["message"] == "None"


def test_text_lines_are_key_value_pairs() -> None:
    line = TextFormatter().format(record("auth-failed", {"username": "a b", "reason": "x",
                                                         "peers": ["1.2.3.4"], "skip": None}))
    assert line == ('2026-11-18T11:06:40.250Z INFO auth-failed username="a b" reason=x '
                    'peers="[\\"1.2.3.4\\"]"')
