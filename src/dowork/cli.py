"""The ``dowork`` command: run workers, look at queues, re-queue and purge tasks, run the demo.

Every command prints for people by default and JSON with ``--json``; a mistake (a module that
does not import, a name that is not a queue, an unreachable backend) is one line saying what
to fix and exit status 1, with the traceback only under ``--verbose``. Messages never show a
password, and text read from a store is printed with its control characters escaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from ._durable import decode_progress
from ._load import LoadError, load_queues
from ._redact import printable, redact_text, redact_url
from .admin import PURGEABLE, STATUSES
from .backends import Backend, Record, SQLiteBackend, open_backend
from .errors import DoWorkError, EvictionPolicyError
from .queue import Queue

__all__ = ["main"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("dowork")


#: The environment variable ``--backend`` is read from when it is not given (every command),
#: and through which ``--processes``/``--reload`` hand the URL to the processes they start, so
#: a password never shows on a command line (``ps``).
BACKEND_ENV = "DOWORK_BACKEND"


class CliError(click.ClickException):
    """A one-line error for the user (exit status 1)."""


def _fail(message: str, exc: BaseException | None = None) -> CliError:
    """The error to raise for ``message``: one line, no password, no control characters.

    Under ``dowork -v`` the traceback of ``exc`` is printed first (passwords hidden there too).
    """
    ctx = click.get_current_context(silent=True)
    verbose = bool(ctx and ctx.find_root().params.get("verbose"))
    if verbose and exc is not None:
        import traceback

        text = "".join(traceback.format_exception(exc))
        click.echo(printable(redact_text(text), lines=True), err=True, nl=False)
    return CliError(printable(redact_text(message)))


class _Main(click.Group):
    """The ``dowork`` group: an unexpected exception is one line too, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; turn any error that is not click's own into a ``CliError``."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise
        except Exception as exc:
            raise _fail(f"{type(exc).__name__}: {exc}", exc) from None


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except DoWorkError as exc:
        raise _fail(str(exc), exc) from None
    except (OSError, ValueError, ImportError) as exc:
        raise _fail(f"{type(exc).__name__}: {exc}", exc) from None


def _backend(url: str, *, create: bool = True) -> Backend:
    """Open the store at ``url``; ``create=False`` for commands that only look at it."""
    try:
        return open_backend(url, create=create)
    except (ValueError, ImportError) as exc:
        raise _fail(str(exc), exc) from None


class _Fields(logging.Formatter):
    """Log lines with dowork's task fields appended when a record carries them."""

    FIELDS = ("queue", "task_name", "task_id", "attempt", "delay", "duration", "outcome")

    def format(self, record: logging.LogRecord) -> str:
        """Format the message, then the task fields; hide passwords, escape control characters.

        (Task errors and names come from the store: they must not drive the terminal.)
        """
        text = super().format(record)
        extra = [f"{k}={getattr(record, k)}" for k in self.FIELDS if hasattr(record, k)]
        text = f"{text} [{' '.join(extra)}]" if extra else text
        return printable(redact_text(text), lines=True)


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Fields("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("asyncio").setLevel(logging.WARNING)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logs and full tracebacks.")
@click.version_option(package_name="dowork")
def main(verbose: bool) -> None:
    """dowork: run Python functions in the background, in this process or on workers."""


# -- worker --------------------------------------------------------------------------------


@main.command()
@click.argument("target")
@click.option("--backend", metavar="URL", envvar=BACKEND_ENV,
              help=f"Use this backend instead of the queue's own (or ${BACKEND_ENV}).")  # fmt: skip
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Attempts at once.")
@click.option("-q", "--queue", "queue_names", multiple=True, help="Only these queues.")
@click.option("--metrics-port", type=click.IntRange(min=0), default=0, show_default=True,
              help="Port of the /metrics server (0: a free one).")  # fmt: skip
@click.option("--metrics-host", default="127.0.0.1", show_default=True)
@click.option("--no-metrics", is_flag=True, help="Do not serve metrics.")
@click.option("-p", "--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Start and supervise this many worker processes.")  # fmt: skip
@click.option("--reload", is_flag=True, help="Restart when the code changes (development).")
@click.option("--grace", type=float, default=30.0, show_default=True,
              help="Seconds a warm shutdown may take before stopping at once.")  # fmt: skip
@click.option("--dump-file", default="dowork-dump.jsonl", show_default=True,
              help="Where a forced stop writes unfinished in-memory tasks "
              "(durable queues hand theirs back to the store).")  # fmt: skip
@click.option("--allow-eviction", is_flag=True,
              help="Work even on a Redis that may evict tasks (allkeys-* policy).")  # fmt: skip
def worker(
    target: str,
    backend: str | None,
    concurrency: int | None,
    queue_names: tuple[str, ...],
    metrics_port: int,
    metrics_host: str,
    no_metrics: bool,
    processes: int,
    reload: bool,
    grace: float,
    dump_file: str,
    allow_eviction: bool,
) -> None:
    """Run the queues of TARGET (MODULE or MODULE:QUEUE) until SIGINT/SIGTERM.

    The first signal is a warm shutdown; a second stops at once, handing durable tasks back
    to their store and dumping in-memory ones to --dump-file.
    """
    verbose = bool(click.get_current_context().find_root().params.get("verbose"))
    _setup_logging(verbose)
    if reload or processes > 1:
        argv = _child_argv(sys.argv[1:])
        if backend:  # the children read it from the environment: no password in 'ps'
            os.environ[BACKEND_ENV] = backend
        if reload:
            _reload(argv)
            return
        sys.exit(_supervise(argv, processes, metrics_port, dump_file))
    try:
        queues = load_queues(target, queue_names)
    except LoadError as exc:
        raise _fail(str(exc), exc) from None
    metrics_at = None if no_metrics else (metrics_host, metrics_port)
    server = _prepare(queues, backend, concurrency, metrics_at)
    if allow_eviction:
        for queue in queues:
            if hasattr(queue.backend, "allow_eviction"):  # Redis
                setattr(queue.backend, "allow_eviction", True)  # noqa: B010
    _check_reachable(queues)
    from .signals import run_until_signalled

    names = ", ".join(f"{q.name} ({_where(q)})" for q in queues)
    click.echo(f"dowork: worker {os.getpid()} running {names}", err=True)
    if server is not None:
        click.echo(f"dowork: metrics on {server.url}", err=True)
    result = run_until_signalled(queues, grace=grace, dump_path=dump_file)
    if server is not None:
        server.close()
    logging.shutdown()
    if not result.clean:
        os._exit(result.exit_code)  # threads of abandoned attempts must not hold the exit
    if result.exit_code:  # a store was lost (logged CRITICAL): let a supervisor restart us
        sys.exit(result.exit_code)


def _prepare(
    queues: list[Queue],
    backend: str | None,
    concurrency: int | None,
    metrics_at: tuple[str, int] | None,
) -> Any:
    """Apply --backend/--concurrency, install the metrics hooks; return the metrics server."""
    changes: dict[str, Any] = {}
    if backend:
        changes["backend"] = backend
    if concurrency:
        changes["concurrency"] = concurrency
    metrics = None
    if metrics_at is not None:
        from .metrics import PrometheusHooks

        metrics = PrometheusHooks()
    for queue in queues:
        extra = dict(changes)
        if metrics is not None:
            extra["hooks"] = (*queue._settings["hooks"], metrics)
        if extra:
            try:
                queue.reconfigure(**extra)
            except (ValueError, TypeError, RuntimeError, ImportError) as exc:
                raise _fail(f"queue {queue.name}: {exc}", exc) from None
    if metrics is None or metrics_at is None:
        return None
    from .metrics import BackendCollector, serve_metrics

    metrics.registry.register(BackendCollector(queues))
    host, port = metrics_at
    try:
        return serve_metrics(metrics, host=host, port=port)
    except OSError as exc:
        raise _fail(f"cannot serve metrics on {host}:{port}: {exc}") from None


def _check_reachable(queues: list[Queue]) -> None:
    """Fail at start, in one line, when a queue's store cannot be reached or is unsafe.

    A Redis whose ``maxmemory-policy`` may evict tasks is refused here (``check_worker``).
    """
    for queue in queues:
        backend = queue.backend
        if backend is None:
            continue
        try:
            queue._engine.run_on_home(backend.counts(queue.name), 10.0)
            check = getattr(backend, "check_worker", None)
            if check is not None:
                queue._engine.run_on_home(check(), 10.0)
        except Exception as exc:
            for each in queues:  # close connections and loop threads: nothing after the line
                with contextlib.suppress(Exception):
                    each.shutdown(timeout=1.0)
            # A SQLite message names the file and the fix; a refused policy says what to set.
            if isinstance(backend, SQLiteBackend) or isinstance(exc, EvictionPolicyError):
                raise _fail(f"queue {queue.name}: {exc}", exc) from None
            raise _fail(
                f"queue {queue.name}: cannot reach {backend!r}: {exc}; is the server running "
                "and the URL right?",
                exc,
            ) from None


def _where(queue: Queue) -> str:
    backend = queue.backend
    return "in memory" if backend is None else repr(backend)


def _child_argv(argv: Sequence[str]) -> list[str]:
    """The worker's own arguments for the processes it starts.

    Without --processes/--reload, and without --backend: the URL (which may hold a password)
    goes through ``$DOWORK_BACKEND`` instead, which other users cannot read in ``ps``.
    """
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("-p", "--processes", "--backend"):
            skip = True
            continue
        if arg.startswith(("--processes=", "--backend=")) or arg == "--reload":
            continue
        if arg.startswith("-p") and not arg.startswith("--"):  # -p4
            continue
        out.append(arg)
    return [sys.executable, "-m", "dowork", *out]


def _reload(argv: list[str]) -> None:
    import watchfiles

    click.echo(f"dowork: watching {os.getcwd()} for changes", err=True)
    watchfiles.run_process(
        os.getcwd(),
        target=shlex.join(argv),
        target_type="command",
        callback=lambda changes: click.echo(
            f"dowork: {len(changes)} change(s), restarting", err=True
        ),
    )


def _supervise(argv: list[str], count: int, metrics_port: int, dump_file: str) -> int:
    """Run ``count`` worker processes, restart any that dies, forward stop signals."""
    stopping = {"signals": 0}

    def spawn(index: int) -> subprocess.Popen[bytes]:
        child = list(argv)
        if metrics_port:
            child += ["--metrics-port", str(metrics_port + index)]
        child += ["--dump-file", f"{dump_file}.{index}"]
        process = subprocess.Popen(child)
        click.echo(f"dowork: worker {index} started (pid {process.pid})", err=True)
        return process

    children = {i: spawn(i) for i in range(count)}

    def forward(signum: int, frame: object) -> None:
        stopping["signals"] += 1
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    click.echo(f"dowork: supervising {count} worker processes", err=True)
    restarts: dict[int, float] = {}
    while True:
        time.sleep(0.2)
        alive = False
        for index, child in list(children.items()):
            code = child.poll()
            if code is None:
                alive = True
                continue
            if stopping["signals"]:
                continue
            wait = restarts.get(index, 0.0)
            log.warning("worker %d (pid %d) exited with %s; restarting", index, child.pid, code)
            time.sleep(min(5.0, wait))
            restarts[index] = min(5.0, (wait or 0.1) * 2)
            children[index] = spawn(index)
            alive = True
        if not alive:
            # A child stopped by the signal we forwarded before it set up its handlers
            # ended as cleanly as one that handled it.
            clean = (0, -signal.SIGTERM, -signal.SIGINT)
            return 0 if all(c.returncode in clean for c in children.values()) else 1


# -- looking at queues ---------------------------------------------------------------------


def _backend_option(text: str = f"The store (or ${BACKEND_ENV}).") -> Callable[[F], F]:
    return click.option("--backend", metavar="URL", envvar=BACKEND_ENV, required=True, help=text)


@main.command()
@_backend_option(f"The store to look at (or ${BACKEND_ENV}).")
@click.option("-q", "--queue", "queue_names", multiple=True, help="Only these queues.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(backend: str, queue_names: tuple[str, ...], as_json: bool) -> None:
    """Show each queue's tasks by status."""
    store = _backend(backend, create=False)

    async def read() -> dict[str, dict[str, int]]:
        try:
            names = list(queue_names) or await store.queues()
            return {name: await store.counts(name) for name in names}
        finally:
            await store.close()

    counts = _run(read())
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


@main.command(name="list")
@_backend_option()
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
    store = _backend(backend, create=False)

    async def read() -> list[Record]:
        try:
            return await store.list(queue_name, statuses or None, limit=limit, offset=offset)
        finally:
            await store.close()

    records = _run(read())
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


@main.command()
@click.argument("task_id")
@_backend_option()
@click.option("--json", "as_json", is_flag=True)
def inspect(task_id: str, backend: str, as_json: bool) -> None:
    """Show one task by id."""
    store = _backend(backend, create=False)

    async def read() -> list[Record]:
        try:
            return await store.get([task_id])
        finally:
            await store.close()

    records = _run(read())
    if not records:
        raise _fail(f"no task {task_id!r} in {redact_url(backend)}")
    data = _record_json(records[0])
    if as_json:
        click.echo(json.dumps(data, indent=2))  # ASCII only: control characters escaped
        return
    for key, value in data.items():
        click.echo(f"{key:>12}: {printable(value)}")


def _record_json(record: Record) -> dict[str, Any]:
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


# -- requeue and purge ---------------------------------------------------------------------


@main.command()
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
            raise _fail("give a dump file, or --dead/--failed with --backend and -q QUEUE")
        _requeue_finished(backend, queue_name, dead, failed, as_json)
        return
    if backend and app_target:
        source = click.get_current_context().get_parameter_source("backend")
        if source is not click.core.ParameterSource.ENVIRONMENT:
            raise _fail("give one of --backend URL or --app MODULE:QUEUE, not both")
        backend = None  # --app, given on the command line, wins over $DOWORK_BACKEND
    lines, problems = _read_dump(dump_file)
    present: list[str] = []
    done = 0
    if backend:
        from .dump import requeue_into_backend

        store = _backend(backend)

        async def push() -> int:
            try:
                return await requeue_into_backend(
                    lines, store, queue_name, time.time(), present=present
                )
            finally:
                await store.close()

        done = _run(push())
    elif app_target:
        done = _requeue_into_app(app_target, lines, problems, present)
    else:
        raise _fail("say where the tasks go: --backend URL or --app MODULE:QUEUE")
    _report({"requeued": done, "already_present": len(present), "skipped": problems}, as_json)


def _read_dump(path: str) -> tuple[list[Any], list[str]]:
    """The restorable lines of a dump file, and a message for every line left out."""
    from .dump import DumpLine, NotADump, read_dump

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
        raise _fail(str(exc), exc) from None
    return lines, problems


def _requeue_into_app(
    target: str, lines: list[Any], problems: list[str], present: list[str]
) -> int:
    """Enqueue dump lines on the queue ``target`` names; an in-memory one runs them here."""
    from .dump import requeue_into_queue
    from .errors import DuplicateTask

    try:
        (queue,) = load_queues(target)[:1]
    except LoadError as exc:
        raise _fail(str(exc), exc) from None
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
    store = _backend(backend, create=False)

    async def go() -> list[str]:
        from .admin import requeue_finished

        try:
            return await requeue_finished(store, queue, statuses, time.time())
        finally:
            await store.close()

    done = _run(go())
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


@main.command()
@_backend_option()
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
    store = _backend(backend, create=False)

    async def go() -> int:
        from .admin import purge_queue

        try:
            return await purge_queue(store, queue_name, chosen)
        finally:
            await store.close()

    deleted = _run(go())
    if as_json:
        click.echo(json.dumps({"deleted": deleted}))
    else:
        click.echo(f"deleted {deleted} task(s)")


# -- dashboard -----------------------------------------------------------------------------


@main.command()
@_backend_option(f"The store to show (or ${BACKEND_ENV}).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8787, show_default=True)
@click.option("--token", envvar="DOWORK_DASHBOARD_TOKEN", help="Require this secret.")
@click.option("--auth", envvar="DOWORK_DASHBOARD_AUTH", metavar="USER:PASSWORD",
              help="Require HTTP basic auth.")  # fmt: skip
@click.option("--insecure", is_flag=True, help="Serve a non-loopback address without auth.")
def dashboard(
    backend: str, host: str, port: int, token: str | None, auth: str | None, insecure: bool
) -> None:
    """Serve the web dashboard for the queues in URL (needs dowork[dashboard])."""
    try:
        import uvicorn

        from .dashboard import InsecureBind, check_bind, create_app, is_loopback
    except ImportError as exc:
        raise _fail(
            f"the dashboard needs its extra: pip install 'dowork[dashboard]' ({exc})", exc
        ) from None
    basic = None
    if auth:
        user, colon, password = auth.partition(":")
        if not colon or not password:
            raise _fail("--auth takes USER:PASSWORD")
        basic = (user, password)
    try:
        check_bind(host, protected=bool(token or basic), insecure=insecure)
    except InsecureBind as exc:
        raise _fail(str(exc)) from None
    hosts = None
    if not (token or basic) and is_loopback(host):  # no DNS-rebinding page may read it
        hosts = ["localhost", "127.0.0.1", "::1", host]
    store = _backend(backend, create=False)
    app = create_app(store, token=token, basic_auth=basic, allowed_hosts=hosts)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"dowork: dashboard on http://{shown}:{port}/", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


# -- demo ----------------------------------------------------------------------------------


@main.command()
@click.option("-n", "--tasks", type=click.IntRange(min=10), default=3000, show_default=True)
@click.option("-w", "--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file (default: a temp one).")
def demo(tasks: int, workers: int, db: str | None) -> None:
    """Run the main job on the embedded SQLite store: a few thousand tasks, live progress."""
    from .demo import run_demo

    sys.exit(run_demo(tasks, workers, db))
