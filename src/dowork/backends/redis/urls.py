"""What a Redis URL says besides where Redis is, and how it is shown.

``without_flag`` takes dowork's own ``?allow_eviction=`` out of a URL (redis-py would refuse
it); ``redact`` hides the password of a URL in every message, log line and ``repr`` (dowork's
one ``redact_url``: the user part's password and every secret-looking query value).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from ..._redact import redact_url as redact

__all__ = ["redact", "without_flag"]

#: The URL query parameter that sets ``allow_eviction`` (``?allow_eviction=1``).
_ALLOW_EVICTION = "allow_eviction"


def _flag(value: str) -> bool:
    """A URL query flag: ``1``, ``true``, ``yes`` or ``on`` (any case) is true."""
    return value.strip().lower() in ("1", "true", "yes", "on")


def without_flag(url: str) -> tuple[str, bool | None]:
    """``url`` without its ``allow_eviction`` query parameter, and that parameter's value."""
    parts = urlsplit(url)
    if _ALLOW_EVICTION not in parts.query:
        return url, None
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    found = [v for k, v in pairs if k == _ALLOW_EVICTION]
    if not found:
        return url, None
    rest = urlencode([(k, v) for k, v in pairs if k != _ALLOW_EVICTION])
    return parts._replace(query=rest).geturl(), _flag(found[-1])
