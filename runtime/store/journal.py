"""The journal as its readers page through it: entries by position, with their attempts and events."""

from __future__ import annotations

from dataclasses import dataclass

from tenantflow.runtime.errors import InvalidInput, NotFound
from tenantflow.runtime.records import MAX_BUFFERED_EVENTS, AttemptRecord, Entry, EventRecord, InstanceKey
from tenantflow.runtime.store._sql import KEY, Tx, columns, key_params
from tenantflow.runtime.store.core import StoreCore
from tenantflow.runtime.store.rows import AttemptRow, EntryRow, EventRow, PageSizeRow

# A journal page holds at most this many bytes of entries (as stored), and always at least one entry.
JOURNAL_PAGE_BYTES = 8 << 20


@dataclass(frozen=True)
class JournalPage:
    entries: list[Entry]
    attempts: list[AttemptRecord]
    events: list[EventRecord]
    next_after: int | None  # pass as `after` for the next page; None on the last page


class Journal(StoreCore):
    def journal(
        self, key: InstanceKey, after: int = -1, limit: int = 1000
    ) -> tuple[list[Entry], list[AttemptRecord], list[EventRecord]]:
        """The first page of the journal after position `after` (see `journal_page`)."""
        page = self.journal_page(key, after, limit)
        return page.entries, page.attempts, page.events

    def journal_page(self, key: InstanceKey, after: int = -1, limit: int = 1000) -> JournalPage:
        """Entries at positions > `after`, at most `limit` of them and JOURNAL_PAGE_BYTES of results and messages
        (decoded size; at least one entry), with their attempts and the events consumed at those positions;
        the last page also has the events not consumed yet (at most MAX_BUFFERED_EVENTS). `next_after` is the
        position to pass as `after` for the next page, None on the last page."""
        with self.transaction() as tx:
            exists = tx.send(f"SELECT status FROM instances WHERE {KEY}", key_params(key))
            last, more = _page_end(tx, key, after, limit)
            if not exists.result().rows:
                raise NotFound(f"no instance {key.instance_id!r} of workflow {key.workflow!r}")
            bounds = (*key_params(key), after, last)
            entries = tx.send(
                f"SELECT {columns(EntryRow)} FROM journal WHERE {KEY} AND position > ? AND position <= ? "
                "ORDER BY position",
                bounds,
            )
            attempts = tx.send(
                f"SELECT {columns(AttemptRow)} FROM attempts WHERE {KEY} AND position > ? AND position <= ? "
                "ORDER BY position, attempt",
                bounds,
            )
            consumed = tx.send(
                f"SELECT {columns(EventRow)} FROM events WHERE {KEY} AND consumed_at > ? AND consumed_at <= ?",
                bounds,
            )
            pending = None
            if not more:
                pending = tx.send(
                    f"SELECT {columns(EventRow)} FROM events WHERE {KEY} AND consumed_at IS NULL ORDER BY seq LIMIT ?",
                    (*key_params(key), MAX_BUFFERED_EVENTS),
                )
        events = consumed.records(EventRow) + (pending.records(EventRow) if pending else [])
        return JournalPage(
            entries=[r.entry() for r in entries.records(EntryRow)],
            attempts=[r.attempt_record() for r in attempts.records(AttemptRow)],
            events=sorted((r.event() for r in events), key=lambda e: e.seq),
            next_after=last if more else None,
        )


def _page_end(tx: Tx, key: InstanceKey, after: int, limit: int) -> tuple[int, bool]:
    """The last position of the page after `after`, and whether more entries follow it."""
    rows = tx.records(
        PageSizeRow,
        f"SELECT {columns(PageSizeRow)} FROM journal WHERE {KEY} AND position > ? ORDER BY position LIMIT ?",
        (*key_params(key), after, limit + 1),
    )
    last, total = after, 0
    for n, row in enumerate(rows):
        size = row.size()
        if n == limit or (n > 0 and total + size > JOURNAL_PAGE_BYTES):
            return last, True
        last, total = row.position, total + size
    return last, False


def cut_position(tx: Tx, key: InstanceKey, name: str, count: int, verb: str) -> int:
    """The journal position of the count-th call of step `name` (InvalidInput if the journal has no such call)."""
    positions = tx.run(
        f"SELECT position FROM journal WHERE {KEY} AND name = ? ORDER BY position LIMIT ?",
        (*key_params(key), name, count),
    ).values()
    if len(positions) < count:
        raise InvalidInput(f"the journal has no call {count} of step {name!r} to {verb} from")
    return int(positions[-1])
