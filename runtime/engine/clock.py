"""Time as the runtime sees it: the system clock, or a manual one for tests and local runs."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    # Whether the clock moves on by itself (a wait may be waited out in real time).
    realtime: bool

    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    realtime = True

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to."""

    realtime = False

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def set(self, when: float) -> None:
        with self._lock:
            self._now = max(self._now, when)
