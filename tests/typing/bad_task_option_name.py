"""A misspelt Task option should be a type error, not only a run-time one."""

import dowork


def sync_fn(a: int, b: str) -> int:
    return a + len(b)


dowork.Task(sync_fn, args=(1, "a"), retires=3)  # expect: "retires"
