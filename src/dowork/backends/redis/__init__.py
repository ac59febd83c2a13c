"""Redis backend: one Redis (6.0+) shared by every worker process on any host.

``RedisBackend`` (``backend``) is the class users build; ``scripts`` assembles the Lua
scripts it runs from ``lua/``.
"""

from __future__ import annotations

from .backend import RedisBackend

__all__ = ["RedisBackend"]
