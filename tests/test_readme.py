"""The README's Python examples run as written, each in a fresh interpreter."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
ALL_BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
#: Blocks that start with "# path/to/file.py" are files of an example project, checked together.
FILES = {b.split("\n", 1)[0][2:].split()[0]: b for b in ALL_BLOCKS if re.match(r"# \S+\.py", b)}
BLOCKS = [b for b in ALL_BLOCKS if b not in FILES.values()]


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 6


@functools.cache
def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("code", BLOCKS, ids=[f"example{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code: str) -> None:
    result = run(code)
    assert result.returncode == 0, result.stderr


def test_readme_example_outputs() -> None:
    """Spot-check that the printed values in the comments are what the code prints."""
    joined = "\n".join(run(code).stdout for code in BLOCKS)
    assert "sent 'Welcome' to ada@example.org" in joined
    assert "delivered 3" in joined
    assert "ababab 6" in joined
    assert "['succeeded', 'succeeded', 'cancelled']" in joined
    assert "succeeded [0.0, 120.0, 360.0]" in joined
    assert "['welcome', 'how is it going?'] 3 days, 0:00:00" in joined
    assert "retry in 5s" in joined
    assert "refused: NotRegistered" in joined
    assert "\nsucceeded\n" in joined
    assert "1 parse ValueError: not found" in joined
    assert "1.0 resized b.png" in joined
    assert "report: 6 words in 3 parts" in joined
    assert "['enqueue print', 'run print']" in joined
    assert "order 42: attempt 1, delivery 1" in joined
    assert "refused: True\n0o600\n6\n" in joined


def test_readme_web_app_example_runs_with_a_worker(tmp_path: Path) -> None:
    """The 'send the email off the request path' files, a web call and a real worker."""
    import json
    import os
    import signal
    import time

    assert set(FILES) == {"myapp/tasks.py", "myapp/web.py"}
    for name, code in FILES.items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
    (tmp_path / "myapp" / "__init__.py").write_text("")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    call = "from myapp.web import signup\nclass R: email = 'ada@example.org'\nprint(signup(R()))"
    web = subprocess.run(
        [sys.executable, "-c", call], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert web.stdout.strip() == "ok", web.stderr
    worker = subprocess.Popen(
        [sys.executable, "-m", "dowork", "worker", "myapp.tasks:queue", "--no-metrics"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        counts: dict[str, dict[str, int]] = {}
        while time.monotonic() < deadline:
            status = subprocess.run(
                [sys.executable, "-m", "dowork", "status", "--backend", "sqlite:///dowork.db",
                 "--json"],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30, check=False,
            )  # fmt: skip
            counts = json.loads(status.stdout or "{}")
            if counts.get("email", {}).get("succeeded") == 1:
                break
            time.sleep(0.2)
        assert counts == {"email": {"succeeded": 1}}
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
    assert worker.returncode == 0
