"""The store keeps tenants apart: fair claims, bounded events, a storage quota, cheap lists, a paged
journal, 503 when busy, bounded host faults. The same suite on SQLite and on PostgreSQL.

Times are passed explicitly (a fake clock), so nothing here sleeps or needs the sandbox.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from test_store import (  # noqa: F401  (backend, opened, open_more, store and pg_server are fixtures)
    LEASE,
    T0,
    Opener,
    backend,
    deployed,
    make_tenant,
    open_more,
    opened,
    pg_server,
    store,
)
from tenantflow.runtime.records import Claim
from tenantflow.runtime.store import SQLStore

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
