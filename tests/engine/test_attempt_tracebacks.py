"""Each failed attempt keeps its own traceback, pointing at the line in the step body that raised (the
SDK's frames left out), and a step journals its retry limit, so the dashboard can say "attempt n of m"."""

from __future__ import annotations

from tenantflow.host import Sandbox
from tenantflow.runtime.service.local import run_local

FLAKY = """
def run(event, step):
    def charge(ctx):
        if ctx.attempt == 1:
            raise ConnectionError("gateway down")
        if ctx.attempt == 2:
            {}["card"]
        return "charged"

    return step.do("charge", {"retries": {"limit": 3, "delay": "1 second"}}, charge)
"""


def test_every_failed_attempt_keeps_its_own_traceback(sandbox: Sandbox) -> None:
    done = run_local(FLAKY, sandbox=sandbox)
    assert done.instance.status == "complete", done.instance.error
    step = done.journal["steps"][0]
    assert step["attempt_limit"] == 4
    first, second, third = step["attempt_log"]
    assert 'File "workflow.py", line 5, in charge' in first["traceback"]
    assert first["traceback"].rstrip().endswith("ConnectionError: gateway down")
    assert 'File "workflow.py", line 7, in charge' in second["traceback"]
    assert "KeyError: 'card'" in second["traceback"]
    for attempt in (first, second):
        assert "tenantflow" not in attempt["traceback"]  # no frame of the SDK's
    assert third["ok"] and third["traceback"] is None
