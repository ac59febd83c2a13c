"""The JSON codec: exact round trips, and a clear refusal of what JSON cannot hold."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dowork.codec import JSONCodec
from dowork.errors import NotSerializable


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
