"""The dashboard's guards: who may look (token or basic auth), forged posts (CSRF), binds.

A dashboard can re-queue and purge, so it is closed by default: it binds to loopback, a
non-loopback bind needs a token or a password (or an explicit ``--insecure``), every action is
a POST carrying a CSRF token that must match a cookie the page set, and posts from another
origin are refused. Pages get headers that forbid framing and any script or style not
served by the dashboard itself.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus, urlsplit

__all__ = [
    "CSRF_COOKIE",
    "Guard",
    "InsecureBind",
    "check_bind",
    "is_loopback",
]

CSRF_COOKIE = "dowork_csrf"
TOKEN_COOKIE = "dowork_token"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]  # fmt: skip


class InsecureBind(ValueError):
    """A non-loopback bind without a token or password, and without ``--insecure``."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts local connections."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, protected: bool, insecure: bool) -> None:
    """Refuse to serve on a non-loopback address with no token or password.

    Raises:
        InsecureBind: ``host`` is reachable from other machines, no auth is configured and
            ``insecure`` is false.
    """
    if is_loopback(host) or protected or insecure:
        return
    raise InsecureBind(
        f"refusing to serve the dashboard on {host} without a token or password: anyone who "
        "can reach it could re-queue and purge tasks. Set --token or --auth USER:PASSWORD "
        "(or DOWORK_DASHBOARD_TOKEN / DOWORK_DASHBOARD_AUTH), bind to 127.0.0.1, or pass "
        "--insecure if something in front of it does the checking."
    )


@dataclass(frozen=True, slots=True)
class Guard:
    """Auth, host and CSRF settings of one dashboard app, applied as ASGI middleware.

    Attributes:
        token: a secret accepted as ``Authorization: Bearer``, as the ``dowork_token`` cookie,
            or once as ``?token=`` (which sets the cookie).
        basic_auth: ``(user, password)`` for HTTP basic auth (the browser asks).
        allowed_hosts: ``Host`` header values served (None: any); a loopback dashboard
            without auth refuses other names, so a DNS-rebinding page cannot read it.
    """

    token: str | None = None
    basic_auth: tuple[str, str] | None = None
    allowed_hosts: tuple[str, ...] | None = None

    @property
    def protected(self) -> bool:
        """Whether a secret is required."""
        return bool(self.token or self.basic_auth)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """Return ``app`` behind these checks, with the security headers on every answer."""

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            headers = _headers(scope)
            if self.allowed_hosts is not None:
                host = headers.get("host", "").rsplit(":", 1)[0].strip("[]").lower()
                if host.endswith("]") or host.count(":") > 1:  # a bare IPv6 address
                    host = headers.get("host", "").strip("[]").lower()
                if host not in self.allowed_hosts:
                    await _plain(send, 421, "this dashboard is not served under that host name")
                    return
            verdict = self._authenticate(scope, headers)
            if verdict == "challenge":
                await _plain(
                    send,
                    401,
                    "authentication required",
                    [(b"www-authenticate", b'Basic realm="dowork", charset="UTF-8"')],
                )
                return
            if verdict == "refused":
                await _plain(send, 401, "a valid token is required (?token=... or a Bearer header)")
                return
            if isinstance(verdict, bytes):  # ?token= accepted: set the cookie, drop the query
                await _redirect_with_cookie(scope, send, verdict)
                return

            async def send_with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"], *_HEADERS]
                await send(message)

            await app(scope, receive, send_with_headers)

        return guarded

    def _authenticate(self, scope: Scope, headers: dict[str, str]) -> str | bytes | None:
        """None when allowed; ``challenge``/``refused``; or a token cookie value to set."""
        if not self.protected:
            return None
        auth = headers.get("authorization", "")
        if self.basic_auth is not None and auth[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return "challenge"
            want_user, want_password = self.basic_auth
            if _same(user, want_user) & _same(password, want_password):
                return None
            return "challenge"
        if self.token is not None:
            if auth[:7].lower() == "bearer " and _same(auth[7:].strip(), self.token):
                return None
            if _same(_cookies(headers).get(TOKEN_COOKIE, ""), self.token):
                return None
            query = scope.get("query_string", b"").decode("latin-1")
            for pair in query.split("&"):
                key, _, value = pair.partition("=")
                if key == "token" and _same(unquote_plus(value), self.token):
                    return self.token.encode()
        return "challenge" if self.basic_auth is not None else "refused"


def new_csrf_token() -> str:
    """A fresh random CSRF token for the cookie and the forms."""
    return secrets.token_urlsafe(24)


def csrf_ok(cookie: str | None, submitted: str | None) -> bool:
    """Whether a form's CSRF field matches the cookie (both present, compared in constant time)."""
    return bool(cookie) and bool(submitted) and _same(cookie or "", submitted or "")


def same_origin(headers: Iterable[tuple[str, str]], host: str) -> bool:
    """Whether a request's ``Origin`` (or else ``Referer``) names this host; absent is fine.

    Browsers send ``Origin`` on every cross-site POST, so a form on another site is refused
    even before its CSRF field is checked.
    """
    values = dict(headers)
    source = values.get("origin") or values.get("referer")
    if not source or source == "null":
        return source != "null"
    return urlsplit(source).netloc.lower() == host.lower()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _cookies(headers: dict[str, str]) -> dict[str, str]:
    out = {}
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            out[key] = value
    return out


async def _plain(
    send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = (text + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        *_HEADERS,
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect_with_cookie(scope: Scope, send: Send, token: bytes) -> None:
    root = scope.get("root_path", "") or ""
    path = scope.get("path", "/")  # Starlette keeps the full path, mount prefix included
    query = "&".join(
        p
        for p in scope.get("query_string", b"").decode("latin-1").split("&")
        if p and not p.startswith("token=")
    )
    location = path + (f"?{query}" if query else "")
    cookie = (
        f"{TOKEN_COOKIE}={token.decode()}; Path={root or '/'}; HttpOnly; SameSite=Strict"
    ).encode()
    headers = [
        (b"location", location.encode("latin-1")),
        (b"set-cookie", cookie),
        (b"content-length", b"0"),
        *_HEADERS,
    ]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
