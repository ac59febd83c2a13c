"""The dashboard when its store cannot be read: a 503 page with one line saying why (no
password, no traceback), on every page, and it never creates a SQLite file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from dowork.backends import MemoryBackend
from dowork.dashboard import create_app
from tests.redis_server import free_port

PAGES = ["/", "/live/overview", "/queue?q=app", "/task?id=abc", "/scheduled", "/purge?q=app"]
SECRET = "dash-Pa55-w0rd"


def message_of(html: str) -> str:
    start = html.index('<p class="flash bad">') + len('<p class="flash bad">')
    return html[start : html.index("</p>", start)]


def test_a_sqlite_path_in_a_missing_directory_is_a_503_page(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gone' / 'tasks.db'}"
    with TestClient(create_app(url), base_url="http://127.0.0.1") as client:
        for page in PAGES:
            answer = client.get(page)
            assert answer.status_code == 503, (page, answer.text)
            said = message_of(answer.text)
            assert said.startswith("the store cannot be read: cannot open SQLite database")
            assert "does not exist" in said
            assert "\n" not in said
            assert "Traceback" not in answer.text
    assert not (tmp_path / "gone").exists()


def test_a_mistyped_sqlite_file_is_not_created(tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    with TestClient(create_app(f"sqlite:///{typo}"), base_url="http://127.0.0.1") as client:
        answer = client.get("/")
    assert answer.status_code == 503
    assert "nothing was created" in message_of(answer.text)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    [
        "redis://alice:{secret}@127.0.0.1:{port}/0",
        "redis://127.0.0.1:{port}/0?password={secret}",
    ],
)
def test_an_unreachable_redis_is_a_503_page_without_the_password(url: str) -> None:
    url = url.format(secret=SECRET, port=free_port())
    with TestClient(create_app(url), base_url="http://127.0.0.1") as client:
        answer = client.get("/")
    assert answer.status_code == 503
    assert SECRET not in answer.text
    assert "***" in message_of(answer.text)


class _Broken(MemoryBackend):
    """A store whose reads fail with an error that is not a dowork one (a bug, say)."""

    async def queues(self) -> list[str]:
        raise RuntimeError(f"unexpected\nsecond line redis://u:{SECRET}@h/0")


def test_any_other_failure_is_a_one_line_page_not_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with TestClient(
        create_app(_Broken()), base_url="http://127.0.0.1", raise_server_exceptions=False
    ) as client:
        answer: Any = client.get("/")
    assert answer.status_code == 500
    said = message_of(answer.text)
    assert said == "this page failed (see the log): RuntimeError: unexpected"
    assert "Traceback" not in answer.text
    logged = [r.getMessage() for r in caplog.records if "dashboard: GET / failed" in r.getMessage()]
    assert logged, caplog.records
    assert SECRET not in logged[0]
    assert "u:***@h" in logged[0]
