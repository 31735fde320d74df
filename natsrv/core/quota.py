"""Allocation quotas: ``user-quota`` (486) and ``max-allocations`` (508), RFC 8656 §7.2.

The TURN core asks an :class:`AllocationLedger` for room before it opens a relay and
gives the room back when the allocation (or an unclaimed EVEN-PORT reservation) ends.
``acquire`` checks and takes in one step, so it stays exact when the ledger is shared:
one process uses :class:`LocalLedger`; worker processes share the parent's ledger
(``natsrv/net/workers.py``), so the quotas hold across the whole host, not once per
worker.
"""

from __future__ import annotations

from typing import Literal, Protocol, TypeAlias

#: Why ``acquire`` refused: the server's total (508) or the user's quota (486).
Refusal: TypeAlias = Literal["total", "user"]


class AllocationLedger(Protocol):
    """Counts allocations and reservations, per user and in total."""

    def acquire(self, username: str, count: int, user_quota: int, total: int) -> Refusal | None:
        """Take ``count`` for ``username`` unless the server would then hold more than
        ``total`` or the user more than ``user_quota``; None when taken."""
        ...

    def release(self, username: str, count: int) -> None:
        """Give back ``count`` of what ``acquire`` took for ``username``."""
        ...

    def held(self, username: str) -> int:
        """What ``username`` holds now."""
        ...


class LocalLedger:
    """The ledger of one process: a count per user and the total."""

    def __init__(self) -> None:
        self.per_user: dict[str, int] = {}
        self.total = 0

    def acquire(self, username: str, count: int, user_quota: int, total: int) -> Refusal | None:
        if self.total + count > total:
            return "total"
        held = self.per_user.get(username, 0)
        if held + count > user_quota:
            return "user"
        self.per_user[username] = held + count
        self.total += count
        return None

    def release(self, username: str, count: int) -> None:
        held = self.per_user.get(username, 0)
        count = min(count, held)
        self.total -= count
        if held - count > 0:
            self.per_user[username] = held - count
        else:
            self.per_user.pop(username, None)

    def held(self, username: str) -> int:
        return self.per_user.get(username, 0)


__all__ = ["AllocationLedger", "LocalLedger", "Refusal"]
