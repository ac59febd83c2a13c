"""What the dashboard's pages show, read from a backend and shaped for the templates.

Reads stay cheap: counts come from ``counts()``, lists are one ``list()`` page, and a search by
task name scans at most ``SCAN_LIMIT`` of the newest records. Payloads and results are shown
only when they are JSON; pickled bytes are never unpickled here.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..admin import STATUSES
from ..backends import Record, StoreAdmin
from ..backends._protocol import WorkerBeat
from ..durable import decode_progress
from ..task import UNFINISHED, Progress

__all__ = [
    "CHART_MINUTES",
    "PAGE_SIZE",
    "SCAN_LIMIT",
    "Attempt",
    "Chart",
    "Overview",
    "QueueRow",
    "TaskPage",
    "TaskView",
    "overview",
    "task_list",
    "task_view",
]

PAGE_SIZE = 50
#: Records a search by task name looks through, newest first, before it stops.
SCAN_LIMIT = 5000
#: Minutes the throughput chart covers.
CHART_MINUTES = 15
_FAILED = ("failed", "dead")


@dataclass(slots=True)
class Chart:
    """Finished attempts per minute over the last ``CHART_MINUTES``, as SVG bar geometry."""

    minutes: list[tuple[int, int, int]]  #: (minute, succeeded, failed or dead)
    width: int = 210
    height: int = 40

    @property
    def peak(self) -> int:
        """The tallest bar's count (at least 1, so an empty chart draws nothing)."""
        return max([1, *(ok + bad for _, ok, bad in self.minutes)])

    @property
    def bars(self) -> list[dict[str, float | str]]:
        """One stacked bar per minute: x, width, heights and a tooltip."""
        out: list[dict[str, float | str]] = []
        step = self.width / max(1, len(self.minutes))
        scale = (self.height - 2) / self.peak
        for i, (minute, ok, bad) in enumerate(self.minutes):
            ok_h, bad_h = ok * scale, bad * scale
            out.append(
                {
                    "x": round(i * step + 1, 1),
                    "w": round(max(1.0, step - 2), 1),
                    "ok_y": round(self.height - ok_h, 1),
                    "ok_h": round(ok_h, 1),
                    "bad_y": round(self.height - ok_h - bad_h, 1),
                    "bad_h": round(bad_h, 1),
                    "title": f"{clock_time(minute)}: {ok} succeeded, {bad} failed",
                }
            )
        return out

    @property
    def throughput(self) -> float:
        """Finished tasks per minute over the last five minutes (this one included)."""
        recent = self.minutes[-5:]
        return sum(ok + bad for _, ok, bad in recent) / max(1, len(recent))

    @property
    def failure_rate(self) -> float | None:
        """Share of finished tasks that failed or were dead-lettered, over the chart."""
        ok = sum(m[1] for m in self.minutes)
        bad = sum(m[2] for m in self.minutes)
        return None if ok + bad == 0 else bad / (ok + bad)


@dataclass(slots=True)
class QueueRow:
    """One queue on the overview."""

    name: str
    counts: dict[str, int]
    chart: Chart

    @property
    def total(self) -> int:
        """Tasks stored for the queue."""
        return sum(self.counts.values())


@dataclass(slots=True)
class Overview:
    """Everything on the overview page."""

    queues: list[QueueRow]
    workers: list[WorkerBeat]
    now: float


async def overview(store: StoreAdmin, now: float | None = None) -> Overview:
    """Counts by status, throughput and workers of every queue."""
    now = time.time() if now is None else now
    first = int(now // 60) * 60 - (CHART_MINUTES - 1) * 60
    rows = []
    for name in await store.queues():
        counts = await store.counts(name)
        stats = await store.stats(name, first)
        minutes = []
        for minute in range(first, first + CHART_MINUTES * 60, 60):
            by = stats.get(minute, {})
            minutes.append((minute, by.get("succeeded", 0), sum(by.get(s, 0) for s in _FAILED)))
        rows.append(QueueRow(name, counts, Chart(minutes)))
    return Overview(rows, await store.workers(now), now)


@dataclass(slots=True)
class TaskPage:
    """One page of a queue's task list."""

    queue: str
    status: str | None
    name: str
    records: list[Record]
    page: int
    has_next: bool
    total: int | None  #: tasks matching, when known without a scan
    scanned: int | None = None  #: records a name search looked through
    scan_cut: bool = False  #: the search stopped at ``SCAN_LIMIT``

    @property
    def pages(self) -> int | None:
        """Number of pages, when the total is known."""
        return None if self.total is None else max(1, -(-self.total // PAGE_SIZE))


async def task_list(
    store: StoreAdmin, queue: str, status: str | None, name: str, page: int
) -> TaskPage:
    """One page of ``queue``'s tasks, newest first; with ``name``, those whose name contains it.

    Without a name filter it is one ``list()`` call at an offset; with one, pages of the
    store are scanned, newest first, until the page is full or ``SCAN_LIMIT`` records were read.
    """
    statuses = [status] if status else None
    offset = (page - 1) * PAGE_SIZE
    if not name:
        records = await store.list(queue, statuses, limit=PAGE_SIZE + 1, offset=offset)
        counts = await store.counts(queue)
        total = counts.get(status, 0) if status else sum(counts.values())
        return TaskPage(
            queue, status, name, records[:PAGE_SIZE], page, len(records) > PAGE_SIZE, total
        )
    needle = name.casefold()
    matched: list[Record] = []
    scanned = 0
    while scanned < SCAN_LIMIT and len(matched) <= offset + PAGE_SIZE:
        batch = await store.list(queue, statuses, limit=500, offset=scanned)
        if not batch:
            break
        scanned += len(batch)
        matched.extend(r for r in batch if needle in r.name.casefold())
    cut = scanned >= SCAN_LIMIT
    return TaskPage(
        queue,
        status,
        name,
        matched[offset : offset + PAGE_SIZE],
        page,
        len(matched) > offset + PAGE_SIZE,
        None,
        scanned,
        cut,
    )


@dataclass(slots=True)
class Attempt:
    """One settled attempt from a record's history."""

    number: int
    started: float | None
    took: float | None
    outcome: str
    error: str | None = None
    traceback: str | None = None


@dataclass(slots=True)
class TaskView:
    """One task, decoded for its page."""

    record: Record
    arguments: str  #: pretty JSON, or a note saying why it is not shown
    result: str | None
    chain: dict[str, Any] | None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def progress(self) -> Progress | None:
        """The progress the task last reported, if any."""
        text = self.record.progress
        return None if text is None else decode_progress(text)

    @property
    def chain_args(self) -> str:
        """The args dict where a chained job stopped, as pretty JSON."""
        args = (self.chain or {}).get("args")
        return json.dumps(args, indent=2, ensure_ascii=False, default=repr)

    @property
    def requeuable(self) -> bool:
        """Whether the task finished unsuccessfully and can be sent back."""
        return self.record.status in ("failed", "cancelled", "dead")

    @property
    def cancellable(self) -> bool:
        """Whether the task waits (or runs) and can be cancelled."""
        return self.record.status in UNFINISHED


async def task_view(store: StoreAdmin, task_id: str) -> TaskView | None:
    """The task with this id, decoded; None if the store does not have it."""
    found = await store.get([task_id])
    if not found:
        return None
    record = found[0]
    arguments = _json_text(record.payload, "arguments")
    result = chain = None
    if record.result is not None:
        data = _json(record.result)
        if isinstance(data, dict) and isinstance(data.get("chain_log"), dict):
            chain = data["chain_log"]
        else:
            result = _json_text(record.result, "result")
    return TaskView(record, arguments, result, chain, _attempts(record.history))


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return _NOT_JSON


_NOT_JSON = object()


def _json_text(data: bytes, what: str) -> str:
    value = _json(data)
    if value is _NOT_JSON:
        return f"({len(data)} bytes of {what} not in JSON, e.g. pickled: not shown)"
    if what == "arguments" and isinstance(value, dict) and set(value) == {"a", "k"}:
        args, kwargs = value["a"], value["k"]
        return json.dumps({"args": args, "kwargs": kwargs}, indent=2, ensure_ascii=False)
    return json.dumps(value, indent=2, ensure_ascii=False)


def _attempts(history: str | None) -> list[Attempt]:
    out = []
    for line in (history or "").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        out.append(
            Attempt(
                number=int(entry.get("n", 0)),
                started=entry.get("start"),
                took=entry.get("took"),
                outcome=str(entry.get("outcome", "")),
                error=entry.get("error"),
                traceback=entry.get("traceback"),
            )
        )
    return out


async def scheduled(
    store: StoreAdmin, limit: int = 200
) -> tuple[list[dict[str, Any]], list[Record]]:
    """Recurring schedules announced by live workers, and delayed tasks waiting to run.

    Schedules are merged by name and trigger across workers (each worker runs them all and
    the store keeps one firing per due time). Delayed tasks are those ``scheduled``, soonest
    first, at most ``limit`` per queue.
    """
    now = time.time()
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for worker in await store.workers(now):
        for s in worker.schedules:
            key = (worker.queue, str(s.get("name")), str(s.get("trigger")))
            seen = merged.get(key)
            entry = {**s, "queue": worker.queue, "workers": 1}
            if seen is not None:
                entry["workers"] = seen["workers"] + 1
                nexts = [n for n in (seen.get("next_run"), s.get("next_run")) if n is not None]
                entry["next_run"] = min(nexts) if nexts else None
            merged[key] = entry
    delayed: list[Record] = []
    for queue in await store.queues():
        delayed.extend(await store.list(queue, ["scheduled"], limit=limit))
    delayed.sort(key=lambda r: r.run_at)
    return sorted(merged.values(), key=lambda e: (e["queue"], e["name"])), delayed


def clock_time(when: float | None) -> str:
    """A UTC time of day, e.g. ``14:03:07``."""
    if when is None:
        return ""
    return datetime.fromtimestamp(when, UTC).strftime("%H:%M:%S")


def full_time(when: float | None) -> str:
    """A UTC date and time, e.g. ``2026-11-23 14:03:07Z``."""
    if when is None:
        return ""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def ago(when: float | None, now: float | None = None) -> str:
    """How long ago (or in how long) ``when`` is, e.g. ``3 s ago``, ``in 2 min``."""
    if when is None:
        return ""
    delta = (time.time() if now is None else now) - when
    span = abs(delta)
    if span < 1:
        text = "now"
        return text
    if span < 60:
        text = f"{span:.0f} s"
    elif span < 3600:
        text = f"{span / 60:.0f} min"
    elif span < 86400:
        text = f"{span / 3600:.1f} h"
    else:
        text = f"{span / 86400:.1f} d"
    return f"{text} ago" if delta > 0 else f"in {text}"


def duration(seconds: float | None) -> str:
    """A duration for people: ``12 ms``, ``3.4 s``, ``2 min``."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.0f} min"


STATUS_ORDER = STATUSES
