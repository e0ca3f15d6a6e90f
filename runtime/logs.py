"""Logging for `serve` and `worker`: one format for every line (text, or JSON with `--log-format json`).

Lifecycle events (a workflow deployed, an instance created, complete or errored, a limit hit) are logged
by `event` on the `tenantflow.events` logger: in text as `name key=value ...`, in JSON as fields of the
line. uvicorn's own loggers go through the same handler (its access log without the probes of
/healthz and /metrics).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["FORMATS", "LogFormat", "configure", "event"]

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Paths whose requests the access log leaves out (scrapers and health checks ask every few seconds).
QUIET_PATHS = ("/healthz", "/metrics")

_events = logging.getLogger("tenantflow.events")


def event(name: str, **fields: Any) -> None:
    """Log one lifecycle event with its fields (tenant, workflow, instance, version, ...)."""
    if _events.isEnabledFor(logging.INFO):
        text = " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
        _events.info("%s %s", name, text, extra={"fields": {"event": name, **fields}})


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class _QuietProbes(logging.Filter):
    """uvicorn's access records carry (client, method, path, http version, status) as their args."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3:
            return str(args[2]).partition("?")[0] not in QUIET_PATHS
        return True


def configure(level: str = "info", fmt: LogFormat = "text") -> None:
    """The root logger's one handler, in `fmt`; uvicorn's loggers propagate to it."""
    handler = logging.StreamHandler()
    handler.setFormatter(_Json() if fmt == "json" else logging.Formatter(TEXT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _QuietProbes) for f in access.filters):
        access.addFilter(_QuietProbes())
