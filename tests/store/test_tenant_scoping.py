"""Every statement the store issues reaches a tenant's rows through a tenant_id-leading key (see scoping.py).

conftest.py checks the statements of every store test against the rule. Here: the rule itself catches what it
should; one run of every store operation, on each backend, issues no statement outside it, and uses every
listed exception (so the list holds nothing stale); on SQLite, no statement bypasses the capture; and each
exception reads through its scheduling index, whose first column is a scheduling column, never by scanning
the instances table.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg import fresh_schema
from scoping import (
    CROSS_TENANT,
    SCHEDULING_COLUMNS,
    Capture,
    CrossTenant,
    blocks,
    canonical,
    capturing,
    check,
    render,
    table_refs,
    tokenize,
)
from tenantflow.runtime.errors import Conflict, InvalidState
from tenantflow.runtime.records import Entry, Handoff, InstanceFilter, InstanceKey, ListPosition, Quotas, Tenant
from tenantflow.runtime.retention import Retention
from tenantflow.runtime.store import SQLStore, open_store
from tenantflow.runtime.store.postgres import PostgresStore
from tenantflow.runtime.store.sqlite import SQLiteStore
from test_store import LEASE, T0, done_entry, ok_attempt

# What a store offers that issues no SQL of its own, or only through the others.
NOT_OPERATIONS = frozenset({"close", "listen", "read", "snapshot", "transaction", "write"})


# -- the rule ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "table"),
    [
        ("SELECT status FROM instances WHERE workflow = ? AND instance_id = ?", "instances"),
        ("UPDATE instances SET stored_bytes = ? WHERE instance_id = ?", "instances"),
        ("DELETE FROM journal WHERE workflow = ? AND instance_id = ?", "journal"),
        ("SELECT seq FROM events WHERE tenant_id = ? OR instance_id = ?", "events"),
        ("SELECT 1 FROM journal j JOIN attempts a ON a.instance_id = j.instance_id WHERE j.tenant_id = ?", "attempts"),
        (
            "SELECT source FROM sources WHERE tenant_id = ? AND source_hash IN (SELECT source_hash FROM versions)",
            "versions",
        ),
        ("INSERT INTO events (workflow, tenant_id, instance_id, seq) VALUES (?, ?, ?, ?)", "events"),
        ("SELECT MIN(wake_at) FROM instances WHERE status IN ('queued', 'waiting')", "instances"),  # not as listed
        ("SELECT COUNT(*) FROM instances WHERE tenant_id <> ?", "instances"),
        (
            "WITH fenced AS (UPDATE instances SET steps = 1 WHERE tenant_id = ? RETURNING status), then_0 AS "
            "(UPDATE events SET consumed_at = 1 WHERE seq = ? AND EXISTS (SELECT 1 FROM fenced)) SELECT * FROM fenced",
            "events",
        ),
    ],
)
def test_the_rule_catches_a_statement_without_tenant_id(sql: str, table: str) -> None:
    findings = check(sql)
    assert [(f.table, f.allowed_by) for f in findings] == [(table, None)], findings


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT status FROM instances WHERE tenant_id = ? AND workflow = ? AND instance_id = ?",
        "UPDATE instances SET fence = fence + 1 WHERE (tenant_id, workflow, instance_id) IN "
        "(SELECT tenant_id, workflow, instance_id FROM instances WHERE tenant_id = ? FOR UPDATE SKIP LOCKED)",
        "SELECT t.tenant_id, (SELECT MIN(d.wake_at) FROM instances d WHERE d.tenant_id = t.tenant_id) FROM tenants t",
        "INSERT INTO journal (tenant_id, workflow) SELECT ?, ? WHERE EXISTS (SELECT 1 FROM instances "
        "WHERE tenant_id = ?) ON CONFLICT (tenant_id, workflow) DO UPDATE SET workflow = excluded.workflow",
    ],
)
def test_the_rule_lets_keyed_statements_pass(sql: str) -> None:
    assert check(sql) == []


def test_every_exception_is_one_block_the_rule_would_refuse() -> None:
    for exception in CROSS_TENANT:
        findings = check(exception.sql)
        assert [f.allowed_by for f in findings] == [exception], exception.name
        assert exception.reason


# -- the store -----------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLStore]:
    url = f"sqlite:///{tmp_path / 'tf.db'}" if request.param == "sqlite" else None
    s = open_store(url or fresh_schema(request.getfixturevalue("pg_server")))
    yield s
    s.close()


class Calls:
    """The store, noting which of its operations were called."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store
        self.names: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        self.names.add(name)
        return getattr(self.store, name)


def operations() -> set[str]:
    return {n for n in dir(SQLStore) if not n.startswith("_") and callable(getattr(SQLStore, n))} - NOT_OPERATIONS


def exercise(s: Any) -> None:
    """Every store operation, on two tenants, through the paths that issue different statements."""
    s.migrate()
    s.create_tenant(Tenant("acme", "Acme", Quotas(max_concurrent=4), T0), "hash-acme")
    s.create_tenant(Tenant("zeta", "Zeta", Quotas(max_concurrent=1), T0), "hash-zeta")
    assert s.tenant_by_key("hash-acme") == s.tenant("acme")
    assert len(s.tenants()) == 2
    version, _ = s.deploy("acme", "wf", "src", "h1", T0)
    assert s.deploy("acme", "wf", "src", "h1", T0)[1] is False
    zeta, _ = s.deploy("zeta", "wf", "src", "h1", T0)
    assert s.versions("acme", "wf", None, 10) == [version] and s.workflows("acme") == [version]
    assert s.latest_version("acme", "wf") == version and s.version("acme", "wf", 1) == version
    assert s.source("acme", "h1") == "src"
    s.create_instances("acme", version, [("i1", {"p": 1}), ("i2", None), ("i3", None)], T0)
    with pytest.raises(Conflict):
        s.create_instances("acme", version, [("i4", None), ("i1", None)], T0)
    s.create_instances("zeta", zeta, [("z1", None), ("z2", None)], T0)
    k1, k2, k3 = (InstanceKey("acme", "wf", i) for i in ("i1", "i2", "i3"))
    assert s.instance(k1).params == {"p": 1}
    assert [i.instance_id for i in s.instances("acme", InstanceFilter("wf", "queued"), 10)] == ["i3", "i2", "i1"]
    assert [i.instance_id for i in s.instances("acme", InstanceFilter("wf"), 1, ListPosition(T0, "wf", "i2"))] == ["i1"]
    everything = InstanceFilter(None, "queued", created_after=T0 - 1, created_before=T0 + 1)
    assert [i.instance_id for i in s.instances("acme", everything, 1, ListPosition(T0, "wf", "i3"))] == ["i2"]
    assert s.status_counts()
    assert s.next_wake() == T0

    claims = {c.key.instance_id: c for c in s.claim("w1", 4, T0, LEASE, max_per_tenant=2)}
    assert set(claims) == {"i1", "i2", "z1"}
    c1 = claims["i1"]
    assert s.load(c1).instance.params == {"p": 1}
    s.send_event(k1, "go", {"x": 1}, T0 + 1)
    wait = Entry(1, "approval", "wait", "done", result='{"type": "go"}', event_type="go", created_at=T0)
    s.record(c1, wait, None, T0 + 1, consumed_event=1, before=s.recordings(c1, [(done_entry(0), ok_attempt(0), None)]))
    assert s.record_all(c1, s.recordings(c1, [(done_entry(0), None, None)])) == "running"  # step 0 again, as it was
    s.heartbeat("w1", list(claims.values()), T0 + LEASE)
    assert set(s.held("w1", list(claims.values()))) == set(claims.values())
    assert s.finish(c1, T0 + 2, status="waiting", waiting_for="later")
    s.send_event(k1, "later", None, T0 + 3)
    # i2's end leases what its slot runs next: i3, acme's only due instance (zeta's z1 already runs).
    # i2's two steps, with its end
    last = s.recordings(
        claims["i2"], [(done_entry(0), ok_attempt(0), None), (done_entry(1, name="t"), ok_attempt(1), None)]
    )
    held, successors = s.finish_and_claim(
        claims["i2"],
        T0 + 2,
        Handoff("w1", 1, LEASE, 2),
        status="complete",
        output='"done"',
        log="a log",
        before=last,
    )
    assert last.status == "running"
    assert held and [c.key.instance_id for c in successors] == ["i3"]
    assert sorted(s.lease_owners()) == ["w1"]
    assert s.expire_leases(["w1"]) == 2  # z1's and i3's leases: runnable again at once

    again = {c.key.instance_id: c for c in s.claim("w2", 4, T0 + 4, LEASE)}
    assert {"i1", "z1"} <= set(again)
    # Hot resume: i1's isolate parks at a timer (still leased by w2), is due, and goes on.
    parked = s.park(
        again["i1"],
        T0 + 4,
        wake_at=T0 + 4.5,
        waiting_for="later2",
        lease_until=T0 + 4 + LEASE,
        log="p",
        replayed=2,
        activations=1,
        before=s.recordings(again["i1"], [(done_entry(0), None, None)]),  # its step 0 rewritten as it was
    )
    assert parked is not None and parked.status == "waiting"
    parked_row = s.held("w2", [again["i1"]])[again["i1"]]
    assert parked_row.status == "waiting" and not parked_row.due(T0 + 4) and parked_row.due(T0 + 4.6)
    row, events = s.unpark(again["i1"], T0 + 4.6, T0 + 4.6 + LEASE, 4)
    assert row is not None and events is not None
    assert s.host_fault(again["i1"], T0 + 5, T0 + 6, 3) is False  # retried later
    assert s.host_fault(again["z1"], T0 + 5, T0 + 6, 1) is True  # errored

    s.pause(k1, T0 + 8)
    s.resume(k1, T0 + 9)
    s.terminate(k3, T0 + 9)
    s.restart(k3, T0 + 10)
    s.pause(k3, T0 + 10)
    s.upgrade(k3, version.version, version.source_hash, s.instance(k3).fence, T0 + 10)
    with pytest.raises(InvalidState):  # the fence moved on: a check made before is stale
        s.upgrade(k3, version.version, version.source_hash, s.instance(k3).fence - 1, T0 + 10)
    forked = s.fork(k1, "f1", version, ("approval", 1), T0 + 10, per_minute=100)
    assert forked.steps == 1 and len(s.journal(forked.key)[0]) == 1
    assert [e.position for e in s.journal(k1)[0]] == [0, 1]
    assert s.journal_page(k1, limit=1).next_after == 0
    assert s.stored_bytes("acme", max_age_s=0) > 0
    assert not s.storage_exhausted("acme", Quotas())
    s.ping()

    # The admin API's writes: quotas, keys, and deleting a tenant (marked, purged a batch at a time).
    assert s.change_quotas("zeta", lambda q: Quotas(max_concurrent=2)).quotas.max_concurrent == 2
    s.set_key("zeta", "hash-zeta-2")
    assert s.mark_deleted("zeta", T0 + 11) == (1, 2)
    assert s.deleting_tenants() == ["zeta"]
    assert s.purge_instances("zeta", 10, leased=True) == []
    assert len(s.purge_instances("zeta", 1)) == 1
    assert len(s.purge_instances("zeta", 10)) == 1
    assert s.purge_instances("zeta", 10) == []
    s.finish_purge("zeta")
    assert s.deleting_tenants() == []

    # Deleting a finished instance, and a workflow (versions first, then its instances in batches).
    gone, _ = s.deploy("acme", "gone", "src2", "h2", T0)
    s.create_instances("acme", gone, [("g1", None), ("g2", None)], T0)
    g1, g2 = InstanceKey("acme", "gone", "g1"), InstanceKey("acme", "gone", "g2")
    with pytest.raises(InvalidState):
        s.delete_versions("acme", "gone")
    with pytest.raises(InvalidState):
        s.delete_instance(g1)
    s.terminate(g1, T0)
    s.terminate(g2, T0)
    s.delete_instance(g1)
    assert s.delete_versions("acme", "gone") == 1
    assert s.delete_instances("acme", "gone", 10) == 1 and s.delete_instances("acme", "gone", 10) == 0

    assert s.workflow_counts("acme", "wf")["queued"] >= 1
    assert s.count_instances("acme", InstanceFilter(created_after=T0 - 1, id_prefix="i"), 100)["queued"] >= 1
    assert [i.instance_id for i in s.instances("acme", InstanceFilter(id_prefix="i"), 2)] == ["i1", "i2"]
    assert s.instances("acme", InstanceFilter("wf"), 5, before=ListPosition(T0, "wf", "i1"))

    # Retention: set, read, and the purge of what is past it (i2 completed at T0 + 2).
    s.set_retention("acme", "wf", Retention(complete_s=60.0), T0)
    assert s.retention("acme", "wf").complete_s == 60.0
    assert s.expired_workflows(T0 + 100, ("", ""), 10) == [("acme", "wf")]
    assert [k.instance_id for k in s.purge_expired("acme", "wf", T0 + 100, 10)] == ["i2"]

    # A batch that creates what it can: i1 is taken, i9 is new.
    made, taken, _ = s.create_available("acme", version, [("i1", None), ("i9", None)], T0 + 12)
    assert [i.instance_id for i in made] == ["i9"] and taken == ["i1"]
    # A create that hands its instance to the creating process's worker (nothing else is due before T0).
    handed = s.create_available("acme", version, [("h1", None)], T0 - 100, handoff=Handoff("w3", 1, LEASE, 4))
    assert [c.key.instance_id for c in handed.claims] == ["h1"]

    # Usage: one tenant's, and (for an operator) every tenant's, through the tenant registry.
    day = s.usage("acme", "2000-01-01", "2100-01-01", "day")
    assert sum(line.counts.instances for line in day) == 8  # i1-i3, f1, g1, g2, i9, h1
    assert {line.key for line in s.usage(None, "2000-01-01", "2100-01-01", "tenant")} == {"acme"}


def test_every_statement_of_every_operation_is_scoped_by_tenant(store: SQLStore) -> None:
    calls = Calls(store)
    with capturing() as capture:
        exercise(calls)
    assert operations() <= calls.names, operations() - calls.names
    findings = capture.findings()
    unscoped = [f for f in findings if f.allowed_by is None]
    assert not unscoped, unscoped
    used = {f.allowed_by.name for f in findings if f.allowed_by is not None}
    assert used == {c.name for c in CROSS_TENANT}, "listed but never issued: " + str(
        {c.name for c in CROSS_TENANT} - used
    )


def test_no_statement_bypasses_the_capture_on_sqlite(tmp_path: Path) -> None:
    """SQLite reports every statement it runs: as many as the capture saw, but for transaction control."""
    store = SQLiteStore(str(tmp_path / "tf.db"))
    traced: list[str] = []
    control = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|PRAGMA)\b", re.IGNORECASE)
    try:
        connections = (store._connection, store._reader)  # the writer's and the reads'
        with capturing() as capture:
            for connection in connections:
                connection.set_trace_callback(lambda sql: traced.append(sql) if not control.match(sql) else None)
            exercise(store)
            for connection in connections:
                connection.set_trace_callback(None)
    finally:
        store.close()
    assert capture.count == len(traced) >= 50


# -- the exceptions read through scheduling indexes --------------------------------------------------------


def _statements_with(capture: Capture, exception: CrossTenant) -> list[tuple[str, tuple[Any, ...]]]:
    block = canonical(exception.sql)
    return [
        (s.sql, s.params)
        for s in capture.statements.values()
        if any(render(b) == block for b in blocks(tokenize(s.sql)))
    ]


def _instance_aliases(sql: str) -> set[str]:
    return {r.alias for b in blocks(tokenize(sql)) for r in table_refs(b) if r.table == "instances"}


def _sqlite_plan(store: SQLStore, sql: str, params: tuple[Any, ...]) -> tuple[set[str], list[str]]:
    """The indexes of instances the plan reads, and its full scans of instances."""
    aliases = _instance_aliases(sql)
    indexes, scans = set(), []
    with store.transaction() as tx:
        result = tx.run("EXPLAIN QUERY PLAN " + sql, params)
    for row in result.rows:
        detail = dict(zip(result.names, row, strict=True))["detail"]
        match = re.match(r"(SCAN|SEARCH) (\w+)(?: USING (?:COVERING )?INDEX (\w+)| USING (PRIMARY KEY))?", detail)
        if match is None or match.group(2) not in aliases:
            continue
        index = match.group(3) or match.group(4)
        if index is None:
            scans.append(detail)
        else:
            indexes.add(index)
    return indexes, scans


def _sqlite_first_column(store: SQLStore, index: str) -> str:
    if index == "PRIMARY KEY":
        return "tenant_id"
    with store.transaction() as tx:
        result = tx.run(f"PRAGMA index_info({index})")
    return str(min((dict(zip(result.names, r, strict=True)) for r in result.rows), key=lambda c: c["seqno"])["name"])


def _pg_plan(store: PostgresStore, sql: str, params: tuple[Any, ...]) -> tuple[set[str], list[str]]:
    """As _sqlite_plan, with sequential scans priced out: a Seq Scan of instances means no index would do."""
    with store.transaction() as tx:
        tx.run("SET LOCAL enable_seqscan = off")
        plan = tx.run("EXPLAIN (FORMAT JSON) " + sql, params).scalar()
    indexes, scans = set(), []

    def walk(node: dict[str, Any]) -> None:
        if node.get("Relation Name") == "instances" and node["Node Type"] == "Seq Scan":
            scans.append(node["Node Type"])
        if "Index Name" in node:
            indexes.add(node["Index Name"])
        for child in node.get("Plans", ()):
            walk(child)

    walk(plan[0]["Plan"])
    return indexes, scans


def _pg_first_column(store: PostgresStore, index: str) -> str:
    with store.read() as tx:
        return str(
            tx.scalar(
                "SELECT a.attname AS name FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = i.indkey[0] WHERE i.indexrelid = CAST(? AS regclass)",
                (index,),
            )
        )


def backlog(store: SQLStore, tenants: int = 20, each: int = 500) -> None:
    """Many instances waiting and some running, as the planner should see them (PostgreSQL keeps statistics
    by itself, with autovacuum; SQLite plans without any, as the store never runs ANALYZE)."""
    for n in range(tenants):
        store.create_tenant(Tenant(f"b{n}", "backlog", Quotas(max_concurrent=10), T0), f"hash-b{n}")
        version, _ = store.deploy(f"b{n}", "wf", "src", "h1", T0)
        store.create_instances(f"b{n}", version, [(f"i{i:04d}", None) for i in range(each)], T0 + n)
    store.claim("w9", 100, T0 + tenants, LEASE)
    if isinstance(store, PostgresStore):
        with store.transaction() as tx:
            tx.run("ANALYZE")


def test_reads_across_tenants_use_scheduling_indexes(store: SQLStore) -> None:
    with capturing() as capture:
        exercise(store)
    backlog(store)
    for exception in CROSS_TENANT:
        statements = _statements_with(capture, exception)
        assert statements, exception.name
        if exception.index is None:
            continue  # the listed reason says what it reads instead
        for sql, params in statements:
            if isinstance(store, PostgresStore):
                indexes, scans = _pg_plan(store, sql, params)
                first = {i: _pg_first_column(store, i) for i in indexes if not i.endswith("_pkey")}
            else:
                indexes, scans = _sqlite_plan(store, sql, params)
                first = {i: _sqlite_first_column(store, i) for i in indexes}
            assert not scans, (exception.name, sql, scans)
            assert exception.index in indexes, (exception.name, sql, indexes)
            assert first.get(exception.index, "") in SCHEDULING_COLUMNS, (exception.name, first)
            # Anything else of instances the statement reads, it reads by tenant.
            assert all(c in SCHEDULING_COLUMNS | {"tenant_id"} for c in first.values()), (exception.name, first)
