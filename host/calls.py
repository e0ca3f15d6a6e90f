"""Capability calls that run beside the guest: `call-start` starts one, `poll` collects the finished.

Each started call runs in a thread of its own (no pool shared across activations: one tenant's slow
calls never queue another's). An activation has at most MAX_CALLS_IN_FLIGHT at once; when it ends,
its calls are abandoned (a fetch shuts its socket down) and their answers dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait

__all__ = ["MAX_CALLS_IN_FLIGHT", "Answer", "StartedCalls"]

MAX_CALLS_IN_FLIGHT = 16
"""Capability calls one activation may have started and not yet collected."""

# A call's answer: the response (JSON text), or a failure's name and message.
Answer = str | tuple[str, str]


class StartedCalls:
    """The calls one activation started, by id (from 1)."""

    def __init__(self) -> None:
        self._next = 1
        self._pending: dict[int, Future[Answer]] = {}
        self.abandon = threading.Event()
        """Set when the activation ends or is cancelled: a call's work stops as soon as it looks."""

    def __len__(self) -> int:
        return len(self._pending)

    def start(self, work: Callable[[threading.Event], Answer]) -> int:
        """Run `work(abandon)` in a thread of its own; its id (the caller checks MAX_CALLS_IN_FLIGHT)."""
        future: Future[Answer] = Future()
        call_id, self._next = self._next, self._next + 1
        self._pending[call_id] = future

        def run() -> None:
            try:
                future.set_result(work(self.abandon))
            except BaseException as error:  # never lost: the poll re-raises it in the host
                future.set_exception(error)

        threading.Thread(target=run, name=f"tenantflow-call-{call_id}", daemon=True).start()
        return call_id

    def finished(self, timeout: float) -> list[tuple[int, Answer]]:
        """The calls that have finished, waiting up to `timeout` seconds for the first if none has."""
        if timeout > 0 and not any(future.done() for future in self._pending.values()):
            wait(self._pending.values(), timeout, return_when=FIRST_COMPLETED)
        done = [(call_id, future) for call_id, future in self._pending.items() if future.done()]
        for call_id, _ in done:
            del self._pending[call_id]
        return [(call_id, future.result()) for call_id, future in done]

    def close(self) -> None:
        self.abandon.set()
        self._pending.clear()
