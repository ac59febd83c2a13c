"""The ``dowork`` command: run workers, look at queues, re-queue and purge tasks, run the demo.

Every command prints for people by default and JSON with ``--json``; a mistake (a module that
does not import, a name that is not a queue, an unreachable backend) is one line saying what
to fix and exit status 1, with the traceback only under ``--verbose``. Messages never show a
password, and text read from a store is printed with its control characters escaped.

The commands live by concern: ``work`` (``dowork worker``) with ``processes`` (--processes,
--reload), ``show`` (status, list, inspect), ``admin`` (requeue, purge), ``web`` (dashboard);
``common`` has the one-line errors and the --backend option they share.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from .admin import purge, requeue
from .common import fail
from .show import inspect, list_tasks, status
from .web import dashboard
from .work import worker

__all__ = ["main"]


class _Main(click.Group):
    """The ``dowork`` group: an unexpected exception is one line too, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; turn any error that is not click's own into a ``CliError``."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise
        except Exception as exc:
            raise fail(f"{type(exc).__name__}: {exc}", exc) from None


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logs and full tracebacks.")
@click.version_option(package_name="dowork")
def main(verbose: bool) -> None:
    """dowork: run Python functions in the background, in this process or on workers."""


@main.command()
@click.option("-n", "--tasks", type=click.IntRange(min=10), default=3000, show_default=True)
@click.option("-w", "--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--db", type=click.Path(dir_okay=False), help="SQLite file (default: a temp one).")
def demo(tasks: int, workers: int, db: str | None) -> None:
    """Run the main job on the embedded SQLite store: a few thousand tasks, live progress."""
    from ..demo import run_demo

    sys.exit(run_demo(tasks, workers, db))


for _command in (worker, status, list_tasks, inspect, requeue, purge, dashboard):
    main.add_command(_command)
