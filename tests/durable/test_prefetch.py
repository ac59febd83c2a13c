"""What a worker holds beyond its slots: what it finishes in ``prefetch_window``, at most
``prefetch``; exactly ``prefetch`` with ``prefetch_window=None``; none with ``prefetch=0``.

README, "Prefetch": a worker busy with a long task holds nothing by default, so an idle worker
runs a task that a fixed prefetch would hold. Two workers of one slot each share a store; the
first runs a task that blocks until the test ends it. A task the busy worker holds is stored
``reserved`` until its function starts, on Redis too (a worker that popped its inbox with no
free slot stored it ``running`` at once, and a crash of the worker would be charged to it).
Short tasks are still claimed in batches beyond the slots.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from dowork import DurableSettings, Queue, TaskStatus
from dowork.backends import ClaimRequest, Record
from dowork.durable import DurableSource
from tests.waiting import wait_for

from .reads import records_of

WAIT = 20.0
pytestmark = pytest.mark.realtime


SETTINGS: dict[str, dict[str, Any]] = {
    "none": {"prefetch": 0},
    "fixed": {"prefetch": 1, "prefetch_window": None},
    "default": {},  # adaptive: a worker that finished nothing yet holds nothing beyond
}


@pytest.mark.parametrize("kind", list(SETTINGS))
def test_a_busy_worker_holds_a_waiting_task_only_with_a_fixed_prefetch(
    stores: Callable[..., Queue], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = DurableSettings(lease=60.0, maintenance=30.0, **SETTINGS[kind])
    prefetch = kind == "fixed"
    busy = stores(concurrency=1, durable=settings)
    idle = stores(concurrency=1, durable=settings)
    producer = stores()
    go = threading.Event()
    ran: dict[int, str] = {}

    def worker(where: str) -> Callable[[int], int]:
        def work(n: int) -> int:
            ran[n] = where
            if n == 1:
                assert go.wait(WAIT)
            return n

        return work

    busy.task(name="work")(worker("busy"))
    idle.task(name="work")(worker("idle"))
    submit = producer.task(name="work")(worker("producer"))
    source = idle._engine.source
    assert isinstance(source, DurableSource)
    claims: list[list[Record]] = []
    claim = source.backend.claim

    async def counted(*args: Any, **kw: Any) -> Sequence[Record]:
        got = await claim(*args, **kw)
        claims.append(list(got))
        return got

    monkeypatch.setattr(source.backend, "claim", counted)
    waiting = threading.Event()  # the busy worker waits (for work, or for a free slot)
    held_by = busy._engine.source
    assert isinstance(held_by, DurableSource)
    began = lambda: 1 in ran  # noqa: E731
    # (A worker with no free slot waits with ``backend.wait``, never ``wait_claim``.)
    monkeypatch.setattr(held_by.backend, "wait", _signalling(held_by.backend.wait, waiting, began))
    busy.start()
    first = submit.submit(1)
    wait_for(lambda: ran.get(1) == "busy")
    assert waiting.wait(WAIT) if prefetch else _waits_for_a_slot(held_by)
    second = submit.submit(2)
    if prefetch:  # the busy worker holds it, to run once its slot is free
        wait_for(lambda: records_of(producer)[second.id].owner is not None)
        idle.start()
        wait_for(lambda: len(claims) > 0)  # the idle worker looked, and found nothing
        assert claims[0] == []
        assert producer.status(second.id) is TaskStatus.RESERVED
        assert 2 not in ran
    else:  # nobody holds it: the idle worker runs it while the busy one is still busy
        idle.start()
        wait_for(lambda: producer.status(second.id) is TaskStatus.SUCCEEDED)
        assert ran[2] == "idle"
        assert producer.status(first.id) is not TaskStatus.SUCCEEDED  # (still blocked)
    go.set()
    wait_for(lambda: producer.status(first.id) is TaskStatus.SUCCEEDED)
    wait_for(lambda: producer.status(second.id) is TaskStatus.SUCCEEDED)
    assert ran == {1: "busy", 2: "busy" if prefetch else "idle"}


def _waits_for_a_slot(source: DurableSource) -> bool:
    """Whether the fetcher of ``source`` waits for a slot to free (it holds no more)."""
    wait_for(lambda: source._slot_waiting > 0)
    return True


def test_a_worker_of_short_tasks_claims_beyond_its_slots(stores: Callable[..., Queue]) -> None:
    """The default's hold grows with the rate: some claim asks for more than the slots."""
    producer = stores()
    queue = stores(concurrency=2, durable=DurableSettings(lease=60.0, maintenance=30.0))
    for q in (producer, queue):
        q.task(name="work")(_short)
    handles = producer.task(name="work")(_short).map([(n,) for n in range(400)])
    source = queue._engine.source
    assert isinstance(source, DurableSource)
    asked: list[int] = []
    claim = source.backend.claim

    async def counted(request: ClaimRequest) -> list[Record]:
        asked.append(request.limit)
        return await claim(request)

    source.backend.claim = counted  # type: ignore[method-assign]
    queue.start()
    assert [h.result(WAIT) for h in handles] == list(range(400))
    assert asked[0] == 2  # nothing finished yet: a claim for the free slots
    assert max(asked) > 2, asked


def _short(n: int) -> int:
    return n


def _signalling(
    wait: Callable[..., Any], event: threading.Event, when: Callable[[], bool]
) -> Callable[..., Any]:
    """``wait``, setting ``event`` as it is called once ``when()`` holds."""

    async def signalled(*args: Any, **kw: Any) -> Any:
        if when():
            event.set()
        return await wait(*args, **kw)

    return signalled
