"""The Lua scripts of the Redis backend, read from ``lua/`` and assembled from their parts.

Every state change of a task is one script: it runs atomically inside Redis, checks
everything before its first write (so none stops half way) and touches only keys it computes
from the prefix in ``ARGV[1]``. ``lua/NAME.lua`` is the script ``NAME``; a line
``--#include PART`` in it stands for ``lua/include/PART.lua`` (assembled the same way), so
that scripts share their checks, the inbox and the prelude instead of copying them. A part
comes at most once in a script, and a missing one is an error here, never a comment that
Redis skips. ``SCRIPTS`` maps every script's name to its assembled source; a script is
assembled when first asked for, so that a process pays only for the scripts it runs (a
worker's start-up, a producer's first push).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    import redis.asyncio
    from redis.commands.core import AsyncScript

__all__ = ["SCRIPTS", "Registered", "assemble"]


def _folder() -> Traversable:
    """The ``lua`` folder: beside this file, or else as the package's resource (a zip)."""
    beside = Path(__file__).with_name("lua")
    if beside.is_dir():  # a package installed as files (importlib.resources costs more)
        return beside
    from importlib import resources

    return resources.files(__package__).joinpath("lua")


_LUA = _folder()
#: An include line: the whole line, a part's name (lower case letters, digits, ``_``).
_INCLUDE = re.compile(r"--#include[ \t]+(\S*)[ \t]*")
_NAME = re.compile(r"[a-z0-9_]+")


def assemble(name: str, folder: Traversable = _LUA) -> str:
    """The source of script ``name``: ``folder/NAME.lua`` with its includes in place.

    An include line, with its newline, is replaced by the part's source.

    Raises:
        LookupError: a part that does not exist, or that comes twice in the script.
        ValueError: an include line that does not name a part.
    """
    seen: set[str] = set()
    return _expand(_read(folder, f"{name}.lua", name), folder, f"{name}.lua", seen)


def _expand(text: str, folder: Traversable, where: str, seen: set[str]) -> str:
    lines = text.split("\n")
    out: list[str] = []
    for number, line in enumerate(lines, 1):
        found = _INCLUDE.fullmatch(line)
        if found is None:
            if line.lstrip().startswith("--#"):
                raise ValueError(f"{where}:{number}: not an include line: {line!r}")
            out.append(line + "\n" if number < len(lines) else line)
            continue
        part = found.group(1)
        if not _NAME.fullmatch(part):
            raise ValueError(f"{where}:{number}: {part!r} is not the name of a part")
        if part in seen:
            raise LookupError(f"{where}:{number}: part {part!r} comes twice in this script")
        seen.add(part)
        path = f"include/{part}.lua"
        source = _expand(_read(folder, path, f"{where}:{number}"), folder, path, seen)
        out.append(source if source.endswith("\n") else source + "\n")
    return "".join(out)


def _read(folder: Traversable, path: str, wanted_by: str) -> str:
    try:
        return folder.joinpath(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LookupError(f"{wanted_by}: no such Lua file {path!r}") from None


def _names(folder: Traversable = _LUA) -> list[str]:
    """The names of the scripts in ``folder`` (its ``.lua`` files; not the parts)."""
    return sorted(e.name[:-4] for e in folder.iterdir() if e.name.endswith(".lua") and e.is_file())


class Scripts(Mapping[str, str]):
    """The scripts' full sources by name, each assembled on first use and kept.

    A name with no ``folder/NAME.lua`` is missing (``KeyError``); a script with a missing or
    repeated part raises ``LookupError`` when first asked for, as ``assemble`` does.
    """

    def __init__(self, folder: Traversable = _LUA) -> None:
        self._folder = folder
        self._sources: dict[str, str] = {}
        self._names: list[str] | None = None

    def __getitem__(self, name: str) -> str:
        source = self._sources.get(name)
        if source is None:
            if not _NAME.fullmatch(name) or not self._folder.joinpath(f"{name}.lua").is_file():
                raise KeyError(name)
            source = self._sources[name] = assemble(name, self._folder)
        return source

    def __iter__(self) -> Iterator[str]:
        if self._names is None:
            self._names = _names(self._folder)
        return iter(self._names)

    def __len__(self) -> int:
        return sum(1 for _ in self)


#: The scripts' full sources by name (assembled on first use).
SCRIPTS = Scripts()


class Registered(dict[str, "AsyncScript"]):
    """A client's scripts by name, each registered (and assembled) on first use."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        super().__init__()
        self.client = client

    def __missing__(self, name: str) -> AsyncScript:
        script = self[name] = self.client.register_script(SCRIPTS[name])
        return script
