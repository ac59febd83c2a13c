"""Calling a TaskFunction directly runs the function: an int, or a coroutine to await."""

from typing import assert_type

import dowork

q = dowork.Queue("x")


@q.task
def send(a: int, b: str) -> int:
    return a + len(b)


@q.task(retries=2)
async def fetch(x: int) -> str:
    return str(x)


assert_type(send(1, "a"), int)


async def main() -> None:
    assert_type(await fetch(1), str)
