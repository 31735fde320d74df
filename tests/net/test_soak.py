"""The bounded soak (benchmarks/soak.py): 1,500 allocations held for 60 s against a real
``natsrv serve``, with churn (deleted and re-created on new 5-tuples), channels
refreshed, permissions and channels left to expire, 1 % of clients vanishing without
a Refresh, and traffic both ways. Afterwards the process holds no allocation,
permission, channel, timer, relay port, descriptor or task more than before the first
client came, and its RSS is within 5 % of where it was after a warm-up round of the
same clients. (About 90 s: the suite's longest test.)"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.soak import run


def test_soak_with_churn_leaves_nothing_behind() -> None:
    result = run(allocations=1500, duration=60.0, warmup=1500)
    client = result["client"]
    assert result["server_alive"]
    assert client["failures"] == {}, client
    assert client["peak_live"] >= 1450  # the allocations were really held at once
    assert client["allocations"] > 1500 and client["vanished"] > 0  # churn happened
    assert result["end"]["relayed_to_clients"] > 0
    assert result["leaks"] == {"allocations": 0, "permissions": 0, "channels": 0, "timers": 0,
                               "relay_ports": 0, "fds": 0, "tasks": 0}, result  # fmt: skip
    assert result["rss_vs_warm"] < 0.05, result
