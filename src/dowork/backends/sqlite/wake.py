"""Wake-ups across processes that share one SQLite file: a datagram to each idle worker.

SQLite has no way to tell another process that a row arrived, so without help a worker
finds other processes' work only by polling. Each worker process that waits for work binds
one Unix datagram socket in a directory named after the database file (under the system's
temporary directory, private to the user); a process that pushes, releases or requeues work
sends the queue's name to every socket there. The worker's loop reads it and wakes its idle
workers at once. It is best effort: a socket that cannot be made or reached (another OS, a
full buffer, a worker that died) changes nothing, and polling every ``poll_interval`` stays
the fallback. A dead worker's socket is removed by the first sender that finds it refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable

__all__ = ["WakeChannel"]

log = logging.getLogger("dowork")

#: Seconds a sender trusts its listing of the workers' sockets before listing them again; a
#: worker that starts meanwhile is found by polling until then.
_RELIST = 1.0


class WakeChannel:
    """The wake-up sockets of the workers on one database file (see the module docstring)."""

    def __init__(self, db_path: str, *, enabled: bool = True) -> None:
        self.enabled = enabled
        key = hashlib.sha256(os.path.realpath(db_path).encode()).hexdigest()[:20]
        owner = os.getuid() if hasattr(os, "getuid") else 0
        self.directory = os.path.join(tempfile.gettempdir(), f"dowork-wake-{owner}", key)
        self._fd: int | None = None  # a raw descriptor: one never closed warns nobody
        self._path: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cleanup: weakref.finalize[..., WakeChannel] | None = None
        self._peers: list[str] = []
        self._listed = -_RELIST

    @property
    def listening(self) -> bool:
        """Whether this process receives wake-ups (its socket is bound)."""
        return self._fd is not None

    def listen(self, on_wake: Callable[[set[str]], None]) -> None:
        """Receive wake-ups on the running loop, calling ``on_wake`` with the queues named.

        Called by every wait; binds once per loop. Never raises: polling covers a failure.
        """
        loop = asyncio.get_running_loop()
        if self._loop is loop or not self.enabled:
            return
        self.close()
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        except (OSError, AttributeError) as exc:  # AF_UNIX missing: Windows
            log.debug("no cross-process wake-ups in %s (%r); polling", self.directory, exc)
            self._loop = loop  # do not try again on this loop
            return
        path = os.path.join(self.directory, f"{os.getpid()}-{secrets.token_hex(4)}")
        try:
            sock.setblocking(False)
            sock.bind(path)
            fd = sock.detach()
        except OSError as exc:
            sock.close()
            log.debug("no cross-process wake-ups at %s (%r); polling", path, exc)
            self._loop = loop
            return
        self._cleanup = weakref.finalize(self, _release, fd, path)  # at exit, or if dropped
        try:
            loop.add_reader(fd, self._readable, fd, on_wake)
        except Exception:
            self._cleanup()
            raise
        self._fd, self._path, self._loop = fd, path, loop
        self._listed = -_RELIST  # a sender in this process lists the new socket too

    @staticmethod
    def _readable(fd: int, on_wake: Callable[[set[str]], None]) -> None:
        queues: set[str] = set()
        while True:
            try:
                data = os.read(fd, 1024)  # one datagram
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            queues.add(data.decode("utf-8", "replace"))
        if queues:
            on_wake(queues)

    def send(self, queues: Iterable[str]) -> None:
        """Tell the other processes' workers on this file that ``queues`` have work."""
        if not self.enabled:
            return
        peers = self._listing()
        if not peers or (len(peers) == 1 and peers[0] == self._path):
            return
        try:
            sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        except (OSError, AttributeError):
            return
        with sender:
            sender.setblocking(False)
            self._send(sender, queues, peers)

    def _send(self, sender: socket.socket, queues: Iterable[str], peers: list[str]) -> None:
        for queue in queues:
            data = queue.encode()
            for peer in peers:
                if peer == self._path:
                    continue  # this process: its own Wakeups were told already
                try:
                    sender.sendto(data, peer)
                except (ConnectionRefusedError, FileNotFoundError):  # its worker is gone
                    with contextlib.suppress(OSError):
                        os.unlink(peer)
                    self._listed = -_RELIST
                except OSError:  # a full buffer: that worker has wake-ups waiting already
                    pass

    def _listing(self) -> list[str]:
        now = time.monotonic()
        if now - self._listed >= _RELIST:
            try:
                names = os.listdir(self.directory)
            except OSError:
                names = []
            self._peers = [os.path.join(self.directory, name) for name in names]
            self._listed = now
        return self._peers

    def close(self) -> None:
        """Stop receiving: the socket is closed and removed (and its directory, if empty)."""
        fd, loop, cleanup = self._fd, self._loop, self._cleanup
        self._fd = self._path = self._loop = self._cleanup = None
        if fd is not None and loop is not None and not loop.is_closed():
            with contextlib.suppress(Exception):
                loop.remove_reader(fd)
        if cleanup is not None:
            cleanup()


def _release(fd: int, path: str) -> None:
    """Close a listening socket and remove its file (and the directory, if it is the last)."""
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(path)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(path))  # the last worker on this file leaves no trace
