"""Usage equals what it counts: real workflows (retries, a failed step, CPU, sleeps, an event, replays and hot
resumes, a batch, a restart, a deletion) on SQLite and PostgreSQL, then the usage rows against sums over the
journal, its attempts and the instance rows, read straight from the database."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pg import fresh_schema
from tenantflow.host import Sandbox
from tenantflow.runtime.records import FINISHED, Instance, Tenant
from tenantflow.runtime.service import Service
from tenantflow.runtime.store import open_store
from tenantflow.runtime.usage import USAGE_COUNTERS, UsageCounts, day_of
from waiting import wait_until

WORKFLOW = """
from tenantflow import NonRetryableError

def run(event, step):
    def flaky():
        raise RuntimeError("not yet")

    try:
        step.do("flaky", flaky, retries={"limit": 2, "delay": 20, "backoff": "constant"})
    except Exception:
        pass

    def burn():
        return sum(i * i for i in range(20000))

    total = step.do("burn", burn)

    def bad():
        raise NonRetryableError("no")

    try:
        step.do("bad", bad)
    except Exception:
        pass
    step.sleep("nap", 30)
    got = step.wait_for_event("go", event_type="go", timeout="1 minute")
    return step.do("last", lambda: [total, got["payload"]])
"""

SIMPLE = """
def run(event, step):
    return [step.do(f"s{i}", lambda: i) for i in range(3)]
"""

ENTRY_BYTES = (
    "COALESCE(LENGTH(result), 0) + LENGTH(name) + COALESCE(LENGTH(error_name), 0) + COALESCE(LENGTH(error_message), 0)"
)
ATTEMPT_BYTES = "COALESCE(LENGTH(error_name), 0) + COALESCE(LENGTH(error_message), 0) + COALESCE(LENGTH(traceback), 0)"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tf.db'}"
    return fresh_schema(request.getfixturevalue("pg_server"))


def run_service(url: str, sandbox: Sandbox, **options: Any) -> Service:
    return Service(open_store(url), sandbox, workers=2, **options).start()


def waiting_for_event(service: Service, tenant: Tenant, workflow: str, instance_id: str) -> bool:
    journal = service.journal(tenant, workflow, instance_id)["steps"]
    return any(s["kind"] == "wait" and s["state"] == "waiting" for s in journal)


def finished(service: Service, tenant: Tenant, workflow: str, instance_id: str) -> Instance:
    def done() -> Instance | None:
        instance = service.instance(tenant, workflow, instance_id)
        return instance if instance.status in FINISHED else None

    found: Instance = wait_until(done, 60, f"{instance_id} to finish")
    return found


def drive(service: Service, tenant: Tenant, ids: list[str]) -> None:
    """Run `ids` of `wf` through their event wait to the end."""
    service.create_instances(tenant, "wf", [{"id": i} for i in ids])
    for instance_id in ids:
        wait_until(lambda i=instance_id: waiting_for_event(service, tenant, "wf", i), 60, f"{instance_id} to wait")
        service.send_event(tenant, "wf", instance_id, "go", {"by": instance_id})
    for instance_id in ids:
        assert finished(service, tenant, "wf", instance_id).status == "complete"


def stored(service: Service, tenant: Tenant) -> UsageCounts:
    """The counters as sums over the journal, its attempts and the instance rows."""
    t = (tenant.tenant_id,)
    with service.store.transaction() as tx:
        steps = tx.scalar("SELECT COUNT(*) AS n FROM journal WHERE tenant_id = ? AND kind = 'do' AND state = 'done'", t)
        attempts = tx.one(
            "SELECT COUNT(*), COALESCE(SUM(fuel), 0), COALESCE(SUM(duration_ms), 0), "
            f"COALESCE(SUM({ATTEMPT_BYTES}), 0) FROM attempts WHERE tenant_id = ?",
            t,
        )
        entry_bytes = tx.scalar(f"SELECT COALESCE(SUM({ENTRY_BYTES}), 0) AS n FROM journal WHERE tenant_id = ?", t)
        instances = tx.one(
            "SELECT COUNT(*), COALESCE(SUM(activations), 0), COALESCE(SUM(hot_resumes), 0), "
            "COALESCE(SUM(replayed_steps), 0), COALESCE(SUM(workflow_fuel), 0) FROM instances WHERE tenant_id = ?",
            t,
        )
    assert attempts is not None and instances is not None
    return UsageCounts(
        activations=int(instances[1]) + int(instances[2]),
        isolate_starts=int(instances[1]),
        replayed_steps=int(instances[3]),
        steps=int(steps),
        attempts=int(attempts[0]),
        fuel=int(attempts[1]),
        workflow_fuel=int(instances[4]),
        duration_ms=float(attempts[2]),
        journal_bytes=int(entry_bytes) + int(attempts[3]),
        instances=int(instances[0]),
    )


def assert_equal(used: UsageCounts, expected: UsageCounts) -> None:
    for name in USAGE_COUNTERS:
        if name == "duration_ms":
            assert used.duration_ms == pytest.approx(expected.duration_ms, rel=1e-9), name
        else:
            assert getattr(used, name) == getattr(expected, name), name


def test_usage_is_the_sum_over_the_journal(url: str, sandbox: Sandbox) -> None:
    # Hot resume on: the sleep, the retries' back-offs and the event wait go on in the parked isolate.
    service = run_service(url, sandbox)
    try:
        tenant = service.create_tenant("acme")[0]
        other = service.create_tenant("globex")[0]
        service.deploy(tenant, "wf", WORKFLOW)
        service.deploy(tenant, "simple", SIMPLE)
        service.deploy(other, "simple", SIMPLE)
        drive(service, tenant, ["hot1", "hot2"])
        service.create_instances(tenant, "simple", [{"id": f"s{n}"} for n in range(3)])
        service.create_instances(other, "simple", [{"id": "elsewhere"}])
        for instance_id in ("s0", "s1", "s2"):
            finished(service, tenant, "simple", instance_id)
        finished(service, other, "simple", "elsewhere")
    finally:
        service.stop()
        service.store.close()
    # Hot resume off: every wait ends its isolate and the next activation replays the journal.
    service = run_service(url, sandbox, park_memory_mb=0)
    try:
        drive(service, tenant, ["cold1"])
        report = service.usage.tenant(tenant)
        expected = stored(service, tenant)
        assert_equal(report.total, expected)
        # What the runs did, so that the sums above compare something.
        assert expected.instances == 6 and expected.steps == 3 * 2 + 3 * 3
        assert expected.attempts == 3 * (3 + 1 + 1 + 1) + 3 * 3  # flaky: 3 attempts; burn, bad, last: 1 each
        assert expected.replayed_steps > 0 and expected.isolate_starts < expected.activations
        assert expected.fuel > 0 and expected.journal_bytes > 0
        assert expected.workflow_fuel > 0  # the code between the steps, and every replay of it
        hot = service.instance(tenant, "wf", "hot1")
        cold = service.instance(tenant, "wf", "cold1")
        assert hot.hot_resumes > 0 and cold.activations > hot.activations

        # Per workflow and per day add up to the total; another tenant's usage is its own.
        by_workflow = service.usage.tenant(tenant, group_by="workflow")
        assert [row.key for row in by_workflow.rows] == ["simple", "wf"]
        assert by_workflow.total == report.total
        today = datetime.now(UTC).date().isoformat()
        assert report.rows[-1].key == today and report.rows[-1].counts == report.total
        assert len(report.rows) == 30 and all(row.counts == UsageCounts() for row in report.rows[:-1])
        assert_equal(service.usage.tenant(other).total, stored(service, other))
        operator = service.create_tenant("ops", operator=True)[0]
        everyone = service.usage.admin(operator, group_by="tenant")
        assert {row.key: row.counts for row in everyone.rows} == {
            "acme": report.total,
            "globex": service.usage.tenant(other).total,
        }

        # A restart from a step and a deletion remove journal rows: the bytes follow what is stored, while
        # what was used stays counted.
        # (the event its wait took is buffered again: the re-run takes it at once)
        service.control(tenant, "wf", "cold1", "restart", ("bad", 1))
        assert finished(service, tenant, "wf", "cold1").status == "complete"
        service.delete_instance(tenant, "simple", "s0")
        after = service.usage.tenant(tenant).total
        now_stored = stored(service, tenant)
        assert after.journal_bytes == now_stored.journal_bytes
        assert after.instances == report.total.instances  # created, whether kept or not
        assert after.attempts > now_stored.attempts and after.fuel >= report.total.fuel
    finally:
        service.stop()
        service.store.close()


@pytest.mark.parametrize(
    "seconds", [0.0, 86_399.999, 86_400.0, -0.001, -86_400.5, 1_800_000_000.0, 951_825_600.0, 253_402_300_799.999]
)
def test_the_usage_day_is_the_utc_date(seconds: float) -> None:
    """`day_of` (today's day made once) names the UTC date `datetime` gives: around midnight, leap days, year 9999."""
    assert day_of(seconds) == datetime.fromtimestamp(seconds, UTC).date().isoformat()
    assert day_of(seconds) == day_of(seconds)  # the second from the cache
