"""Watching an instance (`GET .../watch`, server-sent events) as data, shared by `Client` and `AsyncClient`:
the typed events, a parser of the text/event-stream lines, and `Follow`, which keeps what a watch needs
across reconnects (the last event's id, whether the instance has finished, the pauses between tries)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import httpx
from tenantflow.client._calls import _instance
from tenantflow.client._errors import WatchBroken
from tenantflow.runtime import contract as c
from tenantflow.runtime.records import FINISHED

__all__ = ["EntryEvent", "Follow", "ResetEvent", "SSEParser", "ServerSentEvent", "StatusEvent", "WatchEvent"]

HEARTBEAT_S = 15.0
"""The server's heartbeat (http.stream.HEARTBEAT_S): a stream silent for three of them is taken as lost."""


@dataclass(frozen=True)
class StatusEvent:
    """The instance's status document (as `status()` returns it): on connect, then each time it changes."""

    instance: c.Instance
    id: str


@dataclass(frozen=True)
class EntryEvent:
    """A journal entry that is new or changed (its state, attempts, result); a result over 64 KiB is left out
    (`entry.result_omitted`: read it with `journal()`)."""

    entry: c.WatchEntry
    id: str


@dataclass(frozen=True)
class ResetEvent:
    """A restart cut the journal: forget the entries seen so far; the journal's entries follow again."""

    id: str


WatchEvent = StatusEvent | EntryEvent | ResetEvent


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str
    id: str | None


@dataclass
class SSEParser:
    """Server-sent events from a stream's lines (the WHATWG text/event-stream rules this server needs)."""

    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        """The event that a blank line completes, else None."""
        if not line:
            event = ServerSentEvent(self._event or "message", "\n".join(self._data), self._id) if self._data else None
            self._event, self._data, self._id = "", [], None
            return event
        if line.startswith(":"):
            return None  # a comment: the heartbeat
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


@dataclass
class Follow:
    """One watch across its connections."""

    workflow: str
    instance_id: str
    last_id: str | None = None
    attempts: int = 5
    """Connections in a row that may fail (or end early) before the watch gives up with WatchBroken."""
    done: bool = False
    failures: int = 0
    parser: SSEParser = field(default_factory=SSEParser)

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        headers = {"Accept": "text/event-stream"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = self.last_id
        t = http.timeout
        timeout = httpx.Timeout(t.connect, read=max(t.read or 0.0, 3 * HEARTBEAT_S), write=t.write, pool=t.pool)
        self.parser = SSEParser()
        return http.build_request(
            "GET", _instance(self.workflow, self.instance_id) + "/watch", headers=headers, timeout=timeout
        )

    def feed(self, line: str) -> WatchEvent | None:
        raw = self.parser.feed(line)
        if raw is None or raw.id is None:
            return None
        self.last_id = raw.id
        self.failures = 0
        if raw.event == "status":
            instance = c.Instance.model_validate(json.loads(raw.data))
            self.done = instance.status in FINISHED
            return StatusEvent(instance, raw.id)
        if raw.event == "entry":
            return EntryEvent(c.WatchEntry.model_validate(json.loads(raw.data)), raw.id)
        if raw.event == "reset":
            return ResetEvent(raw.id)
        return None  # an event this client does not know (a newer server)

    def broken(self, reason: str) -> float:
        """The connection ended before the instance finished: seconds to wait before the next, or WatchBroken."""
        self.failures += 1
        if self.failures > self.attempts:
            raise WatchBroken(f"watching {self.workflow}/{self.instance_id}: {reason} ({self.attempts} tries)")
        return min(0.25 * 2.0 ** (self.failures - 1), 4.0)
