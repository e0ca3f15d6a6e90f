"""The journal store, the same suite on SQLite and on PostgreSQL (the real server, a fresh database per run).

Each test gets an empty store: a new SQLite file, or a new schema in this session's PostgreSQL database.
Times are passed explicitly, so lease expiry needs no sleeping.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg import fresh_schema
from scoping import capturing
from tenantflow.host import Sandbox
from tenantflow.runtime.errors import Conflict, InvalidState, NotFound, QuotaExceeded, Unavailable
from tenantflow.runtime.records import (
    AttemptRecord,
    Claim,
    Entry,
    Handoff,
    InstanceFilter,
    InstanceKey,
    ListPosition,
    Quotas,
    Tenant,
    Version,
)
from tenantflow.runtime.service import Service
from tenantflow.runtime.store import LeaseLost, SQLStore, open_store
from tenantflow.runtime.store.activation import LOAD_INSTANCE
from tenantflow.runtime.store.postgres import ANALYZE_AT_ROWS, PostgresStore, split_url, translate
from tenantflow.runtime.store.schema import MIGRATIONS
from tenantflow.runtime.store.sqlite import SQLiteStore
from tenantflow.runtime.store.storage import VERSION_BYTES

T0 = 1_800_000_000.0
LEASE = 30.0

Opener = Callable[[], SQLStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for an empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tf.db'}"
    return fresh_schema(request.getfixturevalue("pg_server"))


@pytest.fixture
def opened(backend: str) -> Iterator[list[SQLStore]]:
    stores: list[SQLStore] = []
    yield stores
    for s in stores:
        s.close()


@pytest.fixture
def open_more(backend: str, opened: list[SQLStore]) -> Opener:
    """Open another store on the same database (another process, as far as the store can tell)."""

    def opener() -> SQLStore:
        s = open_store(backend)
        opened.append(s)
        return s

    return opener


@pytest.fixture
def store(open_more: Opener) -> SQLStore:
    return open_more()


def make_tenant(store: SQLStore, name: str = "acme", **quotas: Any) -> Tenant:
    tenant = Tenant(name, name, Quotas(**quotas), T0)
    store.create_tenant(tenant, f"hash-{name}")
    return tenant


def deployed(store: SQLStore, tenant: str = "acme", workflow: str = "wf", source: str = "src") -> Version:
    return store.deploy(tenant, workflow, source, f"h-{source}", T0)[0]


def make_instance(store: SQLStore, instance_id: str = "i1", tenant: str = "acme", params: Any = None) -> InstanceKey:
    try:
        store.tenant(tenant)
    except NotFound:
        make_tenant(store, tenant)
    try:
        version = store.latest_version(tenant, "wf")
    except NotFound:
        version = deployed(store, tenant)
    store.create_instances(tenant, version, [(instance_id, params)], T0)
    return InstanceKey(tenant, "wf", instance_id)


def claim_one(store: SQLStore, now: float = T0, owner: str = "w1", lease: float = LEASE) -> Claim:
    claims = store.claim(owner, 1, now, lease, {})
    assert len(claims) == 1, claims
    return claims[0]


def done_entry(position: int, result: str = '"ok"', name: str = "s") -> Entry:
    return Entry(position, name, "do", "done", attempts=1, result=result, created_at=T0, updated_at=T0)


def ok_attempt(position: int) -> AttemptRecord:
    return AttemptRecord(position, 1, True, None, None, 10, 1.5, T0)


# -- schema -------------------------------------------------------------------


def test_migrations_are_idempotent(store: SQLStore, open_more: Opener) -> None:
    make_tenant(store)
    store.migrate()
    store.migrate()
    again = open_more()  # opening migrates too
    with again.transaction() as tx:
        versions = [r[0] for r in tx.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    assert [t.tenant_id for t in again.tenants()] == ["acme"]


def test_every_table_keys_by_tenant_first(store: SQLStore) -> None:
    """The Citus rule: tenant_id leads every primary key."""
    for table in ("tenants", "sources", "versions", "instances", "journal", "attempts", "events"):
        with store.transaction() as tx:
            if isinstance(store, PostgresStore):
                rows = tx.execute(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                    "AND a.attnum = i.indkey[0] WHERE i.indrelid = ?::regclass AND i.indisprimary",
                    (table,),
                )
            else:
                rows = [(r[1],) for r in tx.execute(f"PRAGMA table_info({table})") if r[5] == 1]
        assert rows and rows[0][0] == "tenant_id", table


# -- tenants and workflows ----------------------------------------------------------


def test_tenants(store: SQLStore) -> None:
    make_tenant(store, "acme", max_concurrent=3, egress=("api.example.com",))
    make_tenant(store, "zeta")
    tenant = store.tenant("acme")
    assert tenant.quotas.max_concurrent == 3
    assert tenant.quotas.egress == ("api.example.com",)
    assert store.tenant_by_key("hash-zeta") == store.tenant("zeta")
    assert store.tenant_by_key("nope") is None
    assert [t.tenant_id for t in store.tenants()] == ["acme", "zeta"]
    with pytest.raises(NotFound):
        store.tenant("ghost")
    with pytest.raises(Conflict, match="already exists"):
        make_tenant(store, "acme")


def test_deploy_versions(store: SQLStore) -> None:
    make_tenant(store)
    v1, new = store.deploy("acme", "wf", "one", "h1", T0)
    assert (v1.version, new) == (1, True)
    same, new = store.deploy("acme", "wf", "one", "h1", T0 + 1)
    assert (same, new) == (v1, False)
    v2, new = store.deploy("acme", "wf", "two", "h2", T0 + 2)
    assert (v2.version, new) == (2, True)
    store.deploy("acme", "other", "one", "h1", T0 + 3)
    assert [v.version for v in store.versions("acme", "wf", None, 10)] == [2, 1]
    assert store.latest_version("acme", "wf") == v2 and store.latest_version("acme", "other").version == 1
    assert store.version("acme", "wf", 1) == v1 and store.version("acme", "wf", 2) == v2
    assert [(v.workflow, v.version) for v in store.workflows("acme")] == [("other", 1), ("wf", 2)]
    assert store.source("acme", "h2") == "two"
    with pytest.raises(NotFound):
        store.versions("acme", "missing", None, 10)
    assert store.versions("acme", "wf", 1, 10) == []  # none below 1, but the workflow exists
    with pytest.raises(NotFound):
        store.latest_version("acme", "missing")
    with pytest.raises(NotFound, match="no version 3"):
        store.version("acme", "wf", 3)
    with pytest.raises(NotFound):
        store.source("acme", "nope")
    make_tenant(store, "zeta")
    assert store.workflows("zeta") == []
    with pytest.raises(NotFound):
        store.source("zeta", "h1")  # sources are per tenant


def test_versions_and_workflows_come_a_page_at_a_time(store: SQLStore) -> None:
    make_tenant(store)
    for n in range(7):
        store.deploy("acme", "wf", f"s{n % 2}", f"h{n % 2}", T0 + n)  # A, B, A, ...: a version each
    assert [v.version for v in store.versions("acme", "wf", None, 3)] == [7, 6, 5]
    assert [v.version for v in store.versions("acme", "wf", 5, 3)] == [4, 3, 2]
    assert [v.version for v in store.versions("acme", "wf", 2, 3)] == [1]
    for name in ("b", "a", "d", "c"):
        store.deploy("acme", name, "s0", "h0", T0)
    assert [(v.workflow, v.version) for v in store.workflows("acme", "", 2)] == [("a", 1), ("b", 1)]
    assert [(v.workflow, v.version) for v in store.workflows("acme", "b", 2)] == [("c", 1), ("d", 1)]
    assert [(v.workflow, v.version) for v in store.workflows("acme", "d", 2)] == [("wf", 7)]


def test_the_workflow_quota_counts_names_not_versions(store: SQLStore) -> None:
    make_tenant(store)
    store.deploy("acme", "a", "one", "h1", T0, max_workflows=2)
    store.deploy("acme", "b", "one", "h1", T0, max_workflows=2)
    assert store.deploy("acme", "a", "two", "h2", T0, max_workflows=2)[0].version == 2  # a new version: fine
    with pytest.raises(QuotaExceeded, match="2 workflows") as refused:
        store.deploy("acme", "c", "one", "h1", T0, max_workflows=2)
    assert refused.value.retry_after_s > 0
    with pytest.raises(NotFound):
        store.latest_version("acme", "c")  # nothing of it stored
    store.delete_versions("acme", "b")
    assert store.deploy("acme", "c", "one", "h1", T0, max_workflows=2)[1] is True


def test_versions_count_in_the_tenant_storage(store: SQLStore) -> None:
    make_tenant(store)
    store.deploy("acme", "wf", "one", "h1", T0)
    before = store.stored_bytes("acme", max_age_s=0)
    store.deploy("acme", "wf", "two", "h2", T0)
    store.deploy("acme", "wf", "one", "h1", T0)  # a version of a stored source: its row alone
    after = store.stored_bytes("acme", max_age_s=0)
    with store.transaction() as tx:
        two = tx.scalar(
            "SELECT LENGTH(source) AS n FROM sources WHERE tenant_id = ? AND source_hash = ?", ("acme", "h2")
        )
    assert after - before == two + 2 * VERSION_BYTES


def test_concurrent_deploys_get_distinct_versions(store: SQLStore) -> None:
    make_tenant(store)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: store.deploy("acme", "wf", f"s{i}", f"h{i}", T0)[0].version, range(16)))
    assert sorted(results) == list(range(1, 17))


def test_large_sources_and_results_are_compressed_and_round_trip(store: SQLStore) -> None:
    make_tenant(store)
    source = "x = 1\n" * 50_000
    store.deploy("acme", "wf", source, "big", T0)
    assert store.source("acme", "big") == source
    with store.transaction() as tx:
        row = tx.one("SELECT source FROM sources WHERE tenant_id = ? AND source_hash = ?", ("acme", "big"))
    assert row is not None and len(bytes(row[0])) < len(source) // 10


# -- instances ----------------------------------------------------------------


def test_create_list_and_conflict(store: SQLStore) -> None:
    make_tenant(store)
    version = deployed(store)
    created = store.create_instances("acme", version, [("a", {"n": 1}), ("b", [1, 2])], T0)
    assert [(i.instance_id, i.status, i.params) for i in created] == [
        ("a", "queued", {"n": 1}),
        ("b", "queued", [1, 2]),
    ]
    got = store.instance(InstanceKey("acme", "wf", "a"))
    assert (got.status, got.params, got.version, got.source_hash, got.wake_at) == ("queued", {"n": 1}, 1, "h-src", T0)
    with pytest.raises(Conflict):
        store.create_instances("acme", version, [("c", None), ("a", None)], T0)
    with pytest.raises(NotFound):
        store.instance(InstanceKey("acme", "wf", "c"))  # the batch was all or nothing
    store.create_instances("acme", version, [(f"p{i:02d}", i) for i in range(10)], T0)
    page = store.instances("acme", InstanceFilter("wf"), 5)  # newest first; one creation's by id, descending
    assert [i.instance_id for i in page] == ["p09", "p08", "p07", "p06", "p05"]
    page = store.instances("acme", InstanceFilter("wf"), 5, ListPosition(T0, "wf", page[-1].instance_id))
    assert [i.instance_id for i in page] == ["p04", "p03", "p02", "p01", "p00"]
    assert store.instances("acme", InstanceFilter("wf", "paused"), 100) == []
    assert len(store.instances("acme", InstanceFilter("wf", "queued"), 100)) == 12
    assert store.status_counts() == [("acme", "queued", 12)]
    with pytest.raises(NotFound):
        store.instance(InstanceKey("other", "wf", "a"))  # scoped by tenant


def test_concurrent_creates_of_one_id_conflict(store: SQLStore) -> None:
    make_tenant(store)
    version = deployed(store)
    barrier = threading.Barrier(6)

    def create(i: int) -> str:
        barrier.wait()
        try:
            store.create_instances("acme", version, [("same", i)], T0)
            return "created"
        except Conflict:
            return "conflict"

    with ThreadPoolExecutor(6) as pool:
        outcomes = sorted(pool.map(create, range(6)))
    assert outcomes == ["conflict"] * 5 + ["created"]


# -- controls -------------------------------------------------------------------


def test_controls_and_invalid_transitions(store: SQLStore) -> None:
    key = make_instance(store)
    store.pause(key, T0 + 1)
    assert store.instance(key).status == "paused"
    with pytest.raises(InvalidState):
        store.pause(key, T0 + 1)
    assert store.claim("w", 10, T0 + 5, LEASE, {}) == []  # paused is not runnable
    store.resume(key, T0 + 2)
    assert store.instance(key).status == "queued"
    with pytest.raises(InvalidState):
        store.resume(key, T0 + 2)
    store.terminate(key, T0 + 3)
    got = store.instance(key)
    assert (got.status, got.wake_at) == ("terminated", None)
    for control in (store.terminate, store.pause, store.resume):
        with pytest.raises(InvalidState):
            control(key, T0 + 4)
    with pytest.raises(InvalidState):
        store.send_event(key, "x", None, T0 + 4)
    store.restart(key, T0 + 5)
    got = store.instance(key)
    assert (got.status, got.wake_at, got.fence) == ("queued", T0 + 5, 1)
    with pytest.raises(NotFound):
        store.pause(InstanceKey("acme", "wf", "ghost"), T0)


def test_resume_replays_a_sleeping_instance_and_keeps_a_held_one_running(store: SQLStore) -> None:
    key = make_instance(store)
    claim = claim_one(store)
    store.pause(key, T0 + 1)  # mid-activation: the worker still holds it
    store.resume(key, T0 + 2)
    assert store.instance(key).status == "running"
    assert store.finish(claim, T0 + 3, status="waiting", wake_at=T0 + 100)
    store.pause(key, T0 + 4)
    store.resume(key, T0 + 5)
    got = store.instance(key)
    assert (got.status, got.wake_at) == ("queued", T0 + 5)  # the replay finds its timer again


def test_restart_clears_journal_and_fences_out_the_old_claim(store: SQLStore) -> None:
    key = make_instance(store, params={"p": 1})
    claim = claim_one(store)
    store.record(claim, done_entry(0), ok_attempt(0), T0 + 1)
    store.send_event(key, "go", 1, T0 + 1)
    store.restart(key, T0 + 2)
    assert store.journal(key) == ([], [], [])
    with pytest.raises(LeaseLost):
        store.record(claim, done_entry(1), None, T0 + 3)
    assert store.finish(claim, T0 + 3, status="complete", output='"x"') is False
    got = store.instance(key)
    assert (got.status, got.params, got.steps, got.output) == ("queued", {"p": 1}, 0, None)


# -- events -----------------------------------------------------------------------


def test_events_are_numbered_and_wake_a_waiting_instance(store: SQLStore) -> None:
    key = make_instance(store)
    claim = claim_one(store)
    wait = Entry(0, "approval", "wait", "waiting", event_type="go", created_at=T0, updated_at=T0)
    store.record(claim, wait, None, T0 + 1)
    assert store.finish(claim, T0 + 1, status="waiting", wake_at=None, waiting_for="go")
    assert store.next_wake() is None
    assert store.send_event(key, "other", {"a": 1}, T0 + 2) == 1
    assert store.instance(key).wake_at is None  # not the awaited type
    assert store.send_event(key, "go", {"b": 2}, T0 + 3) == 2
    assert store.instance(key).wake_at == T0 + 3
    assert store.next_wake() == T0 + 3
    claim = claim_one(store, T0 + 3)
    state = store.load(claim)
    assert [(e.seq, e.type, e.payload) for e in state.events] == [(1, "other", {"a": 1}), (2, "go", {"b": 2})]
    wait.state, wait.result = "done", '{"type": "go"}'
    store.record(claim, wait, None, T0 + 4, consumed_event=2)
    assert [e.seq for e in store.load(claim).events] == [1]
    _, _, events = store.journal(key)
    assert [(e.seq, e.consumed_at) for e in events] == [(1, None), (2, 0)]


def test_an_event_that_arrived_during_the_activation_is_not_missed(store: SQLStore) -> None:
    key = make_instance(store)
    claim = claim_one(store)
    store.send_event(key, "go", None, T0 + 1)  # while running: nothing to wake yet
    assert store.finish(claim, T0 + 2, status="waiting", waiting_for="go")
    assert store.instance(key).wake_at == T0 + 2


def test_concurrent_events_get_distinct_numbers(store: SQLStore) -> None:
    key = make_instance(store)
    with ThreadPoolExecutor(8) as pool:
        seqs = list(pool.map(lambda i: store.send_event(key, "t", i, T0), range(40)))
    assert sorted(seqs) == list(range(1, 41))


# -- claims, leases, fencing ------------------------------------------------------


def test_claim_lease_and_takeover_fence(store: SQLStore) -> None:
    key = make_instance(store)
    first = claim_one(store, T0, "w1")
    assert first.key == key
    got = store.instance(key)
    assert (got.status, got.fence) == ("running", first.fence)
    assert store.claim("w2", 5, T0 + LEASE - 1, LEASE, {}) == []  # leased
    assert store.record(first, done_entry(0), ok_attempt(0), T0 + 1) == "running"
    second = claim_one(store, T0 + LEASE + 1, "w2")  # lease expired: taken over
    assert second.fence == first.fence + 1
    with pytest.raises(LeaseLost):
        store.record(first, done_entry(1, '"stale"'), ok_attempt(1), T0 + LEASE + 2)
    with pytest.raises(LeaseLost):
        store.load(first)
    assert store.finish(first, T0 + LEASE + 2, status="complete", output='"stale"') is False
    state = store.load(second)
    assert list(state.entries) == [0]
    store.record(second, done_entry(1, '"fresh"'), ok_attempt(1), T0 + LEASE + 3)
    assert store.finish(second, T0 + LEASE + 4, status="complete", output='"done"')
    entries, attempts, _ = store.journal(key)
    assert [(e.position, e.result) for e in entries] == [(0, '"ok"'), (1, '"fresh"')]
    assert [(a.position, a.attempt) for a in attempts] == [(0, 1), (1, 1)]
    got = store.instance(key)
    assert (got.status, got.output, got.steps) == ("complete", "done", 2)


def test_record_upserts_a_position_and_counts_done_steps(store: SQLStore) -> None:
    key = make_instance(store)
    claim = claim_one(store)
    retrying = Entry(0, "s", "do", "retrying", attempts=1, error_name="E", error_message="m", wake_at=T0 + 10)
    store.record(claim, retrying, AttemptRecord(0, 1, False, "E", "m", 5, 1.0, T0), T0)
    assert store.instance(key).steps == 0
    store.record(claim, done_entry(0), AttemptRecord(0, 2, True, None, None, 5, 1.0, T0 + 10), T0 + 10)
    store.record(claim, done_entry(0), AttemptRecord(0, 2, True, None, None, 5, 1.0, T0 + 10), T0 + 10)  # replayed
    entries, attempts, _ = store.journal(key)
    assert [(e.state, e.attempts, e.error_name) for e in entries] == [("done", 1, None)]
    assert [(a.attempt, a.ok) for a in attempts] == [(1, False), (2, True)]
    big = "[" + ",".join(['"abcdefgh"'] * 10_000) + "]"
    store.record(claim, done_entry(1, big), None, T0 + 11)
    assert store.load(claim).entries[1].result == big
    assert store.instance(key).steps == 3


def test_record_and_finish_while_paused_or_terminated(store: SQLStore) -> None:
    key = make_instance(store)
    claim = claim_one(store)
    store.pause(key, T0 + 1)
    assert store.instance(key).status == "waiting_for_pause"  # a step may be running
    assert store.record(claim, done_entry(0), None, T0 + 2) == "waiting_for_pause"  # the worker suspends
    assert store.finish(claim, T0 + 3, status="waiting", wake_at=T0 + 3)
    assert store.instance(key).status == "paused"
    store.resume(key, T0 + 4)
    claim = claim_one(store, T0 + 4)
    store.terminate(key, T0 + 5)
    with pytest.raises(LeaseLost):
        store.record(claim, done_entry(1), None, T0 + 6)
    store.finish(claim, T0 + 6, status="complete", output='"x"')
    assert store.instance(key).status == "terminated"


def test_a_pause_cancelled_or_left_by_a_dead_worker(store: SQLStore) -> None:
    key = make_instance(store)
    claim = claim_one(store)
    store.pause(key, T0 + 1)
    store.resume(key, T0 + 2)  # before the step ended: it just goes on
    assert store.instance(key).status == "running"
    assert store.record(claim, done_entry(0), None, T0 + 3) == "running"
    store.pause(key, T0 + 4)
    # Its worker died in the step: nothing runs it (as if paused) until it is resumed, then the step replays.
    assert store.claim("w", 1, T0 + 1000, LEASE, {}) == []
    assert store.instance(key).status == "waiting_for_pause"
    store.resume(key, T0 + 1001)
    assert store.instance(key).status == "queued"


def test_heartbeat_extends_only_the_holders_lease(store: SQLStore) -> None:
    key = make_instance(store)
    claim = claim_one(store, T0, "w1", lease=10)
    store.heartbeat("w1", [claim], T0 + 100)
    assert store.claim("w2", 1, T0 + 50, 10, {}) == []
    assert store.next_wake() == T0 + 100
    store.heartbeat("w2", [claim], T0 + 1000)  # not the owner
    store.heartbeat("w1", [Claim(key, claim.fence - 1)], T0 + 1000)  # an old fence
    assert store.next_wake() == T0 + 100
    taken = claim_one(store, T0 + 101, "w2")
    store.heartbeat("w1", [claim], T0 + 1000)  # too late: it is w2's now
    assert store.next_wake() == T0 + 101 + LEASE
    assert taken.fence == claim.fence + 1


def test_expire_leases_of_dead_owners(store: SQLStore) -> None:
    for i in range(3):
        make_instance(store, f"i{i}")
    dead = store.claim("dead", 2, T0, LEASE, {})
    alive = store.claim("alive", 5, T0, LEASE, {})
    assert len(dead) == 2 and len(alive) == 1
    assert sorted(store.lease_owners()) == ["alive", "dead"]
    assert store.expire_leases([]) == 0
    assert store.expire_leases(["dead", "ghost"]) == 2
    taken = store.claim("new", 5, T0 + 1, LEASE, {})
    assert sorted(c.key.instance_id for c in taken) == sorted(c.key.instance_id for c in dead)
    assert sorted(store.lease_owners()) == ["alive", "new"]


def test_next_wake(store: SQLStore) -> None:
    assert store.next_wake() is None
    a = make_instance(store, "a")
    make_instance(store, "b")
    assert store.next_wake() == T0
    claims = store.claim("w", 2, T0, LEASE, {})
    assert store.next_wake() == T0 + LEASE  # lease expiries count
    by_id = {c.key.instance_id: c for c in claims}
    store.finish(by_id["a"], T0 + 1, status="waiting", wake_at=T0 + 5)
    assert store.next_wake() == T0 + 5
    store.finish(by_id["b"], T0 + 1, status="complete", output="1")
    store.pause(a, T0 + 2)
    assert store.next_wake() is None


def test_claim_is_fair_across_tenants_and_respects_quotas(store: SQLStore) -> None:
    make_tenant(store, "big")
    make_tenant(store, "small", max_concurrent=2)
    for tenant in ("big", "small"):
        version = deployed(store, tenant)
        store.create_instances(tenant, version, [(f"{tenant}{i}", None) for i in range(6)], T0)
    claims = store.claim("w", 4, T0 + 1, LEASE, {})
    assert sorted(c.key.tenant_id for c in claims) == ["big", "big", "small", "small"]
    claims = store.claim("w", 4, T0 + 1, LEASE, {"small": 2})
    assert [c.key.tenant_id for c in claims] == ["big"] * 4


def test_a_create_hands_its_instances_to_free_slots_in_its_own_transaction(store: SQLStore) -> None:
    make_tenant(store)
    version = deployed(store)
    done = store.create_available(
        "acme", version, [(f"i{i}", None) for i in range(5)], T0, handoff=Handoff("w1", 3, LEASE, 4)
    )
    assert [i.instance_id for i in done.instances] == ["i0", "i1", "i2", "i3", "i4"]
    assert [(c.key.instance_id, c.fence) for c in done.claims] == [("i0", 1), ("i1", 1), ("i2", 1)]  # 3 slots
    assert [store.instance(InstanceKey("acme", "wf", f"i{n}")).status for n in range(5)] == ["running"] * 3 + [
        "queued"
    ] * 2
    assert set(store.held("w1", done.claims)) == set(done.claims)
    # The claims are leases as any other: the rest is claimed as usual, the lease fences writes.
    assert {c.key.instance_id for c in store.claim("w2", 5, T0, LEASE, {})} == {"i3", "i4"}
    store.record(done.claims[0], done_entry(0), ok_attempt(0), T0 + 1)
    assert store.finish(done.claims[0], T0 + 2, status="complete", output='"ok"')


def test_a_create_hands_off_nothing_while_other_work_is_due(store: SQLStore) -> None:
    """The fair claim decides who goes first: a create does not jump the queue of another tenant."""
    make_tenant(store, "other")
    store.create_instances("other", deployed(store, "other"), [("o1", None)], T0)
    make_tenant(store)
    done = store.create_available("acme", deployed(store), [("i1", None)], T0 + 1, handoff=Handoff("w1", 4, LEASE, 4))
    assert [i.instance_id for i in done.instances] == ["i1"] and done.claims == []
    assert store.instance(InstanceKey("acme", "wf", "i1")).status == "queued"
    assert [c.key.tenant_id for c in store.claim("w1", 1, T0 + 1, LEASE, {})] == ["other"]


def test_a_create_hands_off_within_the_tenants_concurrency(store: SQLStore) -> None:
    make_tenant(store, max_concurrent=2)
    version = deployed(store)
    store.create_instances("acme", version, [("r1", None)], T0)
    claim_one(store, T0)  # one running: room for one more
    done = store.create_available(
        "acme", version, [("i1", None), ("i2", None)], T0 + 1, handoff=Handoff("w1", 4, LEASE, 4)
    )
    assert [c.key.instance_id for c in done.claims] == ["i1"]


def test_a_create_hands_off_within_the_pools_cap_per_tenant(store: SQLStore) -> None:
    make_tenant(store, "wide", max_concurrent=100)
    done = store.create_available(
        "wide", deployed(store, "wide"), [(f"w{i}", None) for i in range(4)], T0 + 1, handoff=Handoff("w1", 4, LEASE, 1)
    )
    assert [c.key.instance_id for c in done.claims] == ["w0"]


def test_a_create_that_fails_hands_off_nothing(store: SQLStore) -> None:
    make_tenant(store)
    version = deployed(store)
    store.create_instances("acme", version, [("i1", None)], T0)
    with pytest.raises(Conflict):
        store.create_available(
            "acme", version, [("i2", None), ("i1", None)], T0, all_or_none=True, handoff=Handoff("w1", 4, LEASE, 4)
        )
    assert store.lease_owners() == []
    with pytest.raises(NotFound):
        store.instance(InstanceKey("acme", "wf", "i2"))


def test_a_batch_hands_off_only_what_it_created(store: SQLStore) -> None:
    """Leased as they are inserted: an id already taken is neither created nor claimed (its slot stays free),
    and what the batch created beyond the slots waits queued for the dispatcher."""
    make_tenant(store)
    version = deployed(store)
    store.create_instances("acme", version, [("i1", None)], T0)
    claim_one(store, T0)
    done = store.create_available(
        "acme", version, [("i1", None), ("i2", None), ("i3", None)], T0 + 1, handoff=Handoff("w1", 2, LEASE, 4)
    )
    assert done.taken == ["i1"] and [i.instance_id for i in done.instances] == ["i2", "i3"]
    assert [(c.key.instance_id, c.fence) for c in done.claims] == [("i2", 1)]
    assert set(store.held("w1", done.claims)) == set(done.claims)
    assert store.instance(InstanceKey("acme", "wf", "i3")).status == "queued"
    assert store.instance(InstanceKey("acme", "wf", "i1")).fence == 1  # the earlier claim's, untouched


def test_an_end_can_carry_the_last_step_write_in_its_commit(store: SQLStore) -> None:
    """`finish_and_claim(before=recordings)`: the step's write goes first; the end follows unless the write did not
    apply (a lost lease: nothing is written) or found the instance being paused (the step alone is written)."""
    make_tenant(store)
    carried = make_instance(store, "carried")
    claim = claim_one(store)
    last = store.recordings(claim, [(done_entry(0), ok_attempt(0), None)])
    assert store.finish_and_claim(claim, T0 + 2, None, status="complete", output='"ok"', before=last) == (True, [])
    assert last.status == "running"
    done = store.instance(carried)
    assert done.status == "complete" and done.steps == 1
    assert [e.state for e in store.journal(carried)[0]] == ["done"]

    paused_key = make_instance(store, "paused")
    claim = claim_one(store, T0 + 3)
    store.pause(paused_key, T0 + 3)
    last = store.recordings(claim, [(done_entry(0), ok_attempt(0), None)])
    assert store.finish_and_claim(claim, T0 + 5, None, status="complete", output='"ok"', before=last) == (False, [])
    assert last.status == "waiting_for_pause"
    held = store.instance(paused_key)
    assert held.status == "waiting_for_pause" and held.output is None and held.steps == 1

    lost_key = make_instance(store, "lost")
    claim = claim_one(store, T0 + 6)
    stale = Claim(claim.key, claim.fence - 1)
    last = store.recordings(stale, [(done_entry(0), ok_attempt(0), None)])
    assert store.finish_and_claim(stale, T0 + 8, None, status="complete", output='"ok"', before=last) == (False, [])
    assert last.status is None
    assert store.instance(lost_key).status == "running" and store.journal(lost_key) == ([], [], [])


def test_a_write_can_carry_the_step_before_it_in_its_commit(store: SQLStore) -> None:
    """`record(before=recordings)`: a sleep's write takes the pending step with it; a pause found by the step's
    write skips the sleep's (the pause's status is answered); a lost lease writes neither."""
    make_tenant(store)
    key = make_instance(store, "carried")
    claim = claim_one(store)
    sleep = Entry(1, "nap", "sleep", "sleeping", wake_at=T0 + 60, created_at=T0, updated_at=T0)
    step = store.recordings(claim, [(done_entry(0), ok_attempt(0), None)])
    assert store.record(claim, sleep, None, T0 + 1, before=step) == "running"
    assert [(e.name, e.state) for e in store.journal(key)[0]] == [("s", "done"), ("nap", "sleeping")]

    paused_key = make_instance(store, "paused")
    claim = claim_one(store, T0 + 2)
    store.pause(paused_key, T0 + 2)
    step = store.recordings(claim, [(done_entry(0), ok_attempt(0), None)])
    assert store.record(claim, sleep, None, T0 + 3, before=step) == "waiting_for_pause"
    assert [e.name for e in store.journal(paused_key)[0]] == ["s"]

    lost_key = make_instance(store, "lost")
    claim = claim_one(store, T0 + 4)
    stale = Claim(claim.key, claim.fence - 1)
    with pytest.raises(LeaseLost):
        store.record(stale, sleep, None, T0 + 5, before=store.recordings(stale, [(done_entry(0), ok_attempt(0), None)]))
    assert store.journal(lost_key) == ([], [], [])


def test_several_steps_go_first_in_order_in_one_commit(store: SQLStore) -> None:
    """`recordings`: steps' writes in order before another write; a pause found by the first is still followed by
    the other steps (their bodies ran before it), not by the write they go with; a lost lease writes none."""
    make_tenant(store)
    steps = [(done_entry(p, f'"r{p}"', f"s{p}"), ok_attempt(p), None) for p in range(3)]
    key = make_instance(store, "carried")
    claim = claim_one(store)
    carried = store.recordings(claim, steps)
    assert store.finish_and_claim(claim, T0 + 2, None, status="complete", output='"ok"', before=carried) == (True, [])
    done = store.instance(key)
    assert done.status == "complete" and done.steps == 3
    entries, attempts, _ = store.journal(key)
    assert [(e.name, e.result) for e in entries] == [("s0", '"r0"'), ("s1", '"r1"'), ("s2", '"r2"')]
    assert [a.position for a in attempts] == [0, 1, 2]

    paused_key = make_instance(store, "paused")
    claim = claim_one(store, T0 + 3)
    store.pause(paused_key, T0 + 3)
    carried = store.recordings(claim, steps)
    assert store.finish_and_claim(claim, T0 + 5, None, status="complete", output='"ok"', before=carried) == (False, [])
    assert carried.status == "waiting_for_pause"
    held = store.instance(paused_key)
    assert held.status == "waiting_for_pause" and held.output is None and held.steps == 3

    lost_key = make_instance(store, "lost")
    claim = claim_one(store, T0 + 6)
    stale = Claim(claim.key, claim.fence - 1)
    carried = store.recordings(stale, steps)
    assert store.finish_and_claim(stale, T0 + 8, None, status="complete", output='"ok"', before=carried) == (False, [])
    assert carried.status is None
    assert store.instance(lost_key).status == "running" and store.journal(lost_key) == ([], [], [])


def test_a_batch_of_writes_stores_what_they_would_one_at_a_time(store: SQLStore) -> None:
    """`recordings` of several positions goes as one batch: where statements run at once (SQLite), the rows it
    replaces read first, the instance written once, the rows many to a statement; on PostgreSQL one statement, the
    rows as arrays. It must leave exactly what the same writes leave one at a time (on SQLite floats summed in the
    same order too; on PostgreSQL each day's durations are summed before they are added, so to within rounding),
    with rows that were there before, a failed attempt, a rollback's entry, a consumed event and writes on two days;
    and a position written twice goes write by write."""
    day = 86_400.0

    def attempt(position: int, ms: float) -> AttemptRecord:
        return AttemptRecord(position, 1, True, None, None, 10, ms, T0)

    def writes(event: int, twice: bool) -> list[tuple[Entry, AttemptRecord | None, int | None]]:
        failed = AttemptRecord(2, 1, False, "Boom", "a message", 7, 0.3, T0, "Traceback ...")
        flaky = Entry(2, "flaky", "do", "retrying", 1, error_name="Boom", error_message="a message", updated_at=T0)
        done = [
            (done_entry(0, '"replaced, longer than before"'), None, None),
            (done_entry(1, '{"é": "ü"}', "unicodé"), attempt(1, 0.2), None),
            (flaky, failed, None),
            (Entry(3, "go", "wait", "done", result='{"type": "go"}', event_type="go", updated_at=T0 + 1), None, event),
            (Entry(4, "undo", "rollback", "done", 1, result="null", updated_at=T0 + day), attempt(4, 0.7), None),
        ]
        return done + [(done_entry(1, '"shorter"', "unicodé"), None, None)] if twice else done

    def state(tenant: str, key: InstanceKey) -> tuple[Any, ...]:
        row = store.instance(key)
        with store.transaction() as tx:
            usage = tx.execute(
                "SELECT day, steps, attempts, fuel, duration_ms, journal_bytes FROM usage WHERE tenant_id = ? "
                "AND steps + attempts + journal_bytes > 0 ORDER BY day",
                (tenant,),
            )
            consumed = tx.execute("SELECT consumed_at FROM events WHERE tenant_id = ?", (tenant,))
        instance = (row.status, row.steps, row.stored_bytes, row.rollback, row.updated_at)
        return (instance, store.journal(key)[:2], usage, consumed)

    for twice in (False, True):
        found = []
        for way in ("batch", "single"):
            tenant = f"{way}-{int(twice)}"
            key = make_instance(store, "i1", tenant)
            claim = claim_one(store)
            before = [(done_entry(0, '"short"'), attempt(0, 0.1), None), (done_entry(1, '"x"', "unicodé"), None, None)]
            for write in before:
                store.record_all(claim, store.recordings(claim, [write]))
            event = store.send_event(key, "go", None, T0)
            if way == "batch":
                with capturing() as capture:
                    assert store.record_all(claim, store.recordings(claim, writes(event, twice))) == "running"
                if isinstance(store, PostgresStore) and not twice:
                    assert capture.count == 1, "a batch is one statement on PostgreSQL"
            else:
                for write in writes(event, twice):
                    assert store.record_all(claim, store.recordings(claim, [write])) == "running"
            found.append(state(tenant, key))
        if isinstance(store, PostgresStore):
            # Rounding: the durations' sum, (0.1 + 0.2) + 0.3 one at a time, 0.1 + (0.2 + 0.3) in a batch.
            assert [row[4] for row in found[0][2]] == pytest.approx([row[4] for row in found[1][2]], rel=1e-12)
            found = [(*f[:2], [(*row[:4], round(row[4], 9), *row[5:]) for row in f[2]], f[3]) for f in found]
        assert found[0] == found[1], twice
        (status, steps, stored, rollback, updated_at), _, usage, consumed = found[0]
        last = T0 if twice else T0 + day  # the last write's
        assert (status, steps, rollback, updated_at, consumed) == ("running", 6 + twice, "error", last, [(3,)])
        assert stored > 0 and len(usage) == 2


def test_a_park_can_carry_the_writes_before_it(store: SQLStore) -> None:
    """`park(before=)`: a step and the event wait's entry go with the park's commit; a lost lease writes none."""
    make_tenant(store)
    park = functools.partial(
        store.park, wake_at=None, waiting_for="tool", lease_until=T0 + 60, log=None, replayed=0, activations=1
    )
    wait = Entry(1, "tool", "wait", "waiting", event_type="tool", created_at=T0, updated_at=T0)
    key = make_instance(store, "carried")
    claim = claim_one(store)
    carried = store.recordings(claim, [(done_entry(0), ok_attempt(0), None), (wait, None, None)])
    row = park(claim, T0 + 1, before=carried)
    assert row is not None and row.status == "waiting" and carried.ran and carried.status == "running"
    assert [(e.name, e.state) for e in store.journal(key)[0]] == [("s", "done"), ("tool", "waiting")]

    lost_key = make_instance(store, "lost")
    claim = claim_one(store, T0 + 2)
    stale = Claim(claim.key, claim.fence - 1)
    carried = store.recordings(stale, [(done_entry(0), ok_attempt(0), None)])
    assert park(stale, T0 + 3, before=carried) is None
    assert carried.ran and carried.status is None
    assert store.instance(lost_key).status == "running" and store.journal(lost_key) == ([], [], [])


def test_an_end_leases_what_its_slot_runs_next_fairly(store: SQLStore) -> None:
    """`finish_and_claim`: the slot an ending activation leaves goes to what a claim would choose now: the tenant
    with the fewest running first, within its concurrency; nothing when nothing is due."""
    make_tenant(store, "big")
    make_tenant(store, "small", max_concurrent=1)
    for tenant in ("big", "small"):
        store.create_instances(tenant, deployed(store, tenant), [(f"{tenant}{i}", None) for i in range(3)], T0)
    first = store.claim("w1", 3, T0 + 1, LEASE, {})
    assert sorted(c.key.instance_id for c in first) == ["big0", "big1", "small0"]
    ending = next(c for c in first if c.key.instance_id == "big0")
    # big still runs big1, small runs small0 (at its limit): big's next goes, small's waits.
    held, claims = store.finish_and_claim(ending, T0 + 2, Handoff("w1", 1, LEASE, 4), status="complete")
    assert held and [c.key.instance_id for c in claims] == ["big2"]
    assert store.instance(claims[0].key).status == "running" and set(store.held("w1", claims)) == set(claims)
    ending = next(c for c in first if c.key.instance_id == "small0")
    held, claims = store.finish_and_claim(ending, T0 + 3, Handoff("w1", 1, LEASE, 4), status="complete")
    assert held and [c.key.instance_id for c in claims] == ["small1"]  # small now runs none: it goes first
    # No slot offered: nothing leased. A lost claim's end writes nothing but still passes its slot on.
    big1 = next(c for c in first if c.key.instance_id == "big1")
    assert store.finish_and_claim(big1, T0 + 4, None, status="complete") == (True, [])
    store.create_instances("big", store.latest_version("big", "wf"), [("big3", None)], T0 + 4)
    held, claims = store.finish_and_claim(
        Claim(big1.key, big1.fence - 1), T0 + 5, Handoff("w1", 1, LEASE, 4), status="errored"
    )
    assert not held and [c.key.instance_id for c in claims] == ["big3"]
    assert store.instance(big1.key).status == "complete"
    # Nothing due (small's last waits for small1, at small's limit): nothing leased.
    assert store.finish_and_claim(claims[0], T0 + 6, Handoff("w1", 1, LEASE, 4), status="complete") == (True, [])
    assert store.instance(InstanceKey("small", "wf", "small2")).status == "queued"


def test_an_end_stands_when_leasing_what_runs_next_fails(store: SQLStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim that raises (in the end's transaction on SQLite, after it on PostgreSQL) leases nothing and undoes
    nothing of the end: its slot goes back to the dispatcher, which claims as before."""
    make_instance(store, "i1")
    make_instance(store, "i2")
    claim = claim_one(store, T0 + 1)

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug in the claim")

    monkeypatch.setattr(store, "_lease_next", broken)
    assert store.finish_and_claim(claim, T0 + 2, Handoff("w1", 1, LEASE, 4), status="complete") == (True, [])
    assert store.instance(claim.key).status == "complete"
    monkeypatch.undo()
    assert [c.key.instance_id for c in store.claim("w1", 4, T0 + 3, LEASE, {})] == ["i2"]


def test_sqlite_an_end_and_the_claim_it_makes_are_one_commit(tmp_path: Path) -> None:
    """Where writers take turns, the next instance is leased in the end's own transaction: one fsync, not two."""
    store = SQLiteStore(str(tmp_path / "tf.db"))
    try:
        make_instance(store, "i1")
        make_instance(store, "i2")
        claim = claim_one(store, T0 + 1)
        statements: list[str] = []
        store._connection.set_trace_callback(statements.append)
        held, claims = store.finish_and_claim(claim, T0 + 2, Handoff("w1", 1, LEASE, 4), status="complete")
        store._connection.set_trace_callback(None)
        assert held and [c.key.instance_id for c in claims] == ["i2"]
        assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == ["BEGIN IMMEDIATE", "COMMIT"]
    finally:
        store.close()


def test_parallel_claims_never_hand_out_one_instance_twice(store: SQLStore, open_more: Opener) -> None:
    make_tenant(store, max_concurrent=1000)
    version = deployed(store)
    store.create_instances("acme", version, [(f"i{i:03d}", None) for i in range(120)], T0)
    stores = [store, open_more(), open_more()]
    claimed: list[Claim] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        s = stores[n % len(stores)]
        while True:
            got = s.claim(f"w{n}", 3, T0 + 1, LEASE, {})
            if not got:
                return
            with lock:
                claimed.extend(got)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))
    ids = [c.key.instance_id for c in claimed]
    assert len(ids) == len(set(ids)) == 120


# -- races that a single-writer SQLite cannot have; PostgreSQL must handle them with row locks --


def _hold_row_lock(store: PostgresStore, key: InstanceKey, then: Callable[[], None], locked: threading.Event) -> None:
    """In another thread: lock the instance row, wait until another session is blocked on a lock, then run
    `then` in the same transaction and commit."""
    with store.transaction() as tx:
        tx.execute(
            "SELECT 1 FROM instances WHERE tenant_id = ? AND workflow = ? AND instance_id = ? FOR UPDATE",
            (key.tenant_id, key.workflow, key.instance_id),
        )
        locked.set()
        with psycopg.connect(store.conninfo, autocommit=True) as watcher:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                row = watcher.execute(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                ).fetchone()
                if row and row[0]:
                    break
                time.sleep(0.01)
            else:
                raise AssertionError("nobody blocked on the row")
        then()


def _race(store: PostgresStore, key: InstanceKey, then: Callable[[], None], blocked: Callable[[], None]) -> None:
    """Run `blocked` while another transaction holds the instance row and commits `then` first."""
    locked = threading.Event()
    failures: list[BaseException] = []

    def hold() -> None:
        try:
            _hold_row_lock(store, key, then, locked)
        except BaseException as error:  # reported by the test thread
            failures.append(error)
            locked.set()

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(10)
    try:
        blocked()
    finally:
        holder.join()
    assert not failures, failures


def test_sqlite_group_commit_keeps_the_writes_beside_one_that_fails(tmp_path: Path) -> None:
    """Writes queued while another holds the connection commit together; one that raises loses only itself."""
    store = SQLiteStore(str(tmp_path / "g.db"))
    try:
        store.write(lambda tx: tx.run("CREATE TABLE t (k TEXT PRIMARY KEY)"))

        def insert(key: str) -> Callable[[Any], str]:
            def write(tx: Any) -> str:
                tx.run("INSERT INTO t (k) VALUES (?)", (key,))
                if key == "bad":
                    raise ValueError("this write fails after its insert")
                return key

            return write

        outcomes: dict[str, object] = {}

        def run(key: str) -> None:
            try:
                outcomes[key] = store.write(insert(key))
            except ValueError as error:
                outcomes[key] = error

        keys = ["a", "bad", "b", "c"]
        with store._lock:  # the connection is busy: every write below queues behind it and joins one batch
            threads = [threading.Thread(target=run, args=(key,)) for key in keys]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 10
            while len(store._queue) < len(keys) and time.monotonic() < deadline:
                time.sleep(0.005)
            assert len(store._queue) == len(keys)
        for thread in threads:
            thread.join(10)
        assert {k: v for k, v in outcomes.items() if k != "bad"} == {"a": "a", "b": "b", "c": "c"}
        assert isinstance(outcomes["bad"], ValueError)
        with store.read() as tx:
            assert sorted(tx.run("SELECT k FROM t").values()) == ["a", "b", "c"]
    finally:
        store.close()


def test_sqlite_an_activation_loads_beside_a_commit_in_progress(tmp_path: Path) -> None:
    """An activation's load reads a snapshot on the reader connection: it does not wait for the writer's lock (held
    through every group commit's fsync), and sees what had committed before it."""
    store = SQLiteStore(str(tmp_path / "s.db"))
    try:
        key = make_instance(store)
        claim = claim_one(store)
        store.record(claim, done_entry(0), ok_attempt(0), T0 + 1)
        loaded: list[Any] = []
        with store._lock:  # a writer holds the connection, e.g. in a commit's fsync
            loader = threading.Thread(target=lambda: loaded.append(store.load(claim)))
            loader.start()
            loader.join(10)
            assert loaded, "the load waited for the writer"
        assert loaded[0].instance.instance_id == key.instance_id and list(loaded[0].entries) == [0]
        assert not store._reader.in_transaction
    finally:
        store.close()


@pytest.fixture
def pg_store(pg_server: str) -> Iterator[PostgresStore]:
    s = PostgresStore(fresh_schema(pg_server))
    yield s
    s.close()


def test_pg_stale_worker_commits_nothing_after_takeover_while_it_was_blocked(pg_store: PostgresStore) -> None:
    """Two claims on PostgreSQL: the old holder's step commit waits on the row, the takeover commits first."""
    store = pg_store
    key = make_instance(store)
    old = claim_one(store, T0, "w1")
    other = PostgresStore(store.conninfo)
    try:
        takeover: list[Claim] = []

        def stale_commit() -> None:
            with pytest.raises(LeaseLost):
                store.record(old, done_entry(0, '"stale"'), ok_attempt(0), T0 + LEASE + 2)

        _race(other, key, lambda: takeover.extend(other.claim("w2", 1, T0 + LEASE + 1, LEASE, {})), stale_commit)
        assert len(takeover) == 1 and takeover[0].fence == old.fence + 1
        assert store.journal(key) == ([], [], [])
        store.record(takeover[0], done_entry(0, '"fresh"'), ok_attempt(0), T0 + LEASE + 3)
        entries, attempts, _ = store.journal(key)
        assert [e.result for e in entries] == ['"fresh"'] and len(attempts) == 1
    finally:
        other.close()


def test_pg_finish_does_not_overwrite_a_terminate_it_raced_with(pg_store: PostgresStore) -> None:
    store = pg_store
    key = make_instance(store)
    claim = claim_one(store)
    _race(
        store,
        key,
        lambda: store.terminate(key, T0 + 1),
        lambda: store.finish(claim, T0 + 2, status="complete", output='"late"'),
    )
    got = store.instance(key)
    assert (got.status, got.output) == ("terminated", None)


def test_pg_finish_sees_an_event_that_committed_while_it_waited(pg_store: PostgresStore) -> None:
    store = pg_store
    key = make_instance(store)
    claim = claim_one(store)
    _race(
        store,
        key,
        lambda: store.send_event(key, "go", 1, T0 + 1),
        lambda: store.finish(claim, T0 + 2, status="waiting", waiting_for="go"),
    )
    assert store.instance(key).wake_at == T0 + 2  # not left waiting forever


def test_pg_controls_racing_on_one_instance_take_turns(pg_store: PostgresStore) -> None:
    """A pause that waited for a terminate must see it (and refuse), not overwrite it."""
    store = pg_store
    key = make_instance(store)

    def pause() -> None:
        with pytest.raises(InvalidState):
            store.pause(key, T0 + 2)

    _race(store, key, lambda: store.terminate(key, T0 + 1), pause)
    assert store.instance(key).status == "terminated"


def test_pg_placeholders_are_numbered_once_in_order() -> None:
    assert translate("SELECT ? + ?, '100%' FROM t WHERE a = ?") == "SELECT $1 + $2, '100%' FROM t WHERE a = $3"
    assert translate("SELECT 1") == "SELECT 1"


def test_pg_statements_go_to_the_server_as_written(pg_store: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """psycopg does not parse a statement with parameters (its own placeholder conversion re-parses every statement
    past 4,096 bytes or 50 parameters, as a step's fenced write is), however long, and a `%` is only a character."""
    parsed: list[Any] = []
    convert = psycopg._queries.PostgresQuery.convert  # psycopg 3.3's query conversion (a private module)

    def counted(self: Any, query: Any, params: Any) -> None:
        if params is not None:
            parsed.append(query)
        convert(self, query, params)

    monkeypatch.setattr(psycopg._queries.PostgresQuery, "convert", counted)
    values = list(range(60))
    sql = f"SELECT {' + '.join(['CAST(? AS INTEGER)'] * 60)} AS total, '100%' AS pct, '{'x' * 5000}' AS pad"
    with pg_store.transaction() as tx:
        total, pct, pad = tx.run(sql, values).rows[0]
    assert (total, pct, len(pad)) == (sum(values), "100%", 5000)
    key = make_instance(pg_store)
    pg_store.record(claim_one(pg_store), done_entry(0, '"one"'), ok_attempt(0), T0 + 1)
    assert [e.result for e in pg_store.journal(key)[0]] == ['"one"']
    assert parsed == []


def test_pg_concurrent_migrations_on_an_empty_schema(pg_server: str) -> None:
    url = fresh_schema(pg_server)
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: PostgresStore(url), range(4)))
    try:
        with stores[0].transaction() as tx:
            assert tx.execute("SELECT COUNT(*) FROM schema_migrations")[0][0] == len(MIGRATIONS)
    finally:
        for s in stores:
            s.close()


def test_pg_notify_wakes_listeners_in_the_same_schema_only(pg_server: str) -> None:
    url = fresh_schema(pg_server)
    listener, writer, elsewhere = PostgresStore(url), PostgresStore(url), PostgresStore(fresh_schema(pg_server))
    try:
        woke = threading.Event()
        listener.listen(woke.set)
        time.sleep(0.5)  # LISTEN is in place (it also wakes once on connecting)
        woke.clear()
        key = make_instance(elsewhere)
        elsewhere.send_event(key, "x", None, T0)
        assert not woke.wait(0.7)
        started = time.monotonic()
        make_instance(writer)
        assert woke.wait(2.0)
        assert time.monotonic() - started < 0.5
        woke.clear()
        writer.send_event(InstanceKey("acme", "wf", "i1"), "go", None, T0)
        assert woke.wait(2.0)
        woke.clear()
        claim = claim_one(writer)
        writer.finish(claim, time.time(), status="waiting", wake_at=time.time() + 0.2)  # a timer due soon
        assert woke.wait(2.0)
    finally:
        for s in (listener, writer, elsewhere):
            s.close()


def test_pg_url_options_and_unreachable_server() -> None:
    conninfo, own = split_url("postgresql://u@h:5/db?pool_max=3&options=-csearch_path%3Dx&pool_min=2")
    assert own == {"pool_max": 3, "pool_min": 2}
    assert conninfo == "postgresql://u@h:5/db?options=-csearch_path%3Dx"
    started = time.monotonic()
    with pytest.raises(Unavailable, match="(?i)cannot reach the PostgreSQL database 'none'.*refused"):
        PostgresStore("postgresql://postgres@127.0.0.1:1/none?connect_timeout=1", timeout_s=1.0)
    assert time.monotonic() - started < 10


def test_pg_gives_a_never_analyzed_instances_table_statistics_so_key_lookups_take_the_primary_key(
    pg_store: PostgresStore,
) -> None:
    """Without statistics the planner found an instance by its key through `instances_by_created` or `instances_by_id`
    as readily as through the primary key, reading every instance of the workflow: once a tenant has ANALYZE_AT_ROWS
    instances and the table was never analyzed, the create analyzes it."""
    store = pg_store
    make_tenant(store)
    version = deployed(store)

    def analyzed() -> bool:
        with store.read() as tx:
            return bool(
                tx.scalar(
                    "SELECT COUNT(*) FROM pg_stats WHERE schemaname = current_schema() AND tablename = 'instances'"
                )
            )

    store.create_instances("acme", version, [(f"i{n}", None) for n in range(ANALYZE_AT_ROWS - 1)], T0)
    assert not analyzed()  # fewer than ANALYZE_AT_ROWS: every tenant and workflow would look unique
    store.create_instances("acme", version, [("last", None)], T0)
    assert analyzed()
    with store.transaction() as tx:
        tx.run("SET LOCAL enable_seqscan = off")  # a table this small is read whole: which index would it take?
        plan = "\n".join(row[0] for row in tx.run("EXPLAIN " + LOAD_INSTANCE, ("acme", "wf", "i7", 0)).rows)
    assert "Index Scan using instances_pkey" in plan, plan


def test_open_store_routes_postgresql_urls(pg_server: str) -> None:
    s = open_store(fresh_schema(pg_server))
    try:
        assert isinstance(s, PostgresStore)
        assert s.channel.startswith("tenantflow_wake_s_")
    finally:
        s.close()


# -- the whole runtime on each backend ---------------------------------------------

FLOW = """
from tenantflow import NonRetryableError

def run(event, step):
    total = 0
    for i in range(5):
        total += step.do("add", lambda: i)

    def boom():
        raise NonRetryableError("no")

    try:
        step.do("boom", boom)
        caught = None
    except Exception as error:
        caught = type(error).__name__
    step.sleep("nap", "200 milliseconds")
    got = step.wait_for_event("approval", event_type="approved", timeout="1 minute")
    return {"total": total, "caught": caught, "approved": got["payload"], "id": event.instance_id}
"""


def test_workflows_run_to_completion_on_each_backend(backend: str, sandbox: Sandbox) -> None:
    service = Service(open_store(backend), sandbox, workers=4, lease_s=5.0)
    try:
        tenant, _ = service.create_tenant("acme")
        service.deploy(tenant, "wf", FLOW)
        service.start()
        service.create_instances(tenant, "wf", [{"id": f"r{i}"} for i in range(8)])
        for i in range(8):
            service.send_event(tenant, "wf", f"r{i}", "approved", {"by": i})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(s == "complete" for _, s, _ in service.store.status_counts()):
                break
            time.sleep(0.05)
        for i in range(8):
            got = service.instance(tenant, "wf", f"r{i}")
            assert got.status == "complete", (got.status, got.error)
            assert got.output == {"total": 10, "caught": "NonRetryableError", "approved": {"by": i}, "id": f"r{i}"}
            journal = service.journal(tenant, "wf", f"r{i}")
            assert [s["name"] for s in journal["steps"]] == ["add"] * 5 + ["boom", "nap", "approval"]
            assert [s["state"] for s in journal["steps"]] == ["done"] * 5 + ["failed", "sleeping", "done"]
    finally:
        service.stop()
        service.store.close()
