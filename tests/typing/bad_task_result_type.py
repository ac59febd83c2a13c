"""A Task built with options keeps the function's result type."""

import dowork


async def async_fn(x: int) -> str:
    return str(x)


t = dowork.Task(async_fn, args=(1,), retries=3)
value: int = t.result()  # expect: expression has type "str", variable has type "int"
