"""How long a workflow's finished instances are kept, per finished status (default: forever).

Durations are written as a step's are ("7 days", "12 hours"; see `tenantflow.parse_duration`), each from
RETENTION_MIN to RETENTION_MAX, and measured from when the instance finished.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tenantflow import parse_duration
from tenantflow.runtime.errors import InvalidInput

# The finished statuses a retention names (records.FINISHED), in the order they are shown.
RETAINED: tuple[str, ...] = ("complete", "errored", "terminated")
RETENTION_MIN_S = 60.0
RETENTION_MAX_S = 10 * 365 * 86_400.0
RETENTION_MIN = "1 minute"
RETENTION_MAX = "10 years"
# What a duration string looks like (as parse_duration reads it, lower case): the contract's pattern.
DURATION_PATTERN = r"^ *[0-9]{1,12}(\.[0-9]{1,9})? *(millisecond|second|minute|hour|day|week|month|year)s? *$"
MAX_DURATION_CHARS = 40
# Units a duration is shown in: the largest that divides it (weeks, months and years are shown as days).
_SHOWN_UNITS: tuple[tuple[str, float], ...] = (("day", 86_400.0), ("hour", 3_600.0), ("minute", 60.0))


@dataclass(frozen=True)
class Retention:
    """Seconds a finished instance is kept after it finished, per status; None: forever."""

    complete_s: float | None = None
    errored_s: float | None = None
    terminated_s: float | None = None

    def seconds(self, status: str) -> float | None:
        kept: float | None = getattr(self, f"{status}_s")
        return kept

    @property
    def forever(self) -> bool:
        return all(self.seconds(status) is None for status in RETAINED)

    def public(self) -> dict[str, str | None]:
        """As the API shows it: each status's duration as text, or null (kept forever)."""
        return {status: _shown(self.seconds(status)) for status in RETAINED}


def _shown(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    for unit, size in _SHOWN_UNITS:
        if seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds:g} seconds"


def check_retention(given: Mapping[str, Any]) -> Retention:
    """A retention from {status: duration or None}; InvalidInput naming the key for an unknown status or a
    duration that is not text, cannot be read, or is outside RETENTION_MIN .. RETENTION_MAX."""
    unknown = sorted(set(given) - set(RETAINED))
    if unknown:
        raise InvalidInput(f"no retention for {unknown[0]!r}; a retention names {', '.join(RETAINED)}")
    kept: dict[str, float | None] = {}
    for status in RETAINED:
        kept[f"{status}_s"] = _check_duration(status, given.get(status))
    return Retention(**kept)


def _check_duration(status: str, value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_DURATION_CHARS:
        raise InvalidInput(f"retention {status} is a duration such as '7 days' (at most {MAX_DURATION_CHARS} chars)")
    try:
        seconds = parse_duration(value) / 1000
    except (ValueError, OverflowError):
        raise InvalidInput(f"retention {status}: cannot read {value!r}; use e.g. '7 days' or '12 hours'") from None
    if not RETENTION_MIN_S <= seconds <= RETENTION_MAX_S:
        raise InvalidInput(f"retention {status} is from {RETENTION_MIN} to {RETENTION_MAX}, not {value!r}")
    return seconds
