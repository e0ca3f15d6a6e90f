"""tenantflow.testing's own behaviours: mocks, the virtual clock, retries, events, replay."""

from __future__ import annotations

import datetime
import json
from datetime import timedelta
from typing import Any

import pytest
from tenantflow import (
    Event,
    NonRetryableError,
    RollbackError,
    Step,
    StepError,
    WaitTimeoutError,
    WorkflowEntrypoint,
    fetch,
)
from tenantflow.testing import WorkflowError, WorkflowTestEnvironment

START = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def charge(event: Event, step: Step) -> Any:
    return step.do("charge", lambda: {"real": True})


def test_a_step_body_runs_unless_mocked() -> None:
    env = WorkflowTestEnvironment()
    assert env.run(charge) == {"real": True}
    env.mock_step("charge", result={"mocked": 1})
    assert env.run(charge) == {"mocked": 1}
    assert env.mocks[0].attempts == 1


def test_a_mock_result_goes_through_json_like_a_real_one() -> None:
    env = WorkflowTestEnvironment()
    env.mock_step("charge", result=(1, 2))
    assert env.run(charge) == [1, 2]
    env.mock_step("charge", result={1, 2})
    with pytest.raises(StepError, match="ResultNotSerializable"):
        env.run(charge)


def test_a_failing_mock_is_retried_with_the_default_backoff_in_no_time() -> None:
    env = WorkflowTestEnvironment(start=START)
    env.mock_step("charge", raise_=ConnectionError("down"))
    with pytest.raises(StepError) as raised:
        env.run(charge)
    assert (raised.value.name, raised.value.message) == ("ConnectionError", "down")
    assert env.step("charge").attempts == 6  # limit 5: the first try and five retries
    # Defaults as Cloudflare's: 10 s, exponential: 10 + 20 + 40 + 80 + 160 s of virtual time.
    assert env.elapsed == timedelta(seconds=310)
    retries = [t for t in env.timeline if t.what == "retry"]
    assert [t.elapsed for t in retries] == [timedelta(seconds=s) for s in (0, 10, 30, 70, 150)]
    assert env.activations == 6  # a retry after a delay is a replay, as in the engine


def test_retries_follow_the_steps_own_config() -> None:
    def flow(event: Event, step: Step) -> Any:
        return step.do("s", lambda: 1, retries={"limit": 2, "delay": "1 minute", "backoff": "linear"})

    env = WorkflowTestEnvironment()
    env.mock_step("s", raise_=[ValueError("a"), ValueError("b")], result="third time")
    assert env.run(flow) == "third time"
    assert env.elapsed == timedelta(minutes=1 + 2)


def test_non_retryable_error_fails_the_step_at_once() -> None:
    def flow(event: Event, step: Step) -> Any:
        try:
            return step.do("s", lambda: 1)
        except NonRetryableError as error:
            return f"caught {error}"

    env = WorkflowTestEnvironment()
    env.mock_step("s", raise_=NonRetryableError("no"))
    assert env.run(flow) == "caught no"
    assert env.step("s").attempts == 1 and env.elapsed == timedelta(0)


def test_a_mock_can_target_one_call_of_a_name() -> None:
    def flow(event: Event, step: Step) -> Any:
        return [step.do("n", lambda i=i: i) for i in range(3)]

    env = WorkflowTestEnvironment()
    env.mock_step("n", result="second", call=1)
    assert env.run(flow) == [0, "second", 2]
    assert [(s.name, s.call) for s in env.steps] == [("n", 0), ("n", 1), ("n", 2)]


def test_sleeps_take_no_time_and_are_recorded() -> None:
    def flow(event: Event, step: Step) -> Any:
        step.sleep("short", "90 seconds")
        step.sleep_until("party", START + timedelta(days=3))
        return "woke"

    env = WorkflowTestEnvironment(start=START)
    assert env.run(flow) == "woke"
    assert env.now == START + timedelta(days=3)
    assert [(s.name, s.kind, s.wake_at) for s in env.steps] == [
        ("short", "sleep", START + timedelta(seconds=90)),
        ("party", "sleep", START + timedelta(days=3)),
    ]
    assert [(t.what, t.name, t.elapsed) for t in env.timeline if t.what == "wake"] == [
        ("wake", "short", timedelta(seconds=90)),
        ("wake", "party", timedelta(days=3)),
    ]


def test_wait_for_event_times_out_without_an_event() -> None:
    def flow(event: Event, step: Step) -> Any:
        try:
            step.wait_for_event("answer", "replied", timeout="3 days")
        except WaitTimeoutError as error:
            return str(error)
        return "replied"

    env = WorkflowTestEnvironment()
    assert env.run(flow) == "no 'replied' event arrived before the timeout"
    assert env.elapsed == timedelta(days=3)
    assert env.run(flow, events={"replied": None}) == "replied"


def test_events_are_matched_in_order_of_arrival() -> None:
    def flow(event: Event, step: Step) -> Any:
        return [step.wait_for_event(f"w{i}", "vote")["payload"] for i in range(2)]

    env = WorkflowTestEnvironment()
    assert env.run(flow, events=[("vote", "a"), ("other", "x"), ("vote", "b")]) == ["a", "b"]


def test_the_event_and_params_are_what_the_engine_hands_over() -> None:
    class Flow(WorkflowEntrypoint):
        def run(self, event: Event, step: Step) -> Any:
            return [event.payload, event.instance_id, event.timestamp.isoformat()]

    env = WorkflowTestEnvironment(start=START)
    assert env.run(Flow, {"n": (1,)}, instance_id="i-1") == [{"n": [1]}, "i-1", START.isoformat()]


def test_a_workflow_whose_steps_change_on_replay_is_non_deterministic() -> None:
    activations = []

    def flow(event: Event, step: Step) -> Any:
        activations.append(1)
        step.do(f"step {len(activations)}", lambda: 1)
        step.sleep("nap", "1 hour")
        return "done"

    with pytest.raises(WorkflowError) as raised:
        WorkflowTestEnvironment().run(flow)
    assert raised.value.name == "NonDeterminismError"
    assert "holds do 'step 1', but the workflow now calls do 'step 2'" in raised.value.message


def test_the_hosts_limits_apply() -> None:
    def flow(event: Event, step: Step) -> Any:
        return step.do("s", lambda: 1, retries={"limit": 1000})

    with pytest.raises(WorkflowError) as raised:
        WorkflowTestEnvironment().run(flow)
    assert raised.value.name == "InvalidHostCall"

    def bad_type(event: Event, step: Step) -> Any:
        return step.wait_for_event("w", "has spaces")

    with pytest.raises(WorkflowError, match="InvalidHostCall"):
        WorkflowTestEnvironment().run(bad_type)


def test_the_output_must_be_json() -> None:
    with pytest.raises(WorkflowError) as raised:
        WorkflowTestEnvironment().run(lambda event, step: {1, 2})
    assert raised.value.name == "OutputNotSerializable"


def test_a_step_body_may_call_steps_journaled_as_its_own() -> None:
    ran: list[str] = []

    def flow(event: Event, step: Step) -> Any:
        def outer() -> int:
            a = step.do("inner", lambda: ran.append("inner 1") or 1)
            return a + step.do("inner", lambda: 2)

        first = step.do("outer", outer)
        step.sleep("nap", "1 hour")  # the replay after it answers "outer" and skips its nested steps
        return [first, step.do("after", lambda: 3)]

    env = WorkflowTestEnvironment()
    assert env.run(flow) == [3, 3]
    assert env.activations == 2 and ran == ["inner 1"]
    assert [(s.name, s.call) for s in env.steps] == [("outer", 0), ("inner", 0), ("inner", 1), ("nap", 0), ("after", 0)]


def test_a_sleep_in_a_step_body_fails_the_step_at_once() -> None:
    def flow(event: Event, step: Step) -> Any:
        return step.do("outer", lambda: step.sleep("nap", 10))

    env = WorkflowTestEnvironment()
    with pytest.raises(StepError, match="outside step bodies") as raised:
        env.run(flow)
    assert raised.value.name == "WorkflowCodeError" and env.step("outer").attempts == 1


def test_fetch_goes_to_the_environments_handler() -> None:
    def flow(event: Event, step: Step) -> Any:
        return step.do("get", lambda: fetch("https://api.example/x").json())

    seen: list[dict[str, Any]] = []

    def handler(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request)
        return {"status": 200, "headers": {}, "body": '{"ok": true}'}

    assert WorkflowTestEnvironment(fetch=handler).run(flow) == {"ok": True}
    assert seen[0]["url"] == "https://api.example/x"
    with pytest.raises(StepError, match="CapabilityError: EgressDenied"):
        WorkflowTestEnvironment().run(flow)


def test_outside_a_runner_step_calls_say_what_is_missing() -> None:
    with pytest.raises(RuntimeError, match="no workflow runner"):
        Step().do("s", lambda: 1)


def test_the_step_context_in_a_unit_test() -> None:
    """A body that takes one argument gets the context: attempts count from 1 across retries."""

    def flow(event: Event, step: Step) -> Any:
        def body(ctx: Any) -> Any:
            if ctx.attempt < 2:
                raise ConnectionError("once")
            return [ctx.attempt, ctx.step.name, ctx.step.count, ctx.config]

        return step.do("call", {"retries": {"limit": 2, "delay": "1 second"}}, body)

    env = WorkflowTestEnvironment(start=START)
    assert env.run(flow) == [2, "call", 1, {"retries": {"limit": 2, "delay": "1 second"}}]


def test_a_named_non_retryable_error_is_seen_by_that_name() -> None:
    def flow(event: Event, step: Step) -> Any:
        def decline() -> None:
            raise NonRetryableError("card declined", "PaymentError")

        return step.do("charge", decline)

    with pytest.raises(StepError) as raised:
        WorkflowTestEnvironment().run(flow)
    assert (raised.value.name, raised.value.message) == ("PaymentError", "card declined")


def test_rollbacks_run_last_started_first_in_a_unit_test() -> None:
    undone: list[Any] = []

    def flow(event: Event, step: Step) -> Any:
        step.do("a", lambda: 1, rollback=lambda out: undone.append(["a", out]))
        step.do("plain", lambda: 2)
        step.do("b", lambda: 3, rollback=lambda out, ctx: undone.append(["b", out, ctx.attempt, str(ctx.error)]))
        raise ValueError("boom")

    env = WorkflowTestEnvironment()
    with pytest.raises(ValueError, match="boom"):
        env.run(flow)
    assert undone == [["b", 3, 1, "boom"], ["a", 1]]
    assert [(s.kind, s.name, s.state) for s in env.steps][-2:] == [("rollback", "b", "done"), ("rollback", "a", "done")]


def test_a_rollback_that_fails_for_good_is_a_rollback_error() -> None:
    def refuse(out: Any) -> None:
        raise NonRetryableError("no refund", "RefundError")

    def flow(event: Event, step: Step) -> Any:
        step.do("charge", lambda: 5, rollback=refuse)
        step.do("ship", lambda: 1 / 0)

    env = WorkflowTestEnvironment()
    with pytest.raises(RollbackError) as raised:
        env.run(flow)
    error = raised.value
    assert (error.step, error.error_name, error.cause_name) == ("charge", "RefundError", "ZeroDivisionError")


def test_a_retry_delay_function_chooses_each_wait() -> None:
    def flow(event: Event, step: Step) -> Any:
        delay = {"delay": lambda ctx, error: timedelta(minutes=ctx.attempt), "limit": 3}
        return step.do("s", lambda: 1, retries=delay)  # type: ignore[typeddict-item]

    env = WorkflowTestEnvironment()
    env.mock_step("s", raise_=[ValueError("a"), ValueError("b")], result="ok")
    assert env.run(flow) == "ok"
    assert env.elapsed == timedelta(minutes=1 + 2)


async def tools(event: Event, step: Step) -> Any:
    """An async workflow: three tool calls at once, one of which fails once."""
    import asyncio

    from tenantflow import fetch_async

    async def tool(ctx: Any, i: int) -> str:
        answer = await fetch_async(f"https://tools.example/{i}")
        if i == 1 and ctx.attempt == 1:
            raise ConnectionError("flaky")
        return str(answer.json()["tool"])

    found = await asyncio.gather(
        *(step.do(f"tool {i}", {"retries": {"limit": 1, "delay": 0}}, lambda ctx, i=i: tool(ctx, i)) for i in range(3))
    )
    await step.sleep("nap", "1 hour")
    return list(found)


def test_an_async_workflow_runs_its_steps_together_and_replays_them_by_name() -> None:
    import threading

    seen: list[str] = []
    lock = threading.Lock()

    def handler(request: dict[str, Any]) -> dict[str, Any]:
        with lock:
            seen.append(request["url"])
        return {"status": 200, "headers": {}, "body": json.dumps({"tool": request["url"][-1]})}

    env = WorkflowTestEnvironment(fetch=handler)
    assert env.run(tools) == ["0", "1", "2"]
    assert env.activations == 2  # the nap; the replay answers the tools from the journal
    assert sorted(seen) == ["https://tools.example/0", *["https://tools.example/1"] * 2, "https://tools.example/2"]
    assert [(s.name, s.attempts) for s in env.steps] == [("tool 0", 1), ("tool 1", 2), ("tool 2", 1), ("nap", 0)]
    env.mock_step("tool 2", result="mocked")
    assert env.run(tools) == ["0", "1", "mocked"]


async def undo_on_failure(event: Event, step: Step) -> Any:
    undone: list[Any] = []

    async def reserve() -> str:
        return "seat"

    def fail() -> None:
        raise NonRetryableError("no", "Declined")

    await step.do("reserve", reserve, rollback=lambda output: undone.append(output))
    await step.do("charge", fail)


def test_an_async_workflow_rolls_back_when_it_fails() -> None:
    env = WorkflowTestEnvironment()
    with pytest.raises(StepError, match="Declined: no"):
        env.run(undo_on_failure)
    assert [(s.name, s.kind) for s in env.steps] == [("reserve", "do"), ("charge", "do"), ("reserve", "rollback")]
