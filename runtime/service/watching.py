"""Following one instance as it runs: what changed since the last look, as status and journal-entry changes.

A `Follower` remembers what its watcher has been sent and reads the store incrementally: the instance's
status document, then the journal from the watcher's cursor on (never the whole journal again). The
cursor is the last position the watcher holds in its final state: every position but the last is
final (a workflow journals one call at a time and moves on), and the last one once it is done, failed
or timed out. The cursor carries that entry's creation time, so a restart that cut the journal below it
is noticed (the entry is gone or was written again) and the watcher is told to start over (`reset`).

Entries are sent as the journal endpoint sends them, but a result larger than STREAM_RESULT_BYTES is
left out (`result_omitted`): the watcher fetches it from the journal if it wants it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from tenantflow.runtime.bounds import WATCH_CURSOR
from tenantflow.runtime.errors import InvalidInput
from tenantflow.runtime.records import FINISHED, AttemptRecord, Entry, InstanceKey
from tenantflow.runtime.store import SQLStore

__all__ = ["FINAL_STATES", "STREAM_RESULT_BYTES", "WATCH_PAGE", "Change", "Cursor", "Follower", "entry_json"]

STREAM_RESULT_BYTES = 64 << 10
"""A result larger than this (as stored JSON) is not sent in a watch: `result_omitted` says so."""
WATCH_PAGE = 200
"""Journal positions read per look; a longer journal is sent over several looks, one after the other."""
FINAL_STATES = frozenset({"done", "failed", "timed_out"})
"""An entry in one of these never changes again (short of a restart)."""

_CURSOR = re.compile(WATCH_CURSOR)


@dataclass(frozen=True)
class Cursor:
    """What a watcher holds: every entry up to `position` in its final state; `stamp` is that entry's
    creation time in microseconds (None: not known, e.g. a plain journal position from `?after=`)."""

    position: int = -1
    stamp: int | None = None

    def token(self) -> str:
        """As the SSE `id:` (and `Last-Event-ID`, `?after=`) carries it: "POSITION" or "POSITION:STAMP"."""
        return str(self.position) if self.stamp is None else f"{self.position}:{self.stamp}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        found = _CURSOR.match(text)
        if found is None:
            raise InvalidInput("a watch resumes after a journal position: -1, N or N:STAMP (an event's id)")
        position, stamp = found.group(1), found.group(2)
        return cls(int(position), None if stamp is None or position == "-1" else int(stamp[1:]))


def _without_time(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != "updated_at"}


def _stamp(entry: Entry) -> int:
    return round(entry.created_at * 1_000_000)


@dataclass(frozen=True)
class Change:
    """One thing to tell a watcher: the status document, an entry (new or changed), or that the journal
    was cut by a restart (forget every entry: they follow again). `cursor` is what the watcher holds once
    it has this change."""

    kind: Literal["status", "entry", "reset"]
    data: dict[str, Any]
    cursor: Cursor


def entry_json(entry: Entry, attempts: list[AttemptRecord], max_result: int | None = None) -> dict[str, Any]:
    """An entry as the API sends it (the journal's `steps`): with its parsed result and its attempts.
    With `max_result`, a larger result is left out and `result_omitted` is true."""
    item = asdict(entry)
    omitted = max_result is not None and entry.result is not None and len(entry.result) > max_result
    item["result"] = None if entry.result is None or omitted else json.loads(entry.result)
    item["attempt_log"] = [asdict(a) for a in attempts]
    if max_result is not None:
        item["result_omitted"] = omitted
    return item


@dataclass
class _Seen:
    """What the watcher was sent of an entry after its cursor (it may change still)."""

    stamp: int
    updated_at: float
    state: str
    attempts: int


@dataclass
class Follower:
    """One watcher's view of one instance; `look` (blocking: run it in a thread) says what changed."""

    store: SQLStore
    key: InstanceKey
    cursor: Cursor = field(default_factory=Cursor)
    page: int = WATCH_PAGE
    status: dict[str, Any] | None = None
    finished: bool = False
    """The last status sent is a finished one (and the journal read after it was sent whole)."""
    _seen: dict[int, _Seen] = field(default_factory=dict)

    def look(self) -> tuple[list[Change], bool]:
        """The changes since the last look, and whether more of the journal is left to read at once.
        NotFound if the instance is gone."""
        instance = self.store.instance(self.key)  # before the journal: the journal is at least as new
        changes: list[Change] = []
        document = instance.public()
        # Every journal write moves updated_at: it alone is no status change.
        status_changed = _without_time(document) != self.status
        # On connect the status comes first. After that, a finished status is told last, after the entries read
        # with it: the stream ends with it (as documented), so a watcher that stops there has them all.
        last_word = status_changed and self.status is not None and instance.status in FINISHED
        if status_changed and not last_word:
            self.status = _without_time(document)
            changes.append(Change("status", document, self.cursor))
        # From the cursor's own entry: whether it is still the one the watcher has shows a restart.
        start = self.cursor.position - 1 if self.cursor.position >= 0 else -1
        page = self.store.journal_page(self.key, start, self.page)
        if self._was_cut(page.entries, page.next_after is None):
            self.cursor, self._seen = Cursor(), {}
            changes.append(Change("reset", {}, self.cursor))
            return changes, True
        attempts: dict[int, list[AttemptRecord]] = {}
        for attempt in page.attempts:
            attempts.setdefault(attempt.position, []).append(attempt)
        fresh = [e for e in page.entries if e.position > self.cursor.position]
        for index, entry in enumerate(fresh):
            seen = _Seen(_stamp(entry), entry.updated_at, entry.state, entry.attempts)
            last = index == len(fresh) - 1 and page.next_after is None
            final = not last or entry.state in FINAL_STATES
            if self._seen.get(entry.position) != seen:
                self._seen[entry.position] = seen
                if final and self.cursor.position == entry.position - 1:
                    self._advance(entry)
                item = entry_json(entry, attempts.get(entry.position, []), STREAM_RESULT_BYTES)
                changes.append(Change("entry", item, self.cursor))
            elif final and self.cursor.position == entry.position - 1:
                self._advance(entry)
        more = page.next_after is not None
        if last_word:
            self.status = _without_time(document)
            changes.append(Change("status", document, self.cursor))
        self.finished = instance.status in FINISHED and not more
        return changes, more

    def _advance(self, entry: Entry) -> None:
        self.cursor = Cursor(entry.position, _stamp(entry))
        self._seen.pop(entry.position, None)

    def _was_cut(self, entries: list[Entry], whole: bool) -> bool:
        """Whether a restart cut the journal under what the watcher holds."""
        if self.cursor.position >= 0:
            first = entries[0] if entries else None
            if first is None or first.position != self.cursor.position:
                return True
            if self.cursor.stamp is not None and _stamp(first) != self.cursor.stamp:
                return True
        by_position = {e.position: e for e in entries}
        for position, seen in self._seen.items():
            entry = by_position.get(position)
            if entry is None and whole:
                return True
            if entry is not None and _stamp(entry) != seen.stamp:
                return True
        return False
