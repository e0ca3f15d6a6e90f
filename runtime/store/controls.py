"""What is done to an instance from outside: pause, resume, terminate, restart, and events sent to it.

Each reads the instance's status (locking its row where writers interleave) and then writes, so two
controls of one instance take turns and a control never overwrites one it raced with.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from tenantflow.runtime.errors import InvalidState, NotFound, QuotaExceeded
from tenantflow.runtime.records import FINISHED, MAX_BUFFERED_EVENT_BYTES, MAX_BUFFERED_EVENTS, InstanceKey
from tenantflow.runtime.store import codec
from tenantflow.runtime.store._sql import KEY, Tx, columns, key_params
from tenantflow.runtime.store.core import StoreCore
from tenantflow.runtime.store.journal import cut_position
from tenantflow.runtime.store.purge import delete_instances
from tenantflow.runtime.store.rows import EventsRow
from tenantflow.runtime.store.usage import add_usage, journal_part
from tenantflow.runtime.usage import day_of


class Controls(StoreCore):
    def _status(self, tx: Tx, key: InstanceKey) -> str:
        found = tx.run(f"SELECT status FROM instances WHERE {KEY}{self.for_update}", key_params(key))
        if not found.rows:
            raise NotFound(f"no instance {key.instance_id!r} of workflow {key.workflow!r}")
        return str(found.scalar())

    def pause(self, key: InstanceKey, now: float) -> None:
        """Paused at once, unless an activation runs it: then `waiting_for_pause` until its step in flight is
        journaled (the activation ends there and the instance is `paused`)."""
        with self.transaction() as tx:
            status = self._status(tx, key)
            if status not in ("queued", "running", "waiting"):
                raise InvalidState(f"cannot pause an instance that is {status}")
            tx.send(
                "UPDATE instances SET status = CASE WHEN status = 'running' AND lease_until >= ? "
                f"THEN 'waiting_for_pause' ELSE 'paused' END, updated_at = ? WHERE {KEY}",
                (now, now, *key_params(key)),
            )

    def resume(self, key: InstanceKey, now: float) -> None:
        with self.transaction() as tx:
            status = self._status(tx, key)
            if status not in ("paused", "waiting_for_pause"):
                raise InvalidState(f"cannot resume an instance that is {status}")
            # Still held by a worker (paused mid-activation): it goes on running. Otherwise it is replayed
            # now, and the replay finds out what it waits for (a timer, an event that came while paused).
            tx.send(
                "UPDATE instances SET status = CASE WHEN lease_owner IS NOT NULL AND lease_until > ? THEN 'running' "
                f"ELSE 'queued' END, wake_at = ?, updated_at = ? WHERE {KEY}",
                (now, now, now, *key_params(key)),
            )
        self._notify()

    def terminate(self, key: InstanceKey, now: float, rollback: bool = False) -> None:
        """Terminated at once; with `rollback`, the instance is run once more to unwind (no step, sleep or wait
        that has not finished goes on) and run the rollbacks of its completed steps, then it is terminated. A
        running activation is cut short either way (the fence moves on). A terminate without rollback stops
        a rollback in progress."""
        with self.transaction() as tx:
            status = self._status(tx, key)
            if status in FINISHED:
                raise InvalidState(f"cannot terminate an instance that is {status}")
            if rollback:
                started = tx.scalar(f"SELECT rollback FROM instances WHERE {KEY}", key_params(key))
                if started == "terminate":
                    raise InvalidState("the instance is already being terminated with a rollback")
                tx.send(
                    "UPDATE instances SET status = 'queued', rollback = 'terminate', wake_at = ?, waiting_for = NULL, "
                    f"lease_owner = NULL, lease_until = NULL, fence = fence + 1, updated_at = ? WHERE {KEY}",
                    (now, now, *key_params(key)),
                )
            else:
                tx.send(
                    "UPDATE instances SET status = 'terminated', wake_at = NULL, waiting_for = NULL, "
                    f"lease_owner = NULL, lease_until = NULL, updated_at = ?, finished_at = ? WHERE {KEY}",
                    (now, now, *key_params(key)),
                )
        if rollback:
            self._notify()

    def restart(self, key: InstanceKey, now: float, from_step: tuple[str, int] | None = None) -> None:
        """From scratch with the same params and version: the journal and events go, the fence moves on, and
        the run draws its randomness from a new seed.

        `from_step` (name, count): the journal before the count-th call of that name is kept (what it
        returned is replayed, not re-run) and everything from it on goes; the events its waits took are
        buffered again. InvalidInput if the journal has no such call."""
        with self.transaction() as tx:
            self._status(tx, key)
            if from_step is None:
                add_usage(tx, key.tenant_id, key.workflow, day_of(now), journal_bytes=-journal_part(tx, key).bytes)
                for table in ("journal", "attempts", "events"):
                    tx.send(f"DELETE FROM {table} WHERE {KEY}", key_params(key))
                tx.send(
                    "UPDATE instances SET status = 'queued', output = NULL, error = NULL, error_name = NULL, "
                    "error_summary = NULL, wake_at = ?, waiting_for = NULL, lease_owner = NULL, lease_until = NULL, "
                    "fence = fence + 1, steps = 0, log = NULL, host_faults = 0, rollback = NULL, finished_at = NULL, "
                    "seed = ?, "
                    f"stored_bytes = COALESCE(LENGTH(params), 0), updated_at = ? WHERE {KEY}",
                    (now, secrets.token_hex(16), now, *key_params(key)),
                )
            else:
                self._cut_journal(tx, key, now, *from_step)
        self._notify()

    def _cut_journal(self, tx: Tx, key: InstanceKey, now: float, name: str, count: int) -> None:
        params = key_params(key)
        at = cut_position(tx, key, name, count, verb="restart")
        cut = journal_part(tx, key, at)
        removed = cut.bytes
        add_usage(tx, key.tenant_id, key.workflow, day_of(now), journal_bytes=-removed)
        tx.send(f"DELETE FROM journal WHERE {KEY} AND position >= ?", (*params, at))
        tx.send(f"DELETE FROM attempts WHERE {KEY} AND position >= ?", (*params, at))
        tx.send(f"UPDATE events SET consumed_at = NULL WHERE {KEY} AND consumed_at >= ?", (*params, at))
        tx.send(
            "UPDATE instances SET status = 'queued', output = NULL, error = NULL, error_name = NULL, "
            "error_summary = NULL, wake_at = ?, waiting_for = NULL, lease_owner = NULL, lease_until = NULL, "
            "fence = fence + 1, steps = steps - ?, log = NULL, host_faults = 0, rollback = NULL, finished_at = NULL, "
            "stored_bytes = stored_bytes - ? "
            "- COALESCE(LENGTH(output), 0) - COALESCE(LENGTH(error), 0) - COALESCE(LENGTH(log), 0), "
            f"updated_at = ? WHERE {KEY}",
            (now, int(cut.steps), removed, now, *params),
        )

    def upgrade(self, key: InstanceKey, version: int, source_hash: str, fence: int, now: float) -> None:
        """Pin a waiting or paused instance to another version; InvalidState if it has moved on since `fence`
        (it ran meanwhile). The fence moves on, so an isolate parked with the old code is let go: the next
        activation replays with the new one."""
        with self.transaction() as tx:
            self._status(tx, key)
            moved = tx.run(
                "UPDATE instances SET version = ?, source_hash = ?, fence = fence + 1, lease_owner = NULL, "
                f"lease_until = NULL, updated_at = ? WHERE {KEY} AND fence = ? AND status IN ('waiting', 'paused') "
                "RETURNING fence",
                (version, source_hash, now, *key_params(key), fence),
            )
            if not moved.rows:
                raise InvalidState("the instance ran while its journal was being checked; try the upgrade again")

    def delete_instance(self, key: InstanceKey) -> None:
        """Delete a finished instance with its journal, attempts and events; InvalidState otherwise."""
        with self.transaction() as tx:
            status = self._status(tx, key)
            if status not in FINISHED:
                raise InvalidState(f"cannot delete an instance that is {status}; terminate it first")
            delete_instances(tx, [key])

    def send_event(self, key: InstanceKey, event_type: str, payload: Any, now: float) -> int:
        """Buffer an event for the instance; QuotaExceeded (429) when it already holds MAX_BUFFERED_EVENTS
        events it has not consumed, or their payloads would pass MAX_BUFFERED_EVENT_BYTES (as JSON)."""
        text = json.dumps(payload)
        size = len(text.encode())
        blob = codec.encode_text(text)
        with self.transaction() as tx:
            status = self._status(tx, key)  # locks the instance row where needed: the check and insert are one
            if status in FINISHED:
                raise InvalidState(f"cannot send an event to an instance that is {status}")
            events = tx.record(EventsRow, f"SELECT {columns(EventsRow)} FROM events WHERE {KEY}", key_params(key))
            assert events is not None  # an aggregate always has its row
            _check_buffered(key, int(events.buffered), int(events.buffered_bytes), size)
            seq = int(events.next_seq)
            tx.send(
                "INSERT INTO events (tenant_id, workflow, instance_id, seq, type, payload, created_at, size) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*key_params(key), seq, event_type, blob, now, size),
            )
            # The event is part of what the instance stores; an instance waiting for this type wakes now.
            tx.send(
                "UPDATE instances SET stored_bytes = stored_bytes + ?, "
                "wake_at = CASE WHEN status = 'waiting' AND waiting_for = ? THEN ? ELSE wake_at END, "
                "updated_at = CASE WHEN status = 'waiting' AND waiting_for = ? THEN ? ELSE updated_at END "
                f"WHERE {KEY}",
                (len(blob) + len(event_type), event_type, now, event_type, now, *key_params(key)),
            )
        self._notify()
        return seq


def _check_buffered(key: InstanceKey, count: int, buffered: int, size: int) -> None:
    if count >= MAX_BUFFERED_EVENTS:
        raise QuotaExceeded(
            f"instance {key.instance_id!r} already holds {count} events it has not consumed "
            f"(at most {MAX_BUFFERED_EVENTS}); send more once it has waited for some"
        )
    if buffered + size > MAX_BUFFERED_EVENT_BYTES:
        raise QuotaExceeded(
            f"instance {key.instance_id!r} already holds {buffered} bytes of events it has not consumed; "
            f"with this one they would pass {MAX_BUFFERED_EVENT_BYTES} bytes"
        )
