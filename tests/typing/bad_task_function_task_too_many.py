"""A task function's task() rejects extra arguments."""

import dowork


@dowork.task
def send(a: int, b: str) -> int:
    return a + len(b)


send.task(1, "a", 3)  # expect: Too many arguments
