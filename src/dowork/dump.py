"""Dump files: unfinished tasks written out on a forced stop, to be reviewed and re-queued.

The format is JSON Lines, one task per line, so a person can read it, delete lines with
``grep -v`` or an editor, and feed the rest to ``dowork requeue FILE``. Each line::

    {"v": 1, "queue": "email", "id": "…", "task": "app.mail:send", "args": […],
     "kwargs": {…}, "options": {…}, "status": "pending", "attempts": 0,
     "not_before": 1700000000.0 or null, "restorable": true, "why": null}

``restorable`` is false for a task that cannot be run again from its line: a lambda or a
nested function (no name another process can find) or arguments JSON cannot hold; ``why``
says which. Such tasks are listed so nothing disappears silently, and skipped on requeue.
Re-queueing keeps each task's id, so re-queueing the same file twice stores nothing twice: the
ids already in the store are skipped and counted.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .backends._protocol import Record
from .backends.store import Backend
from .codec import JSONCodec
from .errors import DuplicateTask, NotSerializable
from .registry import Registry, default_name
from .task import Task

T = TypeVar("T")


class RequeueTarget(Protocol):
    """The queue a dumped line goes back to (``dowork.Queue`` is one; the dump sits below it)."""

    @property
    def name(self) -> str:
        """The queue's name."""

    @property
    def registry(self) -> Registry:
        """The task functions declared on the queue."""

    @property
    def backend(self) -> Backend | None:
        """The store of a durable queue, else None."""

    def enqueue(self, task: Task[T], *, block: bool = ..., timeout: float | None = ...) -> Task[T]:
        """Enqueue a task."""


__all__ = [
    "DumpLine",
    "NotADump",
    "read_dump",
    "requeue_into_backend",
    "requeue_into_queue",
    "write_dump",
]

VERSION = 1
#: Bytes looked at to tell a dump file (JSON Lines text) from something else.
_SNIFF = 8192


class NotADump(ValueError):
    """The file is not a dump file at all (binary, or no line of it is a dump line)."""


@dataclass(frozen=True, slots=True)
class DumpLine:
    """One task of a dump file."""

    queue: str
    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    status: str
    attempts: int
    not_before: float | None
    restorable: bool
    why: str | None = None

    def to_json(self) -> str:
        """One line of JSON (no newline)."""
        data = {
            "v": VERSION,
            "queue": self.queue,
            "id": self.id,
            "task": self.task,
            "args": self.args,
            "kwargs": self.kwargs,
            "options": self.options,
            "status": self.status,
            "attempts": self.attempts,
            "not_before": self.not_before,
            "restorable": self.restorable,
            "why": self.why,
        }
        return json.dumps(data, ensure_ascii=False, default=repr)


def line_of(task: Task[Any], queue: str) -> DumpLine:
    """Describe an unfinished task for a dump file (never raises)."""
    fn = task.fn
    name = getattr(fn, "name", None) if hasattr(fn, "explicit_name") else None
    if not isinstance(name, str):
        name = default_name(getattr(fn, "func", fn))
    why = None
    if "<lambda>" in name or "<locals>" in name:
        why = "a lambda or nested function has no name another process can find"
    args: list[Any] = list(task.args)
    kwargs: dict[str, Any] = dict(task.kwargs)
    try:
        JSONCodec().encode({"a": args, "k": kwargs})
    except NotSerializable as exc:
        why = why or f"arguments JSON cannot hold: {exc}"
        args = [repr(a) for a in args]
        kwargs = {k: repr(v) for k, v in kwargs.items()}
    own = task._overrides
    stored = {} if own is None else own.storable()
    options = {k: v for k, v in stored.items() if not k.startswith("expires")}
    if task._expires_at is not None:  # fixed when it was enqueued
        options["expires_at"] = task._expires_at
    if task._within is not None:
        options["within"] = task._within
    return DumpLine(
        queue=queue,
        id=task.id,
        task=name,
        args=args,
        kwargs=kwargs,
        options=options,
        status=task.status.value,
        attempts=task.attempts,
        not_before=task._next_attempt or task._not_before,
        restorable=why is None,
        why=why,
    )


def write_dump(path: str | os.PathLike[str], lines: Iterable[DumpLine]) -> int:
    """Write (or extend) a dump file, one line per task; return how many were written."""
    target = Path(path)
    text = "".join(line.to_json() + "\n" for line in lines)
    if not text:
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    existing = target.read_text() if target.exists() else ""
    import tempfile  # here: only a forced stop writes a dump (and it brings shutil, lzma, ...)

    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".dowork-dump-")
    with os.fdopen(fd, "w") as f:  # write aside, then rename: never a half-written dump
        f.write(existing + text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    return text.count("\n")


def read_dump(path: str | os.PathLike[str]) -> Iterator[DumpLine | str]:
    """Yield each line of a dump file as a ``DumpLine``, or an error message for a bad line.

    Raises:
        NotADump: the file is binary (a NUL byte, or not UTF-8, in its first 8 KiB), or its
            first line with content is not a JSON object: the wrong file, not a damaged dump.
    """
    with open(path, "rb") as f:
        head = f.read(_SNIFF)
        if b"\0" in head:
            raise NotADump(f"{os.fspath(path)} is a binary file, not a dump file (JSON Lines)")
        f.seek(0)
        seen = False
        for number, blob in enumerate(f, 1):
            try:
                raw = blob.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                if not seen:
                    raise NotADump(
                        f"{os.fspath(path)} is not a dump file: line {number} is not UTF-8 text"
                    ) from exc
                yield f"line {number}: not UTF-8 text ({exc.reason})"
                continue
            if not raw or raw.startswith("#"):
                continue
            if not seen:
                seen = True
                if not raw.startswith("{"):
                    raise NotADump(
                        f"{os.fspath(path)} is not a dump file: line {number} is not a JSON "
                        "object (a dump has one task per line, as dowork worker writes them)"
                    )
            try:
                yield _parse_line(raw)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                yield f"line {number}: {exc}"


def _parse_line(raw: str) -> DumpLine:
    """One line of a dump file as a ``DumpLine`` (ValueError, KeyError, TypeError: it is bad)."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise TypeError("not a JSON object")
    if data.get("v") != VERSION:
        raise ValueError(f"unknown dump version {data.get('v')!r}")
    return DumpLine(
        queue=str(data["queue"]),
        id=str(data["id"]),
        task=str(data["task"]),
        args=list(data.get("args") or []),
        kwargs=dict(data.get("kwargs") or {}),
        options=dict(data.get("options") or {}),
        status=str(data.get("status", "pending")),
        attempts=int(data.get("attempts", 0)),
        not_before=data.get("not_before"),
        restorable=bool(data.get("restorable", True)),
        why=data.get("why"),
    )


def requeue_into_queue(line: DumpLine, queue: RequeueTarget) -> Task[Any]:
    """Enqueue a dumped task on ``queue`` through its registry (the name must be declared).

    On a durable queue the task keeps its id, so a line re-queued twice is stored once.

    Raises:
        NotRegistered: no task of that name is declared on the queue.
        DuplicateTask: (durable queues) a task with the line's id is already stored.
    """
    from .errors import NotRegistered

    entry = queue.registry.get(line.task)
    if entry is None:
        raise NotRegistered(f"{line.task} is not declared on queue {queue.name!r}")
    task = entry.task(*line.args, **line.kwargs)
    if queue.backend is not None and line.id:
        task._id = line.id
    options = dict(line.options)
    expires_at = options.pop("expires_at", None)
    if expires_at is not None:
        options["expires"] = datetime.fromtimestamp(float(expires_at), UTC)
    if options:
        task.configure(**options)
    if line.not_before is not None and line.not_before > time.time():
        task.configure(not_before=line.not_before)
    return queue.enqueue(task)


async def requeue_into_backend(
    lines: Iterable[DumpLine],
    backend: Backend,
    queue: str | None,
    now: float,
    *,
    present: list[str] | None = None,
) -> int:
    """Store dumped tasks straight into a backend by name (no code needed); return the count.

    Each keeps its id: ids already in the store (the file was re-queued before) are skipped,
    never stored twice, and appended to ``present`` when given.
    """
    codec = JSONCodec()
    records = []
    for line in lines:
        run_at = max(now, line.not_before or now)
        records.append(
            Record(
                id=line.id,
                queue=queue or line.queue,
                name=line.task,
                payload=codec.encode({"a": line.args, "k": line.kwargs}),
                run_at=run_at,
                created_at=now,
                status="pending" if run_at <= now else "scheduled",
                options=json.dumps(line.options) if line.options else None,
            )
        )
    if not records:
        return 0
    taken = {r.id for r in await backend.get([r.id for r in records])}
    fresh = [r for r in records if r.id not in taken]
    stored = len(fresh)
    try:
        if fresh:
            await backend.push(fresh)
    except DuplicateTask:  # stored meanwhile, or a copy get() cannot see: one at a time
        stored = 0
        for record in fresh:
            try:
                await backend.push([record])
                stored += 1
            except DuplicateTask:
                taken.add(record.id)
    if present is not None:
        present.extend(r.id for r in records if r.id in taken)
    return stored
