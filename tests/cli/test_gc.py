"""``dowork worker`` sets up the garbage collector for a worker process (``tune_gc``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from dowork.cli.work import GC_THRESHOLD, tune_gc


@pytest.fixture
def restored() -> Iterator[None]:
    """Put the collector back as it was: the rest of the suite runs in this process."""
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@pytest.mark.usefixtures("restored")
def test_a_worker_raises_the_first_threshold_and_freezes_what_exists() -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    tune_gc()
    assert gc.get_threshold() == (GC_THRESHOLD, 10, 10)
    assert gc.get_freeze_count() > 1000  # the modules and objects of the suite itself


@pytest.mark.usefixtures("restored")
@pytest.mark.parametrize("first", [0, 50_000])
def test_an_apps_own_threshold_stands_when_higher_or_off(first: int) -> None:
    gc.set_threshold(first, 5, 5)
    tune_gc()
    assert gc.get_threshold() == (first, 5, 5)
