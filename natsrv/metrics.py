"""Counters and gauges, no I/O: the trio shell increments them, exporters read them."""

from __future__ import annotations

from collections import Counter


class Metrics:
    """Named monotonically increasing counters plus point-in-time gauges."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.gauges: dict[str, float] = {}

    def snapshot(self) -> dict[str, float]:
        return {**self.counters, **self.gauges}
