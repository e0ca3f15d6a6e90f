"""Read paths hold on hostile but valid stored data, and the CLI prints tenant strings safely.

One real `tenantflow serve` on 127.0.0.1. Each instance runs a real workflow; the data the host
refuses on the way in (step names with control characters, a lone surrogate, nesting ~990 deep, wake
times more than 365 days away) is then written into the store directly: the read paths must hold for data
that is already stored. Every instance is read through the API (instance, list, journal), the
dashboard (summary and timeline fragments) and the CLI (status, journal, instances).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from helpers_server import ServerProcess, Servers, cli, servers
from tenantflow.runtime.store import codec, open_store

ESC = "\x1b]0;pwned\x07"
MARKUP = "[bold red]x[/]"
HOSTILE_TEXT = f"{ESC} {MARKUP} \x9b2J"
DEEP = "[" * 990 + "]" * 990
FAR_MS = 2**64 - 1

WORKFLOW = f"""
import json

def run(event, step):
    mode = event.payload
    print({HOSTILE_TEXT!r})
    if mode == "deep":
        return step.do("deep", lambda: json.loads("[[1]]"))
    if mode == "surrogate":
        return step.do("named", lambda: {{"v": "text"}})
    step.sleep("far", "300 days")
"""
FAR_S = 9e12

MODES = ("deep", "surrogate", "far", "farthest")


def _store_hostile_values(db: str, tenant: str) -> None:
    """What the host might refuse today, written straight into the store."""
    store = open_store(db)
    deep = codec.encode_text(DEEP)
    surrogate = codec.encode({"v": "\ud800 " + HOSTILE_TEXT})
    key = (tenant, "hostile")
    try:
        with store.transaction() as tx:
            sql = "UPDATE instances SET output = ? WHERE tenant_id = ? AND workflow = ? AND instance_id = ?"
            tx.execute(sql, (deep, *key, "deep"))
            tx.execute(sql, (surrogate, *key, "surrogate"))
            sql = "UPDATE journal SET result = ? WHERE tenant_id = ? AND workflow = ? AND instance_id = ?"
            tx.execute(sql, (deep, *key, "deep"))
            tx.execute(sql, (surrogate, *key, "surrogate"))
            tx.execute(
                "UPDATE journal SET name = ? WHERE tenant_id = ? AND workflow = ? AND instance_id = ?",
                (HOSTILE_TEXT, *key, "surrogate"),
            )
            error = codec.encode({"name": "Boom\ud800", "message": HOSTILE_TEXT + " \udfff", "traceback": ESC})
            tx.execute(
                "UPDATE instances SET error = ? WHERE tenant_id = ? AND workflow = ? AND instance_id = ?",
                (error, *key, "surrogate"),
            )
            for table in ("instances", "journal"):
                for instance_id, wake_at in (("far", FAR_S), ("farthest", FAR_MS / 1000)):
                    tx.execute(
                        f"UPDATE {table} SET wake_at = ? WHERE tenant_id = ? AND workflow = ? AND instance_id = ?",
                        (wake_at, *key, instance_id),
                    )
    finally:
        store.close()


def _statuses(store: Any) -> dict[str, str]:
    with store.transaction() as tx:
        rows = tx.execute("SELECT instance_id, status FROM instances WHERE tenant_id = ?", ("mallory",))
    return {row[0]: row[1] for row in rows}


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with servers(tmp_path_factory.mktemp("readpaths")) as started:
        yield started


@pytest.fixture(scope="module")
def hostile(group: Servers) -> tuple[ServerProcess, str]:
    """(server, key) of a tenant whose four instances hold hostile data."""
    server = group.start("readpaths")
    key = str(server.create_tenant("mallory")["api_key"])
    with server.client(key) as client:
        client.deploy("hostile", WORKFLOW)
        for mode in MODES:
            client.start("hostile", mode, mode)
    want = {"deep": "complete", "surrogate": "complete", "far": "waiting", "farthest": "waiting"}
    store = open_store(server.db)  # (not the API: reading these is what the tests check)
    try:
        deadline = time.monotonic() + 60
        while _statuses(store) != want:
            assert time.monotonic() < deadline, "the hostile instances did not settle"
            time.sleep(0.1)
    finally:
        store.close()
    _store_hostile_values(server.db, "mallory")
    return server, key


@pytest.mark.parametrize("mode", MODES)
def test_the_api_reads_hostile_data(hostile: tuple[ServerProcess, str], mode: str) -> None:
    server, key = hostile
    with server.http(key) as http:
        for path in (f"/v1/workflows/hostile/instances/{mode}", f"/v1/workflows/hostile/instances/{mode}/journal"):
            answer = http.get(path)
            assert answer.status_code == 200, (path, answer.text[:500])
            assert answer.headers["content-type"] == "application/json"
        listed = http.get("/v1/workflows/hostile/instances")
        assert listed.status_code == 200, listed.text[:500]


def test_the_api_keeps_surrogates_and_far_times_as_json(hostile: tuple[ServerProcess, str]) -> None:
    server, key = hostile
    with server.http(key) as http:
        surrogate = http.get("/v1/workflows/hostile/instances/surrogate")
        assert surrogate.json()["output"] == {"v": "\ud800 " + HOSTILE_TEXT}
        farthest = http.get("/v1/workflows/hostile/instances/farthest").json()
        assert farthest["wake_at"] == FAR_MS / 1000


@pytest.mark.parametrize("mode", MODES)
def test_the_dashboard_reads_hostile_data(hostile: tuple[ServerProcess, str], mode: str) -> None:
    server, key = hostile
    with server.http(key) as http:
        for part in ("summary", "timeline"):
            answer = http.get(f"/ui/fragments/workflows/hostile/instances/{mode}/{part}")
            assert answer.status_code == 200, (part, answer.text[:500])
            assert "\x1b" not in answer.text
        listed = http.get("/ui/fragments/workflows/hostile/instances")
        assert listed.status_code == 200, listed.text[:500]


def _cli(server: ServerProcess, key: str, *args: str) -> tuple[str, Any]:
    return " ".join(args), cli(*args, check=False, TENANTFLOW_URL=server.url, TENANTFLOW_KEY=key)


def _assert_safe(command: str, out: str) -> None:
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out, (command, out)


def test_the_cli_prints_hostile_data_safely(hostile: tuple[ServerProcess, str]) -> None:
    server, key = hostile
    commands = [("instances", "hostile")]
    commands += [(verb, "hostile", mode) for mode in MODES for verb in ("status", "journal")]
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda args: _cli(server, key, *args), commands))
    for command, result in done:
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, (command, result.stderr)
        _assert_safe(command, result.stdout + result.stderr)
    outputs = {command: result.stdout for command, result in done}
    journal = outputs["journal hostile surrogate"]
    assert "\\x1b]0;pwned\\x07" in journal and MARKUP in journal and "\\x9b2J" in journal
    assert "\\ud800" in outputs["status hostile surrogate"]
    assert MARKUP in outputs["status hostile surrogate"]


def test_cli_errors_and_json_output_are_safe(hostile: tuple[ServerProcess, str]) -> None:
    server, key = hostile
    command, missing = _cli(server, key, "status", "hostile", "nope")
    assert missing.returncode == 1 and "404" in missing.stderr
    command, as_json = _cli(server, key, "status", "hostile", "surrogate", "--json")
    assert as_json.returncode == 0, as_json.stderr
    _assert_safe(command, as_json.stdout)
    assert json.loads(as_json.stdout)["output"] == {"v": "\ud800 " + HOSTILE_TEXT}


def test_cli_run_prints_hostile_data_safely(tmp_path: Path) -> None:
    source = tmp_path / "hostile.py"
    source.write_text(
        "def run(event, step):\n"
        f"    print({HOSTILE_TEXT!r})\n"
        f"    step.do('plain name', lambda: {HOSTILE_TEXT!r})\n"
        f"    return {{{HOSTILE_TEXT!r}: {HOSTILE_TEXT!r}}}\n"
    )
    result = cli("run", str(source), check=False)
    assert result.returncode == 0, (result.stdout, result.stderr)
    _assert_safe("run", result.stdout + result.stderr)
    assert "\\x1b]0;pwned\\x07" in result.stdout and MARKUP in result.stdout


def test_far_times_render_in_the_browser_formats() -> None:
    from tenantflow.runtime.http.dashboard import fmt_relative, fmt_time, iso_time

    for epoch in (9e12, FAR_MS / 1000, -1e15):
        assert fmt_time(epoch) and isinstance(iso_time(epoch), str) and fmt_relative(epoch, 0.0)


def test_hostile_strings_are_escaped_for_terminals() -> None:
    from tenantflow.runtime.cli import terminal_safe

    assert terminal_safe(HOSTILE_TEXT) == "\\x1b]0;pwned\\x07 [bold red]x[/] \\x9b2J"
    assert terminal_safe("a\tb\nc\ud800\u202e") == "a\tb\nc\\ud800\\u202e"
    assert terminal_safe("naïve ✓ 日本") == "naïve ✓ 日本"
