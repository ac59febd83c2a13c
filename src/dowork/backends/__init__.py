"""Task stores behind a queue: the worker's ``Store`` protocol, the operators' ``StoreAdmin``.

``MemoryBackend`` and ``SQLiteBackend`` need nothing beyond the standard library; the Redis
backend (``dowork[redis]``) is imported only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from .._redact import redact_url
from ._protocol import Outcome, Record, Settlement, StoreAdmin
from .memory import MemoryBackend
from .sqlite import SQLiteBackend
from .store import Backend, ClaimRequest, Store

if TYPE_CHECKING:
    from .redis import RedisBackend as RedisBackend

__all__ = [
    "Backend",
    "ClaimRequest",
    "MemoryBackend",
    "Outcome",
    "Record",
    "SQLiteBackend",
    "Settlement",
    "Store",
    "StoreAdmin",
    "open_backend",
]


def open_backend(url: str, *, create: bool = True) -> Backend:
    """Build a backend from a URL.

    ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` (a file, as SQLAlchemy
    spells it), ``memory://`` (in-process),
    ``redis://[user:password@]host:port/db`` or ``rediss://...`` (needs ``dowork[redis]``;
    ``?prefix=myapp`` sets the key prefix, ``dowork`` by default). ``create=False`` (tools
    that only look) refuses to create a SQLite file that does not exist yet.

    Raises:
        ValueError: an unknown scheme or a URL without the parts it needs (the message never
            shows a password).
        ImportError: a Redis URL without the ``redis`` package (``pip install 'dowork[redis]'``).
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unbalanced '[' in the host
        raise ValueError(f"invalid backend URL {redact_url(url)!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        path = unquote(parts.netloc + parts.path) if parts.netloc else unquote(parts.path)
        if not parts.netloc and path.startswith("/"):
            path = path[1:]  # as SQLAlchemy: sqlite:///rel.db is relative, sqlite:////abs absolute
        if not path:
            raise ValueError(
                f"a sqlite URL needs a file path, e.g. sqlite:///var/dowork.db: {redact_url(url)!r}"
            )
        return SQLiteBackend(path, create=create)
    if scheme == "memory":
        return MemoryBackend()
    if scheme in ("redis", "rediss", "unix"):
        redis_backend = _redis_backend()  # the class, imported on demand

        query = parse_qsl(parts.query, keep_blank_values=True)
        prefix = [v for k, v in query if k == "prefix"]
        rest = urlencode([(k, v) for k, v in query if k != "prefix"])
        backend: Backend = redis_backend(
            urlunsplit(parts._replace(query=rest)), prefix=prefix[-1] if prefix else "dowork"
        )
        return backend
    raise ValueError(
        f"unknown backend URL {redact_url(url)!r}: use sqlite:///path.db, redis://host:port/0 "
        "or memory://"
    )


def _redis_backend() -> Any:
    """The ``RedisBackend`` class, or an ImportError that says which extra to install."""
    try:
        from .redis import RedisBackend
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in ("redis", "hiredis"):
            raise
        raise ModuleNotFoundError(
            f"the Redis backend needs the redis package, which is not installed ({exc}): "
            "pip install 'dowork[redis]'",
            name=exc.name,
        ) from exc
    return RedisBackend


def __getattr__(name: str) -> Any:
    """Import ``RedisBackend`` on first use, so that the core never imports redis."""
    if name == "RedisBackend":
        return _redis_backend()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
