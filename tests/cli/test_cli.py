"""The dowork command end to end, in subprocesses: errors, warm shutdown, dump and requeue,
metrics, status and the demo."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
from prometheus_client.parser import text_string_to_metric_families

import dowork

ROOT = Path(__file__).resolve().parents[2]


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(ROOT)
    out.update(extra)
    return out


def dowork_cmd(
    *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dowork", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
        input=input,
        env=env,
    )


def start_worker(*args: str, environ: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dowork", "worker", *args],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=environ,
    )


def ledger(path: Path) -> Counter[str]:
    return Counter(path.read_text().splitlines() if path.exists() else [])


def wait_for(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz:queue", "no module named 'no_such_module_xyz'"),
        ("tests.cli.memapp:missing", "has no attribute 'missing'"),
        ("tests.cli.memapp:not_a_queue", "is a int, not a dowork.Queue"),
        ("tests.cli.memapp:queue -q nope", "no queue named nope"),
    ],
)
def test_clear_errors_without_tracebacks(target: str, message: str) -> None:
    result = dowork_cmd("worker", *target.split())
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_backend_url_is_one_line() -> None:
    result = dowork_cmd("status", "--backend", "ftp://nowhere")
    assert result.returncode == 1
    assert "unknown backend URL" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.realtime
def test_double_sigint_dumps_and_requeue_restores(tmp_path: Path) -> None:
    led = tmp_path / "ledger.txt"
    dump = tmp_path / "dump.jsonl"
    n = 12
    environ = env(DOWORK_TEST_LEDGER=str(led), DOWORK_TEST_TASKS=str(n), DOWORK_TEST_SECONDS="0.5")
    worker = start_worker(
        "tests.cli.memapp:queue", "--no-metrics", "--dump-file", str(dump), environ=environ
    )
    wait_for(lambda: sum(1 for k in ledger(led) if k.startswith("started")) >= 4)
    worker.send_signal(signal.SIGINT)
    time.sleep(0.2)
    worker.send_signal(signal.SIGINT)
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 1, err
    lines = [json.loads(line) for line in dump.read_text().splitlines()]
    restorable = [line for line in lines if line["restorable"]]
    closures = [line for line in lines if not line["restorable"]]
    before = ledger(led)
    finished = {i for i in range(n) if before[f"done {i}"]}
    assert {line["args"][0] for line in restorable} == set(range(n)) - finished
    assert len(closures) == 1  # the lambda is listed, with the reason
    assert "lambda" in closures[0]["why"]
    result = dowork_cmd(
        "requeue",
        str(dump),
        "--app",
        "tests.cli.memapp:queue",
        env=env(DOWORK_TEST_LEDGER=str(led)),
    )
    assert result.returncode == 0, result.stderr
    assert f"re-queued {len(restorable)} task(s)" in result.stdout
    assert "not restorable" in result.stderr
    after = ledger(led)
    assert all(after[f"done {i}"] == 1 for i in range(n)), after  # nothing lost, none twice
    twice = sum(1 for i in range(n) if after[f"started {i}"] > 1)
    print(f"\ndouble SIGINT: {len(restorable)} dumped and restored, {twice} started twice")


@pytest.mark.realtime
def test_worker_serves_metrics_and_status_reads_the_store(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite3"
    environ = env(DOWORK_TEST_DB=str(db), DOWORK_TEST_LEASE="5")
    producer = dowork.Queue("app", backend=f"sqlite:///{db}", log=False)
    record = producer.task(name="record")(lambda n: n)
    handles = record.map([(i,) for i in range(30)])
    worker = start_worker("tests.durable.app:queue", environ=environ)
    try:
        url = None
        assert worker.stderr is not None
        for line in worker.stderr:
            found = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", line)
            if found:
                url = found.group(1)
                break
        assert url is not None
        assert handles[-1].result(30) == 29
        wait_for(lambda: _scrape(url).get(("queue_tasks", "succeeded")) == 30)
        samples = _scrape(url)
        assert samples[("queue_tasks_succeeded_total", None)] == 30
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
    assert worker.returncode == 0
    status = dowork_cmd("status", "--backend", f"sqlite:///{db}", "--json")
    assert json.loads(status.stdout) == {"app": {"succeeded": 30}}
    listing = dowork_cmd("list", "--backend", f"sqlite:///{db}", "-q", "app", "--limit", "5")
    assert len(listing.stdout.splitlines()) == 5
    shown = dowork_cmd("inspect", handles[0].id, "--backend", f"sqlite:///{db}", "--json")
    assert json.loads(shown.stdout)["status"] == "succeeded"
    producer.shutdown(timeout=1)


def _scrape(url: str) -> dict[tuple[str, str | None], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    out: dict[tuple[str, str | None], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, sample.labels.get("status"))] = sample.value
    return out


def test_requeue_dead_and_purge(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite3"
    queue = dowork.Queue("jobs", backend=f"sqlite:///{db}", log=False)
    now = time.time()
    import asyncio

    from dowork.backends import Record

    assert queue.backend is not None
    queue._engine.run_on_home(
        queue.backend.push([Record("gone1", "jobs", "no.such:task", b'{"a":[],"k":{}}', now, now)])
    )
    queue.dispatch()
    assert queue.status("gone1") is dowork.TaskStatus.DEAD
    queue.shutdown()
    back = dowork_cmd("requeue", "--dead", "--backend", f"sqlite:///{db}", "-q", "jobs")
    assert back.returncode == 0, back.stderr
    assert "re-queued 1 task(s)" in back.stdout
    status = json.loads(dowork_cmd("status", "--backend", f"sqlite:///{db}", "--json").stdout)
    assert status == {"jobs": {"pending": 1}}
    refused = dowork_cmd("purge", "--backend", f"sqlite:///{db}", "-q", "jobs", input="n\n")
    assert refused.returncode == 1
    gone = dowork_cmd("purge", "--backend", f"sqlite:///{db}", "-q", "jobs", "--yes")
    assert "deleted 1 task(s)" in gone.stdout
    assert asyncio is not None


@pytest.mark.realtime
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    result = dowork_cmd("demo", "--tasks", "300", "--workers", "2", "--db", str(tmp_path / "d.db"))
    assert result.returncode == 0, result.stderr
    assert re.search(r"done\s+\d+", result.stdout)
    assert re.search(r"dead-lettered\s+1", result.stdout)
    assert "metrics were served on http://127.0.0.1:" in result.stdout
    assert result.stdout.count("metrics were served on") == 2  # one per worker process


def _started(stream: IO[str]) -> int:
    """The pid of the next ``worker N started (pid P)`` line of a worker's stderr."""
    for line in stream:
        found = re.search(r"worker \d+ started \(pid (\d+)\)", line)
        if found:
            return int(found.group(1))
    raise AssertionError("the worker's stderr ended")


@pytest.mark.realtime
def test_processes_restarts_a_dead_process(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite3"
    environ = env(DOWORK_TEST_DB=str(db), DOWORK_TEST_LEASE="5")
    first = subprocess.Popen(
        [sys.executable, "-m", "dowork", "worker", "tests.durable.app:queue", "--processes", "2",
         "--no-metrics"],
        stderr=subprocess.PIPE, text=True, cwd=ROOT, env=environ,
    )  # fmt: skip
    assert first.stderr is not None
    other = _started(first.stderr)
    os.kill(other, signal.SIGKILL)
    replacement = _started(first.stderr)
    assert replacement not in (other, first.pid)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=30)
    assert first.returncode == 0
    assert not Path(f"/proc/{replacement}").exists()  # waited for


@pytest.mark.realtime
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_processes_auto_runs_one_per_core_and_stops_with_the_first(
    tmp_path: Path, how: signal.Signals
) -> None:
    """The default, ``--processes auto``: one process per usable core on a shared store.

    The others stop when the first one does: warm with it on a signal it passes on, and warm
    by themselves when it was killed (they notice their parent gone).
    """
    from dowork.cli.processes import usable_cores

    if usable_cores() < 2:
        pytest.fail("this test needs a machine with 2 cores or more")
    environ = env(DOWORK_TEST_DB=str(tmp_path / "t.sqlite3"), DOWORK_TEST_LEASE="5")
    first = subprocess.Popen(
        [sys.executable, "-m", "dowork", "worker", "tests.durable.app:queue", "--no-metrics"],
        stderr=subprocess.PIPE, text=True, cwd=ROOT, env=environ,
    )  # fmt: skip
    assert first.stderr is not None
    others = [_started(first.stderr) for _ in range(usable_cores() - 1)]
    for pid in others:
        wait_for(functools.partial(_has_processes_1, Path(f"/proc/{pid}/cmdline")))
    first.send_signal(how)
    first.communicate(timeout=30)
    assert first.returncode == (0 if how == signal.SIGTERM else -signal.SIGKILL)
    for pid in others:  # gone (a zombie of a killed parent is reaped by init)
        wait_for(functools.partial(_gone, pid), timeout=30)


def _has_processes_1(cmdline: Path) -> bool:
    return b"--processes\x001" in cmdline.read_bytes()


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_processes_auto_is_one_for_in_memory_queues() -> None:
    from dowork.cli.processes import process_count, usable_cores

    assert process_count("auto", shared=False) == 1
    assert process_count("auto", shared=True) == usable_cores()
    assert process_count("3", shared=False) == 3
    result = dowork_cmd("worker", "tests.durable.app:queue", "--processes", "0")
    assert result.returncode == 2
    assert "neither 'auto' nor a whole number" in result.stderr


@pytest.mark.realtime
def test_reload_restarts_the_worker_when_code_changes(tmp_path: Path) -> None:
    code = "import dowork\nqueue = dowork.Queue('dev')\n"
    (tmp_path / "proj.py").write_text(code)
    worker = subprocess.Popen(
        [sys.executable, "-m", "dowork", "worker", "proj:queue", "--reload", "--no-metrics"],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env(),
    )  # fmt: skip
    assert worker.stderr is not None
    seen: list[str] = []
    try:
        for line in worker.stderr:
            seen.append(line)
            if "running dev" in line:
                if sum("running dev" in s for s in seen) == 1:
                    (tmp_path / "proj.py").write_text(code + "# changed\n")
                else:
                    break
    finally:
        worker.send_signal(signal.SIGINT)
        worker.communicate(timeout=30)
    assert any("restarting" in s for s in seen), seen
    assert sum("running dev" in s for s in seen) == 2


def test_unreachable_redis_fails_at_start_in_one_line() -> None:
    from tests.redis_server import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    result = dowork_cmd("worker", "tests.durable.app:queue", "--backend", url, "--no-metrics")
    assert result.returncode == 1
    assert "cannot reach" in result.stderr
    assert "Traceback" not in result.stderr
    status = dowork_cmd("status", "--backend", url)
    assert status.returncode == 1
    assert "Traceback" not in status.stderr


@pytest.mark.realtime
def test_each_worker_process_serves_its_own_metrics_port(tmp_path: Path) -> None:
    from tests.redis_server import free_port

    db = tmp_path / "t.sqlite3"
    port = free_port()
    while True:  # two free ports in a row
        try:
            import socket

            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 1))
            break
        except OSError:
            port = free_port()
    environ = env(DOWORK_TEST_DB=str(db), DOWORK_TEST_LEASE="5")
    producer = dowork.Queue("app", backend=f"sqlite:///{db}", log=False)
    record = producer.task(name="record")(lambda n: n)
    record.map([(i,) for i in range(20)])
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "dowork", "worker", "tests.durable.app:queue", "--processes", "2",
         "--metrics-port", str(port)],
        stderr=subprocess.DEVNULL, cwd=ROOT, env=environ,
    )  # fmt: skip
    try:
        for p in (port, port + 1):
            url = f"http://127.0.0.1:{p}/metrics"

            def scraped(url: str = url) -> bool:
                return _try_scrape(url) is not None

            wait_for(scraped)
        wait_for(lambda: (_try_scrape(f"http://127.0.0.1:{port}/metrics") or {}).get(
            ("queue_tasks", "succeeded")) == 20)  # fmt: skip
        both = [_scrape(f"http://127.0.0.1:{p}/metrics") for p in (port, port + 1)]
        # The store's gauge is the same on every worker; the counters add up across them.
        assert both[0][("queue_tasks", "succeeded")] == both[1][("queue_tasks", "succeeded")] == 20
        total = sum(s.get(("queue_tasks_succeeded_total", None), 0) for s in both)
        assert total == 20
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(30)
    producer.shutdown(timeout=1)


def _try_scrape(url: str) -> dict[tuple[str, str | None], float] | None:
    try:
        return _scrape(url)
    except OSError:
        return None


def test_inspect_shows_the_reported_progress(tmp_path: Path) -> None:
    import asyncio

    from dowork.backends import ClaimRequest, Record, SQLiteBackend

    db = tmp_path / "t.sqlite3"

    async def running_task_with_progress() -> None:
        store = SQLiteBackend(db)
        await store.open()
        try:
            now = time.time()
            await store.push([Record("t1", "jobs", "resize", b'{"a":[],"k":{}}', now, now)])
            (claimed,) = await store.claim(ClaimRequest("jobs", now, 1, 30.0, "w"))
            await store.progress([(claimed.id, claimed.attempts, '[40, "40 of 100", 0]')])
        finally:
            await store.close()

    asyncio.run(running_task_with_progress())
    shown = dowork_cmd("inspect", "t1", "--backend", f"sqlite:///{db}", "--json")
    assert shown.returncode == 0, shown.stderr
    progress = json.loads(shown.stdout)["progress"]
    assert progress == {"value": 40.0, "message": "40 of 100", "at": "1970-01-01T00:00:00+00:00"}
    plain = dowork_cmd("inspect", "t1", "--backend", f"sqlite:///{db}")
    assert "40 of 100" in plain.stdout


def test_inspect_shows_priority_and_concurrency_key(tmp_path: Path) -> None:
    import asyncio

    from dowork.backends import Record, SQLiteBackend

    db = tmp_path / "t.sqlite3"

    async def push() -> None:
        store = SQLiteBackend(db)
        await store.open()
        try:
            now = time.time()
            record = Record("t1", "jobs", "export", b'{"a":[],"k":{}}', now, now, priority=4)
            record.concurrency_key = "tenant-7"
            await store.push([record])
        finally:
            await store.close()

    asyncio.run(push())
    shown = dowork_cmd("inspect", "t1", "--backend", f"sqlite:///{db}", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert (data["priority"], data["concurrency_key"], data["rate_slot"]) == (4, "tenant-7", None)


def test_reserved_tasks_are_listed_counted_and_never_purged_by_default(tmp_path: Path) -> None:
    """A claimed task not started yet reads reserved in status and list, and a purge without
    statuses leaves it, like a running one."""
    import asyncio

    from dowork.backends import ClaimRequest, Record, SQLiteBackend

    url = f"sqlite:///{tmp_path / 't.sqlite3'}"
    now = time.time()

    async def claim_one() -> None:
        store = SQLiteBackend(str(tmp_path / "t.sqlite3"))
        await store.open()
        payload = b'{"a":[],"k":{}}'
        await store.push([Record(f"t{n}", "jobs", "job", payload, now, now) for n in range(2)])
        (claimed,) = await store.claim(ClaimRequest("jobs", now, 1, 60.0, "w"))
        assert claimed.status == "reserved"
        await store.close()

    asyncio.run(claim_one())
    header = dowork_cmd("status", "--backend", url).stdout.splitlines()[0]
    assert "reserved" in header.split()
    status = json.loads(dowork_cmd("status", "--backend", url, "--json").stdout)
    assert status == {"jobs": {"pending": 1, "reserved": 1}}
    listed = dowork_cmd("list", "--backend", url, "-q", "jobs", "-s", "reserved", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [t["id"] for t in json.loads(listed.stdout)] == ["t0"]
    gone = dowork_cmd("purge", "--backend", url, "-q", "jobs", "--yes")
    assert "deleted 1 task(s)" in gone.stdout  # the pending one only
    after = json.loads(dowork_cmd("status", "--backend", url, "--json").stdout)
    assert after == {"jobs": {"reserved": 1}}
