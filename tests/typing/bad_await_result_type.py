"""Awaiting a Task[str] gives a str, not an int."""

import dowork


async def async_fn(x: int) -> str:
    return str(x)


q = dowork.Queue("x")


async def main() -> int:
    t = q.submit(async_fn, 1)
    return await t  # expect: Incompatible return value type (got "str", expected "int")
