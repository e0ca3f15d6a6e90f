"""Metering: what a tenant's workflows used, per workflow and UTC day, and the days a report covers.

The counters are kept by the store in the transactions of the writes they count (see store/usage.py); this
module holds their records and the rules of a report's range, shared by the store, the service and the CLI.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields
from datetime import date, timedelta
from typing import Any, Literal

from tenantflow.runtime.errors import InvalidInput

UsageGroup = Literal["tenant", "workflow", "day"]
USAGE_GROUPS: tuple[UsageGroup, ...] = ("tenant", "workflow", "day")
# A report covers at most this many days (a year, leap day included).
MAX_USAGE_DAYS = 366
# Without a range, a report covers this many days up to today.
DEFAULT_USAGE_DAYS = 30
_EPOCH = date(1970, 1, 1)


def day_of(seconds: float) -> str:
    """The UTC day of a time, as the usage table keys it (YYYY-MM-DD)."""
    return _day(int(seconds // 86_400))


@functools.lru_cache(maxsize=4)
def _day(days: int) -> str:
    """Day `days` since the epoch (every step commit asks for today's: made once, not per call)."""
    return (_EPOCH + timedelta(days=days)).isoformat()


@dataclass(frozen=True, slots=True)
class UsageCounts:
    """The counters of one usage row, or their sums."""

    activations: int = 0
    """Activations run: isolate starts plus waits gone on in a parked isolate (hot resumes)."""
    isolate_starts: int = 0
    """Fresh isolates started for an activation (each replays the journal up to where it goes on)."""
    replayed_steps: int = 0
    """Journal positions answered from the journal by a replay."""
    steps: int = 0
    """step.do calls completed (journaled done)."""
    attempts: int = 0
    """step.do attempts journaled (each success, failure and retry)."""
    fuel: int = 0
    """Fuel the step attempts burnt."""
    workflow_fuel: int = 0
    """Fuel the workflow's own code burnt outside step bodies (replays included), counted when an activation
    ends (one cut short by a terminate, a restart or a lost lease is not counted)."""
    duration_ms: float = 0.0
    """Wall time of the step attempts, ms."""
    journal_bytes: int = 0
    """Net change of the bytes the journal (positions and attempts) stores: deletions count negative."""
    instances: int = 0
    """Instances created (forks included)."""

    def public(self, fuel_per_second: int) -> dict[str, Any]:
        """The counters, and the CPU seconds the fuel stands for (`fuel_per_second`: the sandbox's rate)."""
        return {
            **asdict(self),
            "cpu_s": self.fuel / fuel_per_second,
            "workflow_cpu_s": self.workflow_fuel / fuel_per_second,
        }


USAGE_COUNTERS: tuple[str, ...] = tuple(f.name for f in fields(UsageCounts))


def total(counts: list[UsageCounts]) -> UsageCounts:
    """The sum of some counts."""
    return UsageCounts(**{name: sum(getattr(c, name) for c in counts) for name in USAGE_COUNTERS})


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One row of a report: the tenant, workflow or day it is for, and its counts."""

    key: str
    counts: UsageCounts

    def public(self, fuel_per_second: int) -> dict[str, Any]:
        return {"key": self.key, **self.counts.public(fuel_per_second)}


@dataclass(frozen=True, slots=True)
class UsageReport:
    """Usage over the days `first`..`last` (UTC, both included), grouped by `group_by`, and its total."""

    first: str
    last: str
    group_by: UsageGroup
    total: UsageCounts
    rows: list[UsageLine]
    tenant: str | None
    """The tenant it is for (None: every tenant, for an operator)."""
    fuel_per_second: int
    """The sandbox's fuel per CPU second (tenantflow.host.limits.FUEL_PER_SECOND)."""

    def public(self) -> dict[str, Any]:
        return {
            "from": self.first,
            "to": self.last,
            "group_by": self.group_by,
            "tenant": self.tenant,
            "fuel_per_second": self.fuel_per_second,
            "total": self.total.public(self.fuel_per_second),
            "rows": [row.public(self.fuel_per_second) for row in self.rows],
        }


def usage_days(first: date | None, last: date | None, today: date) -> tuple[str, str]:
    """The days a report covers: `first`..`last`, by default the DEFAULT_USAGE_DAYS days up to today (or up to
    `last`, or from `first`); InvalidInput when `last` is before `first` or they span more than MAX_USAGE_DAYS."""
    try:
        if last is None:
            last = today if first is None else min(today, first + timedelta(days=DEFAULT_USAGE_DAYS - 1))
            last = max(last, first or last)
        if first is None:
            first = last - timedelta(days=DEFAULT_USAGE_DAYS - 1)
    except OverflowError:
        raise InvalidInput("the usage range runs past the calendar (years 1 to 9999)") from None
    if last < first:
        raise InvalidInput(f"the usage range ends ({last}) before it starts ({first})")
    if (last - first).days + 1 > MAX_USAGE_DAYS:
        raise InvalidInput(f"a usage report covers at most {MAX_USAGE_DAYS} days; {first}..{last} is longer")
    return first.isoformat(), last.isoformat()


def check_group(value: str, allowed: tuple[UsageGroup, ...]) -> UsageGroup:
    for group in allowed:
        if value == group:
            return group
    raise InvalidInput(f"usage is grouped by one of {', '.join(allowed)}")
