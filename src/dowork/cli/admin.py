"""``dowork requeue`` and ``purge``: put tasks back in a store or a queue, delete tasks.

``requeue`` takes a dump file written by a forced stop (into a store by URL, or onto an app's
queue), or a queue's dead-lettered or failed tasks; ``purge`` deletes a queue's tasks, never
leased ones unless asked.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from .._load import LoadError, load_queues
from .._redact import printable
from ..admin import PURGEABLE, STATUSES
from ..errors import DoWorkError
from .common import BACKEND_ENV, backend_option, fail, open_store, run

__all__ = ["purge", "requeue"]


@click.command()
@click.argument("dump_file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--backend", metavar="URL", envvar=BACKEND_ENV,
              help=f"Store the tasks in this backend, by name (or ${BACKEND_ENV}).")  # fmt: skip
@click.option("--app", "app_target", metavar="MODULE:QUEUE", help="Or enqueue them on this queue.")
@click.option("-q", "--queue", "queue_name", help="Queue to put them in (default: their own).")
@click.option("--dead", is_flag=True, help="Re-queue the queue's dead-lettered tasks instead.")
@click.option("--failed", is_flag=True, help="Re-queue the queue's failed tasks instead.")
@click.option("--json", "as_json", is_flag=True)
def requeue(
    dump_file: str | None,
    backend: str | None,
    app_target: str | None,
    queue_name: str | None,
    dead: bool,
    failed: bool,
    as_json: bool,
) -> None:
    """Put tasks back: a dump file's, or a queue's dead-lettered or failed ones.

    Review a dump file first; delete a line to drop that task.
    """
    if dump_file is None:
        if not (dead or failed) or not backend or not queue_name:
            raise fail("give a dump file, or --dead/--failed with --backend and -q QUEUE")
        _requeue_finished(backend, queue_name, dead, failed, as_json)
        return
    if backend and app_target:
        source = click.get_current_context().get_parameter_source("backend")
        if source is not click.core.ParameterSource.ENVIRONMENT:
            raise fail("give one of --backend URL or --app MODULE:QUEUE, not both")
        backend = None  # --app, given on the command line, wins over $DOWORK_BACKEND
    lines, problems = _read_dump(dump_file)
    present: list[str] = []
    done = 0
    if backend:
        done = _requeue_into_store(backend, lines, queue_name, present)
    elif app_target:
        done = _requeue_into_app(app_target, lines, problems, present)
    else:
        raise fail("say where the tasks go: --backend URL or --app MODULE:QUEUE")
    _report({"requeued": done, "already_present": len(present), "skipped": problems}, as_json)


def _read_dump(path: str) -> tuple[list[Any], list[str]]:
    """The restorable lines of a dump file, and a message for every line left out."""
    from ..dump import DumpLine, NotADump, read_dump

    lines: list[DumpLine] = []
    problems: list[str] = []
    try:
        for item in read_dump(path):
            if isinstance(item, str):
                problems.append(item)
            elif not item.restorable:
                problems.append(f"{item.id} ({item.task}): not restorable: {item.why}")
            else:
                lines.append(item)
    except NotADump as exc:
        raise fail(str(exc), exc) from None
    return lines, problems


def _requeue_into_store(
    url: str, lines: list[Any], queue_name: str | None, present: list[str]
) -> int:
    """Store dump lines in the store at ``url`` (in ``queue_name``, or each in its own)."""
    from ..dump import requeue_into_backend

    store = open_store(url)

    async def push() -> int:
        try:
            return await requeue_into_backend(
                lines, store, queue_name, time.time(), present=present
            )
        finally:
            await store.close()

    return run(push())


def _requeue_into_app(
    target: str, lines: list[Any], problems: list[str], present: list[str]
) -> int:
    """Enqueue dump lines on the queue ``target`` names; an in-memory one runs them here."""
    from ..dump import requeue_into_queue
    from ..errors import DuplicateTask

    try:
        (queue,) = load_queues(target)[:1]
    except LoadError as exc:
        raise fail(str(exc), exc) from None
    durable = queue.backend is not None
    if not durable:
        queue.start()  # this process runs them (a durable queue's workers do)
    done = 0
    try:
        for line in lines:
            try:
                requeue_into_queue(line, queue)
                done += 1
            except DuplicateTask:
                present.append(line.id)
            except DoWorkError as exc:
                problems.append(f"{line.id} ({line.task}): {exc}")
    finally:
        queue.shutdown()
    return done


def _requeue_finished(backend: str, queue: str, dead: bool, failed: bool, as_json: bool) -> None:
    statuses = [s for s, on in (("dead", dead), ("failed", failed)) if on]
    store = open_store(backend, create=False)

    async def go() -> list[str]:
        from ..admin import requeue_finished

        try:
            return await requeue_finished(store, queue, statuses, time.time())
        finally:
            await store.close()

    done = run(go())
    _report({"requeued": len(done), "already_present": 0, "skipped": []}, as_json)


def _report(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    present = summary["already_present"]
    more = f"; skipped {present} already in the store (re-queued before?)" if present else ""
    click.echo(f"re-queued {summary['requeued']} task(s){more}")
    for problem in summary["skipped"]:
        click.echo(f"skipped {printable(problem)}", err=True)


@click.command()
@backend_option()
@click.option("-q", "--queue", "queue_name", required=True)
@click.option("-s", "--status", "statuses", multiple=True, type=click.Choice(STATUSES),
              help="Only these statuses (default: all but reserved and running).")  # fmt: skip
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True)
def purge(
    backend: str, queue_name: str, statuses: tuple[str, ...], yes: bool, as_json: bool
) -> None:
    """Delete a queue's tasks (never leased ones unless -s reserved or -s running is given)."""
    chosen = list(statuses) or list(PURGEABLE)
    if not yes:
        click.confirm(
            f"Delete the {'/'.join(chosen)} tasks of queue {queue_name!r}?", abort=True, err=True
        )
    store = open_store(backend, create=False)

    async def go() -> int:
        from ..admin import purge_queue

        try:
            return await purge_queue(store, queue_name, chosen)
        finally:
            await store.close()

    deleted = run(go())
    if as_json:
        click.echo(json.dumps({"deleted": deleted}))
    else:
        click.echo(f"deleted {deleted} task(s)")
