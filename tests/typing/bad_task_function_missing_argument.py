"""A bare-decorated task function's submit needs every parameter."""

import dowork

q = dowork.Queue("x")


@q.task
def send(a: int, b: str) -> int:
    return a + len(b)


send.submit(1)  # expect: Missing positional argument "b"
