"""The bounded spoofed flood (benchmarks/spoof_flood.py, 10^5 packets from 2,000 source
addresses at 50,000/s) against a real ``natsrv serve``: RSS grows less than 1 MiB, the
descriptors stay where they were, legitimate Bindings and allocations (new and
returning clients) all succeed within RFC 8489 retransmissions, and the server lives."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.spoof_flood import run


def test_spoofed_flood_from_2000_sources_leaves_memory_and_legitimate_clients_alone() -> None:
    result = run(packets=100_000, sources=2000, rate=50_000)
    assert result["flood"]["packets"] == 100_000
    assert result["server_alive"]
    assert result["rss_growth_bytes"] < 1 << 20, result
    assert result["rss_peak_growth_bytes"] < 1 << 20, result
    assert result["fds_end"] == result["fds_start"]
    for name in ("legit_binding", "legit_allocation_returning", "legit_allocation_new"):
        summary = result[name]
        assert summary["attempts"] >= 10, (name, summary)
        assert summary["success"] >= 0.99, (name, summary)
    counted = result["server_counted"]
    # The flood was seen and answered only within the 401 budgets, the rest dropped.
    assert counted['natsrv_dropped_datagrams_total{reason="no-allocation"}'] > 0
