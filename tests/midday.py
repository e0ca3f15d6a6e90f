"""A clock for tests that name today's UTC date: the real clock, moved to noon of today (UTC).

A module that records usage (by UTC day) and then asks for "today" sees one day throughout, even when
its run crosses midnight (a clock half a day off midnight has hours to spare).
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime

from tenantflow.runtime.engine.clock import SystemClock

DAY_S = 86_400


class MiddayClock(SystemClock):
    def __init__(self) -> None:
        started = time.time()
        self.offset = started // DAY_S * DAY_S + DAY_S / 2 - started

    def now(self) -> float:
        return time.time() + self.offset

    def today(self) -> date:
        return datetime.fromtimestamp(self.now(), UTC).date()
