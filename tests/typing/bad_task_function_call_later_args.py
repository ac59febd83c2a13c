"""A task function's call_later checks the arguments after the delay."""

import dowork

q = dowork.Queue("x")


@q.task
async def fetch(x: int) -> str:
    return str(x)


fetch.call_later(5.0, "1")  # expect: "str"; expected "int"
