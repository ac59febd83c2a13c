"""Codecs: how a durable backend turns task arguments and results into bytes and back.

JSON is the default: it is safe to decode (no code runs) and readable in the store. Pickle is
available only by explicit choice (``PickleCodec``), because decoding a pickle from a shared
store runs whatever code it names; so ``PickleCodec`` signs every payload with HMAC-SHA256 under
a secret key and checks the signature, in constant time, before it unpickles anything. A task's
arguments are signed together with the task's registered name and id (``encode_for`` and
``decode_for``), so signed arguments copied into another record are refused too.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import json.scanner
import pickle
from typing import Any, Protocol

from .errors import DecodeError, NotSerializable, TooDeeplyNested

__all__ = [
    "MAX_DEPTH",
    "Codec",
    "JSONCodec",
    "PickleCodec",
    "check_depth",
    "decode_for",
    "encode_for",
    "task_context",
]

#: Most levels of lists, tuples, dicts and sets in one task argument (or header) that a
#: durable queue stores (``submit()``) and reads back (claim): far more than real data needs,
#: and far fewer than exhaust a decoder's stack (``RecursionError``).
MAX_DEPTH = 100

#: Types that hold no other values: most arguments, checked without a walk.
_SCALARS = frozenset({str, int, float, bool, type(None), bytes})
_CONTAINERS = (list, tuple, dict, set, frozenset)


def check_depth(values: Any, limit: int = MAX_DEPTH) -> None:
    """Raise ``TooDeeplyNested`` if one of ``values`` nests containers more than ``limit`` deep.

    ``values`` is an iterable of arguments (a container counts one level; a scalar none). The
    walk is iterative (no recursion to run out of), visits a shared value again only when
    reached deeper, and counts a cycle as too deep. Other objects are not looked into.
    """
    stack: list[tuple[Any, int]] = []
    for value in values:
        if type(value) not in _SCALARS and isinstance(value, _CONTAINERS):
            stack.append((value, 1))
    if not stack:
        return
    deepest: dict[int, int] = {}
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise TooDeeplyNested(limit)
        if deepest.get(id(item), 0) >= depth:
            continue
        deepest[id(item)] = depth
        children = (*item.keys(), *item.values()) if isinstance(item, dict) else item
        for child in children:
            if type(child) not in _SCALARS and isinstance(child, _CONTAINERS):
                stack.append((child, depth + 1))


class Codec(Protocol):
    """Turns values into bytes and back; ``encode`` raises ``NotSerializable`` when it cannot.

    A codec that signs what it writes may also bind it to the task it belongs to: with a
    class attribute ``binds_task = True``, its ``encode`` and ``decode`` also take a keyword
    ``context`` (bytes naming the task, see ``task_context``) and must refuse data written
    for another context. Codecs without it are called with the value or data only.
    """

    name: str

    def encode(self, value: Any) -> bytes:
        """Return ``value`` as bytes."""

    def decode(self, data: bytes) -> Any:
        """Return the value ``data`` holds; raise ``DecodeError`` for bytes it cannot read."""


def task_context(name: str, task_id: str) -> bytes:
    """The bytes a binding codec ties a task's arguments to: its registered name and its id.

    Each part is length-prefixed, so no two (name, id) pairs give the same bytes.
    """
    n = name.encode("utf-8", "surrogatepass")
    i = task_id.encode("utf-8", "surrogatepass")
    return b"%d:%s%d:%s" % (len(n), n, len(i), i)


def encode_for(codec: Codec, value: Any, name: str, task_id: str) -> bytes:
    """Encode a task's arguments; a codec with ``binds_task`` binds them to the name and id."""
    if getattr(codec, "binds_task", False):
        encoded: bytes = codec.encode(value, context=task_context(name, task_id))  # type: ignore[call-arg]
        return encoded
    return codec.encode(value)


def decode_for(codec: Codec, data: bytes, name: str, task_id: str) -> Any:
    """Decode a task's arguments stored under ``name`` and ``task_id`` (see ``encode_for``).

    Raises:
        DecodeError: bytes the codec cannot read, or (``binds_task``) bytes signed for another
            task; its ``reason`` is then ``bad_signature``.
    """
    if getattr(codec, "binds_task", False):
        return codec.decode(data, context=task_context(name, task_id))  # type: ignore[call-arg]
    return codec.decode(data)


class JSONCodec:
    """JSON (UTF-8, no NaN or infinity): str, int, float, bool, None, lists and string-keyed dicts.

    Tuples come back as lists, as in every JSON-based queue.
    """

    name = "json"
    binds_task = False  #: JSON is not signed: nothing to bind

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
        # The C scanner json.loads ends in, called directly: a payload in the form dowork
        # writes (UTF-8, no whitespace around it) skips loads' three Python frames and two
        # regular expressions; anything else goes through json.loads as before.
        scanner: Any = json.scanner.make_scanner  # (typeshed types its argument oddly)
        self._scan: Any = scanner(json.JSONDecoder())

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
        if type(data) is bytes:
            try:
                text = data.decode()
                value, end = self._scan(text, 0)
            except (StopIteration, ValueError):  # (UnicodeDecodeError is a ValueError)
                pass
            else:
                if end == len(text):
                    return value
        try:
            return json.loads(data)
        except (ValueError, TypeError) as exc:
            raise DecodeError(data, exc) from exc


class PickleCodec:
    """Pickle, signed: any picklable value, for stores only your own processes write to.

    Every payload is ``b"dwp2" + HMAC-SHA256(key, b"dwp2" + context + pickle) + pickle``,
    where ``context`` names the task (its registered name and id) for arguments and is empty
    for results. ``decode`` checks the signature with ``hmac.compare_digest`` *before*
    unpickling, so bytes written by someone without the key, altered in the store, or copied
    from another task's record are refused with a ``DecodeError`` whose ``reason`` is
    ``bad_signature``, and a worker dead-letters the task instead of running it. Give every
    producer and worker the same key (e.g. from an environment variable).

    Payloads of dowork 0.1's ``dwp1`` format (signed without the task's name and id) are
    refused the same way: accepting them would let such a payload be copied into any record.
    Let queues drain before upgrading, or submit their tasks again.

    Args:
        key: the shared secret, at least 16 bytes (``str`` is encoded as UTF-8).

    Raises:
        ValueError: a missing or short key.
    """

    name = "pickle"
    binds_task = True  #: arguments are signed with the task's name and id (``encode_for``)
    _MAGIC = b"dwp2"
    _OLD = b"dwp1"
    _SIG = hashlib.sha256().digest_size

    def __init__(self, key: bytes | str) -> None:
        secret = key.encode() if isinstance(key, str) else bytes(key)
        if len(secret) < 16:
            raise ValueError("PickleCodec needs a secret key of at least 16 bytes to sign with")
        self._key = secret

    def __repr__(self) -> str:
        return "PickleCodec(key=***)"

    def _sign(self, context: bytes, data: bytes) -> bytes:
        mac = hmac.new(self._key, self._MAGIC, hashlib.sha256)
        mac.update(b"%d:" % len(context))  # length-prefixed: context and data cannot blur
        mac.update(context)
        mac.update(data)
        return mac.digest()

    def encode(self, value: Any, *, context: bytes = b"") -> bytes:
        """Pickle ``value`` and sign it, together with ``context`` (see ``task_context``)."""
        try:
            data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            raise NotSerializable(f"cannot pickle: {exc}") from exc
        return self._MAGIC + self._sign(context, data) + data

    def decode(self, data: bytes, *, context: bytes = b"") -> Any:
        """Check the signature for ``context``, then unpickle; bytes that fail it never are."""
        head = len(self._MAGIC) + self._SIG
        if data.startswith(self._OLD):
            raise DecodeError(
                data,
                ValueError(
                    "a dwp1 pickle (an older dowork, signed without the task's name and id) "
                    "is not accepted: submit the task again"
                ),
                "bad_signature",
            )
        if len(data) < head or not data.startswith(self._MAGIC):
            raise DecodeError(data, ValueError("not a signed dowork pickle"), "bad_signature")
        signature, body = data[len(self._MAGIC) : head], data[head:]
        if not hmac.compare_digest(signature, self._sign(context, body)):
            raise DecodeError(
                data,
                ValueError(
                    "the pickle's signature does not match (altered, signed for another task, "
                    "or with another key)"
                ),
                "bad_signature",
            )
        try:
            return pickle.loads(body)  # signed by a holder of the key: checked above
        except Exception as exc:
            raise DecodeError(data, exc) from exc


def _refuse(value: Any) -> Any:
    """The JSON encoder's fallback for a value it does not know: refuse it."""
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
