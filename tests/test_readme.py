"""The README's Python examples run as written, each in a fresh interpreter."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


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
    assert "retry in 5s" in joined
    assert "refused: NotRegistered" in joined
    assert "\nsucceeded\n" in joined
    assert "1 parse ValueError: not found" in joined
