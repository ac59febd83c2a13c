"""A task function rejects a keyword its function does not take."""

import dowork


@dowork.task(retries=3)
def send(a: int, b: str) -> int:
    return a + len(b)


send.submit(1, c="a")  # expect: Unexpected keyword argument "c"
