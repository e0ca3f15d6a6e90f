"""Saga rollbacks in the real sandbox: `step.do(..., rollback=fn)` undoes completed steps, last started first,
durably, when the instance fails or is terminated with a rollback; and `retries.delay` as a function."""

from __future__ import annotations

from typing import Any

from tenantflow.host import Sandbox
from tenantflow.runtime.engine.clock import ManualClock
from tenantflow.runtime.records import Instance, Tenant
from tenantflow.runtime.service import Service
from tenantflow.runtime.service.local import drive, run_local

SAGA = """
def run(event, step):
    def undo(name):
        def rollback(output, ctx):
            print(f"undo {name} {output} attempt {ctx.attempt} after {type(ctx.error).__name__}: {ctx.error}")
            if name == "b" and ctx.attempt < 2:
                raise RuntimeError("flaky undo")
        return rollback

    step.do("a", lambda: 1, rollback=undo("a"))
    config = {"rollback": undo("b"), "rollback_config": {"retries": {"limit": 2, "delay": 1000, "backoff": "constant"}}}
    step.do("b", config, lambda: 2)
    step.do("no undo", lambda: 3)
    step.do("c", lambda: 4, rollback=lambda out: print("undo c", out))
    if event.payload == "fail":
        raise ValueError("boom")
    return "ok"
"""


def kinds(journal: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(s["kind"], s["name"], s["state"]) for s in journal["steps"]]


def test_a_failed_instance_runs_its_rollbacks_in_reverse_order(sandbox: Sandbox) -> None:
    done = run_local(SAGA, "fail", sandbox=sandbox)
    instance = done.instance
    assert instance.status == "errored"
    assert instance.error is not None and instance.error["name"] == "ValueError"
    assert instance.rollback == "error"
    assert kinds(done.journal) == [
        ("do", "a", "done"),
        ("do", "b", "done"),
        ("do", "no undo", "done"),
        ("do", "c", "done"),
        ("rollback", "c", "done"),
        ("rollback", "b", "done"),
        ("rollback", "a", "done"),
    ]
    b_undo = done.journal["steps"][5]
    assert [a["ok"] for a in b_undo["attempt_log"]] == [False, True]
    # The last activation's log: the replay answered the finished rollback of c from the journal, and b's
    # failed first attempt was retried after its back-off.
    assert instance.log.splitlines() == [
        "undo b 2 attempt 2 after ValueError: boom",
        "undo a 1 attempt 1 after ValueError: boom",
    ]


def test_a_completed_instance_runs_no_rollback(sandbox: Sandbox) -> None:
    done = run_local(SAGA, "ok", sandbox=sandbox)
    assert done.instance.status == "complete"
    assert done.instance.rollback is None
    assert all(kind == "do" for kind, _, _ in kinds(done.journal))


FAILING_UNDO = """
from tenantflow import NonRetryableError

def run(event, step):
    step.do("reserve", lambda: "seat 4", rollback=lambda out: print("released", out))
    def refuse(out):
        raise NonRetryableError(f"cannot refund {out}", "RefundError")
    step.do("charge", lambda: 12, rollback=refuse)
    step.do("ship", lambda: (_ for _ in ()).throw(NonRetryableError("no stock", "StockError")))
"""


def test_a_rollback_that_fails_for_good_errors_the_instance_with_both_errors(sandbox: Sandbox) -> None:
    done = run_local(FAILING_UNDO, sandbox=sandbox)
    error = done.instance.error
    assert done.instance.status == "errored"
    assert error is not None and error["name"] == "RollbackError"
    assert "RefundError: cannot refund 12" in error["message"]
    assert "StockError: no stock" in error["message"]
    # The rollbacks after the failed one are not run.
    assert kinds(done.journal)[-1] == ("rollback", "charge", "failed")
    assert "released" not in done.instance.log


DELAY_FN = """
def run(event, step):
    seen = []
    def delay(ctx, error):
        seen.append([ctx.attempt, str(error)])
        return f"{ctx.attempt * 7} seconds"
    def flaky(ctx):
        if ctx.attempt < 3:
            raise RuntimeError(f"try {ctx.attempt}")
        return ctx.attempt
    return step.do("flaky", {"retries": {"limit": 4, "delay": delay}}, flaky)
"""


def test_retry_delay_as_a_function_sets_each_wait(sandbox: Sandbox) -> None:
    done = run_local(DELAY_FN, sandbox=sandbox)
    assert done.instance.status == "complete", done.instance.error
    attempts = done.journal["steps"][0]["attempt_log"]
    assert len(attempts) == 3
    gaps = [round(b["finished_at"] - a["finished_at"]) for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps == [7, 14]


BAD_DELAY = """
def run(event, step):
    def flaky():
        raise RuntimeError("no")
    return step.do("flaky", {"retries": {"delay": lambda ctx, error: "soon"}}, flaky)
"""


def test_a_retry_delay_function_that_fails_fails_the_step(sandbox: Sandbox) -> None:
    done = run_local(BAD_DELAY, sandbox=sandbox)
    assert done.instance.status == "errored"
    assert done.instance.error is not None and done.instance.error["name"] == "RetryDelayError"
    assert "cannot read duration 'soon'" in done.instance.error["message"]


WAITS = """
def run(event, step):
    step.do("book", lambda: "room 12", rollback=lambda out: print("cancelled", out))
    step.do("pay", lambda: 30, rollback=lambda out, ctx: print("refunded", out, ctx.error))
    try:
        step.wait_for_event("approval", "approved", timeout="1 day")
    except BaseException:
        step.do("never", lambda: 1)  # the unwinding is not stopped by catching it
        raise
    step.do("after", lambda: 2, rollback=lambda out: print("never undone"))
"""


def start(service: Service, tenant: Tenant, source: str) -> Instance:
    service.deploy(tenant, "wf", source)
    return service.create_instances(tenant, "wf", [{"params": None}])[0]


def run_once(service: Service, clock: ManualClock) -> None:
    """One activation of what is runnable now (the clock stays: the wait does not time out)."""
    for claim in service.store.claim("test", 1, clock.now(), 60.0, {}):
        service.executor.activate(claim)


def test_terminate_with_rollback_unwinds_a_waiting_instance(
    service: Service, tenant: Tenant, clock: ManualClock
) -> None:
    instance = start(service, tenant, WAITS)
    run_once(service, clock)
    assert service.store.instance(instance.key).status == "waiting"
    service.control(tenant, "wf", instance.instance_id, "terminate", rollback=True)
    assert service.store.instance(instance.key).status == "queued"
    drive(service, clock, instance.key)
    done = service.store.instance(instance.key)
    assert (done.status, done.rollback, done.error) == ("terminated", "terminate", None)
    steps = kinds(service.journal(tenant, "wf", instance.instance_id))
    assert steps == [
        ("do", "book", "done"),
        ("do", "pay", "done"),
        ("wait", "approval", "waiting"),
        ("rollback", "pay", "done"),
        ("rollback", "book", "done"),
    ]
    assert done.log.splitlines() == [
        "refunded 30 Terminated: the instance was terminated with a rollback",
        "cancelled room 12",
    ]


def test_a_plain_terminate_runs_no_rollback(service: Service, tenant: Tenant, clock: ManualClock) -> None:
    instance = start(service, tenant, WAITS)
    run_once(service, clock)
    service.control(tenant, "wf", instance.instance_id, "terminate")
    assert service.store.instance(instance.key).status == "terminated"
    assert all(kind != "rollback" for kind, _, _ in kinds(service.journal(tenant, "wf", instance.instance_id)))
