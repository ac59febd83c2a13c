"""The Redis scripts while they move from Python strings to ``.lua`` files: same code as before.

Records the SHA-1 of each assembled script as it was before the move, whole and of its code
alone (without comments, trailing blanks and empty lines). The move itself kept every script
byte for byte; then the comments that described the scripts in Python moved into the ``.lua``
files, so now the code alone is compared. A scaffold for the move; it goes once it is done.
"""

from __future__ import annotations

import hashlib

import pytest

from dowork.backends.redis.scripts import SCRIPTS

#: name -> (SHA-1 of the assembled script, SHA-1 of its code lines joined by newlines).
BEFORE = {
    "push": (
        "10ceaf59e4fc848ee6a0959c92d90a625c570348",
        "5d43e65c02dc52bdcf3b6d281f4c4c4fd0a61192",
    ),
    "check": (
        "ef5505072ee827e081ded3db90ff18e3ee1a6723",
        "5df39463d4d7421a467d6557c18bf80488c5c0a8",
    ),
    "claim": (
        "291d94add6d9bb8e8236c8ab5b817b354dae525f",
        "cce0112956ef0030affc6c5f8059db4ceb522616",
    ),
    "take": (
        "379afd6e82999033a552611f4b3c77f20013c1be",
        "085d6910a88bc53d4d7695fe31429b062fc3647e",
    ),
    "peek": (
        "e758d588165cf558faa1ae33f0fa1fd57f5afcda",
        "47dfee33ba5c317548f7e74572dca54362670b62",
    ),
    "drain": (
        "b22162acdd34a33c415f4ae0f745cf306867bc17",
        "1f2278d912ea31a81dea675bbef8f70f5b21e506",
    ),
    "wake": (
        "3dddf766db7e765565846f28d123343459591fbe",
        "5369f99ef13b872d4ba79936317edf656cd58512",
    ),
    "settle": (
        "e6d5137df5bf31a6ef28c3a54d5cfb789fd1a3d3",
        "6932ba9a0f34222cfa414c1219b6a9e4992dacd2",
    ),
    "bury": (
        "a895d96fd6925dc3d2a41e06c300f9227e80c850",
        "91cbede0b2e1bf80ec52b9d10dc41b2d72703fe0",
    ),
    "heartbeat": (
        "4945a13181c3928efaa25a1e6036b779de4e317f",
        "ffc6f4cd785f5468727144077a2d7b148f9be058",
    ),
    "reap": (
        "ce4a8c52fd246e1670d57bb042b8390c97529016",
        "63909c353f95be0337fbd83ae957866e941bdaa5",
    ),
    "cancel": (
        "9b49695bc455e91b3705b763499459c5bc75d047",
        "6583d3d9df6447af168f23bfc417a4da3755ba0b",
    ),
    "purge": (
        "dec3a73be378681183ab5c270ab44a9707a34474",
        "c1ead3ee45cb1565931d295b03bb4e20dfea9f95",
    ),
    "requeue": (
        "7935e7cf5783e286eba60188d875544c810f76ee",
        "d95e8d0b88d6904941264037b442e0c25f08e232",
    ),
    "purge_queue": (
        "66b63afcdccecf81621cb4c71f8ece9f256a72a6",
        "fb6dbca2f8daf96a23f4982fc7cc4c9f77faeb41",
    ),
    "list": (
        "b4d2726579e024d888cbd86db7071ce9c28b4684",
        "fda1df06d63026c7287cf63f3a1425e691921f30",
    ),
    "push_keyed": (
        "7120859f6567d34a86038f9d503e66e9b41d8232",
        "ec36c02d8093def5cc08b753f7723519208a63bb",
    ),
    "release": (
        "09cb2c13c0dfd5def003748108b895601a7e07fd",
        "2f4f3ee7ca076f58293c366c30a4e48c726b0635",
    ),
    "progress": (
        "f73b78cd8fc2cb0aa74a569ea9d0ccd0e2c4b97c",
        "8d32f94f96741f969739346523be42d6c4244334",
    ),
    "beat": (
        "f6fd7f1af2ce0b3361f3040623db61712b6a39f7",
        "04c718166a724d8e30c1551271a689984f08aecb",
    ),
}


def code_lines(text: str) -> list[str]:
    """The lines of Lua ``text`` without comments (outside strings) and without blank lines."""
    out = []
    for line in text.split("\n"):
        kept: list[str] = []
        quote: str | None = None
        i = 0
        while i < len(line):
            c = line[i]
            if quote:
                kept.append(c)
                if c == "\\" and i + 1 < len(line):
                    kept.append(line[i + 1])
                    i += 1
                elif c == quote:
                    quote = None
            elif c in "'\"":
                quote = c
                kept.append(c)
            elif line.startswith("--", i):
                break
            else:
                kept.append(c)
            i += 1
        assert quote is None, f"a string runs past the end of the line: {line!r}"
        code = "".join(kept).rstrip()
        if code.strip():
            out.append(code)
    return out


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def test_the_same_scripts() -> None:
    assert sorted(SCRIPTS) == sorted(BEFORE)


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_same_code(name: str) -> None:
    assert sha1("\n".join(code_lines(SCRIPTS[name]))) == BEFORE[name][1]
