"""Serving the dashboard app from a background thread (uvicorn), with a clean, prompt stop.

The ROS node keeps the main thread (rclpy's signal handling lives there); the web server runs its
own asyncio loop on a thread. The listening socket is bound before the thread starts, so a port in
use is an immediate, clear error and port 0 yields the real port for the printed URL.
"""

from __future__ import annotations

import errno
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

STOP_TIMEOUT_S = 5.0


class ServerError(RuntimeError):
    """The dashboard's web server could not start."""


class PortInUse(ServerError):
    """The configured port is taken (another dashboard, another service)."""


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as err:
        raise ServerError(f"dashboard host {host!r} cannot be resolved: {err}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        message = f"dashboard cannot listen on {host}:{port}: {err.strerror or err}"
        if err.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"{message} (another dashboard running? set port, or 0 for any free one)"
            ) from None
        raise ServerError(message) from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


class DashboardServer:
    """uvicorn serving `app` on a thread; `start()` returns once requests are being answered."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self._socket = _bind(host, port)
        self.port = int(self._socket.getsockname()[1])
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,  # request lines would print the page URL, token included
            timeout_graceful_shutdown=2,
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="dashboard-http", daemon=True)
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL a browser on this machine can open (without the token)."""
        host = self.host
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def page_url(self, token: str) -> str:
        return f"{self.url}?token={token}"

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as err:  # SystemExit from a failed startup included
            self._error = err

    def start(self, timeout: float = 10.0) -> DashboardServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._socket.close()
                raise ServerError(f"dashboard web server did not start: {self._error or 'timeout'}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """End the live-update streams, stop accepting, wait for the thread (bounded)."""
        closing = getattr(self.app.state, "closing", None)
        if closing is not None:
            closing.set()
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():  # a request stuck in a handler: stop waiting for it
                self._server.force_exit = True
                self._thread.join(1.0)
        self._socket.close()

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
