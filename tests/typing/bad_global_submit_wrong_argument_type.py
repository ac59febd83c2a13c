"""dowork.submit checks the arguments like Queue.submit."""

import dowork


def sync_fn(a: int, b: str) -> int:
    return a + len(b)


# expect: No overload variant of "submit" matches argument types
dowork.submit(sync_fn, 1, 2)
