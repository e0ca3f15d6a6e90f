"""A workflow: `run(event, step)` as a function or as a `WorkflowEntrypoint` subclass."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

from tenantflow._step import Step

RunFunction = Callable[["Event", Step], Any]


class Event:
    """What started the instance: its params, when, and its id."""

    def __init__(self, payload: Any, timestamp: float, instance_id: str) -> None:
        self.payload = payload
        self.timestamp = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
        self.instance_id = instance_id

    def __repr__(self) -> str:
        return f"Event(instance_id={self.instance_id!r}, payload={self.payload!r})"


class WorkflowEntrypoint:
    """Base class for the class form of a workflow: override `run(self, event, step)`."""

    def run(self, event: Event, step: Step) -> Any:
        raise NotImplementedError("define run(self, event, step)")


def is_async(entry: RunFunction) -> bool:
    """Whether the workflow's `run` is `async def` (read from its code object: no `inspect` in the snapshot)."""
    code = getattr(getattr(entry, "__func__", entry), "__code__", None)
    return code is not None and bool(code.co_flags & 0x80)  # CO_COROUTINE


def find_entrypoint(namespace: Mapping[str, Any]) -> RunFunction | None:
    """A module's workflow: its first `WorkflowEntrypoint` subclass (a new instance's `run`), else `run`."""
    for value in namespace.values():
        if isinstance(value, type) and issubclass(value, WorkflowEntrypoint) and value is not WorkflowEntrypoint:
            entry: RunFunction = value().run
            return entry
    run = namespace.get("run")
    if callable(run):
        return run  # type: ignore[no-any-return]
    return None
