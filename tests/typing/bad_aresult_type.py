"""aresult() of a decorated sync task gives its return type."""

import dowork


@dowork.task
def send(a: int, b: str) -> int:
    return a + len(b)


async def main() -> str:
    return await send.submit(1, "a").aresult()  # expect: got "int", expected "str"
