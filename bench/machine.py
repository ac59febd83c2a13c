"""Per machine, as users run it: each task queue's documented default worker command.

``python bench/machine.py`` starts two ``redis-server``s of its own (the broker, and the server of
the task body), writes a small app module per library into a temporary directory, and for each
library: enqueues a backlog of tasks whose body is one Redis round trip (an ``INCR`` on the body
server), starts the library's documented worker command as users would (its default processes,
threads and concurrency; dowork's default, ``--processes auto``, one process per core, and
``--processes`` 1, 2 and 4), and times the backlog from the body server's count. Per row it reports
tasks/s (median and range of the rounds), the CPU of the worker's whole process tree per task and
the broker's Redis CPU per task (``INFO cpu``), over the middle 80 % of the backlog (the start-up
of a worker's processes and the tail, where processes run dry, are left out). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from peers import LocalRedis, Skip, load_line

BODY = '''
import asyncio, os, weakref
import redis, redis.asyncio

BROKER = os.environ["DWBENCH_BROKER"]
NAME = os.environ["DWBENCH_NAME"]
KEY = NAME + "-body"
_URL = os.environ["DWBENCH_BODY"]
_client = None
_aclients = weakref.WeakKeyDictionary()


def call():
    """The task body: one round trip (a pool per process, made in the process that uses it)."""
    global _client
    if _client is None:
        pool = redis.BlockingConnectionPool.from_url(_URL, max_connections=256, timeout=60)
        _client = redis.Redis(connection_pool=pool)
    _client.incr(KEY)


async def acall():
    loop = asyncio.get_running_loop()
    client = _aclients.get(loop)
    if client is None:
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            _URL, max_connections=256, timeout=60
        )
        client = _aclients[loop] = redis.asyncio.Redis(connection_pool=pool)
    await client.incr(KEY)
'''

APPS = {
    "dowork": """
import dowork
from dowork.backends import RedisBackend
from dwbench_body import BROKER, NAME, call

queue = dowork.Queue("bench", backend=RedisBackend(BROKER, prefix=NAME))


@queue.task(name="work")
def work(i):
    call()


def preload(n):
    work.map([(i,) for i in range(n)])
""",
    "huey": """
from huey import RedisHuey
from dwbench_body import BROKER, NAME, call

huey = RedisHuey(NAME, url=BROKER)


@huey.task(name="work")
def work(i):
    call()


def preload(n):
    for i in range(n):
        work(i)
""",
    "celery": """
from celery import Celery
from dwbench_body import BROKER, NAME, call

app = Celery("dwbench_celery", broker=BROKER)
app.conf.update(task_default_queue=NAME, task_ignore_result=True)


@app.task(name="work")
def work(i):
    call()


def preload(n):
    with app.producer_or_acquire() as producer:
        for i in range(n):
            work.apply_async((i,), producer=producer)
""",
    "dramatiq": """
import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dwbench_body import BROKER, NAME, call

broker = RedisBroker(url=BROKER, namespace=NAME)
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="work", queue_name="bench")
def work(i):
    call()


def preload(n):
    for i in range(n):
        work.send(i)
""",
    "rq": """
from redis import Redis
from rq import Queue
from dwbench_body import BROKER, NAME, call

queue = Queue(NAME, connection=Redis.from_url(BROKER))


def work(i):
    call()


def preload(n):
    jobs = [Queue.prepare_data(work, (i,)) for i in range(n)]
    for start in range(0, n, 1000):
        queue.enqueue_many(jobs[start : start + 1000])
""",
    "saq": """
import asyncio
import saq
from dwbench_body import BROKER, NAME, acall

queue = saq.Queue.from_url(BROKER, name=NAME)


async def work(ctx, *, i):
    await acall()


settings = {"queue": queue, "functions": [("work", work)]}


def preload(n):
    async def fill():
        await queue.connect()
        for start in range(0, n, 100):
            batch = range(start, min(n, start + 100))
            await asyncio.gather(*(queue.enqueue("work", i=i) for i in batch))
        await queue.disconnect()

    asyncio.run(fill())
""",
    "taskiq": """
import asyncio
from taskiq_redis import RedisStreamBroker
from dwbench_body import BROKER, NAME, acall

broker = RedisStreamBroker(BROKER, queue_name=NAME, consumer_group_name=NAME)


@broker.task(task_name="work")
async def work(i):
    await acall()


def preload(n):
    async def fill():
        await broker.startup()
        for start in range(0, n, 100):
            await asyncio.gather(*(work.kiq(i) for i in range(start, min(n, start + 100))))
        await broker.shutdown()

    asyncio.run(fill())
""",
}


@dataclass
class Row:
    """One worker command and its figures over the rounds."""

    label: str
    app: str  #: the key in APPS
    argv: list[str]
    note: str  #: what the defaults amount to on this machine
    n: int = 0
    rates: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  #: worker CPU s per task
    server: list[float] = field(default_factory=list)  #: broker Redis CPU s per task
    skip: str | None = None

    def as_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {"name": self.label, "command": " ".join(self.argv), "n": self.n}
        if self.skip or not self.rates:
            return {**row, "skipped": self.skip or "no run"}
        return {
            **row,
            "defaults": self.note,
            "tasks_per_s": self.rates,
            "tasks_per_s_median": statistics.median(self.rates),
            "worker_cpu_us_per_task": statistics.median(self.cpu) * 1e6,
            "redis_cpu_us_per_task": statistics.median(self.server) * 1e6,
        }


def rows(bindir: str, broker: str, processes: list[str]) -> list[Row]:
    cpus = os.cpu_count() or 1
    dowork_slots = min(32, cpus + 4)

    def tool(name: str) -> str:
        return os.path.join(bindir, name)

    def dowork(p: str) -> Row:
        if p == "auto":  # the default command: one process per usable core
            cores = len(os.sched_getaffinity(0))
            return Row(
                "dowork worker (default)",
                "dowork",
                [tool("dowork"), "worker", "dwbench_dowork:queue"],
                f"--processes auto: {cores} process(es) x {dowork_slots} slots, metrics on",
            )
        return Row(
            f"dowork worker --processes {p}",
            "dowork",
            [tool("dowork"), "worker", "dwbench_dowork:queue", "--processes", p],
            f"{p} process(es) x {dowork_slots} slots (Queue's default concurrency), metrics on",
        )

    out = [dowork(p) for p in processes]
    out += [
        Row(
            "huey_consumer",
            "huey",
            [tool("huey_consumer"), "dwbench_huey.huey"],
            "1 process, 1 worker thread (Huey's defaults: -w 1 -k thread)",
        ),
        Row(
            "celery worker",
            "celery",
            [tool("celery"), "-A", "dwbench_celery", "worker"],
            f"prefork pool of {cpus} processes (Celery's default: one per CPU)",
        ),
        Row(
            "dramatiq",
            "dramatiq",
            [tool("dramatiq"), "dwbench_dramatiq"],
            f"{cpus} processes x 8 threads (Dramatiq's defaults)",
        ),
        Row(
            "rq worker",
            "rq",
            [tool("rq"), "worker", "-u", broker, "QUEUE"],
            "1 process, forks a work horse per job (RQ's default Worker)",
        ),
        Row(
            "saq",
            "saq",
            [tool("saq"), "dwbench_saq.settings"],
            "1 process, concurrency 10 (SAQ's defaults), async body",
        ),
        Row(
            "taskiq worker",
            "taskiq",
            [tool("taskiq"), "worker", "dwbench_taskiq:broker"],
            "2 processes x 100 async tasks (Taskiq's defaults), async body",
        ),
    ]
    return out


def tree_cpu(pgid: int) -> float:
    """CPU seconds of every process in the group: its own, and its waited-for children's
    (a child that exited inside the window shows there, in its parent's ``cutime``).
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields[0] is the state (field 3 of stat(5))
            total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / tick


def server_cpu(client: redis.Redis) -> float:
    """CPU seconds the broker has used (``INFO cpu``: user + system, every thread).

    Not ``INFO commandstats``: it counts a command run inside a script twice, on its own line
    and in the script's time, so its sum overstates a queue that uses scripts.
    """
    info: dict[str, Any] = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: str, broker: str, body: str) -> None:
        self.args, self.workdir, self.broker_url, self.body_url = args, workdir, broker, body
        self.broker = redis.Redis.from_url(broker)
        self.body = redis.Redis.from_url(body)
        with open(os.path.join(workdir, "dwbench_body.py"), "w") as f:
            f.write(BODY)
        for name, text in APPS.items():
            with open(os.path.join(workdir, f"dwbench_{name}.py"), "w") as f:
                f.write(text)
        self.runs = 0

    def env(self, name: str) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [self.workdir, os.environ.get("PYTHONPATH")]))
        return {
            **os.environ,
            "PYTHONPATH": path,
            "DWBENCH_BROKER": self.broker_url,
            "DWBENCH_BODY": self.body_url,
            "DWBENCH_NAME": name,
        }

    def run(self, row: Row, n: int) -> tuple[float, float, float]:
        """One run: preload ``n`` tasks, start the command, time the middle 80 %, stop it.
        Returns tasks/s, worker CPU s per task and Redis CPU s per task.
        """
        self.runs += 1
        name = f"dwb{self.runs}"
        env = self.env(name)
        self.broker.flushall()
        self.body.delete(f"{name}-body")
        code = f"import dwbench_{row.app} as app; app.preload({n})"
        subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=self.workdir, check=True, timeout=600
        )
        argv = [name if a == "QUEUE" else a for a in row.argv]
        log = open(os.path.join(self.workdir, f"{row.app}.log"), "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            argv, env=env, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            return self._time(proc, name, n)
        finally:
            self._stop(proc)
            log.close()

    def _time(self, proc: subprocess.Popen[bytes], name: str, n: int) -> tuple[float, float, float]:
        key = f"{name}-body"
        low, high = int(n * 0.1), int(n * 0.9)
        deadline = time.monotonic() + 60 + n / 20
        marks: list[tuple[float, int, float, float]] = []  # time, count, worker CPU, Redis CPU
        for goal in (low, high):
            while True:
                count = int(self.body.get(key) or 0)
                if count >= goal:
                    now = time.perf_counter()
                    marks.append((now, count, tree_cpu(proc.pid), server_cpu(self.broker)))
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"the worker exited ({proc.returncode}) at {count}/{n}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {count} of {n} tasks ran")
                time.sleep(0.002)
        (t0, c0, w0, r0), (t1, c1, w1, r1) = marks
        done = c1 - c0
        return done / (t1 - t0), (w1 - w0) / done, (r1 - r0) / done

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # every one of them: a warm shutdown
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group we started, stragglers included
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (medians)")
    parser.add_argument("--budget", type=float, default=4.0, help="s per timed run (sets n)")
    parser.add_argument("--max-n", type=int, default=20_000, help="most tasks per run")
    parser.add_argument(
        "--processes", default="auto,1,2,4", help="dowork --processes rows (auto: the default)"
    )
    parser.add_argument("--only", default="", help="comma-separated rows: dowork,huey,celery,...")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    processes = [p.strip() for p in args.processes.split(",") if p.strip()]
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    bindir = os.path.dirname(sys.executable)
    with contextlib.ExitStack() as stack:
        workdir = tempfile.mkdtemp(prefix="dwbench-machine-")
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        try:
            broker = LocalRedis(workdir, "broker")
            stack.callback(broker.stop)
            body = LocalRedis(workdir, "body")
            stack.callback(body.stop)
        except Skip as exc:
            print(f"cannot run: {exc}", file=sys.stderr)
            return 2
        bench = Bench(args, workdir, broker.url, body.url)
        table = [r for r in rows(bindir, broker.url, processes) if not only or r.app in only]
        return measure(args, bench, table)


def measure(args: argparse.Namespace, bench: Bench, table: list[Row]) -> int:
    load_before = os.getloadavg()
    print(f"{os.cpu_count()} CPUs | Python {sys.version.split()[0]} | load before: {load_before}")
    loads: list[float] = []
    for round_ in range(args.repeat + 1):
        if round_:
            loads.append(os.getloadavg()[0])
        for row in table:
            if row.skip:
                continue
            n = 500 if round_ == 0 else row.n
            try:
                rate, cpu, server = bench.run(row, n)
            except Exception as exc:
                row.skip = f"failed: {type(exc).__name__}: {exc}"[:200]
                continue
            if round_ == 0:
                row.n = max(300, min(args.max_n, int(rate * args.budget) // 100 * 100))
                continue
            row.rates.append(rate)
            row.cpu.append(cpu)
            row.server.append(server)
            print(f"  round {round_}: {row.label}: {rate:,.0f} tasks/s", flush=True)
    print(
        "\nM. Per machine: each library's documented default worker command, one Redis round"
        " trip per task,\n   tasks/s over the middle 80 % of the backlog"
        f" (medians of {args.repeat} rounds); load (1 min) per round: {load_line(loads)}"
    )
    head = f"  {'command':<30} {'n':>6} {'tasks/s':>8} {'min-max':>13}"
    print(f"{head} {'worker us':>9} {'redis us':>8}")
    for row in table:
        if row.skip or not row.rates:
            print(f"  {row.label:<30} skipped: {row.skip}")
            continue
        span = f"{min(row.rates):,.0f}-{max(row.rates):,.0f}"
        print(
            f"  {row.label:<30} {row.n:>6} {statistics.median(row.rates):>8,.0f} {span:>13}"
            f" {statistics.median(row.cpu) * 1e6:>9.0f} {statistics.median(row.server) * 1e6:>8.0f}"
        )
    print("  worker us: CPU of the worker's whole process tree per task (body included);")
    print("  redis us: the broker's CPU per task (INFO cpu, user + system; a server of its own)")
    for row in table:
        command = " ".join([os.path.basename(row.argv[0]), *row.argv[1:]])
        print(f"    {command}: {row.note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "cpus": os.cpu_count(),
                    "load_before": load_before,
                    "load_per_round": loads,
                    "rows": [r.as_json() for r in table],
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
