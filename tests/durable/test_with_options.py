"""A copy of a registered task function (``with_options``) submits to a durable queue.

It is the same function under the same name, with its own options: they are stored with
each of its tasks. (``_storable`` looked the copy up by identity and refused it as not
registered.)
"""

from __future__ import annotations

from collections.abc import Callable

from dowork import Queue

from .reads import records_of

WAIT = 20.0


def test_a_copy_with_other_options_submits_as_the_registered_task(
    stores: Callable[..., Queue],
) -> None:
    queue = stores()

    @queue.task(name="double")
    def double(n: int) -> int:
        return 2 * n

    urgent = double.with_options(priority=3, retries=2)
    first, second = urgent.submit(1), double.submit(2)
    records = records_of(queue)
    assert (records[first.id].name, records[first.id].priority) == ("double", 3)
    assert (records[second.id].name, records[second.id].priority) == ("double", 0)
    queue.start()
    assert (first.result(WAIT), second.result(WAIT)) == (2, 4)
