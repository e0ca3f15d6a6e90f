"""A workflow written against the SDK's types; tests/sdk/test_package.py runs mypy --strict on it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tenantflow import (
    Event,
    NonRetryableError,
    ReceivedEvent,
    Step,
    StepError,
    WaitTimeoutError,
    WorkflowEntrypoint,
    fetch,
)


class Signup(WorkflowEntrypoint):
    def run(self, event: Event, step: Step) -> dict[str, Any]:
        user: dict[str, str] = step.do("load user", lambda: {"id": str(event.payload["user"])})
        count: int = step.do("count", {"retries": {"limit": 3, "delay": "2 seconds"}}, lambda: 1)

        @step.do("charge", retries={"limit": 3, "backoff": "exponential"}, timeout=timedelta(seconds=30))
        def charge() -> int:
            if not fetch("https://pay.example/charge", method="POST", body=b"{}").ok:
                raise NonRetryableError("declined")
            return 10

        step.sleep("cool off", "1 day")
        step.sleep_until("tomorrow", event.timestamp + timedelta(days=1))
        try:
            approval: ReceivedEvent = step.wait_for_event("approval", event_type="approved", timeout="24 hours")
        except (WaitTimeoutError, StepError):
            return {"user": user, "approved": False}
        return {"user": user, "charged": charge + count, "by": approval["payload"], "at": approval["timestamp"]}
