"""Task.configure checks the option types."""

import dowork


def sync_fn(a: int, b: str) -> int:
    return a + len(b)


t = dowork.Task(sync_fn, args=(1, "a"))
t.configure(retries="3")  # expect: "str"; expected "int"
