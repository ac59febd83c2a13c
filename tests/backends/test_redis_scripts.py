"""The Lua scripts as shipped: every one compiles in a real Redis, with every include resolved."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

import pytest
import redis

from dowork.backends.redis.scripts import SCRIPTS, assemble
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
