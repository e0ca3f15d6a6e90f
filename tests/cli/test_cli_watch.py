"""`tenantflow watch` and `tenantflow journal --follow` against a real server: lines as things happen, the
exit once the instance has finished."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from helpers_server import ROOT, ServerProcess, cli, servers

GATED = """\
def run(event, step):
    first = step.do("first", lambda: 1)
    step.wait_for_event("go", event_type="go", timeout="1 hour")
    return {"first": first, "then": step.do("then", lambda: "done")}
"""


class Running:
    """A `tenantflow ...` subprocess whose output lines are read as they come."""

    def __init__(self, server: ServerProcess, key: str, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_")}
        env.update(TENANTFLOW_URL=server.url, TENANTFLOW_KEY=key, COLUMNS="200")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tenantflow.runtime.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def until(self, text: str, timeout: float = 30) -> list[str]:
        seen: list[str] = []
        while True:
            try:
                seen.append(self.lines.get(timeout=timeout))
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"no line with {text!r} in {timeout} s; saw {seen}") from None
            if text in seen[-1]:
                return seen

    def finish(self, timeout: float = 30) -> tuple[int, list[str]]:
        code = self.proc.wait(timeout)
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get_nowait())
        return code, rest


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    with servers(tmp_path_factory.mktemp("cli-watch")) as group:
        server = group.start("cli-watch")
        key = str(server.create_tenant("acme")["api_key"])
        with server.client(key) as client:
            client.deploy("gated", GATED)
        yield server, key


def _waiting(server: ServerProcess, key: str, instance_id: str) -> None:
    with server.client(key) as client:
        client.start("gated", instance_id).wait(["waiting"], timeout=30)


def _go(server: ServerProcess, key: str, instance_id: str) -> None:
    with server.client(key) as client:
        client.send_event("gated", instance_id, "go")


def test_watch_prints_each_change_as_it_happens_and_exits_when_finished(site: tuple[ServerProcess, str]) -> None:
    server, key = site
    _waiting(server, key, "w1")
    watch = Running(server, key, "watch", "gated", "w1")
    before = watch.until("#1 go")
    assert "waiting" in before[0] and "#0 first" in before[1]
    assert watch.proc.poll() is None, "it keeps watching while the instance waits"
    _go(server, key, "w1")
    after = watch.until("complete")
    code, rest = watch.finish()
    assert code == 0 and not rest
    assert any("#1 go  wait  done" in line for line in after)
    assert any("#2 then" in line and "done" in line for line in after)
    assert 'output {"first": 1, "then": "done"}' in after[-1]


def test_watch_json_is_one_object_per_line(site: tuple[ServerProcess, str]) -> None:
    server, key = site
    _waiting(server, key, "j1")
    watch = Running(server, key, "watch", "gated", "j1", "--json")
    first = [json.loads(line) for line in watch.until('"position": 1')]
    assert first[0]["event"] == "status" and first[0]["data"]["status"] == "waiting"
    assert [e["data"]["position"] for e in first[1:]] == [0, 1]
    _go(server, key, "j1")
    code, rest = watch.finish()
    events = [json.loads(line) for line in rest]
    assert code == 0 and events[-1]["event"] == "status" and events[-1]["data"]["status"] == "complete"
    assert all(e["id"] for e in events)


def test_journal_follow_prints_entries_as_they_come(site: tuple[ServerProcess, str]) -> None:
    server, key = site
    _waiting(server, key, "f1")
    follow = Running(server, key, "journal", "gated", "f1", "--follow", "--json", "--after", "0")
    first = json.loads(follow.until('"position": 1')[0])
    assert first["position"] == 1 and first["state"] == "waiting", "--after 0 leaves position 0 out"
    _go(server, key, "f1")
    code, rest = follow.finish()
    entries = [json.loads(line) for line in rest]
    assert code == 0
    assert [(e["position"], e["state"]) for e in entries] == [(1, "done"), (2, "done")]


def test_watch_of_an_unknown_instance_fails(site: tuple[ServerProcess, str]) -> None:
    server, key = site
    done = cli("watch", "gated", "nope", check=False, TENANTFLOW_URL=server.url, TENANTFLOW_KEY=key)
    assert done.returncode == 1 and "404" in done.stderr
