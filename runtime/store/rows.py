"""The shapes of the rows the store reads: one record per shape, its fields the columns it selects.

`columns(Record)` is the select list, read into the record by column name. Records keep what was stored
(encoded blobs); their conversions to the runtime's records decode, after the transaction has ended.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from tenantflow.runtime.records import (
    DUE_SLACK_S,
    ERROR_SUMMARY_CHARS,
    AttemptRecord,
    Entry,
    EventRecord,
    Instance,
    Quotas,
    Tenant,
)
from tenantflow.runtime.store import codec
from tenantflow.runtime.store._sql import expr

# A list decodes an error stored before error_name/error_summary existed only when it is this small.
LEGACY_ERROR_BYTES = 64 << 10
QUOTA_FIELDS = frozenset(f.name for f in fields(Quotas))


def quotas_text(quotas: Quotas) -> str:
    return json.dumps(asdict(quotas))


@functools.lru_cache(maxsize=4096)
def max_concurrent(quotas: str) -> int:
    """A tenant's max_concurrent from its stored quotas (parsed once per distinct text: claims read it often)."""
    return int(json.loads(quotas).get("max_concurrent", Quotas.max_concurrent))


@dataclass(frozen=True, slots=True)
class TenantRow:
    tenant_id: str
    name: str
    quotas: str
    created_at: float
    operator: int

    def tenant(self) -> Tenant:
        stored = {k: v for k, v in json.loads(self.quotas).items() if k in QUOTA_FIELDS}
        stored["egress"] = tuple(stored.get("egress", ()))
        return Tenant(self.tenant_id, self.name, Quotas(**stored), self.created_at, bool(self.operator))


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """An instance with everything it stores."""

    tenant_id: str
    workflow: str
    instance_id: str
    version: int
    source_hash: str
    status: str
    params: bytes | None
    output: bytes | None
    error: bytes | None
    created_at: float
    updated_at: float
    wake_at: float | None
    fence: int
    steps: int
    log: bytes | None
    stored_bytes: int
    activations: int
    replayed_steps: int
    hot_resumes: int
    lease_owner: str | None
    rollback: str | None
    seed: str | None
    clock_start: float | None

    def instance(self) -> Instance:
        return Instance(
            tenant_id=self.tenant_id,
            workflow=self.workflow,
            instance_id=self.instance_id,
            version=self.version,
            source_hash=self.source_hash,
            status=self.status,  # type: ignore[arg-type]
            params=codec.decode(self.params),
            output=codec.decode(self.output),
            error=codec.decode(self.error),
            created_at=self.created_at,
            updated_at=self.updated_at,
            wake_at=self.wake_at,
            fence=self.fence,
            steps=self.steps,
            log=codec.decode_text(self.log) or "",
            stored_bytes=self.stored_bytes,
            activations=self.activations,
            replayed_steps=self.replayed_steps,
            hot_resumes=self.hot_resumes,
            parked_in=self.lease_owner if self.status in ("waiting", "paused") else None,
            rollback=self.rollback,  # type: ignore[arg-type]
            seed=self.seed,
            clock_start=self.clock_start,
        )


@dataclass(frozen=True, slots=True)
class OriginalRow:
    """What a fork takes from the instance it copies."""

    workflow: str
    instance_id: str
    params: bytes | None
    created_at: float
    seed: str | None
    clock_start: float | None

    def instance(self, tenant_id: str) -> Instance:
        """As much of the instance as its seed and clock need."""
        return Instance(
            tenant_id,
            self.workflow,
            self.instance_id,
            0,
            "",
            "queued",
            None,
            created_at=self.created_at,
            seed=self.seed,
            clock_start=self.clock_start,
        )


@dataclass(frozen=True, slots=True)
class SummaryRow:
    """An instance as lists show it: no params, output or log, and of its error only the name and the start
    of the message (an error stored before those columns existed is decoded only when it is small)."""

    tenant_id: str
    workflow: str
    instance_id: str
    version: int
    source_hash: str
    status: str
    error_name: str | None
    error_summary: str | None
    created_at: float
    updated_at: float
    wake_at: float | None
    fence: int
    steps: int
    stored_bytes: int
    legacy_error: bytes | None = expr(
        f"CASE WHEN error_name IS NULL AND LENGTH(error) <= {LEGACY_ERROR_BYTES} THEN error END"
    )

    def instance(self) -> Instance:
        error: dict[str, Any] | None = None
        if self.error_name is not None:
            error = {"name": self.error_name, "message": self.error_summary or ""}
        elif self.legacy_error is not None:
            legacy = codec.decode(self.legacy_error)
            if isinstance(legacy, dict):
                message = str(legacy.get("message"))[:ERROR_SUMMARY_CHARS]
                error = {"name": str(legacy.get("name")), "message": message}
        return Instance(
            tenant_id=self.tenant_id,
            workflow=self.workflow,
            instance_id=self.instance_id,
            version=self.version,
            source_hash=self.source_hash,
            status=self.status,  # type: ignore[arg-type]
            params=None,
            error=error,
            created_at=self.created_at,
            updated_at=self.updated_at,
            wake_at=self.wake_at,
            fence=self.fence,
            steps=self.steps,
            detail=False,
            stored_bytes=self.stored_bytes,
        )


@dataclass(frozen=True, slots=True)
class EntryRow:
    """A journal position."""

    position: int
    name: str
    kind: str
    state: str
    attempts: int
    result: bytes | None
    error_name: str | None
    error_message: str | None
    wake_at: float | None
    event_type: str | None
    created_at: float
    updated_at: float
    fuel: int
    duration_ms: float
    parent: int | None
    occurrence: int | None
    attempt_limit: int | None

    def entry(self) -> Entry:
        return Entry(
            position=self.position,
            name=self.name,
            kind=self.kind,
            state=self.state,
            attempts=self.attempts,
            result=codec.decode_text(self.result),
            error_name=self.error_name,
            error_message=self.error_message,
            wake_at=self.wake_at,
            event_type=self.event_type,
            created_at=self.created_at,
            updated_at=self.updated_at,
            fuel=self.fuel,
            duration_ms=self.duration_ms,
            parent=self.parent,
            occurrence=self.occurrence,
            attempt_limit=self.attempt_limit,
        )


@dataclass(frozen=True, slots=True)
class AttemptRow:
    position: int
    attempt: int
    ok: int
    error_name: str | None
    error_message: str | None
    fuel: int
    duration_ms: float
    finished_at: float
    traceback: str | None

    def attempt_record(self) -> AttemptRecord:
        return AttemptRecord(
            position=self.position,
            attempt=self.attempt,
            ok=bool(self.ok),
            error_name=self.error_name,
            error_message=self.error_message,
            fuel=self.fuel,
            duration_ms=self.duration_ms,
            finished_at=self.finished_at,
            traceback=self.traceback,
        )


@dataclass(frozen=True, slots=True)
class BucketRow:
    """A tenant's instance-creation token bucket."""

    tokens: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class EventRow:
    seq: int
    type: str
    payload: bytes | None
    created_at: float
    consumed_at: int | None

    def event(self) -> EventRecord:
        return EventRecord(self.seq, self.type, codec.decode(self.payload), self.created_at, self.consumed_at)


@dataclass(frozen=True, slots=True)
class PageSizeRow:
    """What a journal position weighs in a page: the head of its result (enough to know the decoded size)
    and the stored lengths of its result and message."""

    position: int
    head: bytes | None = expr(f"substr(result, 1, {codec.HEAD_BYTES})")
    stored: int = expr("COALESCE(LENGTH(result), 0)")
    message: int = expr("COALESCE(LENGTH(error_message), 0)")

    def size(self) -> int:
        return codec.raw_size(self.head, int(self.stored)) + int(self.message)


@dataclass(frozen=True, slots=True)
class EventsRow:
    """An instance's events: the next number, and of those it has not consumed, how many and their
    payloads' size as JSON."""

    next_seq: int = expr("COALESCE(MAX(seq), 0) + 1")
    buffered: int = expr("COALESCE(SUM(CASE WHEN consumed_at IS NULL THEN 1 ELSE 0 END), 0)")
    buffered_bytes: int = expr(
        "COALESCE(SUM(CASE WHEN consumed_at IS NULL THEN COALESCE(size, LENGTH(payload)) ELSE 0 END), 0)"
    )


@dataclass(frozen=True, slots=True)
class EndedRow:
    """An instance as an activation left it."""

    status: str
    wake_at: float | None

    def due(self, now: float) -> bool:
        """Its wake time has come (within the slack of whole milliseconds)."""
        return self.wake_at is not None and self.wake_at <= now + DUE_SLACK_S

    def runnable_before(self, deadline: float) -> bool:
        return self.status in ("queued", "waiting") and self.wake_at is not None and self.wake_at < deadline


@dataclass(frozen=True, slots=True)
class FaultRow:
    status: str
    host_faults: int


@dataclass(frozen=True, slots=True)
class StatusCountRow:
    tenant_id: str
    status: str
    count: int = expr("COUNT(*)")


@dataclass(frozen=True, slots=True)
class CountRow:
    """A capped count of a status, by its place in the statuses counted."""

    place: int
    count: int


@dataclass(frozen=True, slots=True)
class WorkflowCountRow:
    status: str
    count: int = expr("COUNT(*)")


@dataclass(frozen=True, slots=True)
class ReadyTenantRow:
    """A tenant with runnable work at claim time: its quotas and its live leases (activations running)."""

    tenant_id: str
    quotas: str
    running: int


@dataclass(frozen=True, slots=True)
class LiveRow:
    tenant_id: str
    running: int = expr("COUNT(*)")


@dataclass(frozen=True, slots=True)
class CutRow:
    """A stretch of the journal: its step.do calls and stored bytes (what a restart from a step removes, or what
    a fork copies)."""

    steps: int
    bytes: int
