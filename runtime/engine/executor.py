"""One activation of a claimed instance: load, run in the sandbox, record the outcome."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Unpack

from tenantflow.host import (
    LIMIT_ERRORS,
    MAX_MEMORY_BYTES,
    Completed,
    Failed,
    FailureName,
    Grants,
    Limits,
    Outcome,
    Sandbox,
    Suspend,
    Suspended,
)
from tenantflow.runtime import logs
from tenantflow.runtime.engine.clock import Clock
from tenantflow.runtime.engine.codes import CodeCache
from tenantflow.runtime.engine.journal import InstanceJournal
from tenantflow.runtime.engine.metrics import Metrics
from tenantflow.runtime.engine.parking import Parker
from tenantflow.runtime.records import ActivationCounts, ActivationState, Claim, Handoff, InstanceKey, Quotas
from tenantflow.runtime.store import PAUSING_STATUSES, EndFields, LeaseLost, Recording, SQLStore

log = logging.getLogger("tenantflow.executor")

RETRY_AFTER_HOST_ERROR_S = 5.0
# A real host fault (a bug, a store outage) is retried; this many in a row errors the instance with HostFault.
MAX_HOST_FAULTS = 5


# How an activation ended for the engine: the instance's new status, or "lost" (the lease was gone,
# nothing recorded), "cancelled" (terminated or restarted meanwhile), "failed" (an error in the engine).
Ending = Literal["complete", "errored", "terminated", "waiting", "lost", "cancelled", "failed"]


@dataclass(frozen=True)
class Activated:
    """What an activation did, for callers that watch (local runs, tests, metrics)."""

    claim: Claim
    status: Ending
    outcome: Outcome | None
    successors: list[Claim] = field(default_factory=list)
    """What its end leased for the slot it leaves (`Executor.activate(successor=)`), to run next."""


def _counts(journal: InstanceJournal, outcome: Outcome) -> ActivationCounts:
    """What the activation adds to its instance's counts, with the fuel of the workflow's own code: all it
    burnt less its step attempts'."""
    counts = journal.unreported()
    counts["workflow_fuel"] = max(0, outcome.stats.fuel - sum(fuel for _, fuel in journal.attempts))
    return counts


def limits_for(quotas: Quotas) -> Limits:
    return Limits(
        memory_bytes=min(quotas.memory_mb << 20, MAX_MEMORY_BYTES),
        fuel=quotas.fuel,
        max_step_cpu_ms=quotas.max_step_cpu_ms,
    )


class Executor:
    def __init__(
        self,
        store: SQLStore,
        sandbox: Sandbox,
        clock: Clock,
        metrics: Metrics | None = None,
        stopping: threading.Event | None = None,
        on_write: Callable[[InstanceKey], None] | None = None,
    ) -> None:
        self.store = store
        self.sandbox = sandbox
        self.clock = clock
        self.metrics = metrics
        self.stopping = stopping
        self.codes = CodeCache(sandbox)
        self.on_write = on_write
        """Told of each journal write as it commits (watchers of the instance wake)."""

    def activate(
        self,
        claim: Claim,
        cancel: threading.Event | None = None,
        parker: Callable[[Claim, Quotas], Parker] | None = None,
        state: ActivationState | None = None,
        successor: Callable[[], Handoff | None] | None = None,
    ) -> Activated:
        """Run one activation of `claim`; with `parker` (made for the claim and its tenant's quotas), its
        waits may park the isolate and go on in it (hot resume). `state`: what the activation needs, when the
        caller knows it (a new instance handed over by its create); otherwise it is loaded. `successor()`, asked as
        the activation ends: the slot it leaves, offered to what is due next, which its end leases
        (`Activated.successors`)."""
        if state is None:
            try:
                state = self.store.load(claim)
            except LeaseLost:
                return Activated(claim, "lost", None)
        journal = InstanceJournal(
            self.store,
            claim,
            state,
            self.clock,
            self.stopping,
            None if parker is None else parker(claim, state.quotas),
            self.on_write,
        )
        try:
            outcome = self._flushed(journal, self._run(state, journal, cancel))
        except Exception:
            if not _created(state):
                return Activated(claim, "cancelled", None)
            return self._faulted(claim, journal)
        if not _created(state):  # handed over by a create that did not commit: nothing to write to
            return Activated(claim, "cancelled", None)
        ender = _Ender(self.store, claim, successor)
        try:
            status = self._record(ender, journal, outcome)
        except Exception:
            if not journal.pending:  # else the end carried the pending writes, which rolled back with it
                raise
            return self._faulted(claim, journal)
        try:
            self._log(claim, state.instance.version, status, outcome)
            if self.metrics is not None:
                self.metrics.activation(claim.key.tenant_id, outcome, journal.attempts, journal.replayed)
        except Exception:  # the end is recorded (and may have leased what runs next): reporting it must not undo that
            log.exception("reporting the end of %s failed", claim.key)
        return Activated(claim, status, outcome, ender.successors)

    def _faulted(self, claim: Claim, journal: InstanceJournal) -> Activated:
        """The activation failed in the host: retried a little later, errored after MAX_HOST_FAULTS in a row. Steps
        that finished before the fault and are still pending are written first, if they can be, as their own calls
        would have written them."""
        try:
            journal.flush()
        except Exception:
            log.debug("the pending writes of %s were not written", claim.key, exc_info=True)
        now = self.clock.now()
        errored = self.store.host_fault(claim, now, now + RETRY_AFTER_HOST_ERROR_S, MAX_HOST_FAULTS)
        if errored:
            log.exception("activation of %s failed in the host %d times in a row; errored", claim.key, MAX_HOST_FAULTS)
            return Activated(claim, "errored", None)
        log.exception("activation of %s failed in the host; retrying in %s s", claim.key, RETRY_AFTER_HOST_ERROR_S)
        return Activated(claim, "waiting", None)

    @staticmethod
    def _log(claim: Claim, version: int, status: Ending, outcome: Outcome) -> None:
        """The lifecycle events of an activation's end: complete, errored, a limit hit."""
        key = claim.key
        where = {"tenant": key.tenant_id, "workflow": key.workflow, "instance": key.instance_id, "version": version}
        if status == "complete":
            logs.event("instance complete", **where)
        elif status == "errored" and isinstance(outcome, Failed):
            if outcome.error.name in LIMIT_ERRORS:
                logs.event("limit hit", **where, error=outcome.error.name)
            logs.event("instance errored", **where, error=outcome.error.name)

    def _run(self, state: ActivationState, journal: InstanceJournal, cancel: threading.Event | None) -> Outcome:
        instance = state.instance
        origin = instance.clock_origin()
        event = {"payload": instance.params, "timestamp": origin, "instance_id": instance.instance_id}
        grants = Grants(egress=state.quotas.egress)
        limits = limits_for(state.quotas)
        return self.sandbox.run(
            state.source,
            event,
            journal,
            limits,
            grants,
            cancel=cancel,
            clock_start=origin,
            seed=instance.seed_bytes(),
            code=self.codes.code(instance.source_hash, state.source, limits),
            ready=state.ready,
        )

    @staticmethod
    def _flushed(journal: InstanceJournal, outcome: Outcome) -> Outcome:
        """Commit the writes still pending (`InstanceJournal.flush`) unless the end will, in its own commit:
        a workflow that returned (not unwinding). What the write raises ends the activation as it would have had
        the step's call raised it (the workflow's code after that step touched nothing outside its isolate)."""
        if not journal.pending or (isinstance(outcome, Completed) and not journal.unwinding):
            return outcome
        try:
            journal.flush()
        except Suspend as wait:
            return Suspended(wait.reason, wait.wake_at_ms, outcome.stats)
        return outcome

    def _record(self, ender: _Ender, journal: InstanceJournal, outcome: Outcome) -> Ending:
        now = self.clock.now()
        log_text = outcome.stats.log
        counts = _counts(journal, outcome)
        cancelled = isinstance(outcome, Failed) and outcome.error.name == FailureName.CANCELLED
        if journal.unwinding and not cancelled and not isinstance(outcome, Suspended):
            return self._unwound(ender, journal, outcome)
        if isinstance(outcome, Completed):
            # The pending writes, if any, go first in the end's commit: one commit for all.
            last = journal.carried()
            ender.finish(now, status="complete", output=outcome.output, log=log_text, before=last, **counts)
            if last is not None:
                journal.carried_written(last)
                if last.status is None:
                    return "lost"
                if last.status in PAUSING_STATUSES:  # paused in the last step: the end is the pause's
                    return self._suspended(ender, journal, Suspended("paused", None, outcome.stats))
            return "complete"
        if isinstance(outcome, Failed) and outcome.error.name == FailureName.CANCELLED:
            # Cancelled because the pool stops: hand the instance back, runnable now. Otherwise it was
            # terminated, restarted or taken over, and whoever did that owns its state now.
            if self.stopping is not None and self.stopping.is_set():
                ender.finish(
                    now,
                    status="waiting",
                    wake_at=now,
                    log=log_text,
                    **counts,
                )
                return "waiting"
            return "cancelled"
        if isinstance(outcome, Failed):
            error = {
                "name": outcome.error.name,
                "message": outcome.error.message,
                "traceback": outcome.error.traceback,
                "line": outcome.error.line,
            }
            ender.finish(
                now,
                status="errored",
                error=error,
                log=log_text,
                **counts,
            )
            return "errored"
        assert isinstance(outcome, Suspended)
        return self._suspended(ender, journal, outcome)

    def _unwound(self, ender: _Ender, journal: InstanceJournal, outcome: Outcome) -> Ending:
        """The end of a terminate with rollback: `terminated` once the rollbacks ran, `errored` with the
        RollbackError if one failed for good."""
        now = self.clock.now()
        counts = _counts(journal, outcome)
        if isinstance(outcome, Failed) and outcome.error.name != FailureName.TERMINATED:
            error = {
                "name": outcome.error.name,
                "message": outcome.error.message,
                "traceback": outcome.error.traceback,
                "line": outcome.error.line,
            }
            status: Ending = "errored" if outcome.error.name == FailureName.ROLLBACK_ERROR else "terminated"
            ender.finish(now, status=status, error=error, log=outcome.stats.log, **counts)
            return status
        ender.finish(now, status="terminated", log=outcome.stats.log, **counts)
        return "terminated"

    def _suspended(self, ender: _Ender, journal: InstanceJournal, outcome: Suspended) -> Ending:
        now = self.clock.now()
        log_text = outcome.stats.log
        counts = _counts(journal, outcome)
        if journal.lease_lost:
            return "lost"
        wake_at = None if outcome.wake_at_ms is None else outcome.wake_at_ms / 1000
        if wake_at is None and journal.waiting_for is None:
            wake_at = now
        ender.finish(
            now,
            status="waiting",
            wake_at=wake_at,
            waiting_for=journal.waiting_for,
            log=log_text,
            **counts,
        )
        return "waiting"


def _created(state: ActivationState) -> bool:
    """Whether the instance exists: waits for its create's commit when the activation started before it."""
    return state.ready is None or state.ready.wait()


class _Ender:
    """Ends one activation; with a successor (the slot it leaves), leases what that slot runs next."""

    def __init__(self, store: SQLStore, claim: Claim, successor: Callable[[], Handoff | None] | None) -> None:
        self.store = store
        self.claim = claim
        self.successor = successor
        self.successors: list[Claim] = []

    def finish(self, now: float, *, status: str, before: Recording | None = None, **ending: Unpack[EndFields]) -> None:
        offered = None if self.successor is None else self.successor()
        _, self.successors = self.store.finish_and_claim(
            self.claim, now, offered, status=status, before=before, **ending
        )
