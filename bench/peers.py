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
REDIS_TARGET = 4.0  # dowork Redis processing >= 4x Huey's RedisHuey
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


def noop(i: int) -> None:
    COUNTER.tick()


async def anoop(i: int) -> None:
    COUNTER.tick()


async def anoop_ctx(ctx: Any, i: int) -> None:  # arq and SAQ pass a context first
    COUNTER.tick()


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
        """Enqueue ``n`` calls ``noop(i)`` without running them."""
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
        fn = self.queue.task(name="noop")(anoop if self.is_async else noop)
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
                if not any(counts.get(s) for s in ("pending", "scheduled", "retrying", "running")):
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
    label = "dowork SQLite (def noop)"
    store = "sqlite"


class DoworkSQLiteAsync(DoworkAdapter):
    label = "dowork SQLite (async def noop)"
    store = "sqlite"
    is_async = True


class DoworkSQLiteForget(DoworkAdapter):
    label = "dowork SQLite (def noop, keep_result=0)"
    store = "sqlite"
    keep_result = 0


class DoworkRedis(DoworkAdapter):
    label = "dowork Redis (def noop)"
    store = "redis"


class DoworkRedisAsync(DoworkAdapter):
    label = "dowork Redis (async def noop)"
    store = "redis"
    is_async = True


class DoworkRedisForget(DoworkAdapter):
    label = "dowork Redis (def noop, keep_result=0)"
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
        self.task = huey_task(self.huey, noop)
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
        "SimpleWorker.work(burst=True) (no concurrency option; the default Worker forks per job)"
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
            Queue.prepare_data(noop, (i,), job_id=f"{self.name}-{self.runs}-{i}") for i in range(n)
        ]
        for start in range(0, n, 1000):
            self.queue.enqueue_many(jobs[start : start + 1000])

    def wait(self, timeout: float) -> None:
        from rq import SimpleWorker

        worker = SimpleWorker(
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
        self.actor = dramatiq.actor(noop, actor_name="noop", queue_name="bench", broker=self.broker)
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
        self.task = self.app.task(name="noop", ignore_result=True)(noop)
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
                        self.pool.enqueue_job("noop", i, _job_id=f"{prefix}-{i}")
                        for i in range(start, min(n, start + 100))
                    )
                )

        self.loop.run(fill(), timeout=None)

    def start(self) -> None:
        from arq.worker import Worker, func

        async def make() -> Any:  # the Worker takes the loop current where it is built
            return Worker(
                functions=[func(anoop_ctx, name="noop")],
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
                    *(self.queue.enqueue("noop", i=i) for i in range(start, min(n, start + 100)))
                )

        self.loop.run(fill(), timeout=None)

    def start(self) -> None:
        import saq

        self.worker = saq.Worker(
            self.queue, functions=[("noop", anoop_ctx)], concurrency=self.cfg.concurrency
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
        self.task = self.broker.task(task_name="noop")(anoop)
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
}
SQLITE_KEYS = [k for k in ADAPTERS if ADAPTERS[k].store == "sqlite"]
REDIS_KEYS = [k for k in ADAPTERS if ADAPTERS[k].store == "redis"]


# -- the host process -------------------------------------------------------------------------


def run_once(adapter: Adapter, n: int, timeout: float) -> dict[str, float]:
    """One timed processing run: a backlog of ``n`` tasks, one worker, until all finished.

    The worker is still running on return: the caller replies first, then calls ``stop()``.
    """
    adapter.cleanup()
    COUNTER.reset(n)
    t = time.perf_counter()
    adapter.preload(n)
    preload = time.perf_counter() - t
    gc.collect()
    cpu = adapter.server_cpu()
    start = time.perf_counter()
    adapter.start()
    adapter.wait(timeout)
    end = time.perf_counter()
    first = COUNTER.first if COUNTER.first is not None else start
    timing = {"steady": end - first, "boot": first - start, "preload": preload}
    if cpu is not None:
        used = adapter.server_cpu()
        assert used is not None
        timing["server"] = (used - cpu) / n
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
                reply(**run_once(adapter, command["n"], command["timeout"]))
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

    def run(self, n: int, timeout: float) -> dict[str, float]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"op": "run", "n": n, "timeout": timeout}) + "\n")
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
    skip: str | None = None
    knobs: str = ""

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


def measure_hosts(hosts: dict[str, Host | str], args: argparse.Namespace) -> list[Result]:
    """One untimed warm-up run of ``args.warmup`` tasks per host, then ``args.repeat`` timed
    runs, interleaved round-robin; the hosts are closed afterwards.

    Adapters in a target run ``args.n`` tasks. The others run as many as the warm-up rate
    says fit in ``args.budget`` seconds (at least 100, at most ``args.n``), so that a slow
    peer does not stretch the whole benchmark; the ``n`` column shows what each one ran.
    """
    results = {key: Result(ADAPTERS[key].label, args.n) for key in hosts}
    live: dict[str, Host] = {}
    for key, host in hosts.items():
        if isinstance(host, str):
            results[key].skip = host
        else:
            results[key].knobs = host.knobs
            live[key] = host
    try:
        for round_ in range(args.repeat + 1):
            for key, host in list(live.items()):
                result = results[key]
                size = args.warmup if round_ == 0 else result.n
                try:
                    timing = host.run(size, run_timeout(size))
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
                if "server" in timing:
                    result.server.append(timing["server"])
    finally:
        for host in live.values():
            host.close()
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


def section_sqlite(args: argparse.Namespace, hosts: dict[str, Host | str]) -> list[Check]:
    by_key = dict(zip(hosts, measure_hosts(hosts, args), strict=True))
    results = list(by_key.values())
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
    ]


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

SECTIONS = ("sqlite", "enqueue", "redis", "latency")


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
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15", help="Redis URL")
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
    started = time.perf_counter()
    print(
        f"dowork {dowork.__version__} | Python {platform.python_version()} "
        f"({sys.implementation.name}) | {platform.machine()} | {os.cpu_count()} CPUs"
    )
    print(f"{versions()}\n{redis_version(args.redis)}")
    load = os.getloadavg()[0]
    print(f"load average (1 min) before the run: {load:.2f}")
    if load > 0.5:
        print("  warning: the machine is busy; figures will be noisy (compare ratios, re-run)")
    print(
        f"concurrency={args.concurrency} dowork batch={args.batch} repeat={args.repeat} "
        f"(medians; spread = (max-min)/median)"
    )
    checks: list[Check] = []
    with workspace(args.redis) as (prefix, tmp, logdir):
        cfg = Config(args.redis, prefix, tmp, args.concurrency, args.batch)
        keys = (SQLITE_KEYS if "sqlite" in args.only else []) + (
            redis_keys(args) if "redis" in args.only else []
        )
        hosts = start_hosts(keys, cfg, logdir)
        sections: dict[str, Callable[[], list[Check]]] = {
            "sqlite": lambda: section_sqlite(args, {k: hosts[k] for k in SQLITE_KEYS}),
            "enqueue": lambda: section_enqueue(args, cfg),
            "redis": lambda: section_redis(args, {k: hosts[k] for k in redis_keys(args)}),
            "latency": lambda: section_latency(args, cfg, logdir),
        }
        for name, section in sections.items():
            if name in args.only:
                began = time.perf_counter()
                checks += section()
                print(f"  ({name} section: {time.perf_counter() - began:.0f} s)")
    print("\ntargets")
    for label, value, ok in checks:
        print(f"  {label:<40} {value:>12}  {'n/a' if ok is None else verdict(ok)}")
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    missed = any(ok is False for _, _, ok in checks)
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
