"""The fault scenarios of reliability.md §3, each a function returning its ``Figures``.

The tests in this folder run them with short timings and assert the pass bar;
``bench/faults.py`` runs the same functions with bigger counts and the default 30 s lease.
Each takes a backend URL and an empty ledger directory.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.faults.harness import (
    LEASE,
    MAINTENANCE,
    RELEASE,
    ROOT,
    Cluster,
    Figures,
    check,
    counts,
    done_ids,
    read_events,
    read_submitted,
    started_by,
    submit,
    wait_all_done,
    wait_until,
)


def sigkill_mid_task(
    url: str,
    ledger: Path,
    label: str,
    *,
    tasks: int = 8,
    seconds: float = 3.0,
    lease: float = LEASE,
    maintenance: float = MAINTENANCE,
) -> Figures:
    """Row 1: SIGKILL a worker with tasks running; an idle second worker takes them over.

    The tasks (``hold``) run ``seconds`` and until the kill is made: a busy machine may take
    longer than ``seconds`` to start the second worker (see ``sigstop_worker``).
    """
    submit(url, ledger, ((n, seconds) for n in range(tasks)), name="hold")
    with Cluster(url, ledger, lease=lease, maintenance=maintenance) as cluster:
        victim = cluster.spawn()
        wait_until(lambda: started_by(ledger, victim.pid) >= min(4, tasks), 30, "tasks to start")
        rescuer = cluster.spawn()
        cluster.kill(victim)
        (ledger / RELEASE).touch()  # the tasks may end now
        wait_all_done(ledger, set(range(tasks)), 30 + 3 * lease)
        exits = cluster.stop_all()
        figures = check(ledger, "1 SIGKILL mid-task", label, cluster.faults)
    figures.extra["rescuer_exit"] = exits[rescuer.pid]
    figures.extra["lease"] = lease
    return figures


def producer_process(
    url: str, ledger: Path, start: int, count: int, batch: int
) -> subprocess.Popen[bytes]:
    """A producer process submitting ids ``start..start+count`` (one by one when batch is 0)."""
    code = (
        "import sys; from tests.faults.producer import main; "
        f"main({url!r}, {str(ledger)!r}, {start}, {count}, {batch})"
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.DEVNULL)


def kill_producers(
    url: str,
    ledger: Path,
    rounds: list[tuple[int, int]],
    rng: random.Random,
    span: tuple[float, float] = (0.05, 0.4),
) -> tuple[set[int], list[tuple[int, int, int]]]:
    """Run one producer per ``(count, batch)`` round and SIGKILL it at a random moment.

    Returns the ids attempted and the ``(start, count, batch)`` of each round.
    """
    attempted: set[int] = set()
    plan: list[tuple[int, int, int]] = []
    start = 0
    for count, batch in rounds:
        before = len(read_submitted(ledger))
        proc = producer_process(url, ledger, start, count, batch)

        def started(before: int = before, proc: subprocess.Popen[bytes] = proc) -> bool:
            return len(read_submitted(ledger)) > before or proc.poll() is not None

        wait_until(started, 30, "the producer's first submit")
        time.sleep(rng.uniform(*span))
        proc.kill()
        proc.wait(10)
        attempted.update(range(start, start + count))
        plan.append((start, count, batch))
        start += count
    return attempted, plan


def enqueue_kill(url: str, ledger: Path, label: str, *, seed: int = 2) -> Figures:
    """Row 2: SIGKILL the producer at random points of a submit loop; then drain.

    Every acknowledged submit must be stored whole (and then run); nothing of an
    unacknowledged one may be half there; batches are all or nothing.
    """
    from tests.faults.store import audit

    rng = random.Random(seed)
    rounds = [(20_000, 0), (20_000, 0), (20_000, 0), (50_000, 100), (50_000, 100)]
    attempted, plan = kill_producers(url, ledger, rounds, rng)
    acked = read_submitted(ledger)
    findings = audit(url, plan)
    stored = findings.ids
    assert acked <= stored, f"acknowledged but not stored: {sorted(acked - stored)[:10]}"
    with Cluster(url, ledger) as cluster:
        for _ in range(2):
            cluster.spawn()
        wait_all_done(ledger, stored, 120)
        cluster.stop_all()
    figures = check(ledger, "2 SIGKILL the producer", label, uncertain=attempted - acked)
    figures.extra.update(
        acknowledged=len(acked),
        stored_unacknowledged=len(stored - acked),
        orphan_records=findings.orphans,
        torn_batches=findings.torn_batches,
    )
    return figures


def enqueue_kill_then_retry(
    url: str, ledger: Path, label: str, *, count: int = 3000, seed: int = 5
) -> Figures:
    """Row 2, the client's side: SIGKILL a keyed producer, then retry the whole range.

    Every submit carries the idempotency key ``n<id>``; the retry submits every id again with
    the same key, as a client that does not know what its crashed predecessor stored. Each id
    must then run exactly once: the retry adds what was missing and nothing twice.
    """
    rng = random.Random(seed)
    code = (
        "from tests.faults.producer import main; "
        f"main({url!r}, {str(ledger)!r}, 0, {count}, 0, keyed=True)"
    )
    first = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.DEVNULL)
    wait_until(lambda: bool(read_submitted(ledger)) or first.poll() is not None, 30, "a submit")
    time.sleep(rng.uniform(0.05, 0.3))
    first.kill()
    first.wait(10)
    acked_before_kill = len(read_submitted(ledger))
    retry = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False, timeout=120)
    assert retry.returncode == 0, "the retrying producer failed"
    with Cluster(url, ledger) as cluster:
        for _ in range(2):
            cluster.spawn()
        wait_all_done(ledger, set(range(count)), 120)
        cluster.stop_all()
    figures = check(ledger, "2r keyed producer killed, retried", label)
    figures.extra.update(acked_before_kill=acked_before_kill)
    return figures


def kill_storm(
    url: str,
    ledger: Path,
    label: str,
    *,
    tasks: int = 5000,
    workers: int = 4,
    every: tuple[float, float] = (1.0, 3.0),  # reliability.md row 13: U(1, 3) s
    task_ms: tuple[float, float] = (5, 50),
    lease: float = LEASE,
    maintenance: float = MAINTENANCE,
    seed: int = 13,
    timeout: float = 240,
    prefetch: int | str | None = None,
) -> Figures:
    """Row 13: ``workers`` processes; SIGKILL a random one every U(every) s and respawn it.

    ``prefetch`` defaults to a fixed 32 (the workers' app sets ``prefetch_window=None``;
    ``"default"``: the adaptive default): a prefetched task that never started is not charged
    a crash when its worker dies (a lost lease), so prefetching many does not use up healthy
    tasks' crash budgets.
    """
    if prefetch is None:
        prefetch = 32
    rng = random.Random(seed)
    submit(url, ledger, ((n, rng.uniform(*task_ms) / 1000) for n in range(tasks)))
    began = time.monotonic()
    cluster = Cluster(url, ledger, lease=lease, maintenance=maintenance, prefetch=prefetch)
    with cluster:
        for _ in range(workers):
            cluster.spawn(ready=False)
        wanted = set(range(tasks))
        deadline = time.monotonic() + timeout
        next_kill = time.monotonic() + rng.uniform(*every)
        polls = 0
        while not wanted <= done_ids(ledger):
            assert time.monotonic() < deadline, f"storm not drained in {timeout}s"
            polls += 1
            if polls % 20 == 0 and len(wanted - done_ids(ledger)) <= counts(url).get("dead", 0):
                break  # the rest was dead-lettered: report it (as lost) rather than hang
            if time.monotonic() >= next_kill:
                victim = rng.choice(cluster.alive())
                cluster.kill(victim)
                cluster.spawn(ready=False)
                next_kill = time.monotonic() + rng.uniform(*every)
            time.sleep(0.05)
        wall = time.monotonic() - began
        exits = cluster.stop_all()
        figures = check(ledger, "13 kill storm", label, cluster.faults)
    final = counts(url)
    figures.extra.update(
        lease=lease,
        prefetch=prefetch,
        kills=len(cluster.faults),
        dead=final.get("dead", 0),
        wall_s=round(wall, 1),
        unclean_exits=unclean(cluster, exits),
    )
    return figures


def unclean(cluster: Cluster, exits: dict[int, int]) -> int:
    """Workers that were not killed by the harness yet did not end with a warm shutdown.

    A worker SIGTERMed before it installed its handlers (just respawned) ends with -SIGTERM,
    which is as clean.
    """
    killed = {pid for pid, _ in cluster.faults}
    ok = (0, -signal.SIGTERM)
    return sum(1 for pid, code in exits.items() if pid not in killed and code not in ok)


def redis_restart(
    server: object, ledger: Path, label: str, *, tasks: int = 3000, down: float = 1.0
) -> Figures:
    """Row 3: SIGKILL redis-server (appendfsync always) mid-load, restart it ``down`` s later."""
    from tests.redis_server import RedisServer

    assert isinstance(server, RedisServer)
    url = server.url
    submit(url, ledger, ((n, 0.001) for n in range(tasks)))
    with Cluster(url, ledger) as cluster:
        workers = [cluster.spawn() for _ in range(2)]
        wait_until(lambda: len(done_ids(ledger)) >= tasks // 4, 60, "a quarter of the tasks")
        server.stop(kill=True)
        killed = time.time()
        time.sleep(down)
        server.start()
        up = time.time()
        wait_all_done(ledger, set(range(tasks)), 90)
        after = [e.t for e in read_events(ledger) if e.kind == "done" and e.t > up]
        alive = sum(1 for w in workers if w.poll() is None)
        exits = cluster.stop_all()
        figures = check(ledger, "3 Redis restart (kill -9)", label)
    figures.extra.update(
        down_s=round(up - killed, 2),
        first_done_after_up_s=round(min(after) - up, 2) if after else None,
        workers_alive=alive,
        unclean_exits=unclean(cluster, exits),
    )
    return figures


def _refused(cluster: Cluster, proc: subprocess.Popen[bytes]) -> int:
    total = 0
    for line in cluster.stderr(proc).splitlines():
        if "outcome(s) refused" in line:
            total += int(line.split("queue faults: ", 1)[1].split()[0])
    return total


def sigstop_worker(
    url: str,
    ledger: Path,
    label: str,
    *,
    tasks: int = 4,
    seconds: float = 3.0,
    lease: float = LEASE,
    maintenance: float = MAINTENANCE,
) -> Figures:
    """Row 6: SIGSTOP a worker mid-task for 3 leases, then SIGCONT it.

    Another worker takes the tasks over; the paused one's completions are refused by the
    fencing token, and it counts the refusals. The tasks (``hold``) run ``seconds`` and
    until the stop is made: a busy machine may take longer than ``seconds`` to start the
    second worker, and a worker stopped after its tasks ended has nothing to be refused.
    """
    submit(url, ledger, ((n, seconds) for n in range(tasks)), name="hold")
    with Cluster(url, ledger, lease=lease, maintenance=maintenance, prefetch=0) as cluster:
        victim = cluster.spawn()
        wait_until(lambda: started_by(ledger, victim.pid) >= tasks, 30, "tasks to start")
        rescuer = cluster.spawn()
        cluster.kill(victim, signal.SIGSTOP)
        (ledger / RELEASE).touch()  # the tasks may end now: the victim's after SIGCONT
        wait_all_done(ledger, set(range(tasks)), 30 + 3 * lease)
        time.sleep(max(0.0, 3 * lease - (time.time() - cluster.faults[-1][1])))
        cluster.kill(victim, signal.SIGCONT)
        cluster.faults.pop()  # SIGCONT is not a fault
        wait_until(lambda: _refused(cluster, victim) >= tasks, 10 + 3 * lease, "the refusals")
        exits = cluster.stop_all()
        figures = check(ledger, "6 SIGSTOP a worker", label, cluster.faults)
    final = counts(url)
    figures.extra.update(
        lease=lease,
        refused=_refused(cluster, victim),
        succeeded=final.get("succeeded", 0),
        unclean_exits=unclean(cluster, exits),
    )
    assert rescuer.pid in exits
    return figures


def pause_redis(
    server: object, ledger: Path, label: str, *, tasks: int = 2000, pause: float = 2.0
) -> Figures:
    """Row 6: SIGSTOP redis-server for ``pause`` s under load, then SIGCONT: all recover."""
    from tests.redis_server import RedisServer

    assert isinstance(server, RedisServer)
    assert server.process is not None
    url = server.url
    submit(url, ledger, ((n, 0.002) for n in range(tasks)))
    with Cluster(url, ledger) as cluster:
        workers = [cluster.spawn() for _ in range(2)]
        wait_until(lambda: len(done_ids(ledger)) >= tasks // 4, 60, "a quarter of the tasks")
        server.process.send_signal(signal.SIGSTOP)
        time.sleep(pause)
        server.process.send_signal(signal.SIGCONT)
        resumed = time.time()
        wait_all_done(ledger, set(range(tasks)), 90)
        after = [e.t for e in read_events(ledger) if e.kind == "done" and e.t > resumed]
        alive = sum(1 for w in workers if w.poll() is None)
        exits = cluster.stop_all()
        figures = check(ledger, "6 SIGSTOP redis-server", label)
    figures.extra.update(
        pause_s=pause,
        first_done_after_resume_s=round(min(after) - resumed, 2) if after else None,
        workers_alive=alive,
        unclean_exits=unclean(cluster, exits),
    )
    return figures


def bad_input(url: str, ledger: Path, label: str, *, good: int = 50, each: int = 3) -> Figures:
    """Rows 9 and 10: garbage, truncated, wrong-schema payloads and unknown task names.

    Written straight into the store next to good tasks; one worker process must survive them
    all, dead-letter each with its reason, and run the good ones.
    """
    from tests.faults.store import inject_bad

    bad = inject_bad(url, each)
    submit(url, ledger, ((n, 0.0) for n in range(good)))
    with Cluster(url, ledger) as cluster:
        worker = cluster.spawn()
        wait_all_done(ledger, set(range(good)), 30)
        wait_until(lambda: counts(url).get("dead", 0) >= len(bad), 30, "the dead letters")
        time.sleep(2 * MAINTENANCE)
        alive = worker.poll() is None
        exits = cluster.stop_all()
        figures = check(ledger, "9-10 bad input", label)
    from tests.faults.store import reasons

    found = reasons(url, list(bad))
    figures.extra.update(
        injected=len(bad),
        dead_letters=sum(1 for i, why in found.items() if why == bad[i]),
        wrong_reason=sum(1 for i, why in found.items() if why != bad[i]),
        worker_crashes=0 if alive and exits[worker.pid] == 0 else 1,
        worker_pids=len({e.pid for e in read_events(ledger)}),
    )
    return figures


def warm_shutdown(url: str, ledger: Path, label: str, *, seconds: float = 1.0) -> Figures:
    """Row 15: SIGTERM a worker with tasks running and more claimed: the running ones finish.

    Exit 0; the tasks it had not started go back to the store; a second worker runs them;
    nothing lost, nothing run twice.
    """
    tasks = 12
    submit(url, ledger, ((n, seconds) for n in range(tasks)))
    with Cluster(url, ledger, lease=5.0, maintenance=1.0) as cluster:
        worker = cluster.spawn()
        wait_until(lambda: started_by(ledger, worker.pid) >= 4, 30, "tasks to start")
        signalled = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        took = time.monotonic() - signalled
        mine = [e for e in read_events(ledger) if e.pid == worker.pid]
        unfinished = {e.n for e in mine if e.kind == "started"} - {
            e.n for e in mine if e.kind == "done"
        }
        left = counts(url)
        cluster.spawn()
        wait_all_done(ledger, set(range(tasks)), 30)
        cluster.stop_all()
        figures = check(ledger, "15 warm shutdown", label)
    started = [e.n for e in read_events(ledger) if e.kind == "started"]
    figures.extra.update(
        exit=worker.returncode,
        shutdown_s=round(took, 2),
        unfinished_at_exit=len(unfinished),
        running_at_exit=left.get("running", 0),
        started_twice=len(started) - len(set(started)),
    )
    return figures


def double_signal(url: str, ledger: Path, label: str, *, seconds: float = 3.0) -> Figures:
    """Row 16: two SIGTERMs: stop at once, hand claimed tasks back, a new worker runs them."""
    tasks = 6
    submit(url, ledger, ((n, seconds) for n in range(tasks)))
    with Cluster(url, ledger, lease=30.0, maintenance=5.0) as cluster:
        worker = cluster.spawn()
        wait_until(lambda: started_by(ledger, worker.pid) >= 4, 30, "tasks to start")
        signalled = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        took = time.monotonic() - signalled
        left = counts(url)
        back = time.time()
        cluster.spawn()
        wait_all_done(ledger, set(range(tasks)), 60)
        cluster.stop_all()
        figures = check(ledger, "16 double signal, requeue", label, [(worker.pid, back)])
    figures.extra.update(
        exit=worker.returncode,
        exit_s=round(took, 2),
        running_after_exit=left.get("running", 0),
        rerun=figures.orphaned,
    )
    return figures


def poison_task(
    url: str, ledger: Path, label: str, *, healthy: int = 200, budget: int = 3
) -> Figures:
    """Row 17: a task that kills its worker (``os._exit``) next to healthy tasks.

    Two worker processes, respawned by the harness when one dies. The poison task is
    dead-lettered ``crashed_worker`` after ``budget`` deaths; the healthy ones all run.
    """
    from tests.faults.harness import producer, record_submitted
    from tests.faults.store import reasons

    queue, work = producer(url)
    crash = queue.task(name="crash")(lambda n: None)
    poison = crash.submit(-1)
    work.map([(n, 0.01) for n in range(healthy)])
    record_submitted(ledger, range(healthy))
    queue.shutdown(timeout=1)
    deaths = 0
    with Cluster(url, ledger) as cluster:
        for _ in range(2):
            cluster.spawn(ready=False)
        deadline = time.monotonic() + 60
        while not (set(range(healthy)) <= done_ids(ledger) and counts(url).get("dead", 0)):
            assert time.monotonic() < deadline, "the poison task was not quarantined"
            for proc in list(cluster.workers):
                if proc.returncode is None and proc.poll() is not None:
                    deaths += 1
                    cluster.spawn(ready=False)
            time.sleep(0.05)
        cluster.stop_all()
        figures = check(ledger, "17 poison task", label)
    final = counts(url)
    figures.extra.update(
        worker_deaths=deaths,
        poison_runs=sum(1 for e in read_events(ledger) if e.n == -1),
        poison_reason=reasons(url, [poison.id]).get(poison.id),
        healthy_dead=final.get("dead", 0) - 1,
    )
    return figures


def sqlite_crash_while_writing(
    url: str, ledger: Path, label: str, *, rounds: int = 4, seed: int = 18
) -> Figures:
    """Row 18: SIGKILL a batch producer and the workers acking at once, several times.

    After each crash the file must pass ``integrity_check`` and hold whole batches only;
    then every acknowledged task runs.
    """
    from tests.faults.store import audit

    rng = random.Random(seed)
    plan: list[tuple[int, int, int]] = []
    integrity: list[str] = []
    torn = 0
    with Cluster(url, ledger) as cluster:
        start = 0
        for _ in range(rounds):
            workers = [cluster.spawn(ready=False) for _ in range(2)]
            proc = producer_process(url, ledger, start, 100_000, 200)
            before = len(read_submitted(ledger))

            def batches_stored(before: int = before) -> bool:
                return len(read_submitted(ledger)) > before + 1000

            wait_until(batches_stored, 30, "batches")
            time.sleep(rng.uniform(0.1, 0.5))
            for p in (proc, *workers):
                p.kill()
            for p in (proc, *workers):
                p.wait(10)
            plan.append((start, 100_000, 200))
            start += 100_000
            found = audit(url, plan)
            integrity.append(found.integrity)
            torn += found.torn_batches + found.broken
        acked = read_submitted(ledger)
        cluster.spawn()
        cluster.spawn()
        stored = audit(url, plan).ids
        wait_all_done(ledger, acked, 120)
        cluster.stop_all()
        attempted = {n for s, c, _ in plan for n in range(s, s + c)}
        figures = check(
            ledger, "18 kill -9 while SQLite writes", label, uncertain=attempted - acked
        )
    figures.extra.update(
        integrity="ok" if all(i == "ok" for i in integrity) else ",".join(integrity),
        torn=torn,
        missing=len(acked - stored),
    )
    return figures
