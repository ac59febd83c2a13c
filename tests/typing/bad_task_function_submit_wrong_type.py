"""A decorated task function's submit is checked like a call."""

import dowork

q = dowork.Queue("x")


@q.task(retries=3)
def send(a: int, b: str) -> int:
    return a + len(b)


send.submit("x", "a")  # expect: "str"; expected "int"
