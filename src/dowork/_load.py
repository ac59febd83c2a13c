"""Finding the user's queues from ``MODULE[:ATTRIBUTE]``, with errors a person can act on."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from .queue import Queue

__all__ = ["LoadError", "load_queues"]


class LoadError(Exception):
    """The target cannot be loaded; the message says what is wrong and how to fix it."""


def load_queues(target: str, names: Sequence[str] = ()) -> list[Queue]:
    """Import ``MODULE[:ATTR]`` and return the queues it names, filtered by ``names``.

    ``ATTR`` may be a ``Queue``, or a list, tuple or dict of them; without it every queue
    defined at the top of the module is taken.

    Raises:
        LoadError: the module does not import, the attribute is missing or is not a queue,
            or no queue matches ``names``.
    """
    module_name, _, attr = target.partition(":")
    if not module_name:
        raise LoadError(f"{target!r}: give a module, as in 'myapp.tasks' or 'myapp.tasks:queue'")
    queues = _find(_import(module_name), target, module_name, attr)
    if names:
        wanted = set(names)
        chosen = [q for q in queues if q.name in wanted]
        missing = wanted - {q.name for q in chosen}
        if missing:
            have = ", ".join(sorted(q.name for q in queues))
            raise LoadError(
                f"no queue named {', '.join(sorted(missing))} in {target} (have: {have})"
            )
        queues = chosen
    return list(dict.fromkeys(queues))


def _import(module_name: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # like 'python -m': the project directory is importable
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise LoadError(
                f"no module named {module_name!r}: run from your project's directory or set "
                "PYTHONPATH"
            ) from exc
        raise LoadError(f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise LoadError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc
    return module


def _find(module: Any, target: str, module_name: str, attr: str) -> list[Queue]:
    found: Any = module
    if attr:
        try:
            for part in attr.split("."):
                found = getattr(found, part)
        except AttributeError:
            raise LoadError(f"module {module_name!r} has no attribute {attr!r}") from None
        queues = _queues_in(found)
        if not queues:
            raise LoadError(f"{target} is a {type(found).__name__}, not a dowork.Queue")
    else:
        queues = [v for v in vars(module).values() if isinstance(v, Queue)]
        if not queues:
            raise LoadError(f"module {module_name!r} defines no dowork.Queue at its top level")
    return queues


def _queues_in(obj: Any) -> list[Queue]:
    if isinstance(obj, Queue):
        return [obj]
    values: Iterable[Any]
    if isinstance(obj, dict):
        values = obj.values()
    elif isinstance(obj, list | tuple | set | frozenset):
        values = obj
    else:
        return []
    queues = [v for v in values if isinstance(v, Queue)]
    return queues if len(queues) == len(list(values)) else []
