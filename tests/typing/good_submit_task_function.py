"""Submitting a TaskFunction like a plain function keeps its result type (``_make`` allows it)."""

from typing import assert_type

import dowork
from dowork import Task

q = dowork.Queue("x")


@q.task
def send(a: int, b: str) -> int:
    return a + len(b)


@q.task
async def fetch(x: int) -> str:
    return str(x)


assert_type(q.submit(send, 1, "a"), Task[int])
assert_type(q.submit(fetch, 1), Task[str])
assert_type(q.submit_nowait(fetch, 1), Task[str])
assert_type(dowork.submit(fetch, 1), Task[str])
assert_type(q.call_later(1.0, send, 1, "a"), Task[int])
assert_type(q.call_at(1_700_000_000.0, fetch, 1), Task[str])


async def main() -> None:
    assert_type(await q.asubmit(fetch, 1), Task[str])
