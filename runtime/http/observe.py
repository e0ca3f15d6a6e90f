"""ASGI middleware that counts every request for /metrics: by method, route template and status, with latency.

The route is the matched route's path template (`/v1/workflows/{name}`), never the raw path, so tenant
names and ids do not become label values. Starlette's router sets `scope["route"]` on the scope the
middleware passed down (the same dict), which is read after the response.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tenantflow.runtime.engine.metrics import Metrics

UNMATCHED = "(no route)"


class RequestMetrics:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.metrics.request(scope["method"], route, status, time.perf_counter() - started)
