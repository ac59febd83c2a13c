"""Side-by-side benchmark of dowork's durable queues against Python task-queue peers.

Run ``python bench/peers.py`` (a few minutes on 2 cores) or ``python bench/peers.py --quick``
(about 30 s). Peers come from the ``bench`` extra (``pip install -e '.[bench]'``); a peer that is
missing or fails prints a "skipped: reason" row. See bench/README.md for what each row measures
and how to read the output.

Every processing run happens in a child process per queue library ("host"), kept alive across
repeats and driven over a pipe, so that libraries with process-wide state (signals, logging,
global brokers) cannot disturb each other, and runs are still interleaved round-robin.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import itertools
import json
import os
import platform
import queue as stdqueue
import random
import select
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, TypeVar

import dowork

T = TypeVar("T")

# Targets from the issue.
SQLITE_TARGET = 3.0  # dowork SQLite processing >= 3x Huey's SqliteHuey
ENQUEUE_TARGET = 0.8  # dowork submit (one per call) >= 0.8x bare redis-py LPUSH round trips
BULK_TARGET = 50_000  # dowork map() >= 50,000 tasks/s
SQLITE_ENQUEUE_TARGET = 1.5  # dowork SQLite submit (one per call) >= 1.5x SqliteHuey's enqueue
ASUBMIT_TARGET = 0.9  # dowork asubmit() >= 0.9x submit() (calls/s, one per call; issue 16)
REDIS_TARGET = 4.0  # dowork Redis processing >= 4x Huey's RedisHuey
# Issue 16's, with the realistic body, are in section_real: dowork Redis >= 0.8x the body's
# ceiling (sync and async) and >= 3x RedisHuey; dowork SQLite >= 3x SqliteHuey.
P99_TARGET_MS = 3.0  # enqueue-to-start p99 <= 3 ms (and p50 no worse than Huey's)

# -- the task body every library runs ---------------------------------------------------------


class Counter:
    """Counts task bodies as they run, in whatever thread or loop the library uses.

    ``first`` is when the first body ran (the end of the worker's start-up), ``done`` is set
    when the ``target``-th one has run. ``next()`` on an ``itertools.count`` is atomic under
    the GIL, so the bodies need no lock.
    """

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, target: int) -> None:
        self.target = target
        self.first: float | None = None
        self.done = threading.Event()
        self._count = itertools.count(1)

    def tick(self) -> None:
        k = next(self._count)
        if k == 1:
            self.first = time.perf_counter()
        if k >= self.target:
            self.done.set()


COUNTER = Counter()


class RedisBody:
    """The realistic task body: one round trip to a Redis server (``INCR`` of one key).

    The server is not the broker's: the bench starts one of its own (``LocalRedis``), so that
    the body's round trips and the queue's own commands are counted on separate servers. The
    sync variant uses one redis-py client per process over a ``BlockingConnectionPool`` of
    ``concurrency`` connections (a slot never waits for a connection); the async variant one
    ``redis.asyncio`` client per event loop (a client is bound to the loop that first used
    it), each over a pool of the same size. Every library runs exactly these two methods.
    """

    def __init__(self, url: str, key: str, concurrency: int) -> None:
        import weakref

        import redis

        self.url, self.key, self.concurrency = url, key, concurrency
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=concurrency, timeout=60)
        self.client = redis.Redis(connection_pool=pool)
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    def call(self) -> None:
        self.client.incr(self.key)

    async def acall(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            import redis.asyncio

            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self.url, max_connections=self.concurrency, timeout=60
            )
            client = self._clients[loop] = redis.asyncio.Redis(connection_pool=pool)
        await client.incr(self.key)

    def reset(self) -> None:
        self.client.delete(self.key)

    def count(self) -> int:
        """How many bodies ran since ``reset()`` (the server's count, not ours)."""
        return int(self.client.get(self.key) or 0)


#: The body of the current run, set by the host before each run: None runs a no-op.
BODY: RedisBody | None = None


def work(i: int) -> None:
    """The task every sync library runs: the body of the run, then count."""
    body = BODY
    if body is not None:
        body.call()
    COUNTER.tick()


async def awork(i: int) -> None:
    """The task every async library runs (and dowork's ``async def`` rows)."""
    body = BODY
    if body is not None:
        await body.acall()
    COUNTER.tick()


async def awork_ctx(ctx: Any, i: int) -> None:  # arq and SAQ pass a context first
    await awork(i)


def noop(i: int) -> None:
    """The task of the enqueue sections (2a, 2b, 2e), which never run it."""


STAMP_FD = -1  # set in a latency worker process: where ``stamp`` writes its start time


def stamp() -> None:
    """The latency task: report when it started (``time.monotonic`` is system-wide)."""
    os.write(STAMP_FD, struct.pack("d", time.monotonic()))


# -- plumbing shared by the adapters ----------------------------------------------------------


def huey_task(huey: Any, fn: Callable[..., Any]) -> Any:
    """Register ``fn`` with Huey under a name that does not depend on how this file was
    loaded: Huey names a task ``module.function``, and the producer and the consumer may see
    this file as ``__main__`` or as ``peers``.
    """
    import types

    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__)
    copy.__module__ = "dwbench"
    return huey.task()(copy)


class Skip(Exception):
    """This peer cannot run here; the message says why (shown in a "skipped" row)."""


@dataclass
class Config:
    """What the main process tells every host (as JSON on its command line)."""

    redis_url: str
    prefix: str  #: in every Redis key and file name this run creates; cleanup matches on it
    tmp: str  #: directory for SQLite files
    concurrency: int
    batch: int  #: dowork DurableSettings(batch=...)
    body_url: str = ""  #: the Redis server of the realistic task body (not the broker)


class LoopThread:
    """An asyncio loop in a daemon thread, for libraries whose workers are coroutines."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def spawn(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        return self.spawn(coro).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def need(module: str, pip_name: str) -> Any:
    """Import ``module`` or raise ``Skip`` saying which package to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Skip(f"not installed ({exc}); pip install {pip_name}") from None


def delete_keys(url: str, pattern: str) -> int:
    """Delete the Redis keys matching ``pattern`` (only ever our own prefix)."""
    import redis

    r = redis.Redis.from_url(url)
    try:
        keys = list(r.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 1000):
            r.delete(*keys[start : start + 1000])
        return len(keys)
    finally:
        r.close()


def wait_event(event: threading.Event, timeout: float) -> None:
    if not event.wait(timeout):
        raise TimeoutError(
            f"only {next(COUNTER._count) - 1} of {COUNTER.target} tasks ran in {timeout:.0f} s"
        )


# -- adapters -----------------------------------------------------------------------------------
#
# One class per library. The host calls, for every timed run: cleanup(), preload(n) (untimed:
# put n no-op tasks in the store), then start() -> wait(timeout) -> stop(). The clock runs from
# start() until wait() returns; see run_once().


class Adapter:
    """A task queue under test. Subclass, fill in the hooks, add it to ``ADAPTERS``."""

    label: ClassVar[str]  #: the row name
    store: ClassVar[str]  #: "sqlite" or "redis"
    knobs: ClassVar[str] = ""  #: settings other than the defaults, printed under the table
    fixed_n: ClassVar[bool] = False  #: in a target: always the full ``n`` (see measure_hosts)

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.name = f"{cfg.prefix}-{type(self).__name__.lower()}"  # contains the prefix

    def setup(self) -> None:
        """Import the library and check the store is reachable; raise ``Skip`` if not."""

    def cleanup(self) -> None:
        """Delete everything earlier runs left in the store."""
        if self.store == "redis":
            delete_keys(self.cfg.redis_url, f"*{self.name}*")

    def preload(self, n: int) -> None:
        """Enqueue ``n`` calls ``work(i)`` without running them."""
        raise NotImplementedError

    def start(self) -> None:
        """Start one worker (in this process) with ``concurrency`` slots."""

    def wait(self, timeout: float) -> None:
        """Return once every task of the run has finished."""
        wait_event(COUNTER.done, timeout)

    def stop(self) -> None:
        """Stop the worker (untimed)."""

    def close(self) -> None:
        """Release connections before the host exits."""

    def server_cpu(self) -> float | None:
        """CPU seconds the Redis server has used so far (``INFO cpu``), None for SQLite."""
        if self.store != "redis":
            return None
        import redis

        r = redis.Redis.from_url(self.cfg.redis_url)
        try:
            info = r.info("cpu")
        finally:
            r.close()
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class DoworkAdapter(Adapter):
    """dowork with a backend: ``map`` to preload, ``start``/``shutdown`` for the worker."""

    is_async: ClassVar[bool] = False
    keep_result: ClassVar[float | None] = None  #: DurableSettings(keep_result=...)
    fixed_n = True

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.queue: dowork.Queue | None = None
        self.observer: Any = None  # a second backend object to read counts through
        self.observer_loop = asyncio.new_event_loop()
        self.path = os.path.join(cfg.tmp, f"{self.name}.db")
        self.n = 0

    @property
    def knobs(self) -> str:  # type: ignore[override]
        keep = "" if self.keep_result is None else f", keep_result={self.keep_result:g}"
        return (
            f"Queue(concurrency={self.cfg.concurrency}), "
            f"DurableSettings(batch={self.cfg.batch}{keep})"
        )

    def backend(self) -> Any:
        if self.store == "sqlite":
            return dowork.backends.SQLiteBackend(self.path)
        return dowork.backends.RedisBackend(self.cfg.redis_url, prefix=self.name)

    def setup(self) -> None:
        if self.store == "redis":
            try:
                from dowork.backends import RedisBackend  # noqa: F401
            except ImportError as exc:
                raise Skip(f"not available (dowork.backends.RedisBackend: {exc})") from None
        self.observer = self.backend()
        self.observer_loop.run_until_complete(self.observer.open())

    def cleanup(self) -> None:
        if self.store == "redis":
            super().cleanup()
            return
        self.observer_loop.run_until_complete(self.observer.close())
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path + suffix)
        self.observer = self.backend()
        self.observer_loop.run_until_complete(self.observer.open())

    def preload(self, n: int) -> None:
        self.n = n
        self.queue = dowork.Queue(
            "bench",
            backend=self.backend(),
            log=False,
            concurrency=self.cfg.concurrency,
            durable=dowork.DurableSettings(batch=self.cfg.batch, keep_result=self.keep_result),
        )
        fn = self.queue.task(name="work")(awork if self.is_async else work)
        fn.map([(i,) for i in range(n)])

    def start(self) -> None:
        assert self.queue is not None
        self.queue.start()

    def wait(self, timeout: float) -> None:
        """Every body ran, then poll the store until every outcome is written: every record
        says succeeded, or (``keep_result=0``) every record is gone.
        """
        deadline = time.perf_counter() + timeout
        wait_event(COUNTER.done, timeout)
        while True:
            counts = self.observer_loop.run_until_complete(self.observer.counts("bench"))
            if self.keep_result == 0:
                unsettled = ("pending", "scheduled", "retrying", "reserved", "running")
                if not any(counts.get(s) for s in unsettled):
                    return
            elif counts.get("succeeded", 0) >= self.n:
                return
            if time.perf_counter() > deadline:
                raise TimeoutError(f"records not settled in {timeout:.0f} s: {counts}")
            time.sleep(0.001)

    def stop(self) -> None:
        assert self.queue is not None
        self.queue.shutdown()
        self.queue = None

    def close(self) -> None:
        if self.observer is not None:
            self.observer_loop.run_until_complete(self.observer.close())


class DoworkSQLite(DoworkAdapter):
    label = "dowork SQLite (def)"
    store = "sqlite"


class DoworkSQLiteAsync(DoworkAdapter):
    label = "dowork SQLite (async def)"
    store = "sqlite"
    is_async = True


class DoworkSQLiteForget(DoworkAdapter):
    label = "dowork SQLite (def, keep_result=0)"
    store = "sqlite"
    keep_result = 0


class DoworkRedis(DoworkAdapter):
    label = "dowork Redis (def)"
    store = "redis"


class DoworkRedisAsync(DoworkAdapter):
    label = "dowork Redis (async def)"
    store = "redis"
    is_async = True


class DoworkRedisForget(DoworkAdapter):
    label = "dowork Redis (def, keep_result=0)"
    store = "redis"
    keep_result = 0


class HueyAdapter(Adapter):
    """Huey: one ``Consumer`` with ``concurrency`` worker threads, started in this process."""

    fixed_n = True

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.huey: Any = None
        self.task: Any = None
        self.consumer: Any = None

    @property
    def knobs(self) -> str:  # type: ignore[override]
        return f"create_consumer(workers={self.cfg.concurrency}, worker_type='thread')"

    def make(self) -> Any:
        raise NotImplementedError

    def setup(self) -> None:
        need("huey", "huey")
        self.huey = self.make()
        self.task = huey_task(self.huey, work)
        self.huey.pending_count()  # reaches the store

    def cleanup(self) -> None:
        self.huey.flush()

    def preload(self, n: int) -> None:
        task = self.task
        for i in range(n):
            task(i)

    def start(self) -> None:
        self.consumer = self.huey.create_consumer(
            workers=self.cfg.concurrency, worker_type="thread", periodic=False
        )
        self.consumer.start()

    def stop(self) -> None:
        self.consumer.stop(graceful=True)


class HueySQLite(HueyAdapter):
    label = "huey SqliteHuey"
    store = "sqlite"

    def make(self) -> Any:
        from huey import SqliteHuey

        return SqliteHuey(self.name, filename=os.path.join(self.cfg.tmp, f"{self.name}.db"))


class HueyRedis(HueyAdapter):
    label = "huey RedisHuey"
    store = "redis"

    def make(self) -> Any:
        from huey import RedisHuey

        return RedisHuey(self.name, url=self.cfg.redis_url)


class RQ(Adapter):
    """RQ: a ``SimpleWorker`` (runs jobs in its own process, one at a time: RQ's only
    in-process mode) in burst mode. The default ``Worker`` forks a process per job.
    """

    label = "rq SimpleWorker"
    store = "redis"
    knobs = (
        "SimpleWorker.work(burst=True), no pub/sub thread (no concurrency option; the default"
        " Worker forks per job)"
    )

    def setup(self) -> None:
        need("rq", "rq")
        import redis
        from rq import Queue

        self.conn = redis.Redis.from_url(self.cfg.redis_url)
        self.queue = Queue(self.name, connection=self.conn)
        self.runs = 0

    def preload(self, n: int) -> None:
        from rq import Queue

        self.runs += 1
        jobs = [
            Queue.prepare_data(work, (i,), job_id=f"{self.name}-{self.runs}-{i}") for i in range(n)
        ]
        for start in range(0, n, 1000):
            self.queue.enqueue_many(jobs[start : start + 1000])

    def wait(self, timeout: float) -> None:
        from rq import SimpleWorker

        class Worker(SimpleWorker):
            """No pub/sub thread (it only serves remote commands such as ``rq suspend``). At
            teardown RQ waits 1 s for that thread, then hands its connection back to the pool
            while the thread still blocks reading from it (for up to 60 s): the next worker's
            command could get that connection, lose its reply to the old thread, and stall a
            run for 60 s (seen in about one run in ten).
            """

            def subscribe(self) -> None:
                pass

            def unsubscribe(self) -> None:
                pass

        worker = Worker(
            [self.queue], connection=self.conn, name=f"{self.name}-{uuid.uuid4().hex[:6]}"
        )
        worker.work(burst=True, logging_level="WARNING")  # returns when the queue is empty
        wait_event(COUNTER.done, 1)

    def cleanup(self) -> None:
        super().cleanup()
        self.conn.srem("rq:queues", self.queue.key)  # RQ's set of every queue's key

    def close(self) -> None:
        self.conn.close()


class Dramatiq(Adapter):
    """Dramatiq: ``RedisBroker`` and an in-process ``Worker`` with ``concurrency`` threads."""

    label = "dramatiq RedisBroker"
    store = "redis"

    @property
    def knobs(self) -> str:  # type: ignore[override]
        return f"Worker(worker_threads={self.cfg.concurrency})"

    def setup(self) -> None:
        need("dramatiq", "dramatiq[redis]")
        self.broker: Any = None
        self.make_broker().client.ping()

    def make_broker(self) -> Any:
        """A new broker (a Worker adds middleware to its broker that cannot be removed)."""
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker

        if self.broker is not None:
            self.broker.close()
        self.broker = RedisBroker(url=self.cfg.redis_url, namespace=self.name)
        dramatiq.set_broker(self.broker)
        self.actor = dramatiq.actor(work, actor_name="work", queue_name="bench", broker=self.broker)
        return self.broker

    def preload(self, n: int) -> None:
        self.make_broker()
        send = self.actor.send
        for i in range(n):
            send(i)

    def start(self) -> None:
        import dramatiq

        self.worker = dramatiq.Worker(self.broker, worker_threads=self.cfg.concurrency)
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()

    def close(self) -> None:
        self.broker.close()


class Celery(Adapter):
    """Celery: an embedded worker (``celery.contrib.testing``) with the ``threads`` pool."""

    label = "celery (redis broker)"
    store = "redis"

    @property
    def knobs(self) -> str:  # type: ignore[override]
        return f"worker pool='threads', concurrency={self.cfg.concurrency}, task ignore_result"

    def setup(self) -> None:
        celery = need("celery", "celery[redis]")
        need("redis", "celery[redis]")
        self.app = celery.Celery("dwbench", broker=self.cfg.redis_url, set_as_current=False)
        self.app.conf.update(
            task_default_queue=self.name,
            broker_transport_options={"global_keyprefix": f"{self.name}:"},
            task_ignore_result=True,
            worker_hijack_root_logger=False,
            broker_connection_retry_on_startup=True,
        )
        self.task = self.app.task(name="work", ignore_result=True)(work)
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)
        self.stack = contextlib.ExitStack()

    def preload(self, n: int) -> None:
        apply = self.task.apply_async
        with self.app.producer_or_acquire() as producer:
            for i in range(n):
                apply((i,), producer=producer)

    def start(self) -> None:
        from celery.contrib.testing.worker import start_worker

        self.stack.enter_context(
            start_worker(
                self.app,
                pool="threads",
                concurrency=self.cfg.concurrency,
                perform_ping_check=False,
                loglevel="WARNING",
                shutdown_timeout=30,
            )
        )

    def stop(self) -> None:
        self.stack.close()


class Arq(Adapter):
    """arq: an ``arq.worker.Worker`` (``max_jobs`` = concurrency) on a loop thread."""

    label = "arq"
    store = "redis"
    poll_delay = 0.01

    @property
    def knobs(self) -> str:  # type: ignore[override]
        return (
            f"Worker(max_jobs={self.cfg.concurrency}, poll_delay={self.poll_delay}) "
            "(the default poll_delay=0.5 caps it near 200 tasks/s)"
        )

    def setup(self) -> None:
        need("arq", "--no-deps arq (arq pins redis<6; it runs with redis-py 8 here)")
        from arq.connections import RedisSettings, create_pool

        self.loop = LoopThread()
        self.settings = RedisSettings.from_dsn(self.cfg.redis_url)
        self.pool = self.loop.run(create_pool(self.settings, default_queue_name=self.name))
        self.runs = 0

    def preload(self, n: int) -> None:
        self.runs += 1
        prefix = f"{self.name}-{self.runs}"

        async def fill() -> None:
            for start in range(0, n, 100):  # 100 enqueue transactions in flight at a time
                await asyncio.gather(
                    *(
                        self.pool.enqueue_job("work", i, _job_id=f"{prefix}-{i}")
                        for i in range(start, min(n, start + 100))
                    )
                )

        self.loop.run(fill(), timeout=None)

    def start(self) -> None:
        from arq.worker import Worker, func

        async def make() -> Any:  # the Worker takes the loop current where it is built
            return Worker(
                functions=[func(awork_ctx, name="work")],
                queue_name=self.name,
                redis_pool=self.pool,
                max_jobs=self.cfg.concurrency,
                poll_delay=self.poll_delay,
                burst=True,  # stopping it by cancellation can hang with redis-py >= 6
                handle_signals=False,
                log_results=False,
            )

        self.worker = self.loop.run(make())
        self.running = self.loop.spawn(self.worker.async_run())

    def stop(self) -> None:
        self.running.result(30)  # burst mode: the worker returns once the queue is empty

    def cleanup(self) -> None:
        super().cleanup()
        delete_keys(self.cfg.redis_url, f"arq:*{self.name}*")  # arq:job:<id>, arq:result:<id>

    def close(self) -> None:
        self.loop.run(self.pool.aclose())
        self.loop.close()


class SAQ(Adapter):
    """SAQ: a ``saq.Worker`` (``concurrency`` slots) on a loop thread."""

    label = "saq"
    store = "redis"

    @property
    def knobs(self) -> str:  # type: ignore[override]
        return f"Worker(concurrency={self.cfg.concurrency})"

    def setup(self) -> None:
        saq = need("saq", "saq")
        self.loop = LoopThread()

        async def make() -> Any:
            queue = saq.Queue.from_url(self.cfg.redis_url, name=self.name)
            await queue.connect()
            return queue

        self.queue = self.loop.run(make())

    def preload(self, n: int) -> None:
        async def fill() -> None:
            for start in range(0, n, 100):
                await asyncio.gather(
                    *(self.queue.enqueue("work", i=i) for i in range(start, min(n, start + 100)))
                )

        self.loop.run(fill(), timeout=None)

    def start(self) -> None:
        import saq

        self.worker = saq.Worker(
            self.queue, functions=[("work", awork_ctx)], concurrency=self.cfg.concurrency
        )
        self.worker.SIGNALS = []  # signal handlers need the main thread; we stop it by hand
        self.running = self.loop.spawn(self.worker.start())

    def stop(self) -> None:
        self.loop.run(self.worker.stop())
        with contextlib.suppress(BaseException):
            self.running.result(5)

    def close(self) -> None:
        self.loop.run(self.queue.disconnect())
        self.loop.close()


class Taskiq(Adapter):
    """Taskiq: ``taskiq_redis.RedisStreamBroker`` (acknowledged deliveries) and a ``Receiver``
    with ``max_async_tasks`` = concurrency, on a loop thread.
    """

    label = "taskiq RedisStreamBroker"
    store = "redis"
    xread_block = 200  # ms; the default 2000 makes every stop wait up to 2 s (idle only)

    @property
    def knobs(self) -> str:  # type: ignore[override]
        return (
            f"Receiver(max_async_tasks={self.cfg.concurrency}), "
            f"RedisStreamBroker(xread_block={self.xread_block})"
        )

    def setup(self) -> None:
        need("taskiq", "taskiq")
        taskiq_redis = need("taskiq_redis", "taskiq-redis")
        self.loop = LoopThread()
        self.broker = taskiq_redis.RedisStreamBroker(
            self.cfg.redis_url,
            queue_name=self.name,
            consumer_group_name=self.name,
            xread_block=self.xread_block,
        )
        self.task = self.broker.task(task_name="work")(awork)
        self.loop.run(self.broker.startup())

    def preload(self, n: int) -> None:
        async def fill() -> None:
            await self.broker.startup()  # cleanup() deleted the stream and its consumer group
            for start in range(0, n, 100):
                await asyncio.gather(*(self.task.kiq(i) for i in range(start, min(n, start + 100))))

        self.loop.run(fill(), timeout=None)

    def start(self) -> None:
        from taskiq.receiver import Receiver

        async def listen() -> None:
            self.finish = asyncio.Event()
            receiver = Receiver(
                self.broker, max_async_tasks=self.cfg.concurrency, run_startup=False
            )
            await receiver.listen(self.finish)

        self.broker.is_worker_process = True
        self.running = self.loop.spawn(listen())

    def stop(self) -> None:
        self.loop.loop.call_soon_threadsafe(self.finish.set)
        try:
            self.running.result(1)
        except TimeoutError:  # the receiver can stay stuck in its cancelled XREADGROUP
            self.running.cancel()
        with contextlib.suppress(BaseException):
            self.running.result(5)
        self.broker.is_worker_process = False

    def close(self) -> None:
        self.loop.run(self.broker.shutdown())
        self.loop.close()


class Ceiling(Adapter):
    """The body's ceiling: the same task body run without any queue, in the host process.

    No store, no preload: ``start()`` runs (or starts running) ``n`` bodies, and the clock
    runs, as for the queues, from the first body to the last.
    """

    store = "ceiling"
    fixed_n = True

    def preload(self, n: int) -> None:
        self.n = n


class CeilingLoop(Ceiling):
    label = "ceiling: sequential loop"
    knobs = "for i in range(n): work(i), in one thread"

    def start(self) -> None:
        for i in range(self.n):
            work(i)


class CeilingThreads(Ceiling):
    label = "ceiling: ThreadPoolExecutor"

    @property
    def knobs(self) -> str:  # type: ignore[override]
        return f"ThreadPoolExecutor(max_workers={self.cfg.concurrency}), submit n calls work(i)"

    def start(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=self.cfg.concurrency)
        submit = self.pool.submit
        for i in range(self.n):
            submit(work, i)

    def stop(self) -> None:
        self.pool.shutdown()


class CeilingAsyncLoop(Ceiling):
    label = "ceiling: sequential await loop"
    knobs = "for i in range(n): await awork(i), on one event loop"

    def setup(self) -> None:
        self.loop = LoopThread()

    async def drive(self, n: int) -> None:
        for i in range(n):
            await awork(i)

    def start(self) -> None:
        self.running = self.loop.spawn(self.drive(self.n))

    def stop(self) -> None:
        self.running.result(30)

    def close(self) -> None:
        self.loop.close()


class CeilingAsyncio(CeilingAsyncLoop):
    label = "ceiling: asyncio + Semaphore"

    @property
    def knobs(self) -> str:  # type: ignore[override]
        return (
            f"one event loop, asyncio.Semaphore({self.cfg.concurrency}): "
            "a task per call, at most that many at once"
        )

    async def drive(self, n: int) -> None:
        slots = asyncio.Semaphore(self.cfg.concurrency)
        tasks: set[asyncio.Task[None]] = set()

        async def one(i: int) -> None:
            try:
                await awork(i)
            finally:
                slots.release()

        for i in range(n):
            await slots.acquire()
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)


ADAPTERS: dict[str, type[Adapter]] = {
    "dowork-sqlite": DoworkSQLite,
    "dowork-sqlite-async": DoworkSQLiteAsync,
    "dowork-sqlite-keep0": DoworkSQLiteForget,
    "huey-sqlite": HueySQLite,
    "dowork-redis": DoworkRedis,
    "dowork-redis-async": DoworkRedisAsync,
    "dowork-redis-keep0": DoworkRedisForget,
    "huey-redis": HueyRedis,
    "rq": RQ,
    "dramatiq": Dramatiq,
    "celery": Celery,
    "arq": Arq,
    "saq": SAQ,
    "taskiq": Taskiq,
    "ceiling-loop": CeilingLoop,
    "ceiling-threads": CeilingThreads,
    "ceiling-aloop": CeilingAsyncLoop,
    "ceiling-asyncio": CeilingAsyncio,
}
SQLITE_KEYS = [k for k in ADAPTERS if ADAPTERS[k].store == "sqlite"]
REDIS_KEYS = [k for k in ADAPTERS if ADAPTERS[k].store == "redis"]
CEILING_KEYS = [k for k in ADAPTERS if ADAPTERS[k].store == "ceiling"]
#: The realistic body's rows: the ceilings, then every library once per kind of body (the
#: keep_result=0 variants only in the no-op sections).
REAL_KEYS = [*CEILING_KEYS, *(k for k in SQLITE_KEYS + REDIS_KEYS if not k.endswith("-keep0"))]
ASYNC_KEYS = {
    "ceiling-aloop", "ceiling-asyncio", "dowork-sqlite-async", "dowork-redis-async",
    "arq", "saq", "taskiq",
}  # fmt: skip


# -- the host process -------------------------------------------------------------------------


def body_for(adapter: Adapter, body: str) -> RedisBody | None:
    """The body of a run: None (no-op) or this host's ``RedisBody``, made on first use."""
    global _REDIS_BODY
    if body == "noop":
        return None
    if _REDIS_BODY is None:
        _REDIS_BODY = RedisBody(
            adapter.cfg.body_url, f"{adapter.name}-body", adapter.cfg.concurrency
        )
    return _REDIS_BODY


_REDIS_BODY: RedisBody | None = None


def run_once(adapter: Adapter, n: int, timeout: float, body: str = "noop") -> dict[str, float]:
    """One timed processing run: a backlog of ``n`` tasks, one worker, until all finished.

    ``body`` is "noop" or "redis" (one ``INCR`` on the body server per task, checked against
    the server's count afterwards). The worker is still running on return: the caller replies
    first, then calls ``stop()``.
    """
    global BODY
    BODY = body_for(adapter, body)
    if BODY is not None:
        BODY.reset()
    adapter.cleanup()
    COUNTER.reset(n)
    t = time.perf_counter()
    adapter.preload(n)
    preload = time.perf_counter() - t
    gc.collect()
    cpu = adapter.server_cpu()
    start = time.perf_counter()
    own = time.process_time()  # every thread of this process: the worker's CPU
    adapter.start()
    adapter.wait(timeout)
    end = time.perf_counter()
    own = time.process_time() - own
    first = COUNTER.first if COUNTER.first is not None else start
    timing = {"steady": end - first, "boot": first - start, "preload": preload, "cpu": own / n}
    if cpu is not None:
        used = adapter.server_cpu()
        assert used is not None
        timing["server"] = (used - cpu) / n
    if BODY is not None and (ran := BODY.count()) < n:
        raise RuntimeError(f"the body server counted {ran} round trips for {n} tasks")
    return timing


def host_main(key: str, cfg: Config, reply_fd: int) -> int:
    """Serve ``run`` commands (JSON lines on stdin) for one adapter; reply on ``reply_fd``."""
    out = os.fdopen(reply_fd, "w", buffering=1)

    def reply(**message: Any) -> None:
        out.write(json.dumps(message) + "\n")

    adapter = ADAPTERS[key](cfg)
    try:
        adapter.setup()
        adapter.cleanup()
    except Skip as exc:
        reply(skip=str(exc))
        return 0
    except Exception as exc:
        reply(skip=f"setup failed: {type(exc).__name__}: {exc}")
        return 0
    reply(ready=True, knobs=adapter.knobs)
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if command["op"] != "run":
                break
            try:
                reply(**run_once(adapter, command["n"], command["timeout"], command["body"]))
                # Stopping takes up to ~2 s of idle waiting (blocking reads time out) in most
                # libraries and under 10 ms of CPU, so it overlaps the next host's run.
                adapter.stop()
            except Exception as exc:
                reply(error=f"{type(exc).__name__}: {exc}")
                break
    finally:
        with contextlib.suppress(Exception):
            adapter.cleanup()
        with contextlib.suppress(Exception):
            adapter.close()
    return 0


class HostFailed(Exception):
    """A host process said no, died, or did not answer in time."""


FAILED: list[str] = []  #: adapters whose host failed at run time (their logs are kept)


class Host:
    """The main process's handle on one host process."""

    def __init__(self, key: str, cfg: Config, logdir: str) -> None:
        self.key = key
        self.label = ADAPTERS[key].label
        self.log_path = os.path.join(logdir, f"{key}.log")
        read_fd, write_fd = os.pipe()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--host", key, "--reply-fd",
                 str(write_fd), "--config", json.dumps(asdict(cfg))],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, pass_fds=(write_fd,),
                text=True,
            )  # fmt: skip
        os.close(write_fd)
        self.replies: stdqueue.Queue[dict[str, Any] | None] = stdqueue.Queue()
        threading.Thread(target=self._read, args=(read_fd,), daemon=True).start()
        self.knobs = ""

    def _read(self, fd: int) -> None:
        with os.fdopen(fd) as lines:
            for line in lines:
                self.replies.put(json.loads(line))
        self.replies.put(None)  # the host exited

    def log_tail(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                lines = [line.strip() for line in f if line.strip()]
        except OSError:
            return ""
        return lines[-1][:160] if lines else ""

    def receive(self, timeout: float) -> dict[str, Any]:
        try:
            message = self.replies.get(timeout=timeout)
        except stdqueue.Empty:
            self.kill()
            raise HostFailed(f"no answer in {timeout:.0f} s") from None
        if message is None:
            tail = self.log_tail()
            raise HostFailed(f"host exited ({tail})" if tail else "host exited")
        return message

    def ready(self, timeout: float = 90) -> None:
        message = self.receive(timeout)
        if "skip" in message:
            raise HostFailed(message["skip"])
        self.knobs = message.get("knobs", "")

    def run(self, n: int, timeout: float, body: str) -> dict[str, float]:
        assert self.proc.stdin is not None
        command = {"op": "run", "n": n, "timeout": timeout, "body": body}
        try:
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise HostFailed(f"host gone ({exc})") from None
        message = self.receive(timeout + 30)
        if "error" in message:
            raise HostFailed(message["error"])
        return message

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# -- measurement helpers -----------------------------------------------------------------------


@dataclass
class Result:
    """Timings (seconds) of one benchmark over all repeats, for ``n`` tasks each."""

    name: str
    n: int
    times: list[float] = field(default_factory=list)
    boots: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)  #: Redis server CPU s per task
    cpu: list[float] = field(default_factory=list)  #: the host process's CPU s per task
    skip: str | None = None
    knobs: str = ""
    key: str = ""  #: the adapter's key in ``ADAPTERS`` (empty for in-process benchmarks)

    @property
    def ok(self) -> bool:
        return self.skip is None and bool(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def rate(self) -> float:
        """Median throughput in tasks per second."""
        return self.n / self.median

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the repeats were."""
        return (max(self.times) - min(self.times)) / self.median

    @property
    def rates(self) -> tuple[float, float]:
        """The slowest and the fastest repeat, in tasks per second."""
        return self.n / max(self.times), self.n / min(self.times)

    def as_json(self) -> dict[str, Any]:
        """Everything measured, for ``--json`` (seconds, tasks/s, CPU in µs per task)."""
        row: dict[str, Any] = {"name": self.name, "key": self.key, "n": self.n}
        if not self.ok:
            return {**row, "skipped": self.skip}
        return {
            **row,
            "times_s": self.times,
            "median_s": self.median,
            "tasks_per_s": self.rate,
            "tasks_per_s_min_max": list(self.rates),
            "boot_ms_median": statistics.median(self.boots) * 1000 if self.boots else None,
            "worker_cpu_us_per_task": median_us(self.cpu),
            "redis_cpu_us_per_task": median_us(self.server),
            "settings": self.knobs,
        }


def median_us(values: list[float]) -> float | None:
    return statistics.median(values) * 1e6 if values else None


def run_timeout(n: int) -> float:
    """Seconds a processing run of ``n`` tasks may take: a peer below ~100 tasks/s fails."""
    return 30 + n / 100


def start_hosts(keys: list[str], cfg: Config, logdir: str) -> dict[str, Host | str]:
    """Start a host per adapter, all at once so that their imports overlap, and wait until
    every one is ready (before any timed run, which their start-up would disturb). A host that
    cannot run is replaced by the reason.
    """
    hosts = {key: Host(key, cfg, logdir) for key in keys}
    ready: dict[str, Host | str] = {}
    for key, host in hosts.items():
        try:
            host.ready()
            ready[key] = host
        except HostFailed as exc:
            host.kill()
            ready[key] = str(exc)
    return ready


LOADS: list[float] = []  #: the 1-minute load average before every timed round (all sections)


def measure_hosts(
    hosts: dict[str, Host | str], args: argparse.Namespace, body: str = "noop"
) -> list[Result]:
    """One untimed warm-up run of ``args.warmup`` tasks per host, then ``args.repeat`` timed
    runs, interleaved round-robin, with the task body ``body`` ("noop" or "redis").

    Adapters in a target run ``args.n`` tasks. The others run as many as the warm-up rate
    says fit in ``args.budget`` seconds (at least 100, at most ``args.n``), so that a slow
    peer does not stretch the whole benchmark; the ``n`` column shows what each one ran.
    A host that fails is killed and its row says why; the others stay up for later sections.
    """
    results = {key: Result(ADAPTERS[key].label, args.n, key=key) for key in hosts}
    live: dict[str, Host] = {}
    for key, host in hosts.items():
        if isinstance(host, str):
            results[key].skip = host
        elif host.proc.poll() is not None or key in FAILED:
            results[key].skip = "failed in an earlier section"
        else:
            results[key].knobs = host.knobs
            live[key] = host
    for round_ in range(args.repeat + 1):
        if round_:
            LOADS.append(os.getloadavg()[0])
        for key, host in list(live.items()):
            result = results[key]
            size = args.warmup if round_ == 0 else result.n
            try:
                timing = host.run(size, run_timeout(size), body)
            except HostFailed as exc:
                result.skip = f"failed: {exc}"
                FAILED.append(key)
                del live[key]
                host.kill()
                continue
            if round_ == 0:
                if not ADAPTERS[key].fixed_n:
                    fit = int(size / timing["steady"] * args.budget) // 100 * 100
                    result.n = max(100, min(args.n, fit))
                continue
            result.times.append(timing["steady"])
            result.boots.append(timing["boot"])
            result.cpu.append(timing["cpu"])
            if "server" in timing:
                result.server.append(timing["server"])
    return list(results.values())


@dataclass
class Bench:
    """An in-process benchmark: ``fn(n)`` does ``n`` operations and returns the seconds."""

    name: str
    fn: Callable[[int], float]
    n: int


def measure(benches: list[Bench], repeat: int) -> list[Result]:
    """As bench/inprocess.py: a warm-up run each, then ``repeat`` interleaved timed runs."""
    for bench in benches:
        gc.collect()
        bench.fn(bench.n)
    results = [Result(bench.name, bench.n) for bench in benches]
    for _ in range(repeat):
        for bench, result in zip(benches, results, strict=True):
            gc.collect()
            result.times.append(bench.fn(bench.n))
    return results


# -- 2a/2b: enqueue rates (in this process) ----------------------------------------------------

SUBMIT = "dowork submit(), one per call"
MAP = "dowork map(), n tasks in one call"
PAYLOAD = json.dumps({"name": "noop", "a": [12345], "k": {}}).encode()


class RedisEnqueue:
    """The producers of sections 2a and 2b, each cleaning up its keys after a run."""

    def __init__(self, cfg: Config) -> None:
        import redis

        self.cfg = cfg
        self.redis = redis.Redis.from_url(cfg.redis_url)
        self.list_key = f"{cfg.prefix}-lpush"
        self.dowork_prefix = f"{cfg.prefix}-enqueue"
        self.queue: dowork.Queue | None = None
        if _have_redis_backend() is True:
            from dowork.backends import RedisBackend

            backend = RedisBackend(cfg.redis_url, prefix=self.dowork_prefix)
            self.queue = dowork.Queue("bench", backend=backend, log=False)
            self.noop = self.queue.task(name="noop")(noop)
        self.huey: Any = None
        with contextlib.suppress(ImportError):
            from huey import RedisHuey

            self.huey = RedisHuey(f"{cfg.prefix}-enqueue-huey", url=cfg.redis_url)
            self.huey_noop = huey_task(self.huey, noop)

    def _forget(self) -> None:
        """Drop the handles dowork keeps for tasks this process enqueued (memory only)."""
        assert self.queue is not None
        self.queue._engine._by_id.clear()

    def lpush(self, n: int) -> float:
        push, key = self.redis.lpush, self.list_key
        start = time.perf_counter()
        for _ in range(n):
            push(key, PAYLOAD)
        elapsed = time.perf_counter() - start
        self.redis.delete(key)
        return elapsed

    def lpush_pipeline(self, n: int) -> float:
        start = time.perf_counter()
        with self.redis.pipeline(transaction=False) as pipe:
            for _ in range(n):
                pipe.lpush(self.list_key, PAYLOAD)
            pipe.execute()
        elapsed = time.perf_counter() - start
        self.redis.delete(self.list_key)
        return elapsed

    def submit(self, n: int) -> float:
        submit = self.noop.submit
        start = time.perf_counter()
        for i in range(n):
            submit(i)
        elapsed = time.perf_counter() - start
        self._clean()
        return elapsed

    def map(self, n: int) -> float:
        calls = [(i,) for i in range(n)]
        start = time.perf_counter()
        self.noop.map(calls)
        elapsed = time.perf_counter() - start
        self._clean()
        return elapsed

    def huey_enqueue(self, n: int) -> float:
        enqueue = self.huey_noop
        start = time.perf_counter()
        for i in range(n):
            enqueue(i)
        elapsed = time.perf_counter() - start
        self.huey.flush()
        return elapsed

    def _clean(self) -> None:
        self._forget()
        delete_keys(self.cfg.redis_url, f"{self.dowork_prefix}:*")

    def close(self) -> None:
        if self.queue is not None:
            self.queue.shutdown()
            self._clean()
        if self.huey is not None:
            self.huey.flush()
        self.redis.delete(self.list_key)
        self.redis.close()


SQLITE_SUBMIT = "dowork SQLite submit(), one per call"
SQLITE_HUEY = "huey SqliteHuey enqueue, one per call"


class SQLiteEnqueue:
    """The SQLite producers of section 2a, each on a file of its own, emptied after a run."""

    def __init__(self, cfg: Config) -> None:
        from dowork.backends import SQLiteBackend

        self.backend = SQLiteBackend(os.path.join(cfg.tmp, "enqueue-dowork.db"))
        self.queue = dowork.Queue("bench", backend=self.backend, log=False)
        self.noop = self.queue.task(name="noop")(noop)
        self.huey: Any = None
        with contextlib.suppress(ImportError):
            from huey import SqliteHuey

            self.huey = SqliteHuey("enqueue", filename=os.path.join(cfg.tmp, "enqueue-huey.db"))
            self.huey_noop = huey_task(self.huey, noop)

    def submit(self, n: int) -> float:
        submit = self.noop.submit
        start = time.perf_counter()
        for i in range(n):
            submit(i)
        elapsed = time.perf_counter() - start
        self.queue._engine._by_id.clear()  # (the handles this process keeps: memory only)
        self.queue._engine.run_on_home(self.backend.purge("bench"))
        return elapsed

    def huey_enqueue(self, n: int) -> float:
        enqueue = self.huey_noop
        start = time.perf_counter()
        for i in range(n):
            enqueue(i)
        elapsed = time.perf_counter() - start
        self.huey.flush()
        return elapsed

    def close(self) -> None:
        self.queue.shutdown()


def sqlite_enqueue(args: argparse.Namespace, cfg: Config) -> list[Check]:
    """Section 2a's SQLite rows: dowork's ``submit()`` against SqliteHuey's enqueue."""
    producers = SQLiteEnqueue(cfg)
    try:
        benches = [Bench(SQLITE_SUBMIT, producers.submit, args.enqueue_n)]
        if producers.huey is not None:
            benches.append(Bench(SQLITE_HUEY, producers.huey_enqueue, args.enqueue_n))
        rows = measure(benches, 3 * args.repeat)  # (fractions of a second: see 2a)
    finally:
        producers.close()
    if len(rows) == 1:
        rows.append(Result(SQLITE_HUEY, 0, skip="huey is not installed"))
    print_table("2a. SQLite: single enqueue (calls/s; the call returns once committed)", rows)
    mine, huey = rows
    line = ratio_line(f"{mine.name} / {huey.name}", mine, huey, SQLITE_ENQUEUE_TARGET)
    print_ratios(f"ratio (calls/s), target >= {SQLITE_ENQUEUE_TARGET}x:", [line])
    RESULTS["enqueue"] = [*RESULTS.get("enqueue", []), *rows]
    return [(f"SQLite submit >= {SQLITE_ENQUEUE_TARGET}x SqliteHuey", line[1], line[2])]


# -- 2e: submit() against asubmit() on durable queues (in this process) ------------------------


class DurableSubmits:
    """Section 2e: ``noop.submit(i)`` from this thread against ``await noop.asubmit(i)`` in
    ``asyncio.run``, one call at a time, on a producer's queue (no worker): a new queue and
    backend per run (an ``asubmit`` makes the running loop the queue's home), one untimed
    call first to connect, the records deleted after each run.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.runs = 0

    def _queue(self, store: str) -> tuple[dowork.Queue, Any]:
        from dowork.backends import RedisBackend, SQLiteBackend

        self.runs += 1
        backend: Any
        if store == "redis":
            backend = RedisBackend(self.cfg.redis_url, prefix=f"{self.cfg.prefix}-submits")
        else:
            path = os.path.join(self.cfg.tmp, f"{self.cfg.prefix}-submits-{self.runs}.db")
            backend = SQLiteBackend(path)
        queue = dowork.Queue("bench", backend=backend, log=False)
        return queue, queue.task(name="noop")(noop)

    def _clean(self, store: str) -> None:
        if store == "redis":
            delete_keys(self.cfg.redis_url, f"{self.cfg.prefix}-submits:*")
        else:
            for name in os.listdir(self.cfg.tmp):
                if name.startswith(f"{self.cfg.prefix}-submits-"):
                    os.unlink(os.path.join(self.cfg.tmp, name))

    def submit(self, store: str) -> Callable[[int], float]:
        def run(n: int) -> float:
            queue, fn = self._queue(store)
            fn.submit(-1)
            start = time.perf_counter()
            for i in range(n):
                fn.submit(i)
            elapsed = time.perf_counter() - start
            queue.shutdown()
            self._clean(store)
            return elapsed

        return run

    def asubmit(self, store: str) -> Callable[[int], float]:
        def run(n: int) -> float:
            queue, fn = self._queue(store)

            async def calls() -> float:
                await fn.asubmit(-1)
                start = time.perf_counter()
                for i in range(n):
                    await fn.asubmit(i)
                elapsed = time.perf_counter() - start
                await queue.ashutdown()
                return elapsed

            elapsed = asyncio.run(calls())
            self._clean(store)
            return elapsed

        return run


def section_submits(args: argparse.Namespace, cfg: Config) -> list[Check]:
    available = _have_redis_backend()
    submits = DurableSubmits(cfg)
    names = {
        store: (f"dowork {label} submit(), one per call", f"dowork {label} asubmit(), one per call")
        for store, label in (("sqlite", "SQLite"), ("redis", "Redis"))
    }
    benches = []
    for store, (sync_name, async_name) in names.items():
        if store == "redis" and available is not True:
            continue
        benches += [
            Bench(sync_name, submits.submit(store), args.enqueue_n),
            Bench(async_name, submits.asubmit(store), args.enqueue_n),
        ]
    # Runs of a fraction of a second: three times the repeats, as section 2a.
    done = {r.name: r for r in measure(benches, 3 * args.repeat)}
    missing = Result("", 0, skip=str(available))
    rows = [
        done.get(name) or dataclasses.replace(missing, name=name)
        for pair in names.values()
        for name in pair
    ]
    print_table(
        "2e. submit() against asubmit() on durable queues (calls/s; a producer, no worker)", rows
    )
    stores = ("SQLite", "Redis")
    lines = [
        ratio_line(f"{label}: asubmit / submit", rows[2 * i + 1], rows[2 * i], ASUBMIT_TARGET)
        for i, label in enumerate(stores)
    ]
    print_ratios(f"ratios (calls/s), target >= {ASUBMIT_TARGET}x:", lines)
    RESULTS["submits"] = rows
    return [
        (f"{label} asubmit >= {ASUBMIT_TARGET}x submit", value, ok)
        for label, (_, value, ok) in zip(stores, lines, strict=True)
    ]


# -- 2d: enqueue-to-start latency (worker in another process) ---------------------------------


def latency_worker_main(key: str, cfg: Config, reply_fd: int, stamp_fd: int) -> int:
    """A worker process for the latency test: runs ``stamp`` tasks until stdin closes."""
    global STAMP_FD
    STAMP_FD = stamp_fd
    out = os.fdopen(reply_fd, "w", buffering=1)
    prefix = f"{cfg.prefix}-latency-{key}"
    if key == "dowork":
        from dowork.backends import RedisBackend

        q = dowork.Queue(
            "latency",
            backend=RedisBackend(cfg.redis_url, prefix=prefix),
            log=False,
            concurrency=cfg.concurrency,
            durable=dowork.DurableSettings(batch=cfg.batch),
        )
        q.task(name="stamp")(stamp)
        q.start()
        stop: Callable[[], object] = q.shutdown
    else:
        from huey import RedisHuey

        huey = RedisHuey(prefix, url=cfg.redis_url)
        huey_task(huey, stamp)
        consumer = huey.create_consumer(
            workers=cfg.concurrency, worker_type="thread", periodic=False
        )
        consumer.start()
        stop = consumer.stop
    time.sleep(0.5)  # let every worker reach its idle wait (subscriptions, BRPOPs)
    out.write("ready\n")
    sys.stdin.read()  # until the main process closes our stdin
    stop()
    return 0


class LatencyPeer:
    """Producer side in this process, worker in a child process; ``sample()`` times one task
    from just before the enqueue call until the worker's ``stamp`` body starts.
    """

    def __init__(self, key: str, label: str, cfg: Config, logdir: str) -> None:
        self.key, self.label, self.cfg = key, label, cfg
        self.prefix = f"{cfg.prefix}-latency-{key}"
        self.samples: list[float] = []
        self.proc: subprocess.Popen[str] | None = None
        if key == "dowork":
            from dowork.backends import RedisBackend

            self.queue = dowork.Queue(
                "latency", backend=RedisBackend(cfg.redis_url, prefix=self.prefix), log=False
            )
            self.submit: Callable[[], object] = self.queue.task(name="stamp")(stamp).submit
        else:
            from huey import RedisHuey

            self.huey = RedisHuey(self.prefix, url=cfg.redis_url)
            self.submit = huey_task(self.huey, stamp)
        self.stamp_r, stamp_w = os.pipe()
        reply_r, reply_w = os.pipe()
        with open(os.path.join(logdir, f"latency-{key}.log"), "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--latency-worker", key,
                 "--reply-fd", str(reply_w), "--stamp-fd", str(stamp_w),
                 "--config", json.dumps(asdict(cfg))],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                pass_fds=(reply_w, stamp_w), text=True,
            )  # fmt: skip
        os.close(stamp_w)
        os.close(reply_w)
        ready, _, _ = select.select([reply_r], [], [], 60)
        line = os.read(reply_r, 100) if ready else b""
        os.close(reply_r)
        if not line.startswith(b"ready"):
            self.close()
            raise HostFailed("latency worker did not start")

    def sample(self) -> float:
        """Seconds from enqueue to start of one task."""
        start = time.monotonic()
        self.submit()
        ready, _, _ = select.select([self.stamp_r], [], [], 10)
        if not ready:
            raise HostFailed("a task did not start within 10 s")
        (started,) = struct.unpack("d", os.read(self.stamp_r, 8))
        return float(started - start)

    def close(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.key == "dowork":
            self.queue.shutdown()
        os.close(self.stamp_r)
        delete_keys(self.cfg.redis_url, f"{self.prefix}*")


def measure_latency(
    cfg: Config, logdir: str, samples: int, gap: float
) -> list[tuple[str, list[float] | str]]:
    """``samples`` enqueue-to-start times per peer, alternating peers, ``gap`` seconds idle
    (randomised +-50 %) between samples; the first 10 of each are warm-up and dropped.
    """
    peers: list[LatencyPeer] = []
    out: list[tuple[str, list[float] | str]] = []
    for key, label, available in (
        ("dowork", "dowork Redis, submit -> start", _have_redis_backend()),
        ("huey", "huey RedisHuey, enqueue -> start", _have("huey")),
    ):
        if available is not True:
            out.append((label, str(available)))
            continue
        try:
            peers.append(LatencyPeer(key, label, cfg, logdir))
        except HostFailed as exc:
            out.append((label, str(exc)))
    live = list(peers)
    try:
        for i in range(samples + 10):
            for peer in list(live):
                time.sleep(gap * random.uniform(0.5, 1.5))
                try:
                    value = peer.sample()
                except HostFailed as exc:
                    out.append((peer.label, f"failed: {exc}"))
                    FAILED.append(f"latency-{peer.key}")
                    live.remove(peer)
                    continue
                if i >= 10:
                    peer.samples.append(value)
    finally:
        for peer in peers:
            peer.close()
    return [(peer.label, peer.samples) for peer in live] + out


def _have(module: str) -> bool | str:
    try:
        need(module, module)
    except Skip as exc:
        return f"skipped: {exc}"
    return True


def _have_redis_backend() -> bool | str:
    try:
        from dowork.backends import RedisBackend  # noqa: F401
    except ImportError as exc:
        return f"not available (dowork.backends.RedisBackend: {exc})"
    return True


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# -- report ------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_table(title: str, results: list[Result], boot: bool = False) -> None:
    """The rows of one section; ``boot`` adds the worker start-up and Redis CPU columns."""
    server = boot and any(r.server for r in results)
    print(f"\n{title}")
    head = f"  {'benchmark':<40} {'n':>7} {'median s':>9} {'tasks/s':>10} {'spread':>7}"
    head += f" {'boot ms':>8}" if boot else ""
    head += f" {'redis us/task':>14}" if server else ""
    print(head)
    for r in results:
        if not r.ok:
            print(f"  {r.name:<40} skipped: {r.skip}")
            continue
        line = f"  {r.name:<40} {r.n:>7} {r.median:>9.4f} {r.rate:>10,.0f} {r.spread:>6.0%}"
        if boot:
            line += f" {statistics.median(r.boots) * 1000:>8.0f}"
        if server and r.server:
            line += f" {statistics.median(r.server) * 1e6:>14.0f}"
        print(line)


def print_knobs(results: list[Result]) -> None:
    print("  settings:")
    for r in results:
        if r.ok and r.knobs:
            print(f"    {r.name}: {r.knobs}")


Check = tuple[str, str, bool | None]  # label, value, PASS/MISS (None: could not measure)


def ratio_line(label: str, mine: Result, base: Result, target: float | None) -> Check:
    if not (mine.ok and base.ok):
        why = mine.skip if not mine.ok else base.skip
        return (label, "n/a", None) if target is not None else (label, f"n/a ({why})", None)
    ratio = mine.rate / base.rate
    return (label, f"{ratio:.2f}x", None if target is None else ratio >= target)


def print_ratios(title: str, lines: list[Check]) -> None:
    print(f"  {title}")
    width = max(len(label) for label, _, _ in lines)
    for label, value, ok in lines:
        mark = "" if ok is None else verdict(ok)
        print(f"    {label:<{width}} {value:>7}  {mark}".rstrip())


# -- sections ----------------------------------------------------------------------------------


def load_line(loads: list[float]) -> str:
    if not loads:
        return "n/a"
    return f"median {statistics.median(loads):.2f} (range {min(loads):.2f}-{max(loads):.2f})"


def print_real_table(
    title: str, rows: list[Result], ceiling: Result, hueys: dict[str, Result]
) -> None:
    """One half of the headline: tasks/s with the range of the repeats, as a fraction of the
    body's ceiling and as a multiple of Huey's on the same store, and CPU per task.
    """
    print(f"\n  {title}")
    print(
        f"    {'benchmark':<36} {'n':>6} {'tasks/s':>8} {'min-max':>13} {'spread':>6}"
        f" {'/ceiling':>8} {'/huey':>6} {'boot ms':>7} {'worker us':>9} {'redis us':>8}"
    )
    for r in rows:
        if not r.ok:
            print(f"    {r.name:<36} skipped: {r.skip}")
            continue
        low, high = r.rates
        store = ADAPTERS[r.key].store
        huey = hueys.get(store)
        of_ceiling = f"{r.rate / ceiling.rate:.2f}" if ceiling.ok and store != "ceiling" else ""
        of_huey = f"{r.rate / huey.rate:.2f}x" if huey is not None and huey.ok else ""
        boot = statistics.median(r.boots) * 1000 if store != "ceiling" else None
        redis_us = median_us(r.server)
        print(
            f"    {r.name:<36} {r.n:>6} {r.rate:>8,.0f} {f'{low:,.0f}-{high:,.0f}':>13}"
            f" {r.spread:>6.0%} {of_ceiling:>8} {of_huey:>6}"
            f" {'' if boot is None else f'{boot:.0f}':>7} {median_us(r.cpu) or 0:>9.0f}"
            f" {'' if redis_us is None else f'{redis_us:.0f}':>8}"
        )


def section_real(args: argparse.Namespace, hosts: dict[str, Host | str]) -> list[Check]:
    """The headline: every library and the two ceilings with one Redis round trip per task."""
    began = len(LOADS)
    by_key = dict(zip(hosts, measure_hosts(hosts, args, body="redis"), strict=True))
    print(
        f"\nR. Realistic body: one Redis round trip per task (INCR on a redis-server of its own),"
        f" a backlog of {args.n} tasks, one worker process, {args.concurrency} slots"
    )
    print(f"  load (1 min) over the rounds: {load_line(LOADS[began:])}")
    missing = Result("", 0, skip="not run")
    hueys = {s: by_key.get(f"huey-{s}", missing) for s in ("sqlite", "redis")}
    sync = [r for k, r in by_key.items() if k not in ASYNC_KEYS]
    asyn = [r for k, r in by_key.items() if k in ASYNC_KEYS]
    threads = by_key.get("ceiling-threads", missing)
    aio = by_key.get("ceiling-asyncio", missing)
    print_real_table(
        "R1. sync body: def work(i) (Huey, RQ, Dramatiq, Celery, dowork)", sync, threads, hueys
    )
    print_real_table(
        "R2. async body: async def work(i) (arq, SAQ, Taskiq, dowork); /huey: Huey's sync row",
        asyn, aio, hueys,
    )  # fmt: skip
    print(
        "  /ceiling: tasks/s over the ThreadPoolExecutor row (R1) or the asyncio + Semaphore row"
        " (R2);\n  /huey: over Huey's on the same store; worker us: CPU of the worker's whole"
        " process per task\n  (body included); redis us: CPU of the broker's Redis per task"
    )
    print_knobs(list(by_key.values()))
    row = by_key.get

    def target(label: str, key: str, base: Result, goal: float) -> Check:
        return ratio_line(label, row(key, missing), base, goal)

    lines = [
        target("dowork Redis (def) / ThreadPoolExecutor", "dowork-redis", threads, 0.8),
        target("dowork Redis (async def) / asyncio", "dowork-redis-async", aio, 0.8),
        target("dowork Redis (def) / huey RedisHuey", "dowork-redis", hueys["redis"], 3.0),
        target("dowork SQLite (def) / huey SqliteHuey", "dowork-sqlite", hueys["sqlite"], 3.0),
    ]
    print_ratios("targets (issue 16):", lines)
    RESULTS["real"] = list(by_key.values())
    return [(f"real: {label}", value, ok) for label, value, ok in lines]


def section_sqlite(args: argparse.Namespace, hosts: dict[str, Host | str]) -> list[Check]:
    by_key = dict(zip(hosts, measure_hosts(hosts, args), strict=True))
    results = list(by_key.values())
    RESULTS["sqlite-noop"] = results
    print_table(
        f"1. SQLite: process a backlog of {args.n} no-op tasks, one worker process", results, True
    )
    print_knobs(results)
    huey = by_key["huey-sqlite"]
    lines = [
        ratio_line(
            f"{r.name} / {huey.name}", r, huey, SQLITE_TARGET if k == "dowork-sqlite" else None
        )
        for k, r in by_key.items()
        if k.startswith("dowork")
    ]
    print_ratios(f"ratios (tasks/s), target >= {SQLITE_TARGET}x for the first:", lines)
    return [(f"SQLite processing >= {SQLITE_TARGET}x Huey", lines[0][1], lines[0][2])]


def section_enqueue(args: argparse.Namespace, cfg: Config) -> list[Check]:
    available = _have_redis_backend()
    producers = RedisEnqueue(cfg)
    try:
        benches = [Bench("redis-py LPUSH, one per call", producers.lpush, args.enqueue_n)]
        if producers.queue is not None:
            benches.append(Bench(SUBMIT, producers.submit, args.enqueue_n))
        if producers.huey is not None:
            benches.append(
                Bench("huey enqueue, one per call", producers.huey_enqueue, args.enqueue_n)
            )
        # Runs of a fraction of a second, where a moment of other work on the machine moves
        # one run by 30 % or more: three times the repeats, for a steadier median.
        single = {r.name: r for r in measure(benches, 3 * args.repeat)}
        benches = [Bench("redis-py pipeline of n LPUSH", producers.lpush_pipeline, args.bulk_n)]
        if producers.queue is not None:
            benches.append(Bench(MAP, producers.map, args.bulk_n))
        bulk = {r.name: r for r in measure(benches, args.repeat)}
    finally:
        producers.close()
    missing = None if available is True else Result("", 0, skip=str(available))
    lpush = single["redis-py LPUSH, one per call"]
    submit = single.get(SUBMIT) or dataclasses.replace(missing or Result("", 0), name=SUBMIT)
    rows = [lpush, submit, *(r for r in single.values() if r.name not in (lpush.name, SUBMIT))]
    print_table("2a. Redis: single enqueue (calls/s; the call returns once stored)", rows)
    lines = [
        ratio_line(f"{r.name} / {lpush.name}", r, lpush, ENQUEUE_TARGET if r is submit else None)
        for r in rows[1:]
    ]
    print_ratios(f"ratios (calls/s), target >= {ENQUEUE_TARGET}x for the first:", lines)
    if MAP not in bulk:
        bulk[MAP] = dataclasses.replace(missing or Result("", 0), name=MAP)
    print_table("2b. Redis: bulk enqueue (tasks/s)", [*bulk.values()])
    RESULTS["enqueue"] = [*rows, *bulk.values()]
    mapped = bulk[MAP]
    if mapped.ok:
        ok: bool | None = mapped.rate >= BULK_TARGET
        value = f"{mapped.rate:,.0f}"
        print(f"  target: {MAP} >= {BULK_TARGET:,} tasks/s: {value}  {verdict(bool(ok))}")
    else:
        ok, value = None, "n/a"
    return [
        (f"Redis submit >= {ENQUEUE_TARGET}x LPUSH", lines[0][1], lines[0][2]),
        (f"Redis map >= {BULK_TARGET:,} tasks/s", value, ok),
        *sqlite_enqueue(args, cfg),
    ]


RESULTS: dict[str, list[Result]] = {}  #: every processing section's rows, for --json


def real_keys(args: argparse.Namespace) -> list[str]:
    """The headline's rows: the ceilings, SQLite's, and the Redis libraries ``--peers`` asks."""
    wanted = set(redis_keys(args))
    return [k for k in REAL_KEYS if ADAPTERS[k].store != "redis" or k in wanted]


def redis_keys(args: argparse.Namespace) -> list[str]:
    """The Redis adapters to run: dowork's and Huey's always, the others as ``--peers`` says."""
    return [
        k
        for k in REDIS_KEYS
        if k.startswith("dowork") or k == "huey-redis" or not args.peers or k in args.peers
    ]


def print_matrix(mine: list[Result], peers: list[Result]) -> None:
    """Section 3: every dowork variant's tasks/s divided by every peer's."""
    print("  3. dowork tasks/s divided by each peer's (higher is better for dowork)")
    heads = [m.name.removeprefix("dowork Redis ").strip("()") for m in mine]
    width = max(len(h) for h in heads) + 2
    print(f"    {'peer':<32}" + "".join(f"{h:>{width}}" for h in heads))
    for peer in peers:
        cells = [f"{m.rate / peer.rate:.2f}x" if m.ok and peer.ok else "n/a" for m in mine]
        print(f"    {peer.name:<32}" + "".join(f"{c:>{width}}" for c in cells))


def section_redis(args: argparse.Namespace, hosts: dict[str, Host | str]) -> list[Check]:
    by_key = dict(zip(hosts, measure_hosts(hosts, args), strict=True))
    results = list(by_key.values())
    RESULTS["redis-noop"] = results
    print_table(
        f"2c/3. Redis: process a backlog of {args.n} no-op tasks, one worker process",
        results,
        True,
    )
    print_knobs(results)
    mine, huey = by_key["dowork-redis"], by_key["huey-redis"]
    lines = [ratio_line(f"{mine.name} / {huey.name}", mine, huey, REDIS_TARGET)]
    print_ratios(f"2c. ratio (tasks/s), target >= {REDIS_TARGET}x:", lines)
    print_matrix(
        [r for k, r in by_key.items() if k.startswith("dowork")],
        [r for k, r in by_key.items() if not k.startswith("dowork")],
    )
    return [(f"Redis processing >= {REDIS_TARGET}x Huey", lines[0][1], lines[0][2])]


def section_latency(args: argparse.Namespace, cfg: Config, logdir: str) -> list[Check]:
    if _have("redis") is not True:
        print("\n2d. latency: skipped (redis-py not installed)")
        return []
    rows = measure_latency(cfg, logdir, args.latency_n, args.latency_gap)
    gap_ms = args.latency_gap * 1000
    print(
        "\n2d. Redis: enqueue-to-start latency, idle worker in another process "
        f"({args.latency_n} samples, ~{gap_ms:.0f} ms idle between)"
    )
    print(f"  {'benchmark':<40} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    stats: dict[str, tuple[float, float]] = {}
    for label, values in rows:
        if isinstance(values, str) or not values:
            print(f"  {label:<40} {values or 'no samples'}")
            continue
        ms = [v * 1000 for v in values]
        p50, p90, p99 = (percentile(ms, q) for q in (0.5, 0.9, 0.99))
        print(f"  {label:<40} {p50:>8.2f} {p90:>8.2f} {p99:>8.2f} {max(ms):>8.2f}")
        stats[label.split(",")[0]] = (p50, p99)
    mine, huey = stats.get("dowork Redis"), stats.get("huey RedisHuey")
    checks: list[Check] = []
    if mine is not None and huey is not None:
        checks.append(("latency p50 <= Huey p50", f"{mine[0]:.2f} ms", mine[0] <= huey[0]))
    else:
        checks.append(("latency p50 <= Huey p50", "n/a", None))
    if mine is not None:
        checks.append(
            (f"latency p99 <= {P99_TARGET_MS} ms", f"{mine[1]:.2f} ms", mine[1] <= P99_TARGET_MS)
        )
    else:
        checks.append((f"latency p99 <= {P99_TARGET_MS} ms", "n/a", None))
    for label, value, ok in checks:
        mark = "n/a" if ok is None else verdict(ok)
        print(f"  target: {label}: {value}  {mark}")
    return checks


# -- main --------------------------------------------------------------------------------------

SECTIONS = ("real", "sqlite", "enqueue", "redis", "latency")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=5_000, help="tasks per processing run")
    parser.add_argument("--warmup", type=int, default=300, help="tasks in the warm-up run")
    parser.add_argument(
        "--budget", type=float, default=2.0, help="s per timed run of a peer outside the targets"
    )
    parser.add_argument("--enqueue-n", type=int, default=2_000, help="calls per 2a run")
    parser.add_argument("--bulk-n", type=int, default=10_000, help="tasks per 2b run")
    parser.add_argument("--latency-n", type=int, default=200, help="2d samples per peer")
    parser.add_argument("--latency-gap", type=float, default=0.02, help="2d idle s between")
    parser.add_argument("--repeat", type=int, default=3, help="runs per benchmark (median)")
    parser.add_argument("--concurrency", type=int, default=8, help="worker slots, every library")
    parser.add_argument("--batch", type=int, default=64, help="dowork DurableSettings(batch=)")
    parser.add_argument(
        "--redis", default="", help="broker Redis URL (default: a redis-server of its own)"
    )
    parser.add_argument("--json", default="", help="also write every figure to this JSON file")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated sections: {','.join(SECTIONS)}"
    )
    parser.add_argument(
        "--peers", default="", help="comma-separated Redis peers (default all, none: only Huey)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (~30 s smoke test)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    # internal: the child process modes
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--latency-worker", help=argparse.SUPPRESS)
    parser.add_argument("--reply-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stamp-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.enqueue_n, args.bulk_n, args.latency_n = 500, 500, 5_000, 50
        args.repeat, args.warmup, args.budget = 3, 100, 0.3
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = args.only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
    args.peers = {p.strip() for p in args.peers.split(",") if p.strip()}
    unknown = args.peers - set(REDIS_KEYS) - {"none"}  # "none": dowork and Huey only
    if unknown:
        parser.error(f"unknown peer(s) {sorted(unknown)}; choose from {REDIS_KEYS}")
    return args


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for dist in (
        "redis",
        "huey",
        "rq",
        "dramatiq",
        "celery",
        "arq",
        "saq",
        "taskiq",
        "taskiq-redis",
    ):
        with contextlib.suppress(PackageNotFoundError):
            found.append(f"{dist} {version(dist)}")
    return ", ".join(found)


def redis_version(url: str) -> str:
    try:
        import redis

        r = redis.Redis.from_url(url)
        try:
            return f"Redis server {r.info('server')['redis_version']} at {url}"
        finally:
            r.close()
    except Exception as exc:
        return f"Redis at {url} unreachable: {exc!r}"


class LocalRedis:
    """A ``redis-server`` of the bench's own on a free loopback port: no persistence, nothing
    else connected, so that ``INFO`` counts only this run's commands. Stopped by its pid.
    """

    def __init__(self, directory: str, name: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise Skip("redis-server is not installed (apt-get install redis-server)")
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        workdir = os.path.join(directory, name)
        os.makedirs(workdir, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir, "--logfile", os.path.join(workdir, "log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        self.stop()
                        raise Skip(f"redis-server on port {self.port} did not start") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def workspace(redis_url: str) -> Iterator[tuple[str, str, str]]:
    """A unique key prefix, a temporary directory and a log directory; all removed afterwards,
    except the logs when a host failed.
    """
    prefix = f"dwbench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp = tempfile.mkdtemp(prefix="dwbench-")
    logdir = tempfile.mkdtemp(prefix="dwbench-logs-")
    try:
        yield prefix, tmp, logdir
    finally:
        with contextlib.suppress(Exception):
            delete_keys(redis_url, f"*{prefix}*")
        shutil.rmtree(tmp, ignore_errors=True)
        if FAILED:
            print(f"\nlogs of the failed hosts ({', '.join(FAILED)}) kept in {logdir}")
        else:
            shutil.rmtree(logdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.host or args.latency_worker:
        cfg = Config(**json.loads(args.config))
        if args.host:
            return host_main(args.host, cfg, args.reply_fd)
        return latency_worker_main(args.latency_worker, cfg, args.reply_fd, args.stamp_fd)
    with contextlib.ExitStack() as servers:
        serverdir = tempfile.mkdtemp(prefix="dwbench-redis-")
        servers.callback(shutil.rmtree, serverdir, ignore_errors=True)
        try:
            if not args.redis:  # the broker: a server of our own unless --redis names one
                broker = LocalRedis(serverdir, "broker")
                servers.callback(broker.stop)
                args.redis = broker.url
            body = LocalRedis(serverdir, "body")
            servers.callback(body.stop)
        except Skip as exc:
            print(f"cannot run: {exc}", file=sys.stderr)
            return 2
        return run_sections(args, body.url)


def run_sections(args: argparse.Namespace, body_url: str) -> int:
    started = time.perf_counter()
    head = (
        f"dowork {dowork.__version__} | Python {platform.python_version()} "
        f"({sys.implementation.name}) | {platform.machine()} | {os.cpu_count()} CPUs"
    )
    print(head)
    print(f"{versions()}\n{redis_version(args.redis)} (broker)\n{redis_version(body_url)} (body)")
    load_before = os.getloadavg()
    print(
        f"load average (1, 5, 15 min) before the run: {', '.join(f'{x:.2f}' for x in load_before)}"
    )
    if load_before[0] > 0.5:
        print("  warning: the machine is busy; figures will be noisy (compare ratios, re-run)")
    print(
        f"concurrency={args.concurrency} dowork batch={args.batch} repeat={args.repeat} "
        f"(medians; spread = (max-min)/median)"
    )
    checks: list[Check] = []
    with workspace(args.redis) as (prefix, tmp, logdir):
        cfg = Config(args.redis, prefix, tmp, args.concurrency, args.batch, body_url)
        wanted = {
            "real": real_keys(args),
            "sqlite": SQLITE_KEYS,
            "redis": redis_keys(args),
        }
        keys = [k for k in ADAPTERS if any(k in wanted[s] for s in wanted if s in args.only)]
        hosts = start_hosts(keys, cfg, logdir)
        sections: dict[str, Callable[[], list[Check]]] = {
            "real": lambda: section_real(args, {k: hosts[k] for k in real_keys(args)}),
            "sqlite": lambda: section_sqlite(args, {k: hosts[k] for k in SQLITE_KEYS}),
            "enqueue": lambda: section_enqueue(args, cfg) + section_submits(args, cfg),
            "redis": lambda: section_redis(args, {k: hosts[k] for k in redis_keys(args)}),
            "latency": lambda: section_latency(args, cfg, logdir),
        }
        try:
            for name, section in sections.items():
                if name in args.only:
                    began = time.perf_counter()
                    checks += section()
                    print(f"  ({name} section: {time.perf_counter() - began:.0f} s)")
        finally:
            for host in hosts.values():
                if isinstance(host, Host):
                    host.close()
    load_after = os.getloadavg()
    print("\ntargets")
    for label, value, ok in checks:
        print(f"  {label:<48} {value:>12}  {'n/a' if ok is None else verdict(ok)}")
    print(f"\nload (1 min) before every timed round: {load_line(LOADS)}")
    print(f"load average (1, 5, 15 min) after the run: {', '.join(f'{x:.2f}' for x in load_after)}")
    print(f"(total {time.perf_counter() - started:.0f} s)")
    if args.json:
        document = {
            "command": [os.path.basename(sys.executable), *sys.argv],
            "machine": head,
            "versions": versions(),
            "concurrency": args.concurrency,
            "batch": args.batch,
            "repeat": args.repeat,
            "load_before": load_before,
            "load_after": load_after,
            "load_per_round": LOADS,
            "sections": {name: [r.as_json() for r in rows] for name, rows in RESULTS.items()},
            "targets": [{"target": t, "value": v, "pass": ok} for t, v, ok in checks],
        }
        with open(args.json, "w") as f:
            json.dump(document, f, indent=1)
        print(f"figures written to {args.json}")
    missed = any(ok is False for _, _, ok in checks)
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
