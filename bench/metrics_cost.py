"""What the ``dowork worker`` command's default metrics cost: throughput with and without them.

For each store (SQLite, Redis) and each body (a no-op, and the realistic one of
``peers.py``: one ``INCR`` on a redis-server of the bench's own), a backlog of ``--n`` tasks
is stored, then ``dowork worker app:queue --backend URL -c K`` runs it, once with its default
metrics (``PrometheusHooks`` and the ``/metrics`` server) and once with ``--no-metrics``,
alternately (on, off, on, off, ...), ``--repeat`` times each. A run's time is from the start
of the ``n/5``-th task to the end of the last, measured inside the worker (the steady state:
one-time work at start, such as serving the metrics once the first task started, is left
out); the table shows tasks/s
(median and min-max), the spread, the worker's CPU per task over the same span (every thread,
median), and the cost of the metrics: 1 - on / off of the median tasks/s.

Starts its own redis-servers (the broker and the body's) on free ports and removes them at
the end; SQLite files go to a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

BIN = Path(sys.executable).parent

APP = """
import itertools
import os
import time

import dowork

queue = dowork.Queue("mcost")
N = int(os.environ["MCOST_N"])
OUT = os.environ["MCOST_OUT"]
BODY = os.environ.get("MCOST_BODY", "")
client = None
if BODY:
    import redis

    pool = redis.BlockingConnectionPool.from_url(
        BODY, max_connections=int(os.environ["MCOST_K"]), timeout=60
    )
    client = redis.Redis(connection_pool=pool)
_count = itertools.count(1)
_first: list[float] = []
WARM = N // 5  # the clock starts at this task: one-time start-up work is not counted


@queue.task(name="work")
def work(i: int) -> None:
    if client is not None:
        client.incr("mcost")
    n = next(_count)
    if n == WARM:
        _first.extend((time.perf_counter(), time.process_time()))
    elif n == N:
        wall = time.perf_counter() - _first[0]
        cpu = time.process_time() - _first[1]
        with open(OUT + ".tmp", "w") as f:
            f.write(f"{wall!r} {cpu!r}")
        os.replace(OUT + ".tmp", OUT)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(tmp: Path, name: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    folder = tmp / name
    folder.mkdir()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("redis-server did not start")


class Bench:
    def __init__(self, tmp: Path, args: argparse.Namespace, broker: str, body: str) -> None:
        self.tmp, self.args, self.broker, self.body = tmp, args, broker, body
        (tmp / "mcapp.py").write_text(textwrap.dedent(APP))
        self.runs = 0

    def env(self, body: bool, out: Path, src: str, n: int) -> dict[str, str]:
        path = [str(self.tmp), *([src] if src else []), os.environ.get("PYTHONPATH", "")]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        return dict(
            env,
            PYTHONPATH=os.pathsep.join(path),
            MCOST_N=str(n),
            MCOST_OUT=str(out),
            MCOST_BODY=self.body if body else "",
            MCOST_K=str(self.args.concurrency),
        )

    def store(self, kind: str) -> str:
        self.runs += 1
        if kind == "redis":
            import redis

            redis.Redis.from_url(self.broker).flushdb()
            return self.broker
        return f"sqlite:///{self.tmp}/run-{self.runs}.db"

    def run(
        self, kind: str, body: bool, metrics: bool, src: str = "", n: int = 0, grind: bool = False
    ) -> tuple[float, float]:
        """One run: store the backlog, run the worker until the last task ends.

        Returns tasks/s and the worker's CPU per task in microseconds (every thread's); with
        ``grind``, under callgrind: the instructions the worker ran, start to stop, and 0.
        """
        n = n or self.args.n
        url = self.store(kind)
        out = self.tmp / f"run-{self.runs}.out"
        env = self.env(body, out, src, n)
        code = (
            "import mcapp, sys; mcapp.queue.reconfigure(backend=sys.argv[1]); "
            "mcapp.work.map((i,) for i in range(int(sys.argv[2]))); mcapp.queue.shutdown()"
        )
        subprocess.run([sys.executable, "-c", code, url, str(n)], env=env, check=True)
        argv = [str(BIN / "dowork"), "worker", "mcapp:queue", "--backend", url,
                "-c", str(self.args.concurrency)]  # fmt: skip
        if grind:
            counted = self.tmp / f"run-{self.runs}.callgrind"
            argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={counted}",
                    sys.executable, "-m", "dowork", *argv[1:]]  # fmt: skip
        if not metrics:
            argv.append("--no-metrics")
        log = open(self.tmp / "worker.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(argv, cwd=self.tmp, env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 60 + n / (2 if grind else 200)
            while not out.exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {proc.returncode}: see {log.name}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the backlog did not finish in time: see {log.name}")
                time.sleep(0.01)
            wall, cpu = map(float, out.read_text().split())
            timed = n - n // 5
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120 if grind else 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
        if grind:
            return float(_events(counted)), 0.0
        return timed / wall, cpu / timed * 1e6

    def instructions(self, kind: str, body: bool, metrics: bool, src: str) -> float:
        """Instructions per task (callgrind): the difference of a run of 5 n and one of n."""
        small: int = max(100, self.args.n // 10)
        few, _ = self.run(kind, body, metrics, src, n=small, grind=True)
        many, _ = self.run(kind, body, metrics, src, n=5 * small, grind=True)
        return float(many - few) / (4 * small)


def _events(path: Path) -> int:
    """The instruction count callgrind wrote to ``path`` (its ``summary:`` line)."""
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no summary in {path}")


def count_instructions(
    bench: Bench, args: argparse.Namespace, variants: list[tuple[str, bool]]
) -> None:
    """The instructions per task of each variant (callgrind), and what the metrics add."""
    print(f"\n  {'store / body':<16} {'code':>5} {'metrics':>8} {'instr/task':>11} {'cost':>7}")
    for kind in args.only.split(","):
        for body_kind in args.bodies.split(","):
            with_body = body_kind == "incr"
            bench.run(kind, with_body, True)  # writes the .pyc files
            per = {v: bench.instructions(kind, with_body, v[1], v[0]) for v in variants}
            for src, metrics in variants:
                cost = ""
                if metrics:
                    cost = f"{per[src, True] / per[src, False] - 1:>+7.1%}"
                print(
                    f"  {kind + ' / ' + body_kind:<16} {'base' if src else 'this':>5} "
                    f"{'on' if metrics else 'off':>8} {per[src, metrics]:>11,.0f} {cost}"
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="tasks per run (default 5000)")
    parser.add_argument("--repeat", type=int, default=7, help="runs per row (default 7)")
    parser.add_argument("--concurrency", type=int, default=8, help="worker -c (default 8)")
    parser.add_argument("--only", default="sqlite,redis", help="stores: sqlite,redis")
    parser.add_argument("--bodies", default="noop,incr", help="bodies: noop,incr")
    parser.add_argument("--target", type=float, default=0.03, help="max cost (default 0.03)")
    parser.add_argument(
        "--base", metavar="DIR", help="also run DIR/src (another checkout), alternately"
    )
    parser.add_argument(
        "--instructions", action="store_true",
        help="count the worker's instructions per task under callgrind instead of timing it "
        "(needs valgrind; n/10 and n/2 tasks per run; not disturbed by the machine's load)",
    )  # fmt: skip
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(f"Python {sys.version.split()[0]} | {os.cpu_count()} CPUs | load {load:.2f}")
    print(f"n={args.n} concurrency={args.concurrency} repeat={args.repeat}, on/off alternating")
    tmp = Path(tempfile.mkdtemp(prefix="dowork-mcost-"))
    servers = []
    try:
        broker_proc, broker = start_redis(tmp, "broker")
        body_proc, body = start_redis(tmp, "body")
        servers = [broker_proc, body_proc]
        bench = Bench(tmp, args, broker, body)
        variants = [("", False), ("", True)]
        if args.base:
            variants += [(f"{args.base}/src", False), (f"{args.base}/src", True)]
        if args.instructions:
            count_instructions(bench, args, variants)
            return 0
        print(f"\n  {'store / body':<16} {'code':>5} {'metrics':>8} {'tasks/s':>9} "
              f"{'min-max':>15} {'spread':>7} {'cpu us/task':>12} {'cost':>7}")  # fmt: skip
        for kind in args.only.split(","):
            for body_kind in args.bodies.split(","):
                with_body = body_kind == "incr"
                bench.run(kind, with_body, True)  # warm-up, untimed
                rates: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
                cpus: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
                for _ in range(args.repeat):
                    for src, metrics in variants:
                        rate, cpu = bench.run(kind, with_body, metrics, src)
                        rates[src, metrics].append(rate)
                        cpus[src, metrics].append(cpu)
                med = {v: statistics.median(r) for v, r in rates.items()}
                for src, metrics in variants:
                    r = rates[src, metrics]
                    spread = (max(r) - min(r)) / med[src, metrics]
                    shown = ""
                    if metrics:
                        cost = 1 - med[src, True] / med[src, False]
                        cpu_cost = statistics.median(cpus[src, True]) - statistics.median(
                            cpus[src, False]
                        )
                        verdict = "PASS" if cost <= args.target else "MISS"
                        shown = f"{cost:>+7.1%} ({cpu_cost:+.1f} us)  {verdict}"
                    print(
                        f"  {kind + ' / ' + body_kind:<16} {'base' if src else 'this':>5} "
                        f"{'on' if metrics else 'off':>8} {med[src, metrics]:>9,.0f} "
                        f"{min(r):>7,.0f}-{max(r):<7,.0f} {spread:>6.0%} "
                        f"{statistics.median(cpus[src, metrics]):>12.1f} {shown}"
                    )
        print(f"load after: {os.getloadavg()[0]:.2f}  (cost = 1 - on/off of the medians; "
              f"target <= {args.target:.0%})")  # fmt: skip
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
