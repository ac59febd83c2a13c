"""The Python API raises dowork's errors for a SQLite file it cannot use, never sqlite3's.

A path in a missing directory, a read-only file, a file that is not a database, and (for tools
that only look) a file that does not exist: each is a ``BackendUnavailable`` or ``BackendError``
naming the path, from ``submit()`` as from the backend itself.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dowork
from dowork.backends import SQLiteBackend
from dowork.errors import BackendError, BackendUnavailable

ROOT = Path(__file__).resolve().parents[2]


def _queue(url: str) -> tuple[dowork.Queue, dowork.TaskFunction[..., int]]:
    queue = dowork.Queue("app", backend=url, log=False)
    return queue, queue.task(name="one")(lambda: 1)


def test_a_path_in_a_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "x.db"
    queue, one = _queue(f"sqlite:///{path}")
    with pytest.raises(BackendUnavailable) as caught:
        one.submit()
    assert not isinstance(caught.value, sqlite3.Error)
    assert isinstance(caught.value, dowork.DoWorkError)
    assert f"{tmp_path / 'missing-dir'} does not exist" in str(caught.value)
    assert str(path) in str(caught.value)
    with pytest.raises(BackendUnavailable, match="does not exist"):
        queue.dispatch()  # what a worker's claim meets
    queue.shutdown(timeout=1)
    assert not (tmp_path / "missing-dir").exists()


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are not the pages of a database\n" * 200)
    queue, one = _queue(f"sqlite:///{path}")
    with pytest.raises(BackendError, match="is not a SQLite database") as caught:
        one.submit()
    assert str(path) in str(caught.value)
    queue.shutdown(timeout=1)


def test_a_directory_given_as_the_file(tmp_path: Path) -> None:
    queue, one = _queue(f"sqlite:///{tmp_path}")
    with pytest.raises(BackendUnavailable, match="is a directory"):
        one.submit()
    queue.shutdown(timeout=1)


_READ_ONLY = textwrap.dedent(
    """
    import sys
    import dowork
    from dowork.errors import BackendUnavailable

    queue = dowork.Queue("app", backend="sqlite:///" + sys.argv[1], log=False)
    one = queue.task(name="one")(lambda: 1)
    try:
        one.submit()
    except BackendUnavailable as exc:
        print("BackendUnavailable:", exc)
    try:
        queue.dispatch()
    except BackendUnavailable as exc:
        print("BackendUnavailable:", exc)
    queue.shutdown(timeout=1)
    """
)


def test_a_read_only_file(tmp_path: Path) -> None:
    """In a process for which file modes hold (root ignores them: setpriv drops that)."""
    path = tmp_path / "ro.db"

    async def make() -> None:
        store = SQLiteBackend(path)
        await store.open()
        await store.close()

    asyncio.run(make())
    os.chmod(path, 0o444)
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to drop root's permission override"
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    result = subprocess.run(
        [*prefix, sys.executable, "-c", _READ_ONLY, str(path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout + result.stderr
    for line in lines:
        assert line.startswith(f"BackendUnavailable: SQLite database {path} is read-only"), line
    assert "sqlite3" not in result.stderr


def test_create_false_opens_only_an_existing_dowork_file(tmp_path: Path) -> None:
    async def open_close(store: SQLiteBackend) -> None:
        await store.open()
        await store.close()

    typo = tmp_path / "typo.db"
    with pytest.raises(BackendUnavailable, match="nothing was created"):
        asyncio.run(open_close(SQLiteBackend(typo, create=False)))
    assert not typo.exists()
    asyncio.run(open_close(SQLiteBackend(typo)))  # create=True, the default, makes it
    asyncio.run(open_close(SQLiteBackend(typo, create=False)))  # then it opens


def test_a_redis_url_without_the_package_says_what_to_install() -> None:
    code = textwrap.dedent(
        """
        import sys

        class NoRedis:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("redis", "hiredis"):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, NoRedis())
        import dowork
        try:
            dowork.Queue("app", backend="redis://127.0.0.1:1/0")
        except ImportError as exc:
            print(f"{type(exc).__name__}: {exc}")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.stdout.startswith("ModuleNotFoundError: the Redis backend needs"), result
    assert "pip install 'dowork[redis]'" in result.stdout
