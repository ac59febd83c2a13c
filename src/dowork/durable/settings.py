"""Settings of a durable queue: leases, batches, retention, limits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


@dataclass(frozen=True, slots=True)
class DurableSettings:
    """Lease and maintenance timing of a durable queue (seconds of the queue's clock).

    Attributes:
        lease: how long a claimed task belongs to its worker without a renewal; a task whose
            worker died runs again between ``lease`` and ``lease + maintenance`` later.
        maintenance: how often leases are renewed and expired ones requeued.
        crash_budget: crashes (leases that lapsed while the task's function ran) after which
            a task is dead-lettered (``crashed_worker``) instead of being run again; on its
            last one the task is claimed alone, so a poison task cannot use up the budget of
            the tasks claimed with it. A lease that lapsed before the function started is
            counted as lost (``Record.lost``), never as a crash.
        batch: most records claimed at once.
        prefetch: most claimed tasks a worker holds beyond ``concurrency``, waiting to start
            (leased, so no other worker takes them); more means fewer round trips per task.
        prefetch_window: a worker holds beyond its slots only as many tasks as it finishes
            in this many seconds at its recent rate (or in two claims' round trips, if
            longer), at most ``prefetch``: short tasks are claimed in batches, long ones are
            not held where an idle worker could run them. ``None``: always ``prefetch``.
        keep_result: seconds a finished record stays readable (``None``: the backend's
            default, ``0``: not stored at all).
        purge_every: how often finished records past their retention are deleted.
        max_running: most tasks of the queue running at once across *all* worker processes
            (gotasks' ``WithMaxLimit``), enforced by the backend at claim time.
        max_payload: most bytes of encoded arguments per task; a bigger call raises
            ``PayloadTooLarge`` before anything is written.
        max_result: most bytes of a task's encoded result; a bigger result fails the task
            with ``ResultTooLarge`` (saying the size and the limit) and nothing of it is
            stored.
        idempotency_window: seconds an enqueue's ``idempotency_key`` stays taken: another
            enqueue with the same key on the same queue within it returns the first task.
        key_concurrency: most tasks of one ``concurrency_key`` running at once across *all*
            worker processes (``None``: no cap; keys still take turns at claim).
    """

    lease: float = 30.0
    maintenance: float = 5.0
    crash_budget: int = 3
    batch: int = 64
    prefetch: int = 64
    prefetch_window: float | None = 0.02
    keep_result: float | None = None
    purge_every: float = 60.0
    max_running: int | None = None
    max_payload: int = 512 * 1024
    idempotency_window: float = 24 * 3600.0
    key_concurrency: int | None = None
    max_result: int = 512 * 1024

    def __post_init__(self) -> None:
        if self.lease <= 0 or self.maintenance <= 0:
            raise ValueError("lease and maintenance must be positive")
        if self.maintenance * 2 > self.lease:
            raise ValueError("maintenance must be at most half the lease, or leases lapse")
        if self.crash_budget < 1 or self.batch < 1:
            raise ValueError("crash_budget and batch must be at least 1")
        if self.prefetch < 0:
            raise ValueError("prefetch must not be negative")
        if self.prefetch_window is not None and not self.prefetch_window > 0:
            raise ValueError("prefetch_window must be positive (or None)")
        if self.max_running is not None and self.max_running < 1:
            raise ValueError("max_running must be at least 1")
        if self.key_concurrency is not None and self.key_concurrency < 1:
            raise ValueError("key_concurrency must be at least 1")
        if self.max_payload < 1 or self.idempotency_window <= 0:
            raise ValueError("max_payload and idempotency_window must be positive")
        if self.max_result < 1:
            raise ValueError("max_result must be positive")
