"""A record's history on Redis: a worker's attempt line is kept short, so the task hash stays a
listpack (hash-max-listpack-value is 64 bytes, the JSON line about 90), and every line reads
back as it was sent, those stored by earlier versions (JSON) included.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import redis
from hypothesis import given
from hypothesis import strategies as st

from dowork.backends import ClaimRequest, Outcome, RedisBackend, Settlement
from dowork.backends._protocol import attempt_line
from dowork.backends.redis.history import history_arg
from dowork.backends.redis.records import decode_record, show_record
from tests.backends.test_contract import LEASE, NOW, rec
from tests.redis_server import RedisServer


def worker_line(token: int, now: float, took: float, outcome: Outcome) -> str:
    """The line a worker sends with an attempt that did not raise (durable/flush.py)."""
    return f'{{"n":{token},"start":{now - took!r},"took":{took!r},"outcome":"{outcome}"}}'


def kept(history: bytes | None, attempt: str) -> bytes:
    """The history settle.lua stores: the argument, less its "=", and a newline."""
    return (history or b"") + history_arg(attempt)[1:] + b"\n"


def shown(history: bytes) -> str | None:
    """The history a record read from a task hash holding it shows."""
    h = {
        b"id": b"t", b"queue": b"q", b"name": b"job", b"payload": b"{}", b"run_at": b"1.0",
        b"created_at": b"1.0", b"status": b"succeeded", b"seq": b"0" * 16, b"history": history,
    }  # fmt: skip
    assert decode_record(h).history == show_record(h).history
    return decode_record(h).history


_floats = st.floats(allow_nan=True, allow_infinity=True)


@given(st.integers(0, 10**20), _floats, _floats, st.sampled_from(list(Outcome)), st.text(), _floats)
def test_a_workers_lines_read_back_as_sent(
    token: int, now: float, took: float, outcome: Outcome, other: str, x: float
) -> None:
    line = worker_line(token, now, took, outcome)
    before = '{"n":0,"error":"E","traceback":"T\\n"}\n' + worker_line(1, x, x, outcome) + "\n"
    stored = kept(kept(before.encode(), line), other.replace("\n", " "))
    assert shown(stored) == before + line + "\n" + other.replace("\n", " ") + "\n"


@given(st.text().map(lambda s: s.replace("\n", " ")))
def test_any_other_line_reads_back_as_sent(line: str) -> None:
    for text in (line, "@" + line, "@@" + line, "@1 2.5 0.5 succeeded", line + "\n@1 2 3 x"):
        text = text.replace("\n", " ")
        assert shown(kept(None, text)) == text + "\n"


def test_a_settled_task_hash_stays_a_listpack(redis_server: RedisServer) -> None:
    admin: Any = redis.Redis.from_url(redis_server.url)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    now, took = 1_765_101_234.5678902, 0.0007341234567890123
    first = worker_line(1, now, took, Outcome.SUCCEEDED)

    async def main() -> None:
        b = RedisBackend(redis_server.url, prefix=prefix)
        task = rec(run_at=now, created_at=now)
        await b.push([task])
        (r,) = await b.claim(ClaimRequest("q", now, 1, LEASE, "w"))
        assert await b.settle([Settlement(r.id, 1, Outcome.SUCCEEDED, now, attempt=first)]) == []
        key = f"{prefix}:task:{r.id}"
        assert admin.object("encoding", key) == b"listpack"
        assert admin.hstrlen(key, "history") < 64
        (done,) = await b.get([r.id])
        assert done.history == first + "\n"
        await b.close()

    asyncio.run(main())
    admin.close()


def test_a_history_stored_by_the_previous_version_reads_on(redis_server: RedisServer) -> None:
    """Lines stored as JSON (every line before) stay as they are; later ones join them."""
    admin: Any = redis.Redis.from_url(redis_server.url)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    old = worker_line(1, NOW + 1, 0.25, Outcome.RETRY) + "\n"  # (stored whole, as JSON)
    new = worker_line(2, NOW + 3, 0.5, Outcome.SUCCEEDED)

    async def main() -> None:
        b = RedisBackend(redis_server.url, prefix=prefix)
        await b.push([rec()])
        (r,) = await b.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
        retry = Settlement(r.id, 1, Outcome.RETRY, NOW + 1, run_at=NOW + 1, error="E")
        assert await b.settle([retry]) == []
        admin.hset(f"{prefix}:task:{r.id}", "history", old)
        (r,) = await b.claim(ClaimRequest("q", NOW + 2, 1, LEASE, "w"))
        assert r.history == old
        done = Settlement(r.id, 2, Outcome.SUCCEEDED, NOW + 3, attempt=new)
        assert await b.settle([done]) == []
        (got,) = await b.get([r.id])
        assert got.history == old + new + "\n"
        await b.close()

    asyncio.run(main())
    admin.close()


def took_arg(token: int, now: float, took: float, outcome: Outcome) -> bytes:
    """The ``settle.lua`` history argument ``RedisStore`` sends for a settlement's ``took``."""
    store = RedisBackend("redis://127.0.0.1:1/0", prefix="p")  # (never connects)
    args = store._settle_args(Settlement("t", token, outcome, now, took=took), {})
    line = args[6]
    assert isinstance(line, bytes)
    return line


@given(
    st.integers(0, 10**12),
    st.floats(-1e12, 1e12),
    st.integers(-(10**15), 10**15),
    st.sampled_from([o for o in Outcome if o is not Outcome.STARTED]),  # (a mark has none)
)
def test_a_duration_in_whole_nanoseconds_is_kept_in_integers_and_reads_back(
    token: int, now: float, ns: int, outcome: Outcome
) -> None:
    """A worker's duration (whole nanoseconds) is kept in TOOK_LINE's integer form: it reads
    back as the line ``attempt_line`` gives, the duration exactly and the start to the
    microsecond; a time's line stays under the 64 bytes of a listpack value."""
    took = ns / 1e9
    arg = took_arg(token, now, took, outcome)
    assert arg.endswith(b"n " + str(outcome).encode())  # (the integer form)
    if token < 10**6 and 0 <= now < 1e11 and 0 <= ns < 10**13:
        assert len(arg) < 64
    line = json.loads(shown(arg[1:] + b"\n") or "")
    want = json.loads(attempt_line(Settlement("t", token, outcome, now, took=took)) or "")
    assert abs(line.pop("start") - want.pop("start")) <= 1e-6 + abs(now) * 1e-15
    assert line == want


@given(
    st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True)
)
def test_any_other_duration_is_kept_as_its_line(now: float, took: float) -> None:
    """A duration no integer form keeps exactly (not whole nanoseconds, ``inf``, ``nan``, or
    so large that no integer holds it) goes as ``attempt_line``'s own line, read back as sent."""
    arg = took_arg(1, now, took, Outcome.SUCCEEDED)
    line = attempt_line(Settlement("t", 1, Outcome.SUCCEEDED, now, took=took))
    assert line is not None
    if not arg.endswith(b"n succeeded"):
        assert shown(arg[1:] + b"\n") == line + "\n"
