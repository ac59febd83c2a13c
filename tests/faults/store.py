"""Look inside a store after a crash: every record whole, no orphan index entries, atomic batches.

Reads the store directly (``sqlite3``, a plain Redis client), not through the backend under
test, so a backend bug cannot hide itself.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import redis
from redis.typing import EncodableT, FieldT

from dowork.backends.redis.scripts import SCRIPTS
from tests.redis_replies import raw_hash, raw_members


@dataclass
class Audit:
    """What an audit found: the harness ids stored, and every inconsistency."""

    ids: set[int] = field(default_factory=set)
    orphans: int = 0  #: index entries without a record, records missing from an index, bad counts
    broken: int = 0  #: records that are not whole (missing fields, payload that does not decode)
    torn_batches: int = 0  #: map() batches stored in part
    integrity: str = "ok"  #: SQLite's integrity_check ("ok" for Redis)
    problems: list[str] = field(default_factory=list)


def _harness_id(payload: bytes) -> int | None:
    try:
        data = json.loads(payload)
        n = data["a"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return n if isinstance(n, int) and data["k"] == {} else None


def audit(url: str, plan: Sequence[tuple[int, int, int]] = (), queue: str = "faults") -> Audit:
    """Audit the store at ``url``; ``plan`` lists ``(start, count, batch)`` submit rounds."""
    found = _audit_sqlite(url, queue) if url.startswith("sqlite") else _audit_redis(url, queue)
    for start, count, batch in plan:
        if batch <= 1:
            continue
        for first in range(start, start + count, batch):
            want = set(range(first, min(first + batch, start + count)))
            have = want & found.ids
            if have and have != want:
                found.torn_batches += 1
                found.problems.append(f"batch at {first}: {len(have)} of {len(want)} stored")
    return found


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///path`` URL."""
    return url.split("sqlite:///", 1)[1]


def _audit_sqlite(url: str, queue: str) -> Audit:
    found = Audit()
    conn = sqlite3.connect(sqlite_path(url), timeout=30)
    try:
        found.integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        rows = conn.execute(
            "SELECT name, payload, status FROM dowork_tasks WHERE queue = ?", (queue,)
        ).fetchall()
    finally:
        conn.close()
    for name, payload, status in rows:
        n = _harness_id(bytes(payload))
        if name != "work" or n is None or not status:
            found.broken += 1
            found.problems.append(f"broken row {name!r} {payload!r:.60} {status!r}")
            continue
        found.ids.add(n)
    return found


def _audit_redis(url: str, queue: str) -> Audit:
    parts = urlsplit(url)
    prefix = dict(parse_qsl(parts.query)).get("prefix", "dowork")
    client = redis.Redis.from_url(parts._replace(query="").geturl())
    found = Audit()
    p = f"{prefix}:"
    try:
        # Tasks submitted one by one wait in the queue's inbox until a reader drains it, as
        # every reader of the backend does first (see inbox.lua in dowork/backends/redis/lua).
        while client.eval(SCRIPTS["drain"], 0, p, queue):
            pass
        keys = list(client.scan_iter(match=f"{p}task:*", count=1000))
        members: dict[bytes, bytes] = {}  # listing member -> status
        for key in keys:
            rec = raw_hash(client.hgetall(key))
            if rec.get(b"queue", b"").decode() != queue:
                continue
            need = (b"name", b"payload", b"status", b"seq", b"run_at", b"created_at")
            n = _harness_id(rec.get(b"payload", b""))
            if any(f not in rec for f in need) or rec[b"name"] != b"work" or n is None:
                found.broken += 1
                found.problems.append(f"broken hash {key!r}: {sorted(rec)}")
                continue
            found.ids.add(n)
            task_id = key[len(f"{p}task:") :]  # (the key's: an id field is an old version's)
            member = rec[b"seq"] + b":" + task_id  # seq: 16 hex digits
            members[member] = rec[b"status"]
        q = f"{p}q:{queue}:"
        statuses = {s for s in members.values() if s != b"running"}
        listed = {
            s: set(raw_members(client.zrange(f"{q}created.{s.decode()}", 0, -1))) for s in statuses
        }
        created = set().union(*listed.values()) if listed else set()
        created_want = {m for m, s in members.items() if s != b"running"}
        waiting = set(raw_members(client.zrange(f"{q}waiting", 0, -1)))
        running = {
            m for m in raw_members(client.zrange(f"{q}running", 0, -1)) if not m.startswith(b"~")
        }
        waiting_want = {
            m for m, s in members.items() if s in (b"pending", b"scheduled", b"retrying")
        }
        running_want = {m.split(b":", 1)[1] for m, s in members.items() if s == b"running"}
        for name, have, want in (
            ("created", created, created_want),
            ("waiting", waiting, waiting_want),
            ("running", running, running_want),
        ):
            if have != want:
                found.orphans += len(have ^ want)
                found.problems.append(
                    f"{name}: {len(have - want)} extra, {len(want - have)} missing"
                )
        stored_counts = {
            k.decode(): int(v) for k, v in raw_hash(client.hgetall(f"{q}counts")).items() if int(v)
        }
        real: dict[str, int] = {}
        for status in members.values():
            real[status.decode()] = real.get(status.decode(), 0) + 1
        if stored_counts != real:
            found.orphans += 1
            found.problems.append(f"counts {stored_counts} != {real}")
    finally:
        client.close()
    return found


#: Bad payloads written straight into a store, and the reason each must be dead-lettered with.
BAD: list[tuple[str, bytes, str | None, str]] = [
    ("work", b"\xff\xfe\x00 random bytes", None, "undecodable"),
    ("work", b'{"a": [1, 0.0], "k"', None, "undecodable"),  # truncated JSON
    ("work", b'{"a": "not a list", "k": {}}', None, "undecodable"),  # wrong schema
    ("work", b'{"args": [1]}', None, "undecodable"),  # wrong schema: no "a"/"k"
    ("work", b'{"a": [1, 0.0], "k": {}}', "{not json", "undecodable"),  # garbage options
    ("no.such:task", b'{"a": [], "k": {}}', None, "unknown_task"),  # rolling deploy
    ("os:system", b'{"a": ["echo pwned"], "k": {}}', None, "unknown_task"),  # never imported
]


def inject_bad(url: str, each: int, queue: str = "faults") -> dict[str, str]:
    """Write ``each`` copies of every ``BAD`` record straight into the store (no backend code).

    Returns task id -> the dead-letter reason expected.
    """
    import time
    import uuid

    now = time.time()
    rows = []
    for name, payload, options, why in BAD:
        for _ in range(each):
            rows.append((f"bad-{uuid.uuid4().hex[:12]}", name, payload, options, why))
    if url.startswith("sqlite"):
        import asyncio

        from dowork.backends import SQLiteBackend

        async def create() -> None:  # the schema, through the backend, before any row
            backend = SQLiteBackend(sqlite_path(url))
            await backend.open()
            await backend.close()

        asyncio.run(create())
        conn = sqlite3.connect(sqlite_path(url), timeout=30)
        with conn:
            conn.executemany(
                "INSERT INTO dowork_tasks (id, queue, name, payload, options, status, attempts,"
                " run_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
                [(i, queue, n, p, o, now, now, now) for i, n, p, o, _ in rows],
            )
        conn.close()
    else:
        parts = urlsplit(url)
        p = dict(parse_qsl(parts.query)).get("prefix", "dowork") + ":"
        client = redis.Redis.from_url(parts._replace(query="").geturl())
        try:
            for seq, (i, n, payload, options, _) in enumerate(rows, start=10**9):
                fields: dict[FieldT, EncodableT] = {
                    "id": i, "queue": queue, "name": n, "payload": payload,
                    "status": "pending", "attempts": 0, "run_at": repr(now),
                    "created_at": repr(now), "updated_at": repr(now), "seq": b"%016x" % seq,
                }  # fmt: skip
                if options is not None:
                    fields["options"] = options
                member = b"%016x:" % seq + i.encode()
                client.hset(f"{p}task:{i}", mapping=fields)
                client.zadd(f"{p}q:{queue}:waiting", {member: now})
                client.zadd(f"{p}q:{queue}:created", {member: now})
                client.zadd(f"{p}q:{queue}:created.pending", {member: now})
                client.hincrby(f"{p}q:{queue}:counts", "pending", 1)
                client.sadd(f"{p}queues", queue)
        finally:
            client.close()
    return {i: why for i, _, _, _, why in rows}


def reasons(url: str, ids: list[str]) -> dict[str, str | None]:
    """The dead-letter reason of each record (None when it has none)."""
    import asyncio

    from dowork.backends import open_backend

    async def read() -> dict[str, str | None]:
        backend = open_backend(url)
        try:
            return {r.id: r.reason for r in await backend.get(ids)}
        finally:
            await backend.close()

    return asyncio.run(read())
