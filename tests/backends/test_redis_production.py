"""Redis in production conditions (issue 14, item 4), against real redis-server processes:
an evicting ``maxmemory-policy`` refused by workers, a bounded blocking connection pool under
load, lost replies (through a TCP proxy), a full Redis drained, and the README's ACL user."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

import dowork
from dowork.backends import (
    ClaimRequest,
    Outcome,
    Record,
    RedisBackend,
    Settlement,
    open_backend,
)
from dowork.errors import EvictionPolicyError
from tests.backends.test_contract import LEASE, NOW, rec
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]


def double(n: int) -> int:
    return 2 * n


def set_policy(server: RedisServer, policy: str, maxmemory: str = "100mb") -> None:
    with redis.Redis.from_url(server.url) as admin:
        admin.config_set("maxmemory", maxmemory)
        admin.config_set("maxmemory-policy", policy)


def durable_queue(url: str, allow_eviction: bool = False) -> dowork.Queue:
    prefix = f"dowork:t{uuid.uuid4().hex[:8]}"
    backend = RedisBackend(url, prefix=prefix, allow_eviction=allow_eviction)
    queue = dowork.Queue(
        "prod",
        backend=backend,
        durable=dowork.DurableSettings(lease=1.0, maintenance=0.2),
        log=False,
    )
    queue.task(name="double")(double)
    return queue


def wait_until(predicate: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


# -- a) the eviction policy ------------------------------------------------------------------


def test_a_worker_refuses_an_allkeys_redis_and_logs_critical(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    set_policy(own_server, "allkeys-lru")
    queue = durable_queue(own_server.url)
    with caplog.at_level(logging.WARNING, logger="dowork"):
        task = queue.submit(double, 21)  # a producer is only warned
        warned = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert any("allkeys-lru" in r.getMessage() for r in warned)
        queue.start()
        try:
            wait_until(lambda: any(r.levelno == logging.CRITICAL for r in caplog.records))
            time.sleep(0.3)  # several claim rounds: none of them may take the task
            assert queue.status(task.id) == "pending"
        finally:
            queue.shutdown(timeout=5)
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "allkeys-lru" in critical[0]
    assert "noeviction" in critical[0]
    assert "allow_eviction" in critical[0]

    async def claim() -> None:
        backend = RedisBackend(own_server.url, prefix="dowork:other")
        try:
            with pytest.raises(EvictionPolicyError, match="allkeys-lru"):
                await backend.claim(ClaimRequest("q", NOW, 1, LEASE, "w"))
            with pytest.raises(EvictionPolicyError):
                await backend.wait_claim(ClaimRequest("q", NOW, 1, LEASE, "w"), 0.05)
        finally:
            await backend.close()

    asyncio.run(claim())


def test_allow_eviction_lets_a_worker_run(own_server: RedisServer) -> None:
    set_policy(own_server, "allkeys-lfu")
    queue = durable_queue(own_server.url, allow_eviction=True)
    queue.start()
    try:
        assert queue.submit(double, 4).result(timeout=10) == 8
    finally:
        queue.shutdown(timeout=5)
    url = own_server.url + "?allow_eviction=1&prefix=dowork:u"
    backend = open_backend(url)
    assert isinstance(backend, RedisBackend)
    assert backend.allow_eviction
    assert "allow_eviction" not in backend.url
    assert not RedisBackend(own_server.url + "?allow_eviction=0").allow_eviction

    async def claim() -> None:
        assert await backend.claim(ClaimRequest("q", NOW, 1, LEASE, "w")) == []
        assert backend.policy == "allkeys-lfu"
        await backend.close()

    asyncio.run(claim())


def test_volatile_policies_are_allowed_with_a_warning(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    set_policy(own_server, "volatile-lru")

    async def main() -> None:
        backend = RedisBackend(own_server.url, prefix="dowork:v")
        await backend.push([rec(queue="v")])
        (claimed,) = await backend.claim(ClaimRequest("v", NOW, 1, LEASE, "w"))
        assert claimed.status == "reserved"
        await backend.close()

    with caplog.at_level(logging.WARNING, logger="dowork"):
        asyncio.run(main())
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len([m for m in messages if "volatile-lru" in m]) == 2  # producer, worker: once each


def test_a_policy_changed_at_run_time_is_noticed(own_server: RedisServer) -> None:
    async def main() -> None:
        backend = RedisBackend(own_server.url, prefix="dowork:r")
        await backend.check_worker()
        set_policy(own_server, "allkeys-random")
        await backend.check_worker()  # read less than a minute ago: trusted
        backend._gate_at = 0.0  # a minute later
        with pytest.raises(EvictionPolicyError, match="allkeys-random"):
            await backend.check_worker()
        set_policy(own_server, "noeviction")
        backend._gate_at = 0.0
        await backend.check_worker()
        await backend.close()

    asyncio.run(main())


def test_permit_eviction_lets_a_refused_worker_claim_at_once(own_server: RedisServer) -> None:
    """``--allow-eviction``'s extra: a refusal read before does not wait for the next read."""

    async def main() -> None:
        backend = RedisBackend(own_server.url, prefix="dowork:p")
        set_policy(own_server, "allkeys-lru")
        with pytest.raises(EvictionPolicyError, match="allkeys-lru"):
            await backend.check_worker()
        backend.permit_eviction()
        await backend.check_worker()
        await backend.push([rec(queue="p")])
        (claimed,) = await backend.claim(ClaimRequest("p", NOW, 1, LEASE, "w"))
        assert claimed.status == "reserved"
        await backend.close()

    asyncio.run(main())


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "dowork", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
        env=environ,
    )


def test_the_worker_command_refuses_an_evicting_redis_in_one_line(
    own_server: RedisServer,
) -> None:
    set_policy(own_server, "allkeys-lru")
    url = own_server.url + "?prefix=dowork:cli"
    result = cli("worker", "tests.durable.app:queue", "--backend", url, "--no-metrics")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "allkeys-lru" in lines[-1], result.stderr
    assert "--allow-eviction" in lines[-1]
    assert "Traceback" not in result.stderr
    status = cli("status", "--backend", url)  # a command that only looks: a warning
    assert status.returncode == 0
    assert "allkeys-lru" in status.stderr, (status.stderr, status.stdout, url)

    environ = dict(os.environ, PYTHONPATH=str(ROOT))
    worker = subprocess.Popen(
        [sys.executable, "-m", "dowork", "worker", "tests.durable.app:queue", "--backend", url,
         "--no-metrics", "--allow-eviction"],
        stderr=subprocess.PIPE, text=True, cwd=ROOT, env=environ,
    )  # fmt: skip
    try:
        producer = dowork.Queue("app", backend=url + "&allow_eviction=1", log=False)
        producer.task(name="record")(double)
        assert producer.submit(double, 5).result(timeout=30) == 5  # the worker's record(5)
        producer.shutdown(timeout=5)
        assert worker.poll() is None
    finally:
        worker.send_signal(signal.SIGINT)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err


# -- b) a bounded, blocking connection pool ----------------------------------------------------


def connected_clients(server: RedisServer) -> int:
    with redis.Redis.from_url(server.url) as admin:
        return int(admin.info("clients")["connected_clients"])


def test_a_thousand_concurrent_asubmits_all_succeed(own_server: RedisServer) -> None:
    with redis.Redis.from_url(own_server.url) as admin:
        admin.config_set("maxclients", "100")  # one process must not take them all
    queue = durable_queue(own_server.url)

    async def main() -> None:
        try:
            tasks = await asyncio.gather(*[queue.asubmit(double, n) for n in range(1000)])
            assert len({t.id for t in tasks}) == 1000
            assert connected_clients(own_server) <= 50 + 2  # the pool, the admin, one spare
            assert queue.backend is not None
            assert await queue.backend.counts("prod") == {"pending": 1000}
        finally:
            await queue.ashutdown(timeout=5)

    asyncio.run(main())


@pytest.mark.timeout(240)
def test_ten_thousand_schedules_firing_together_all_fire(own_server: RedisServer) -> None:
    """10,000 pushes at once on a Redis that takes 100 clients: each firing stored once.

    The worker's loop runs 10,000 pushes at once, so on a busy machine a connection's
    handshake or reply waits behind them for seconds: the timeouts are Redis's to meet, but
    generous, since a firing that meets one is lost (logged) and the count never comes.
    """
    with redis.Redis.from_url(own_server.url) as admin:
        admin.config_set("maxclients", "100")
    clock = dowork.FakeClock(1_700_000_000.0)
    backend = RedisBackend(
        own_server.url,
        prefix=f"dowork:s{uuid.uuid4().hex[:8]}",
        connect_timeout=60.0,
        socket_timeout=60.0,
        pool_timeout=120.0,
    )
    queue = dowork.Queue(
        "sched",
        backend=backend,
        clock=clock,
        log=False,
        durable=dowork.DurableSettings(lease=30.0, maintenance=5.0),
    )
    queue.task(name="double")(double)
    schedules = [queue.every(60, double, n) for n in range(10_000)]
    queue.start()
    try:
        clock.set(1_700_000_000.0 + 61)  # past the next grid point: all 10,000 are due
        wait_until(lambda: sum(s.runs for s in schedules) == 10_000, timeout=180)
        counts = queue._engine.run_on_home(backend.counts("sched"))
        assert sum(counts.values()) == 10_000
        assert all(s.runs == 1 for s in schedules)
    finally:
        queue.shutdown(timeout=10)


# -- e) the README's ACL user cannot list other key names ------------------------------------


def test_the_readme_acl_user_cannot_list_other_keys_and_still_works(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.backends.conftest import add_acl_user, readme_acl_rules

    rules = readme_acl_rules()
    assert "+info|memory" in rules
    add_acl_user(own_server.url, "dowork", "s3cret-acl")
    with redis.Redis.from_url(own_server.url) as admin:
        admin.set("other:secret-name", "1")  # another app's key
    url = own_server.url.replace("redis://", "redis://dowork:s3cret-acl@")
    with redis.Redis.from_url(url) as client:
        for command in (
            ("SCAN", "0"),
            ("SCAN", "0", "MATCH", "other:*"),
            ("RANDOMKEY",),
            ("KEYS", "*"),
            ("DBSIZE",),
            ("INFO", "keyspace"),
            ("INFO",),
            ("INFO", "all"),
            ("SELECT", "1"),
            ("GET", "other:secret-name"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.execute_command(*command)
        for script in ("SCAN', '0", "RANDOMKEY", "DBSIZE", "INFO', 'keyspace"):  # nor in Lua
            with pytest.raises(redis.exceptions.ResponseError, match="can't run this command"):
                client.execute_command("EVAL", f"return redis.call('{script}')", "0")
        assert "maxmemory_policy" in client.info("memory")

    queue = dowork.Queue(
        "acl",
        backend=url,  # the default prefix, dowork:
        durable=dowork.DurableSettings(lease=1.0, maintenance=0.2),
        log=False,
    )
    queue.task(name="double")(double)
    with caplog.at_level(logging.WARNING, logger="dowork"):
        tasks = [queue.submit(double, n) for n in range(20)]  # a submitter
        queue.start()  # and a worker, as the ACL user
        try:
            assert [t.result(timeout=20) for t in tasks] == [2 * n for n in range(20)]
        finally:
            queue.shutdown(timeout=5)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # policy read


# -- c) lost replies: OutcomeUnknown, and retries with the same id ---------------------------

RAN: list[int] = []


def record_run(n: int) -> int:
    RAN.append(n)
    return n


def test_lost_replies_raise_outcome_unknown_and_retries_run_each_task_once(
    own_server: RedisServer,
) -> None:
    from collections import Counter

    from dowork.errors import DuplicateTask, OutcomeUnknown
    from tests.tcp_proxy import TcpProxy

    RAN.clear()
    proxy = TcpProxy(own_server.port).start()
    prefix = f"dowork:c{uuid.uuid4().hex[:8]}"
    settings = dowork.DurableSettings(lease=2.0, maintenance=0.25)
    producer = dowork.Queue(
        "lost",
        backend=RedisBackend(proxy.url, prefix=prefix, socket_timeout=0.5),
        durable=settings,
        log=False,
    )
    worker = dowork.Queue(
        "lost", backend=RedisBackend(own_server.url, prefix=prefix), durable=settings, log=False
    )
    for queue in (producer, worker):
        queue.task(name="record")(record_run)
    worker.start()
    unknown: list[OutcomeUnknown] = []
    duplicates = 0
    ids = []
    try:
        for n in range(40):
            proxy.mode = {1: "drop", 3: "stall"}.get(n % 4, "pass")
            try:
                if n % 8 >= 4:  # half with an id of the caller's: a checked push
                    task = dowork.Task(record_run, (n,))
                    assert task.id
                    producer.enqueue(task)
                else:  # the others through the inbox
                    task = producer.submit(record_run, n)
                ids.append(task.id)
                continue
            except OutcomeUnknown as exc:
                unknown.append(exc)
                (handle,) = exc.tasks
                assert isinstance(handle, dowork.Task)
                task = handle
            proxy.mode = "pass"
            try:
                producer.enqueue(task)  # the retry: the same task, the same id
            except DuplicateTask:
                duplicates += 1  # the first write was stored: nothing more to do
            ids.append(task.id)
    finally:
        proxy.mode = "pass"
    try:
        assert len(unknown) >= 10  # every submit whose reply was dropped or stalled
        for error in unknown:
            assert "outcome is unknown" in str(error)
            assert "same task id is safe" in str(error)
            assert isinstance(error.tasks[0], dowork.Task)
            assert error.task_ids == (error.tasks[0].id,)
        assert duplicates >= 5  # those were stored: the retry stored nothing more
        wait_until(lambda: len(RAN) >= 40, timeout=30)
        time.sleep(0.3)
        assert Counter(RAN) == Counter(range(40))  # 0 lost, 0 run twice
        assert worker.backend is not None
        records = worker._engine.run_on_home(worker.backend.get(ids))
        assert len(records) == 40
        assert {r.status for r in records} == {"succeeded"}
        assert sum(r.crashes for r in records) == 0  # no worker died: no crash charged
    finally:
        worker.shutdown(timeout=5)
        producer.shutdown(timeout=5)
        proxy.close()


# -- d) a full Redis can always be drained ---------------------------------------------------


def echo(text: str) -> int:
    return len(text)


@pytest.mark.parametrize("finished", [0, 100], ids=["only-waiting", "with-finished"])
def test_a_full_redis_is_drained_by_a_worker_with_nothing_lost(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture, finished: int
) -> None:
    from dowork.errors import BackendFull

    prefix = f"dowork:f{uuid.uuid4().hex[:8]}"
    clock = dowork.FakeClock(1_700_000_000.0)

    def make() -> dowork.Queue:
        queue = dowork.Queue(
            "full",
            backend=RedisBackend(own_server.url, prefix=prefix),
            clock=clock,
            durable=dowork.DurableSettings(lease=1.0, maintenance=0.2),
            log=False,
        )
        queue.task(name="echo")(echo)
        return queue

    first = make().start()  # finished records, kept 7 days, fill part of the memory
    try:
        done = [first.submit(echo, "d" * 4000) for _ in range(finished)]
        assert [t.result(timeout=20) for t in done] == [4000] * finished
    finally:
        first.shutdown(timeout=5)
    clock.advance(3600)  # an hour later: those records are old, kept for 7 days still
    with redis.Redis.from_url(own_server.url) as admin:
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory", str(used + 300_000))
        admin.config_set("maxmemory-policy", "noeviction")
    producer = make()
    stored: list[dowork.Task[int]] = []

    def fill() -> None:
        for n in range(10_000):  # until Redis refuses
            stored.append(producer.submit(echo, "w" * (2000 + n)))

    with pytest.raises(BackendFull):
        fill()
    assert len(stored) > 20
    with pytest.raises(BackendFull):
        producer.submit(echo, "w" * 4000)  # full: submits are refused

    async def look() -> tuple[dict[str, int], int]:  # an operator's reads work on a full Redis
        reader = RedisBackend(own_server.url, prefix=prefix)
        try:
            return await reader.counts("full"), len(await reader.list("full", limit=5))
        finally:
            await reader.close()

    waiting = {"pending": len(stored)} | ({"succeeded": finished} if finished else {})
    assert asyncio.run(look()) == (waiting, 5)
    worker = make()
    with caplog.at_level(logging.WARNING, logger="dowork"):
        worker.start()  # maintenance, claims and settlements all work on a full Redis
        try:
            results = [t.result(timeout=30) for t in stored]
        finally:
            worker.shutdown(timeout=5)
            producer.shutdown(timeout=5)
    assert results == [len("w" * (2000 + n)) for n in range(len(stored))]  # 0 lost
    backend = RedisBackend(own_server.url, prefix=prefix)

    async def read() -> list[Record]:
        records = await backend.get([t.id for t in stored])
        await backend.close()
        return records

    records = asyncio.run(read())
    assert len(records) == len(stored)
    assert {r.status for r in records} == {"succeeded"}
    assert sum(r.crashes for r in records) == 0
    purged = [r.getMessage() for r in caplog.records if "before their retention" in r.getMessage()]
    assert bool(purged) == bool(finished)  # finished records went first to make room
    assert not [r for r in caplog.records if "backend error" in r.getMessage()]


async def settle_on_a_full_redis(
    url: str, records: list[Record], batch: Callable[[], list[Settlement]]
) -> RedisBackend:
    """Push and claim ``records``, then settle ``batch()`` with Redis over its ``maxmemory``.

    The batch is refused by no one (``[]``); the backend is returned to read what it wrote.
    """
    backend = RedisBackend(url, prefix=f"dowork:m{uuid.uuid4().hex[:8]}")
    await backend.push(records)
    claimed = await backend.claim(ClaimRequest("m", NOW, len(records), LEASE, "w"))
    assert {r.id for r in claimed} == {r.id for r in records}
    with redis.Redis.from_url(url) as admin:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")  # over it from now on
    try:
        assert await backend.settle(batch()) == []
    finally:
        with redis.Redis.from_url(url) as admin:
            admin.config_set("maxmemory", "0")
    return backend


@pytest.mark.parametrize("keyed", [False, True], ids=["lean", "full"])
def test_a_full_redis_takes_a_batch_whose_first_settlement_is_a_start_mark(
    own_server: RedisServer, keyed: bool
) -> None:
    """At maxmemory (noeviction) Redis refuses a script's first write unless it frees memory.

    A settle batch ends its leases first (a ZREM: after it, the script may write on); a
    STARTED mark at the head of the batch was written before them, refused, and the whole
    batch with it, again at every retry: a full Redis was never drained. Both the lean path
    and the full one (a concurrency key takes a batch there).
    """

    async def main() -> None:
        marked, done = rec(queue="m", concurrency_key="k" if keyed else None), rec(queue="m")
        backend = await settle_on_a_full_redis(
            own_server.url,
            [marked, done],
            lambda: [
                Settlement(marked.id, 1, Outcome.STARTED, NOW),
                Settlement(done.id, 1, Outcome.SUCCEEDED, NOW, result=b"1"),
            ],
        )
        got = {r.id: r for r in await backend.get([marked.id, done.id])}
        assert (got[marked.id].status, got[marked.id].started) == ("running", 1)
        assert (got[done.id].status, got[done.id].result) == ("succeeded", b"1")
        assert await backend.counts("m") == {"running": 1, "succeeded": 1}
        await backend.close()

    asyncio.run(main())


@pytest.mark.parametrize("keyed", [False, True], ids=["lean", "full"])
def test_a_full_redis_takes_a_batch_of_start_marks_alone(
    own_server: RedisServer, keyed: bool
) -> None:
    """A batch of STARTED marks alone (long tasks, no outcome yet) is written at maxmemory.

    It ends no lease, so its first write was the mark's HSET, which a full Redis refuses: the
    worker stopped claiming and retried it until an outcome joined the batch. The marks of
    both records are written, and their counts move from reserved to running.
    """

    async def main() -> None:
        key = "k" if keyed else None
        first, second = rec(queue="m", concurrency_key=key), rec(queue="m", concurrency_key=key)
        backend = await settle_on_a_full_redis(
            own_server.url,
            [first, second],
            lambda: [Settlement(r.id, 1, Outcome.STARTED, NOW) for r in (first, second)],
        )
        for got in await backend.get([first.id, second.id]):
            assert (got.status, got.started, got.attempts) == ("running", 1, 1)
        assert await backend.counts("m") == {"running": 2}
        await backend.close()

    asyncio.run(main())


@pytest.mark.parametrize("alone", [True, False], ids=["alone", "with-an-outcome"])
def test_a_full_redis_takes_a_late_settlement_of_a_task_charged_twice(
    own_server: RedisServer, alone: bool
) -> None:
    """A late settlement moves its token's crash to lost, with no write refused at maxmemory.

    A task charged two crashes (tokens 1 and 2) gets a late settlement for token 1: refused
    (a newer lease was granted), and its charge moved, which keeps token 2 in ``charged``.
    late() wrote that with an HSET as the script's first write, which a full Redis refuses
    (nothing freed yet), and the whole batch with it, again at every retry.
    """
    from tests.backends.test_contract import start
    from tests.upkeep import reap

    async def main() -> None:
        backend = RedisBackend(own_server.url, prefix=f"dowork:m{uuid.uuid4().hex[:8]}")
        twice, other = rec(queue="m"), rec(queue="n")
        await backend.push([twice, other])
        now = NOW
        for token in (1, 2):
            (claimed,) = await backend.claim(ClaimRequest("m", now, 1, LEASE, f"w{token}"))
            assert (claimed.id, claimed.attempts) == (twice.id, token)
            await start(backend, [claimed], now)
            now += LEASE + 1
            assert await reap(backend, "m", now, 3) == (1, 0)
        (claimed,) = await backend.claim(ClaimRequest("n", now, 1, LEASE, "w3"))
        assert claimed.id == other.id
        (charged,) = await backend.get([twice.id])
        assert (charged.crashes, charged.lost, charged.charged) == (2, 0, "1,2")
        with redis.Redis.from_url(own_server.url) as admin:
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", "1")  # over it from now on
        try:
            batch = [Settlement(twice.id, 1, Outcome.FAILED, now, error="late")]
            if not alone:
                batch.append(Settlement(other.id, 1, Outcome.SUCCEEDED, now, result=b"1"))
            assert await backend.settle(batch) == [twice.id]
        finally:
            with redis.Redis.from_url(own_server.url) as admin:
                admin.config_set("maxmemory", "0")
        got = {r.id: r for r in await backend.get([twice.id, other.id])}
        assert (got[twice.id].crashes, got[twice.id].lost, got[twice.id].charged) == (1, 1, "2")
        assert got[twice.id].status == "retrying"
        want = ("reserved", None) if alone else ("succeeded", b"1")
        assert (got[other.id].status, got[other.id].result) == want
        await backend.close()

    asyncio.run(main())


def test_a_lost_reply_to_asubmit_is_outcome_unknown_and_the_retry_is_refused(
    own_server: RedisServer,
) -> None:
    from dowork.errors import DuplicateTask, OutcomeUnknown
    from tests.tcp_proxy import TcpProxy

    proxy = TcpProxy(own_server.port).start()
    backend = RedisBackend(proxy.url, prefix=f"dowork:a{uuid.uuid4().hex[:8]}")
    queue = dowork.Queue("lost", backend=backend, log=False)
    queue.task(name="record")(record_run)

    async def main() -> tuple[list[BaseException], dict[str, int]]:
        try:
            await queue.asubmit(record_run, 0)  # connected, policy read
            await queue.asubmit(record_run, 1)  # the link's own connection up (see redis.own)
            proxy.mode = "drop"
            caught: list[BaseException] = []
            try:
                await queue.asubmit(record_run, 2)
            except OutcomeUnknown as exc:
                caught.append(exc)
                proxy.mode = "pass"
                handle = exc.tasks[0]
                assert isinstance(handle, dowork.Task)
                try:
                    await queue.aenqueue(handle)
                except DuplicateTask as again:
                    caught.append(again)
            return caught, await backend.counts("lost")
        finally:
            await queue.ashutdown(timeout=5)

    try:
        caught, counts = asyncio.run(main())
    finally:
        proxy.close()
    assert proxy.dropped == 1
    assert [type(e) for e in caught] == [OutcomeUnknown, DuplicateTask]
    assert counts == {"pending": 3}  # stored once: the retry wrote nothing


def test_a_lost_reply_to_submit_names_its_cause(own_server: RedisServer) -> None:
    """push_sync's OutcomeUnknown says why the reply was lost (the read timed out)."""
    from dowork.errors import OutcomeUnknown
    from tests.tcp_proxy import TcpProxy

    proxy = TcpProxy(own_server.port).start()
    backend = RedisBackend(proxy.url, prefix=f"dowork:s{uuid.uuid4().hex[:8]}", socket_timeout=0.3)
    queue = dowork.Queue("lost", backend=backend, log=False)
    queue.task(name="record")(record_run)
    try:
        queue.submit(record_run, 0)  # connected, policy read
        proxy.mode = "stall"
        with pytest.raises(OutcomeUnknown) as caught:
            queue.submit(record_run, 1)
        proxy.mode = "pass"
    finally:
        queue.shutdown(timeout=5)
        proxy.close()
    assert "(None)" not in str(caught.value)
    assert "Timeout reading from" in str(caught.value)
