"""A TCP proxy between a client and a server, for lost-reply fault tests (threads, no asyncio).

``TcpProxy(port).start()`` listens on a free loopback port and forwards every connection to
``127.0.0.1:port``. Its ``mode`` says what happens to the server's replies from now on:
``"pass"`` forwards them, ``"drop"`` discards the next reply chunk and cuts that connection
(the request reached the server: its outcome is unknown to the client), and ``"stall"`` holds
replies back until the mode changes (the client times out). ``"refuse"`` closes new and
existing connections before forwarding anything (nothing reaches the server).
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    """A loopback TCP proxy whose reply path can drop or stall (see the module docstring)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "pass"
        self.dropped = 0  #: replies discarded by "drop"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> TcpProxy:
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()
        return self

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        self.close_connections()

    def close_connections(self) -> None:
        """Cut every connection made so far (the listener stays: see ``mode``)."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "refuse":
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if replies:
                    while self.mode == "stall" and not self._closed:
                        threading.Event().wait(0.01)
                    if self.mode == "drop":
                        self.mode = "pass"  # one reply lost, then a working proxy again
                        self.dropped += 1
                        break
                elif self.mode == "refuse":
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
