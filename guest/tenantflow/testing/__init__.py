"""Unit-test a workflow in an ordinary pytest, through the same SDK code the sandbox runs.

    from datetime import timedelta
    from tenantflow.testing import WorkflowTestEnvironment

    def test_approval_times_out() -> None:
        env = WorkflowTestEnvironment()
        env.mock_step("notify approver", result="sent")   # the real body is not run
        assert env.run("examples/approval.py", {"amount": 120})["approved"] is False
        assert env.elapsed == timedelta(hours=1)          # the wait timed out, in no real time

Steps run their bodies unless mocked; sleeps, retry back-offs and event timeouts take no time
(the clock jumps); the workflow is replayed after each wait, as the engine does.
"""

from tenantflow.testing._environment import (
    FetchHandler,
    StepMock,
    StepRecord,
    TimelineEntry,
    Workflow,
    WorkflowError,
    WorkflowStuck,
    WorkflowTestEnvironment,
)

__all__ = [
    "FetchHandler",
    "StepMock",
    "StepRecord",
    "TimelineEntry",
    "Workflow",
    "WorkflowError",
    "WorkflowStuck",
    "WorkflowTestEnvironment",
]
