"""Waiting in a test for what another thread or process does: poll, and fail past a timeout."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float = 20.0) -> None:
    """Return once ``predicate()`` is true; fail the test if it is not within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)
