"""Fixtures for NAT lab tests (network namespaces; see netlab.py).

``nat_lab_factory(topology, *, hairpin=None)`` builds a lab that lives until the test
ends; the fixture first calls ``require_root_lab()``, so a test using it skips where the
lab cannot run (not root, no ``ip``/``nft``, no namespaces) and fails instead in CI.
Mark such tests ``@pytest.mark.root``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .netlab import Lab, nat_lab, require_root_lab


@pytest.fixture
def nat_lab_factory() -> Iterator[Callable[..., Lab]]:
    """Make labs (``make("symmetric", hairpin=True)``); all are torn down after the test."""
    require_root_lab()
    with contextlib.ExitStack() as stack:

        def make(topology: str, **kw: Any) -> Lab:
            return stack.enter_context(nat_lab(topology, **kw))

        yield make
