"""A web dashboard for dowork queues (``pip install 'dowork[dashboard]'``).

``dowork dashboard --backend URL`` serves it; ``create_app(backend)`` returns the ASGI app to
mount in your own (Starlette, FastAPI, any ASGI framework). It shows every queue's tasks by
status, throughput, live workers, task lists and pages, and re-queues, cancels and purges
through the same calls as the ``dowork`` command.
"""

from __future__ import annotations

from ._app import create_app
from ._security import InsecureBind, check_bind, is_loopback

__all__ = ["InsecureBind", "check_bind", "create_app", "is_loopback"]
