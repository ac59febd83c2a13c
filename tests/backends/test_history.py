"""A record's history on every store: a worker's ``took`` reads back as the line ``attempt_line``
gives, and any line sent whole as it was sent, whatever short form the store keeps it in
(``backends/_history.py``); SQLite reads the lines an earlier version stored.
"""

from __future__ import annotations

import json
import math
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from dowork.backends import Backend, ClaimRequest, Outcome, Settlement, SQLiteBackend
from dowork.backends._history import kept_line, shown_history
from dowork.backends._protocol import attempt_line
from tests.backends.test_contract import LEASE, NOW, rec, run

_OUTCOMES = [o for o in Outcome if o is not Outcome.STARTED]  # (a mark has no line)
_ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
#: A duration: whole nanoseconds (as a worker measures) or any float at all.
_TOOK = st.one_of(st.integers(0, 10**15).map(lambda ns: ns / 1e9), _ANY_FLOAT)
#: A line sent whole (an attempt that raised, a caller's): any one-line text, "@" ones too.
_SENT = st.text().map(lambda s: s.replace("\n", " ").replace("\r", " "))


def reads_as(got: str, want: str) -> bool:
    """Whether a line read back is ``want``, ``attempt_line``'s: the same text, or the same
    JSON but for a start within a microsecond (kept in whole microseconds)."""
    if got == want:
        return True
    g, w = json.loads(got), json.loads(want)
    start = w.pop("start")
    close = abs(g.pop("start") - start) <= 1e-6 + abs(start) * 1e-15
    return close and g == w and math.isfinite(w["took"])


def test_every_store_reads_back_the_lines_attempt_line_gives(
    backend_factory: Callable[[], Backend],
) -> None:
    """Any batch of settlements, ``took`` of any duration or a line sent whole, finished or
    retried: the history of each record reads back as ``attempt_line`` writes them."""

    @settings(max_examples=25, deadline=None)
    @example([(Outcome.SUCCEEDED, NOW, "@1 2u 3n succeeded"), (Outcome.RETRY, NOW, "@@y")])
    @example([(Outcome.FAILED, NOW, "@1 2.5 0.5 failed"), (Outcome.DEAD, NOW, 1e-9)])
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(_OUTCOMES),
                st.floats(NOW - 1e8, NOW + 1e8),  # (a time a store keeps: no malformed outcome)
                st.one_of(_TOOK, _SENT),
            ),
            min_size=1,
            max_size=6,
        )
    )
    def check(drawn: list[tuple[Outcome, float, float | str]]) -> None:
        async def body(b: Backend) -> None:
            queue = uuid.uuid4().hex  # (one store, memory's, serves every example)
            await b.push([rec(queue) for _ in drawn])
            claimed = await b.claim(ClaimRequest(queue, NOW, len(drawn), LEASE, "w"))
            sent = [
                settlement(r.id, r.attempts, outcome, now, value)
                for r, (outcome, now, value) in zip(claimed, drawn, strict=True)
            ]
            assert await b.settle(sent) == []
            got = {r.id: r.history for r in await b.get([s.id for s in sent])}
            for s in sent:
                want = attempt_line(s)
                assert want is not None
                assert reads_as((got[s.id] or "").removesuffix("\n"), want), (got[s.id], want)
                assert (got[s.id] or "").count("\n") == 1

        run(backend_factory, body)

    check()


def settlement(
    task_id: str, token: int, outcome: Outcome, now: float, value: float | str
) -> Settlement:
    """A settlement with ``value`` as its line sent whole (a str) or its ``took`` (a float)."""
    if isinstance(value, str):
        return Settlement(task_id, token, outcome, now, run_at=NOW, attempt=value)
    return Settlement(task_id, token, outcome, now, run_at=NOW, took=value)


@example(1, NOW, "@1 2u 3n succeeded", Outcome.SUCCEEDED)
@example(1, NOW, "@@1 2u 3n succeeded", Outcome.SUCCEEDED)
@example(1, NOW, "@", Outcome.RETRY)
@given(st.integers(0, 10**12), _ANY_FLOAT, st.one_of(_TOOK, _SENT), st.sampled_from(_OUTCOMES))
def test_a_kept_line_reads_back_as_attempt_line_gives(
    token: int, now: float, value: float | str, outcome: Outcome
) -> None:
    """Among earlier lines (JSON ones, as every version stored), alone or after a short one."""
    s = settlement("t", token, outcome, now, value)
    want = attempt_line(s)
    assert want is not None
    line = kept_line(s)
    assert line is not None
    assert line.endswith("\n")
    before = '{"n":0,"error":"E","traceback":"T\\n"}\n'
    shown = shown_history(before + line + line)
    assert shown is not None
    assert shown.startswith(before)
    got = shown[len(before) :].split("\n")
    assert got[2] == ""
    assert got[0] == got[1]
    assert reads_as(got[0], want)


def test_a_workers_took_is_kept_short_in_sqlite(tmp_path: Path) -> None:
    """SQLite keeps ``@n <start>u <took>n outcome``, not the JSON line (two float reprs and a
    JSON dump less a task). Fails without ``kept_line``: the column held the JSON line."""
    path = tmp_path / "tasks.sqlite3"

    async def body(b: Backend) -> None:
        await b.push([rec(), rec()])
        one, two = await b.claim(ClaimRequest("q", NOW, 2, LEASE, "w"))
        now = NOW + 2.5
        done = [Settlement(r.id, 1, Outcome.SUCCEEDED, now, took=0.25) for r in (one, two)]
        assert await b.settle(done) == []
        (got,) = await b.get([one.id])
        assert reads_as((got.history or "").removesuffix("\n"), attempt_line(done[0]) or "")

    run(lambda: SQLiteBackend(path), body)
    with sqlite3.connect(path) as conn:
        stored = {h for (h,) in conn.execute("SELECT history FROM dowork_tasks")}
    assert stored == {f"@1 {int((NOW + 2.25) * 1e6)}u 250000000n succeeded\n"}


def test_sqlite_reads_the_history_an_earlier_version_stored(tmp_path: Path) -> None:
    """JSON lines, as every earlier version stored them (a worker's attempt that did not raise
    and one that did), read as they are; a new attempt's short line joins them."""
    path = tmp_path / "tasks.sqlite3"
    old = (
        '{"n":1,"start":1700000000.25,"took":0.5,"outcome":"retry","error":"E: @x",'
        '"traceback":"T\\n@1 2u 3n x"}\n'
        '{"n":2,"start":1700000001.0,"took":0.0001234567,"outcome":"retry"}\n'
    )

    async def body(b: Backend) -> None:
        await b.push([rec(attempts=2)])
        (r,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE dowork_tasks SET history = ?", (old,))
        (got,) = await b.get([r.id])
        assert got.history == old
        done = Settlement(r.id, 3, Outcome.SUCCEEDED, NOW + 3, took=0.5)
        assert await b.settle([done]) == []
        (got,) = await b.get([r.id])
        assert (got.history or "").startswith(old)
        assert reads_as(
            (got.history or "")[len(old) :].removesuffix("\n"), attempt_line(done) or ""
        )

    run(lambda: SQLiteBackend(path), body)
