"""Cloudflare's step API in the real sandbox: the step context (`ctx.attempt`, `ctx.step`, `ctx.config`),
`NonRetryableError(message, name)`, and step names checked where they are called."""

from __future__ import annotations

from tenantflow.host import Sandbox
from tenantflow.runtime.service.local import run_local

CONTEXT = """
from tenantflow import StepContext

def run(event, step):
    def flaky(ctx: StepContext):
        if ctx.attempt < 3:
            raise ValueError(f"attempt {ctx.attempt} fails")
        return {"attempt": ctx.attempt, "name": ctx.step.name, "count": ctx.step.count, "config": ctx.config}

    first = step.do("charge", {"retries": {"limit": 5, "delay": "1 second"}}, flaky)
    second = step.do("charge", lambda ctx: [ctx.attempt, ctx.step.count])
    kept = [step.do(f"keep {i}", lambda i=i: i) for i in range(2)]   # a default is kept, not replaced by ctx

    @step.do("decorated", timeout="1 minute")
    def decorated(ctx):
        return ctx.config

    return {"first": first, "second": second, "kept": kept, "decorated": decorated}
"""

NAMED = """
from tenantflow import NonRetryableError, StepError

def run(event, step):
    def decline():
        raise NonRetryableError("card declined", "PaymentError")
    try:
        step.do("try", decline)
    except StepError as error:
        caught = [error.name, error.message]
    step.do("charge", decline)
    return caught
"""

LONG_NAME = """
def run(event, step):
    try:
        step.do("x" * 257, lambda: 1)
    except ValueError as error:
        caught = str(error)
    try:
        step.sleep("bad\\nname", 10)
    except ValueError as error:
        caught += " | " + str(error)
    return caught
"""


def test_a_body_that_takes_one_argument_gets_the_step_context(sandbox: Sandbox) -> None:
    done = run_local(CONTEXT, sandbox=sandbox)
    assert done.instance.status == "complete", done.instance.error
    out = done.instance.output
    assert out["first"] == {
        "attempt": 3,
        "name": "charge",
        "count": 1,
        "config": {"retries": {"limit": 5, "delay": "1 second"}},
    }
    assert out["second"] == [1, 2]
    assert out["kept"] == [0, 1]
    assert out["decorated"] == {"timeout": "1 minute"}
    charge = next(s for s in done.journal["steps"] if s["name"] == "charge")
    assert [a["ok"] for a in charge["attempt_log"]] == [False, False, True]


def test_non_retryable_error_with_a_name(sandbox: Sandbox) -> None:
    done = run_local(NAMED, sandbox=sandbox)
    assert done.instance.status == "errored"
    assert done.instance.error is not None
    assert (done.instance.error["name"], done.instance.error["message"]) == ("PaymentError", "card declined")
    steps = {s["name"]: s for s in done.journal["steps"]}
    assert steps["try"]["error_name"] == "PaymentError" and steps["try"]["error_message"] == "card declined"
    assert steps["try"]["attempts"] == 1 and steps["charge"]["attempts"] == 1  # not retried


def test_step_names_are_checked_where_they_are_called(sandbox: Sandbox) -> None:
    done = run_local(LONG_NAME, sandbox=sandbox)
    assert done.instance.status == "complete", done.instance.error
    assert done.instance.output == (
        "a step name is at most 256 characters, got 257 | a step name has no control characters: 'bad\\nname'"
    )


FAILS_IN_BODY = """
def charge(amount):
    if amount > 100:
        raise ValueError(f"over the limit: {amount}")
    return amount

def run(event, step):
    return step.do("charge", lambda: charge(event.payload), retries={"limit": 1, "delay": 0})
"""


def test_a_step_that_fails_for_good_points_at_the_line_in_its_body(sandbox: Sandbox) -> None:
    done = run_local(FAILS_IN_BODY, 250, sandbox=sandbox)
    error = done.instance.error
    assert done.instance.status == "errored" and error is not None
    assert (error["name"], error["message"]) == ("ValueError", "over the limit: 250")
    assert error["line"] == 4  # the raise in the body, not the step.do call (line 8)
    tb = error["traceback"]
    assert 'raise ValueError(f"over the limit: {amount}")' in tb and 'return step.do("charge"' in tb
    assert "_step.py" not in tb and "app.py" not in tb  # the SDK's and the harness's frames are left out
