"""``DurableSource``: the task source of an engine whose tasks live in a store.

Producers encode a task (registered name + codec bytes) and push it; the call returns once
the backend confirmed the write. Workers claim due records in batches under a lease, run them
on the same lanes as in-memory tasks, and settle each attempt with one ``Settlement`` written
in batches. A maintenance step renews leases (the heartbeat), requeues the leases of workers
that died (the reaper) and purges finished records past their retention. Delivery is
at-least-once: a task whose worker dies runs again after its lease expires. The handle of a
task that ran here reports its outcome only once the store has it (see ``Outbox._written``).
"""

from __future__ import annotations

from .admission import Admission
from .fetcher import Fetcher
from .firings import Firings
from .flush import Flushing
from .handles import RemoteHandles
from .outbox import Outbox
from .producer import Producer
from .starts import Starts
from .stopping import Stopping
from .upkeep import Maintenance

__all__ = ["DurableSource"]


class DurableSource(
    Producer,
    Firings,
    Fetcher,
    Admission,
    Starts,
    Outbox,
    Flushing,
    Maintenance,
    RemoteHandles,
    Stopping,
):
    """The task source of an ``Engine`` whose tasks live in a ``Backend`` (see the module doc).

    The engine runs the attempts; this source feeds it claimed tasks and writes their outcomes.
    Its parts: ``Producer``, ``Firings``, ``Fetcher``, ``Admission``, ``Starts``, ``Outbox``,
    ``Flushing``, ``Maintenance``, ``RemoteHandles`` and ``Stopping``, over one
    ``DurableState``.
    """

    durable = True
