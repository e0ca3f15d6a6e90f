"""`GET .../instances/{id}/watch`: an instance's changes as server-sent events (text/event-stream).

    retry: 2000                                    (once: how long a client waits to reconnect)
    id: 3:1717171717123456                         (where a reconnect resumes: Last-Event-ID or ?after=)
    event: status | entry | reset
    data: {...}                                    (one line of JSON)

On connect the instance's status, then its journal entries after the cursor; then, woken by this
process's change signals (service.changes) or every RECHECK_S, only what changed (service.watching).
A comment line every HEARTBEAT_S keeps proxies from closing a quiet stream. The stream ends after the
final status of a finished instance, when the instance is deleted, when the client goes, and at once
when the server stops (`Changes.close`, called from http.server's handle_exit).

A watch holds one of the long polls' bounded places (per tenant and per process) for as long as it
streams; beyond them the request is refused with 429 before the stream starts.

Why not sse-starlette: its EventSourceResponse notices a server stop by patching uvicorn's
`Server.handle_exit` at import into a process-wide flag (plus a task polling the signal handler), which
nothing resets; this server already wakes every watcher from its own handle_exit, so Starlette's
StreamingResponse is all that is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from tenantflow.runtime.errors import NotFound, TenantflowError
from tenantflow.runtime.http.problems import RequestTimeout, dumps
from tenantflow.runtime.service.changes import RECHECK_S, Changes, Watch
from tenantflow.runtime.service.watching import Change, Follower

__all__ = ["EVENT_STREAM", "HEARTBEAT_S", "RETRY_MS", "EventStream", "encode", "open_stream"]

log = logging.getLogger("tenantflow.api")

EVENT_STREAM = "text/event-stream"
HEARTBEAT_S = 15.0
"""A quiet stream sends a comment line this often (proxies close connections that say nothing)."""
RETRY_MS = 2000
"""Sent once as `retry:`: how long an EventSource-like client waits before it reconnects."""
HEARTBEAT = b": keep-alive\n\n"


def encode(change: Change) -> bytes:
    """One event: the data is strict JSON on one line (json escapes every newline in it)."""
    data = dumps(change.data).decode()
    return f"id: {change.cursor.token()}\nevent: {change.kind}\ndata: {data}\n\n".encode()


class EventStream(StreamingResponse):
    """A StreamingResponse that gives back its watch place (`release`) however it ends, and that answers
    HEAD with the headers alone (Starlette serves HEAD on GET routes; a stream would never end there).

    Relies on Starlette's StreamingResponse internals (1.x): under ASGI spec 2.3, which uvicorn's HTTP
    protocols declare, `__call__` runs `listen_for_disconnect` beside the stream and cancels the stream
    when it returns. Under spec 2.4 a gone client is noticed at the next send (the next heartbeat)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], Awaitable[None]]) -> None:
        super().__init__(
            content, media_type=EVENT_STREAM, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if scope.get("method") == "HEAD":
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await super().__call__(scope, receive, send)
        finally:
            await self.release()

    async def listen_for_disconnect(self, receive: Receive) -> None:
        # A GET whose body stalls (api.BodyTimeout) is a client gone: end the stream.
        with contextlib.suppress(RequestTimeout):
            await super().listen_for_disconnect(receive)


async def open_stream(
    changes: Changes, follower: Follower, heartbeat_s: float = HEARTBEAT_S, recheck_s: float = RECHECK_S
) -> Response:
    """The stream of `follower`'s instance, holding a place in `changes` while it runs: QuotaExceeded if
    there is none, NotFound if there is no such instance (both before anything is sent)."""
    stack = contextlib.AsyncExitStack()
    watch = await stack.enter_async_context(changes.watch(follower.key))
    try:
        # After the place is taken: a change from now on wakes the watch, so none is missed.
        first = await run_in_threadpool(follower.look)
    except BaseException:
        await stack.aclose()
        raise
    return EventStream(_events(follower, watch, first, heartbeat_s, recheck_s), release=stack.aclose)


async def _events(
    follower: Follower,
    watch: Watch,
    first: tuple[list[Change], bool],
    heartbeat_s: float,
    recheck_s: float,
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    yield f"retry: {RETRY_MS}\n\n".encode()
    sent_at = loop.time()
    found, more = first
    while True:
        if found:
            for change in found:
                yield encode(change)
            sent_at = loop.time()
        if follower.finished or watch.closed:
            return
        if not more:  # else the rest of a long journal is read at once
            if loop.time() - sent_at >= heartbeat_s:
                yield HEARTBEAT
                sent_at = loop.time()
            await watch.wait(max(0.0, min(recheck_s, heartbeat_s - (loop.time() - sent_at))))
            if watch.closed:
                return
        found, more = await _look(follower)


async def _look(follower: Follower) -> tuple[list[Change], bool]:
    try:
        return await run_in_threadpool(follower.look)
    except NotFound:
        follower.finished = True  # deleted meanwhile: nothing more will come
        return [], False
    except TenantflowError as error:  # e.g. the store is busy: end; the client resumes from its last id
        log.warning("a watch of %s ended: %s", follower.key, error)
        follower.finished = True
        return [], False
