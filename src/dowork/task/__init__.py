"""Task: one unit of work, its options, its state, and the handle to wait for its outcome.

What other modules use is exported here.
"""

from .core import PRIORITIES as PRIORITIES
from .core import RETRY_FIELDS as RETRY_FIELDS
from .core import AfterCallback, Progress, Task, TaskOptions, TaskStatus, current_task
from .core import GroupState as GroupState
from .core import TaskHost as TaskHost
from .core import _current as _current
from .core import _deciding as _deciding
from .core import is_async_callable as is_async_callable

__all__ = ["AfterCallback", "Progress", "Task", "TaskOptions", "TaskStatus", "current_task"]
