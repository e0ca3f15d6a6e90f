"""`tenantflow serve --log-format json`: every line is one JSON object, with a line per lifecycle event."""

from __future__ import annotations

import json
import time
from pathlib import Path

from helpers_server import ServerProcess

DONE = "def run(event, step):\n    return step.do('a', lambda: 1)\n"
TOO_BIG = "def run(event, step):\n    return 'x' * (2 << 20)\n"
FAILS = "def run(event, step):\n    raise ValueError('no')\n"


def _lines(server: ServerProcess, wanted: int, timeout: float = 10) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        text = server.log_path.read_text()
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        events = [line for line in lines if "event" in line]
        if len(events) >= wanted or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_json_logs_say_each_deploy_start_completion_failure_and_limit(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "tf.db", extra=["--log-format", "json"]) as server:
        key = server.create_tenant("acme")["api_key"]
        with server.client(key) as client:
            for name, source in (("done", DONE), ("big", TOO_BIG), ("fails", FAILS)):
                client.deploy(name, source)
                client.start(name, instance_id=f"{name}-1")
                client.wait(name, f"{name}-1")
            for _ in range(3):
                client.health()
        # Every line parses as JSON (a stray text line would fail json.loads above).
        lines = _lines(server, wanted=8)
    events = [(line["event"], line.get("workflow"), line.get("error")) for line in lines if "event" in line]
    for expected in (
        ("workflow deployed", "done", None),
        ("instance created", "done", None),
        ("instance complete", "done", None),
        ("limit hit", "big", "OutputLimitExceeded"),
        ("instance errored", "big", "OutputLimitExceeded"),
        ("instance errored", "fails", "ValueError"),
    ):
        assert expected in events, (expected, events)
    created = next(line for line in lines if line.get("event") == "instance created")
    assert created["instance"] == "done-1" and created["version"] == 1 and created["tenant"]
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert access, "no access log lines"
    assert not any("/healthz" in str(line["message"]) for line in access)
