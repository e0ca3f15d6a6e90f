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
from pg import fresh_schema
from tenantflow.host import Abort, Sandbox, StepCall
from tenantflow.runtime.engine.clock import ManualClock
from tenantflow.runtime.engine.journal import InstanceJournal
from tenantflow.runtime.errors import InvalidInput, QuotaExceeded, Unavailable
from tenantflow.runtime.http.problems import status_of
from tenantflow.runtime.records import (
    ERROR_SUMMARY_CHARS,
    MAX_BUFFERED_EVENTS,
    Claim,
    Entry,
    InstanceFilter,
    InstanceKey,
    Quotas,
)
from tenantflow.runtime.service import Service
from tenantflow.runtime.store import JOURNAL_PAGE_BYTES, SQLStore, codec, open_store
from tenantflow.runtime.store.postgres import PostgresStore
from tenantflow.runtime.store.sqlite import SQLiteStore
from test_store import LEASE, T0, Opener, claim_one, deployed, done_entry, make_instance, make_tenant, ok_attempt


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
            assert status_of(raised.value) == 503 and raised.value.retry_after_s > 0
            with pytest.raises(Unavailable):
                busy.record(claim, done_entry(0), None, T0 + 1)  # the group-commit path
            assert busy.instance(key).status == "running"  # a read does not wait for the writer (WAL)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert busy.send_event(key, "go", None, T0 + 2) == 1  # and it recovers
    finally:
        busy.close()


def test_postgres_pool_exhausted_past_its_timeout_is_unavailable(pg_server: str) -> None:
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


# -- events are bounded per instance ----------------------------------------------------------


def test_buffered_events_are_capped_in_number(store: SQLStore) -> None:
    key = make_instance(store)
    for n in range(MAX_BUFFERED_EVENTS):
        store.send_event(key, "t", n, T0)
    with pytest.raises(QuotaExceeded, match=f"holds {MAX_BUFFERED_EVENTS} events it has not consumed") as raised:
        store.send_event(key, "t", "one more", T0)
    assert status_of(raised.value) == 429
    claim = claim_one(store)  # the workflow consumes one: room for one more
    wait = Entry(0, "w", "wait", "done", result="1", event_type="t", created_at=T0, updated_at=T0)
    store.record(claim, wait, None, T0 + 1, consumed_event=1)
    store.send_event(key, "t", "one more", T0 + 2)
    with pytest.raises(QuotaExceeded):
        store.send_event(key, "t", "and another", T0 + 2)


def test_buffered_events_are_capped_in_bytes(store: SQLStore) -> None:
    key = make_instance(store)
    big = "x" * (1 << 20)  # compresses to almost nothing: the cap counts the JSON
    for _ in range(3):
        store.send_event(key, "t", big, T0)
    with pytest.raises(QuotaExceeded, match="bytes of events it has not consumed"):
        store.send_event(key, "t", big, T0)
    store.send_event(key, "t", "small", T0)


def test_concurrent_events_never_pass_the_cap(store: SQLStore, open_more: Opener) -> None:
    key = make_instance(store)
    stores = [store, open_more()]

    def send(n: int) -> bool:
        try:
            stores[n % 2].send_event(key, "t", n, T0)
        except QuotaExceeded:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        sent = sum(pool.map(send, range(MAX_BUFFERED_EVENTS + 30)))
    assert sent == MAX_BUFFERED_EVENTS
    assert len(store.journal(key)[2]) == MAX_BUFFERED_EVENTS


# -- stored bytes and the storage quota ----------------------------------------------------


def test_stored_bytes_follow_every_write(store: SQLStore) -> None:
    """Each write adds what it stores (as stored: a prefix byte and the JSON, compressed above 1 KiB); an
    upsert and a finish replace what they overwrite; a restart keeps only the params."""
    key = make_instance(store, params={"p": "x" * 100})
    created = store.instance(key).stored_bytes
    assert created == 1 + len('{"p": "' + "x" * 100 + '"}')
    claim = claim_one(store)
    store.record(claim, done_entry(0, '"' + "r" * 500 + '"'), ok_attempt(0), T0 + 1)
    assert store.instance(key).stored_bytes == created + 503 + len("s")
    store.record(claim, done_entry(0, '"short"'), None, T0 + 2)  # an upsert replaces the position
    assert store.instance(key).stored_bytes == created + 8 + len("s")
    store.send_event(key, "t", "e" * 300, T0 + 3)
    with_event = store.instance(key).stored_bytes
    assert with_event == created + 9 + 303 + len("t")
    store.finish(claim, T0 + 4, status="waiting", wake_at=T0 + 5, log="l" * 200)
    claim = claim_one(store, T0 + 5)
    store.finish(claim, T0 + 6, status="waiting", wake_at=T0 + 7, log="l" * 200)  # replaces, not adds
    assert store.instance(key).stored_bytes == with_event + 201
    assert store.stored_bytes("acme", max_age_s=0) >= store.instance(key).stored_bytes
    store.restart(key, T0 + 8)
    assert store.instance(key).stored_bytes == created


def test_storage_quota_is_summed_per_tenant_and_cached(store: SQLStore) -> None:
    key = make_instance(store, params="x" * 5000)
    make_instance(store, "other", tenant="zeta", params="y" * 50_000)
    mine = store.stored_bytes("acme", max_age_s=0)
    assert 0 < mine < 10_000
    assert store.stored_bytes("zeta", max_age_s=0) > mine
    store.send_event(key, "t", list(range(20_000)), T0)
    assert store.stored_bytes("acme") == mine  # cached
    assert store.stored_bytes("acme", max_age_s=0) > mine
    tiny = Quotas(max_stored_mb=0)
    assert store.storage_exhausted("acme", tiny)
    assert not store.storage_exhausted("acme", Quotas())


def test_a_step_commit_over_the_storage_quota_fails_the_activation(store: SQLStore) -> None:
    make_tenant(store, "acme", max_stored_mb=1)
    make_instance(store, params="z" * 10)
    claim = claim_one(store)
    journal = InstanceJournal(store, claim, store.load(claim), ManualClock(T0))
    journal.sleep_until(StepCall(0, "nap", 0, "sleep"), None, 0)  # under the quota: committed
    other = make_instance(store, "big")
    with store.transaction() as tx:  # the tenant's other instances fill the quota
        tx.execute("UPDATE instances SET stored_bytes = ? WHERE instance_id = ?", (2 << 20, other.instance_id))
    store.stored_bytes("acme", max_age_s=0)
    with pytest.raises(Abort) as raised:
        journal.sleep_until(StepCall(1, "nap", 1, "sleep"), None, 0)
    assert raised.value.name == "StorageQuotaExceeded"
    assert "storage quota of 1 MB exhausted" in raised.value.message
    assert list(store.load(claim).entries) == [0]


# -- lists never decode large fields; reads decode outside the store's lock ------------------


def test_instance_lists_carry_summaries_not_large_fields(store: SQLStore) -> None:
    huge = "E" * (20 << 20)
    for n in range(3):
        make_instance(store, f"i{n}", params={"p": "x" * 100_000})
        claim = claim_one(store)
        error = {"name": "Boom", "message": huge, "traceback": huge, "line": 3}
        store.finish(claim, T0 + 1, status="errored", error=error, log=huge)
    listed = store.instances("acme", InstanceFilter("wf"), 10)
    assert [i.instance_id for i in listed] == ["i2", "i1", "i0"]
    for item in listed:
        assert item.detail is False and item.status == "errored"
        assert item.params is None and item.output is None and item.log == ""
        assert item.error is not None and item.error["name"] == "Boom"
        assert len(item.error["message"]) == ERROR_SUMMARY_CHARS and "traceback" not in item.error
    full = store.instance(InstanceKey("acme", "wf", "i0"))
    assert full.detail and full.error is not None and full.error["traceback"] == huge


def test_lists_read_no_large_column(store: SQLStore, monkeypatch: pytest.MonkeyPatch) -> None:
    make_instance(store, params="x" * 10_000)
    claim = claim_one(store)
    store.finish(claim, T0 + 1, status="complete", output='"' + "o" * 10_000 + '"', log="l" * 10_000)
    decoded: list[int] = []
    real = codec.decode_text
    monkeypatch.setattr(codec, "decode_text", lambda blob: decoded.append(len(blob or b"")) or real(blob))
    store.instances("acme", InstanceFilter("wf"), 10)
    assert decoded == []


def test_sqlite_decodes_after_releasing_its_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sqlite_store = SQLiteStore(str(tmp_path / "lock.db"))
    try:
        key = make_instance(sqlite_store, params={"p": "x" * 5000})
        claim = claim_one(sqlite_store)
        sqlite_store.record(claim, done_entry(0, '"' + "r" * 5000 + '"'), None, T0)
        sqlite_store.send_event(key, "t", "e" * 5000, T0)
        held: list[bool] = []
        real = codec.decode_text

        def spy(blob: bytes | memoryview | None) -> str | None:
            held.append(sqlite_store._lock._is_owned())  # type: ignore[attr-defined]
            return real(blob)

        monkeypatch.setattr(codec, "decode_text", spy)
        sqlite_store.instance(key)
        sqlite_store.journal(key)
        sqlite_store.load(claim)
        assert held and not any(held)
    finally:
        sqlite_store.close()


# -- the journal is paged ------------------------------------------------------------------


def _journal_of(store: SQLStore, steps: int, result: str = '"ok"') -> tuple[InstanceKey, Claim]:
    key = make_instance(store)
    claim = claim_one(store)
    for position in range(steps):
        store.record(claim, done_entry(position, result), ok_attempt(position), T0 + 1)
    return key, claim


def test_journal_pages_by_position(store: SQLStore) -> None:
    key, _ = _journal_of(store, 25)
    first = store.journal_page(key, limit=10)
    assert [e.position for e in first.entries] == list(range(10))
    assert [a.position for a in first.attempts] == list(range(10))
    assert first.next_after == 9
    second = store.journal_page(key, after=first.next_after, limit=10)
    assert [e.position for e in second.entries] == list(range(10, 20))
    last = store.journal_page(key, after=19, limit=10)
    assert [e.position for e in last.entries] == list(range(20, 25)) and last.next_after is None
    assert store.journal_page(key, after=24).entries == []
    entries, attempts, _ = store.journal(key)  # the old call: the first page of 1000
    assert len(entries) == len(attempts) == 25


def test_journal_pages_are_bounded_in_bytes(store: SQLStore) -> None:
    result = '"' + "r" * (1 << 20) + '"'  # 1 MiB that compresses to a few KB: the bound counts it decoded
    key, _ = _journal_of(store, 20, result)
    page = store.journal_page(key)
    assert 1 <= len(page.entries) <= JOURNAL_PAGE_BYTES // (1 << 20)
    assert page.next_after == page.entries[-1].position
    seen = len(page.entries)
    while page.next_after is not None:
        page = store.journal_page(key, after=page.next_after)
        seen += len(page.entries)
    assert seen == 20


def test_journal_pages_carry_their_events(store: SQLStore) -> None:
    key = make_instance(store)
    store.send_event(key, "go", 1, T0)
    store.send_event(key, "go", 2, T0)
    store.send_event(key, "later", 3, T0)
    claim = claim_one(store)
    for position, seq in ((0, 1), (1, 2)):
        wait = Entry(position, f"w{position}", "wait", "done", result="1", event_type="go")
        store.record(claim, wait, None, T0 + 1, consumed_event=seq)
    first = store.journal_page(key, limit=1)
    assert [(e.seq, e.consumed_at) for e in first.events] == [(1, 0)]
    last = store.journal_page(key, after=0, limit=1)
    assert last.next_after is None
    assert [(e.seq, e.consumed_at) for e in last.events] == [(2, 1), (3, None)]


# -- where the service receives them -------------------------------------------------------


@pytest.fixture
def service(store: SQLStore, sandbox: Sandbox) -> Service:
    return Service(store, sandbox, ManualClock(T0))


def test_the_service_checks_event_types(service: Service) -> None:
    tenant, _ = service.create_tenant("acme")
    deployed(service.store)
    service.create_instances(tenant, "wf", [{"id": "i1"}])
    assert service.send_event(tenant, "wf", "i1", "order.paid:v2-x_y", None) == 1
    for bad in ("", "has space", "x" * 101, "nul\x00", "ünïcode", 7, None):
        with pytest.raises(InvalidInput, match="event type"):
            service.send_event(tenant, "wf", "i1", bad, None)


def test_the_service_refuses_creations_and_events_over_the_storage_quota(service: Service) -> None:
    tenant, _ = service.create_tenant("acme", Quotas(max_stored_mb=1))
    deployed(service.store)
    service.create_instances(tenant, "wf", [{"id": "i1"}])
    with service.store.transaction() as tx:
        tx.execute("UPDATE instances SET stored_bytes = ? WHERE instance_id = 'i1'", (1 << 20,))
    service.store.stored_bytes("acme", max_age_s=0)
    with pytest.raises(QuotaExceeded, match="storage quota of 1 MB exhausted") as raised:
        service.create_instances(tenant, "wf", [{"id": "i2"}])
    assert status_of(raised.value) == 429
    with pytest.raises(QuotaExceeded, match="storage quota of 1 MB exhausted"):
        service.send_event(tenant, "wf", "i1", "go", None)
    other, _ = service.create_tenant("zeta")  # another tenant is not affected
    deployed(service.store, "zeta")
    service.create_instances(other, "wf", [{"id": "i1"}])
