"""Retention in the store, on SQLite and PostgreSQL: when an instance finished, a workflow's retention, and
purging the instances past it in bounded batches (from several processes at once too)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pg import fresh_schema
from tenantflow.runtime.errors import NotFound
from tenantflow.runtime.records import AttemptRecord, Entry, InstanceKey, Quotas, Tenant, Version
from tenantflow.runtime.retention import Retention, check_retention
from tenantflow.runtime.store import SQLStore, open_store, purge
from tenantflow.runtime.store import core as store_core
from tenantflow.runtime.store.schema import MIGRATIONS

T0 = 1_800_000_000.0
HOUR = 3600.0
DAY = 86_400.0
Opener = Callable[[], SQLStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tf.db'}"
    return fresh_schema(request.getfixturevalue("pg_server"))


@pytest.fixture
def open_more(backend: str) -> Iterator[Opener]:
    """Open a store on the same database (another process, as far as the store can tell)."""
    opened: list[SQLStore] = []

    def opener() -> SQLStore:
        opened.append(open_store(backend))
        return opened[-1]

    yield opener
    for s in opened:
        s.close()


@pytest.fixture
def store(open_more: Opener) -> SQLStore:
    s = open_more()
    for name in ("acme", "zeta"):
        s.create_tenant(Tenant(name, name, Quotas(), T0), f"hash-{name}")
    return s


def version(store: SQLStore, tenant: str = "acme", workflow: str = "wf") -> Version:
    try:
        return store.latest_version(tenant, workflow)
    except NotFound:
        return store.deploy(tenant, workflow, "src", "h-src", T0)[0]


def start(store: SQLStore, instance_id: str, tenant: str = "acme", workflow: str = "wf") -> InstanceKey:
    store.create_instances(tenant, version(store, tenant, workflow), [(instance_id, {"p": 1})], T0)
    return InstanceKey(tenant, workflow, instance_id)


def finished(
    store: SQLStore, instance_id: str, status: str, at: float, tenant: str = "acme", workflow: str = "wf"
) -> InstanceKey:
    """An instance that ran a step, was sent an event and finished `status` at `at` (the only one runnable)."""
    key = start(store, instance_id, tenant, workflow)
    store.send_event(key, "go", {"x": 1}, at)
    if status == "terminated":
        store.terminate(key, at)
        return key
    (claim,) = store.claim("w1", 1, at, 30.0, {})
    assert claim.key == key
    entry = Entry(0, "s", "do", "done", attempts=1, result='"ok"', created_at=at, updated_at=at)
    store.record(claim, entry, AttemptRecord(0, 1, True, None, None, 10, 1.5, at), at)
    if status == "complete":
        assert store.finish(claim, at, status="complete", output='"done"')
    else:
        assert store.host_fault(claim, at, at + 1, 1)  # errored at once
    return key


def finished_at(store: SQLStore, key: InstanceKey) -> float | None:
    with store.transaction() as tx:
        value = tx.scalar(
            "SELECT finished_at FROM instances WHERE tenant_id = ? AND workflow = ? AND instance_id = ?",
            (key.tenant_id, key.workflow, key.instance_id),
        )
    return None if value is None else float(value)


def rows(store: SQLStore, key: InstanceKey) -> dict[str, int]:
    """How many rows the instance has in each of its tables."""
    counts = {}
    with store.transaction() as tx:
        for table in ("instances", "journal", "attempts", "events"):
            counts[table] = int(
                tx.scalar(
                    f"SELECT COUNT(*) AS n FROM {table} WHERE tenant_id = ? AND workflow = ? AND instance_id = ?",
                    (key.tenant_id, key.workflow, key.instance_id),
                )
            )
    return counts


def ids(keys: list[InstanceKey]) -> list[str]:
    return [k.instance_id for k in keys]


def exists(store: SQLStore, key: InstanceKey) -> bool:
    try:
        store.instance(key)
    except NotFound:
        return False
    return True


# -- when an instance finished ----------------------------------------------------------------------


def test_an_instance_records_when_it_finished_and_a_restart_forgets_it(store: SQLStore) -> None:
    complete = finished(store, "c", "complete", T0 + 5)
    errored = finished(store, "e", "errored", T0 + 6)
    terminated = finished(store, "t", "terminated", T0 + 7)
    assert [finished_at(store, k) for k in (complete, errored, terminated)] == [T0 + 5, T0 + 6, T0 + 7]
    waiting = start(store, "w")
    (claim,) = store.claim("w1", 1, T0 + 8, 30.0, {})
    assert store.finish(claim, T0 + 9, status="waiting", wake_at=T0 + 100)
    assert finished_at(store, waiting) is None
    store.restart(complete, T0 + 10)
    store.restart(errored, T0 + 10, ("s", 1))
    assert finished_at(store, complete) is None and finished_at(store, errored) is None


def test_instances_finished_before_the_migration_count_from_their_last_update(
    monkeypatch: pytest.MonkeyPatch, open_more: Opener
) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(store_core, "MIGRATIONS", MIGRATIONS[:6])  # the schema before finished_at
        old = open_more()
        old.create_tenant(Tenant("acme", "acme", Quotas(), T0), "hash-acme")
        # The rows as that schema's code wrote them (today's writes tables it does not have yet, e.g. usage).
        done, running = InstanceKey("acme", "wf", "done"), InstanceKey("acme", "wf", "running")
        with old.transaction() as tx:
            for key, status, updated in ((done, "complete", T0 + 9), (running, "running", T0)):
                tx.run(
                    "INSERT INTO instances (tenant_id, workflow, instance_id, version, source_hash, status, "
                    "created_at, updated_at) VALUES (?, ?, ?, 1, 'h', ?, ?, ?)",
                    (key.tenant_id, key.workflow, key.instance_id, status, T0, updated),
                )
    new = open_more()
    assert finished_at(new, done) == T0 + 9
    assert finished_at(new, running) is None


# -- a workflow's retention -------------------------------------------------------------------------------


def test_a_retention_is_set_read_replaced_and_removed(store: SQLStore) -> None:
    version(store)
    assert store.retention("acme", "wf") == Retention()  # forever by default
    store.set_retention("acme", "wf", check_retention({"complete": "7 days", "errored": "30 days"}), T0)
    assert store.retention("acme", "wf") == Retention(7 * DAY, 30 * DAY, None)
    assert store.retention("zeta", "wf") == Retention()  # another tenant's workflow of the same name
    store.set_retention("acme", "wf", check_retention({"terminated": "1 day"}), T0)
    assert store.retention("acme", "wf") == Retention(None, None, DAY)
    store.set_retention("acme", "wf", Retention(), T0)
    with store.transaction() as tx:
        assert tx.scalar("SELECT COUNT(*) AS n FROM retention") == 0  # forever: no row
    with pytest.raises(NotFound):
        store.set_retention("acme", "nope", Retention(HOUR), T0)


def test_deleting_a_workflow_deletes_its_retention(store: SQLStore) -> None:
    finished(store, "c", "complete", T0)
    store.set_retention("acme", "wf", Retention(HOUR), T0)
    store.delete_versions("acme", "wf")
    assert store.retention("acme", "wf") == Retention()
    assert store.expired_workflows(T0 + DAY, ("", ""), 10) == []
    assert store.purge_expired("acme", "wf", T0 + DAY, 10) == []  # the workflow's own deletion purges them


# -- purging -----------------------------------------------------------------------------------------------


def test_only_instances_past_their_retention_go_with_all_they_store(store: SQLStore) -> None:
    old = finished(store, "old", "complete", T0)
    recent = finished(store, "recent", "complete", T0 + 3000)
    errored = finished(store, "errored", "errored", T0)
    terminated = finished(store, "terminated", "terminated", T0)  # kept forever: no retention for it
    other_workflow = finished(store, "other", "complete", T0, workflow="wf2")
    other_tenant = finished(store, "theirs", "complete", T0, tenant="zeta")
    unfinished = start(store, "unfinished")
    store.pause(unfinished, T0)
    store.set_retention("acme", "wf", check_retention({"complete": "1 hour", "errored": "1 day"}), T0)
    assert rows(store, old) == {"instances": 1, "journal": 1, "attempts": 1, "events": 1}

    assert store.expired_workflows(T0 + HOUR, ("", ""), 10) == []  # exactly its retention: not past it
    assert store.expired_workflows(T0 + HOUR + 1, ("", ""), 10) == [("acme", "wf")]
    assert ids(store.purge_expired("acme", "wf", T0 + HOUR + 1, 100)) == ["old"]
    assert rows(store, old) == {"instances": 0, "journal": 0, "attempts": 0, "events": 0}
    assert store.purge_expired("acme", "wf", T0 + HOUR + 1, 100) == []
    assert store.expired_workflows(T0 + HOUR + 1, ("", ""), 10) == []

    later = T0 + 10 * DAY
    assert sorted(ids(store.purge_expired("acme", "wf", later, 100))) == ["errored", "recent"]
    assert not exists(store, recent) and not exists(store, errored)
    for kept in (terminated, other_workflow, other_tenant, unfinished):
        assert exists(store, kept), kept
    assert store.expired_workflows(later, ("", ""), 10) == []


def test_a_purge_batch_is_bounded_in_instances_and_in_journal_rows(
    store: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(7):
        finished(store, f"i{n}", "terminated", T0 + n)
    store.set_retention("acme", "wf", Retention(terminated_s=HOUR), T0)
    now = T0 + DAY
    assert ids(store.purge_expired("acme", "wf", now, 3)) == ["i0", "i1", "i2"]  # oldest first
    monkeypatch.setattr(purge, "PURGE_ROWS", 2)  # each instance counts its steps (none here) and itself
    assert ids(store.purge_expired("acme", "wf", now, 3)) == ["i3", "i4"]
    monkeypatch.setattr(purge, "PURGE_ROWS", 1)  # one instance at least, even past the budget
    assert ids(store.purge_expired("acme", "wf", now, 3)) == ["i5"]
    assert ids(store.purge_expired("acme", "wf", now, 3)) == ["i6"]
    assert store.purge_expired("acme", "wf", now, 3) == []


def test_expired_workflows_come_in_key_order_after_a_cursor(store: SQLStore) -> None:
    for tenant, workflow in (("zeta", "wf"), ("acme", "b"), ("acme", "a")):
        finished(store, f"{tenant}-{workflow}", "complete", T0, tenant=tenant, workflow=workflow)
        store.set_retention(tenant, workflow, Retention(HOUR), T0)
    now = T0 + DAY
    assert store.expired_workflows(now, ("", ""), 2) == [("acme", "a"), ("acme", "b")]
    assert store.expired_workflows(now, ("acme", "b"), 2) == [("zeta", "wf")]
    assert store.expired_workflows(now, ("zeta", "wf"), 2) == []


def test_a_tenant_being_deleted_is_left_to_its_own_purge(store: SQLStore) -> None:
    key = finished(store, "c", "complete", T0, tenant="zeta")
    store.set_retention("zeta", "wf", Retention(HOUR), T0)
    store.mark_deleted("zeta", T0 + 1)
    assert store.purge_expired("zeta", "wf", T0 + DAY, 10) == []
    assert rows(store, key)["instances"] == 1


def test_several_processes_purge_at_once_each_instance_once(store: SQLStore, open_more: Opener) -> None:
    keys = [finished(store, f"i{n:02d}", "terminated", T0 + n) for n in range(40)]
    store.set_retention("acme", "wf", Retention(terminated_s=HOUR), T0)
    stores = [store, open_more(), open_more()]

    def purge_all(s: SQLStore) -> list[str]:
        purged: list[str] = []
        while batch := s.purge_expired("acme", "wf", T0 + DAY, 3):
            purged += ids(batch)
        return purged

    with ThreadPoolExecutor(len(stores)) as pool:
        results = list(pool.map(purge_all, stores))
    purged = [i for result in results for i in result]
    assert sorted(purged) == [k.instance_id for k in keys]  # each once, none left
    assert store.expired_workflows(T0 + DAY, ("", ""), 10) == []
