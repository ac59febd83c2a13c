"""Task stores behind a queue: one small protocol, one module per implementation.

``MemoryBackend`` and ``SQLiteBackend`` need nothing beyond the standard library; the Redis
backend (``dowork[redis]``) is imported only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ._protocol import Backend, Outcome, Record, Settlement
from .memory import MemoryBackend
from .sqlite import SQLiteBackend

if TYPE_CHECKING:
    from .redis import RedisBackend as RedisBackend

__all__ = [
    "Backend",
    "MemoryBackend",
    "Outcome",
    "Record",
    "SQLiteBackend",
    "Settlement",
    "open_backend",
]


def open_backend(url: str) -> Backend:
    """Build a backend from a URL.

    ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` (a file, as SQLAlchemy
    spells it), ``memory://`` (in-process),
    ``redis://[user:password@]host:port/db`` or ``rediss://...`` (needs ``dowork[redis]``;
    ``?prefix=myapp`` sets the key prefix, ``dowork`` by default).

    Raises:
        ValueError: an unknown scheme or a URL without the parts it needs.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        path = unquote(parts.netloc + parts.path) if parts.netloc else unquote(parts.path)
        if not parts.netloc and path.startswith("/"):
            path = path[1:]  # as SQLAlchemy: sqlite:///rel.db is relative, sqlite:////abs absolute
        if not path:
            raise ValueError(
                f"a sqlite URL needs a file path, e.g. sqlite:///var/dowork.db: {url!r}"
            )
        return SQLiteBackend(path)
    if scheme == "memory":
        return MemoryBackend()
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisBackend

        query = parse_qsl(parts.query, keep_blank_values=True)
        prefix = [v for k, v in query if k == "prefix"]
        rest = urlencode([(k, v) for k, v in query if k != "prefix"])
        backend: Backend = RedisBackend(
            urlunsplit(parts._replace(query=rest)), prefix=prefix[-1] if prefix else "dowork"
        )
        return backend
    raise ValueError(
        f"unknown backend URL {url!r}: use sqlite:///path.db, redis://host:port/0 or memory://"
    )


def __getattr__(name: str) -> Any:
    """Import ``RedisBackend`` on first use, so that the core never imports redis."""
    if name == "RedisBackend":
        from .redis import RedisBackend

        return RedisBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
