"""A step.do inside another step's body, in the real sandbox: journaled as a step of its own (with its parent),
answered from the journal when the body runs again, skipped when the enclosing step is replayed."""

from __future__ import annotations

from typing import Any

from tenantflow.host import Sandbox
from tenantflow.runtime.service.local import run_local

RACE = """
from tenantflow import StepError

def run(event, step):
    def tools():
        found = step.do("search", lambda: print("searched") or ["a", "b"])
        try:
            step.do("flaky tool", lambda: 1 / 0, retries={"limit": 1, "delay": 0})
        except StepError as error:
            found.append(error.name)
        return found

    def outer(ctx):
        got = step.do("tools", tools)
        if ctx.attempt == 1:
            raise RuntimeError("the outer body fails once after its nested steps")
        return got

    result = step.do("plan", {"retries": {"limit": 2, "delay": 0}}, outer)
    step.sleep("nap", "1 hour")
    return [result, step.do("after", lambda: "done")]
"""


def shape(journal: dict[str, Any]) -> list[tuple[str, str, int | None, int]]:
    return [(s["name"], s["state"], s["parent"], s["attempts"]) for s in journal["steps"]]


def test_nested_steps_are_journaled_replayed_and_skipped(sandbox: Sandbox) -> None:
    done = run_local(RACE, sandbox=sandbox)
    assert done.instance.status == "complete", done.instance.error
    assert done.instance.output == [["a", "b", "ZeroDivisionError"], "done"]
    assert shape(done.journal) == [
        ("plan", "done", None, 2),
        ("tools", "done", 0, 1),
        ("search", "done", 1, 1),
        ("flaky tool", "failed", 1, 2),
        ("nap", "sleeping", None, 0),  # a sleep entry keeps its wake time and state
        ("after", "done", None, 1),
    ]
    # The second attempt of "plan" got "tools" from the journal; the replay after the nap skipped all three.
    assert "searched" not in done.instance.log
    assert done.activations == 2


SLEEP_IN_BODY = """
def run(event, step):
    return step.do("outer", lambda: step.sleep("nap", 10))
"""


def test_a_sleep_in_a_body_fails_the_step_at_once(sandbox: Sandbox) -> None:
    done = run_local(SLEEP_IN_BODY, sandbox=sandbox)
    assert done.instance.status == "errored"
    assert done.instance.error is not None and done.instance.error["name"] == "WorkflowCodeError"
    assert shape(done.journal) == [("outer", "failed", None, 1)]
