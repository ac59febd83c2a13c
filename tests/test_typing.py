"""Static typing of the public API, checked by running mypy on the files in tests/typing/.

* ``good*.py``: correct uses that must pass ``mypy --strict`` with no errors; ``assert_type``
  pins what mypy infers.
* ``bad_*.py``: each holds exactly one mistake, marked by a ``# expect: <text>`` comment on
  the offending line (or alone on the line before it). mypy must report errors on that line
  only, and ``<text>`` must occur in its messages for that line.
* A file with a ``# xfail: <reason>`` line documents a known typing gap in ``src/``: its check
  is expected to fail (strictly, so fixing the gap turns it into a failure that says to
  delete the ``# xfail:`` line).

mypy runs twice, in parallel, in a subprocess of this interpreter with a throwaway cache: once
on the good files (which must give exit status 0) and once on all the other files together
(mypy reports errors per file, so one run serves them all).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

# mypy comes with the dev extras the suite is installed with: a missing mypy must fail the
# run, never skip the typing checks silently.
import mypy  # noqa: F401
import pytest

TYPING_DIR = Path(__file__).parent / "typing"
CONFIG = TYPING_DIR / "mypy.ini"
MYPY_TIMEOUT = 50  # seconds; under pytest-timeout's 60 s per test

_EXPECT = re.compile(r"#\s*expect:\s*(?P<text>.+?)\s*$")
_XFAIL = re.compile(r"^\s*#\s*xfail:\s*(?P<reason>.+?)\s*$", re.MULTILINE)
_MESSAGE = re.compile(r"^(?P<path>.+?):(?P<line>\d+): (?P<severity>error|note): (?P<text>.*)$")


def _xfail_reason(path: Path) -> str | None:
    match = _XFAIL.search(path.read_text(encoding="utf-8"))
    return match["reason"] if match else None


GOOD_FILES = sorted(TYPING_DIR.glob("good*.py"))
BAD_FILES = sorted(TYPING_DIR.glob("bad_*.py"))
MUST_PASS = [path for path in GOOD_FILES if _xfail_reason(path) is None]
SHARED_RUN = [path for path in BAD_FILES + GOOD_FILES if path not in MUST_PASS]


def _params(paths: list[Path]) -> list[object]:
    params: list[object] = []
    for path in paths:
        reason = _xfail_reason(path)
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        params.append(pytest.param(path, id=path.stem, marks=marks))
    return params


@dataclass
class MypyRun:
    """One mypy invocation: its exit status, full output, and messages grouped by file."""

    returncode: int
    output: str
    messages: dict[Path, list[tuple[int, str, str]]] = field(default_factory=dict)

    def for_file(self, path: Path) -> list[tuple[int, str, str]]:
        """(line, severity, text) of every message mypy gave for ``path``."""
        return self.messages.get(path.resolve(), [])

    def errors(self, path: Path) -> list[tuple[int, str]]:
        return [(line, text) for line, sev, text in self.for_file(path) if sev == "error"]


def _start_mypy(paths: list[Path], cache_dir: Path) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--no-incremental",
        f"--config-file={CONFIG}",
        f"--cache-dir={cache_dir}",
        "--show-absolute-path",
        "--show-error-codes",
        "--no-color-output",
        "--no-pretty",
        "--no-error-summary",
        *(str(path) for path in paths),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYPY")}
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=TYPING_DIR.parent.parent,
    )


def _finish(process: subprocess.Popen[str]) -> MypyRun:
    with process:
        try:
            output, _ = process.communicate(timeout=MYPY_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    run = MypyRun(process.returncode, output)
    for raw in output.splitlines():
        match = _MESSAGE.match(raw)
        if match:
            entry = (int(match["line"]), match["severity"], match["text"])
            run.messages.setdefault(Path(match["path"]).resolve(), []).append(entry)
    return run


@pytest.fixture(scope="module")
def mypy_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, MypyRun]:
    """Run mypy on the must-pass files and on all the others, in parallel; map file -> run."""
    cache = tmp_path_factory.mktemp("mypy_cache")
    groups = [paths for paths in (MUST_PASS, SHARED_RUN) if paths]
    processes = [_start_mypy(paths, cache / str(i)) for i, paths in enumerate(groups)]
    runs = [_finish(process) for process in processes]
    return {path: run for paths, run in zip(groups, runs, strict=True) for path in paths}


def _expected(path: Path) -> tuple[int, str]:
    """The line a bad file's one mistake is on, and the text mypy must report for it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        match = _EXPECT.search(line)
        if match is None:
            continue
        target = number
        if line.lstrip().startswith("#"):  # a comment line: it marks the next code line
            target = next(
                n
                for n, text in enumerate(lines[number:], start=number + 1)
                if text.strip() and not text.lstrip().startswith("#")
            )
        found.append((target, match["text"]))
    assert len(found) == 1, f"{path.name} needs exactly one '# expect:' comment, has {found}"
    return found[0]


def test_typing_files_are_found() -> None:
    assert TYPING_DIR / "good.py" in GOOD_FILES
    assert len(BAD_FILES) >= 10


@pytest.mark.parametrize("path", _params(GOOD_FILES))
def test_typing_good_file_passes_mypy(path: Path, mypy_runs: dict[Path, MypyRun]) -> None:
    run = mypy_runs[path]
    errors = "\n".join(f"{path.name}:{line}: {text}" for line, text in run.errors(path))
    assert not errors, f"mypy errors:\n{errors}"
    if path in MUST_PASS:
        assert run.returncode == 0, f"mypy failed (status {run.returncode}):\n{run.output}"


@pytest.mark.parametrize("path", _params(BAD_FILES))
def test_typing_bad_file_is_rejected(path: Path, mypy_runs: dict[Path, MypyRun]) -> None:
    run = mypy_runs[path]
    # 1 means "type errors found"; 2 would be a crash or bad usage, which proves nothing.
    assert run.returncode == 1, f"mypy exit status {run.returncode}:\n{run.output}"
    line, expected = _expected(path)
    errors = run.errors(path)
    assert errors, f"mypy accepted {path.name}; expected an error on line {line}: {expected!r}"
    stray = sorted({n for n, _ in errors if n != line})
    assert not stray, f"{path.name}: errors on lines {stray}, expected only on line {line}"
    reported = "\n".join(text for n, _, text in run.for_file(path) if n == line)
    assert expected in reported, f"{path.name}:{line}: {expected!r} not in:\n{reported}"
