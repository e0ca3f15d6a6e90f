"""`tenantflow serve`: the API, the dashboard and the workers in one process, with a graceful SIGTERM.

serve: bind the port first (fail fast if taken), start the workers, serve the
API with uvicorn. On SIGTERM or SIGINT uvicorn stops accepting connections and
finishes the requests in flight; then the workers stop claiming, the running
activations reach their next step or, after a short grace period, are cancelled and
handed back (their journal is already durable), and the process exits 0. Nothing is
lost: what was running resumes on the next start.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn
from starlette.types import ASGIApp
from tenantflow.runtime.contract import allow_deep_json
from tenantflow.runtime.engine.parking import DEFAULT_MAX_PARK_S, DEFAULT_PARK_MEMORY_MB
from tenantflow.runtime.http.api import create_app
from tenantflow.runtime.service import Service
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("tenantflow.server")

HANDLED = (signal.SIGTERM, signal.SIGINT)

# uvicorn's connection limits (the request body's own deadline is api.BODY_TIMEOUT_S).
KEEP_ALIVE_S = 5
"""An idle keep-alive connection is closed after this many seconds."""
MAX_CONNECTIONS = 1000
"""Connections or requests in progress beyond which uvicorn answers 503 to new requests."""
MAX_HEADER_BYTES = 16 << 10
"""A request line plus headers larger than this is refused (uvicorn's h11 incomplete-event cap)."""
HEADER_TIMEOUT_S = 10.0
"""A connection whose next request's headers are not complete this long after it opened (or after
its last response) is closed: uvicorn itself waits forever for headers that trickle in."""


class HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers (see HEADER_TIMEOUT_S).

    Relies on uvicorn 0.5x internals: `handle_events` runs after each read and sets `self.cycle`
    to a new RequestResponseCycle once a request's headers are parsed; `on_response_complete`
    runs when the response is sent.
    """

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not self._armed_for:
            self._disarm()  # a request's headers are in: the body has its own deadline (api.BodyTimeout)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._armed_for = self.cycle
        self._header_timer: asyncio.TimerHandle | None = self.loop.call_later(self.header_timeout_s, self._expire)

    def _disarm(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        self._header_timer = None

    def _expire(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def uvicorn_config(app: ASGIApp, log_level: str = "info", header_timeout_s: float = HEADER_TIMEOUT_S) -> uvicorn.Config:
    """uvicorn's settings for `tenantflow serve`, with the connection limits above."""
    protocol = type("HeaderDeadline", (HeaderDeadline,), {"header_timeout_s": header_timeout_s})
    return uvicorn.Config(
        app,
        log_level=log_level,
        # uvicorn's loggers propagate to the one handler `logs.configure` installs: one format for all.
        log_config=None,
        lifespan="off",
        timeout_graceful_shutdown=10,
        server_header=False,
        http=protocol,
        timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=MAX_CONNECTIONS,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )


class Server(uvicorn.Server):
    """uvicorn's server, which wakes the long polls when it is told to stop: they answer at once with what
    they have, instead of holding the graceful shutdown (and being cut at its end).

    Note: overrides `uvicorn.Server.handle_exit`, the signal handler uvicorn installs (uvicorn 0.30+)."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.service.changes.close()
        super().handle_exit(sig, frame)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (IPv4 or IPv6); OSError if it is taken.

    The protocol is named (IPPROTO_TCP, not the default 0): asyncio turns Nagle's algorithm off
    (TCP_NODELAY) only on connections whose socket says so (`asyncio.base_events._set_nodelay`), and
    uvicorn writes a response's head and body separately; with Nagle on, a keep-alive client waited
    for its delayed ACK (~40 ms) on every response."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _install(handler: Callable[[int, FrameType | None], None]) -> None:
    for sig in HANDLED:
        signal.signal(sig, handler)


def serve(
    db: str,
    host: str = "127.0.0.1",
    port: int = 8787,
    workers: int = 4,
    log_level: str = "info",
    on_ready: Callable[[str], None] | None = None,
    metrics_token: str | None = None,
    park_memory_mb: int = DEFAULT_PARK_MEMORY_MB,
    max_park_s: float = DEFAULT_MAX_PARK_S,
    tenant_cap: int | None = None,
) -> None:
    # uvicorn re-raises the signal it shut down for once it is done, with the handler that was
    # installed before it started: make that one only take note, so the workers get their orderly
    # stop below (and a signal that comes before uvicorn runs is not lost).
    stop = threading.Event()
    _install(lambda _sig, _frame: stop.set())
    allow_deep_json()  # stored results nested ~1000 deep must read back
    sock = bind(host, port)
    try:
        service = Service.open(
            db, workers=workers, park_memory_mb=park_memory_mb, max_park_s=max_park_s, tenant_cap=tenant_cap
        )
    except BaseException:
        sock.close()
        raise
    try:
        server = Server(uvicorn_config(create_app(service, metrics_token=metrics_token), log_level), service)
        service.start()
        actual = sock.getsockname()[1]
        url = f"http://{'[' + host + ']' if ':' in host else host}:{actual}"
        log.info("tenantflow serving on %s (database %s, %d workers)", url, db, workers)
        if on_ready is not None:
            on_ready(url)
        if not stop.is_set():
            server.run(sockets=[sock])
    finally:
        log.info("stopping workers; running activations reach their next step or are handed back")
        service.close()
        sock.close()
        log.info("stopped")
