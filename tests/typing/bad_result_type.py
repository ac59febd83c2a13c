"""Task[int].result() is an int, not a str."""

import dowork


def sync_fn(a: int, b: str) -> int:
    return a + len(b)


q = dowork.Queue("x")
t = q.submit(sync_fn, 1, "a")
value: str = t.result()  # expect: expression has type "int", variable has type "str"
