"""Correct uses of dowork's public API: must pass ``mypy --strict`` with no errors.

``assert_type`` pins what mypy infers, so a loosened overload (``Task[Any]``, a
``Coroutine`` leaking into ``Task[...]``) fails the check. This file is type-checked by
tests/test_typing.py and never run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import assert_type

import dowork
from dowork import AsyncTaskFunction, Schedule, SyncTaskFunction, Task, TaskFunction


def sync_fn(a: int, b: str) -> int:
    return a + len(b)


async def async_fn(x: int) -> str:
    return str(x)


def kw_fn(a: int, *, scale: float = 1.0) -> float:
    return a * scale


def no_result() -> None:
    return None


q = dowork.Queue("x")
assert_type(q, dowork.Queue)
assert_type(dowork.Queue("y", concurrency=2, maxsize=10, log=False), dowork.Queue)

# -- Queue.submit and friends: the result type follows the function -----------------------

assert_type(q.submit(sync_fn, 1, "a"), Task[int])
assert_type(q.submit(sync_fn, a=1, b="a"), Task[int])
assert_type(q.submit(async_fn, 1), Task[str])  # the awaited type, not a coroutine
assert_type(q.submit(kw_fn, 2, scale=0.5), Task[float])
assert_type(q.submit(no_result), Task[None])
assert_type(q.submit(lambda: 3), Task[int])
assert_type(q.submit_nowait(sync_fn, 1, "a"), Task[int])
assert_type(q.submit_nowait(async_fn, 1), Task[str])
assert_type(q.call_later(1.0, sync_fn, 1, "a"), Task[int])
assert_type(q.call_later(timedelta(seconds=1), async_fn, 1), Task[str])
assert_type(q.call_at(datetime.now(UTC), sync_fn, 1, "a"), Task[int])
assert_type(q.call_at(1_700_000_000.0, async_fn, 1), Task[str])
assert_type(q.every(60.0, sync_fn, 1, "a"), Schedule)
assert_type(q.cron("*/5 * * * *", async_fn, 1), Schedule)

# -- the global queue ------------------------------------------------------------------------

assert_type(dowork.submit(sync_fn, 1, "a"), Task[int])
assert_type(dowork.submit(async_fn, 1), Task[str])
assert_type(dowork.submit(kw_fn, 1, scale=2.0), Task[float])

# -- Task built with options -----------------------------------------------------------------

t_opts = dowork.Task(sync_fn, args=(1, "a"), retries=3)
assert_type(t_opts, Task[int])
assert_type(dowork.Task(async_fn, args=(1,), retries=3, within=5.0), Task[str])
assert_type(dowork.Task(kw_fn, (1,), {"scale": 2.0}), Task[float])
assert_type(t_opts.configure(retries=5, backoff="fixed", delay=timedelta(seconds=2)), Task[int])
assert_type(Task(async_fn, args=(1,)).configure(not_before=datetime.now(UTC)), Task[str])
assert_type(q.enqueue(t_opts), Task[int])
assert_type(q.enqueue(Task(async_fn, args=(1,)), block=False), Task[str])
assert_type(dowork.enqueue(Task(sync_fn, args=(1, "a"))), Task[int])

# -- waiting for results ---------------------------------------------------------------------

t_int = q.submit(sync_fn, 1, "a")
t_str = q.submit(async_fn, 1)
assert_type(t_int.result(), int)
assert_type(t_int.result(timeout=1.0), int)
assert_type(t_str.result(), str)
assert_type(t_int.exception(), BaseException | None)
assert_type(t_int.wait(0.5), bool)
assert_type(t_int.done, bool)
assert_type(t_int.status, dowork.TaskStatus)
assert_type(t_int.cancel(), bool)


async def waits() -> None:
    assert_type(await t_int, int)
    assert_type(await t_str, str)
    assert_type(await t_int.aresult(), int)
    assert_type(await t_str.aresult(timeout=2.0), str)
    assert_type(await t_int.aexception(), BaseException | None)
    assert_type(await q.asubmit(sync_fn, 1, "a"), Task[int])
    assert_type(await q.asubmit(async_fn, 1), Task[str])
    assert_type(await q.aenqueue(Task(sync_fn, args=(1, "a"))), Task[int])
    assert_type(await (await q.asubmit(async_fn, 2)), str)


# -- decorated task functions ------------------------------------------------------------------


@q.task(retries=3)
def send(a: int, b: str) -> int:
    return a + len(b)


@q.task
def send_bare(a: int, b: str) -> int:
    return a + len(b)


@dowork.task(retries=3, backoff="linear")
def send_global(a: int, b: str) -> int:
    return a + len(b)


@dowork.task
def send_global_bare(a: int, b: str) -> int:
    return a + len(b)


@q.task(within=10.0)
async def fetch(x: int) -> str:
    return str(x)


@q.task
async def fetch_bare(x: int) -> str:
    return str(x)


@dowork.task
async def fetch_global_bare(x: int) -> str:
    return str(x)


# ``assert_type`` is exact, and for a ParamSpec mypy keeps the parameter names
# (``TaskFunction[[Arg(int, 'a'), Arg(str, 'b')], int]``), so ``TaskFunction[[int, str], int]``
# is pinned exactly only for positional-only functions; for named parameters an annotated
# assignment checks the parameters (and ``.submit`` below pins the result type exactly).
tf_send: TaskFunction[[int, str], int] = send
tf_send_bare: TaskFunction[[int, str], int] = send_bare
tf_send_global: TaskFunction[[int, str], int] = send_global
tf_send_global_bare: TaskFunction[[int, str], int] = send_global_bare
tf_fetch: TaskFunction[[int], str] = fetch
tf_fetch_bare: TaskFunction[[int], str] = fetch_bare
tf_fetch_global_bare: TaskFunction[[int], str] = fetch_global_bare
tf_direct: TaskFunction[[int, str], int] = q.task(sync_fn)
tf_direct_options: TaskFunction[[int, str], int] = q.task(retries=2)(sync_fn)
tf_direct_async: TaskFunction[[int], str] = q.task(async_fn)


def po_fn(a: int, b: str, /) -> int:
    return a + len(b)


async def po_async_fn(x: int, /) -> str:
    return str(x)


@q.task(retries=3)
def po_send(a: int, b: str, /) -> int:
    return a + len(b)


@dowork.task(retries=3)
def po_send_global(a: int, b: str, /) -> int:
    return a + len(b)


@q.task
async def po_fetch(x: int, /) -> str:
    return str(x)


assert_type(po_send, SyncTaskFunction[[int, str], int])
assert_type(po_send_global, SyncTaskFunction[[int, str], int])
assert_type(po_fetch, AsyncTaskFunction[[int], str])
assert_type(q.task(po_fn), SyncTaskFunction[[int, str], int])
assert_type(q.task(po_async_fn), AsyncTaskFunction[[int], str])
assert_type(q.task(retries=1)(po_fn), SyncTaskFunction[[int, str], int])
assert_type(q.task(retries=1)(po_async_fn), AsyncTaskFunction[[int], str])
assert_type(dowork.task(po_fn), SyncTaskFunction[[int, str], int])
assert_type(dowork.task(po_async_fn), AsyncTaskFunction[[int], str])
assert_type(dowork.task(retries=1)(po_fn), SyncTaskFunction[[int, str], int])
assert_type(po_send.submit(1, "a"), Task[int])
assert_type(po_send.with_options(retries=0), SyncTaskFunction[[int, str], int])
assert_type(po_fetch.submit(1), Task[str])

for tf in (send, send_bare, send_global, send_global_bare):
    assert_type(tf.submit(1, "a"), Task[int])
    assert_type(tf.submit(a=1, b="a"), Task[int])
    assert_type(tf.submit_nowait(1, "a"), Task[int])
    assert_type(tf.call_later(5.0, 1, "a"), Task[int])
    assert_type(tf.call_later(timedelta(minutes=1), 1, "a"), Task[int])
    assert_type(tf.call_at(datetime.now(UTC), 1, "a"), Task[int])
    assert_type(tf.task(1, "a"), Task[int])
    assert_type(tf.task(1, "a").configure(retries=1), Task[int])
    assert_type(q.enqueue(tf.task(1, "a")), Task[int])
    assert_type(tf.every(30.0, 1, "a"), Schedule)
    assert_type(tf.cron("0 * * * *", 1, "a"), Schedule)
    assert_type(tf.with_options(retries=1).submit(1, "a"), Task[int])
    assert_type(tf.submit(1, "a").result(), int)

assert_type(tf_direct.submit(1, "a"), Task[int])
assert_type(tf_direct_options.call_later(5.0, 1, "a"), Task[int])
assert_type(fetch.submit(1), Task[str])
assert_type(fetch.call_later(5.0, 1), Task[str])
assert_type(fetch.task(1), Task[str])
assert_type(fetch.submit(1).result(), str)
assert_type(fetch_bare.submit(1), Task[str])
assert_type(fetch_global_bare.submit(1), Task[str])
assert_type(fetch_global_bare.call_at(datetime.now(UTC), 1), Task[str])


async def waits_on_task_functions() -> None:
    assert_type(await send.submit(1, "a"), int)
    assert_type(await fetch.submit(1), str)
    assert_type(await fetch.submit(1).aresult(), str)
    assert_type(await send.asubmit(1, "a"), Task[int])
    assert_type(await (await fetch.asubmit(1)), str)
