"""Instance lists, on SQLite and on PostgreSQL: newest first, keyset pages, filters, one tenant only; and each
list query reads an index in its own order (no sort of the tenant's instances, however many there are)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg import fresh_schema
from scoping import capturing
from tenantflow.runtime.errors import InvalidInput
from tenantflow.runtime.records import Instance, InstanceFilter, ListPosition, Quotas, Tenant
from tenantflow.runtime.service.pages import cursor, position
from tenantflow.runtime.store import SQLStore, core, open_store
from tenantflow.runtime.store.postgres import PostgresStore
from tenantflow.runtime.store.schema import MIGRATIONS

T0 = 1_800_000_000.0
# The migration that adds the list indexes (numbered from 1).
LIST_MIGRATION = next(
    n for n, m in enumerate(MIGRATIONS, start=1) if any("instances_by_tenant_created" in s for s in m)
)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tf.db'}"
    return fresh_schema(request.getfixturevalue("pg_server"))


@pytest.fixture
def store(url: str) -> Iterator[SQLStore]:
    s = open_store(url)
    yield s
    s.close()


def populate(store: SQLStore, tenant: str, workflows: tuple[str, ...], times: int, per_time: int = 2) -> None:
    """`per_time` instances of each workflow created at each of `times` instants (so created_at ties)."""
    store.create_tenant(Tenant(tenant, tenant, Quotas(), T0), f"hash-{tenant}")
    for workflow in workflows:
        version, _ = store.deploy(tenant, workflow, "src", "h1", T0)
        for t in range(times):
            store.create_instances(
                tenant, version, [(f"{workflow}-{t:03d}-{n}", None) for n in range(per_time)], T0 + t
            )


def keys(instances: list[Instance]) -> list[tuple[float, str, str]]:
    return [(i.created_at, i.workflow, i.instance_id) for i in instances]


def walk(store: SQLStore, tenant: str, where: InstanceFilter, limit: int) -> list[Instance]:
    """Every page of a list, each from the last instance of the page before."""
    found: list[Instance] = []
    after = None
    while True:
        page = store.instances(tenant, where, limit, after)
        found += page
        if len(page) < limit:
            return found
        last = page[-1]
        after = ListPosition(last.created_at, last.workflow, last.instance_id)


def test_lists_go_newest_first_and_pages_meet_exactly(store: SQLStore) -> None:
    populate(store, "acme", ("alpha", "beta"), times=4)
    populate(store, "zeta", ("alpha",), times=6)  # another tenant, same workflow name, newer instances
    everything = store.instances("acme", InstanceFilter(), 100)
    assert len(everything) == 16 and {i.tenant_id for i in everything} == {"acme"}
    # created_at, then workflow, then id, each descending.
    assert keys(everything) == sorted(keys(everything), reverse=True)
    assert [i.instance_id for i in everything[:4]] == ["beta-003-1", "beta-003-0", "alpha-003-1", "alpha-003-0"]
    alpha = store.instances("acme", InstanceFilter("alpha"), 100)
    assert [i.instance_id for i in alpha] == [f"alpha-{t:03d}-{n}" for t in (3, 2, 1, 0) for n in (1, 0)]
    # Pages of every size meet with nothing missed or repeated, across ties of created_at.
    for limit in (1, 3, 4, 7):
        assert keys(walk(store, "acme", InstanceFilter(), limit)) == keys(everything)
        assert keys(walk(store, "acme", InstanceFilter("alpha"), limit)) == keys(alpha)
    assert walk(store, "acme", InstanceFilter("gamma"), 2) == []
    assert {i.tenant_id for i in walk(store, "zeta", InstanceFilter(), 5)} == {"zeta"}


def test_lists_filter_by_status_and_creation_time(store: SQLStore) -> None:
    populate(store, "acme", ("alpha", "beta"), times=5)
    with store.transaction() as tx:  # some finished, in both workflows
        tx.run("UPDATE instances SET status = 'complete' WHERE tenant_id = ? AND instance_id LIKE ?", ("acme", "%-1"))
    complete = store.instances("acme", InstanceFilter(status="complete"), 100)
    assert len(complete) == 10 and all(i.instance_id.endswith("-1") for i in complete)
    assert keys(walk(store, "acme", InstanceFilter(status="complete"), 3)) == keys(complete)
    assert [i.instance_id for i in store.instances("acme", InstanceFilter("beta", "queued"), 2)] == [
        "beta-004-0",
        "beta-003-0",
    ]
    # Strictly after and strictly before.
    span = InstanceFilter(created_after=T0 + 1, created_before=T0 + 4)
    assert {i.created_at for i in store.instances("acme", span, 100)} == {T0 + 2, T0 + 3}
    combined = InstanceFilter("alpha", "complete", created_after=T0 + 2)
    assert [i.instance_id for i in walk(store, "acme", combined, 1)] == ["alpha-004-1", "alpha-003-1"]
    assert store.instances("acme", InstanceFilter(created_after=T0 + 4), 100) == []
    assert store.instances("acme", InstanceFilter(created_before=T0), 100) == []


def test_cursors_round_trip_and_refuse_anything_else() -> None:
    instance = Instance("acme", "wf-1", "id_2", 1, "h", "queued", None, created_at=T0 + 0.1234567891)
    text = cursor(instance)
    assert text.replace("-", "").replace("_", "").isalnum()
    assert position(text) == ListPosition(T0 + 0.1234567891, "wf-1", "id_2")  # the float exactly
    for bad in ("", "x", "abc", cursor(instance)[:-3], "WzEsMl0", "WyJhIiwid2YiLCJpZCJd", "W251bGwsIndmIiwiaWQiXQ"):
        with pytest.raises(InvalidInput, match="cursor"):
            position(bad)
    nan = Instance("acme", "wf", "i", 1, "h", "queued", None, created_at=math.nan)
    with pytest.raises(InvalidInput):
        position(cursor(nan))


# -- the plans ----------------------------------------------------------------------------------------------


# Each list, and the index it must read in order.
LISTS: list[tuple[InstanceFilter, str]] = [
    (InstanceFilter("alpha"), "instances_by_created"),
    (InstanceFilter("alpha", "queued"), "instances_by_status"),
    (InstanceFilter(), "instances_by_tenant_created"),
    (InstanceFilter(status="queued"), "instances_by_tenant_status"),
    (InstanceFilter("alpha", created_after=T0 + 10, created_before=T0 + 500), "instances_by_created"),
    (InstanceFilter(status="complete", created_before=T0 + 500), "instances_by_tenant_status"),
]


def plan(store: SQLStore, sql: str, params: tuple[Any, ...]) -> tuple[set[str], list[str]]:
    """The indexes of instances the plan reads, and what it does that a list must not: sort, or scan the
    whole table."""
    indexes: set[str] = set()
    wrong: list[str] = []
    if isinstance(store, PostgresStore):
        with store.transaction() as tx:
            tree = tx.run("EXPLAIN (FORMAT JSON) " + sql, params).scalar()

        def visit(node: dict[str, Any]) -> None:
            if "Sort" in node["Node Type"] or node["Node Type"] == "Seq Scan":
                wrong.append(node["Node Type"])
            if "Index Name" in node:
                indexes.add(node["Index Name"])
            for child in node.get("Plans", ()):
                visit(child)

        visit(tree[0]["Plan"])
        return indexes, wrong
    with store.transaction() as tx:
        result = tx.run("EXPLAIN QUERY PLAN " + sql, params)
    for row in result.rows:
        detail = str(dict(zip(result.names, row, strict=True))["detail"])
        if "TEMP B-TREE" in detail or detail.startswith("SCAN instances"):
            wrong.append(detail)
        if " USING INDEX " in detail or " USING COVERING INDEX " in detail:
            indexes.add(detail.split(" INDEX ")[1].split()[0])
    return indexes, wrong


def index_columns(store: SQLStore, index: str) -> list[str]:
    with store.transaction() as tx:
        if isinstance(store, PostgresStore):
            definition = tx.scalar(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = ?", (index,)
            )
            return [c.strip() for c in str(definition).split("(", 1)[1].rstrip(")").split(",")]
        result = tx.run(f"PRAGMA index_info({index})")
    return [str(row[2]) for row in sorted(result.rows)]


def list_statement(store: SQLStore, where: InstanceFilter, after: ListPosition | None) -> tuple[str, tuple[Any, ...]]:
    with capturing() as capture:
        store.instances("acme", where, 101, after)
    [statement] = capture.statements.values()
    return statement.sql, statement.params


def test_list_queries_read_their_index_in_order_without_sorting(store: SQLStore, url: str) -> None:
    # Many tenants and instances, as the planner should see them (PostgreSQL analyzed; SQLite has no statistics).
    populate(store, "acme", ("alpha", "beta", "gamma"), times=600)
    for n in range(4):
        populate(store, f"other{n}", ("alpha",), times=300)
    with store.transaction() as tx:
        tx.run("UPDATE instances SET status = 'complete' WHERE tenant_id = ? AND instance_id LIKE ?", ("acme", "%-0"))
        if isinstance(store, PostgresStore):
            tx.run("ANALYZE instances")
    middle = ListPosition(T0 + 300, "beta", "beta-300-1")
    for where, index in LISTS:
        for after in (None, middle):
            sql, params = list_statement(store, where, after)
            indexes, wrong = plan(store, sql, params)
            assert index in indexes and not wrong, (where, after, indexes, wrong)

    # The check sees a sort when no index gives the order: without the tenant-wide index, the list across
    # workflows sorts. (Planned on a new connection: SQLite's cached statements keep their plans.)
    with store.transaction() as tx:
        tx.run("DROP INDEX instances_by_tenant_created")
        if isinstance(store, PostgresStore):
            tx.run("ANALYZE instances")
    unindexed = open_store(url)
    try:
        indexes, wrong = plan(unindexed, *list_statement(unindexed, InstanceFilter(), None))
    finally:
        unindexed.close()
    assert wrong and "instances_by_tenant_created" not in indexes, indexes


def test_a_database_of_the_schema_before_gets_the_list_indexes(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    before = MIGRATIONS[: LIST_MIGRATION - 1]
    monkeypatch.setattr(core, "MIGRATIONS", before)
    old = open_store(url)
    try:
        # The rows as that schema's code wrote them (today's creation also writes tables it does not have yet).
        with old.transaction() as tx:
            for t in range(3):
                for n in range(2):
                    tx.run(
                        "INSERT INTO instances (tenant_id, workflow, instance_id, version, source_hash, status, "
                        "created_at, updated_at) VALUES ('acme', 'alpha', ?, 1, 'h1', 'queued', ?, ?)",
                        (f"alpha-{t:03d}-{n}", T0 + t, T0 + t),
                    )
    finally:
        old.close()
    monkeypatch.setattr(core, "MIGRATIONS", MIGRATIONS)
    upgraded = open_store(url)
    try:
        assert [i.created_at for i in upgraded.instances("acme", InstanceFilter(status="queued"), 3)] == [
            T0 + 2
        ] * 2 + [T0 + 1]
        assert index_columns(upgraded, "instances_by_status") == [
            "tenant_id",
            "workflow",
            "status",
            "created_at",
            "instance_id",
        ]
    finally:
        upgraded.close()
