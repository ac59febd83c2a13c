"""In-process benchmark of dowork: throughput against bare asyncio / ThreadPoolExecutor, and
memory per queued task.

Run ``python bench/inprocess.py`` (15-30 s on 2 cores) or ``python bench/inprocess.py --quick``
(a few seconds). See bench/README.md for what each row measures and how to read the output.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from typing import Any

import dowork

# Targets from the issue.
ASYNC_TARGET = 0.5  # dowork async throughput >= 0.5x bare asyncio
SYNC_TARGET = 1.5  # dowork sync throughput >= 1.5x ThreadPoolExecutor
MEMORY_TARGET = 1024  # bytes per queued task < 1 KiB
ASUBMIT_TARGET = 0.9  # asubmit() >= 0.9x submit() in submissions per second (issue 16)
SLEEP_TARGET = 0.7  # n async sleeps at concurrency 100: ideal time / wall time >= 70 %
SLEEP_S = 0.01  # each task of section 5 sleeps 10 ms
SLEEP_K = 100  # at concurrency 100


async def anoop() -> None:
    pass


def snoop() -> None:
    pass


# -- measurement helpers -----------------------------------------------------------------------


@dataclass
class Result:
    """Timings (seconds) of one benchmark over all repeats, for ``n`` tasks each."""

    name: str
    n: int
    times: list[float] = field(default_factory=list)

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


Timed = Callable[[int], float]  # runs n tasks, returns the elapsed seconds


@dataclass
class Bench:
    """One benchmark: a ``Timed`` and how many tasks each run does."""

    name: str
    fn: Timed
    n: int


def measure(benches: list[Bench], repeat: int) -> list[Result]:
    """Time every benchmark ``repeat`` times, interleaved round-robin so that drift of the
    machine (CPU boost, other load) hits all of them alike; one untimed full-size warm-up run
    each first; a GC collection before every run.
    """
    for bench in benches:
        gc.collect()
        bench.fn(bench.n)
    results = [Result(bench.name, bench.n) for bench in benches]
    for _ in range(repeat):
        for bench, result in zip(benches, results, strict=True):
            gc.collect()
            result.times.append(bench.fn(bench.n))
    return results


def in_new_loop(coro_fn: Callable[[int], Coroutine[Any, Any, float]]) -> Timed:
    """Turn a coroutine that times itself into a ``Timed``; loop setup is not timed."""

    def run(n: int) -> float:
        return asyncio.run(coro_fn(n))

    return run


# -- 1. async no-op tasks ----------------------------------------------------------------------


async def bare_gather(n: int) -> float:
    """asyncio baseline: one asyncio.Task per call, gathered."""
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    await asyncio.gather(*[loop.create_task(anoop()) for _ in range(n)])
    return time.perf_counter() - start


def bare_workers(k: int) -> Callable[[int], Coroutine[Any, Any, float]]:
    """asyncio baseline: an asyncio.Queue of functions drained by ``k`` worker coroutines."""

    async def run(n: int) -> float:
        work: asyncio.Queue[Callable[[], Coroutine[Any, Any, None]]] = asyncio.Queue()

        async def worker() -> None:
            while True:
                fn = await work.get()
                try:
                    await fn()
                finally:
                    work.task_done()

        start = time.perf_counter()
        workers = [asyncio.create_task(worker()) for _ in range(k)]
        for _ in range(n):
            work.put_nowait(anoop)
        await work.join()
        elapsed = time.perf_counter() - start
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        return elapsed

    return run


def bare_workers_futures(k: int) -> Callable[[int], Coroutine[Any, Any, float]]:
    """asyncio baseline: as ``bare_workers``, plus an asyncio.Future per call that gets the
    result: the least a queue that hands out a handle per call has to do.
    """

    async def run(n: int) -> float:
        loop = asyncio.get_running_loop()
        Item = tuple[Callable[[], Coroutine[Any, Any, None]], asyncio.Future[None]]
        work: asyncio.Queue[Item] = asyncio.Queue()

        async def worker() -> None:
            while True:
                fn, future = await work.get()
                try:
                    future.set_result(await fn())
                except Exception as exc:
                    future.set_exception(exc)
                finally:
                    work.task_done()

        start = time.perf_counter()
        workers = [asyncio.create_task(worker()) for _ in range(k)]
        for _ in range(n):
            work.put_nowait((anoop, loop.create_future()))  # handles dropped, as for dowork
        await work.join()
        elapsed = time.perf_counter() - start
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        return elapsed

    return run


def dowork_from_sync(fn: Callable[[], Any], concurrency: int) -> Timed:
    """dowork: submit from this (sync) thread into a started queue, then shutdown()."""

    def run(n: int) -> float:
        q = dowork.Queue("bench", concurrency=concurrency, log=False).start()
        submit = q.submit
        start = time.perf_counter()
        for _ in range(n):
            submit(fn)
        ok = q.shutdown()
        elapsed = time.perf_counter() - start
        assert ok
        return elapsed

    return run


def dowork_on_loop(concurrency: int) -> Callable[[int], Coroutine[Any, Any, float]]:
    """dowork: ``await q.astart()`` on the running loop, ``q.submit`` there, ``ashutdown()``."""

    async def run(n: int) -> float:
        q = dowork.Queue("bench", concurrency=concurrency, log=False)
        await q.astart()
        submit = q.submit
        start = time.perf_counter()
        for _ in range(n):
            submit(anoop)
        ok = await q.ashutdown()
        elapsed = time.perf_counter() - start
        assert ok
        return elapsed

    return run


# -- 2. sync no-op tasks -----------------------------------------------------------------------


def thread_pool(workers: int) -> Timed:
    """Baseline: ThreadPoolExecutor.submit n times, wait for all, shut the pool down."""

    def run(n: int) -> float:
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(snoop) for _ in range(n)]
            futures_wait(futures)
        return time.perf_counter() - start

    return run


# -- 3. memory per queued task -----------------------------------------------------------------


def traced_bytes(action: Callable[[], object]) -> tuple[int, object]:
    """Bytes still allocated after ``action()`` (what it returns is kept alive meanwhile)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = action()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before, kept


def memory_pending(n: int) -> float:
    """Bytes per task for ``n`` tasks submitted to a queue that is not started."""

    def fill() -> dowork.Queue:
        q = dowork.Queue("mem", log=False)
        submit = q.submit
        for _ in range(n):
            submit(anoop)  # handles are dropped: only what the queue holds is counted
        return q

    used, q = traced_bytes(fill)
    assert isinstance(q, dowork.Queue)
    assert len(q) == n
    del q
    return used / n


def memory_scheduled(n: int) -> float:
    """Bytes per task for ``n`` tasks due in an hour (``call_later``) on a started queue."""
    q = dowork.Queue("mem_later", log=False).start()

    def fill() -> None:
        call_later = q.call_later
        for _ in range(n):
            call_later(3600, anoop)
        # Wait until the loop thread has taken every task from the inbox into its heap: a
        # call scheduled on the loop now runs after the pending inbox drain.
        engine = q._engine
        engine.call(lambda: None)
        assert not engine._inbox
        assert len(engine._heap) == n

    used, _ = traced_bytes(fill)
    q.shutdown(timeout=0)  # cancels the scheduled tasks; False is expected
    return used / n


# -- 4. submit() against asubmit() -------------------------------------------------------------


def submit_calls(q: dowork.Queue, use_async: bool) -> Callable[[int], Coroutine[Any, Any, float]]:
    """n calls of ``q.submit(anoop)`` or ``await q.asubmit(anoop)``; returns the CPU time the
    calling thread spent on them (``time.thread_time``): a run of a few tens of milliseconds
    swings by 100 % and more in wall time on a loaded machine, its CPU time does not.
    """

    async def calls(n: int) -> float:
        start = time.thread_time()
        if use_async:
            asubmit = q.asubmit
            for _ in range(n):
                await asubmit(anoop)
        else:
            submit = q.submit
            for _ in range(n):
                submit(anoop)
        return time.thread_time() - start

    return calls


def submits_on_loop(
    use_async: bool, concurrency: int
) -> Callable[[int], Coroutine[Any, Any, float]]:
    """``submit_calls`` on the queue's home loop (``await q.astart()``); the tasks then run
    and the queue shuts down, untimed.
    """

    async def run(n: int) -> float:
        q = dowork.Queue("bench", concurrency=concurrency, log=False)
        await q.astart()
        spent = await submit_calls(q, use_async)(n)
        assert await q.ashutdown()
        return spent

    return run


def submits_from_coroutine(use_async: bool, concurrency: int) -> Timed:
    """``submit_calls`` from a plain coroutine (``asyncio.run``) into a queue on its own loop
    thread (``q.start()``): every task crosses the inbox while the loop thread runs the ones
    before it.
    """

    def run(n: int) -> float:
        q = dowork.Queue("bench", concurrency=concurrency, log=False).start()
        spent = asyncio.run(submit_calls(q, use_async)(n))
        assert q.shutdown()
        return spent

    return run


# -- 5. async sleeps at concurrency 100 --------------------------------------------------------


class Countdown:
    """Calls ``done()`` when the ``n``-th task body ends (set before every run)."""

    left = 0
    done: Callable[[], object] = staticmethod(lambda: None)

    @classmethod
    def arm(cls, n: int, done: Callable[[], object]) -> None:
        cls.left, cls.done = n, done


async def asleep() -> None:
    """Section 5's task: sleep, then count down; the last one stops the clock."""
    await asyncio.sleep(SLEEP_S)
    Countdown.left -= 1
    if not Countdown.left:
        Countdown.done()


async def bare_sleeps(n: int) -> float:
    """asyncio baseline: a task per call, ``Semaphore(SLEEP_K)`` around each body, gathered."""
    sem = asyncio.Semaphore(SLEEP_K)

    async def one() -> None:
        async with sem:
            await asyncio.sleep(SLEEP_S)

    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    await asyncio.gather(*[loop.create_task(one()) for _ in range(n)])
    return time.perf_counter() - start


async def dowork_sleeps_on_loop(n: int) -> float:
    """dowork: ``await q.astart()`` on this loop, ``q.submit(asleep)`` n times, until the last
    body ended.
    """
    q = dowork.Queue("bench", concurrency=SLEEP_K, log=False)
    await q.astart()
    finished = asyncio.Event()
    Countdown.arm(n, finished.set)
    submit = q.submit
    start = time.perf_counter()
    for _ in range(n):
        submit(asleep)
    await finished.wait()
    elapsed = time.perf_counter() - start
    assert await q.ashutdown()
    return elapsed


async def dowork_sleeps_awaited(n: int) -> float:
    """dowork as ``dowork_sleeps_on_loop``, until ``gather`` of the n handles returned: the
    last completion as a caller that awaits its tasks sees it.
    """
    q = dowork.Queue("bench", concurrency=SLEEP_K, log=False)
    await q.astart()
    Countdown.arm(n, lambda: None)
    submit = q.submit
    start = time.perf_counter()
    await asyncio.gather(*[submit(asleep) for _ in range(n)])
    elapsed = time.perf_counter() - start
    assert await q.ashutdown()
    return elapsed


def dowork_sleeps_from_sync(n: int) -> float:
    """dowork: ``q.start()`` (its own loop thread), ``q.submit(asleep)`` n times from this
    thread, until the last body ended.
    """
    q = dowork.Queue("bench", concurrency=SLEEP_K, log=False).start()
    finished = threading.Event()
    Countdown.arm(n, finished.set)
    submit = q.submit
    start = time.perf_counter()
    for _ in range(n):
        submit(asleep)
    finished.wait()
    elapsed = time.perf_counter() - start
    assert q.shutdown()
    return elapsed


# -- report ------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_results(title: str, results: list[Result]) -> None:
    print(f"\n{title}")
    print(f"  {'benchmark':<44} {'n':>7} {'median s':>9} {'tasks/s':>10} {'spread':>7}")
    for r in results:
        print(f"  {r.name:<44} {r.n:>7} {r.median:>9.4f} {r.rate:>10,.0f} {r.spread:>6.0%}")


def print_ratios(pairs: list[tuple[Result, Result]], target: float) -> None:
    print(f"  ratios (dowork / baseline tasks/s), target >= {target}x:")
    labels = [f"{mine.name} / {base.name}" for mine, base in pairs]
    width = max(map(len, labels))
    for label, (mine, base) in zip(labels, pairs, strict=True):
        ratio = mine.rate / base.rate
        print(f"    {label:<{width}} {ratio:>5.2f}x  {verdict(ratio >= target)}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=50_000, help="async tasks per run")
    parser.add_argument("--sync-n", type=int, default=20_000, help="sync tasks per run")
    parser.add_argument("--mem-n", type=int, default=100_000, help="tasks for memory runs")
    parser.add_argument("--submit-n", type=int, default=20_000, help="calls per section 4 run")
    parser.add_argument("--sleep-n", type=int, default=1_000, help="sleeping tasks per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per benchmark (median)")
    parser.add_argument("--concurrency", type=int, default=8, help="dowork/pool workers")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and 3 repeats (a few seconds)"
    )
    parser.add_argument(
        "--only",
        type=lambda text: [part for part in text.split(",") if part],
        default=list(SECTIONS),
        help=f"comma-separated sections to run, of {','.join(SECTIONS)} (default: all)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.sync_n, args.mem_n, args.repeat = 5_000, 2_000, 20_000, 3
        args.submit_n = 5_000
    unknown = set(args.only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {SECTIONS}")
    return args


Check = tuple[str, str, bool]


def section_async(n: int, k: int, repeat: int) -> list[Check]:
    async_results = measure(
        [
            Bench("asyncio gather(create_task)", in_new_loop(bare_gather), n),
            Bench(f"asyncio Queue + {k} workers", in_new_loop(bare_workers(k)), n),
            Bench(f"asyncio Queue + {k} workers + Future", in_new_loop(bare_workers_futures(k)), n),
            Bench("dowork async, submit from sync thread", dowork_from_sync(anoop, k), n),
            Bench("dowork async, astart() on caller loop", in_new_loop(dowork_on_loop(k)), n),
        ],
        repeat,
    )
    async_base, async_dowork = async_results[:3], async_results[3:]
    print_results("1. async no-op tasks", async_results)
    print_ratios([(mine, base) for base in async_base for mine in async_dowork], ASYNC_TARGET)
    checks: list[Check] = []
    for base in async_base:  # the slower dowork variant against each baseline
        worst = min(d.rate for d in async_dowork) / base.rate
        checks.append(
            (f"async >= {ASYNC_TARGET}x {base.name}", f"{worst:.2f}x", worst >= ASYNC_TARGET)
        )
    return checks


def section_sync(sync_n: int, k: int, repeat: int) -> list[Check]:
    pool, mine = measure(
        [
            Bench(f"ThreadPoolExecutor({k})", thread_pool(k), sync_n),
            Bench("dowork sync, submit from sync thread", dowork_from_sync(snoop, k), sync_n),
        ],
        repeat,
    )
    print_results("2. sync no-op tasks", [pool, mine])
    print_ratios([(mine, pool)], SYNC_TARGET)
    sync_ratio = mine.rate / pool.rate
    return [
        (f"sync >= {SYNC_TARGET}x {pool.name}", f"{sync_ratio:.2f}x", sync_ratio >= SYNC_TARGET)
    ]


def section_memory(mem_n: int) -> list[Check]:
    print(f"\n3. memory per queued task (tracemalloc, {mem_n:,} tasks, handles dropped)")
    memory = {
        "pending, queue not started (submit)": memory_pending(mem_n),
        "scheduled in 1 h, started queue (call_later)": memory_scheduled(mem_n),
    }
    for label, per_task in memory.items():
        print(f"  {label:<50} {per_task:>7.0f} B/task  {verdict(per_task < MEMORY_TARGET)}")
    worst_mem = max(memory.values())
    return [
        (
            f"memory < {MEMORY_TARGET} B per queued task",
            f"{worst_mem:.0f} B",
            worst_mem < MEMORY_TARGET,
        )
    ]


def section_asubmit(n: int, k: int, repeat: int) -> list[Check]:
    results = measure(
        [
            Bench("submit(), on the home loop", in_new_loop(submits_on_loop(False, k)), n),
            Bench("asubmit(), on the home loop", in_new_loop(submits_on_loop(True, k)), n),
            Bench("submit(), from a coroutine", submits_from_coroutine(False, k), n),
            Bench("asubmit(), from a coroutine", submits_from_coroutine(True, k), n),
        ],
        repeat,
    )
    print_results(
        "4. submit() against asubmit(), in memory (calls per CPU second of the calling thread)",
        results,
    )
    print(f"  ratios (asubmit / submit calls/s), target >= {ASUBMIT_TARGET}x:")
    checks: list[Check] = []
    for sync, coro in (results[:2], results[2:]):
        ratio = coro.rate / sync.rate
        where = sync.name.split(", ", 1)[1]
        print(f"    {where:<24} {ratio:>5.2f}x  {verdict(ratio >= ASUBMIT_TARGET)}")
        checks.append(
            (
                f"asubmit >= {ASUBMIT_TARGET}x submit, {where}",
                f"{ratio:.2f}x",
                ratio >= ASUBMIT_TARGET,
            )
        )
    return checks


def section_sleeps(sleep_n: int, repeat: int) -> list[Check]:
    results = measure(
        [
            Bench(
                f"asyncio Semaphore({SLEEP_K}), task per call", in_new_loop(bare_sleeps), sleep_n
            ),
            Bench("dowork, astart() on caller loop", in_new_loop(dowork_sleeps_on_loop), sleep_n),
            Bench("dowork, astart(), gather(handles)", in_new_loop(dowork_sleeps_awaited), sleep_n),
            Bench("dowork, submit from sync thread", dowork_sleeps_from_sync, sleep_n),
        ],
        repeat,
    )
    ideal = sleep_n / SLEEP_K * SLEEP_S
    print_results(
        f"5. {sleep_n:,} async sleeps of {SLEEP_S * 1000:.0f} ms at concurrency {SLEEP_K} "
        f"(ideal {ideal:.2f} s; first submit to last body's end)",
        results,
    )
    print(f"  efficiency (ideal / median s), target >= {SLEEP_TARGET:.0%}:")
    checks: list[Check] = []
    for r in results:
        efficiency = ideal / r.median
        best = ideal / min(r.times)
        ok = verdict(efficiency >= SLEEP_TARGET)
        print(f"    {r.name:<44} {efficiency:>5.0%} (best run {best:.0%})  {ok}")
        if r.name.startswith("dowork"):
            checks.append(
                (
                    f"sleeps >= {SLEEP_TARGET:.0%} efficient, {r.name[8:]}",
                    f"{efficiency:.0%}",
                    efficiency >= SLEEP_TARGET,
                )
            )
    return checks


SECTIONS = ("async", "sync", "memory", "asubmit", "sleeps")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    n, sync_n, k, repeat = args.n, args.sync_n, args.concurrency, args.repeat
    print(
        f"dowork {dowork.__version__} | Python {platform.python_version()} "
        f"({sys.implementation.name}) | {platform.machine()} | {os.cpu_count()} CPUs"
    )
    print(f"concurrency={k} repeat={repeat} (medians; spread = (max-min)/median)")
    runs = {
        "async": lambda: section_async(n, k, repeat),
        "sync": lambda: section_sync(sync_n, k, repeat),
        "memory": lambda: section_memory(args.mem_n),
        "asubmit": lambda: section_asubmit(args.submit_n, k, repeat),
        "sleeps": lambda: section_sleeps(args.sleep_n, repeat),
    }
    checks: list[Check] = []
    for name in args.only:
        checks.extend(runs[name]())
    print("\ntargets")
    for label, value, ok in checks:
        print(f"  {label:<52} {value:>8}  {verdict(ok)}")
    return 1 if args.strict and not all(ok for _, _, ok in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
