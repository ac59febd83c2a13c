"""Codecs: how a durable backend turns task arguments and results into bytes and back.

JSON is the default: it is safe to decode (no code runs) and readable in the store. Pickle is
available only by explicit choice (``PickleCodec``), because decoding a pickle from a shared
store runs whatever code it names.
"""

from __future__ import annotations

import contextlib
import json
import pickle
from typing import Any, Protocol

from .errors import DecodeError, NotSerializable

__all__ = ["Codec", "JSONCodec", "PickleCodec"]


class Codec(Protocol):
    """Turns values into bytes and back; ``encode`` raises ``NotSerializable`` when it cannot."""

    name: str

    def encode(self, value: Any) -> bytes:
        """Return ``value`` as bytes."""

    def decode(self, data: bytes) -> Any:
        """Return the value ``data`` holds; raise ``DecodeError`` for bytes it cannot read."""


class JSONCodec:
    """JSON (UTF-8, no NaN or infinity): str, int, float, bool, None, lists and string-keyed dicts.

    Tuples come back as lists, as in every JSON-based queue.
    """

    name = "json"

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(
            ensure_ascii=False, allow_nan=False, separators=(",", ":"), check_circular=True
        )
        # The C encoder, built once rather than on every call as JSONEncoder.encode does: a
        # cycle raises RecursionError instead of being spotted by a marker dict.
        make = getattr(json.encoder, "c_make_encoder", None)
        self._fast: Any = None
        if make is not None:
            with contextlib.suppress(TypeError):  # another signature: use the encoder above
                self._fast = make(
                    None, _refuse, json.encoder.encode_basestring, None, ":", ",", False, False,
                    False,
                )  # fmt: skip

    def encode(self, value: Any) -> bytes:
        """Encode to JSON bytes, refusing anything JSON cannot represent exactly."""
        try:
            if self._fast is not None:
                return "".join(self._fast(value, 0)).encode()
            return self._encoder.encode(value).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise NotSerializable(f"cannot encode as JSON: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        """Decode JSON bytes."""
        try:
            return json.loads(data)
        except (ValueError, TypeError) as exc:
            raise DecodeError(data, exc) from exc


class PickleCodec:
    """Pickle: any picklable value. Only for stores that no untrusted party can write to."""

    name = "pickle"

    def encode(self, value: Any) -> bytes:
        """Pickle ``value``."""
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            raise NotSerializable(f"cannot pickle: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        """Unpickle ``data`` (runs code named in it: trusted stores only)."""
        try:
            return pickle.loads(data)  # opt-in codec, trusted stores only
        except Exception as exc:
            raise DecodeError(data, exc) from exc


def _refuse(value: Any) -> Any:
    """The JSON encoder's fallback for a value it does not know: refuse it."""
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
