"""Exceptions raised by dowork, and the one that tasks raise themselves.

The hierarchy::

    DoWorkError
     ├── DoNotRetry            a task raises it to end at once, without further attempts
     ├── MaxRetriesExceeded    a task's attempts ran out; chained to the last real error
     ├── TaskCancelled         the task was cancelled before it could finish
     ├── TaskTimeout           an attempt ran past its ``within`` deadline (also a TimeoutError)
     ├── TaskNotDone           the result was asked for too early (also a TimeoutError)
     ├── AlreadyComplete       a finished task was attempted again
     ├── TaskFrozen            a task's options were changed after it was enqueued
     ├── QueueShuttingDown     the queue no longer accepts tasks
     ├── QueueFull             a bounded queue has no room and the caller asked not to wait
     ├── UnknownTask           no task with that id is known to the queue (also a KeyError)
     │    └── TaskGone         a handle's stored record is gone (not kept, purged, wiped)
     ├── NotRegistered         a durable queue was given a function it has no name for
     ├── NotSerializable       arguments or a result the queue's codec cannot encode
     │    └── TooDeeplyNested  arguments nested deeper than a durable queue stores
     ├── PayloadTooLarge       encoded arguments over the durable queue's size cap
     ├── ResultTooLarge        an encoded result over the durable queue's size cap
     ├── DecodeError           stored bytes the codec cannot decode (keeps the bytes)
     ├── TaskFailed            a task run by another process failed (its error, as text)
     └── BackendError          the backend failed; also
          ├── BackendUnavailable   cannot reach it (also a ConnectionError)
          │    └── BackendBusy     a SQLite file stayed locked past the busy timeout
          ├── BackendFull          no room to write (SQLite disk full, Redis out of memory)
          ├── OutcomeUnknown       a write was sent but its reply was lost: it may be stored
          ├── OutcomeNotWritten    a queue stopped before the store had a task's outcome
          ├── EvictionPolicyError  a worker refused a Redis that may evict task records
          ├── StoreLost            a worker's SQLite file was deleted or replaced
          └── DuplicateTask        a task with that id exists already
"""

from __future__ import annotations

__all__ = [
    "GroupFailed",
    "TaskExpired",
    "AlreadyComplete",
    "DoNotRetry",
    "DoWorkError",
    "BackendBusy",
    "BackendError",
    "BackendFull",
    "BackendUnavailable",
    "DecodeError",
    "DuplicateTask",
    "EvictionPolicyError",
    "OutcomeNotWritten",
    "OutcomeUnknown",
    "MaxRetriesExceeded",
    "NotRegistered",
    "NotSerializable",
    "PayloadTooLarge",
    "ResultTooLarge",
    "TaskFailed",
    "QueueFull",
    "QueueShuttingDown",
    "TaskCancelled",
    "TaskFrozen",
    "TaskGone",
    "TaskNotDone",
    "StoreLost",
    "TaskTimeout",
    "TooDeeplyNested",
    "UnknownTask",
]


class DoWorkError(Exception):
    """Base class of every exception dowork raises, so ``except DoWorkError`` catches them all."""


class DoNotRetry(DoWorkError):
    """Raised by a task function to end the task now: no further attempt is made.

    The seed's ``ErrDoNotReattempt``. Raise it bare, with a message, or ``from`` the error that
    makes a retry pointless; the task finishes as failed with this exception as its outcome.
    """


class MaxRetriesExceeded(DoWorkError):
    """The task failed on its last permitted attempt.

    The last real error is kept as ``last_error`` and as ``__cause__``, so tracebacks show it.
    """

    def __init__(self, attempts: int, last_error: BaseException) -> None:
        super().__init__(f"task failed after {attempts} attempt(s): {last_error!r}")
        self.attempts = attempts
        self.last_error = last_error
        self.__cause__ = last_error


class TaskCancelled(DoWorkError):
    """The task was cancelled (by ``Task.cancel()`` or a shutdown that timed out)."""


class TaskTimeout(DoWorkError, TimeoutError):
    """An attempt ran longer than the task's ``within`` deadline; the attempt counts as failed."""


class TaskExpired(DoWorkError):
    """The task was not started before its ``expires`` time, so it never ran (status dead)."""


class GroupFailed(DoWorkError):
    """A group's callback did not run because members failed (``on_failure="fail"``).

    ``failures`` lists ``(member id, exception)`` for each member that did not succeed.
    """

    def __init__(self, message: str, failures: list[tuple[str, BaseException]]) -> None:
        super().__init__(message)
        self.failures = failures


class TaskNotDone(DoWorkError, TimeoutError):
    """The task's result was asked for, but the task had not finished within the timeout."""


class AlreadyComplete(DoWorkError):
    """A task that already finished was attempted again (tasks run to completion only once)."""


class TaskFrozen(DoWorkError):
    """A task's options were changed after it was enqueued (a race the seed forbids)."""


class QueueShuttingDown(DoWorkError):
    """The queue is shutting down or shut down and refuses new tasks."""


class QueueFull(DoWorkError):
    """The queue holds ``maxsize`` unfinished tasks and the caller asked not to wait for room."""


class UnknownTask(DoWorkError, KeyError):
    """No task with this id is known to the queue (never existed, or forgotten after retention)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown task"


class TaskGone(UnknownTask):
    """A waited-for task's record is no longer in the store, so its outcome cannot be known.

    It finished and was not kept (``keep_result=0``), its record was purged, or the store was
    wiped. Raised by ``result()`` (and ``exception()``) at once instead of waiting forever.
    """


class NotRegistered(DoWorkError, TypeError):
    """A durable queue was given a function that is not a registered task.

    Durable backends store a task's *name*, never code: declare the function with
    ``@queue.task`` (a module-level function) and submit that.
    """


class NotSerializable(DoWorkError, TypeError):
    """Task arguments (or a result) cannot be encoded by the queue's codec (JSON by default)."""


class TooDeeplyNested(NotSerializable):
    """Task arguments nest lists, tuples, dicts or sets deeper than a durable queue accepts.

    The limit (``dowork.codec.MAX_DEPTH``, 100 levels per argument) keeps a worker's decoder
    from running out of stack on a record it claims; nothing was stored. A stored record
    nested deeper is dead-lettered ``malformed`` when a worker claims it.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"task arguments are nested more than {limit} levels deep (lists, tuples, dicts, "
            "sets), over what a durable queue stores; flatten them"
        )
        self.limit = limit


class PayloadTooLarge(DoWorkError, ValueError):
    """A durable task's encoded arguments exceed the queue's cap; nothing was stored.

    The cap (``DurableSettings.max_payload``, 512 KiB by default) keeps one oversized call from
    filling the store or a worker's memory; pass a reference (a path, a key) instead.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"encoded task arguments are {size} bytes, over the queue's cap of {limit} bytes "
            "(DurableSettings(max_payload=...)); store large data elsewhere and pass a reference"
        )
        self.size = size
        self.limit = limit


class ResultTooLarge(DoWorkError, ValueError):
    """A durable task's encoded result exceeds the queue's cap: the task failed, nothing stored.

    The cap (``DurableSettings.max_result``, 512 KiB by default) keeps one oversized result
    from filling the store for its whole retention; store large data elsewhere and return a
    reference. Nothing checks results of in-memory queues, which encode nothing.
    """

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"encoded task result is {size} bytes, over the queue's cap of {limit} bytes "
            "(DurableSettings(max_result=...)); store large data elsewhere and return a "
            "reference"
        )
        self.size = size
        self.limit = limit


class DecodeError(DoWorkError, ValueError):
    """Stored bytes could not be decoded; ``data`` keeps them for inspection.

    ``reason`` is the dead-letter reason a worker records for such a payload:
    ``undecodable``, or ``bad_signature`` for a signed payload whose signature does not match.
    """

    def __init__(self, data: bytes, cause: BaseException, reason: str = "undecodable") -> None:
        super().__init__(f"cannot decode {len(data)} stored bytes: {cause}")
        self.data = data
        self.reason = reason
        self.__cause__ = cause


class BackendError(DoWorkError):
    """The backend (SQLite file, Redis server) reported an error."""


class BackendUnavailable(BackendError, ConnectionError):
    """The backend cannot be reached (Redis down, SQLite file locked past the busy timeout)."""


class BackendBusy(BackendUnavailable):
    """The store stayed locked by another process past the busy timeout (SQLite)."""


class BackendFull(BackendError):
    """The store refused a write for lack of room (SQLite disk full, Redis ``maxmemory``).

    Nothing of the refused write was stored; records already stored are intact.
    """


class TaskFailed(DoWorkError):
    """A durable task ended unsuccessfully in some worker process.

    The original exception object lives in that process; this one carries its description
    (``type: message``) and the final status (``failed``, ``dead`` or ``cancelled``).
    """

    def __init__(self, message: str, status: str = "failed", reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class StoreLost(BackendError):
    """The store a worker opened is gone: its SQLite file was deleted or replaced.

    The worker's connection still reads and writes the old file, which nothing else sees, so
    it stops (``dowork worker`` exits with status 1, after logging CRITICAL) for a supervisor
    to start it again on the file now at the path.
    """


class DuplicateTask(BackendError):
    """A task with the same id is already stored; nothing was written (ids are unique)."""


class OutcomeUnknown(BackendError):
    """A write was sent but its reply was lost (connection dropped or timed out after sending).

    The store may or may not have applied it. Retrying with the same task id is safe: the id
    is the idempotency key, so a task that was stored is neither stored nor run a second time.
    ``task_ids`` names the tasks of the write, and ``tasks`` holds their handles when a queue
    raised it: ``queue.enqueue(error.tasks[0])`` retries one; a ``DuplicateTask`` from that
    retry means the first write was stored.
    """

    def __init__(self, message: str, task_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.task_ids = task_ids
        self.tasks: tuple[object, ...] = ()


class OutcomeNotWritten(BackendError):
    """A task ran here, but its queue stopped before the store had its outcome.

    A handle reports the outcome of a durable task only once the store has it; this ends
    the wait instead when the queue stops first (stopped at once with the store unreachable,
    or its event loop closed), so nobody waits forever. The task runs again once its lease
    expires (unless the write went through after all), and the store keeps that run's
    outcome. Nothing of this run is lost: ``status`` (``succeeded``, ``failed``,
    ``cancelled``, ``dead``), ``value`` (its result) and ``error`` (its exception) say how
    it ended here; ``status`` is None when this run's outcome had been refused already
    (another worker took the task over).
    """

    def __init__(
        self,
        message: str,
        task_id: str,
        status: str | None = None,
        value: object = None,
        error: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.status = status
        self.value = value
        self.error = error


class EvictionPolicyError(BackendError):
    """A worker refused to work on a Redis whose ``maxmemory-policy`` may evict task records.

    Under ``allkeys-*`` Redis deletes keys of its choosing when memory is short, so stored
    tasks vanish without a trace. Set ``maxmemory-policy noeviction`` (or ``volatile-*``), or
    opt out of the check with ``allow_eviction=True`` (``?allow_eviction=1``,
    ``dowork worker --allow-eviction``).
    """
