"""Task: one unit of work, its options, its state, and the handle to wait for its outcome.

``Task`` (``core``) is a ``TaskHandle`` (``handle``: its state, outcome and control) on a
``TaskSpec`` (``spec``: the call and its options, fixed once it is enqueued); ``status`` holds
the values they share. What other modules use is exported here.
"""

from .core import AfterCallback, Task, TaskOptions, current_task
from .core import GroupState as GroupState
from .core import TaskHost as TaskHost
from .core import _current as _current
from .handle import _deciding as _deciding
from .spec import PRIORITIES as PRIORITIES
from .spec import RETRY_FIELDS as RETRY_FIELDS
from .spec import is_async_callable as is_async_callable
from .status import UNFINISHED, Progress, TaskStatus

__all__ = [
    "UNFINISHED", "AfterCallback", "Progress", "Task", "TaskOptions", "TaskStatus", "current_task",
]  # fmt: skip
