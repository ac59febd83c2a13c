"""Queue.submit checks the arguments of an async function too."""

import dowork


async def async_fn(x: int) -> str:
    return str(x)


q = dowork.Queue("x")
# expect: matches argument types "Callable[[int], Coroutine[Any, Any, str]]", "str"
q.submit(async_fn, "1")
