"""The store keeps tenants apart: fair claims, bounded events, a storage quota, cheap lists, a paged
journal, 503 when busy, bounded host faults. The same suite on SQLite and on PostgreSQL.

Times are passed explicitly (a fake clock), so nothing here sleeps or needs the sandbox.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pg import fresh_schema, pg_server  # noqa: F401  (pg_server is a fixture)
from tenantflow.runtime.errors import Unavailable
from tenantflow.runtime.records import Claim
from tenantflow.runtime.store import SQLStore, open_store
from tenantflow.runtime.store.postgres import PostgresStore
from test_store import LEASE, T0, Opener, claim_one, deployed, done_entry, make_instance, make_tenant


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for an empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tf.db'}"
    return fresh_schema(request.getfixturevalue("pg_server"))


@pytest.fixture
def open_more(backend: str) -> Iterator[Opener]:
    """Open a store on the database (another one is another process, as far as the store can tell)."""
    stores: list[SQLStore] = []

    def opener() -> SQLStore:
        stores.append(open_store(backend))
        return stores[-1]

    yield opener
    for s in stores:
        s.close()


@pytest.fixture
def store(open_more: Opener) -> SQLStore:
    return open_more()


# -- fair share at claim time ---------------------------------------------------------


def _backlog(store: SQLStore, tenant: str, count: int, at: float, **quotas: int) -> None:
    make_tenant(store, tenant, **quotas)
    version = deployed(store, tenant)
    store.create_instances(tenant, version, [(f"{tenant}{i:03d}", None) for i in range(count)], at)


def test_a_backlog_does_not_delay_another_tenants_instance(store: SQLStore) -> None:
    """Two worker threads; tenant A has 100 runnable instances and runs two of them when B's one arrives:
    the next freed slot goes to B, not to A's older backlog."""
    _backlog(store, "a", 100, T0)
    first = store.claim("w", 2, T0 + 1, LEASE, max_per_tenant=2)
    assert [c.key.tenant_id for c in first] == ["a", "a"]
    _backlog(store, "b", 1, T0 + 2)
    store.finish(first[0], T0 + 3, status="complete", output="1")  # a slot frees
    second = store.claim("w", 1, T0 + 3, LEASE, max_per_tenant=2)
    assert [c.key.tenant_id for c in second] == ["b"]


def test_freed_slots_alternate_between_tenants_with_work(store: SQLStore) -> None:
    _backlog(store, "a", 100, T0)
    _backlog(store, "b", 3, T0 + 1)
    claims = store.claim("w", 2, T0 + 2, LEASE, max_per_tenant=2)
    assert sorted(c.key.tenant_id for c in claims) == ["a", "b"]
    for claim in claims:
        store.finish(claim, T0 + 3, status="complete", output="1")
    claims = store.claim("w", 2, T0 + 3, LEASE, max_per_tenant=2)
    assert sorted(c.key.tenant_id for c in claims) == ["a", "b"]


def test_a_tenant_never_runs_more_than_the_worker_threads_by_default(store: SQLStore) -> None:
    _backlog(store, "a", 100, T0)  # max_concurrent 8 by default
    claims = store.claim("w", 4, T0 + 1, LEASE, max_per_tenant=2)
    assert len(claims) == 2


def test_max_concurrent_holds_across_processes(store: SQLStore, open_more: Opener) -> None:
    _backlog(store, "a", 100, T0, max_concurrent=3)
    _backlog(store, "b", 1, T0)
    other = open_more()  # another worker process, as far as the store can tell
    mine = store.claim("w1", 2, T0 + 1, LEASE, max_per_tenant=4)
    assert sorted(c.key.tenant_id for c in mine) == ["a", "b"]
    theirs = other.claim("w2", 4, T0 + 1, LEASE, max_per_tenant=4)
    assert [c.key.tenant_id for c in theirs] == ["a", "a"]
    assert store.claim("w1", 4, T0 + 2, LEASE, max_per_tenant=4) == []
    store.finish(theirs[0], T0 + 3, status="complete", output="1")
    assert [c.key.tenant_id for c in other.claim("w2", 4, T0 + 3, LEASE, max_per_tenant=4)] == ["a"]
    # Leases that ran out do not count: their holders are gone.
    later = store.claim("w1", 4, T0 + 3 + LEASE + 1, LEASE, max_per_tenant=4)
    assert sorted(c.key.tenant_id for c in later) == ["a", "a", "a", "b"]


def test_racing_claims_of_several_processes_never_exceed_max_concurrent(store: SQLStore, open_more: Opener) -> None:
    _backlog(store, "a", 60, T0, max_concurrent=5)
    stores = [store, open_more(), open_more()]
    claimed: list[Claim] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def worker(n: int) -> None:
        start.wait()
        for _ in range(5):
            got = stores[n % len(stores)].claim(f"w{n}", 2, T0 + 1, LEASE, max_per_tenant=8)
            with lock:
                claimed.extend(got)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(worker, range(6)))
    assert len(claimed) == 5
    assert len({c.key for c in claimed}) == 5


# -- a busy store answers 503 -------------------------------------------------------------


def test_sqlite_locked_past_the_busy_timeout_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    busy = open_store(f"sqlite:///{path}?busy_timeout_ms=100")
    try:
        key = make_instance(busy)
        claim = claim_one(busy)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with pytest.raises(Unavailable) as raised:
                busy.send_event(key, "go", None, T0 + 1)
            assert raised.value.status == 503 and raised.value.retry_after_s > 0
            with pytest.raises(Unavailable):
                busy.record(claim, done_entry(0), None, T0 + 1)  # the group-commit path
            with pytest.raises(Unavailable):
                busy.instance(key)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert busy.send_event(key, "go", None, T0 + 2) == 1  # and it recovers
    finally:
        busy.close()


def test_postgres_pool_exhausted_past_its_timeout_is_unavailable(pg_server: str) -> None:  # noqa: F811
    busy = PostgresStore(fresh_schema(pg_server), min_size=1, max_size=1, timeout_s=0.3)
    try:
        key = make_instance(busy)
        held = busy._pool.getconn()  # every connection is busy
        try:
            with pytest.raises(Unavailable):
                busy.instance(key)
            with pytest.raises(Unavailable):
                busy.next_wake()
        finally:
            busy._pool.putconn(held)
        assert busy.instance(key).status == "queued"
    finally:
        busy.close()


# -- host faults are bounded ----------------------------------------------------------------


def test_host_faults_retry_then_error_the_instance(store: SQLStore) -> None:
    key = make_instance(store)
    for n in range(2):
        claim = claim_one(store, T0 + 10 * n)
        assert store.host_fault(claim, T0 + 10 * n, T0 + 10 * n + 5, max_faults=3) is False
        got = store.instance(key)
        assert (got.status, got.wake_at) == ("waiting", T0 + 10 * n + 5)
    claim = claim_one(store, T0 + 20)
    assert store.host_fault(claim, T0 + 20, T0 + 25, max_faults=3) is True
    got = store.instance(key)
    assert got.status == "errored"
    assert got.error is not None and got.error["name"] == "HostFault"
    assert "3 times" in got.error["message"]
    assert store.next_wake() is None


def test_a_normal_finish_resets_the_host_fault_count(store: SQLStore) -> None:
    key = make_instance(store)
    claim = claim_one(store)
    store.host_fault(claim, T0, T0 + 1, max_faults=2)
    claim = claim_one(store, T0 + 1)
    store.finish(claim, T0 + 1, status="waiting", wake_at=T0 + 2)
    claim = claim_one(store, T0 + 2)
    assert store.host_fault(claim, T0 + 2, T0 + 3, max_faults=2) is False  # the count started again
    claim = claim_one(store, T0 + 3)
    assert store.host_fault(claim, T0 + 3, T0 + 4, max_faults=2) is True
    assert store.instance(key).status == "errored"


def test_host_fault_of_a_lost_or_terminated_claim_changes_nothing(store: SQLStore) -> None:
    key = make_instance(store)
    claim = claim_one(store)
    store.terminate(key, T0 + 1)
    assert store.host_fault(claim, T0 + 1, T0 + 2, max_faults=1) is False
    assert store.instance(key).status == "terminated"
    stale = Claim(key, claim.fence - 1)
    assert store.host_fault(stale, T0 + 1, T0 + 2, max_faults=1) is False
