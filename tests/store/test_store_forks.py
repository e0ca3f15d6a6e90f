"""Forks and exports in the store, on SQLite and PostgreSQL: a fork copies exactly the journal before a step (with
its attempts and the events its waits consumed), carries the original's effective seed and clock origin, counts
what it stores, and leaves the original as it was; an export reads the whole journal in pages and is bounded."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pg import fresh_schema
from tenantflow.runtime.errors import Conflict, InvalidInput, NotFound, QuotaExceeded, TooLarge
from tenantflow.runtime.records import AttemptRecord, Entry, InstanceFilter, InstanceKey
from tenantflow.runtime.service.bundles import Bundles
from tenantflow.runtime.store import SQLStore, codec, open_store
from test_store import T0, claim_one, deployed, done_entry, make_instance, ok_attempt


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLStore]:
    url = f"sqlite:///{tmp_path / 'tf.db'}" if request.param == "sqlite" else None
    opened = open_store(url or fresh_schema(request.getfixturevalue("pg_server")))
    yield opened
    opened.close()


def _journaled(store: SQLStore) -> InstanceKey:
    """An instance with a journal: a, a wait that took event 1, b (two attempts), a again; event 2 buffered."""
    key = make_instance(store, params={"p": 1})
    claim = claim_one(store)
    store.send_event(key, "go", {"n": 1}, T0 + 1)
    store.send_event(key, "later", {"n": 2}, T0 + 1)
    store.record(claim, done_entry(0, '"a1"', "a"), ok_attempt(0), T0 + 2)
    wait = Entry(1, "w", "wait", "done", result='{"type": "go"}', event_type="go", created_at=T0, updated_at=T0 + 3)
    store.record(claim, wait, None, T0 + 3, consumed_event=1)
    failed = AttemptRecord(2, 1, False, "ValueError", "not yet", 5, 1.0, T0 + 4)
    store.record(claim, replace(done_entry(2, '"b"', "b"), state="retrying", attempts=1), failed, T0 + 4)
    store.record(
        claim,
        replace(done_entry(2, '"b"', "b"), attempts=2),
        AttemptRecord(2, 2, True, None, None, 5, 1.0, T0 + 5),
        T0 + 5,
    )
    store.record(claim, done_entry(3, '"a2"', "a"), ok_attempt(3), T0 + 6)
    assert store.finish(claim, T0 + 7, status="complete", output='"out"', log="printed")
    return key


def _stored(store: SQLStore, key: InstanceKey) -> int:
    return store.instance(key).stored_bytes


def test_a_fork_copies_the_journal_before_the_step(store: SQLStore) -> None:
    key = _journaled(store)
    before = store.journal(key)
    original = store.instance(key)
    version = store.latest_version("acme", "wf")
    tenant_bytes = store.stored_bytes("acme", max_age_s=0)

    forked = store.fork(key, "f1", version, ("a", 2), T0 + 10)
    fork = InstanceKey("acme", "wf", "f1")
    assert store.instance(fork) == replace(forked, detail=True)
    assert (forked.status, forked.params, forked.steps, forked.created_at) == ("queued", {"p": 1}, 2, T0 + 10)
    assert forked.seed == original.seed_bytes().hex() and forked.clock_start == original.created_at
    assert store.instance(fork).seed_bytes() == original.seed_bytes()
    entries, attempts, events = store.journal(fork)
    assert entries == before[0][:3]  # positions 0..2, as they were (times included)
    assert attempts == [a for a in before[1] if a.position < 3]
    assert [(e.seq, e.type, e.consumed_at) for e in events] == [(1, "go", 1)]  # the buffered one stays behind
    assert store.next_wake() == T0 + 10  # queued, due now

    # What it stores: its params, the copied rows, their attempts' errors and the event, as the writes counted.
    rows = sum(len(codec.encode_text(e.result or "")) + len(e.name) for e in entries)
    expected = len(codec.encode({"p": 1})) + rows + len("ValueErrornot yet") + len(codec.encode({"n": 1}) + b"go")
    assert forked.stored_bytes == _stored(store, fork) == expected
    assert store.stored_bytes("acme", max_age_s=0) == tenant_bytes + expected

    # The original is untouched.
    assert store.journal(key) == before and store.instance(key) == original

    # From the first call of a: nothing copied; a fork of a fork carries the first original's seed and clock.
    store.fork(key, "f2", version, ("a", 1), T0 + 11)
    assert store.journal(InstanceKey("acme", "wf", "f2")) == ([], [], [])
    assert store.instance(InstanceKey("acme", "wf", "f2")).steps == 0
    again = store.fork(fork, "f3", version, ("b", 1), T0 + 12)
    assert (again.seed, again.clock_start) == (forked.seed, original.created_at)
    assert store.journal(InstanceKey("acme", "wf", "f3"))[0] == before[0][:2]


def test_a_fork_runs_the_version_it_is_given(store: SQLStore) -> None:
    key = _journaled(store)
    first = store.latest_version("acme", "wf")
    second = deployed(store, source="src2")
    forked = store.fork(key, "f", second, ("b", 1), T0 + 10)
    assert (forked.version, forked.source_hash) == (second.version, second.source_hash)
    assert store.load(claim_one(store, T0 + 10)).source == "src2"
    assert store.instance(key).version == first.version


def test_what_a_fork_refuses(store: SQLStore) -> None:
    key = _journaled(store)
    version = store.latest_version("acme", "wf")
    with pytest.raises(InvalidInput, match="no call 3 of step 'a' to fork from"):
        store.fork(key, "f", version, ("a", 3), T0)
    with pytest.raises(InvalidInput, match="no call"):
        store.fork(key, "f", version, ("nope", 1), T0)
    with pytest.raises(NotFound):
        store.fork(InstanceKey("acme", "wf", "nope"), "f", version, ("a", 1), T0)
    with pytest.raises(NotFound):
        store.fork(key, "f", replace(version, version=9), ("a", 1), T0)
    make_instance(store, "z1", tenant="zeta")
    with pytest.raises(NotFound):  # another tenant's instance is not found
        store.fork(InstanceKey("acme", "wf", "z1"), "f", version, ("a", 1), T0)
    with pytest.raises(Conflict):
        store.fork(key, "i1", version, ("a", 1), T0)  # its own id
    store.fork(key, "f", version, ("a", 1), T0, per_minute=1)
    with pytest.raises(QuotaExceeded):
        store.fork(key, "g", version, ("a", 1), T0, per_minute=1)
    assert sorted(i.instance_id for i in store.instances("acme", InstanceFilter("wf"), 10)) == ["f", "i1"]


def test_an_export_reads_every_page_and_is_bounded(store: SQLStore) -> None:
    key = _journaled(store)
    whole = Bundles(store).export(key, now=T0 + 20)
    paged = Bundles(store, page=1).export(key, now=T0 + 20)
    assert paged == whole
    assert [s["position"] for s in whole["journal"]] == [0, 1, 2, 3]
    assert [len(s["attempt_log"]) for s in whole["journal"]] == [1, 0, 2, 1]
    assert [(e["seq"], e["consumed_at"]) for e in whole["events"]] == [(1, 1), (2, None)]
    assert (whole["log"], whole["params"], whole["version"]["source"]) == ("printed", {"p": 1}, "src")
    assert whole["seed"] == store.instance(key).seed_bytes().hex()
    with pytest.raises(TooLarge, match="stores"):
        Bundles(store, limit=_stored(store, key) - 1).export(key)
    with pytest.raises(TooLarge, match="would pass"):
        Bundles(store, limit=_stored(store, key) + 200).export(key)
