"""The CLI's bulk controls (several IDs, or a filter with a confirmation naming the count), `start --params-file`,
shell completion, and errors under --json: always one JSON problem object on standard error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers_server import ServerProcess, servers
from tenantflow.runtime.cli import main

WAITS = """
def run(event, step):
    return step.wait_for_event("go", event_type="go", timeout="1 hour")["payload"]
"""

ECHO = """
def run(event, step):
    return step.do("echo", lambda: event.payload)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with servers(tmp_path_factory.mktemp("cli-bulk")) as group:
        yield group.start("cli-bulk")


@pytest.fixture(scope="module")
def key(server: ServerProcess) -> str:
    return str(server.create_tenant("cli-bulk")["api_key"])


def run(server: ServerProcess, key: str, *args: str, stdin: str | None = None) -> Result:
    runner = CliRunner()
    env = {"COLUMNS": "200", "TENANTFLOW_URL": server.url, "TENANTFLOW_KEY": key}
    return runner.invoke(main, list(args), env=env, input=stdin, catch_exceptions=False)


def test_bulk_controls_by_ids_and_by_filter(server: ServerProcess, key: str) -> None:
    with server.client(key) as client:
        client.deploy("order", WAITS)
        ids = [f"o{n}" for n in range(6)]
        client.start_batch("order", [{"id": i} for i in ids])
        for instance_id in ids:
            client.wait("order", instance_id, {"waiting"}, timeout=30)

    # One ID: the single control, as before.
    one = run(server, key, "pause", "order", "o0", "--json")
    assert one.exit_code == 0, one.output
    assert json.loads(one.stdout)["status"] == "paused"
    # Several IDs: a bulk action, no question asked.
    several = run(server, key, "pause", "order", "o1", "o2", "o0", "--json")
    answer = json.loads(several.stdout)
    assert (answer["done"], answer["skipped"]) == (2, 1)
    assert answer["results"][2]["reason"] == "cannot pause an instance that is paused"

    # A filter asks first, naming the count; no is no.
    asked = run(server, key, "terminate", "order", "--status", "waiting", stdin="n\n")
    assert asked.exit_code == 1 and "Terminate 3 waiting instances of 'order'?" in asked.stderr
    with server.client(key) as client:
        assert client.count_instances("order").counts["waiting"] == 3
    done = run(server, key, "terminate", "order", "--status", "waiting", "--since", "1h", stdin="y\n")
    assert done.exit_code == 0, done.output
    assert "terminate: 3 done, 0 skipped (order)" in done.stdout
    # --yes asks nothing; what does not apply is skipped, with why.
    resumed = run(server, key, "resume", "order", "--all", "--yes")
    assert resumed.exit_code == 0, resumed.output
    assert "resume: 3 done, 3 skipped" in resumed.stdout
    assert "skipped 3: cannot resume an instance that is terminated" in resumed.stdout
    restarted = run(server, key, "restart", "order", "--id-prefix", "o", "--status", "terminated", "--yes", "--json")
    assert json.loads(restarted.stdout)["done"] == 3
    nothing = run(server, key, "terminate", "order", "--status", "errored")
    assert nothing.exit_code == 1 and "no errored instances of order match" in nothing.stderr

    # Misuse is a usage error.
    for args in (
        ("terminate", "order"),
        ("terminate", "order", "o1", "--status", "waiting"),
        ("terminate", "order", "--all", "--rollback"),
        ("restart", "order", "o1", "o2", "--from", "a"),
    ):
        misuse = run(server, key, *args)
        assert misuse.exit_code == 2, (args, misuse.output)


def test_start_reads_params_from_a_file_or_stdin(server: ServerProcess, key: str, tmp_path: Path) -> None:
    with server.client(key) as client:
        client.deploy("echo", ECHO)
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"amount": 120, "items": ["a", "b"]}))
    started = run(server, key, "start", "echo", "--params-file", str(params), "--wait", "30", "--json")
    assert started.exit_code == 0, started.output
    assert json.loads(started.stdout)["output"] == {"amount": 120, "items": ["a", "b"]}
    piped = run(server, key, "start", "echo", "--params-file", "-", "--wait", "30", "--json", stdin='{"from": "stdin"}')
    assert json.loads(piped.stdout)["output"] == {"from": "stdin"}
    both = run(server, key, "start", "echo", "--params", "{}", "--params-file", str(params))
    assert both.exit_code == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    broken = run(server, key, "start", "echo", "--params-file", str(bad))
    assert broken.exit_code == 2 and "--params-file is not valid JSON" in broken.stderr
    missing = run(server, key, "start", "echo", "--params-file", str(tmp_path / "none.json"))
    assert missing.exit_code == 2


def test_errors_under_json_are_json_problems(server: ServerProcess, key: str, tmp_path: Path) -> None:
    def problem(result: Result, code: int) -> dict[str, object]:
        assert result.exit_code == code, result.output
        assert result.stdout == ""
        [line] = result.stderr.strip().splitlines()
        found: dict[str, object] = json.loads(line)
        assert {"type", "title", "detail"} <= set(found)
        return found

    api = problem(run(server, key, "status", "echo", "nobody", "--json"), 1)
    assert api["status"] == 404 and "nobody" in str(api["detail"])
    assert problem(run(server, "", "workflows", "--json"), 2)["title"] == "Usage error"
    assert problem(run(server, "tf_wrong", "workflows", "--json"), 1)["status"] == 401
    usage = problem(run(server, key, "start", "--json"), 2)
    assert "Missing argument" in str(usage["detail"])
    assert problem(run(server, key, "start", "echo", "--params", "{x", "--json"), 2)["exit_code"] == 2
    assert problem(run(server, key, "terminate", "echo", "--json"), 2)["type"] == "urn:tenantflow:cli:usage"
    assert problem(run(server, key, "pause", "echo", "--status", "bogus", "--json"), 2)
    unreachable = CliRunner().invoke(
        main, ["workflows", "--json", "--url", "http://127.0.0.1:9", "--key", key], catch_exceptions=False
    )
    assert "cannot reach" in str(problem(unreachable, 1)["detail"])
    slow = problem(run(server, key, "start", "order", "--wait", "0.2", "--json"), 1)
    assert "still" in str(slow["detail"])
    deployed = problem(run(server, key, "deploy", str(tmp_path / "none.py"), "--json"), 2)
    assert "does not exist" in str(deployed["detail"])
    # Without --json, the same errors are text.
    text = run(server, key, "status", "echo", "nobody")
    assert text.exit_code == 1 and text.stderr.startswith("error: 404")


def test_shell_completion_prints_a_script() -> None:
    script = Path(sys.executable).parent / "tenantflow"
    env = {**os.environ, "_TENANTFLOW_COMPLETE": "bash_source"}
    done = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "_tenantflow_completion()" in done.stdout
    assert "complete -o nosort -F _tenantflow_completion tenantflow" in done.stdout
    words = {**os.environ, "_TENANTFLOW_COMPLETE": "bash_complete", "COMP_WORDS": "tenantflow termi", "COMP_CWORD": "1"}
    completed = subprocess.run([str(script)], env=words, capture_output=True, text=True, timeout=60)
    assert "plain,terminate" in completed.stdout.splitlines()
    zsh = subprocess.run(
        [str(script)], env={**os.environ, "_TENANTFLOW_COMPLETE": "zsh_source"}, capture_output=True, text=True
    )
    assert "#compdef tenantflow" in zsh.stdout
