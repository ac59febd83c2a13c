"""The dashboard's ASGI app: routes, page handlers and actions (Starlette, Jinja2 templates)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .. import admin
from .._redact import printable, redact_text
from ..backends import Backend, StoreAdmin, open_backend
from ..errors import BackendError
from . import _data
from ._security import CSRF_COOKIE, Guard, csrf_ok, new_csrf_token, same_origin

__all__ = ["create_app"]

log = logging.getLogger("dowork.dashboard")

_MAX_FORM = 64 * 1024
_REQUEUE_STATUSES = ("failed", "dead", "cancelled")


@dataclass(slots=True)
class _Dashboard:
    store: StoreAdmin
    owns_store: bool
    env: jinja2.Environment
    title: str
    refresh: float


def create_app(
    backend: Backend | str,
    *,
    token: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    allowed_hosts: tuple[str, ...] | list[str] | None = None,
    title: str = "dowork",
    refresh: float = 2.0,
) -> Any:
    """Build the dashboard as an ASGI app, to serve with uvicorn or mount in your own app.

    Args:
        backend: the store to show: a backend object (e.g. the ``MemoryBackend`` of this very
            process) or a URL (``sqlite:///tasks.db``, ``redis://...``), then opened and closed
            with the app; a SQLite file that does not exist is not created.
        token: require this secret (``Authorization: Bearer``, or ``?token=`` once in a browser).
        basic_auth: require this ``(user, password)`` (HTTP basic auth).
        allowed_hosts: only answer requests whose ``Host`` is one of these (None: any).
        title: shown in the page header.
        refresh: seconds between live updates of the overview.

    Mount it with Starlette's ``Mount("/dashboard", app=create_app(...))`` (or your
    framework's way of mounting an ASGI app); links follow the mount path. While the store
    cannot be read (unreachable, a missing or read-only file), every page answers 503 with
    one line saying why, passwords hidden.
    """
    owns = isinstance(backend, str)
    store = open_backend(backend, create=False) if isinstance(backend, str) else backend
    dashboard = _Dashboard(store, owns, _environment(), title, refresh)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if dashboard.owns_store:
            with contextlib.suppress(BackendError):
                await dashboard.store.close()

    app = Starlette(routes=_routes(dashboard), lifespan=lifespan)
    app.state.dashboard = dashboard
    guard = Guard(
        token=token,
        basic_auth=basic_auth,
        allowed_hosts=None if allowed_hosts is None else tuple(h.lower() for h in allowed_hosts),
    )
    return guard.wrap(app)


def _environment() -> jinja2.Environment:
    """The templates, with the filters and globals they use."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dowork.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        ago=_data.ago,
        clock=_data.clock_time,
        when=_data.full_time,
        duration=_data.duration,
        pct=lambda v: "-" if v is None else f"{v * 100:.1f} %",
    )
    env.globals["STATUSES"] = admin.STATUSES
    return env


def _routes(dashboard: _Dashboard) -> list[BaseRoute]:
    """The pages and actions, each answering 503 (or 500) in one line when it fails."""

    def page(handler: Callable[[Request, _Dashboard], Awaitable[Response]]) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request, dashboard)
            except (BackendError, OSError) as exc:  # OSError: also ConnectionError
                return _unavailable(request, dashboard, exc)
            except Exception as exc:  # never a traceback page: one line, the rest in the log
                said = printable(redact_text(f"{type(exc).__name__}: {exc}"))
                log.error("dashboard: %s %s failed: %s", request.method, request.url.path, said)
                log.debug("dashboard: %s failed", request.url.path, exc_info=True)
                return _unavailable(request, dashboard, exc, status=500)

        return endpoint

    return [
        Route("/", page(_overview), name="overview"),
        Route("/live/overview", page(_overview_fragment), name="overview_fragment"),
        Route("/queue", page(_queue), name="queue"),
        Route("/task", page(_task), name="task"),
        Route("/scheduled", page(_scheduled), name="scheduled"),
        Route("/purge", page(_purge_form), name="purge_form"),
        Route("/action/requeue", page(_requeue), methods=["POST"], name="requeue"),
        Route("/action/cancel", page(_cancel), methods=["POST"], name="cancel"),
        Route("/action/purge", page(_purge), methods=["POST"], name="purge"),
        Mount("/static", StaticFiles(packages=[("dowork.dashboard", "static")]), name="static"),
    ]


# -- rendering -------------------------------------------------------------------------------


def _render(
    request: Request,
    dashboard: _Dashboard,
    template: str,
    context: dict[str, Any],
    status: int = 200,
) -> HTMLResponse:
    """Render a template with the common context; set the CSRF cookie when it is new."""
    cookie = request.cookies.get(CSRF_COOKIE)
    token = cookie or new_csrf_token()
    root = request.scope.get("root_path", "")
    full = {
        "request": request,
        "root": root,
        "title": dashboard.title,
        "backend": repr(dashboard.store),
        "csrf": token,
        "msg": request.query_params.get("msg", ""),
        "here": _here(request),
        "refresh_ms": int(dashboard.refresh * 1000),
        "now": time.time(),
        "q": _q,
        **context,
    }
    body = dashboard.env.get_template(template).render(full)
    response = HTMLResponse(body, status_code=status)
    if cookie != token:
        response.set_cookie(CSRF_COOKIE, token, path=root or "/", httponly=True, samesite="strict")
    return response


def _unavailable(
    request: Request, dashboard: _Dashboard, error: BaseException, status: int = 503
) -> Response:
    """The error page for a store that cannot be read: one line, no password, no traceback."""
    text = str(error) if isinstance(error, BackendError) else f"{type(error).__name__}: {error}"
    first = (text.strip().splitlines() or [type(error).__name__])[0]
    said = "the store cannot be read" if status == 503 else "this page failed (see the log)"
    message = printable(redact_text(f"{said}: {first}"))
    try:
        return _render(request, dashboard, "error.html", {"message": message}, status=status)
    except Exception:  # the page itself failed: plain text, still one line
        return Response(message + "\n", status_code=status, media_type="text/plain")


def _q(**params: Any) -> str:
    """A query string from the parameters that are set (for links in templates)."""
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


def _here(request: Request) -> str:
    """The current page's path and query, for ``next`` fields (minus any message)."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "msg"]
    return request.url.path + (f"?{urlencode(query)}" if query else "")


# -- pages -----------------------------------------------------------------------------------


async def _overview(request: Request, d: _Dashboard) -> Response:
    data = await _data.overview(d.store)
    return _render(request, d, "overview.html", {"view": data})


async def _overview_fragment(request: Request, d: _Dashboard) -> Response:
    data = await _data.overview(d.store)
    return _render(request, d, "_overview_live.html", {"view": data})


def _page_number(request: Request) -> int:
    try:
        return max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        return 1


async def _queue(request: Request, d: _Dashboard) -> Response:
    queue = request.query_params.get("q", "")
    status = request.query_params.get("status") or None
    if status is not None and status not in admin.STATUSES:
        status = None
    task_id = request.query_params.get("id", "").strip()
    if task_id:
        view = await _data.task_view(d.store, task_id)
        if view is not None:
            return RedirectResponse(
                f"{request.scope.get('root_path', '')}/task?{_q(id=task_id)}", status_code=303
            )
        listing = _data.TaskPage(queue, status, "", [], 1, False, 0)
        context = {"listing": listing, "id_missing": task_id}
        context["counts"] = await d.store.counts(queue) if queue else {}
        return _render(request, d, "queue.html", context, status=404)
    name = request.query_params.get("name", "").strip()
    listing = await _data.task_list(d.store, queue, status, name, _page_number(request))
    counts = await d.store.counts(queue)
    return _render(
        request, d, "queue.html", {"listing": listing, "id_missing": "", "counts": counts}
    )


async def _task(request: Request, d: _Dashboard) -> Response:
    task_id = request.query_params.get("id", "")
    view = await _data.task_view(d.store, task_id)
    if view is None:
        return _render(
            request, d, "error.html", {"message": f"no task with id {task_id!r}"}, status=404
        )
    return _render(request, d, "task.html", {"view": view})


async def _scheduled(request: Request, d: _Dashboard) -> Response:
    schedules, delayed = await _data.scheduled(d.store)
    return _render(request, d, "scheduled.html", {"schedules": schedules, "delayed": delayed})


async def _purge_form(request: Request, d: _Dashboard) -> Response:
    queue = request.query_params.get("q", "")
    counts = await d.store.counts(queue)
    return _render(
        request,
        d,
        "purge.html",
        {"queue": queue, "counts": counts, "default": admin.PURGEABLE, "error": ""},
    )


# -- actions ---------------------------------------------------------------------------------


async def _form(request: Request) -> dict[str, list[str]] | Response:
    """The posted form once the origin and CSRF checks pass, else the refusal."""
    if not same_origin(request.headers.items(), request.headers.get("host", "")):
        return Response("cross-origin form refused\n", status_code=403, media_type="text/plain")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM:
            return Response("form too large\n", status_code=413, media_type="text/plain")
    form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    submitted = (form.get("csrf") or [""])[0]
    if not csrf_ok(request.cookies.get(CSRF_COOKIE), submitted):
        return Response(
            "CSRF check failed: reload the page and try again\n",
            status_code=403,
            media_type="text/plain",
        )
    return form


def _back(request: Request, form: dict[str, list[str]], message: str) -> Response:
    """Redirect to the form's ``next`` page (a local path only) with a message."""
    root = request.scope.get("root_path", "")
    target = (form.get("next") or [""])[0]
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        target = f"{root}/"
    joiner = "&" if "?" in target else "?"
    return RedirectResponse(f"{target}{joiner}{urlencode({'msg': message})}", status_code=303)


async def _requeue(request: Request, d: _Dashboard) -> Response:
    form = await _form(request)
    if isinstance(form, Response):
        return form
    ids = [i for i in form.get("id", []) if i]
    queue = (form.get("queue") or [""])[0]
    statuses = [s for s in form.get("status", []) if s in _REQUEUE_STATUSES]
    now = time.time()
    if ids:
        done = await d.store.requeue(ids, now)
    elif queue and statuses:
        done = await admin.requeue_finished(d.store, queue, statuses, now)
    else:
        return Response("nothing to re-queue\n", status_code=400, media_type="text/plain")
    return _back(request, form, f"re-queued {len(done)} task(s)")


async def _cancel(request: Request, d: _Dashboard) -> Response:
    form = await _form(request)
    if isinstance(form, Response):
        return form
    task_id = (form.get("id") or [""])[0]
    if not task_id:
        return Response("no task id\n", status_code=400, media_type="text/plain")
    answer = await admin.cancel_task(d.store, task_id, time.time())
    said = {
        "cancelled": "cancelled the task",
        "requested": "asked the task's worker to cancel it",
        "finished": "the task had already finished",
        "unknown": "no such task",
    }
    return _back(request, form, said.get(answer, answer))


async def _purge(request: Request, d: _Dashboard) -> Response:
    form = await _form(request)
    if isinstance(form, Response):
        return form
    queue = (form.get("queue") or [""])[0]
    statuses = [s for s in form.get("status", []) if s in admin.STATUSES]
    confirm = (form.get("confirm") or [""])[0]
    problem = ""
    if not statuses:
        problem = "pick at least one status to delete"
    elif not queue or confirm != queue:
        problem = "type the queue's name to confirm"
    if problem:
        counts = await d.store.counts(queue)
        return _render(
            request,
            d,
            "purge.html",
            {
                "queue": queue,
                "counts": counts,
                "default": statuses or admin.PURGEABLE,
                "error": problem,
            },
            status=400,
        )
    deleted = await admin.purge_queue(d.store, queue, statuses)
    root = request.scope.get("root_path", "")
    return _back(request, {"next": [f"{root}/queue?{_q(q=queue)}"]}, f"deleted {deleted} task(s)")
