"""The ``dowork`` command never shows a Redis password: not in errors, logs or output."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.backends.conftest import add_acl_user
from tests.cli.test_cli import ROOT, dowork_cmd, env
from tests.redis_server import RedisServer, free_port

SECRET = "s3cret-Pa55"


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_unreachable_redis_errors_hide_the_password(verbose: list[str]) -> None:
    url = f"redis://alice:{SECRET}@127.0.0.1:{free_port()}/0"
    commands = [  # reading, writing, and the worker's start-up check
        ["status", "--backend", url],
        ["requeue", "--dead", "--backend", url, "-q", "app"],
        ["worker", "tests.durable.app:queue", "--backend", url, "--no-metrics"],
    ]
    if verbose:  # tracebacks too
        commands = commands[::2]
    for command in commands:
        result = dowork_cmd(*verbose, *command)
        assert result.returncode == 1, (command, result.stderr)
        shown = result.stdout + result.stderr
        assert SECRET not in shown, (command, shown)
        assert "alice:***@" in shown or "cannot reach" in shown or "Error" in shown, shown


def test_a_working_worker_and_status_never_print_the_password(tmp_path: Path) -> None:
    """A real server with an ACL user; the worker logs through a Redis restart, too."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    add_acl_user(server.url, "alice", SECRET)
    url = f"redis://alice:{SECRET}@127.0.0.1:{server.port}/0"
    argv = ["worker", "tests.durable.app:queue", "--backend", url, "--no-metrics", "--grace", "10"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "dowork", *argv],
        cwd=ROOT,
        env=env(DOWORK_TEST_LEASE="1.0"),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        status = dowork_cmd("status", "--backend", url)
        assert status.returncode == 0, status.stderr
        assert SECRET not in status.stdout + status.stderr
        time.sleep(1.0)
        server.stop()  # the worker logs backend errors while Redis is away
        time.sleep(1.0)
        server.start()
        add_acl_user(server.url, "alice", SECRET)
        time.sleep(1.0)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
        server.stop()
    assert "alice:***@" in stderr, stderr
    assert "backend error" in stderr, stderr
    assert SECRET not in stderr
