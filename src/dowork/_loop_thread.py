"""A private event loop on a daemon thread: the home of a queue used from sync code."""

from __future__ import annotations

import asyncio
import contextlib
import threading

__all__ = ["LoopThread"]


class LoopThread:
    """Start an event loop on a daemon thread and hand it out; ``stop_soon`` ends it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=name, daemon=True)
        self._thread.start()
        ready.wait()
        ident = self._thread.ident
        assert ident is not None
        self.ident = ident

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_default_executor())
            finally:
                self.loop.close()

    def stop_soon(self) -> None:
        """Stop the loop after the callbacks already scheduled (callable from any thread)."""
        with contextlib.suppress(RuntimeError):  # already closed
            self.loop.call_soon_threadsafe(self.loop.stop)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the loop thread to exit."""
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
