"""The bounded slowloris run (benchmarks/slowloris.py): 600 connections that never
finish a message (half TCP, half a TLS handshake that never completes) from 1,000
loopback addresses, against a real ``natsrv serve`` with 200 stream slots, reopened as
fast as the server closes them; legitimate TCP and TLS clients meanwhile connect,
allocate, relay both ways and delete, every cycle succeeding."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.slowloris import run


def test_slow_connections_do_not_lock_out_legitimate_tcp_and_tls_clients() -> None:
    result = run(connections=600, sources=1000, duration=8.0,
                 extra_args=("--tcp-max-connections", "200"))  # fmt: skip
    assert result["server_alive"]
    assert result["slots_in_use_when_clients_started"] >= 180  # the attack held the slots
    counted = result["server_counted"]
    assert counted['natsrv_stream_connection_events_total{event="evicted"}'] > 0
    for name in ("legit_tcp", "legit_tls"):
        summary = result[name]
        assert summary["attempts"] >= 5, (name, summary)
        assert summary["success"] >= 0.99, (name, summary)
