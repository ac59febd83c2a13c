"""The Lua scripts as shipped: every one compiles in a real Redis, with every include resolved."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

import pytest
import redis
import redis.asyncio

from dowork.backends.redis.scripts import SCRIPTS, Registered, Scripts, assemble
from tests.redis_server import RedisServer

LUA = resources.files("dowork.backends.redis").joinpath("lua")


def parts() -> set[str]:
    return {e.name[:-4] for e in LUA.joinpath("include").iterdir() if e.name.endswith(".lua")}


def test_every_script_loads_into_redis(redis_server: RedisServer) -> None:
    assert len(SCRIPTS) >= 20
    with redis.Redis.from_url(redis_server.url) as client:
        for name, source in SCRIPTS.items():
            sha = client.script_load(source)  # compiles it: a syntax error is an error here
            assert sha == hashlib.sha1(source.encode()).hexdigest(), name
            assert client.script_exists(sha) == [True], name


def test_no_include_is_left_and_every_part_is_used() -> None:
    for name, source in SCRIPTS.items():
        assert "--#" not in source, name
    files = [f"{name}.lua" for name in SCRIPTS] + [f"include/{part}.lua" for part in parts()]
    used = set()
    for path in files:
        used |= set(re.findall(r"^--#include (\w+)$", LUA.joinpath(path).read_text(), re.M))
    assert used == parts()


def test_a_syntax_error_fails_to_load(redis_server: RedisServer, tmp_path: Path) -> None:
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "part.lua").write_text("local x = 1\n")
    (tmp_path / "bad.lua").write_text("--#include part\nlocal y = = x\nreturn y\n")
    source = assemble("bad", tmp_path)
    assert source == "local x = 1\nlocal y = = x\nreturn y\n"
    with (
        redis.Redis.from_url(redis_server.url) as client,
        pytest.raises(redis.exceptions.ResponseError, match="Error compiling script"),
    ):
        client.script_load(source)


def test_an_include_becomes_the_part_in_place(tmp_path: Path) -> None:
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "inner.lua").write_text("local a = 1\n")
    (tmp_path / "include" / "outer.lua").write_text("--#include inner\nlocal b = a")
    (tmp_path / "s.lua").write_text("-- s\n--#include outer\nreturn b\n")
    assert assemble("s", tmp_path) == "-- s\nlocal a = 1\nlocal b = a\nreturn b\n"


@pytest.mark.parametrize(
    ("script", "error", "message"),
    [
        ("--#include missing\n", LookupError, r"s\.lua:1: no such Lua file 'include/missing\.lua'"),
        ("--#include twice\n--#include twice\n", LookupError, "'twice' comes twice"),
        ("--#include nested\n--#include twice\n", LookupError, "'twice' comes twice"),
        ("x = 1\n--#include ../s\n", ValueError, r"s\.lua:2: '\.\./s' is not the name of a part"),
        ("--#include\n", ValueError, r"s\.lua:1: not an include line"),
        ("--#inclde twice\n", ValueError, r"s\.lua:1: not an include line"),
    ],
)
def test_a_bad_include_is_an_error(
    tmp_path: Path, script: str, error: type[Exception], message: str
) -> None:
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "twice.lua").write_text("local t = 1\n")
    (tmp_path / "include" / "nested.lua").write_text("--#include twice\n")
    (tmp_path / "s.lua").write_text(script)
    with pytest.raises(error, match=message):
        assemble("s", tmp_path)


def test_a_script_is_assembled_when_first_asked_for(tmp_path: Path) -> None:
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "part.lua").write_text("local a = 1\n")
    (tmp_path / "s.lua").write_text("--#include part\nreturn a\n")
    (tmp_path / "t.lua").write_text("--#include missing\n")
    scripts = Scripts(tmp_path)
    assert (list(scripts), len(scripts)) == (["s", "t"], 2)
    (tmp_path / "include" / "part.lua").write_text("local a = 2\n")  # not read yet
    assert scripts["s"] == "local a = 2\nreturn a\n"
    (tmp_path / "include" / "part.lua").write_text("local a = 3\n")  # read once: kept
    assert scripts["s"] == "local a = 2\nreturn a\n"
    assert "part" not in scripts
    assert "../s" not in scripts
    with pytest.raises(KeyError):
        scripts["u"]
    with pytest.raises(LookupError, match=r"no such Lua file 'include/missing\.lua'"):
        scripts["t"]


def test_a_link_registers_a_script_when_first_used() -> None:
    registered = Registered(redis.asyncio.Redis())
    assert not registered
    claim = registered["claim"]
    assert (list(registered), claim.script) == (["claim"], SCRIPTS["claim"])
    assert registered["claim"] is claim
