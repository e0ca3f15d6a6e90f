"""The worker pool on the real clock: concurrency, fairness limits, prompt timers, crash recovery."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pg import fresh_schema
from tenantflow.host import Sandbox
from tenantflow.runtime.engine import worker
from tenantflow.runtime.engine.executor import Executor
from tenantflow.runtime.engine.journal import InstanceJournal
from tenantflow.runtime.engine.worker import Committed
from tenantflow.runtime.errors import NotFound
from tenantflow.runtime.records import FINISHED, Claim, InstanceKey, Quotas
from tenantflow.runtime.service import Service
from tenantflow.runtime.store import open_store
from tenantflow.runtime.store.sqlite import SQLiteStore
from waiting import wait_until


@pytest.fixture
def live(tmp_path: Path, sandbox: Sandbox) -> Iterator[Service]:
    store = SQLiteStore(str(tmp_path / "tf.db"), synchronous="normal")
    service = Service(store, sandbox, workers=4).start()
    yield service
    service.stop()
    store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def live_any(request: pytest.FixtureRequest, sandbox: Sandbox) -> Iterator[Service]:
    """`live`, and the same on PostgreSQL."""
    if request.param == "sqlite":
        yield request.getfixturevalue("live")
        return
    store = open_store(fresh_schema(request.getfixturevalue("pg_server")))
    service = Service(store, sandbox, workers=4).start()
    yield service
    service.stop()
    store.close()


def test_thousand_concurrent_instances_complete(live: Service) -> None:
    tenant = live.create_tenant("many", Quotas(max_instances_per_minute=100_000))[0]
    live.deploy(tenant, "wf", "def run(event, step):\n    return [step.do(f's{i}', lambda: i) for i in range(3)]\n")
    for start in range(0, 1000, 100):
        live.create_instances(tenant, "wf", [{"id": f"i{n}"} for n in range(start, start + 100)])

    def all_done() -> bool:
        counts = {status: n for _, status, n in live.store.status_counts()}
        return counts.get("complete", 0) == 1000

    wait_until(all_done, 180, "1,000 instances to complete")
    sample = live.instance(tenant, "wf", "i999")
    assert sample.output == [0, 1, 2]


def test_a_create_hands_its_instances_to_free_workers_without_a_claim(
    live: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The creating process's free workers take the new instances in the create's own transaction; what did not
    fit, each ending activation leases for its slot in its end's commit (the dispatcher claims nothing), and
    every slot comes back."""
    claimed: list[int] = []
    claim = live.store.claim

    def counted(*args: Any, **kwargs: Any) -> list[Claim]:
        claims = claim(*args, **kwargs)
        claimed.append(len(claims))
        return claims

    chained: list[Claim] = []
    finish_and_claim = live.store.finish_and_claim

    def chaining(*args: Any, **kwargs: Any) -> tuple[bool, list[Claim]]:
        held, claims = finish_and_claim(*args, **kwargs)
        chained.extend(claims)
        return held, claims

    monkeypatch.setattr(live.store, "claim", counted)
    monkeypatch.setattr(live.store, "finish_and_claim", chaining)
    loads: list[Claim] = []
    load = live.store.load
    monkeypatch.setattr(live.store, "load", lambda claim: loads.append(claim) or load(claim))
    tenant = live.create_tenant("fast")[0]
    live.deploy(tenant, "wf", "def run(event, step):\n    return step.do('first', lambda: 1)\n")
    for n in range(5):
        (one,) = live.create_instances(tenant, "wf", [{"id": f"one{n}"}])
        wait_until(lambda i=one: live.store.instance(i.key).status == "complete", 30, "the instance to complete")
    assert sum(claimed) == 0 and loads == []  # the create knew what the activation needs
    wait_until(lambda: live.pool.slots.free() == 4, 10, "every slot to come back")
    many = live.create_instances(tenant, "wf", [{"id": f"many{n}"} for n in range(10)])
    for instance in many:
        wait_until(lambda i=instance: live.store.instance(i.key).status == "complete", 30, "the batch to complete")
    # 4 workers took 4 at once; their ends leased the other 6, whose activations load.
    assert sum(claimed) == 0 and len(chained) == 6 and set(loads) == set(chained)
    wait_until(lambda: live.pool.slots.free() == 4, 10, "every slot to come back")


def test_what_an_end_leased_runs_even_if_reporting_the_end_fails(
    live_any: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The end's commit leased the next instance for its slot: an error after it (its log line, its metrics)
    must not drop that claim, which would sit leased and unrun until its lease ran out."""

    def broken(*args: Any) -> None:
        raise RuntimeError("reporting is down")

    monkeypatch.setattr(Executor, "_log", staticmethod(broken))
    tenant = live_any.create_tenant("busy")[0]
    live_any.deploy(tenant, "wf", "def run(event, step):\n    return step.do('only', lambda: 1)\n")
    created = live_any.create_instances(tenant, "wf", [{"id": f"i{n}"} for n in range(12)])
    for instance in created:  # 4 slots: most of the 12 are leased by ends
        wait_until(
            lambda i=instance: live_any.store.instance(i.key).status == "complete", 15, "every instance to complete"
        )


def test_a_claim_held_after_stop_cancelled_what_it_holds_is_cancelled_at_once(live: Service) -> None:
    """An end's successor (or a create's hand-off) held after `stop` swept the cancel events ends at once."""
    pool = live.pool
    before, after = Claim(InstanceKey("t", "wf", "before"), 1), Claim(InstanceKey("t", "wf", "after"), 1)
    try:
        assert not pool._hold(before).is_set()
        pool.stopping.set()
        assert pool._hold(after).is_set()
    finally:
        pool.stopping.clear()
        for claim in (before, after):
            pool._release(claim)


def test_an_event_sent_before_a_handed_off_activation_starts_is_not_lost(
    live: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handed-off activation starts from what the create knew (no events): one sent in between is still
    found where the instance waits for it."""
    tenant = live.create_tenant("events")[0]
    source = (
        "def run(event, step):\n    return step.wait_for_event('go', event_type='go', timeout='1 minute')['payload']\n"
    )
    live.deploy(tenant, "wf", source)
    activate = live.executor.activate

    def late(claim: Claim, *args: Any) -> Any:
        live.send_event(tenant, "wf", claim.key.instance_id, "go", {"n": 1})
        return activate(claim, *args)

    monkeypatch.setattr(live.executor, "activate", late)
    (instance,) = live.create_instances(tenant, "wf", [{"id": "e1"}])
    wait_until(lambda: live.store.instance(instance.key).status == "complete", 30, "the instance to complete")
    assert live.instance(tenant, "wf", "e1").output == {"n": 1}


def _slow_commit(
    live: Service, monkeypatch: pytest.MonkeyPatch, then: Callable[[list[str]], None]
) -> tuple[threading.Event, list[str]]:
    """The create's transaction stays open after its hand-off until the activation runs, then `then(reached)`
    (which may raise: no commit). The activation's start, and `reached`: the names of the durable calls that reached
    the journal."""
    running = threading.Event()
    reached: list[str] = []
    run = live.executor._run

    def started(*args: Any) -> Any:
        running.set()
        return run(*args)

    monkeypatch.setattr(live.executor, "_run", started)
    step_begin = InstanceJournal.step_begin
    monkeypatch.setattr(
        InstanceJournal,
        "step_begin",
        lambda journal, call, *rest: reached.append(call.name) or step_begin(journal, call, *rest),
    )
    create_available = live.store.create_available

    def slow(*args: Any, claimed: Callable[[Any], None] | None = None, **kwargs: Any) -> Any:
        def adopt_and_wait(done: Any) -> None:
            assert claimed is not None
            claimed(done)
            assert running.wait(30), "the handed-off activation did not start before the commit"
            # The guest reaches its first durable call meanwhile, and the watcher checks what runs here (every
            # CANCEL_CHECK_S): the instance is not visible to its read yet, and is not taken for lost.
            time.sleep(0.6)
            then(reached)

        return create_available(*args, claimed=adopt_and_wait, **kwargs)

    monkeypatch.setattr(live.store, "create_available", slow)
    return running, reached


def test_a_handed_off_activation_starts_while_its_create_commits(
    live_any: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The activation starts in the create's transaction, before its commit; its step waits for the commit."""
    tenant = live_any.create_tenant("early")[0]
    live_any.deploy(tenant, "wf", "def run(event, step):\n    return step.do('first', lambda: 1)\n")
    running, reached = _slow_commit(live_any, monkeypatch, lambda reached: reached.append("(committing)"))
    (instance,) = live_any.create_instances(tenant, "wf", [{"id": "e1"}])
    assert running.is_set()
    wait_until(lambda: live_any.store.instance(instance.key).status == "complete", 30, "the instance to complete")
    assert reached == ["(committing)", "first"]  # the step began only after the transaction ended
    assert live_any.store.instance(instance.key).activations == 1  # not cancelled as lost, not run again


def test_a_settled_commit_lets_the_waiting_activation_through_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """The create's thread, its commit settled, goes on only once the activation waiting at its gate has passed it
    (both need the GIL: without the hand-over the create's thread went on and the activation waited for it)."""
    monkeypatch.setattr(worker, "HANDOFF_S", 5.0)  # however slow this machine is to wake the waiter
    committed = Committed()
    answers: list[bool] = []
    waiter = threading.Thread(target=lambda: answers.append(committed.wait()))
    waiter.start()
    wait_until(lambda: committed._waiting, 5, "the activation to block at its gate")
    committed.settle(True)
    assert committed._through.is_set()  # settle returned because the activation passed, not on its time-out
    waiter.join(5)
    assert answers == [True]


def test_a_settle_with_no_activation_waiting_does_not_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "HANDOFF_S", 5.0)
    for ok in (True, False):
        committed = Committed()
        started = time.perf_counter()
        committed.settle(ok)
        assert time.perf_counter() - started < 1.0
        assert committed.ended() and committed.wait() is ok
    lost = Committed()
    waiter = threading.Thread(target=lost.wait)
    waiter.start()
    wait_until(lambda: lost._waiting, 5, "the activation to block at its gate")
    started = time.perf_counter()
    lost.settle(False)  # a create that did not commit: its activations end, nobody waits for them
    assert time.perf_counter() - started < 1.0
    waiter.join(5)


def test_a_create_that_does_not_commit_ends_its_handed_off_activations(
    live_any: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its activations were running meanwhile: they end cancelled, having begun no step and written nothing."""
    tenant = live_any.create_tenant("lost")[0]
    live_any.deploy(tenant, "wf", "def run(event, step):\n    return step.do('first', lambda: 1)\n")

    def fail(reached: list[str]) -> None:
        raise RuntimeError("the commit failed")

    running, reached = _slow_commit(live_any, monkeypatch, fail)
    with pytest.raises(RuntimeError, match="the commit failed"):
        live_any.create_instances(tenant, "wf", [{"id": "gone"}])
    assert running.is_set()
    wait_until(lambda: live_any.pool.slots.free() == 4, 10, "the activation to end and its slot to come back")
    assert reached == []
    with pytest.raises(NotFound):
        live_any.instance(tenant, "wf", "gone")


def test_due_timer_fires_promptly(live: Service) -> None:
    tenant = live.create_tenant("timers")[0]
    source = """
def run(event, step):
    step.sleep("short", 300)
    return step.do("after", lambda: 1)
"""
    live.deploy(tenant, "wf", source)
    instances = live.create_instances(tenant, "wf", [{"id": f"t{n}"} for n in range(5)])
    for instance in instances:
        wait_until(lambda i=instance: live.store.instance(i.key).status == "complete", 10, "timer")
    lateness = []
    for instance in instances:
        steps = live.journal(tenant, "wf", instance.instance_id)["steps"]
        wake = steps[0]["wake_at"]
        lateness.append(steps[1]["attempt_log"][0]["finished_at"] - wake)
    # the step after the sleep finished within 50 ms of the wake time (activation and replay included)
    assert max(lateness) < 0.05, lateness


def test_per_tenant_concurrency_limit(live: Service) -> None:
    tenant = live.create_tenant("one", Quotas(max_concurrent=1))[0]
    source = """
def run(event, step):
    def busy():
        total = 0
        for i in range(300_000):
            total += i
        return total
    return step.do("busy", busy)
"""
    live.deploy(tenant, "wf", source)
    instances = live.create_instances(tenant, "wf", [{"id": f"c{n}"} for n in range(4)])
    for instance in instances:
        wait_until(lambda i=instance: live.store.instance(i.key).status == "complete", 30, "completion")
    spans = []
    for instance in instances:
        attempt = live.journal(tenant, "wf", instance.instance_id)["steps"][0]["attempt_log"][0]
        spans.append((attempt["finished_at"] - attempt["duration_ms"] / 1000, attempt["finished_at"]))
    spans.sort()
    for (_, end), (begin, _) in zip(spans, spans[1:], strict=False):
        assert begin >= end - 0.002, f"two activations of a max_concurrent=1 tenant overlapped: {spans}"


WORKER = """
import sys, time
from tenantflow.runtime.service import Service
service = Service.open(sys.argv[1], workers=2, lease_s=60.0).start()
print("ready", flush=True)
while True:
    time.sleep(1)
"""

CRASHY = """
import random
def run(event, step):
    values = []
    for i in range(40):
        def work():
            total = 0
            for k in range(20_000):
                total += k
            return random.random()
        values.append(step.do("work", work))
        if i % 10 == 9:
            step.sleep("breathe", 20)
    return values
"""


def _committed(db: Path) -> dict[tuple[str, int], bytes]:
    connection = sqlite3.connect(db)
    try:
        rows = connection.execute(
            "SELECT instance_id, position, result FROM journal WHERE kind = 'do' AND state = 'done'"
        ).fetchall()
    finally:
        connection.close()
    return {(r[0], r[1]): r[2] for r in rows}


def _start_worker(db: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", WORKER, f"sqlite:///{db}"], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def test_sigkill_mid_workflow_loses_and_reruns_no_committed_step(tmp_path: Path, sandbox: Sandbox) -> None:
    db = tmp_path / "crash.db"
    store = SQLiteStore(str(db))
    setup = Service(store, sandbox)
    tenant = setup.create_tenant("crash")[0]
    setup.deploy(tenant, "wf", CRASHY)
    setup.create_instances(tenant, "wf", [{"id": f"k{n}"} for n in range(6)])
    store.close()

    snapshots = []
    for _ in range(3):
        worker = _start_worker(db)
        time.sleep(0.4)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        snapshots.append(_committed(db))
    assert snapshots[-1], "no step committed before the kills; the test proves nothing"

    worker = _start_worker(db)
    try:
        check = SQLiteStore(str(db))
        try:

            def finished() -> bool:
                return all(s in FINISHED for _, s, _ in check.status_counts())

            wait_until(finished, 120, "recovery after SIGKILL")
            final = _committed(db)
            for snapshot in snapshots:
                for key, result in snapshot.items():
                    assert final[key] == result, f"committed step {key} changed after a crash"
            with check.transaction() as tx:
                statuses = tx.execute("SELECT status FROM instances")
                rerun = tx.execute("SELECT COUNT(*) FROM attempts WHERE ok = 1 AND attempt > 1")
                per_position = tx.execute(
                    "SELECT COUNT(*) FROM journal WHERE kind = 'do' GROUP BY instance_id ORDER BY instance_id"
                )
            assert {s[0] for s in statuses} == {"complete"}
            assert rerun[0][0] == 0
            assert [c[0] for c in per_position] == [40] * 6
            for n in range(6):
                instance = check.instance(setup._key(tenant, "wf", f"k{n}"))
                steps = [e for e in check.journal(instance.key)[0] if e.kind == "do"]
                assert instance.output == [float(e.result or "0") for e in steps]
        finally:
            check.close()
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
