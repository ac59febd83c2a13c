"""The dowork command for operators: every error is one line (exit 1, traceback only with -v),
read-only commands create nothing, secrets never show (messages, ``ps``), ``--backend`` comes
from ``$DOWORK_BACKEND`` too, a dump re-queued twice stores each task once, and task data
cannot put control characters on the terminal. Real subprocesses on real SQLite files and
the test Redis."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import dowork
from dowork.backends import Record, SQLiteBackend, open_backend
from tests.backends.conftest import add_acl_user
from tests.cli.test_cli import ROOT, dowork_cmd, env
from tests.redis_server import RedisServer, free_port

SECRET = "qu3ry-Pa55-w0rd"


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``Error: ...`` line of a failed command (exit 1, no traceback)."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines
    return lines[0]


def make_store(path: Path, *records: Record) -> str:
    """A dowork SQLite file holding ``records``; its URL."""

    async def go() -> None:
        store = SQLiteBackend(path)
        try:
            await store.open()
            if records:
                await store.push(list(records))
        finally:
            await store.close()

    asyncio.run(go())
    return f"sqlite:///{path}"


def record(task_id: str, name: str = "record", queue: str = "app") -> Record:
    now = time.time()
    return Record(task_id, queue, name, b'{"a":[1],"k":{}}', now, now)


def dump_file(path: Path, ids: list[str], queue: str = "app") -> Path:
    lines: list[dict[str, object]] = [
        {"v": 1, "queue": queue, "id": i, "task": "record", "args": [n], "kwargs": {},
         "options": {}, "status": "pending", "attempts": 0, "not_before": None,
         "restorable": True, "why": None}
        for n, i in enumerate(ids)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def unprivileged() -> list[str]:
    """A command prefix under which file modes bind this process (root ignores them)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop root's permission override"
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def commands(url: str, dump: Path) -> dict[str, list[str]]:
    """Every command that takes --backend, pointed at ``url``."""
    return {
        "status": ["status", "--backend", url],
        "list": ["list", "--backend", url, "-q", "app"],
        "inspect": ["inspect", "abc", "--backend", url],
        "requeue --dead": ["requeue", "--dead", "--backend", url, "-q", "app"],
        "requeue FILE": ["requeue", str(dump), "--backend", url],
        "purge": ["purge", "--backend", url, "-q", "app", "--yes"],
        "worker": ["worker", "tests.durable.app:queue", "--backend", url, "--no-metrics"],
    }


# -- every error is one line --------------------------------------------------------------------


def test_a_sqlite_path_in_a_missing_directory_is_one_line_everywhere(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "tasks.db"
    dump = dump_file(tmp_path / "dump.jsonl", ["d1"])
    for what, argv in commands(f"sqlite:///{missing}", dump).items():
        line = one_line_error(dowork_cmd(*argv))
        assert f"{tmp_path / 'no-such-dir'} does not exist" in line, (what, line)
    assert not (tmp_path / "no-such-dir").exists()


def test_a_read_only_database_file_is_one_line_everywhere(tmp_path: Path) -> None:
    url = make_store(tmp_path / "tasks.db", record("t1"))
    os.chmod(tmp_path / "tasks.db", 0o444)
    dump = dump_file(tmp_path / "dump.jsonl", ["d1"])
    for what, argv in commands(url, dump).items():
        result = subprocess.run(
            [*unprivileged(), sys.executable, "-m", "dowork", *argv],
            capture_output=True, text=True, timeout=120, cwd=ROOT, env=env(), check=False,
        )  # fmt: skip
        line = one_line_error(result)
        assert "is read-only" in line, (what, line)
        assert str(tmp_path / "tasks.db") in line, (what, line)


def test_a_worker_that_cannot_reach_redis_is_one_line() -> None:
    """Nothing after the line either (no asyncio warning about a task left pending)."""
    url = f"redis://alice:{SECRET}@127.0.0.1:{free_port()}/0"
    line = one_line_error(
        dowork_cmd("worker", "tests.durable.app:queue", "--backend", url, "--no-metrics")
    )
    assert "cannot reach RedisBackend('redis://alice:***@127.0.0.1" in line
    assert SECRET not in line


def test_the_traceback_shows_only_with_verbose(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}"
    quiet = dowork_cmd("status", "--backend", url)
    one_line_error(quiet)
    loud = dowork_cmd("-v", "status", "--backend", url)
    assert loud.returncode == 1
    assert "Traceback" in loud.stderr
    assert loud.stderr.strip().splitlines()[-1] == quiet.stderr.strip()


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (bytes(range(256)) * 8, "is a binary file"),
        (b"\xff\xfe\xfa garbage\n", "line 1 is not UTF-8 text"),
        (b"hello world\nnot json either\n", "line 1 is not a JSON object"),
    ],
)
def test_a_file_that_is_not_a_dump_is_one_line(tmp_path: Path, content: bytes, said: str) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(content)
    url = make_store(tmp_path / "t.db")
    for where in (["--backend", url], ["--app", "tests.durable.app:queue"]):
        line = one_line_error(dowork_cmd("requeue", str(junk), *where))
        assert said in line, line
        assert "not a dump file" in line or "binary" in line


_BLOCK_REDIS = """
import sys

class _NoRedis:  # as if the 'redis' extra were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("redis", "hiredis"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoRedis())
for loaded in [m for m in sys.modules if m.split(".")[0] in ("redis", "hiredis")]:
    del sys.modules[loaded]
from dowork.cli import main
sys.argv = ["dowork", *sys.argv[1:]]
main()
"""


def test_a_redis_url_without_the_redis_package_says_what_to_install() -> None:
    url = f"redis://alice:{SECRET}@127.0.0.1:{free_port()}/0"
    for argv in (
        ["status", "--backend", url],
        ["worker", "tests.durable.app:queue", "--backend", url, "--no-metrics"],
    ):
        result = subprocess.run(
            [sys.executable, "-c", _BLOCK_REDIS, *argv],
            capture_output=True, text=True, timeout=120, cwd=ROOT, env=env(), check=False,
        )  # fmt: skip
        line = one_line_error(result)
        assert "pip install 'dowork[redis]'" in line, line
        assert SECRET not in line


# -- read-only commands create nothing ----------------------------------------------------------


def test_read_only_commands_never_create_a_store(tmp_path: Path) -> None:
    typo = tmp_path / "typo.db"
    for argv in (
        ["status", "--backend", f"sqlite:///{typo}"],
        ["list", "--backend", f"sqlite:///{typo}", "-q", "app"],
        ["inspect", "abc", "--backend", f"sqlite:///{typo}"],
        ["purge", "--backend", f"sqlite:///{typo}", "-q", "app", "--yes"],
        ["requeue", "--dead", "--backend", f"sqlite:///{typo}", "-q", "app"],
    ):
        line = one_line_error(dowork_cmd(*argv))
        assert "nothing was created" in line, line
    assert list(tmp_path.iterdir()) == []  # no file, no -wal, no -shm


def test_a_sqlite_file_of_another_application_is_left_untouched(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    conn.close()
    line = one_line_error(dowork_cmd("status", "--backend", f"sqlite:///{other}"))
    assert "holds no dowork tasks" in line
    with sqlite3.connect(other) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]
    conn.close()
    assert tables == ["users"]


def test_status_still_reads_an_existing_store(tmp_path: Path) -> None:
    url = make_store(tmp_path / "t.db", record("t1"))
    result = dowork_cmd("status", "--backend", url, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"app": {"pending": 1}}


# -- secrets --------------------------------------------------------------------------------


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_a_password_in_the_query_string_never_shows(tmp_path: Path, verbose: list[str]) -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}/0?password={SECRET}"
    url = make_store(tmp_path / "t.db")
    for argv in (
        ["inspect", "abc", "--backend", unreachable],
        ["status", "--backend", unreachable],
        ["inspect", "missing-id", "--backend", f"{url}?password={SECRET}"],  # found no task
        ["status", "--backend", f"bogus://alice:{SECRET}@host/0?password={SECRET}"],
    ):
        result = dowork_cmd(*verbose, *argv)
        assert result.returncode == 1, result.stderr
        assert SECRET not in result.stdout + result.stderr, (argv, result.stderr)
        assert "***" in result.stderr, result.stderr
    assert "no task 'missing-id' in" in dowork_cmd("inspect", "missing-id", "--backend", url).stderr


def test_the_unknown_scheme_error_of_open_backend_hides_the_password() -> None:
    with pytest.raises(ValueError, match="unknown backend URL") as caught:
        open_backend(f"ftp://alice:{SECRET}@host/?token={SECRET}&x=1")
    assert SECRET not in str(caught.value)
    assert "alice:***@host" in str(caught.value)


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    add_acl_user(server.url, "alice", SECRET)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.realtime
def test_worker_processes_get_the_url_through_the_environment(
    acl_redis: RedisServer, tmp_path: Path
) -> None:
    """``--processes`` children never carry the password on their command line (``ps``).

    (The first process is the one the user started, with the command line they gave it.)
    """
    url = (
        f"redis://alice:{SECRET}@127.0.0.1:{acl_redis.port}/0?prefix=dowork:p{uuid.uuid4().hex[:6]}"
    )
    parent = subprocess.Popen(
        [sys.executable, "-m", "dowork", "worker", "tests.durable.app:queue", "--backend", url,
         "--processes", "3", "--no-metrics"],
        cwd=ROOT, env=env(), stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert parent.stderr is not None
        pids: list[int] = []
        deadline = time.monotonic() + 30
        while len(pids) < 2 and time.monotonic() < deadline:
            found = re.search(r"worker \d started \(pid (\d+)\)", parent.stderr.readline())
            if found:
                pids.append(int(found.group(1)))
        assert len(pids) == 2
        for pid in pids:
            proc = Path(f"/proc/{pid}/cmdline")
            deadline = time.monotonic() + 10
            while not proc.read_bytes() and time.monotonic() < deadline:
                time.sleep(0.01)  # empty for a moment while the new program is being loaded
            cmdline = proc.read_bytes()
            assert b"dowork\0worker\0tests.durable.app:queue" in cmdline, cmdline
            assert SECRET.encode() not in cmdline
            assert b"--backend" not in cmdline
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert f"DOWORK_BACKEND={url}".encode() in environ
        producer = dowork.Queue("app", backend=url, log=False)
        task = producer.task(name="record")(lambda n: n).submit(41)
        assert task.result(timeout=30) == 41  # the children reached the store with it
        producer.shutdown(timeout=2)
    finally:
        parent.send_signal(signal.SIGTERM)
        _, rest = parent.communicate(timeout=60)
    assert parent.returncode == 0, rest
    assert SECRET not in rest


def test_backend_can_come_from_the_environment(tmp_path: Path) -> None:
    url = make_store(tmp_path / "t.db", record("t1"), record("t2"))
    dump = dump_file(tmp_path / "dump.jsonl", ["d1"])
    environ = env(DOWORK_BACKEND=url)
    status = dowork_cmd("status", "--json", env=environ)
    assert json.loads(status.stdout) == {"app": {"pending": 2}}, status.stderr
    listing = dowork_cmd("list", "-q", "app", "--json", env=environ)
    assert {r["id"] for r in json.loads(listing.stdout)} == {"t1", "t2"}
    shown = dowork_cmd("inspect", "t1", "--json", env=environ)
    assert json.loads(shown.stdout)["id"] == "t1"
    back = dowork_cmd("requeue", str(dump), env=environ)
    assert "re-queued 1 task(s)" in back.stdout, back.stderr
    gone = dowork_cmd("purge", "-q", "app", "--yes", env=environ)
    assert "deleted 3 task(s)" in gone.stdout, gone.stderr
    both = dowork_cmd("requeue", str(dump), "--backend", url, "--app", "tests.durable.app:queue")
    assert "not both" in one_line_error(both)


def test_the_dashboard_command_reads_the_backend_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn
    from click.testing import CliRunner
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from dowork.cli import main

    url = make_store(tmp_path / "t.db", record("t1"))
    served: list[Starlette] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    result = CliRunner().invoke(main, ["dashboard"], env={"DOWORK_BACKEND": url})
    assert result.exit_code == 0, result.output
    with TestClient(served[0], base_url="http://127.0.0.1") as client:
        assert "t1" in client.get("/queue?q=app").text


# -- re-queueing a dump twice -------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return make_store(tmp_path / "t.db")
    server: RedisServer = request.getfixturevalue("redis_server")
    return f"{server.url}?prefix=rq{uuid.uuid4().hex[:8]}"


def test_requeueing_a_dump_twice_skips_what_is_stored(store_url: str, tmp_path: Path) -> None:
    dump = dump_file(tmp_path / "dump.jsonl", ["a1", "a2", "a3"])
    first = dowork_cmd("requeue", str(dump), "--backend", store_url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "re-queued 3 task(s)"
    dump_file(tmp_path / "more.jsonl", ["a1", "a2", "a3", "a4"])
    again = dowork_cmd("requeue", str(tmp_path / "more.jsonl"), "--backend", store_url, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"requeued": 1, "already_present": 3, "skipped": []}
    third = dowork_cmd("requeue", str(dump), "--backend", store_url)
    assert third.returncode == 0, third.stderr
    assert "re-queued 0 task(s); skipped 3 already in the store" in third.stdout
    assert "UNIQUE" not in third.stderr + third.stdout
    status = json.loads(dowork_cmd("status", "--backend", store_url, "--json").stdout)
    assert status == {"app": {"pending": 4}}


def test_requeueing_a_dump_twice_into_a_durable_app_queue(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    make_store(db)
    dump = dump_file(tmp_path / "dump.jsonl", ["b1", "b2"])
    environ = env(DOWORK_TEST_DB=str(db))
    first = dowork_cmd("requeue", str(dump), "--app", "tests.durable.app:queue", env=environ)
    assert first.stdout.strip() == "re-queued 2 task(s)", first.stderr
    again = dowork_cmd("requeue", str(dump), "--app", "tests.durable.app:queue", env=environ)
    assert again.returncode == 0, again.stderr
    assert "re-queued 0 task(s); skipped 2 already in the store" in again.stdout
    status = json.loads(dowork_cmd("status", "--backend", f"sqlite:///{db}", "--json").stdout)
    assert status == {"app": {"pending": 2}}  # the requeue command ran none itself


# -- control characters from task data ----------------------------------------------------------

HOSTILE = "\x1b[31mred\x1b[0m\rOVERWRITE\x07\u202eevil\x1b]0;title\x07"


@pytest.fixture(params=["sqlite", "redis"])
def hostile_store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """A store holding a failed task whose error, and a pending one whose name, id and queue,
    carry terminal escapes; returns (url, the failed task's id)."""
    if request.param == "sqlite":
        url = make_store(tmp_path / "t.db")
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        url = f"{server.url}?prefix=cc{uuid.uuid4().hex[:8]}"
    queue = dowork.Queue("app", backend=url, log=False)

    @queue.task(name="boom", retries=0)
    def boom() -> None:
        raise RuntimeError(HOSTILE)

    failed = boom.submit()
    assert queue.backend is not None
    queue._engine.run_on_home(
        queue.backend.push([record(f"id{HOSTILE}", name=f"name{HOSTILE}", queue=f"q{HOSTILE}")])
    )
    queue.dispatch()
    queue.shutdown(timeout=2)
    return url, failed.id


def test_task_data_cannot_put_control_characters_on_the_terminal(
    hostile_store: tuple[str, str],
) -> None:
    url, failed = hostile_store
    outputs = {
        "list": dowork_cmd("list", "--backend", url, "-q", "app"),
        "list other": dowork_cmd("list", "--backend", url, "-q", f"q{HOSTILE}"),
        "inspect": dowork_cmd("inspect", failed, "--backend", url),
        "status": dowork_cmd("status", "--backend", url),
        "inspect --json": dowork_cmd("inspect", failed, "--backend", url, "--json"),
        "list --json": dowork_cmd("list", "--backend", url, "-q", f"q{HOSTILE}", "--json"),
    }
    for what, result in outputs.items():
        assert result.returncode == 0, (what, result.stderr)
        shown = result.stdout + result.stderr
        for char in ("\x1b", "\r", "\x07", "\u202e"):
            assert char not in shown, (what, char, shown)
    assert "\\x1b[31mred" in outputs["inspect"].stdout  # escaped, still readable
    assert "\\u202eevil" in outputs["list other"].stdout
    assert "\\x1b" in outputs["status"].stdout
    data = json.loads(outputs["inspect --json"].stdout)
    assert HOSTILE in data["error"]  # JSON escapes them and gives the exact text back
    assert json.loads(outputs["list --json"].stdout)[0]["task"] == f"name{HOSTILE}"


def test_a_taken_metrics_port_is_one_line_before_anything_is_claimed(tmp_path: Path) -> None:
    """The worker binds its metrics port before it starts its queues (it serves a moment
    after): a taken port fails at start, with the queued task left unclaimed in the store.
    """
    import socket

    db = tmp_path / "t.db"
    producer = dowork.Queue("app", backend=f"sqlite:///{db}", log=False)
    producer.task(name="record")(lambda n: n).submit(1)
    producer.shutdown()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = dowork_cmd(
            "worker", "tests.durable.app:queue", "--metrics-port", str(port),
            env=env(DOWORK_TEST_DB=str(db)),
        )  # fmt: skip
    line = one_line_error(result)
    assert f"cannot serve metrics on 127.0.0.1:{port}" in line
    store = SQLiteBackend(str(db))
    counts = asyncio.run(store.counts("app"))
    asyncio.run(store.close())
    assert counts.get("pending") == 1, counts  # nothing claimed it
