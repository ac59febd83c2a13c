"""Codecs: how a durable backend turns task arguments and results into bytes and back.

JSON is the default: it is safe to decode (no code runs) and readable in the store. Pickle is
available only by explicit choice (``PickleCodec``), because decoding a pickle from a shared
store runs whatever code it names; so ``PickleCodec`` signs every payload with HMAC-SHA256 under
a secret key and checks the signature, in constant time, before it unpickles anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
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
    """Pickle, signed: any picklable value, for stores only your own processes write to.

    Every payload is ``b"dwp1" + HMAC-SHA256(key, pickle) + pickle``. ``decode`` checks the
    signature with ``hmac.compare_digest`` *before* unpickling, so bytes written by someone
    without the key (or altered in the store) are refused with a ``DecodeError`` whose
    ``reason`` is ``bad_signature``, and a worker dead-letters the task instead of running it.
    Give every producer and worker the same key (e.g. from an environment variable).

    Args:
        key: the shared secret, at least 16 bytes (``str`` is encoded as UTF-8).

    Raises:
        ValueError: a missing or short key.
    """

    name = "pickle"
    _MAGIC = b"dwp1"
    _SIG = hashlib.sha256().digest_size

    def __init__(self, key: bytes | str) -> None:
        secret = key.encode() if isinstance(key, str) else bytes(key)
        if len(secret) < 16:
            raise ValueError("PickleCodec needs a secret key of at least 16 bytes to sign with")
        self._key = secret

    def __repr__(self) -> str:
        return "PickleCodec(key=***)"

    def _sign(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def encode(self, value: Any) -> bytes:
        """Pickle ``value`` and sign it."""
        try:
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            raise NotSerializable(f"cannot pickle: {exc}") from exc
        return self._MAGIC + self._sign(data) + data

    def decode(self, data: bytes) -> Any:
        """Check the signature, then unpickle; unsigned or altered bytes are never unpickled."""
        head = len(self._MAGIC) + self._SIG
        if len(data) < head or not data.startswith(self._MAGIC):
            raise DecodeError(data, ValueError("not a signed dowork pickle"), "bad_signature")
        signature, body = data[len(self._MAGIC) : head], data[head:]
        if not hmac.compare_digest(signature, self._sign(body)):
            raise DecodeError(
                data,
                ValueError("the pickle's signature does not match (altered, or another key)"),
                "bad_signature",
            )
        try:
            return pickle.loads(body)  # signed by a holder of the key: checked above
        except Exception as exc:
            raise DecodeError(data, exc) from exc


def _refuse(value: Any) -> Any:
    """The JSON encoder's fallback for a value it does not know: refuse it."""
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
