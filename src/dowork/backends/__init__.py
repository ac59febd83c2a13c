"""Task stores behind a queue: one small protocol, one module per implementation.

``MemoryBackend`` and ``SQLiteBackend`` need nothing beyond the standard library; the Redis
backend (``dowork[redis]``) is imported only when asked for.
"""

from __future__ import annotations

from ._protocol import Backend, Outcome, Record, Settlement
from .memory import MemoryBackend
from .sqlite import SQLiteBackend

__all__ = ["Backend", "MemoryBackend", "Outcome", "Record", "SQLiteBackend", "Settlement"]
