"""redis-py imported without what it does not use at import (OpenTelemetry's SDK, metadata).

Importing redis-py is most of what a Redis worker runs before its first task. Two parts of it
are never used there:

- redis-py 8's ``redis.observability.providers`` imports ``opentelemetry.sdk.metrics``, when
  installed, only to name a type: redis-py's metrics, once an application turns them on
  (``redis.observability.get_observability_instance().init(...)``), read the application's
  provider through the OpenTelemetry API, imported then. About 130 million instructions, a
  seventh of a Redis worker's start-up.
- ``redis.utils`` imports ``importlib.metadata`` (about 75 million) for one function, the
  version a connection reports to Redis, which ``driver()`` gives it instead.

So the package imports redis-py first, here: a finder refuses the SDK to that one module
while it loads (the SDK stays out of ``sys.modules``; an application that uses it imports it
as usual, before or after, and redis-py's metrics work as before; an import of it from
anywhere else, another thread included, goes through), and ``importlib.metadata`` is a
stand-in meanwhile, which imports the real module when first used. Nothing is done when
redis-py is already imported.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import FrameType, ModuleType
from typing import Any

__all__ = ["driver"]

#: The module that imports the SDK without needing it, and the SDK's package.
ASKER = "redis.observability.providers"
SDK = "opentelemetry.sdk"


class SkipSdk:
    """A meta path finder refusing ``opentelemetry.sdk`` to ``ASKER`` (see the docstring)."""

    @staticmethod
    def find_spec(
        name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        """Raise ModuleNotFoundError if ``ASKER`` imports the SDK; else leave it to the others."""
        if (name == SDK or name.startswith(SDK + ".")) and _importer(sys._getframe(1)) == ASKER:
            raise ModuleNotFoundError(f"{name} is not imported for {ASKER}", name=name)
        return None


def _importer(frame: FrameType | None) -> str | None:
    """The module whose import statement is being run: the first frame outside importlib."""
    while frame is not None:
        module = frame.f_globals.get("__name__")
        if not (isinstance(module, str) and module.startswith(("importlib", "_frozen_importlib"))):
            return module if isinstance(module, str) else None
        frame = frame.f_back
    return None


def driver() -> dict[str, Any]:
    """What a connection tells Redis about its client (``CLIENT SETINFO``), as by default.

    Left to itself, a redis-py with ``redis.driver_info`` reads the version it reports from
    the package metadata at its first connection; this is the version redis-py holds.
    """
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # an older redis-py: the version was read at import
        return {}
    import redis

    return {"driver_info": DriverInfo(lib_version=redis.__version__)}


class LazyMetadata(ModuleType):
    """``importlib.metadata``, imported when first used (see ``_import_redis``)."""

    def __getattr__(self, name: str) -> Any:
        # (Not ``from importlib import metadata``: while redis-py loads, that is this.)
        return getattr(importlib.import_module("importlib.metadata"), name)


def _import_redis() -> None:
    """Import redis-py without the SDK, and ``importlib.metadata`` only when used."""
    if "redis" in sys.modules:
        return
    finder = SkipSdk()
    sys.meta_path.insert(0, finder)
    stand_in = None
    if "importlib.metadata" not in sys.modules:
        stand_in = importlib.metadata = LazyMetadata("importlib.metadata")
    try:
        import redis
        import redis.asyncio  # noqa: F401
    finally:
        sys.meta_path.remove(finder)
        if stand_in is not None and getattr(importlib, "metadata", None) is stand_in:
            del importlib.metadata


_import_redis()
