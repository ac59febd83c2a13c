"""The JSON codec: exact round trips, and a clear refusal of what JSON cannot hold."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dowork.codec import JSONCodec
from dowork.errors import DecodeError, NotSerializable


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, -2.5, 'é\u2028"\\', None, True], "k": {"x": {"y": []}}},
        "plain",
        12345678901234567890,
        0.1 + 0.2,
        None,
    ],
)
def test_round_trips_and_matches_the_standard_encoder(value: Any) -> None:
    codec = JSONCodec()
    data = codec.encode(value)
    assert codec.decode(data) == value
    standard = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    assert data == standard.encode()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), object(), b"bytes", {1j: 1}])
def test_refuses_what_json_cannot_hold(value: Any) -> None:
    with pytest.raises(NotSerializable, match="cannot encode as JSON"):
        JSONCodec().encode(value)


def test_refuses_a_cycle_and_stays_usable() -> None:
    codec = JSONCodec()
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(NotSerializable):
        codec.encode({"a": cycle})
    assert codec.encode({"a": [1]}) == b'{"a":[1]}'


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":[1,"\xc3\xa9"],"k":{}}',  # as dowork writes it: the scanner's fast path
        b' [1, {"x": 2}] \n',  # whitespace around it
        b"\xef\xbb\xbf[1]",  # a UTF-8 byte order mark
        '["\u00e9"]'.encode("utf-16"),  # another encoding json.loads detects
        b"NaN",
        b"[1]x",  # extra data
        b"",
        b"[1",
        b'"\xff"',  # not UTF-8
    ],
)
def test_decodes_as_json_loads_does(data: bytes) -> None:
    """Whatever the bytes, ``decode`` gives what ``json.loads`` gives, or fails where it does."""
    codec = JSONCodec()
    why = ""
    try:
        expected = json.loads(data)
    except ValueError as exc:
        why = str(exc)
    if why:
        with pytest.raises(DecodeError) as caught:
            codec.decode(data)
        assert str(caught.value.__cause__) == why
        return
    got = codec.decode(data)
    assert got == expected or (got != got and expected != expected)  # NaN
    assert type(got) is type(expected)
