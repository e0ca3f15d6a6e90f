"""Exporting an instance: one self-contained JSON document (a bundle) with everything needed to replay it
elsewhere: the instance, its pinned source, its params, seed and clock origin, its whole journal, its events
and its log.

The bundle is read from the store in journal pages (each bounded, see store.journal), and refused as too large
(TooLarge, 413) before it is read when the instance stores more than MAX_EXPORT_BYTES, or as soon as what it
reads, decoded, passes that: a bundle never grows past the limit in memory.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from tenantflow.runtime.bounds import BUNDLE_FORMAT, MAX_PAGE
from tenantflow.runtime.errors import InvalidState, TooLarge
from tenantflow.runtime.records import AttemptRecord, EventRecord, Instance, InstanceKey
from tenantflow.runtime.service.watching import entry_json
from tenantflow.runtime.store import SQLStore

__all__ = ["MAX_EXPORT_BYTES", "Bundles"]

MAX_EXPORT_BYTES = 64 << 20
"""The most an exported instance may store (as stored), and the most its bundle may hold (decoded)."""
# A restart while the journal is read in pages would mix two runs: the export starts over, this many times.
EXPORT_TRIES = 3


def _size(value: Any) -> int:
    return len(json.dumps(value))


@dataclass
class _Budget:
    """What a bundle has taken so far, in decoded bytes; TooLarge once it passes the limit."""

    key: InstanceKey
    limit: int
    used: int = 0

    def take(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise TooLarge(
                f"instance {self.key.instance_id!r} is too large to export: its bundle would pass "
                f"{self.limit >> 20} MiB"
            )


@dataclass
class _Journal:
    steps: list[dict[str, Any]] = field(default_factory=list)
    events: dict[int, EventRecord] = field(default_factory=dict)


@dataclass(frozen=True)
class Bundles:
    store: SQLStore
    limit: int = MAX_EXPORT_BYTES
    page: int = MAX_PAGE
    """Journal positions read at a time."""

    def export(self, key: InstanceKey, now: float | None = None) -> dict[str, Any]:
        """The bundle of the instance (NotFound if there is none); TooLarge past the limit; InvalidState if it
        kept being restarted while it was read."""
        for _ in range(EXPORT_TRIES):
            instance = self.store.instance(key)
            if instance.stored_bytes > self.limit:
                raise TooLarge(
                    f"instance {key.instance_id!r} stores {instance.stored_bytes} bytes; an export takes at most "
                    f"{self.limit} ({self.limit >> 20} MiB)"
                )
            budget = _Budget(key, self.limit)
            budget.take(_size(instance.params) + len(instance.log))
            source = self.store.source(key.tenant_id, instance.source_hash)
            budget.take(len(source))
            journal = self._journal(key, budget)
            if self.store.instance(key).fence == instance.fence:
                return self._bundle(instance, source, journal, time.time() if now is None else now)
        raise InvalidState(f"instance {key.instance_id!r} kept being restarted while it was exported; try again")

    def _journal(self, key: InstanceKey, budget: _Budget) -> _Journal:
        """Every entry in position order (with its attempts) and every event, page by page."""
        journal = _Journal()
        after: int | None = -1
        while after is not None:
            page = self.store.journal_page(key, after, self.page)
            attempts: dict[int, list[AttemptRecord]] = {}
            for attempt in page.attempts:
                attempts.setdefault(attempt.position, []).append(attempt)
                budget.take(len(attempt.error_name or "") + len(attempt.error_message or "") + 100)
            for entry in page.entries:
                budget.take(len(entry.result or "") + len(entry.error_message or "") + len(entry.name) + 200)
                journal.steps.append(entry_json(entry, attempts.get(entry.position, [])))
            for event in page.events:
                if event.seq not in journal.events:
                    budget.take(_size(event.payload) + len(event.type) + 100)
                    journal.events[event.seq] = event
            after = page.next_after
        return journal

    @staticmethod
    def _bundle(instance: Instance, source: str, journal: _Journal, now: float) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "exported_at": now,
            "workflow": instance.workflow,
            "instance": instance.public(),
            "created_at": instance.clock_origin(),
            "seed": instance.seed_bytes().hex(),
            "version": {"version": instance.version, "source_hash": instance.source_hash, "source": source},
            "params": instance.params,
            "journal": journal.steps,
            "events": [asdict(journal.events[seq]) for seq in sorted(journal.events)],
            "log": instance.log,
        }
