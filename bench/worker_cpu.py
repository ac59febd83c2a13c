"""What a durable worker costs per task: a backlog of no-op tasks run by one worker.

Pushes ``--n`` no-op tasks (``def`` by default, ``--async`` for ``async def``) to a Redis
(a ``redis-server`` of its own on a free loopback port) or SQLite store, then starts a worker
(``Queue.start()``, ``--concurrency`` slots; a queue object of its own, as in a worker
process) and shuts it down once every task ran and its
outcome is written. The worker's own cost per task is the difference between a run and one
with ``--setup-only`` (the push alone), divided by ``--n``; count it with callgrind::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/worker_cpu.py redis
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/worker_cpu.py \
        redis --setup-only

(the worker's start and stop are in it too, a fixed cost the same for two commits). The
cyclic garbage collector is off, as in ``claim_cpu.py``. Without valgrind it prints the CPU
time of the worker's phase per task, and with ``--profile FILE`` writes a cProfile of the
loop thread (the claim, admission, launch, outcome and settle) to FILE; ``--opcodes`` counts
the bytecodes each Python function ran per task in the worker phase, every thread (exact and
repeatable, unlike timings: what to cut first).

``--body redis`` gives each task issue 16's realistic body, one ``INCR`` on the Redis the run
started (redis-py's ``redis.asyncio`` client with ``--async``), and the line also shows
tasks/s and context switches per task (every thread's, voluntary or not); ``--ceiling`` runs
that body on a bare ``ThreadPoolExecutor`` of ``--concurrency`` threads instead (with
``--async``: one event loop, ``--concurrency`` bodies at once), timed alike, for the ratio;
with ``--opcodes`` too, the bytecodes the ceiling ran per task, to set beside the worker's
(whose report also says how many were dowork's own). Timed figures need a quiet machine;
compare runs alternated with the other commit.

``--server stats`` (Redis) adds what the broker spent on the worker phase: the scripts' time
and calls per task (``INFO commandstats``, their own commands included) and the server's CPU
per task (``INFO cpu``; with ``--body redis`` its INCRs are on the same server, in the CPU but
not in the scripts). ``--server callgrind`` runs that ``redis-server`` under valgrind's
callgrind instead and prints its instructions per task for the worker phase, the whole
server's and the scripts' (as ``store_cpu.py --callgrind`` does for the scripts alone; the
first 128 finished tasks go to small listing zsets, some 5k instructions a task at
``--n 2000``): issue 16's Redis cost of a worker's run, claims, settlements and waits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import dowork


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(work: str, callgrind: str = "") -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server on a free port (under callgrind, writing to ``callgrind``, if given)."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", work]  # fmt: skip
    if callgrind:
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind}", *command]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(3000 if callgrind else 500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.01)
    return server, f"redis://127.0.0.1:{port}/0"


@contextlib.contextmanager
def redis_server(work: str, callgrind: str = "") -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``start_redis``, stopped when the block ends."""
    server, url = start_redis(work, callgrind)
    try:
        yield server, url
    finally:
        server.terminate()
        server.wait()


class ServerCost:
    """What the broker spends on the worker phase (``--server``): stats or callgrind."""

    def __init__(self, mode: str, url: str, pid: int, out: str) -> None:
        import redis

        self.mode, self.pid, self.out = mode, pid, out
        self.client = redis.Redis.from_url(url)
        self.cpu = 0.0
        self.dumps: list[str] = []

    def _cpu(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def _dump(self) -> None:
        before = set(glob.glob(self.out + ".*"))
        subprocess.run(["callgrind_control", "-d", str(self.pid)], check=True, capture_output=True)
        for _ in range(600):
            if new := set(glob.glob(self.out + ".*")) - before:
                self.dumps.append(new.pop())
                return
            time.sleep(0.05)

    def begin(self) -> None:
        if self.mode == "callgrind":
            self._dump()
        else:
            self.client.config_resetstat()
            self.cpu = self._cpu()

    def report(self, n: int) -> str:
        if self.mode == "callgrind":
            from store_cpu import instructions  # (bench/ is the script's folder)

            self._dump()
            time.sleep(1)  # (the dump written whole)
            server, scripts = instructions(self.dumps[-1])
            return (f"Redis server instructions per task (callgrind): {server / n / 1000:.1f}k, "
                    f"scripts {scripts / n / 1000:.1f}k")  # fmt: skip
        cpu = (self._cpu() - self.cpu) / n * 1e6
        stats = self.client.info("commandstats")
        rows = [stats[k] for k in ("cmdstat_evalsha", "cmdstat_eval") if k in stats]
        usec, calls = sum(r["usec"] for r in rows) / n, sum(r["calls"] for r in rows) / n
        return (f"Redis server: scripts {usec:.1f} us per task ({calls:.3f} calls), "
                f"CPU {cpu:.1f} us per task (INFO cpu)")  # fmt: skip


def build(store: str, work: str, url: str, concurrency: int, prefetch: str = "") -> dowork.Queue:
    backend: Any
    if store == "redis":
        backend = dowork.backends.RedisBackend(url, prefix="cpu")
    else:
        backend = dowork.backends.SQLiteBackend(os.path.join(work, "q.db"))
    return dowork.Queue(
        "bench",
        backend=backend,
        log=False,
        concurrency=concurrency,
        durable=dowork.DurableSettings(batch=64, **prefetch_settings(prefetch)),
    )


def prefetch_settings(spec: str) -> dict[str, Any]:
    """``--prefetch N`` (a fixed prefetch) or ``N/WINDOW`` (at most N, held for WINDOW s)."""
    if not spec:
        return {}
    n, _, window = spec.partition("/")
    return {"prefetch": int(n), "prefetch_window": float(window) if window else None}


def context_switches() -> int:
    """This process's context switches so far, voluntary and not (all its threads)."""
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/status") as status:
                for line in status:
                    if "ctxt_switches:" in line:
                        total += int(line.split()[-1])
        except FileNotFoundError:  # the thread ended since the listing
            continue
    return total


def thread_user_system() -> tuple[float, float]:
    """The calling thread's CPU seconds so far, in user space and in the kernel (clock ticks)."""
    with open("/proc/thread-self/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


class Opcodes:
    """Bytecodes run per Python function while enabled, in every thread started after ``arm``.

    Exact and repeatable where callgrind only sees the interpreter: which functions of a task's
    way through the worker run the most bytecode (each costs some 20-40 instructions, more
    with the C calls it makes). Tracing slows the run some 50 times.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.counts: Counter[types.CodeType] = Counter()
        self.on = False

    def _local(self, frame: types.FrameType, event: str, arg: object) -> Any:
        if event == "opcode" and self.on:
            self.counts[frame.f_code] += 1
        return self._local

    def _global(self, frame: types.FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        return self._local

    def start(self) -> None:
        """Count from now on in this thread and every thread started from now on (if enabled)."""
        if self.enabled:
            threading.settrace(self._global)
            sys.settrace(self._global)
            self.on = True

    def report(self, n: int, top: int = int(os.environ.get("TOP", "40"))) -> str:
        """Bytecodes per task, in all and of the ``top`` functions that ran the most."""
        total = sum(self.counts.values())
        own = sum(c for code, c in self.counts.items() if "/dowork/" in code.co_filename)
        lines = [
            f"{total / n:,.0f} bytecodes a task ({own / n:,.0f} in dowork's own modules); "
            "the functions that ran the most:"
        ]
        for code, count in self.counts.most_common(top):
            where = code.co_filename.split("/src/")[-1].split("/site-packages/")[-1]
            lines.append(f"{count / n:8.1f}  {where}:{code.co_firstlineno} {code.co_qualname}")
        return "\n".join(lines)


def ceiling(args: argparse.Namespace, url: str) -> None:
    """The body run by a bare ``ThreadPoolExecutor`` of ``--concurrency`` threads, timed alike.

    With ``--async``: by one event loop, at most ``--concurrency`` bodies at once (a
    ``Semaphore``), as bench/peers.py's ceiling.
    """
    opcodes = Opcodes(args.opcodes)
    if args.is_async:
        asyncio.run(async_ceiling(args, url, opcodes))
    else:
        thread_ceiling(args, url, opcodes)
    if opcodes.enabled:
        print(opcodes.report(args.n))


def thread_ceiling(args: argparse.Namespace, url: str, opcodes: Opcodes) -> None:
    """``ceiling`` for a ``def`` body: a ``ThreadPoolExecutor``."""
    from concurrent.futures import ThreadPoolExecutor

    import redis

    pool = redis.BlockingConnectionPool.from_url(url, max_connections=args.concurrency)
    client = redis.Redis(connection_pool=pool)
    n = args.n
    opcodes.start()  # (its threads start in the warm-up: counted from after it)
    opcodes.on = False
    with ThreadPoolExecutor(args.concurrency) as executor:
        list(executor.map(lambda i: client.incr("cpu-body"), range(args.concurrency)))
        switches = context_switches()
        opcodes.on = opcodes.enabled
        wall = time.perf_counter()
        began = time.process_time()
        futures = [executor.submit(client.incr, "cpu-body") for _ in range(n)]
        for future in futures:
            future.result()
        took = time.process_time() - began
        wall = time.perf_counter() - wall
        opcodes.on = False
        switched = context_switches() - switches
    print(
        f"ThreadPoolExecutor({args.concurrency}): {n} bodies, CPU {took / n * 1e6:.1f} us per task "
        f"(process), {n / wall:,.0f} tasks/s, {switched / n:.2f} context switches per task"
    )


async def async_ceiling(args: argparse.Namespace, url: str, opcodes: Opcodes) -> None:
    """``ceiling`` for an ``async def`` body: one event loop, ``--concurrency`` at once."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url, max_connections=args.concurrency)
    gate = asyncio.Semaphore(args.concurrency)

    async def one() -> None:
        async with gate:
            await client.incr("cpu-body")

    n = args.n
    await asyncio.gather(*(one() for _ in range(args.concurrency)))
    switches = context_switches()
    opcodes.start()
    wall = time.perf_counter()
    began = time.process_time()
    await asyncio.gather(*(one() for _ in range(n)))
    took = time.process_time() - began
    wall = time.perf_counter() - wall
    opcodes.on = False
    switched = context_switches() - switches
    await client.aclose()
    print(
        f"asyncio + Semaphore({args.concurrency}): {n} bodies, CPU {took / n * 1e6:.1f} us per "
        f"task (process), {n / wall:,.0f} tasks/s, {switched / n:.2f} context switches per task"
    )


def make_body(args: argparse.Namespace, url: str, bump: Callable[[], None]) -> Callable[..., Any]:
    """The task function: a no-op that counts, or (``--body redis``) one INCR first."""
    client: Any = None
    if args.body == "redis":  # the realistic body: one round trip (INCR), as bench/peers.py
        import redis

        pool = redis.BlockingConnectionPool.from_url(url, max_connections=args.concurrency)
        client = redis.Redis(connection_pool=pool)

    def work_fn(i: int) -> None:
        if client is not None:
            client.incr("cpu-body")
        bump()

    aclient: Any = None
    if args.body == "redis" and args.is_async:
        import redis.asyncio

        aclient = redis.asyncio.Redis.from_url(url, max_connections=args.concurrency)

    async def awork_fn(i: int) -> None:
        if aclient is not None:
            await aclient.incr("cpu-body")
        bump()

    return awork_fn if args.is_async else work_fn


def run(args: argparse.Namespace, work: str, url: str, cost: ServerCost | None = None) -> None:
    n = args.n
    done = threading.Event()
    count = [0]
    lock = threading.Lock()

    def bump() -> None:
        with lock:
            count[0] += 1
            if count[0] == n:
                done.set()

    body = make_body(args, url, bump)
    producer = build(args.store, work, url, args.concurrency)
    fn = producer.task(name="work")(body)
    for start in range(0, n, 1000):
        fn.map([(i,) for i in range(start, min(n, start + 1000))])
    producer.shutdown()
    # The worker is a queue of its own, as in a worker process: it builds every task it runs
    # from its record (the producer's queue would find its own handles by id).
    queue = build(args.store, work, url, args.concurrency, args.prefetch)
    queue.task(name="work")(body)
    if args.setup_only:
        queue.shutdown()
        return
    profiler = cProfile.Profile() if args.profile else None
    opcodes = Opcodes(args.opcodes)
    opcodes.start()
    engine = queue._engine
    switches = context_switches()
    wall = time.perf_counter()
    began = time.process_time()
    if cost is not None:
        cost.begin()
    queue.start()
    loop_began = engine.call(time.thread_time)
    split_began = engine.call(thread_user_system)
    if profiler is not None:
        engine.call(profiler.enable)
    if not done.wait(300):
        raise SystemExit(f"only {count[0]} of {n} tasks ran")
    wall = time.perf_counter() - wall
    loop_cpu = engine.call(time.thread_time) - loop_began  # (the outcomes' writes go on)
    split_ended = engine.call(thread_user_system)
    user, system = split_ended[0] - split_began[0], split_ended[1] - split_began[1]
    switched = context_switches() - switches  # (before the shutdown ends the threads)
    if profiler is not None:
        engine.call(profiler.disable)
    opcodes.on = False
    queue.shutdown()
    took = time.process_time() - began
    print(
        f"{args.store}: {n} tasks, worker CPU {took / n * 1e6:.1f} us per task (process), "
        f"{n / wall:,.0f} tasks/s, {switched / n:.2f} context switches per task, "
        f"loop thread {loop_cpu / n * 1e6:.1f} us per task ({user / n * 1e6:.0f} user, "
        f"{system / n * 1e6:.0f} system)"
    )
    if cost is not None:
        print(cost.report(n))
    if profiler is not None:
        profiler.dump_stats(args.profile)
    if opcodes.enabled:
        print(opcodes.report(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("store", choices=("redis", "sqlite"))
    parser.add_argument("--n", type=int, default=3000, help="tasks")
    parser.add_argument("--concurrency", type=int, default=8, help="Queue(concurrency=)")
    parser.add_argument("--async", dest="is_async", action="store_true", help="async def body")
    parser.add_argument("--setup-only", action="store_true", help="push the tasks, run nothing")
    parser.add_argument("--profile", default="", help="write a cProfile of the loop thread")
    parser.add_argument(
        "--opcodes", action="store_true", help="count bytecodes per function, every thread"
    )
    parser.add_argument(
        "--body", choices=("noop", "redis"), default="noop", help="redis: one INCR a task"
    )
    parser.add_argument(
        "--ceiling", action="store_true", help="run the body on a ThreadPoolExecutor instead"
    )
    parser.add_argument(
        "--server", choices=("", "stats", "callgrind"), default="", help="the broker's cost"
    )
    parser.add_argument(
        "--prefetch", default="", help="N: a fixed prefetch; N/WINDOW: at most N, adaptive"
    )
    args = parser.parse_args()
    if not os.environ.get("GC"):
        gc.disable()
    with tempfile.TemporaryDirectory() as work, contextlib.ExitStack() as stack:
        server = None
        url = ""
        out = os.path.join(work, "callgrind.out") if args.server == "callgrind" else ""
        if args.store == "redis" or args.body == "redis" or args.ceiling:
            server, url = stack.enter_context(redis_server(work, out))
        if args.ceiling:
            ceiling(args, url)
        else:
            cost = None
            if args.server and server is not None and args.store == "redis":
                cost = ServerCost(args.server, url, server.pid, out)
            run(args, work, url, cost)


if __name__ == "__main__":
    main()
