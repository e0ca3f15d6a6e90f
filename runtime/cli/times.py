"""Times on the command line (`--since`, `--until`): a duration back from now, or a point in time."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

import click

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_EPOCH = re.compile(r"^-?\d+(?:\.\d+)?$")


class When(click.ParamType[float, Any]):
    """`30m`, `1h`, `2d`, `1w` (that long before now), epoch seconds, or ISO 8601 (`2026-11-01`,
    `2026-11-01T09:30Z`; without a timezone, local time): epoch seconds."""

    name = "when"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        text = str(value).strip()
        ago = _AGO.match(text)
        if ago:
            return time.time() - float(ago.group(1)) * UNITS[ago.group(2)]
        if _EPOCH.match(text):
            return float(text)
        try:
            return datetime.fromisoformat(text).timestamp()
        except (ValueError, OverflowError, OSError):
            self.fail(f"{text!r} is not a duration (30m, 1h, 2d, 1w), epoch seconds or an ISO 8601 time", param, ctx)
