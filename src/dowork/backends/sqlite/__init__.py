"""SQLite backend: the embedded durable store (stdlib ``sqlite3``, WAL, no server).

``SQLiteBackend`` (``backend``) is the class users build. The rest of the package is its
parts, one concern each: ``schema`` (tables, indexes, upgrades of older files), ``records``
(rows as ``Record``s), ``rows`` (finding and dead-lettering rows a worker cannot read),
``connection`` (the write transaction), and the fair-claim planner: ``claims`` (one claim's
transaction), ``lanes`` (a lane's due records by priority level, in SQL), ``turns`` (keys
served in turn) and ``rates`` (rate-limit starts shared through the file).
"""

from __future__ import annotations

from .backend import SQLiteBackend

__all__ = ["SQLiteBackend"]
