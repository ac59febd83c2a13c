"""A listening socket bound early, and a small threaded WSGI server that serves on it.

``dowork worker`` binds its metrics port before it starts its queues (a taken port is an
error before any task is claimed) and serves the metrics a moment after: the HTTP and
Prometheus modules are imported then, not on the way to the first task. Connections made
meanwhile wait in the socket's backlog.
"""

from __future__ import annotations

import socket
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

__all__ = ["listen", "serve_wsgi"]


def listen(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: a free one) and listening.

    Raises ``OSError`` as binding does (a taken port, an address not of this machine).
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does
        sock.bind(address)
        sock.listen(5)  # socketserver's request_queue_size
    except BaseException:
        sock.close()
        raise
    return sock


def serve_wsgi(sock: socket.socket, app: WSGIApplication) -> tuple[Any, threading.Thread]:
    """Serve ``app`` on the listening ``sock`` in a daemon thread (a thread per request).

    The same server as ``prometheus_client.start_http_server`` (wsgiref's, threaded, with
    request logging off), on a socket bound before. Returns the server and its thread.
    """
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """No log line per request."""

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    server = Server(sock.getsockname()[:2], Quiet, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.server_address = sock.getsockname()
    host, port = sock.getsockname()[:2]
    server.server_name = socket.getfqdn(host)  # what HTTPServer.server_bind sets
    server.server_port = port
    server.setup_environ()
    server.set_app(app)
    thread = threading.Thread(target=server.serve_forever, name="dowork-metrics", daemon=True)
    thread.start()
    return server, thread
