"""The retention purger: deletes finished instances kept past their workflow's retention, in the background.

Every process that runs workers runs one. A tick finds the workflows with expired instances (round robin over
them, from where the last tick stopped) and deletes at most `batches` batches of at most `batch` instances
(and purge.PURGE_ROWS journal rows), one transaction each: the single SQLite writer is never held for long
and activations are never starved. With more left, the next tick comes after `busy_s`, else after `idle_s`.
Several processes purging at once is safe (see store.retention).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass

from tenantflow.runtime.engine.clock import Clock
from tenantflow.runtime.store import SQLStore

log = logging.getLogger("tenantflow.retention")

# Instances deleted per transaction, transactions per tick, and the pauses between ticks.
PURGE_BATCH = 100
PURGE_BATCHES = 4
IDLE_S = 5.0
BUSY_S = 1.0
START = ("", "")


@dataclass(frozen=True)
class Tick:
    purged: int
    more: bool
    """Expired instances may be left: the tick purged some, ended while a workflow still had some, or did not
    reach every workflow with some."""


class RetentionPurger:
    def __init__(
        self,
        store: SQLStore,
        clock: Clock,
        stopping: threading.Event,
        *,
        batch: int = PURGE_BATCH,
        batches: int = PURGE_BATCHES,
        idle_s: float = IDLE_S,
        busy_s: float = BUSY_S,
    ) -> None:
        self.store = store
        self.clock = clock
        self.stopping = stopping
        self.batch = batch
        self.batches = batches
        self.idle_s = idle_s
        self.busy_s = busy_s
        self._after = START
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tenantflow-retention", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (once `stopping` is set)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                tick = self.tick()
                if tick.purged:
                    log.info("purged %d instances past their retention", tick.purged)
                wait = self.busy_s if tick.more else self.idle_s
            except Exception:
                log.exception("purging expired instances failed; retrying")
                wait = self.idle_s
            self.stopping.wait(wait)

    def tick(self) -> Tick:
        """One round: up to `batches` transactions, over the workflows with expired instances in turn."""
        now = self.clock.now()
        workflows = self.store.expired_workflows(now, self._after, self.batches)
        # A short list is the end of the round: the next tick starts again from the first workflow.
        self._after = workflows[-1] if len(workflows) == self.batches else START
        purged, left = 0, self.batches
        queue = deque(workflows)
        while queue and left > 0:
            tenant_id, workflow = queue.popleft()
            deleted = len(self.store.purge_expired(tenant_id, workflow, now, self.batch))
            purged += deleted
            left -= 1
            if deleted:  # it may have more (a batch also ends early at purge.PURGE_ROWS): its turn comes again
                queue.append((tenant_id, workflow))
        # Anything purged: workflows before the cursor may have more by now, so the next tick comes soon.
        return Tick(purged, bool(purged) or bool(queue) or len(workflows) == self.batches)
