"""The home loop: binding a queue to its event loop, and calls onto it from other threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .._loop_thread import LoopThread
from .._threads import ThreadLane

if TYPE_CHECKING:
    pass

from .state import EngineState, T


class HomeLoop(EngineState):
    """The home loop: binding a queue to its event loop, and calls onto it from other threads."""

    def on_loop(self) -> bool:
        """Whether the caller runs on this queue's event loop thread."""
        return threading.get_ident() == self.loop_thread_id

    def ensure_loop(self) -> asyncio.AbstractEventLoop:
        """Return the home loop, starting a private loop thread if the queue has none yet."""
        loop = self.loop
        if loop is None:
            with self._bind_lock:
                if self.loop is None:
                    thread = LoopThread(f"dowork-{self.name}-loop")
                    self._own_thread = thread
                    self._bind(thread.loop, thread.ident)
                loop = self.loop
        assert loop is not None
        return loop

    def bind_running(self) -> asyncio.AbstractEventLoop:
        """Make the running loop the home loop if the queue has none yet; return the home."""
        if self.loop is None:
            with self._bind_lock:
                if self.loop is None:
                    self._bind(asyncio.get_running_loop(), threading.get_ident())
        assert self.loop is not None
        return self.loop

    def _bind(self, loop: asyncio.AbstractEventLoop, thread_id: int) -> None:
        self.loop = loop
        self.loop_thread_id = thread_id
        self._threads = ThreadLane(
            self.name, self.concurrency, loop, self._sync_done, self._thread_started,
            self._sync_drained,
        )  # fmt: skip
        if self._inbox:
            self._inbox_wake = True
            loop.call_soon_threadsafe(self._drain_inbox)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a loop-side function from any thread and return its result."""
        loop = self.loop
        if loop is None or self.on_loop() or self.closed:
            return fn(*args)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result()

    async def acall(self, fn: Callable[..., T], *args: Any) -> T:
        """``call()`` for coroutines running on any loop."""
        if self.loop is None or self.on_loop() or self.closed:
            return fn(*args)
        return await self.arun_on_home(_as_coro(fn, *args))

    def run_on_home(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the home loop and block the calling thread for its result."""
        loop = self.ensure_loop()
        if self.on_loop():
            coro.close()
            raise RuntimeError(
                "this blocking call would deadlock on the queue's own event loop; "
                "use its 'a'-prefixed coroutine twin there"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    async def arun_on_home(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await a coroutine on the home loop from any loop (binding the running one if none)."""
        loop = self.bind_running()
        if self.on_loop():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def release_thread(self) -> None:
        """Stop the private loop thread, if the queue has one (after shutdown, off the loop)."""
        thread = self._own_thread
        if thread is not None and not self.on_loop():
            thread.stop_soon()
            thread.join(5.0)

    def unbind(self) -> None:
        """Forget a home loop that is closing (after ``run()``), keeping the queued tasks."""
        self.halt()
        for worker in self._workers:
            worker.cancel()
        self._workers.clear()
        self._idle.clear()
        self._async_ready.clear()
        if self._threads is not None:
            self._threads.stop()
            self._threads = None
        self.loop = None
        self.loop_thread_id = None


async def _as_coro(fn: Callable[..., T], *args: Any) -> T:
    return fn(*args)
