"""Durations ("10 seconds", milliseconds, timedelta) and the retry/timeout config of `step.do`."""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from typing import Any, Literal, TypedDict

Backoff = Literal["constant", "linear", "exponential"]
Duration = int | float | str | datetime.timedelta
"""Milliseconds, a `timedelta`, or a string such as "10 seconds" or "2 hours"."""

_UNITS_MS = {
    "millisecond": 1,
    "second": 1000,
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
    "week": 7 * 86_400_000,
    "month": 30 * 86_400_000,
    "year": 365 * 86_400_000,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+?)s?\s*$")


class Retries(TypedDict, total=False):
    """How `step.do` retries a failed body (defaults as Cloudflare Workflows: 5, "10 seconds", exponential)."""

    limit: int
    delay: Duration | Callable[[Any, BaseException], Duration]
    """A duration, or `delay(ctx, error)` returning the delay before the next attempt."""
    backoff: Backoff


class RollbackOptions(TypedDict, total=False):
    """How a step's rollback is retried and timed (`rollback_config`)."""

    retries: Retries
    timeout: Duration
    cpu: Duration


class StepOptions(TypedDict, total=False):
    """The config form of `step.do(name, config, fn)`."""

    retries: Retries
    timeout: Duration
    cpu: Duration
    rollback: Callable[..., Any]
    rollback_config: RollbackOptions


def parse_duration(value: Any) -> int:
    """Milliseconds from a number of milliseconds or a string such as "10 seconds"."""
    if isinstance(value, bool):
        raise TypeError("a duration is a number of milliseconds or a string like '10 seconds'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return int(value)
    if isinstance(value, datetime.timedelta):
        return int(value.total_seconds() * 1000)
    if isinstance(value, str):
        match = _DURATION.match(value.lower())
        if match and match.group(2) in _UNITS_MS:
            return int(float(match.group(1)) * _UNITS_MS[match.group(2)])
        raise ValueError(f"cannot read duration {value!r}; use e.g. '10 seconds' or '2 hours'")
    raise TypeError("a duration is a number of milliseconds or a string like '10 seconds'")


MAX_STEP_CPU_MS = 300_000
"""The largest CPU budget a step attempt may ask for (`cpu`): 5 minutes, as Cloudflare Workflows."""


def step_config(retries: Any, timeout: Any, cpu: Any = None) -> str:
    """The JSON the host reads for a step: limit, delay_ms, backoff, timeout_ms, cpu_ms (absent: defaults)."""
    if retries is None and timeout is None and cpu is None:
        return "{}"
    config: dict[str, Any] = {}
    if retries is not None:
        if not isinstance(retries, dict):
            raise TypeError("retries is a dict with limit, delay and backoff")
        unknown = set(retries) - {"limit", "delay", "backoff"}
        if unknown:
            raise ValueError(f"unknown retries keys: {sorted(unknown)}")
        if "limit" in retries:
            limit = retries["limit"]
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
                raise ValueError("retries.limit is a whole number >= 0")
            config["limit"] = limit
        if "delay" in retries and not callable(retries["delay"]):  # a function is the SDK's to call
            config["delay_ms"] = parse_duration(retries["delay"])
        if "backoff" in retries:
            if retries["backoff"] not in ("constant", "linear", "exponential"):
                raise ValueError("retries.backoff is 'constant', 'linear' or 'exponential'")
            config["backoff"] = retries["backoff"]
    if timeout is not None:
        config["timeout_ms"] = parse_duration(timeout)
    if cpu is not None:
        cpu_ms = parse_duration(cpu)
        if cpu_ms > MAX_STEP_CPU_MS:
            raise ValueError(f"a step's cpu is at most 5 minutes ({MAX_STEP_CPU_MS} ms), got {cpu_ms} ms")
        config["cpu_ms"] = cpu_ms
    return json.dumps(config)
