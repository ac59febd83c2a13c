"""``dowork dashboard``: serve the web dashboard for a store (needs ``dowork[dashboard]``).

A non-loopback address needs a token or basic auth (or --insecure); on loopback without
either, only local host names are accepted, so no DNS-rebinding page can read it.
"""

from __future__ import annotations

import click

from .common import BACKEND_ENV, backend_option, fail, open_store

__all__ = ["dashboard"]


@click.command()
@backend_option(f"The store to show (or ${BACKEND_ENV}).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8787, show_default=True)
@click.option("--token", envvar="DOWORK_DASHBOARD_TOKEN", help="Require this secret.")
@click.option("--auth", envvar="DOWORK_DASHBOARD_AUTH", metavar="USER:PASSWORD",
              help="Require HTTP basic auth.")  # fmt: skip
@click.option("--insecure", is_flag=True, help="Serve a non-loopback address without auth.")
def dashboard(
    backend: str, host: str, port: int, token: str | None, auth: str | None, insecure: bool
) -> None:
    """Serve the web dashboard for the queues in URL (needs dowork[dashboard])."""
    try:
        import uvicorn

        from ..dashboard import InsecureBind, check_bind, create_app, is_loopback
    except ImportError as exc:
        raise fail(
            f"the dashboard needs its extra: pip install 'dowork[dashboard]' ({exc})", exc
        ) from None
    basic = None
    if auth:
        user, colon, password = auth.partition(":")
        if not colon or not password:
            raise fail("--auth takes USER:PASSWORD")
        basic = (user, password)
    try:
        check_bind(host, protected=bool(token or basic), insecure=insecure)
    except InsecureBind as exc:
        raise fail(str(exc)) from None
    hosts = None
    if not (token or basic) and is_loopback(host):  # no DNS-rebinding page may read it
        hosts = ["localhost", "127.0.0.1", "::1", host]
    store = open_store(backend, create=False)
    app = create_app(store, token=token, basic_auth=basic, allowed_hosts=hosts)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"dowork: dashboard on http://{shown}:{port}/", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
