"""SQLite backend: the embedded durable store (stdlib ``sqlite3``, WAL, no server).

``SQLiteBackend`` (``backend``) is the class users build: settings, one ``SQLiteFile``
(``connection``: the file, its one thread, the write transaction, errors that say what to
fix), the operators' methods of ``SQLiteAdmin`` (``admin``: the ``StoreAdmin`` protocol) and
the workers' ones of ``SQLiteStore`` (``store``: the rest of ``Backend``). The store's heavier
work has a module each: ``claims`` (one claim's transaction), planned by ``lanes`` (a lane's
due records by priority level, in SQL), ``turns`` (concurrency keys served in turn) and
``rates`` (rate-limit starts shared through the file); ``outcomes`` (settlements) and
``upkeep`` (lapsed leases, purges). Below them sit ``schema`` (tables, indexes, upgrades of
older files), ``records`` (rows as ``Record``s) and ``rows`` (finding and dead-lettering rows
a worker cannot read).
"""

from __future__ import annotations

from .backend import SQLiteBackend

__all__ = ["SQLiteBackend"]
