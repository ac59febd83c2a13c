"""Worker start-up as a user sees it: from launching the worker command to the first task's start.

Before each run one task is submitted to a fresh store; then the worker command is launched
(``dowork worker app:queue --backend URL``, and ``huey_consumer app.huey`` for comparison) and
the clock runs until the task's body starts (the body writes ``time.time()`` to a file). The
worker is then stopped with SIGTERM. Rows run alternately (A B C A B C ...), ``--repeat`` times;
the table shows the median and the spread. A ``python -c pass`` row gives the interpreter's
own floor, and ``python -c "import dowork.cli"`` the cost of importing the command.

Needs ``redis-server`` for the Redis rows (one is started on a free port and removed at the end)
and ``huey`` (``pip install -e '.[bench]'``) for Huey's rows.
"""

from __future__ import annotations

import argparse
import importlib.util
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent

DOWORK_APP = """
import os
import time

import dowork

queue = dowork.Queue("startup")


@queue.task(name="mark")
def mark(path: str) -> None:
    started = time.time()
    with open(path + ".tmp", "w") as f:
        f.write(repr(started))
    os.replace(path + ".tmp", path)
"""

HUEY_APP = """
import os
import time

from huey import RedisHuey, SqliteHuey

url = os.environ["STARTUP_STORE"]
if url.startswith("redis"):
    huey = RedisHuey("startup", url=url)
else:
    huey = SqliteHuey("startup", filename=url.removeprefix("sqlite:///"))


@huey.task()
def mark(path: str) -> None:
    started = time.time()
    with open(path + ".tmp", "w") as f:
        f.write(repr(started))
    os.replace(path + ".tmp", path)
"""


@dataclass
class Row:
    name: str
    run: Callable[[int], float]  #: one timed run (its index) -> seconds
    times: list[float] = field(default_factory=list)
    skip: str | None = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bench:
    def __init__(self, tmp: Path, redis_url: str | None, timeout: float) -> None:
        self.tmp = tmp
        self.redis_url = redis_url
        self.timeout = timeout
        (tmp / "dwapp.py").write_text(textwrap.dedent(DOWORK_APP))
        (tmp / "hueyapp.py").write_text(textwrap.dedent(HUEY_APP))
        path = os.pathsep.join([str(tmp), os.environ.get("PYTHONPATH", "")])
        # As users run it: with the .pyc files written (the warm-up run writes them).
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env = dict(env, PYTHONPATH=path)

    def store(self, kind: str, index: int, system: str) -> str:
        if kind == "redis":
            assert self.redis_url is not None
            import redis

            redis.Redis.from_url(self.redis_url).flushdb()
            return self.redis_url
        return f"sqlite:///{self.tmp}/{system}-{index}.db"

    def submit_dowork(self, url: str, path: str, env: dict[str, str]) -> None:
        code = (
            "import dwapp, sys; dwapp.queue.reconfigure(backend=sys.argv[1]); "
            "dwapp.mark.submit(sys.argv[2]); dwapp.queue.shutdown()"
        )
        subprocess.run([sys.executable, "-c", code, url, path], env=env, check=True)

    def submit_huey(self, url: str, path: str) -> None:
        env = dict(self.env, STARTUP_STORE=url)
        code = "import hueyapp, sys; hueyapp.mark(sys.argv[1])"
        subprocess.run([sys.executable, "-c", code, path], env=env, check=True)

    def launch(self, argv: list[str], path: Path, env: dict[str, str]) -> float:
        """Start ``argv``, wait for ``path`` (written by the task body), stop; return seconds."""
        log = open(self.tmp / "worker.log", "ab")  # noqa: SIM115
        began = time.time()
        proc = subprocess.Popen(
            argv, cwd=self.tmp, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + self.timeout
            while not path.exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"{argv[0]} exited with {proc.returncode}: see {log.name}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no task start within {self.timeout} s: see {log.name}")
                time.sleep(0.001)
            return float(path.read_text()) - began
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()

    def dowork(self, kind: str, src: str = "") -> Callable[[int], float]:
        env = dict(self.env)
        if src:  # another checkout's dowork
            env["PYTHONPATH"] = os.pathsep.join([src, env["PYTHONPATH"]])
        tag = "base" if src else "dowork"

        def run(index: int) -> float:
            url = self.store(kind, index, tag)
            path = self.tmp / f"{tag}-{kind}-{index}.mark"
            self.submit_dowork(url, str(path), env)
            argv = [str(BIN / "dowork"), "worker", "dwapp:queue", "--backend", url]
            return self.launch(argv, path, env)

        return run

    def huey(self, kind: str) -> Callable[[int], float]:
        def run(index: int) -> float:
            url = self.store(kind, index, "huey")
            path = self.tmp / f"huey-{kind}-{index}.mark"
            self.submit_huey(url, str(path))
            argv = [str(BIN / "huey_consumer"), "hueyapp.huey"]
            return self.launch(argv, path, dict(self.env, STARTUP_STORE=url))

        return run

    def python(self, code: str) -> Callable[[int], float]:
        def run(index: int) -> float:
            began = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=self.env, check=True)
            return time.perf_counter() - began

        return run


def start_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp)],
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


def rows_for(bench: Bench, only: set[str], huey: bool, base: str | None) -> list[Row]:
    rows = [
        Row("python -c pass", bench.python("pass")),
        Row("python -c 'import dowork.cli'", bench.python("import dowork.cli")),
    ]
    for kind in ("sqlite", "redis"):
        if kind not in only:
            continue
        skip = None if kind == "sqlite" or bench.redis_url else "redis-server not found"
        rows.append(Row(f"dowork worker ({kind})", bench.dowork(kind), skip=skip))
        if base:
            rows.append(Row(f"  base: dowork worker ({kind})", bench.dowork(kind, base), skip=skip))
        if huey:
            rows.append(Row(f"huey_consumer ({kind})", bench.huey(kind), skip=skip))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help="timed runs per row (default 9)")
    parser.add_argument("--only", default="sqlite,redis", help="stores: sqlite,redis")
    parser.add_argument("--no-huey", action="store_true", help="skip Huey's rows")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--target", type=float, default=0.25, help="seconds (default 0.25)")
    parser.add_argument("--base", metavar="DIR", help="also run DIR/src (another checkout)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    has_huey = not args.no_huey and importlib.util.find_spec("huey") is not None
    load = os.getloadavg()
    print(f"Python {sys.version.split()[0]} | {os.cpu_count()} CPUs | load {load[0]:.2f}")
    tmp = Path(tempfile.mkdtemp(prefix="dowork-startup-"))
    redis_proc = None
    try:
        redis_url = None
        if "redis" in only and shutil.which("redis-server"):
            redis_proc, redis_url = start_redis(tmp)
        bench = Bench(tmp, redis_url, args.timeout)
        rows = rows_for(bench, only, has_huey, args.base and f"{args.base}/src")
        for row in rows:  # one untimed warm-up (page cache, .pyc files)
            if row.skip is None:
                row.run(-1)
        for index in range(args.repeat):
            for row in rows:
                if row.skip is None:
                    row.times.append(row.run(index))
        end = os.getloadavg()[0]
        print(f"load after: {end:.2f}; {args.repeat} runs per row, alternating\n")
        print(f"  {'row':<34} {'median s':>9} {'min s':>7} {'max s':>7} {'spread':>7}")
        for row in rows:
            if row.skip:
                print(f"  {row.name:<34} skipped: {row.skip}")
                continue
            med = statistics.median(row.times)
            spread = (max(row.times) - min(row.times)) / med
            mark = ""
            if row.name.startswith("dowork worker"):
                mark = "  PASS" if med <= args.target else "  MISS"
            print(
                f"  {row.name:<34} {med:>9.3f} {min(row.times):>7.3f} {max(row.times):>7.3f}"
                f" {spread:>6.0%}{mark}"
            )
        print(f"\n(target: dowork worker to the first task's start <= {args.target} s)")
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
