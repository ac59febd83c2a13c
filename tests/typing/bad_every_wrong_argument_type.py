"""Queue.every should check the arguments against the function, like Queue.submit."""

import dowork


def sync_fn(a: int, b: str) -> int:
    return a + len(b)


q = dowork.Queue("x")
q.every(60.0, sync_fn, "not-int", "a")  # expect: "str"
