"""Redis's ``maxmemory-policy``: reading it from ``INFO memory``, and judging it.

``noeviction`` is safe. Under ``volatile-*`` Redis evicts only keys with a TTL: never a task
record, but idempotency keys and rate-limit windows. ``allkeys-*`` (or a policy this code
does not know) may evict any task, so a worker refuses it unless told to allow eviction
(``allow_eviction=True``, or ``?allow_eviction=1`` in the URL: see ``urls``).
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["RECHECK", "RECHECK_REFUSED", "judge", "policy_of", "problem"]

log = logging.getLogger("dowork")

#: Seconds a worker trusts the ``maxmemory-policy`` it read (``CONFIG SET`` can change it at
#: run time): once a minute while it is safe, every few seconds while the worker refuses.
RECHECK = 60.0
RECHECK_REFUSED = 10.0


def policy_of(info: Any) -> str | None:
    """The ``maxmemory_policy`` of a raw ``INFO memory`` answer; None if INFO was refused."""
    if isinstance(info, Exception):
        return None
    if isinstance(info, dict):  # a client's parsed answer
        return str(info.get("maxmemory_policy", "noeviction"))
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "maxmemory_policy":
            return value.strip()
    return "noeviction"  # a server too old to say: it has no eviction policy to speak of


def problem(policy: str | None) -> tuple[str, bool] | None:
    """What is wrong with ``policy`` (None: nothing), and whether task records may be evicted.

    ``policy`` None means ``INFO memory`` was refused, so the policy cannot be known.
    """
    if policy == "noeviction":
        return None
    if policy is None:
        return (
            "cannot read maxmemory-policy (INFO memory refused); make sure it is noeviction, "
            "or Redis may evict task records"
        ), False
    if policy.startswith("volatile-"):
        return (
            f"maxmemory-policy is {policy}: task records are never evicted (they have no TTL), "
            "but idempotency keys and rate-limit windows may be; use noeviction to keep those "
            "guarantees"
        ), False
    return (
        f"maxmemory-policy is {policy}: Redis may evict task records, so stored tasks could "
        "vanish without a trace; set maxmemory-policy noeviction"
    ), True


def judge(
    policy: str | None, worker: bool, allow_eviction: bool, *, who: str, said: set[Any]
) -> str | None:
    """Log what ``policy`` means for ``who`` (a backend); why a worker must refuse, if so.

    ``noeviction`` is safe; ``volatile-*`` is allowed with a warning; ``allkeys-*`` (or a
    policy this code does not know) may evict any task: a worker refuses it unless
    ``allow_eviction``, a producer or the CLI warns. Each warning is logged once per backend
    (``said`` holds the ones logged), a worker's refusal is CRITICAL every time.
    """
    found = problem(policy)
    if found is None:
        return None
    message, evicts = found
    if not evicts or not worker or allow_eviction:
        if (policy, worker) not in said:
            said.add((policy, worker))
            log.warning("%s: %s", who, message)
        return None
    refusal = (
        f"{who}: {message} (this worker refuses to claim tasks until then; "
        "allow_eviction=True, ?allow_eviction=1 or dowork worker --allow-eviction overrides)"
    )
    log.critical("%s", refusal)
    return refusal
