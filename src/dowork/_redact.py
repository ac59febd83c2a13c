"""Hiding secrets in what dowork shows people, and taming text read from a store.

``redact_url`` hides the password of one backend URL (in its user part or its query string);
``redact_text`` does the same for every URL inside a longer text, such as an exception message
or a traceback, so no message of the command, the dashboard or a log can leak one.
``printable`` escapes control characters (terminal escape sequences, carriage returns, bidi
overrides) in text that came from a store, so task data cannot rewrite an operator's screen.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["printable", "redact_text", "redact_url"]

#: Query parameters whose value is a secret (matched case-insensitively, in part).
_SECRET_WORDS = ("pass", "pwd", "secret", "token", "auth", "credential", "key")
_HIDDEN = "***"
#: ``scheme://user:password@`` anywhere in a text.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)[^\s@'\"]*(?=@)")
#: ``password=...`` (and the other secret words) inside a query string or a keyword list.
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;](?:[A-Za-z0-9_\-]*(?:pass|pwd|secret|token|auth|credential|key)"
    r"[A-Za-z0-9_\-]*)=)[^&\s'\"#]*",
    re.IGNORECASE,
)


def _secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redact_url(url: str) -> str:
    """``url`` with the password of its user part and secret query values replaced by ``***``.

    Never raises: a text that does not parse as a URL goes through ``redact_text`` instead.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{_HIDDEN}@{hostport}" if colon else netloc
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret_name(k) for k, _ in pairs):
            query = urlencode([(k, _HIDDEN if _secret_name(k) else v) for k, v in pairs])
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    return shown + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")


def redact_text(text: str) -> str:
    """``text`` with every URL password and secret query value in it replaced by ``***``."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: m.group("head") + _HIDDEN, text)
    return _QUERY_SECRET.sub(lambda m: m.group("head") + _HIDDEN, text)


@functools.cache
def _escape_table(keep: str) -> dict[int, str]:
    """The escapes for ``str.translate``, made on first use (some 2,000 entries each)."""
    table: dict[int, str] = {}
    for code in (*range(0x20), *range(0x7F, 0xA0)):
        if chr(code) not in keep:
            table[code] = f"\\x{code:02x}"
    # Unicode format characters that reorder or hide text (bidi overrides, zero-width ones).
    for code in (
        0x061C, 0x200B, 0x200C, 0x200D, 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F),
        *range(0x2060, 0x2065), *range(0x2066, 0x206A), 0xFEFF,
    ):  # fmt: skip
        if unicodedata.category(chr(code)) in ("Cf", "Zl", "Zp"):
            table[code] = f"\\u{code:04x}"
    for code in range(0xD800, 0xE000):  # lone surrogates (undecodable bytes) cannot be printed
        table[code] = f"\\u{code:04x}"
    return table


def printable(value: object, *, lines: bool = False) -> str:
    """``str(value)`` safe to print on a terminal: control characters become escapes.

    With ``lines``, newlines and tabs are kept (a multi-line error or traceback); without, the
    text stays on one line.
    """
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return text.translate(_escape_table("\n\t" if lines else ""))
