"""Project hygiene: CI runs the README's test command; the public API is what it says."""

from __future__ import annotations

import re
from pathlib import Path

import dowork

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```sh\n(.*?)\n```", readme, flags=re.S)
    assert len(commands) >= 2
    test_command = commands[1].strip()
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_public_names_exist_and_redis_free() -> None:
    for name in dowork.__all__:
        assert hasattr(dowork, name), name
    assert not any("redis" in name.lower() for name in dowork.__all__)


def test_py_typed_marker_ships() -> None:
    assert (ROOT / "src" / "dowork" / "py.typed").exists()


def test_every_error_derives_from_dowork_error() -> None:
    errors = [getattr(dowork, n) for n in dowork.__all__ if n.endswith(("Error", "Exceeded"))]
    errors += [dowork.DoNotRetry, dowork.QueueFull, dowork.TaskCancelled, dowork.UnknownTask]
    for error in errors:
        assert issubclass(error, dowork.DoWorkError)
    assert issubclass(dowork.TaskTimeout, TimeoutError)
    assert issubclass(dowork.UnknownTask, KeyError)
