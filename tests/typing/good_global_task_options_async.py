"""``@dowork.task(options)`` on an ``async def`` gives the awaited type, like ``@q.task(...)``."""

from typing import assert_type

import dowork
from dowork import AsyncTaskFunction, Task


@dowork.task(retries=3)
async def fetch(x: int, /) -> str:
    return str(x)


assert_type(fetch, AsyncTaskFunction[[int], str])
assert_type(fetch.submit(1), Task[str])


async def main() -> None:
    assert_type(await fetch.submit(1), str)
