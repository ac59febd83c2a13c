"""The dashboard over HTTP (Starlette's TestClient) against a real SQLite file and the test Redis.

Tasks are stored and run by a real durable queue on the same store (``dispatch()`` runs the due
ones once, so the outcomes are exact); the dashboard opens its own handle, like a separate
process would.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

import dowork
from dowork.backends import Backend, MemoryBackend, Record, open_backend
from dowork.cli import main
from dowork.dashboard import InsecureBind, check_bind, create_app

from .app import Shop, make_queue


@pytest.fixture
def queue(store_url: str) -> Iterator[Shop]:
    q = make_queue(store_url)
    yield q
    q.shutdown(timeout=5)


def cell(html: str, queue: str, status: str) -> int:
    """The count shown for ``queue`` and ``status`` in the overview's table."""
    row = re.search(rf'<tr data-queue="{re.escape(queue)}">(.*?)</tr>', html, re.S)
    assert row is not None, f"no row for {queue}"
    found = re.search(rf'data-status="{status}">(?:<a [^>]*>)?(\d+)', row.group(1))
    assert found is not None
    return int(found.group(1))


def csrf(client: TestClient, path: str = "/") -> str:
    """Load a page (which sets the CSRF cookie) and return the token its forms carry."""
    page = client.get(path)
    token = client.cookies.get("dowork_csrf")
    assert token, "the page set no CSRF cookie"
    if 'name="csrf"' in page.text:  # every form on the page carries the cookie's token
        assert page.text.count('name="csrf"') == page.text.count(f'name="csrf" value="{token}"')
    return token


def post(client: TestClient, action: str, **fields: Any) -> Any:
    data = {"csrf": csrf(client, str(fields.get("next", "/"))), **fields}
    return client.post(f"/action/{action}", data=data, follow_redirects=False)


def status_of(url: str, task_id: str) -> str:
    async def read() -> str:
        store = open_backend(url)
        try:
            (record,) = await store.get([task_id])
            return record.status
        finally:
            await store.close()

    return asyncio.run(read())


# -- pages -----------------------------------------------------------------------------------


def test_overview_counts_every_queue_by_status(
    queue: Shop, store_url: str, client: TestClient, tmp_path: Path
) -> None:
    for who in ("ada", "bob", "cy"):
        queue.greet.submit(who)
    queue.flaky.submit(str(tmp_path / "missing"))
    queue.call_later(3600, queue.greet, "later")
    queue.dispatch()
    mail = make_queue(store_url, "mail")
    mail.greet.submit("x")
    mail.greet.submit("y")

    page = client.get("/")
    assert page.status_code == 200
    assert cell(page.text, "shop", "succeeded") == 3
    assert cell(page.text, "shop", "failed") == 1
    assert cell(page.text, "shop", "scheduled") == 1
    assert cell(page.text, "shop", "pending") == 0
    assert cell(page.text, "mail", "pending") == 2
    live = client.get("/live/overview")  # what the page polls: the same table, no layout
    assert "<html" not in live.text
    assert cell(live.text, "mail", "pending") == 2
    mail.greet.submit("z")
    assert cell(client.get("/live/overview").text, "mail", "pending") == 3
    mail.shutdown()


def test_overview_shows_live_workers_throughput_and_schedules(
    store_url: str, client: TestClient, tmp_path: Path
) -> None:
    worker = make_queue(store_url, "busy")
    worker.every(3600, worker.greet, "hourly")
    worker.start()
    try:
        tasks = [worker.greet.submit(str(i)) for i in range(6)]
        tasks.append(worker.flaky.submit(str(tmp_path / "nope")))
        for task in tasks:
            assert task.wait(10)
        deadline = time.monotonic() + 10
        while True:  # the next beat (every 0.2 s) carries the finished counts
            page = client.get("/").text
            if "14.3 %" in page:
                break
            assert time.monotonic() < deadline, page
            time.sleep(0.1)
        assert re.search(r"\(1 alive\)", page)
        assert 'class="ok"' in page
        assert 'class="bad"' in page
        assert "14.3 %" in page  # 1 of 7 finished tasks failed
        scheduled = client.get("/scheduled").text
        assert "Every(3600" in scheduled or "every" in scheduled.lower()
        assert "greet" in scheduled
    finally:
        worker.shutdown(timeout=5)
    page = client.get("/").text
    assert "(0 alive)" in page  # a worker that stopped says so at once


def test_task_list_is_newest_first_and_filters_by_name_and_id(
    queue: Shop, client: TestClient, tmp_path: Path
) -> None:
    greets = [queue.greet.submit(f"n{i}") for i in range(4)]
    bad = queue.flaky.submit(str(tmp_path / "off"))
    page = client.get("/queue", params={"q": "shop"}).text
    ids = [t.id for t in [*greets, bad]]
    shown = [i for i in re.findall(r'/task\?id=([0-9a-f]+)"', page) if i in ids]
    assert shown == [t.id for t in reversed([*greets, bad])]
    only = client.get("/queue", params={"q": "shop", "name": "FLA"}).text
    assert bad.id in only
    assert not any(t.id in only for t in greets)
    by_status = client.get("/queue", params={"q": "shop", "status": "pending"}).text
    assert all(t.id in by_status for t in greets)
    found = client.get("/queue", params={"q": "shop", "id": greets[1].id}, follow_redirects=False)
    assert found.status_code == 303
    assert found.headers["location"].endswith(f"/task?id={greets[1].id}")
    missing = client.get("/queue", params={"q": "shop", "id": "nope"})
    assert missing.status_code == 404
    assert "No task with id" in missing.text


class ListSpy:
    """A backend wrapper that records the page sizes ``list()`` is asked for."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.limits: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return repr(self.inner)

    async def list(self, *args: Any, **kwargs: Any) -> list[Record]:
        self.limits.append(kwargs.get("limit", 100))
        return await self.inner.list(*args, **kwargs)


def test_listing_10000_pending_tasks_reads_one_page(store_url: str) -> None:
    async def fill() -> None:
        store = open_backend(store_url)
        try:
            for start in range(0, 10_000, 1000):
                await store.push(
                    [
                        Record(
                            id=f"t{n:05d}", queue="big", name="greet",
                            payload=b'{"a":["x"],"k":{}}', run_at=1e9, created_at=1e9 + n,
                        )
                        for n in range(start, start + 1000)
                    ]
                )  # fmt: skip
        finally:
            await store.close()

    asyncio.run(fill())
    spy = ListSpy(open_backend(store_url))
    app = create_app(cast(Backend, spy))  # a Backend by delegation (see ListSpy.__getattr__)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        first = client.get("/queue", params={"q": "big", "status": "pending"}).text
        assert "page 1 of 200" in first
        rows = re.findall(r'/task\?id=(t\d+)"', first)
        assert rows[:2] == ["t09999", "t09998"]
        assert len(rows) == 50
        last = client.get("/queue", params={"q": "big", "status": "pending", "page": 200}).text
        rows = re.findall(r'/task\?id=(t\d+)"', last)
        assert rows[-1] == "t00000"
        assert len(rows) == 50
        assert 'rel="next"' not in last
        assert max(spy.limits) <= 51  # one page (and one more row to know if there is a next)
        searched = client.get("/queue", params={"q": "big", "name": "zzz"}).text
        assert "among the newest 5000" in searched  # a name search stops, it never loads all
        assert sum(spy.limits[-20:]) <= 5500
    asyncio.run(spy.inner.close())


def test_task_page_shows_escaped_arguments_attempts_tracebacks_and_result(
    queue: Shop, client: TestClient
) -> None:
    evil = "<script>alert('x')</script>"
    ok = queue.greet.submit(evil)
    boom = queue.boom.submit("<img src=x onerror=alert(1)>")
    queue.dispatch()
    queue.dispatch()  # boom's second (last) attempt
    page = client.get("/task", params={"id": ok.id}).text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page  # arguments and result
    assert "hello &lt;script&gt;" in page
    assert "succeeded" in page
    failed = client.get("/task", params={"id": boom.id}).text
    assert "<img src=x" not in failed
    assert failed.count('<td class="num">') >= 2  # two attempts in the table
    assert "badge s-retry" in failed
    assert "badge s-failed" in failed
    assert "ValueError: cannot handle &lt;img" in failed
    assert "Traceback (most recent call last)" in failed
    assert "raise ValueError(f&#34;cannot handle {note}&#34;)" in failed  # the traceback's line
    listing = client.get("/queue", params={"q": "shop"}).text
    assert "<img src=x" not in listing
    assert client.get("/task", params={"id": "unknown"}).status_code == 404


def test_task_page_shows_the_reported_progress_escaped(store_url: str, client: TestClient) -> None:
    jobs = make_queue(store_url, "reports")

    def build(n: int) -> int:
        dowork.current_task().report_progress(0.75, "<b>3 of 4</b> parts")
        return n

    jobs.task(name="build")(build)
    fn = jobs.registry.get("build")
    assert fn is not None
    task = fn.submit(4)
    jobs.dispatch()
    page = client.get("/task", params={"id": task.id}).text
    assert '<dd id="progress">0.75 · &lt;b&gt;3 of 4&lt;/b&gt; parts' in page
    jobs.shutdown()


def test_task_page_shows_priority_and_concurrency_key(store_url: str, client: TestClient) -> None:
    jobs = make_queue(store_url, "exports")
    jobs.task(name="export")(abs)
    fn = jobs.registry.get("export")
    assert fn is not None
    task = jobs.enqueue(fn.task(-3).configure(priority=7, concurrency_key="<tenant-9>"))
    page = client.get("/task", params={"id": task.id}).text
    assert "<dt>priority</dt><dd>7</dd>" in page
    assert "<dd>&lt;tenant-9&gt;</dd>" in page
    jobs.shutdown()


def test_task_page_shows_a_chained_jobs_log(store_url: str, client: TestClient) -> None:
    jobs = make_queue(store_url, "jobs")

    def fetch(args: dict[str, Any]) -> dict[str, Any]:
        return args | {"body": "<p>page</p>"}

    def parse(args: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("not found")

    jobs.chain("crawl", fetch, parse)
    task = jobs.submit_job("crawl", {"url": "example.org/404"})
    jobs.dispatch()
    page = client.get("/task", params={"id": task.id}).text
    assert "Chain log" in page
    assert "reached handler 1" in page
    assert "parse" in page
    assert "ValueError: not found" in page
    assert "&lt;p&gt;page&lt;/p&gt;" in page  # the args there, escaped
    jobs.shutdown()


def test_scheduled_page_lists_delayed_tasks_with_their_time(
    queue: Shop, client: TestClient
) -> None:
    later = queue.call_later(7200, queue.greet, "tomorrow")
    page = client.get("/scheduled").text
    assert later.id[:18] in page
    assert "in 2.0 h" in page or "in 120 min" in page


def test_static_assets_are_local_and_pages_carry_security_headers(client: TestClient) -> None:
    page = client.get("/")
    assert page.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page.text)  # nothing from outside
    assert client.get("/static/dashboard.css").status_code == 200
    assert "fetch(" in client.get("/static/dashboard.js").text


# -- actions ---------------------------------------------------------------------------------


def test_requeue_one_failed_task(
    queue: Shop, store_url: str, client: TestClient, tmp_path: Path
) -> None:
    switch = tmp_path / "switch"
    task = queue.flaky.submit(str(switch))
    queue.dispatch()
    assert status_of(store_url, task.id) == "failed"
    page = client.get("/task", params={"id": task.id}).text
    assert "Re-queue" in page
    answer = post(client, "requeue", id=task.id, next=f"/task?id={task.id}")
    assert answer.status_code == 303
    assert "re-queued+1+task" in answer.headers["location"]
    assert status_of(store_url, task.id) == "pending"
    switch.touch()
    queue.dispatch()
    assert status_of(store_url, task.id) == "succeeded"
    page = client.get("/task", params={"id": task.id}).text
    assert "the service behind" in page  # the first attempt's error stays in the history
    assert "&#34;fixed&#34;" in page


def test_requeue_all_failed_and_dead(
    queue: Shop, store_url: str, client: TestClient, tmp_path: Path
) -> None:
    failed = [queue.flaky.submit(str(tmp_path / "x")) for _ in range(3)]
    queue.dispatch()
    answer = post(client, "requeue", queue="shop", status="failed", next="/queue?q=shop")
    assert "re-queued+3+task" in answer.headers["location"]
    assert {status_of(store_url, t.id) for t in failed} == {"pending"}
    nothing = post(client, "requeue", queue="shop", status="dead", next="/queue?q=shop")
    assert "re-queued+0+task" in nothing.headers["location"]


def test_cancel_a_pending_task(queue: Shop, store_url: str, client: TestClient) -> None:
    task = queue.greet.submit("never")
    answer = post(client, "cancel", id=task.id, next="/queue?q=shop")
    assert answer.status_code == 303
    assert "cancelled+the+task" in answer.headers["location"]
    assert status_of(store_url, task.id) == "cancelled"


def test_purge_needs_the_queues_name(queue: Shop, store_url: str, client: TestClient) -> None:
    tasks = [queue.greet.submit(str(i)) for i in range(3)]
    form = client.get("/purge", params={"q": "shop"}).text
    assert "Type the queue" in form
    wrong = post(client, "purge", queue="shop", status="pending", confirm="shoe")
    assert wrong.status_code == 400
    assert status_of(store_url, tasks[0].id) == "pending"
    none = post(client, "purge", queue="shop", confirm="shop")  # no status ticked
    assert none.status_code == 400
    done = post(client, "purge", queue="shop", status="pending", confirm="shop")
    assert done.status_code == 303
    assert "deleted+3+task" in done.headers["location"]
    assert "No queues yet" in client.get("/").text


def test_posts_without_a_matching_csrf_token_are_refused(
    queue: Shop, store_url: str, client: TestClient
) -> None:
    task = queue.greet.submit("keep")
    assert client.post("/action/cancel", data={"id": task.id}).status_code == 403
    csrf(client)
    forged = client.post("/action/cancel", data={"id": task.id, "csrf": "guess"})
    assert forged.status_code == 403
    token = csrf(client)
    cross = client.post(
        "/action/cancel",
        data={"id": task.id, "csrf": token},
        headers={"Origin": "http://evil.example"},
    )
    assert cross.status_code == 403
    assert client.get("/action/cancel").status_code == 405  # actions are POST only
    assert status_of(store_url, task.id) == "pending"


def test_redis_passwords_are_never_rendered(redis_server: Any) -> None:
    port = redis_server.url.rsplit(":", 1)[1].split("/")[0]
    url = f"redis://user:s3cret-pw@127.0.0.1:{port}/0"  # the test server has no such user
    with TestClient(create_app(url), base_url="http://127.0.0.1") as client:
        page = client.get("/")
    assert page.status_code == 503
    assert "s3cret-pw" not in page.text
    assert "***" in page.text


# -- who may look ----------------------------------------------------------------------------


def test_token_auth(sqlite_url: str) -> None:
    app = create_app(sqlite_url, token="t0ken")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/").status_code == 401
        assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/", headers={"Authorization": "Bearer t0ken"}).status_code == 200
        assert client.get("/static/dashboard.css").status_code == 401
        once = client.get("/queue?q=a&token=t0ken", follow_redirects=False)
        assert once.status_code == 303
        assert once.headers["location"] == "/queue?q=a"  # the token leaves the address bar
        assert client.get("/").status_code == 200  # the cookie it set


def test_basic_auth(sqlite_url: str) -> None:
    with TestClient(
        create_app(sqlite_url, basic_auth=("ops", "pw")), base_url="http://127.0.0.1"
    ) as client:
        refused = client.get("/")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert client.get("/", auth=("ops", "nope")).status_code == 401
        assert client.get("/", auth=("ops", "pw")).status_code == 200


def test_unknown_host_names_are_refused(sqlite_url: str) -> None:
    app = create_app(sqlite_url, allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1:8787") as client:
        assert client.get("/").status_code == 200
        assert client.get("/", headers={"Host": "attacker.example"}).status_code == 421


def test_a_non_loopback_bind_needs_auth_or_insecure(sqlite_url: str) -> None:
    result = CliRunner().invoke(main, ["dashboard", "--backend", sqlite_url, "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "refusing to serve the dashboard on 0.0.0.0" in result.output
    bad_auth = CliRunner().invoke(
        main, ["dashboard", "--backend", sqlite_url, "--host", "0.0.0.0", "--auth", "nopass"]
    )
    assert bad_auth.exit_code == 1
    assert "USER:PASSWORD" in bad_auth.output
    with pytest.raises(InsecureBind):
        check_bind("192.168.1.5", protected=False, insecure=False)
    check_bind("127.0.0.1", protected=False, insecure=False)
    check_bind("::1", protected=False, insecure=False)
    check_bind("0.0.0.0", protected=True, insecure=False)
    check_bind("0.0.0.0", protected=False, insecure=True)


# -- mounted in an application ---------------------------------------------------------------


def test_mounted_in_an_app_shows_this_processes_memory_backend() -> None:
    store = MemoryBackend()
    queue = dowork.Queue("inproc", backend=store, log=False)

    @queue.task(name="hello")
    def hello() -> str:
        return "hi"

    task = hello.submit()
    outer = Starlette(routes=[Mount("/ops/dash", app=create_app(store))])
    with TestClient(outer, base_url="http://127.0.0.1") as client:
        page = client.get("/ops/dash/").text
        assert cell(page, "inproc", "pending") == 1
        assert 'href="/ops/dash/static/dashboard.css"' in page
        assert 'data-refresh="/ops/dash/live/overview"' in page
        token = csrf(client, "/ops/dash/")
        answer = client.post(
            "/ops/dash/action/cancel",
            data={"id": task.id, "csrf": token, "next": "/ops/dash/"},
            follow_redirects=False,
        )
        assert answer.headers["location"].startswith("/ops/dash/?msg=")
    assert queue.status(task.id) is dowork.TaskStatus.CANCELLED
    queue.shutdown()


def test_the_dashboard_command_serves_on_loopback(sqlite_url: str) -> None:
    from tests.redis_server import free_port

    port = free_port()
    root = Path(__file__).resolve().parents[2]
    server = subprocess.Popen(
        [sys.executable, "-m", "dowork", "dashboard", "--backend", sqlite_url, "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
                    assert answer.status == 200
                    assert "No queues yet" in answer.read().decode()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "the dashboard did not answer"
                time.sleep(0.1)
        rebinding = urllib.request.Request(
            f"http://127.0.0.1:{port}/", headers={"Host": "attacker.example"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(rebinding, timeout=2)
        refused.value.close()
        assert refused.value.code == 421  # no auth on loopback: only loopback host names
    finally:
        server.terminate()
        server.communicate(timeout=10)


@pytest.mark.parametrize(
    ("status", "offered"),
    [("pending", True), ("reserved", True), ("running", True), ("succeeded", False)],
)
def test_the_task_page_offers_cancel_while_the_task_is_unfinished(
    status: str, offered: bool
) -> None:
    """A claimed task waiting for its worker's thread (``reserved``) can be cancelled too."""
    from dowork.dashboard._data import TaskView

    record = Record(
        id="t", queue="q", name="n", payload=b"{}", run_at=0.0, created_at=0.0, status=status
    )
    assert TaskView(record, "{}", None, None).cancellable is offered
