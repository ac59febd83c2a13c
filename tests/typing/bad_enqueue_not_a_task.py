"""Queue.enqueue takes a Task, not a function."""

import dowork


def sync_fn(a: int, b: str) -> int:
    return a + len(b)


q = dowork.Queue("x")
q.enqueue(sync_fn)  # expect: expected "Task[Never]"
