"""The one engine that runs every queue's attempts, and the seam to where its tasks live.

``Engine`` runs attempts (``core`` assembles its parts); a ``TaskSource`` (``source``) feeds it:
``LocalSource`` (``local``) in memory, ``dowork.durable.DurableSource`` on a store.
"""

from .core import Engine
from .local import LocalSource
from .source import TaskSource

__all__ = ["Engine", "LocalSource", "TaskSource"]
