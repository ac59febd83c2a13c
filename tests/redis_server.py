"""A real ``redis-server`` on a free loopback port, for tests (no persistence, no fixed port).

Plain helper, no pytest: ``RedisServer(tmp_dir).start()`` runs one, ``stop()`` ends it by pid
and ``start()`` brings it back on the same port, so fault tests can restart Redis under a
running client.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

INSTALL_HINT = "redis-server is not installed: apt-get install redis-server"


def free_port() -> int:
    """A port nobody listens on right now (bind to 127.0.0.1:0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ping(port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis answers PING on ``127.0.0.1:port`` (raw RESP, no client library)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process owned by the tests."""

    def __init__(
        self, directory: Path, binary: str | None = None, *, persistent: bool = False
    ) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise FileNotFoundError(INSTALL_HINT)
        self.binary = found
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        #: With persistence, every write is in the append-only file before it is
        #: acknowledged (appendfsync always), so a restart loses nothing.
        self.persistent = persistent

    @property
    def url(self) -> str:
        """The URL clients connect to (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (again, on the same port) and wait until it answers PING."""
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        if self.persistent:
            argv += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.directory)]
        argv += ["--logfile", str(self.directory / "redis.log")]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not ping(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}: {self.log()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING in {timeout}s: {self.log()}")
            time.sleep(0.02)

    def stop(self, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the server by its pid (SIGTERM, or SIGKILL with ``kill``) and wait for it."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout)
        deadline = time.monotonic() + timeout
        while ping(self.port, timeout=0.1) and time.monotonic() < deadline:
            time.sleep(0.02)

    def restart(self) -> None:
        """Stop and start again on the same port (every key is lost: nothing is persisted)."""
        self.stop()
        self.start()

    def log(self) -> str:
        """The tail of the server's log file, for error messages."""
        with contextlib.suppress(OSError):
            return (self.directory / "redis.log").read_text()[-2000:]
        return ""
