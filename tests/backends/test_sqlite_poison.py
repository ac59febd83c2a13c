"""SQLite rows a worker cannot read: dead-lettered ``malformed`` at once, neighbours untouched.

Hostile values are written straight into the file with ``sqlite3`` (as an older dowork, a
script or a person would), into a file with the table as dowork made it before ``STRICT``
(new files refuse most of them at write: see the last tests). A worker drives the queue by
``dispatch()`` on a fake clock; every healthy task must succeed, none is charged a crash, and
the bad row ends dead-lettered ``malformed`` (readable by every tool), or runs correctly where
its value is acceptable.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dowork
from dowork import DurableSettings, FakeClock, Hooks, Queue
from dowork.backends import ClaimRequest, Outcome, Record, Settlement, SQLiteBackend
from tests.backends.poison import healthy_alone, seconds_to_run

NOW = 1000.0
QUEUE = "jobs"

#: The task table as dowork created it before STRICT tables and CHECK constraints.
LEGACY = """
CREATE TABLE dowork_tasks (
    id TEXT PRIMARY KEY, queue TEXT NOT NULL, name TEXT NOT NULL, payload BLOB NOT NULL,
    options TEXT, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    run_at REAL NOT NULL, lease_until REAL, owner TEXT, crashes INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0, error TEXT, reason TEXT, result BLOB,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL, expires_at REAL,
    progress TEXT, history TEXT, priority INTEGER NOT NULL DEFAULT 0, slot REAL,
    concurrency_key TEXT
);
"""

_INSERT = (
    "INSERT INTO dowork_tasks (id, queue, name, payload, status, run_at, created_at,"
    " updated_at, concurrency_key) VALUES (?, ?, 'echo', ?, 'pending', ?, ?, ?, ?)"
)


def healthy(i: int, key: str | None = None, now: float = NOW) -> tuple[Any, ...]:
    payload = json.dumps({"a": [i], "k": {}}).encode()
    return (f"h{i:04d}", QUEUE, payload, now - 1, now - 1, now - 1, key)


def legacy_file(path: Path) -> None:
    """A file whose task table is of the older shape; dowork adds its other tables."""
    conn = sqlite3.connect(path)
    conn.executescript(LEGACY)
    conn.close()

    async def open_once() -> None:
        backend = SQLiteBackend(path)
        await backend.open()
        await backend.close()

    asyncio.run(open_once())


#: Dead-letter reasons of a record that could not be read (``Hooks.on_buried``).
UNREAD = (b"malformed", b"undecodable", b"bad_signature")


class Buried(Hooks):
    def __init__(self) -> None:
        self.told: list[tuple[str, str, str]] = []

    def on_buried(self, queue: str, task_id: str, reason: str) -> None:
        self.told.append((queue, task_id, reason))


class Scene:
    """One file, one queue: reset for each example, healthy rows around one hostile row."""

    def __init__(self, path: Path, around: int) -> None:
        self.path = path
        self.around = around
        self.clock = FakeClock(NOW)
        self.buried = Buried()
        self.queue = Queue(
            QUEUE,
            backend=SQLiteBackend(path, poll_interval=0.01),
            clock=self.clock,
            log=False,
            durable=DurableSettings(batch=1000, lease=30, maintenance=5),
            hooks=[self.buried],
        )
        self.queue.task(name="echo")(lambda value=None, *rest, **more: value)

    def told(self, row: tuple[Any, ...]) -> None:
        """Assert the hooks were told of the bad row once if it was buried unread, else not."""
        status, reason = row[1], row[2]
        if status == b"dead" and reason in UNREAD:
            assert self.buried.told == [(QUEUE, row[0].decode(), reason.decode())], row
        else:
            assert self.buried.told == [], row

    def reset(self, keyed: bool = False) -> None:
        self.buried.told.clear()
        conn = sqlite3.connect(self.path)
        with conn:
            conn.execute("DELETE FROM dowork_tasks")
            conn.execute("DELETE FROM dowork_turns")
            key = "tenant" if keyed else None
            now = self.clock.now()
            conn.executemany(_INSERT, [healthy(i, key, now) for i in range(self.around)])
        conn.close()

    def write_bad(self, field: str, sql: str, args: tuple[Any, ...] = ()) -> int:
        """Insert one healthy-looking row, then set ``field`` to ``sql``; return its rowid."""
        conn = sqlite3.connect(self.path)
        with conn:
            now = self.clock.now() - 1
            row = ("bad", QUEUE, b'{"a":["bad"],"k":{}}', now, now, now, None)
            rowid = conn.execute(_INSERT, row).lastrowid
            conn.execute(f"UPDATE dowork_tasks SET {field} = {sql} WHERE rowid = ?", (*args, rowid))
            later = [healthy(i, None, now + 1) for i in range(self.around, 2 * self.around)]
            conn.executemany(_INSERT, later)
        conn.close()
        assert rowid is not None
        return rowid

    def drain(self) -> None:
        """Dispatch until nothing is due within a minute; time passes (retries, maintenance)."""
        backend = self.queue.backend
        assert backend is not None
        for _ in range(12):  # 72 s: past any task due "within a minute" (else it is left)
            if not self.queue.dispatch():
                return
            due = self.queue._engine.run_on_home(backend.next_due(QUEUE))
            if due is None or due > self.clock.now() + 60:
                return  # only tasks due much later wait (e.g. a far-off run_at)
            self.clock.advance(6)
        raise AssertionError("the queue did not drain")

    def rows(self) -> dict[int, tuple[Any, ...]]:
        """Every row by rowid: (id, status, reason, crashes, error, result, run_at), raw."""
        conn = sqlite3.connect(self.path)
        conn.text_factory = bytes
        try:
            return {
                r[0]: r[1:]
                for r in conn.execute(
                    "SELECT rowid, id, status, reason, crashes, error, result, run_at"
                    " FROM dowork_tasks"
                )
            }
        finally:
            conn.close()

    def check(self, bad: int, acceptable: bool) -> tuple[Any, ...]:
        """Assert the outcome the issue asks for; return the bad row."""
        rows = self.rows()
        others = [r for rowid, r in rows.items() if rowid != bad]
        assert len(others) == 2 * self.around
        assert {(r[1], r[3]) for r in others} == {(b"succeeded", 0)}, others[:3]
        row = rows[bad]
        if row[1] == b"dead":
            assert row[2] in (b"malformed", b"unknown_task"), row
            assert row[3] == 0  # never charged a crash
            assert (
                row[4].startswith(b"malformed record")
                or b"Error" in row[4]
                or row[2] != b"malformed"
            )
        else:
            assert acceptable, row
            assert row[1] == b"succeeded", row
        self.told(row)
        assert row[3] == 0
        # Every tool can read the file again: the bad row was made readable.
        backend = self.queue.backend
        assert backend is not None
        records = self.queue._engine.run_on_home(backend.list(QUEUE, limit=10_000))
        assert len(records) == 2 * self.around + 1
        return row

    def close(self) -> None:
        self.queue.shutdown(timeout=5)


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Scene]:
    path = tmp_path / "legacy.db"
    legacy_file(path)
    made = Scene(path, around=20)
    yield made
    made.close()


# -- the cases the issue names ----------------------------------------------------------------

NAMED = [
    ("payload", '\'{"a":[1],"k":{}}\'', False),  # TEXT, not a BLOB
    ("id", "NULL", False),
    ("id", "CAST(x'ff61' AS TEXT)", False),  # not UTF-8
    ("id", "''", False),
    ("name", "CAST(x'c3' AS TEXT)", False),
    ("name", "7", False),  # stored as the text '7': an unknown name (unknown_task)
    ("crashes", "'many'", False),
    ("crashes", "-1", False),
    ("priority", "'high'", False),
    ("priority", "1000", False),
    ("priority", "2.5", False),
    ("attempts", "'x'", True),  # 'x' + 1 is 1: claimed as a first attempt
    ("attempts", "-5", False),
    ("attempts", "9223372036854775807", False),
    ("run_at", "-9e999", False),  # -inf
    ("run_at", "9e999", False),  # +inf: never due, found by maintenance
    ("run_at", "'soon'", False),  # text: never due
    ("run_at", "x'00'", False),
    ("run_at", "-123.5", True),  # long overdue: runs
    ("created_at", "'yesterday'", False),
    ("options", "x'7b7d'", False),  # a BLOB
    ("options", '\'{"retries": "lots"}\'', False),
    ("options", "CAST(x'7bff7d' AS TEXT)", False),
    ("cancel_requested", "'yes'", False),
    ("cancel_requested", "7", False),
    ("concurrency_key", "''", False),
    ("concurrency_key", "42", True),  # stored as the text '42': a key like any other
    ("concurrency_key", "'tenant'", True),
    ("slot", "'now'", True),  # a claim clears the slot
    ("result", "'text'", False),
    ("progress", "x'01'", False),
    ("history", "CAST(x'ff' AS TEXT)", False),
    ("error", "CAST(x'fe' AS TEXT)", False),
    ("finished_at", "'never'", False),
]


@pytest.mark.parametrize(("field", "sql", "acceptable"), NAMED)
def test_a_hostile_field_is_dead_lettered_and_its_neighbours_run(
    scene: Scene, field: str, sql: str, acceptable: bool
) -> None:
    scene.reset()
    bad = scene.write_bad(field, sql)
    scene.drain()
    row = scene.check(bad, acceptable)
    if row[1] == b"dead" and row[2] == b"malformed" and row[4].startswith(b"malformed record"):
        assert field.encode() in row[4]  # the error names the field and shows its raw value


def test_a_row_with_a_null_id_gets_a_readable_id_and_keeps_its_fields_printable(
    scene: Scene,
) -> None:
    scene.reset()
    bad = scene.write_bad("name", "CAST(x'ff' AS TEXT)")
    conn = sqlite3.connect(scene.path)
    with conn:
        conn.execute("UPDATE dowork_tasks SET id = NULL WHERE rowid = ?", (bad,))
    conn.close()
    scene.drain()
    row = scene.check(bad, acceptable=False)
    task_id = row[0].decode()
    assert task_id.startswith(f"malformed-{bad}-")
    (record,) = asyncio.run(_get(scene.path, [task_id]))
    assert (record.status, record.reason) == ("dead", "malformed")
    assert "id is NULL" in (record.error or "")
    assert "name is not UTF-8 text: '\\\\xff'" in (record.error or "")
    assert record.error is not None
    assert record.error.isprintable()


def _live_queue(path: Path) -> Queue:
    """A worker's queue on a file of the old schema, polling often, with short leases."""
    legacy_file(path)
    return Queue(
        QUEUE,
        backend=SQLiteBackend(path, poll_interval=0.01),
        log=False,
        durable=DurableSettings(lease=4, maintenance=1),
    )


def _echoed(task: dowork.Task[Any]) -> Any:
    return task.args[0]


def test_a_started_worker_dead_letters_bad_rows_among_its_batch(tmp_path: Path) -> None:
    alone = _live_queue(tmp_path / "clean.db")
    echo = alone.task(name="echo")(lambda value: value)
    clean = healthy_alone(alone, lambda: [echo.submit(i) for i in range(60)], _echoed, 30)
    path = tmp_path / "live.db"
    queue = _live_queue(path)
    try:
        echo = queue.task(name="echo")(lambda value: value)
        first = [echo.submit(i) for i in range(30)]
        conn = sqlite3.connect(path)
        with conn:
            now = time.time() - 1
            for n, (field, sql) in enumerate(
                [("payload", "'text'"), ("crashes", "'x'"), ("name", "CAST(x'ff' AS TEXT)")]
            ):
                conn.execute(_INSERT, (f"bad{n}", QUEUE, b"{}", now, now, now, None))
                conn.execute(f"UPDATE dowork_tasks SET {field} = {sql} WHERE id = 'bad{n}'")
        conn.close()
        last = [echo.submit(i) for i in range(30)]
        took = seconds_to_run(queue, first + last, _echoed, timeout=30)
        # Within twice the time of the same tasks without the bad rows, plus 1 s of slack for a
        # busy machine: nothing waits for a lease (4 s) because of them.
        assert took <= 2 * clean + 1.0, (took, clean)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reasons = _raw(path, "SELECT reason FROM dowork_tasks WHERE status = 'dead'")
            if len(reasons) == 3:
                break
            time.sleep(0.05)
        assert reasons == [(b"malformed",)] * 3
        assert _raw(path, "SELECT MAX(crashes) FROM dowork_tasks") == [(0,)]
    finally:
        queue.shutdown(timeout=5)


def _raw(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    conn.text_factory = bytes
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def _get(path: Path, ids: list[str]) -> list[Record]:
    backend = SQLiteBackend(path)
    try:
        return await backend.get(ids)
    finally:
        await backend.close()


# -- settling ---------------------------------------------------------------------------------


def test_one_outcome_that_cannot_be_stored_does_not_hold_back_the_batch(tmp_path: Path) -> None:
    async def body() -> None:
        store = SQLiteBackend(tmp_path / "settle.db")
        try:
            await store.push([Record(f"t{i}", QUEUE, "echo", b"{}", NOW, NOW) for i in range(3)])
            claimed = await store.claim(ClaimRequest(QUEUE, NOW, 10, 30.0, "w"))
            assert len(claimed) == 3
            refused = await store.settle(
                [
                    Settlement("t0", 1, Outcome.SUCCEEDED, NOW + 1, result=b"1"),
                    Settlement("t1", 1, Outcome.FAILED, NOW + 1, error="bad \udcff text"),
                    Settlement("t2", 1, Outcome.RETRY, NOW + 1, run_at=float("inf")),
                ]
            )
            assert refused == []
            records = {r.id: r for r in await store.get(["t0", "t1", "t2"])}
            assert (records["t0"].status, records["t0"].result) == ("succeeded", b"1")
            assert (records["t1"].status, records["t1"].reason) == ("dead", "malformed")
            assert "\\udcff" in (records["t1"].error or "")  # escaped, printable
            assert (records["t2"].status, records["t2"].reason) == ("dead", "malformed")
        finally:
            await store.close()

    asyncio.run(body())


# -- the schema of new files ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "sql"),
    [
        ("payload", "'text'"),
        ("crashes", "'many'"),
        ("priority", "'high'"),
        ("priority", "10"),
        ("run_at", "9e999"),
        ("run_at", "'soon'"),
        ("status", "'bogus'"),
        ("attempts", "-1"),
        ("cancel_requested", "2"),
        ("id", "NULL"),
        ("id", "''"),
        ("concurrency_key", "''"),
        ("created_at", "x'00'"),
    ],
)
def test_a_new_file_refuses_wrong_types_at_write(tmp_path: Path, field: str, sql: str) -> None:
    path = tmp_path / "new.db"
    asyncio.run(_push(path, [Record("t", QUEUE, "echo", b"{}", NOW, NOW)]))
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(f"UPDATE dowork_tasks SET {field} = {sql} WHERE id = 't'")
        assert (
            conn.execute("SELECT sql FROM sqlite_master WHERE name = 'dowork_tasks'")
            .fetchone()[0]
            .rstrip()
            .endswith("STRICT")
        )
    finally:
        conn.close()


def test_a_new_file_accepts_the_reserved_status(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    asyncio.run(_push(path, [Record("t", QUEUE, "echo", b"{}", NOW, NOW)]))
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE dowork_tasks SET status = 'reserved' WHERE id = 't'")
    conn.close()


def test_a_record_the_table_refuses_is_a_backend_error_not_a_duplicate(tmp_path: Path) -> None:
    with pytest.raises(dowork.BackendError) as caught:
        asyncio.run(
            _push(tmp_path / "new.db", [Record("t", QUEUE, "echo", b"{}", NOW, NOW, priority=50)])
        )
    assert not isinstance(caught.value, dowork.errors.DuplicateTask)
    assert "CHECK" in str(caught.value)


async def _push(path: Path, records: list[Record]) -> None:
    backend = SQLiteBackend(path)
    try:
        await backend.push(records)
    finally:
        await backend.close()


# -- property: any hostile value in any field -------------------------------------------------

#: A value to write: an SQL expression and its parameters.
Value = tuple[str, tuple[Any, ...]]


def _deep(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + "1" + close * depth


def _plain(value: Any) -> Value:
    return ("?", (value,))


_NUMBERS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),  # NaN is stored as NULL
    st.sampled_from([0, -1, 1, 2**62, -(2**63), 1e308, -1e308, 1e15, 1e16, -0.0]),
).map(_plain)
_TEXTS = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "NaN", "inf", "-inf", "1e999", "null", "[]", "{}", "pending"]),
    st.integers(min_value=50, max_value=3000).map(_deep),
).map(_plain)
_NOT_UTF8 = st.one_of(
    st.binary(min_size=1, max_size=20).filter(lambda b: not _is_utf8(b)),
    st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"a\x80b"]),
).map(lambda b: ("CAST(? AS TEXT)", (b,)))
_BLOBS = st.binary(max_size=30).map(_plain)
_NULL: st.SearchStrategy[Value] = st.just(("NULL", ()))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _payload_json(args: Any, kwargs: Any = None) -> Value:
    body = json.dumps({"a": args, "k": {} if kwargs is None else kwargs}, allow_nan=True)
    return _plain(body.encode())


_JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=10)
)
#: Payloads: well-formed but odd (deep, NaN, wrong shapes), and raw bytes.
_PAYLOADS = st.one_of(
    st.lists(_JSON_SCALARS, max_size=3).map(_payload_json),
    st.integers(min_value=90, max_value=5000).map(
        lambda d: _plain(('{"a":[' + _deep(d) + '],"k":{}}').encode())
    ),
    st.integers(min_value=90, max_value=3000).map(
        lambda d: _plain(('{"a":[],"k":{"x":' + _deep(d, '{"y":', "}") + "}}").encode())
    ),
    st.sampled_from(
        [b'{"a":"x","k":{}}', b'{"a":[],"k":[]}', b"[]", b"null", b'{"a":[]}', b"", b"\xff"]
    ).map(_plain),
    st.text(max_size=20).map(lambda t: _plain(t.encode())),
)
_OPTION_VALUES = st.one_of(
    _JSON_SCALARS,
    st.sampled_from([-1, 0, 1e308, "NaN", [], {}, [1, 2], 2**70]),
)
_OPTIONS = st.one_of(
    st.dictionaries(
        st.sampled_from(
            [
                "retries",
                "within",
                "expires_at",
                "backoff",
                "base_delay",
                "max_delay",
                "jitter",
                "keep_result",
                "group",
                "group_of",
                "other",
            ]
        ),
        _OPTION_VALUES,
        max_size=3,
    ).map(lambda d: _plain(json.dumps(d, allow_nan=True))),
    st.sampled_from(["[1]", "1", "null", '"text"', "{", "", _deep(3000)]).map(_plain),
)
_ANY = st.one_of(_NULL, _NUMBERS, _TEXTS, _NOT_UTF8, _BLOBS)

#: Each stored field a worker's claim reads or writes, with the values to try in it. (A row
#: whose ``queue`` or ``status`` is changed is no waiting task of this queue: no claim reads
#: it; ``expires_at`` of a waiting row is never read either.)
HOSTILE: dict[str, st.SearchStrategy[Value]] = {
    "id": _ANY,
    "name": _ANY,
    "payload": st.one_of(_ANY, _PAYLOADS),
    "options": st.one_of(_ANY, _OPTIONS),
    "attempts": _ANY,
    "run_at": _ANY,
    "lease_until": _ANY,
    "owner": _ANY,
    "crashes": _ANY,
    "cancel_requested": _ANY,
    "error": _ANY,
    "reason": _ANY,
    "result": _ANY,
    "created_at": _ANY,
    "updated_at": _ANY,
    "finished_at": _ANY,
    "progress": _ANY,
    "history": _ANY,
    "priority": _ANY,
    "slot": _ANY,
    "concurrency_key": _ANY,
}
#: The fields declared NOT NULL by the older table too (a NULL there is refused at write).
_NOT_NULL = {"queue", "name", "payload", "status", "attempts", "run_at", "crashes",
             "cancel_requested", "created_at", "updated_at", "priority"}  # fmt: skip
#: How a bad row may end: dead-lettered for a reason a worker gives at claim, or run.
ENDINGS = {
    (b"dead", b"malformed"),
    (b"dead", b"undecodable"),  # JSON that does not parse, or of the wrong shape
    (b"dead", b"unknown_task"),  # a readable name that is not registered
    (b"dead", b"expired"),  # an expires_at option in the past
    (b"succeeded", None),
    (b"failed", None),  # ran: its result could not be encoded (a NaN), or it timed out
}


@pytest.fixture(scope="module")
def poison_scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    path = tmp_path_factory.mktemp("poison") / "legacy.db"
    legacy_file(path)
    made = Scene(path, around=100)
    yield made
    made.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), field=st.sampled_from(sorted(HOSTILE)), keyed=st.booleans())
def test_no_hostile_value_in_any_field_stops_the_queue_or_charges_a_crash(
    poison_scene: Scene, data: st.DataObject, field: str, keyed: bool
) -> None:
    scene = poison_scene
    sql, args = data.draw(HOSTILE[field], label=field)
    scene.reset(keyed=keyed)
    try:
        bad = scene.write_bad(field, sql, args)
    except sqlite3.IntegrityError:  # NOT NULL (or NaN, stored as NULL) in such a field
        assert field in _NOT_NULL
        return
    scene.drain()  # the worker stays up: dispatch() never raises
    rows = scene.rows()
    row = rows.pop(bad)
    assert len(rows) == 2 * scene.around
    assert {(r[1], r[3]) for r in rows.values()} == {(b"succeeded", 0)}  # healthy: run, no crash
    status, reason = row[1], row[2]
    if status in (b"pending", b"scheduled", b"retrying"):  # waits for a time far off
        assert field in ("run_at", "options"), row
        assert row[6] > scene.clock.now() + 60, row
        scene.told(row)
        return
    scene.told(row)
    if status == b"succeeded" or status == b"failed":
        reason = None
    assert (status, reason) in ENDINGS, row
    if (status, reason) != (b"dead", b"malformed") and field == "crashes":
        return  # a crash count that was readable is kept as written
    assert row[3] == 0, row  # never charged a crash
    backend = scene.queue.backend
    assert backend is not None
    records = scene.queue._engine.run_on_home(backend.list(QUEUE, limit=1000))
    assert len(records) == 2 * scene.around + 1  # every row readable by every tool again


@pytest.mark.parametrize(
    ("field", "sql"),
    [
        ("name", "CAST(x'ff' AS TEXT)"),  # STRICT checks the type, not the encoding
        ("id", "CAST(x'c3' AS TEXT)"),
        ("options", "CAST(x'7bfe7d' AS TEXT)"),
        ("attempts", "1000000000"),  # allowed by the CHECK, but one claim more is not
    ],
)
def test_a_new_file_still_survives_what_its_checks_let_through(
    tmp_path: Path, field: str, sql: str
) -> None:
    path = tmp_path / "new.db"
    asyncio.run(_push(path, [Record("t", QUEUE, "echo", b'{"a":[],"k":{}}', NOW, NOW)]))
    conn = sqlite3.connect(path)  # made as dowork makes files now (STRICT, CHECKs)
    with conn:
        conn.execute("DELETE FROM dowork_tasks")
    conn.close()
    made = Scene(path, around=20)
    try:
        made.reset()
        bad = made.write_bad(field, sql)
        made.drain()
        row = made.check(bad, acceptable=False)
        assert (row[1], row[2]) == (b"dead", b"malformed")
    finally:
        made.close()


def test_a_finished_row_with_text_that_is_not_utf8_is_listed_escaped(tmp_path: Path) -> None:
    """Operators' reads (``list``, ``get``: ``dowork list``, ``inspect``, the dashboard) show
    such a row with its bytes escaped, and the other rows with it, instead of failing."""
    path = tmp_path / "u8.db"

    async def body() -> tuple[list[Record], list[Record]]:
        store = SQLiteBackend(path)
        try:
            await store.push(
                [Record(f"t{i}", QUEUE, "echo", b"{}", NOW, NOW + i) for i in range(2)]
            )
            claimed = await store.claim(ClaimRequest(QUEUE, NOW, 10, 30.0, "w"))
            outcomes = [Settlement(r.id, 1, Outcome.FAILED, NOW + 1, error="x") for r in claimed]
            assert await store.settle(outcomes) == []
            conn = sqlite3.connect(path)
            with conn:  # written by hand: text that is not UTF-8
                conn.execute(
                    "UPDATE dowork_tasks SET name = CAST(x'62ff' AS TEXT),"
                    " error = CAST(x'66fffe' AS TEXT) WHERE id = 't0'"
                )
            conn.close()
            return await store.list(QUEUE), await store.get(["t0", "t1"])
        finally:
            await store.close()

    listed, got = asyncio.run(body())
    assert sorted(r.id for r in listed) == ["t0", "t1"]
    bad = next(r for r in got if r.id == "t0")
    assert (bad.name, bad.error, bad.status) == ("b\\xff", "f\\xff\\xfe", "failed")
    assert next(r for r in got if r.id == "t1").name == "echo"
