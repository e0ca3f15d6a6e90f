"""The event loop of an async workflow: asyncio's, with the host as its only source of I/O.

asyncio's own loops wait on sockets through `selectors`; the sandbox has none. `HostLoop` is
`asyncio.BaseEventLoop` with a stand-in selector whose `select(timeout)` asks the host to `poll` the
calls started with `call_start` (a `fetch_async`) and resolves their futures. Its clock is the host's
monotonic clock as of the last poll, so timers (`asyncio.sleep`, `asyncio.wait_for`) fire in real time.

Note: this depends on `BaseEventLoop` internals, unchanged since Python 3.4: `_run_once` waits with
`self._selector.select(timeout)` and hands what it returns to `self._process_events`, and
`call_soon_threadsafe` calls `self._write_to_self`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from typing import Any, TypeVar

from tenantflow._errors import CapabilityError
from tenantflow.transport import Failure, Transport

T = TypeVar("T")

__all__ = ["HostLoop", "run"]


class _HostSelector:
    """What `BaseEventLoop._run_once` waits on: the host's `poll`."""

    def __init__(self, loop: HostLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        self._loop._poll(timeout)
        return []

    def close(self) -> None:
        pass


class HostLoop(asyncio.BaseEventLoop):
    """An asyncio event loop whose I/O is the host's started calls."""

    def __init__(self, transport: Transport) -> None:
        super().__init__()
        self._transport = transport
        self._selector = _HostSelector(self)
        self._calls: dict[int, asyncio.Future[str]] = {}
        self._now = transport.poll(0).now_ms / 1000

    def time(self) -> float:
        return self._now

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    async def call(self, capability: str, request: str) -> str:
        """A capability call that other tasks run beside: started now, answered by a later `poll`."""
        started = self._transport.call_start(capability, request)
        if isinstance(started, Failure):
            raise CapabilityError(f"{started.name}: {started.message}")
        future: asyncio.Future[str] = self.create_future()
        self._calls[started] = future
        return await future

    def _poll(self, timeout: float | None) -> None:
        if not self._calls:
            if timeout is None:
                raise RuntimeError(
                    "the workflow waits for something that can never happen: no fetch in flight and no timer "
                    "(an awaited future nothing resolves?)"
                )
            if timeout <= 0:
                return
        timeout_ms = None if timeout is None else max(0, math.ceil(timeout * 1000))
        polled = self._transport.poll(timeout_ms)
        self._now = polled.now_ms / 1000
        for completion in polled.done:
            future = self._calls.pop(completion.id, None)
            if future is None or future.done():  # cancelled meanwhile: the answer is dropped
                continue
            answer = completion.answer
            if isinstance(answer, Failure):
                future.set_exception(CapabilityError(f"{answer.name}: {answer.message}"))
            else:
                future.set_result(answer)


def run(loop: HostLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on `loop` to its end; tasks it left running are cancelled (as `asyncio.run` does)."""
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(coroutine)
    finally:
        cancel_all(loop)


def cancel_all(loop: HostLoop) -> None:
    """Cancel the tasks still running on `loop` and let them unwind."""
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
