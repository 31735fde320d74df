"""No path of the relay reaches an address the peer policy forbids, however written."""

from __future__ import annotations

import pytest

from .ssrf_matrix import PATHS, TARGETS, refused


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("what", "ip"), TARGETS, ids=[f"{w}:{ip}" for w, ip in TARGETS])
def test_forbidden_peer_is_refused(path: str, what: str, ip: str) -> None:
    assert refused(path, ip), f"{path} reached {what} at {ip}"


def test_an_allowed_public_peer_is_reachable_on_every_path() -> None:
    # The same matrix must say "not refused" for a peer the policy admits, or it would
    # pass with a relay that refuses everything.
    for path in PATHS:
        assert not refused(path, "1.2.3.4"), path
