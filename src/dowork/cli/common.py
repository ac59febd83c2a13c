"""What every ``dowork`` command shares: one-line errors, opening a store, the --backend option.

An error for the user is one line without a password or control characters (the traceback
only under ``dowork -v``); the store's URL is read from ``$DOWORK_BACKEND`` when --backend is
not given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from .._redact import printable, redact_text
from ..backends import Backend, open_backend
from ..errors import DoWorkError

__all__ = ["BACKEND_ENV", "CliError", "backend_option", "fail", "open_store", "run", "verbose"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: The environment variable ``--backend`` is read from when it is not given (every command),
#: and through which ``--processes``/``--reload`` hand the URL to the processes they start, so
#: a password never shows on a command line (``ps``).
BACKEND_ENV = "DOWORK_BACKEND"


class CliError(click.ClickException):
    """A one-line error for the user (exit status 1)."""


def verbose() -> bool:
    """Whether ``dowork -v`` was given (debug logs and full tracebacks)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().params.get("verbose"))


def fail(message: str, exc: BaseException | None = None) -> CliError:
    """The error to raise for ``message``: one line, no password, no control characters.

    Under ``dowork -v`` the traceback of ``exc`` is printed first (passwords hidden there too).
    """
    if verbose() and exc is not None:
        import traceback

        text = "".join(traceback.format_exception(exc))
        click.echo(printable(redact_text(text), lines=True), err=True, nl=False)
    return CliError(printable(redact_text(message)))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end; a store's or the system's error is one line."""
    try:
        return asyncio.run(coro)
    except DoWorkError as exc:
        raise fail(str(exc), exc) from None
    except (OSError, ValueError, ImportError) as exc:
        raise fail(f"{type(exc).__name__}: {exc}", exc) from None


def open_store(url: str, *, create: bool = True) -> Backend:
    """Open the store at ``url``; ``create=False`` for commands that only look at it."""
    try:
        return open_backend(url, create=create)
    except (ValueError, ImportError) as exc:
        raise fail(str(exc), exc) from None


def backend_option(text: str = f"The store (or ${BACKEND_ENV}).") -> Callable[[F], F]:
    """The required ``--backend URL`` option, read from ``$DOWORK_BACKEND`` when not given."""
    return click.option("--backend", metavar="URL", envvar=BACKEND_ENV, required=True, help=text)
