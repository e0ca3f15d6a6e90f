"""Typed records the runtime reads from and writes to a store."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from tenantflow.runtime.errors import InvalidInput

if TYPE_CHECKING:
    from tenantflow.host import Ready

Status = Literal["queued", "running", "waiting", "waiting_for_pause", "paused", "errored", "terminated", "complete"]
STATUSES: tuple[Status, ...] = (
    "queued",
    "running",
    "waiting",
    "waiting_for_pause",
    "paused",
    "errored",
    "terminated",
    "complete",
)
Rollback = Literal["terminate", "error"]
FINISHED: frozenset[str] = frozenset({"errored", "terminated", "complete"})

ID_PATTERN = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_-]*$")
MAX_ID = 64

EVENT_TYPE_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]+$")
MAX_EVENT_TYPE = 100
# What one instance may hold in events it has not consumed yet; beyond it, sending answers 429.
MAX_BUFFERED_EVENTS = 100
MAX_BUFFERED_EVENT_BYTES = 4 << 20
# How much of an error's message an instance list shows (lists never decode the whole error).
ERROR_SUMMARY_CHARS = 500
# Wake times travel as whole milliseconds; a time within this much of now counts as due.
DUE_SLACK_S = 0.002


def check_id(value: Any, what: str = "id") -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID or not ID_PATTERN.match(value):
        raise InvalidInput(
            f"{what} must be 1-{MAX_ID} characters of letters, digits, '_' and '-', not starting with '-'"
        )
    return value


def check_event_type(value: Any) -> str:
    """An event type: 1-100 characters of letters, digits and `_ . : -` (InvalidInput otherwise)."""
    if not isinstance(value, str) or len(value) > MAX_EVENT_TYPE or not EVENT_TYPE_PATTERN.match(value):
        raise InvalidInput(f"an event type is 1-{MAX_EVENT_TYPE} characters of letters, digits, '_', '.', ':' and '-'")
    return value


@dataclass(frozen=True)
class Quotas:
    """A tenant's limits; None means the platform default."""

    max_concurrent: int = 8
    max_instances_per_minute: int = 6000
    max_steps: int = 10_000
    memory_mb: int = 256
    # Fuel for the code outside step bodies between two durable calls (see tenantflow.host.Limits.fuel).
    fuel: int = 20_000_000_000
    # The most CPU one step attempt may have (its `cpu` option, default 30 s), in ms: 5 minutes, the
    # platform's maximum, by default; a lower cap also lowers the default budget.
    max_step_cpu_ms: int = 300_000
    max_source_bytes: int = 1 << 20
    max_payload_bytes: int = 1 << 20
    egress: tuple[str, ...] = ()
    # Everything the tenant's instances store (params, journal, attempts, events, outputs, errors, logs).
    max_stored_mb: int = 1024
    # Workflows (names with at least one version); a workflow's versions are counted in max_stored_mb.
    max_workflows: int = 1000

    @property
    def max_stored_bytes(self) -> int:
        return self.max_stored_mb << 20

    def storage_exhausted(self) -> str:
        return f"storage quota of {self.max_stored_mb} MB exhausted"


# The range an operator may set each numeric quota to (the admin API and the CLI check them).
QUOTA_BOUNDS: dict[str, tuple[int, int]] = {
    "max_concurrent": (1, 10_000),
    "max_instances_per_minute": (1, 10_000_000),
    "max_steps": (1, 100_000),
    "memory_mb": (16, 1024),
    "fuel": (1_000_000, 10**13),
    "max_step_cpu_ms": (1, 300_000),
    "max_source_bytes": (1, 2 << 20),
    "max_payload_bytes": (1, 2 << 20),
    "max_stored_mb": (1, 10**7),
    "max_workflows": (1, 100_000),
}
MAX_EGRESS_ENTRIES = 100
# An egress allowlist entry: a host name (or `*.` and a domain), an IPv4 address or a bracketed IPv6
# address, each with an optional port (tenantflow.host.fetch reads them).
EGRESS_PATTERN = re.compile(
    r"^(?:(?:\*\.)?[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$"
)


def check_quotas(changes: dict[str, Any], base: Quotas | None = None) -> Quotas:
    """`base` (the defaults if None) with `changes` applied, each checked against QUOTA_BOUNDS and
    EGRESS_PATTERN (InvalidInput naming the field otherwise)."""
    values = asdict(base or Quotas())
    for name, value in changes.items():
        if name == "egress":
            values["egress"] = _check_egress(value)
            continue
        if name not in QUOTA_BOUNDS:
            raise InvalidInput(f"no quota {name!r}; quotas are {', '.join([*QUOTA_BOUNDS, 'egress'])}")
        low, high = QUOTA_BOUNDS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidInput(f"{name} is a whole number from {low:,} to {high:,}")
        values[name] = value
    return Quotas(**values)


def _check_egress(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or len(value) > MAX_EGRESS_ENTRIES:
        raise InvalidInput(f"egress is a list of at most {MAX_EGRESS_ENTRIES} hosts")
    hosts: list[str] = []
    for entry in value:
        if not isinstance(entry, str) or not EGRESS_PATTERN.fullmatch(entry):
            raise InvalidInput(
                f"egress entry {str(entry)[:80]!r} is not a host, *.domain, IPv4 or [IPv6] address "
                "(with an optional :port)"
            )
        hosts.append(entry.lower())
    return tuple(dict.fromkeys(hosts))


@dataclass(frozen=True)
class Tenant:
    tenant_id: str
    name: str
    quotas: Quotas
    created_at: float
    operator: bool = False

    def public(self) -> dict[str, Any]:
        """As the admin API shows it (never the key)."""
        quotas = asdict(self.quotas)
        quotas["egress"] = list(self.quotas.egress)
        return {"name": self.name, "operator": self.operator, "created_at": self.created_at, "quotas": quotas}


@dataclass(frozen=True)
class Version:
    workflow: str
    version: int
    source_hash: str
    created_at: float


@dataclass(frozen=True)
class WorkflowPage:
    """The latest version of each of a page of workflows, by name; `next_after` (None: the last page) is the
    name the next page starts after."""

    workflows: list[Version]
    next_after: str | None


@dataclass(frozen=True)
class VersionPage:
    """A page of a workflow's versions, oldest first: the newest ones below a version number (the first page:
    the newest of all); `next_before` (None: none older) asks for the older ones before it."""

    versions: list[Version]
    next_before: int | None


@dataclass(frozen=True)
class Instance:
    tenant_id: str
    workflow: str
    instance_id: str
    version: int
    source_hash: str
    status: Status
    params: Any
    output: Any = None
    error: dict[str, Any] | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    wake_at: float | None = None
    fence: int = 0
    steps: int = 0
    log: str = ""
    # False in lists: params, output and log are not loaded, and `error` is only its name and the start
    # of its message.
    detail: bool = True
    stored_bytes: int = 0
    # Activations so far, journal positions they replayed, waits gone on from in a parked isolate.
    activations: int = 0
    replayed_steps: int = 0
    hot_resumes: int = 0
    # Waiting in a parked isolate (hot resume) of the worker named here, not evicted.
    parked_in: str | None = None
    # Rolling back (or rolled back): after a `terminate` with rollback, or after an error.
    rollback: Rollback | None = None
    # The seed of its randomness outside step bodies (hex); None: derived from its key (`seed_bytes`).
    seed: str | None = None
    # Where its logical clock starts (a fork's: the original's); None: at its creation (`clock_origin`).
    clock_start: float | None = None

    @property
    def key(self) -> InstanceKey:
        return InstanceKey(self.tenant_id, self.workflow, self.instance_id)

    def seed_bytes(self) -> bytes:
        """What its randomness outside step bodies is drawn from: the same on every replay of this run."""
        if self.seed is not None:
            return bytes.fromhex(self.seed)
        key = f"{self.tenant_id}\0{self.workflow}\0{self.instance_id}\0{self.created_at!r}"
        return hashlib.sha256(key.encode()).digest()

    def clock_origin(self) -> float:
        """Where its clock outside step bodies starts (also its event's timestamp): the same on every replay."""
        return self.created_at if self.clock_start is None else self.clock_start

    def public(self) -> dict[str, Any]:
        body = {
            "id": self.instance_id,
            "workflow": self.workflow,
            "version": self.version,
            "status": self.status,
            "params": self.params,
            "output": self.output,
            "error": self.error,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "wake_at": self.wake_at,
        }
        if self.detail:
            body.update(
                activations=self.activations,
                replayed_steps=self.replayed_steps,
                hot_resumes=self.hot_resumes,
                parked=self.parked_in is not None,
                rollback=self.rollback,
            )
        return body


@dataclass(frozen=True)
class InstanceFilter:
    """Which instances a list shows: one workflow's (None: all the tenant's), in one status, created strictly
    after and before these times (epoch seconds)."""

    workflow: str | None = None
    status: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    id_prefix: str | None = None
    """Only instances whose id starts with this (an exact id is its own prefix): such a list goes by id, then
    workflow, ascending, not newest first."""


@dataclass(frozen=True)
class ListPosition:
    """The last instance of a page. Lists go newest first: by created_at, then workflow, then instance_id,
    each descending; the next page starts after this one."""

    created_at: float
    workflow: str
    instance_id: str


class ActivationCounts(TypedDict):
    """What an activation adds to its instance's counts (`store.finish` and `store.park` take them)."""

    replayed: int
    activations: int
    resumes: int
    # Fuel of the workflow's code outside step bodies (known when the activation ends: 0 in a park's report).
    workflow_fuel: int


@dataclass(frozen=True)
class InstanceKey:
    tenant_id: str
    workflow: str
    instance_id: str


@dataclass
class Entry:
    """One journal position: a step.do, a sleep or an event wait."""

    position: int
    name: str
    kind: str
    state: str  # done | failed | retrying | sleeping | waiting | timed_out
    attempts: int = 0
    result: str | None = None
    error_name: str | None = None
    error_message: str | None = None
    wake_at: float | None = None
    event_type: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    fuel: int = 0
    duration_ms: float = 0.0
    # The position of the step whose body made this call (a nested step.do); None at the top level.
    parent: int | None = None
    # An async workflow's call: which call of its name it is (from 0), what replay matches it by.
    occurrence: int | None = None
    # A step's (or rollback's) most attempts: its retry limit + 1, as its config said at its last attempt.
    attempt_limit: int | None = None


@dataclass(frozen=True)
class AttemptRecord:
    position: int
    attempt: int
    ok: bool
    error_name: str | None
    error_message: str | None
    fuel: int
    duration_ms: float
    finished_at: float
    # The tenant's traceback of what a failed attempt's body raised.
    traceback: str | None = None


@dataclass(frozen=True)
class EventRecord:
    seq: int
    type: str
    payload: Any
    created_at: float
    consumed_at: int | None = None


@dataclass(frozen=True)
class Claim:
    """An instance a worker holds a lease on, with its fencing token."""

    key: InstanceKey
    fence: int


@dataclass(frozen=True)
class Handoff:
    """Free activation slots of a worker pool in the creating process, offered to a create: it may lease up to
    `slots` of the instances it creates to `owner` in its own transaction (when nothing else is due, and within
    the tenant's concurrency: min(its max_concurrent, `max_per_tenant`)), and the pool runs them at once."""

    owner: str
    slots: int
    lease_s: float
    max_per_tenant: int


@dataclass
class ActivationState:
    """Everything an activation needs, loaded in one go."""

    instance: Instance
    source: str
    entries: dict[int, Entry] = field(default_factory=dict)
    events: list[EventRecord] = field(default_factory=list)
    quotas: Quotas = field(default_factory=Quotas)
    # Handed over by a create before its commit: False once it has ended without committing (the instance does not
    # exist). Until it answers, the activation does nothing outside the sandbox and writes nothing.
    ready: Ready | None = None
