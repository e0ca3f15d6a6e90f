"""`GET .../instances/{id}/watch` over HTTP against a real `tenantflow serve` on 127.0.0.1: the events and
their order, resuming, a restart's reset, tenant scoping, bounded places, a prompt stop; and the client's
`watch()` (sync and async) on it."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers_server import ServerProcess, app_server, servers
from tenantflow.client import AsyncClient, Client, EntryEvent, ResetEvent, StatusEvent
from tenantflow.client import _sync as client_module
from tenantflow.client._watch import ServerSentEvent, SSEParser
from tenantflow.host import Sandbox
from tenantflow.runtime.contract import Instance, WatchEntry
from tenantflow.runtime.http.api import create_app
from tenantflow.runtime.service import Service
from tenantflow.runtime.service.changes import MAX_WAITS_PER_TENANT

GATED = """\
def run(event, step):
    given = event.payload or {}
    first = step.do("first", lambda: 1)
    step.wait_for_event("go", event_type="go", timeout="1 hour")
    big = step.do("big", lambda: "x" * given.get("big", 10))
    for n in range(given.get("more", 0)):
        step.do("more", lambda: n)
    return {"first": first, "size": len(big)}
"""


class Stream:
    """A watch read in a thread: its events go to a queue; `ended` is set once the server has closed it."""

    def __init__(self, url: str, key: str, headers: dict[str, str] | None = None, **params: str) -> None:
        self.events: queue.Queue[ServerSentEvent] = queue.Queue()
        self.opened = threading.Event()
        self.ended = threading.Event()
        self.status = 0
        self.content_type = ""
        self.body = b""
        self.raw: list[str] = []
        self._args = (url, {"Authorization": f"Bearer {key}", **(headers or {})}, params)
        threading.Thread(target=self._run, daemon=True).start()
        assert self.opened.wait(20), "the watch did not answer"

    def _run(self) -> None:
        url, headers, params = self._args
        try:
            with httpx.stream("GET", url, headers=headers, params=params, timeout=httpx.Timeout(10, read=60)) as r:
                if r.status_code != 200:
                    self.body = r.read()
                self.status, self.content_type = r.status_code, r.headers.get("content-type", "")
                self.opened.set()
                if r.status_code != 200:
                    return
                parser = SSEParser()
                for line in r.iter_lines():
                    self.raw.append(line)
                    event = parser.feed(line)
                    if event is not None:
                        self.events.put(event)
        finally:
            self.opened.set()
            self.ended.set()

    def next(self, timeout: float = 20) -> ServerSentEvent:
        return self.events.get(timeout=timeout)

    def until(self, done: Callable[[ServerSentEvent], bool], timeout: float = 30) -> list[ServerSentEvent]:
        """The events up to and including the first that is `done`."""
        deadline = time.monotonic() + timeout
        seen: list[ServerSentEvent] = []
        while True:
            event = self.next(max(0.1, deadline - time.monotonic()))
            seen.append(event)
            if done(event):
                return seen

    def rest(self, timeout: float = 30) -> list[ServerSentEvent]:
        """Every event left, once the server has ended the stream."""
        assert self.ended.wait(timeout), "the stream did not end"
        found = []
        while not self.events.empty():
            found.append(self.events.get_nowait())
        return found


def data(event: ServerSentEvent) -> Any:
    return json.loads(event.data)


def is_status(status: str) -> Callable[[ServerSentEvent], bool]:
    return lambda e: e.event == "status" and data(e)["status"] == status


def entry_in(position: int, state: str) -> Callable[[ServerSentEvent], bool]:
    return lambda e: e.event == "entry" and data(e)["position"] == position and data(e)["state"] == state


class Site:
    def __init__(self, server: ServerProcess, key: str, other: str) -> None:
        self.server, self.key, self.other = server, key, other

    def watch_url(self, instance_id: str, workflow: str = "gated") -> str:
        return f"{self.server.url}/v1/workflows/{workflow}/instances/{instance_id}/watch"

    def watch(self, instance_id: str, headers: dict[str, str] | None = None, **params: str) -> Stream:
        return Stream(self.watch_url(instance_id), self.key, headers, **params)

    def waiting(self, instance_id: str, **params: Any) -> None:
        """Start an instance of `gated` and wait until it waits for its event."""
        with self.server.client(self.key) as client:
            handle = client.start("gated", instance_id, params or None)
            assert handle.wait(["waiting"], timeout=30).status == "waiting"

    def go(self, instance_id: str) -> None:
        with self.server.client(self.key) as client:
            client.send_event("gated", instance_id, "go")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with servers(tmp_path_factory.mktemp("watch")) as group:
        server = group.start("watch")
        key = str(server.create_tenant("acme")["api_key"])
        other = str(server.create_tenant("globex")["api_key"])
        with server.client(key) as client:
            client.deploy("gated", GATED)
        yield Site(server, key, other)
        assert " 500 " not in server.log()


def test_status_then_entries_then_each_change_and_the_end(site: Site) -> None:
    site.waiting("s1", big=100_000)
    stream = site.watch("s1")
    assert stream.status == 200 and stream.content_type.startswith("text/event-stream")
    first = stream.next()
    assert first.event == "status" and Instance.model_validate(data(first)).status == "waiting"
    assert data(first)["params"] == {"big": 100_000}  # the shape of GET instance
    opening = stream.until(entry_in(1, "waiting"))
    assert [(e.event, data(e)["position"]) for e in opening] == [("entry", 0), ("entry", 1)]
    assert data(opening[0])["result"] == 1 and data(opening[0])["attempt_log"][0]["ok"] is True
    assert stream.raw[0] == "retry: 2000"

    site.go("s1")
    rest = stream.until(is_status("complete")) + stream.rest()
    assert rest[-1].event == "status" and data(rest[-1])["output"] == {"first": 1, "size": 100_000}
    entries = [WatchEntry.model_validate(data(e)) for e in rest if e.event == "entry"]
    done = {e.position: e for e in entries if e.state == "done"}
    assert set(done) == {1, 2}
    assert done[2].result is None and done[2].result_omitted, "a result over 64 KiB stays out of the stream"
    assert not any(e.position == 0 for e in entries), "an entry that did not change is not sent again"
    # Each id is where a reconnect resumes: the last final position, and its entry's creation time.
    assert rest[-1].id is not None and rest[-1].id.startswith("2:")
    with site.server.client(site.key) as client:
        assert client.journal("gated", "s1").steps[2].result == "x" * 100_000  # the journal has it whole


def test_a_reconnect_resumes_after_its_last_event(site: Site) -> None:
    site.waiting("r1")
    site.go("r1")
    with site.server.client(site.key) as client:
        client.wait("gated", "r1", timeout=30)
    whole = site.watch("r1").rest()
    assert [e.event for e in whole] == ["status", "entry", "entry", "entry"]
    after_first = whole[1].id
    assert after_first is not None and after_first.startswith("0:")

    resumed = site.watch("r1", {"Last-Event-ID": after_first}).rest()
    assert [(e.event, data(e).get("position")) for e in resumed] == [("status", None), ("entry", 1), ("entry", 2)]
    by_query = site.watch("r1", after="1").rest()
    assert [(e.event, data(e).get("position")) for e in by_query] == [("status", None), ("entry", 2)]
    # An id whose entry is not the one journaled there (a restart wrote it again): start over.
    stale = site.watch("r1", {"Last-Event-ID": "1:12345"}).rest()
    assert [e.event for e in stale] == ["status", "reset", "entry", "entry", "entry"]


def test_a_restart_sends_a_reset_and_the_journal_again(site: Site) -> None:
    site.waiting("x1")
    stream = site.watch("x1")
    stream.until(entry_in(1, "waiting"))
    with site.server.client(site.key) as client:
        client.restart("gated", "x1")
    after = stream.until(entry_in(1, "waiting"))
    kinds = [e.event for e in after]
    assert "reset" in kinds
    assert [data(e)["position"] for e in after[kinds.index("reset") :] if e.event == "entry"][:2] == [0, 1]
    site.go("x1")
    assert stream.until(is_status("complete"))[-1].event == "status"


def test_another_tenants_instance_is_not_found_and_a_bad_cursor_is_refused(site: Site) -> None:
    site.waiting("t1")
    theirs = Stream(site.watch_url("t1"), site.other)
    assert theirs.status == 404 and b"not-found" in theirs.body
    assert site.watch("nope").status == 404
    assert site.watch("t1", after="x").status == 422
    assert site.watch("t1", {"Last-Event-ID": "1:2:3"}).status == 422
    anonymous = httpx.get(site.watch_url("t1"), timeout=10)
    assert anonymous.status_code == 401
    head = httpx.head(site.watch_url("t1"), headers={"Authorization": f"Bearer {site.key}"}, timeout=10)
    assert head.status_code == 200 and head.content == b""  # answered at once, not streamed
    site.go("t1")


def test_watches_hold_bounded_places_given_back_when_the_client_goes(site: Site) -> None:
    site.waiting("p1")
    url, headers = site.watch_url("p1"), {"Authorization": f"Bearer {site.key}"}

    async def main() -> tuple[int, str | None, int]:
        limits = httpx.Limits(max_connections=MAX_WAITS_PER_TENANT + 8)
        async with httpx.AsyncClient(headers=headers, timeout=20, limits=limits) as http:
            held = [await http.send(http.build_request("GET", url), stream=True) for _ in range(MAX_WAITS_PER_TENANT)]
            assert all(r.status_code == 200 for r in held)
            refused = await http.get(url)
            for response in held:
                await response.aclose()  # the client goes: each watch ends and gives its place back
            deadline = time.monotonic() + 10
            while True:
                again = await http.send(http.build_request("GET", url), stream=True)
                await again.aclose()
                if again.status_code == 200 or time.monotonic() > deadline:
                    return refused.status_code, refused.headers.get("retry-after"), again.status_code
                await asyncio.sleep(0.2)

    refused, retry_after, again = asyncio.run(main())
    assert refused == 429 and retry_after is not None
    assert again == 200
    site.go("p1")


def test_the_client_watches_until_the_end(site: Site) -> None:
    site.waiting("c1", more=3)
    with site.server.client(site.key) as client:
        handle = client.instance("gated", "c1")
        events = handle.watch()
        first = next(events)
        assert isinstance(first, StatusEvent) and first.instance.status == "waiting"
        client.send_event("gated", "c1", "go")
        rest = list(events)  # ends by itself once the instance has finished
    assert isinstance(rest[-1], StatusEvent) and rest[-1].instance.status == "complete"
    assert handle.instance is not None and handle.instance.status == "complete"
    positions = {e.entry.position for e in rest if isinstance(e, EntryEvent) and e.entry.state == "done"}
    assert positions == {0, 1, 2, 3, 4, 5}
    assert not any(isinstance(e, ResetEvent) for e in rest)


def test_the_async_client_watches_until_the_end(site: Site) -> None:
    site.waiting("a1")

    async def main() -> list[Any]:
        async with AsyncClient(site.server.url, site.key) as client:
            seen: list[Any] = []
            async for event in client.instance("gated", "a1").watch():
                seen.append(event)
                if isinstance(event, EntryEvent) and event.entry.position == 1 and event.entry.state == "waiting":
                    await client.send_event("gated", "a1", "go")
            return seen

    seen = asyncio.run(asyncio.wait_for(main(), 60))
    assert isinstance(seen[0], StatusEvent) and isinstance(seen[-1], StatusEvent)
    assert seen[-1].instance.status == "complete"
    assert any(isinstance(e, EntryEvent) and e.entry.name == "big" for e in seen)


def test_the_server_stops_promptly_with_watches_open(tmp_path: Path) -> None:
    with servers(tmp_path) as group:
        server = group.start("stop")
        key = str(server.create_tenant("acme")["api_key"])
        with server.client(key) as client:
            client.deploy("gated", GATED)
        site = Site(server, key, key)
        streams = []
        for n in range(3):
            site.waiting(f"w{n}")
            streams.append(site.watch(f"w{n}"))
            streams[-1].until(entry_in(1, "waiting"))
        started = time.monotonic()
        assert server.terminate(timeout=20) == 0
        took = time.monotonic() - started
        assert took < 5, f"SIGTERM to exit took {took:.1f} s with watches open"
        assert all(s.ended.wait(5) for s in streams), "every watch ends when the server stops"


def test_a_quiet_watch_sends_heartbeats(sandbox: Sandbox, tmp_path: Path) -> None:
    service = Service.open(f"sqlite:///{tmp_path / 'tf.db'}", sandbox=sandbox, workers=1).start()
    try:
        with app_server(create_app(service, watch_heartbeat_s=0.3)) as url:
            _, key = service.create_tenant("acme")
            site = Site(ServerProcess(tmp_path / "unused.db"), key, key)
            site.server.port = int(url.rsplit(":", 1)[1])
            with site.server.client(key) as client:
                client.deploy("gated", GATED)
            site.waiting("h1")
            stream = site.watch("h1")
            stream.until(entry_in(1, "waiting"))
            deadline = time.monotonic() + 5
            while ": keep-alive" not in stream.raw[-3:]:
                assert time.monotonic() < deadline, "no heartbeat within 5 s"
                time.sleep(0.05)
            assert stream.raw.count(": keep-alive") >= 1 and stream.events.empty()
            site.go("h1")
            stream.rest()
    finally:
        service.stop()
        service.store.close()


def test_the_client_resumes_a_lost_stream_from_its_last_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module.time, "sleep", lambda _s: None)
    instance = {
        "id": "i1",
        "workflow": "wf",
        "version": 1,
        "status": "waiting",
        "params": None,
        "output": None,
        "error": None,
        "created_at": 1.0,
        "updated_at": 2.0,
        "wake_at": None,
    }
    entry = {"position": 0, "name": "a", "kind": "do", "state": "done", "attempts": 1, "result": 1, "attempt_log": []}
    asked: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("last-event-id"))
        if len(asked) == 1:  # the server goes away after the first entry
            body = f"id: -1\nevent: status\ndata: {json.dumps(instance)}\n\n"
            body += f"id: 0:5\nevent: entry\ndata: {json.dumps(entry)}\n\n"
        else:
            body = f"id: 0:5\nevent: status\ndata: {json.dumps({**instance, 'status': 'complete'})}\n\n"
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    with Client("http://tf.test", "k", transport=httpx.MockTransport(answer)) as client:
        seen = list(client.watch("wf", "i1"))
    assert asked == [None, "0:5"]
    assert [type(e).__name__ for e in seen] == ["StatusEvent", "EntryEvent", "StatusEvent"]
