"""``dowork status``, ``list`` and ``inspect``: read a store's queues and tasks, change nothing.

They open the store without creating it (a mistyped path is an error, not a new empty
database), print for people or JSON with ``--json``, and escape the control characters of
text read from the store.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from .._redact import printable, redact_url
from ..admin import STATUSES
from ..backends import Record
from ..durable import decode_progress
from .common import BACKEND_ENV, backend_option, fail, open_store, run

__all__ = ["inspect", "list_tasks", "status"]


@click.command()
@backend_option(f"The store to look at (or ${BACKEND_ENV}).")
@click.option("-q", "--queue", "queue_names", multiple=True, help="Only these queues.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(backend: str, queue_names: tuple[str, ...], as_json: bool) -> None:
    """Show each queue's tasks by status."""
    store = open_store(backend, create=False)

    async def read() -> dict[str, dict[str, int]]:
        try:
            names = list(queue_names) or await store.queues()
            return {name: await store.counts(name) for name in names}
        finally:
            await store.close()

    counts = run(read())
    if as_json:
        click.echo(json.dumps(counts, indent=2, sort_keys=True))
        return
    if not counts:
        click.echo("no queues")
        return
    header = f"{'queue':<20}" + "".join(f"{s:>11}" for s in STATUSES)
    click.echo(header)
    for name, by_status in sorted(counts.items()):
        row = "".join(f"{by_status.get(s, 0):>11}" for s in STATUSES)
        click.echo(f"{printable(name):<20}{row}")


@click.command(name="list")
@backend_option()
@click.option("-q", "--queue", "queue_name", required=True)
@click.option("-s", "--status", "statuses", multiple=True, type=click.Choice(STATUSES))
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0)
@click.option("--json", "as_json", is_flag=True)
def list_tasks(
    backend: str,
    queue_name: str,
    statuses: tuple[str, ...],
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """List a queue's tasks, newest first (e.g. scheduled or dead-lettered ones)."""
    store = open_store(backend, create=False)

    async def read() -> list[Record]:
        try:
            return await store.list(queue_name, statuses or None, limit=limit, offset=offset)
        finally:
            await store.close()

    records = run(read())
    if as_json:
        click.echo(json.dumps([_record_json(r) for r in records], indent=2))
        return
    for r in records:
        when = _time(r.run_at) if r.status in ("scheduled", "retrying") else _time(r.created_at)
        error = f"  {printable(r.error)}" if r.error else ""
        click.echo(
            f"{printable(r.id)}  {printable(r.status):<10} {printable(r.name):<30} "
            f"attempts={r.attempts} {when}{error}"
        )
    if not records:
        click.echo("no tasks")


@click.command()
@click.argument("task_id")
@backend_option()
@click.option("--json", "as_json", is_flag=True)
def inspect(task_id: str, backend: str, as_json: bool) -> None:
    """Show one task by id."""
    store = open_store(backend, create=False)

    async def read() -> list[Record]:
        try:
            return await store.get([task_id])
        finally:
            await store.close()

    records = run(read())
    if not records:
        raise fail(f"no task {task_id!r} in {redact_url(backend)}")
    data = _record_json(records[0])
    if as_json:
        click.echo(json.dumps(data, indent=2))  # ASCII only: control characters escaped
        return
    for key, value in data.items():
        click.echo(f"{key:>12}: {printable(value)}")


def _record_json(record: Record) -> dict[str, Any]:
    """A stored task as JSON: its arguments and result decoded when they are JSON."""
    payload: Any
    try:
        payload = json.loads(record.payload)
    except ValueError:
        payload = repr(record.payload[:200])
    result: Any = None
    if record.result is not None:
        try:
            result = json.loads(record.result)
        except ValueError:
            result = repr(record.result[:200])
    return {
        "id": record.id,
        "queue": record.queue,
        "task": record.name,
        "status": record.status,
        "attempts": record.attempts,
        "crashes": record.crashes,
        "arguments": payload,
        "run_at": _time(record.run_at),
        "created_at": _time(record.created_at),
        "finished_at": _time(record.finished_at),
        "error": record.error,
        "reason": record.reason,
        "result": result,
        "progress": _progress_json(record.progress),
        "priority": record.priority,
        "concurrency_key": record.concurrency_key,
        "rate_slot": _time(record.slot),
    }


def _progress_json(text: str | None) -> dict[str, Any] | None:
    progress = None if text is None else decode_progress(text)
    if progress is None:
        return None
    return {"value": progress.value, "message": progress.message, "at": progress.at.isoformat()}


def _time(value: float | None) -> str | None:
    return None if value is None else datetime.fromtimestamp(value, UTC).isoformat()
