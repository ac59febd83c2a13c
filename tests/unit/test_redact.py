"""Hiding passwords in URLs and texts, and escaping control characters for the terminal."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from dowork._redact import printable, redact_text, redact_url

_SECRET_CHARS = string.ascii_letters + string.digits + "!$%()*+,-.;=_~"


def test_passwords_in_the_user_part_and_the_query_are_hidden() -> None:
    assert redact_url("redis://alice:pw@host:6379/0") == "redis://alice:***@host:6379/0"
    assert redact_url("redis://:pw@host/0") == "redis://:***@host/0"
    assert redact_url("redis://host/0?password=pw&prefix=app") == (
        "redis://host/0?password=%2A%2A%2A&prefix=app"
    )
    assert redact_url("rediss://host/0?sentinel_password=pw&token=t") == (
        "rediss://host/0?sentinel_password=%2A%2A%2A&token=%2A%2A%2A"
    )
    assert redact_url("sqlite:///var/dowork.db") == "sqlite:///var/dowork.db"
    assert redact_url("redis://host:6379/0?prefix=app") == "redis://host:6379/0?prefix=app"
    assert "pw" not in redact_url("redis://[::1:pw@host")  # unparsable, still hidden


def test_urls_inside_a_text_are_hidden() -> None:
    text = "Error: cannot reach 'redis://u:pw1@h:1/0?password=pw2&x=1' (redis://:pw3@x)"
    shown = redact_text(text)
    for secret in ("pw1", "pw2", "pw3"):
        assert secret not in shown
    assert "redis://u:***@h:1/0?password=***&x=1" in shown
    assert redact_text("plain words, no URL") == "plain words, no URL"


@given(st.text(_SECRET_CHARS, min_size=8).map(lambda s: "S3" + s))
def test_no_password_survives(secret: str) -> None:
    for url in (
        f"redis://user:{secret}@127.0.0.1:6379/0",
        f"redis://127.0.0.1:6379/0?password={secret}",
        f"unix:///run/redis.sock?db=0&password={secret}",
    ):
        assert secret not in redact_url(url)
        assert secret not in redact_text(f"failed: {url!r} and {url}")


def test_control_characters_are_escaped() -> None:
    assert printable("plain text é ✓") == "plain text é ✓"
    assert printable("a\x1b[31mb\rc\x07") == "a\\x1b[31mb\\rc\\x07".replace("\\r", "\\x0d")
    assert printable("bidi\u202eevil") == "bidi\\u202eevil"
    assert printable("line\nnext") == "line\\x0anext"
    assert printable("line\nnext\tcol\x1b", lines=True) == "line\nnext\tcol\\x1b"
    assert printable("bad \udcff byte") == "bad \\udcff byte"
    assert printable(12) == "12"


@given(st.text())
def test_escaped_text_holds_no_control_character(text: str) -> None:
    shown = printable(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in shown)
    assert "\u202e" not in shown
    shown.encode("utf-8")  # no lone surrogate left: it prints
