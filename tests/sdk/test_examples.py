"""examples/*.py under tenantflow.testing: the same outputs `tenantflow run` gives, in milliseconds."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from tenantflow import StepError
from tenantflow.testing import WorkflowStuck, WorkflowTestEnvironment

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
APPROVAL = EXAMPLES / "approval.py"
ORDER = EXAMPLES / "order.py"
AGENT = EXAMPLES / "agent_loop.py"


def test_approval_with_the_event() -> None:
    env = WorkflowTestEnvironment()
    output = env.run(APPROVAL, {"amount": 120, "by": "li"}, events={"approved": {"by": "ana"}})
    assert output == {"approved": True, "by": "ana", "paid": 120, "to": "li"}
    assert env.elapsed == timedelta(0)
    assert [s.name for s in env.steps] == ["file request", "notify approver", "approval", "pay out"]
    assert env.step("approval").result["payload"] == {"by": "ana"}


def test_approval_without_the_event_times_out_after_its_timeout() -> None:
    env = WorkflowTestEnvironment()
    output = env.run(APPROVAL, {"amount": 120, "timeout": "2 hours"})
    assert output == {"approved": False, "amount": 120, "reason": "timed out"}
    assert env.elapsed == timedelta(hours=2)
    assert env.step("approval").state == "timed_out"
    assert [(t.what, t.name) for t in env.timeline][-2:] == [("timeout", "approval"), ("attempt", "escalate")]


def test_approval_event_that_comes_after_the_timeout_is_too_late() -> None:
    env = WorkflowTestEnvironment()
    env.send_event("approved", {"by": "ana"}, after="90 minutes")
    assert env.run(APPROVAL, {"amount": 5})["approved"] is False
    env.send_event("approved", {"by": "ana"}, after="30 minutes")
    assert env.run(APPROVAL, {"amount": 5})["by"] == "ana"
    assert env.elapsed == timedelta(minutes=30)


def test_order_with_declines_is_retried_in_the_same_activation() -> None:
    env = WorkflowTestEnvironment()
    output = env.run(ORDER, {"order": "A-1", "declines": 2})
    assert output["status"] == "shipped"
    assert output["charge"] == {"charged": 9.0, "gateway_calls": 3}
    assert env.step("charge card").attempts == 3
    assert env.elapsed == timedelta(hours=2)  # the courier sleep, skipped
    assert env.activations == 2  # one replay, after the sleep


def test_order_that_declines_more_than_the_limit_is_cancelled() -> None:
    env = WorkflowTestEnvironment()
    output = env.run(ORDER, {"order": "A-2", "declines": 9})
    assert output["status"] == "cancelled"
    assert output["reason"].startswith("ConnectionError: payment gateway timed out")
    assert env.step("charge card").attempts == 6  # the first try and limit=5 retries
    assert [s.name for s in env.steps][-1] == "release stock"


def test_order_with_a_stolen_card_is_not_retried() -> None:
    env = WorkflowTestEnvironment()
    output = env.run(ORDER, {"order": "A-3", "card": "stolen"})
    assert output == {"order": "A-3", "status": "cancelled", "reason": "card reported stolen"}
    assert env.step("charge card").attempts == 1
    assert env.step("charge card").error == ("NonRetryableError", "card reported stolen")


def test_order_with_the_gateway_mocked() -> None:
    env = WorkflowTestEnvironment()
    env.mock_step("charge card", raise_=[TimeoutError("slow")], result={"charged": 1, "gateway_calls": 0})
    assert env.run(ORDER, {"order": "A-4", "declines": 0})["charge"] == {"charged": 1, "gateway_calls": 0}
    assert env.step("charge card").attempts == 2


def test_agent_loop_finds_the_secret() -> None:
    env = WorkflowTestEnvironment()
    output = env.run(AGENT, {"secret": 737})
    assert output["found"] is True and output["answer"] == 737
    thinks = [s for s in env.steps if s.name == "think"]
    assert [s.call for s in thinks] == list(range(output["turns"]))
    sleeps = [s for s in env.steps if s.kind == "sleep"]
    assert env.elapsed == timedelta(seconds=len(sleeps))


def test_agent_loop_with_a_mocked_tool_never_finds_it() -> None:
    env = WorkflowTestEnvironment()
    env.mock_step("act", result="higher")
    output = env.run(AGENT, {"secret": 737, "max_turns": 25})
    assert output == {"answer": output["answer"], "found": False, "turns": 25}


def test_every_example_runs_in_well_under_a_second() -> None:
    for path, params in ((APPROVAL, {}), (ORDER, {}), (AGENT, {})):
        started = time.perf_counter()
        WorkflowTestEnvironment().run(path, params)
        assert time.perf_counter() - started < 0.25, path


def test_a_wait_without_timeout_and_without_event_is_stuck(tmp_path: Path) -> None:
    flow = tmp_path / "flow.py"
    flow.write_text("def run(event, step):\n    return step.wait_for_event('w', 'go', timeout=None)\n")
    with pytest.raises(WorkflowStuck, match="waiting for 'go'"):
        WorkflowTestEnvironment().run(flow)


def test_step_error_escapes_the_workflow(tmp_path: Path) -> None:
    flow = tmp_path / "flow.py"
    flow.write_text("def run(event, step):\n    return step.do('x', lambda: 1 / 0, retries={'limit': 0})\n")
    with pytest.raises(StepError) as raised:
        WorkflowTestEnvironment().run(flow)
    assert raised.value.name == "ZeroDivisionError"


def test_agent_tools_calls_its_tools_at_once_and_retries_one() -> None:
    env = WorkflowTestEnvironment()
    output = env.run(EXAMPLES / "agent_tools.py", {"question": "news and weather", "latency_ms": 20})
    assert output["tools"] == ["search", "weather", "calendar", "maps", "news"]
    assert output["retried"] == ["weather"]
    assert env.step("tool weather").attempts == 2
    # (That they run side by side is tests/engine/test_concurrent_steps.py's to show, in the sandbox.)
