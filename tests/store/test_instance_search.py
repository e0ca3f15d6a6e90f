"""Search by instance id, pages before a place, and capped per-status counts, on SQLite and on PostgreSQL; each
statement reads an index in its own order (no sort, no scan of the table), and a count reads at most its cap."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg import fresh_schema
from scoping import capturing
from tenantflow.runtime.records import STATUSES, Instance, InstanceFilter, ListPosition
from tenantflow.runtime.store import SQLStore, open_store
from tenantflow.runtime.store.postgres import PostgresStore
from test_instance_lists import T0, keys, plan, populate


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLStore]:
    url = f"sqlite:///{tmp_path / 'tf.db'}" if request.param == "sqlite" else None
    s = open_store(url or fresh_schema(request.getfixturevalue("pg_server")))
    yield s
    s.close()


def at(instance: Instance) -> ListPosition:
    return ListPosition(instance.created_at, instance.workflow, instance.instance_id)


def test_pages_before_meet_the_pages_after(store: SQLStore) -> None:
    populate(store, "acme", ("alpha", "beta"), times=5)
    for where in (InstanceFilter(), InstanceFilter("alpha"), InstanceFilter(status="queued")):
        everything = store.instances("acme", where, 100)
        for limit in (1, 3, 4):
            for start in range(limit, len(everything)):
                before = store.instances("acme", where, limit, before=at(everything[start]))
                assert keys(before) == keys(everything[max(0, start - limit) : start]), (where, limit, start)
        assert store.instances("acme", where, 3, before=at(everything[0])) == []


def test_search_by_id_prefix_goes_by_id_then_workflow(store: SQLStore) -> None:
    populate(store, "acme", ("alpha", "beta"), times=12)
    populate(store, "zeta", ("alpha",), times=3)
    found = store.instances("acme", InstanceFilter(id_prefix="alpha-01"), 100)
    assert [i.instance_id for i in found] == [f"alpha-{t:03d}-{n}" for t in (10, 11) for n in (0, 1)]
    exact = store.instances("acme", InstanceFilter(id_prefix="beta-002-1"), 100)
    assert [(i.workflow, i.instance_id) for i in exact] == [("beta", "beta-002-1")]
    # Ids of many workflows: by id, then workflow; pages either way meet exactly.
    with store.transaction() as tx:
        tx.run(
            "UPDATE instances SET instance_id = ? WHERE tenant_id = ? AND instance_id = ?",
            ("x-1", "acme", "alpha-000-0"),
        )
        tx.run(
            "UPDATE instances SET instance_id = ? WHERE tenant_id = ? AND instance_id = ?",
            ("x-1", "acme", "beta-000-0"),
        )
        tx.run(
            "UPDATE instances SET instance_id = ? WHERE tenant_id = ? AND instance_id = ?",
            ("x_0", "acme", "beta-000-1"),
        )
        tx.run(
            "UPDATE instances SET instance_id = ? WHERE tenant_id = ? AND instance_id = ?", ("x-", "acme", "beta-001-1")
        )
    xs = store.instances("acme", InstanceFilter(id_prefix="x"), 100)
    assert [(i.instance_id, i.workflow) for i in xs] == [
        ("x-", "beta"),
        ("x-1", "alpha"),
        ("x-1", "beta"),
        ("x_0", "beta"),
    ]
    assert [i.instance_id for i in store.instances("acme", InstanceFilter(id_prefix="x-"), 100)] == ["x-", "x-1", "x-1"]
    second = store.instances("acme", InstanceFilter(id_prefix="x"), 2, at(xs[1]))
    assert [(i.instance_id, i.workflow) for i in second] == [("x-1", "beta"), ("x_0", "beta")]
    first = store.instances("acme", InstanceFilter(id_prefix="x"), 2, before=at(xs[2]))
    assert [(i.instance_id, i.workflow) for i in first] == [("x-", "beta"), ("x-1", "alpha")]
    # With other filters on top; never another tenant's.
    assert [i.instance_id for i in store.instances("acme", InstanceFilter("beta", id_prefix="x-"), 100)] == [
        "x-",
        "x-1",
    ]
    assert store.instances("acme", InstanceFilter(status="complete", id_prefix="x"), 100) == []
    assert {i.tenant_id for i in store.instances("zeta", InstanceFilter(id_prefix="alpha"), 100)} == {"zeta"}


def test_counts_per_status_stop_at_the_cap(store: SQLStore) -> None:
    populate(store, "acme", ("alpha", "beta"), times=10)
    populate(store, "zeta", ("alpha",), times=10)
    with store.transaction() as tx:
        tx.run("UPDATE instances SET status = 'errored' WHERE tenant_id = ? AND instance_id LIKE ?", ("acme", "%-1"))
    counts = store.count_instances("acme", InstanceFilter(), 100)
    assert counts == {**dict.fromkeys(STATUSES, 0), "queued": 20, "errored": 20}
    assert store.count_instances("acme", InstanceFilter(), 5) == {
        **dict.fromkeys(STATUSES, 0),
        "queued": 6,
        "errored": 6,
    }
    assert store.count_instances("acme", InstanceFilter("alpha", created_after=T0 + 4), 100)["errored"] == 5
    assert store.count_instances("acme", InstanceFilter(status="errored", id_prefix="beta-00"), 100) == {"errored": 10}


def _statement(store: SQLStore, call: object) -> list[tuple[str, tuple[object, ...]]]:
    with capturing() as capture:
        assert callable(call)
        call()
    return [(s.sql, s.params) for s in capture.statements.values()]


def pg_plan(store: SQLStore, sql: str, params: tuple[Any, ...]) -> tuple[set[str], list[str]]:
    """A count's plan: on PostgreSQL with sequential scans priced out (as test_tenant_scoping does): on a table
    this small a scan that stops at the cap is cheap, but it must not be the only way; SQLite as `plan`."""
    if not isinstance(store, PostgresStore):
        return plan(store, sql, params)
    with store.transaction() as tx:
        tx.run("SET LOCAL enable_seqscan = off")
        tree = tx.run("EXPLAIN (FORMAT JSON) " + sql, params).scalar()
    indexes: set[str] = set()
    wrong: list[str] = []

    def visit(node: dict[str, Any]) -> None:
        if "Sort" in node["Node Type"] or node["Node Type"] == "Seq Scan":
            wrong.append(node["Node Type"])
        if "Index Name" in node:
            indexes.add(node["Index Name"])
        for child in node.get("Plans", ()):
            visit(child)

    visit(tree[0]["Plan"])
    return indexes, wrong


def test_search_before_and_counts_read_their_index_without_sorting(store: SQLStore) -> None:
    populate(store, "acme", ("alpha", "beta", "gamma"), times=600)
    for n in range(4):
        populate(store, f"other{n}", ("alpha",), times=300)
    with store.transaction() as tx:
        tx.run("UPDATE instances SET status = 'complete' WHERE tenant_id = ? AND instance_id LIKE ?", ("acme", "%-0"))
        if isinstance(store, PostgresStore):
            tx.run("ANALYZE instances")
    middle = ListPosition(T0 + 300, "beta", "beta-300-1")
    cases: list[tuple[object, str]] = [
        (lambda: store.instances("acme", InstanceFilter(id_prefix="beta"), 101), "instances_by_id"),
        (lambda: store.instances("acme", InstanceFilter(id_prefix="beta"), 101, middle), "instances_by_id"),
        (lambda: store.instances("acme", InstanceFilter(id_prefix="beta"), 101, None, middle), "instances_by_id"),
        (lambda: store.instances("acme", InstanceFilter(), 101, None, middle), "instances_by_tenant_created"),
        (lambda: store.instances("acme", InstanceFilter("alpha"), 101, None, middle), "instances_by_created"),
        (
            lambda: store.instances("acme", InstanceFilter(status="complete"), 101, None, middle),
            "instances_by_tenant_status",
        ),
        (lambda: store.count_instances("acme", InstanceFilter(), 10_000), "instances_by_tenant_status"),
        (
            lambda: store.count_instances("acme", InstanceFilter(created_after=T0 + 10), 10_000),
            "instances_by_tenant_status",
        ),
        (lambda: store.count_instances("acme", InstanceFilter("alpha"), 10_000), "instances_by_status"),
        (lambda: store.count_instances("acme", InstanceFilter(id_prefix="beta-1"), 10_000), "instances_by_id"),
    ]
    for call, index in cases:
        [(sql, params)] = _statement(store, call)
        indexes, wrong = pg_plan(store, sql, params) if "COUNT(*)" in sql else plan(store, sql, params)
        if index == "instances_by_id" and isinstance(store, PostgresStore):
            # PostgreSQL may sort what it reads from the id's range when it expects few rows there (a bitmap
            # scan of the range, then a sort); the range bounds it either way, and with many rows the planner
            # reads the index in order instead.
            wrong = [w for w in wrong if w != "Sort"]
        assert index in indexes and not wrong, (sql, indexes, wrong)
