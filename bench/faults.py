"""Fault-injection figures at full length, and a soak: lost / duplicated / recovery per backend.

The scenarios are those of ``tests/faults`` (reliability.md §3), run with bigger counts and
the default 30 s lease; ``--quick`` runs them with the CI's short timings (the figures in the
README's Guarantees section). ``--soak SECONDS`` runs a steady mixed load instead and samples
worker RSS, open files, Redis keys and SQLite pages over time. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faults import scenarios  # noqa: E402
from tests.faults.harness import (  # noqa: E402
    Cluster,
    Figures,
    check,
    counts,
    done_ids,
    producer,
    record_submitted,
    wait_until,
)
from tests.redis_server import RedisServer  # noqa: E402

ALL = ("1", "2", "2r", "3", "6", "6r", "9", "13", "15", "16", "17", "18")
NAMES = {
    "1": "SIGKILL a worker mid-task",
    "2": "SIGKILL the producer during enqueue",
    "2r": "SIGKILL a keyed producer, retry with the same keys",
    "3": "kill -9 and restart redis-server",
    "6": "SIGSTOP a worker past its lease",
    "6r": "SIGSTOP redis-server",
    "9": "garbage / unknown-name payloads (rows 9, 10)",
    "13": "kill storm",
    "15": "warm shutdown",
    "16": "double signal, requeue",
    "17": "poison task",
    "18": "kill -9 while SQLite writes",
}


class Stores:
    """Fresh stores per scenario: a SQLite file, or a new prefix on a Redis (AOF always)."""

    def __init__(self, workdir: Path, redis_url: str | None) -> None:
        self.workdir = workdir
        self.redis_url = redis_url
        self.server: RedisServer | None = None

    def redis(self) -> RedisServer:
        if self.server is None:
            self.server = RedisServer(self.workdir / "redis", persistent=True)
            self.server.start()
        return self.server

    def url(self, backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{self.workdir / uuid.uuid4().hex[:8]}.sqlite3"
        base = self.redis_url or self.redis().url
        return f"{base}?prefix=b{uuid.uuid4().hex[:8]}"

    def own_redis(self) -> RedisServer:
        """A redis-server to kill or pause (never the one given with --redis-url)."""
        server = RedisServer(self.workdir / f"redis-{uuid.uuid4().hex[:6]}", persistent=True)
        server.start()
        return server

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


def ledger_dir(workdir: Path) -> Path:
    where = workdir / f"ledger-{uuid.uuid4().hex[:8]}"
    where.mkdir()
    return where


def run_scenario(
    row: str, backend: str, stores: Stores, quick: bool, lease: float, prefetch: str | None = None
) -> Figures:
    """One row on one backend, with CI timings (quick) or full-length ones."""
    label = "SQLite" if backend == "sqlite" else "Redis AOF always"
    led = ledger_dir(stores.workdir)
    if row in ("3", "6r"):
        return _redis_scenario(row, stores, led, label, quick)
    maintenance = min(5.0, lease / 5)
    timing: dict[str, Any] = {} if quick else {"lease": lease, "maintenance": maintenance}
    url = stores.url(backend)
    full: dict[str, dict[str, Any]] = {
        "1": {"seconds": 10.0, **timing},
        "2r": {"count": 20_000},
        "13": {"tasks": 10_000, "every": (1.0, 3.0), "timeout": 1800, **timing},
        "6": {"seconds": 10.0, **timing},
        "9": {"good": 2000, "each": 100},
        "17": {"healthy": 2000},
        "18": {"rounds": 20},
    }
    extra = {} if quick else full.get(row, {})
    if quick and row in ("1", "13", "6"):
        extra = timing
    runs: dict[str, Any] = {
        "1": scenarios.sigkill_mid_task,
        "2": scenarios.enqueue_kill,
        "2r": scenarios.enqueue_kill_then_retry,
        "6": scenarios.sigstop_worker,
        "9": scenarios.bad_input,
        "13": lambda *a, **k: scenarios.kill_storm(*a, prefetch=prefetch, **k),
        "15": scenarios.warm_shutdown,
        "16": scenarios.double_signal,
        "17": scenarios.poison_task,
        "18": scenarios.sqlite_crash_while_writing,
    }
    if row not in runs:
        raise ValueError(f"unknown scenario {row}")
    figures: Figures = runs[row](url, led, label, **extra)
    return figures


def _redis_scenario(row: str, stores: Stores, led: Path, label: str, quick: bool) -> Figures:
    """Rows 3 and 6r kill or pause a redis-server of their own."""
    server = stores.own_redis()
    try:
        if row == "3":
            extra3 = {} if quick else {"tasks": 20_000, "down": 5.0}
            return scenarios.redis_restart(server, led, label, **extra3)
        extra6 = {} if quick else {"tasks": 20_000, "pause": 10.0}
        return scenarios.pause_redis(server, led, label, **extra6)
    finally:
        server.stop()


def applies(row: str, backend: str) -> bool:
    """Rows 3 and 6r are about redis-server; row 18 about the SQLite file."""
    if row in ("3", "6r"):
        return backend == "redis"
    if row == "18":
        return backend == "sqlite"
    return True


def verdict(f: Figures) -> str:
    """PASS/MISS against the pass bar: lost 0, recovery p99 <= 2 x lease, no bad-input crash."""
    misses = []
    if f.lost:
        misses.append("lost")
    lease = f.extra.get("lease")
    if lease and f.recovery and f.p99 > 2 * lease:
        misses.append("p99")
    if f.extra.get("worker_crashes"):
        misses.append("crash")
    if f.extra.get("healthy_dead") or f.extra.get("dead"):
        misses.append("dead")
    return "PASS" if not misses else "MISS " + ",".join(misses)


def fmt(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def notes(f: Figures) -> str:
    """The scenario-specific figures, in words."""
    e = f.extra
    row = f.scenario.split()[0]
    if row == "6":
        if "refused" in e:
            return f"{e['refused']} stale completions refused and counted"
        return f"{e['pause_s']} s pause; no worker exited"
    words = _NOTES.get(row)
    return "" if words is None else words(f, e)


_NOTES: dict[str, Any] = {
    "1": lambda f, e: f"{f.orphaned} running when killed; an idle worker took them over",
    "2": lambda f, e: (
        f"every acknowledged task stored whole; {e['orphan_records']} orphan records, "
        f"{e['torn_batches']} torn batches; {e['stored_unacknowledged']} stored but "
        "unacknowledged (calls cut short)"
    ),
    "2r": lambda f, e: (
        f"{e['acked_before_kill']} acknowledged before the kill; the retry of all "
        f"{f.submitted} stored only what was missing (idempotency keys)"
    ),
    "3": lambda f, e: (
        f"down {e['down_s']} s; workers stayed up; first task done "
        f"{e['first_done_after_up_s']} s after Redis was back"
    ),
    "9-10": lambda f, e: (
        f"{e['dead_letters']}/{e['injected']} dead-lettered with their reason; "
        f"worker crashes {e['worker_crashes']}"
    ),
    "13": lambda f, e: f"{e['kills']} kills, prefetch {e['prefetch']}; {e['dead']} dead-lettered",
    "15": lambda f, e: f"exit {e['exit']} after {e['shutdown_s']} s; none started twice",
    "16": lambda f, e: (
        f"exit {e['exit']} in {e['exit_s']} s; {e['rerun']} handed back and run by a "
        "new worker (recovery includes its start)"
    ),
    "17": lambda f, e: (
        f"{e['poison_reason']} after {e['worker_deaths']} worker deaths; "
        f"{e['healthy_dead']} healthy tasks dead"
    ),
    "18": lambda f, e: f"integrity_check {e['integrity']}; {e['torn']} torn batches",
}


def table(rows: list[Figures]) -> str:
    """The figures table (markdown), the same columns as the README's."""
    out = [
        "| # | scenario | backend | submitted | lost | duplicates | recovery p50 / p99 s "
        "| lease s | result | notes |",
        "|---|---|---|---:|---:|---:|---|---:|---|---|",
    ]
    for f in rows:
        number, _, name = f.scenario.partition(" ")
        rec = "-" if not f.recovery else f"{fmt(f.p50)} / {fmt(f.p99)}"
        lease = f.extra.get("lease")
        out.append(
            f"| {number} | {name} | {f.backend} | {f.submitted} | {f.lost} | {f.duplicates} "
            f"| {rec} | {lease if lease else '-'} | {verdict(f)} | {notes(f)} |"
        )
    return "\n".join(out)


def soak_table(rows: list[Figures]) -> str:
    """Resource figures of soak runs: from the end of the warm-up to the end of the run."""
    out = [
        "| backend | seconds | tasks/s | RSS MiB (2 workers) | RSS slope MiB/h | open files "
        "| keys / pages | failed as planned |",
        "|---|---:|---:|---|---:|---|---|---|",
    ]
    for f in rows:
        e = f.extra
        size = e.get("keys") or e.get("pages")
        unit = "keys" if "keys" in e else "pages"
        planned = "yes" if e["failed"] == e["expected_failed"] else f"{e['failed']}"
        out.append(
            f"| {f.backend} | {e['seconds']:g} | {e['rate']:g} | {e['rss_mib']} "
            f"| {e['rss_slope_mib_per_h']} | {e['open_files']} | {size} {unit} | {planned} |"
        )
    return "\n".join(out)


# -- soak --------------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def store_size(url: str) -> tuple[str, int]:
    """Redis keys under the prefix, or SQLite pages."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("sqlite:///", 1)[1], timeout=30)
        try:
            return "pages", int(conn.execute("PRAGMA page_count").fetchone()[0])
        finally:
            conn.close()
    import redis

    base, _, query = url.partition("?")
    prefix = query.partition("prefix=")[2] or "dowork"
    client = redis.Redis.from_url(base)
    try:
        return "keys", sum(1 for _ in client.scan_iter(match=f"{prefix}:*", count=1000))
    finally:
        client.close()


def soak(
    backend: str, stores: Stores, seconds: float, rate: float, keep: float, every: float
) -> tuple[Figures, list[dict[str, float]]]:
    """A steady mixed load (success, retry then success, failure) at ``rate`` tasks/s."""
    url = stores.url(backend)
    label = "SQLite" if backend == "sqlite" else "Redis AOF always"
    led = ledger_dir(stores.workdir)
    cluster = Cluster(url, led, lease=30.0, maintenance=5.0)
    cluster.env["DOWORK_FAULTS_KEEP"] = str(keep)
    samples: list[dict[str, float]] = []
    stop = threading.Event()
    failing: list[int] = []

    def produce() -> None:
        queue, _ = producer(url)
        mixed = queue.task(name="mixed")(lambda n, s, m: n)
        rng = random.Random(14)
        n = 0
        began = time.monotonic()
        while not stop.is_set():
            due = int((time.monotonic() - began) * rate)
            batch = []
            while n < due:
                mode = rng.choices((0, 1, 2), (90, 7, 3))[0]
                batch.append((n, rng.uniform(0.001, 0.01), mode))
                n += 1
            if batch:
                mixed.map(batch)
                record_submitted(led, [b[0] for b in batch if b[2] != 2])
                failing.extend(b[0] for b in batch if b[2] == 2)
            time.sleep(0.05)
        queue.shutdown(timeout=5)

    with cluster:
        workers = [cluster.spawn() for _ in range(2)]
        thread = threading.Thread(target=produce, daemon=True)
        began = time.monotonic()
        thread.start()
        while time.monotonic() - began < seconds:
            time.sleep(min(every, max(0.0, seconds - (time.monotonic() - began))))
            kind, size = store_size(url)
            samples.append(
                {
                    "t": round(time.monotonic() - began, 1),
                    "rss_mib": round(sum(rss_mib(w.pid) for w in workers), 1),
                    "open_files": sum(open_files(w.pid) for w in workers),
                    kind: size,
                    "done": len(done_ids(led)),
                }
            )
            print("  soak", json.dumps(samples[-1]), flush=True)
        stop.set()
        thread.join(30)
        wanted = set(read_ids(led))
        wait_until(lambda: wanted <= done_ids(led), 120, "the soak backlog to drain")
        cluster.stop_all()
    figures = check(led, "14 soak", label)
    final = counts(url)
    warm = [s for s in samples if s["t"] >= min(300.0, seconds / 3)] or samples
    slope = 0.0
    if len(warm) >= 2 and warm[-1]["t"] > warm[0]["t"]:
        hours = (warm[-1]["t"] - warm[0]["t"]) / 3600
        slope = (warm[-1]["rss_mib"] - warm[0]["rss_mib"]) / hours
    kind = "pages" if backend == "sqlite" else "keys"
    figures.extra.update(
        lease=30.0,
        seconds=seconds,
        rate=rate,
        failed=final.get("failed", 0),
        expected_failed=len(failing),
        rss_mib=f"{warm[0]['rss_mib']}->{samples[-1]['rss_mib']}",
        rss_slope_mib_per_h=round(slope, 1),
        open_files=f"{warm[0]['open_files']}->{samples[-1]['open_files']}",
        **{kind: f"{warm[0][kind]}->{samples[-1][kind]}"},
    )
    return figures, samples


def read_ids(led: Path) -> list[int]:
    path = led / "submitted.log"
    return [int(line.split()[1]) for line in path.read_text().splitlines()] if path.exists() else []


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI timings: 1 s lease, small counts")
    parser.add_argument("--lease", type=float, default=30.0, help="lease of the full runs (s)")
    parser.add_argument("--backends", default="sqlite,redis", help="comma-separated")
    parser.add_argument("--rows", default=",".join(ALL), help=f"comma-separated of {ALL}")
    parser.add_argument(
        "--prefetch",
        default=None,
        help="kill storm workers' fixed prefetch, or 'default' (adaptive; default: 32)",
    )
    parser.add_argument("--redis-url", help="use this Redis (AOF always!) instead of starting one")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON lines")
    parser.add_argument("--soak", type=float, nargs="?", const=3600.0, metavar="SECONDS",
                        help="run the soak instead (default 3600 s per backend)")  # fmt: skip
    parser.add_argument("--rate", type=float, default=150.0, help="soak tasks/s")
    parser.add_argument("--keep", type=float, default=60.0, help="soak: keep finished (s)")
    parser.add_argument("--every", type=float, default=0.0, help="soak: sample period (s)")
    args = parser.parse_args(argv)
    if shutil.which("redis-server") is None and "redis" in args.backends and not args.redis_url:
        parser.error("redis-server is not installed (or pass --backends sqlite)")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="dowork-faults-"))
    stores = Stores(workdir, args.redis_url)
    results: list[Figures] = []
    try:
        if args.soak is not None:
            every = args.every or max(5.0, args.soak / 60)
            for backend in backends:
                print(f"soak on {backend} for {args.soak:g}s at {args.rate:g} tasks/s", flush=True)
                figures, _ = soak(backend, stores, args.soak, args.rate, args.keep, every)
                print(figures.line(), flush=True)
                results.append(figures)
        else:
            lease = 1.0 if args.quick else args.lease
            for row in [r.strip() for r in args.rows.split(",") if r.strip()]:
                for backend in backends:
                    if not applies(row, backend):
                        continue
                    print(f"row {row} ({NAMES[row]}) on {backend} ...", flush=True)
                    started = time.monotonic()
                    figures = run_scenario(row, backend, stores, args.quick, lease, args.prefetch)
                    took = time.monotonic() - started
                    print(f"  {figures.line()} ({took:.0f}s)", flush=True)
                    results.append(figures)
    finally:
        stores.close()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    print()
    print(table(results))
    soaks = [f for f in results if f.scenario == "14 soak"]
    if soaks:
        print()
        print(soak_table(soaks))
    if args.json:
        with open(args.json, "w") as out:
            for f in results:
                out.write(json.dumps(f.as_dict()) + "\n")
    return 0 if all(verdict(f).startswith("PASS") for f in results) else 1


if __name__ == "__main__":
    sys.exit(main())
