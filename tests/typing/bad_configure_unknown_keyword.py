"""Task.configure takes only the documented options."""

import dowork


def sync_fn(a: int, b: str) -> int:
    return a + len(b)


t = dowork.Task(sync_fn, args=(1, "a"))
t.configure(retry=3)  # expect: Unexpected keyword argument "retry"
