"""The API's plain bounds and names, in a module without pydantic.

`tenantflow.runtime.contract` re-exports them beside its models; the service and the `worker` command import them
from here, so that a process that only runs activations (`tenantflow worker`, `serve --processes`' extra workers)
starts without building the HTTP contract's models (a third of its import time).
"""

from __future__ import annotations

import sys
from typing import Literal

__all__ = [
    "BUNDLE_FORMAT",
    "CONTROLS",
    "DEEP_JSON_RECURSION_LIMIT",
    "MAX_BATCH",
    "MAX_BULK",
    "MAX_PAGE",
    "MAX_WAIT_S",
    "WATCH_CURSOR",
    "Control",
    "allow_deep_json",
]

Control = Literal["pause", "resume", "terminate", "restart"]
CONTROLS: tuple[Control, ...] = ("pause", "resume", "terminate", "restart")
"""The instance controls, each a `POST .../instances/{id}/<control>`."""

BUNDLE_FORMAT = "tenantflow.bundle/1"
"""The `format` of an exported instance (`GET .../instances/{id}/export`)."""

MAX_BATCH = 100
"""A batch creates at most this many instances (more is 413, not 422)."""
MAX_PAGE = 1000
"""A page holds at most this many instances or journal positions."""
MAX_BULK = 1000
"""A bulk action does at most this many instances per request (a filter's answer says where to go on)."""

MAX_WAIT_S = 60.0
"""The longest a `GET .../instances/{id}?wait=` holds the request."""

WATCH_CURSOR = r"^(-1|\d{1,9})(:\d{1,20})?$"
"""Where a watch resumes: a journal position, or the id of the last event a watcher got (POSITION:STAMP)."""

DEEP_JSON_RECURSION_LIMIT = 4000
"""Stored JSON may nest ~1000 deep (as deep as the guest's own json goes); the json module counts
each level against the recursion limit, on top of the frames of the server's request thread or
the CLI (~30), so the default limit of 1000 cannot read such a value back. 4000 levels of json's C
code fit easily in a thread's stack."""


def allow_deep_json() -> None:
    """Raise this process's recursion limit to DEEP_JSON_RECURSION_LIMIT (never lower it)."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), DEEP_JSON_RECURSION_LIMIT))
