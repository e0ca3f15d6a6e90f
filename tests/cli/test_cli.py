"""The `tenantflow` command line: operator commands on --db, tenant commands over real HTTP, local runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from helpers_server import EXAMPLES, ROOT, ServerProcess, Servers, cli, servers
from tenantflow.runtime.cli import main
from tenantflow.runtime.records import InstanceKey, Quotas
from tenantflow.runtime.service import Service, hash_key
from tenantflow.runtime.store import open_store


def invoke(*args: str, **env: str) -> Result:
    """The CLI in process (fast); COLUMNS wide so rich tables do not fold."""
    runner = CliRunner()
    return runner.invoke(main, list(args), env={"COLUMNS": "200", "TENANTFLOW_KEY": "", **env}, catch_exceptions=False)


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with servers(tmp_path_factory.mktemp("cli")) as started:
        yield started


@pytest.fixture(scope="module")
def server(group: Servers) -> ServerProcess:
    return group.start("cli")


@pytest.fixture(scope="module")
def key(server: ServerProcess) -> str:
    return str(server.create_tenant("cli-tenant")["api_key"])


def remote(server: ServerProcess, key: str, *args: str) -> Result:
    return invoke(*args, TENANTFLOW_URL=server.url, TENANTFLOW_KEY=key)


# -- operator commands ------------------------------------------------------------------------


def test_tenants_create_prints_the_key_and_stores_only_its_hash(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'ops.db'}"
    done = cli(
        "tenants",
        "create",
        "acme",
        "--db",
        db,
        "--max-concurrent",
        "2",
        "--max-instances",
        "30",
        "--memory-mb",
        "128",
        "--fuel",
        "1000000000",
        "--max-stored-mb",
        "64",
        "--max-step-cpu-ms",
        "60000",
        "--max-workflows",
        "5",
        "--egress",
        "api.example.com",
        "--egress",
        "a.example.org,b.example.org",
    )
    created = json.loads(done.stdout)
    assert created["name"] == "acme" and created["operator"] is False
    api_key = created["api_key"]
    assert api_key.startswith("tf_") and len(api_key) > 30
    assert created["quotas"] == {
        "max_concurrent": 2,
        "max_instances_per_minute": 30,
        "max_steps": 10_000,
        "memory_mb": 128,
        "fuel": 1_000_000_000,
        "max_source_bytes": 1 << 20,
        "max_payload_bytes": 1 << 20,
        "max_stored_mb": 64,
        "max_step_cpu_ms": 60_000,
        "max_workflows": 5,
        "egress": ["api.example.com", "a.example.org", "b.example.org"],
    }

    store = open_store(db)
    try:
        tenant = store.tenant_by_key(hash_key(api_key))
        assert tenant is not None and tenant.quotas.max_concurrent == 2
        assert tenant.quotas.egress == ("api.example.com", "a.example.org", "b.example.org")
    finally:
        store.close()
    for path in tmp_path.glob("ops.db*"):
        assert api_key.encode() not in path.read_bytes()

    listed = json.loads(cli("tenants", "list", "--db", db, "--json").stdout)
    assert [t["name"] for t in listed] == ["acme"]
    assert api_key not in json.dumps(listed) and hash_key(api_key) not in json.dumps(listed)
    table = cli("tenants", "list", "--db", db).stdout
    assert "acme" in table and "128 MiB" in table

    again = cli("tenants", "create", "acme", "--db", db, check=False)
    assert again.returncode == 1 and "already exists" in again.stderr
    bad = cli("tenants", "create", "-bad name", "--db", db, check=False)
    assert bad.returncode != 0
    zero = cli("tenants", "create", "zero", "--db", db, "--max-concurrent", "0", check=False)
    assert zero.returncode == 2 and "max-concurrent" in zero.stderr
    ops = json.loads(cli("tenants", "create", "ops", "--db", db, "--operator").stdout)
    assert ops["operator"] is True
    assert [t["operator"] for t in json.loads(cli("tenants", "list", "--db", db, "--json").stdout)] == [False, True]


def test_db_comes_from_tenantflow_db_or_the_default_file(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'env.db'}"
    cli("tenants", "create", "from-env", db=db)
    assert json.loads(cli("tenants", "list", "--json", db=db).stdout)[0]["name"] == "from-env"
    # --db wins over the environment.
    other = f"sqlite:///{tmp_path / 'other.db'}"
    cli("tenants", "create", "explicit", "--db", other, db=db)
    assert [t["name"] for t in json.loads(cli("tenants", "list", "--json", db=other).stdout)] == ["explicit"]

    # No --db and no TENANTFLOW_DB: ./tenantflow.db in the working directory.
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "tenantflow.runtime.cli", "tenants", "create", "local-default"],
        cwd=work,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_")},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (work / "tenantflow.db").exists()

    unsupported = cli("tenants", "list", "--db", "mysql://nope", check=False)
    assert unsupported.returncode == 1 and "unsupported database URL" in unsupported.stderr


def test_serve_refuses_a_taken_port_and_a_bad_db(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = cli("serve", "--port", port, "--db", f"sqlite:///{tmp_path / 'x.db'}", check=False, timeout=30)
    assert done.returncode == 1 and "cannot listen" in done.stderr
    bad = cli("serve", "--port", "0", "--db", "nosuch://db", check=False, timeout=30)
    assert bad.returncode == 1 and "unsupported database URL" in bad.stderr


@pytest.mark.parametrize("command", [("tenants", "list"), ("serve", "--port", "0"), ("worker",)])
def test_an_unreachable_database_is_one_line_and_exit_1_within_seconds(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    for url, reason in (
        (f"postgresql://postgres@127.0.0.1:{port}/x", "cannot reach the PostgreSQL database 'x'"),
        (f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}", "cannot open the SQLite database"),
    ):
        started = time.monotonic()
        done = cli(*command, "--db", url, check=False, timeout=30)
        assert time.monotonic() - started < 10
        assert done.returncode == 1, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and reason in lines[0], done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [("serve", "--port", "0"), ("worker",)])
def test_an_isolate_pool_size_out_of_range_is_one_line_and_exit_1(tmp_path: Path, command: tuple[str, ...]) -> None:
    db = f"sqlite:///{tmp_path / 'pool.db'}"
    done = cli(*command, "--db", db, check=False, timeout=30, TENANTFLOW_ISOLATE_POOL="40")
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0] == "error: TENANTFLOW_ISOLATE_POOL is 0-32, got 40"
    too_many = cli(*command, "--db", db, "--workers", "117", check=False, timeout=30)
    assert too_many.returncode == 1 and "workers is between 1 and 116" in too_many.stderr, too_many.stderr
    assert "Traceback" not in done.stderr + too_many.stderr


def test_worker_runs_instances_and_stops_on_sigterm(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'workers.db'}"
    service = Service.open(db)  # not started: this process only writes the work
    try:
        tenant, _ = service.create_tenant("batch", Quotas(max_concurrent=4))
        service.deploy(tenant, "approval", (EXAMPLES / "approval.py").read_text())
        service.create_instances(tenant, "approval", [{"id": f"w{i}", "params": {"amount": i}} for i in range(6)])
        for i in range(6):
            service.send_event(tenant, "approval", f"w{i}", "approved", {"by": "worker"})
    finally:
        service.close()

    proc = subprocess.Popen(
        [sys.executable, "-m", "tenantflow.runtime.cli", "worker", "--db", db, "--workers", "2"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        store = open_store(db)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if dict(((s, c) for _, s, c in store.status_counts())).get("complete") == 6:
                    break
                time.sleep(0.05)
            counts = {s: c for _, s, c in store.status_counts()}
            outputs = [store.instance(InstanceKey("batch", "approval", f"w{i}")).output for i in range(6)]
            assert outputs == [{"approved": True, "by": "worker", "paid": i, "to": "someone"} for i in range(6)]
        finally:
            store.close()
        assert counts == {"complete": 6}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "stopped" in out


# -- tenant commands over HTTP ----------------------------------------------------------------


def test_the_walkthrough(server: ServerProcess, key: str) -> None:
    approval = str(EXAMPLES / "approval.py")
    deployed = remote(server, key, "deploy", approval)
    assert deployed.exit_code == 0, deployed.output
    assert "approval: deployed version 1" in deployed.stdout
    again = remote(server, key, "deploy", approval, "--json")
    assert json.loads(again.stdout)["created"] is False and json.loads(again.stdout)["version"] == 1

    listed = remote(server, key, "workflows", "--json")
    assert [w["name"] for w in json.loads(listed.stdout)] == ["approval"]

    started = remote(server, key, "start", "approval", "--id", "exp-1", "--params", '{"amount": 120}', "--json")
    assert started.exit_code == 0, started.output
    assert json.loads(started.stdout)["id"] == "exp-1"

    deadline = time.monotonic() + 10
    while json.loads(remote(server, key, "status", "approval", "exp-1", "--json").stdout)["status"] != "waiting":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    shown = remote(server, key, "status", "approval", "exp-1")
    assert "waiting" in shown.stdout and "exp-1" in shown.stdout

    sent = remote(server, key, "events", "send", "approval", "exp-1", "approved", "--payload", '{"by": "ana"}')
    assert sent.exit_code == 0 and "delivered" in sent.stdout

    deadline = time.monotonic() + 10
    while (status := json.loads(remote(server, key, "status", "approval", "exp-1", "--json").stdout))[
        "status"
    ] != "complete":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status["output"] == {"approved": True, "by": "ana", "paid": 120, "to": "someone"}

    journal = remote(server, key, "journal", "approval", "exp-1")
    assert journal.exit_code == 0
    for word in ("file request", "notify approver", "approval", "pay out", "wait", "approved"):
        assert word in journal.stdout
    as_json = json.loads(remote(server, key, "journal", "approval", "exp-1", "--json").stdout)
    assert [s["name"] for s in as_json["steps"]] == ["file request", "notify approver", "approval", "pay out"]
    first = remote(server, key, "journal", "approval", "exp-1", "--limit", "2")
    assert "file request" in first.stdout and "pay out" not in first.stdout
    assert "--after 1" in first.stdout
    rest = json.loads(remote(server, key, "journal", "approval", "exp-1", "--after", "1", "--json").stdout)
    assert [s["name"] for s in rest["steps"]] == ["approval", "pay out"] and rest["next_after"] is None

    instances = json.loads(remote(server, key, "instances", "approval", "--json").stdout)
    assert [i["id"] for i in instances["instances"]] == ["exp-1"]


def test_controls_and_their_errors(server: ServerProcess, key: str) -> None:
    remote(server, key, "deploy", str(EXAMPLES / "approval.py"))
    remote(server, key, "start", "approval", "--id", "ctl")
    deadline = time.monotonic() + 10
    while json.loads(remote(server, key, "status", "approval", "ctl", "--json").stdout)["status"] != "waiting":
        assert time.monotonic() < deadline
        time.sleep(0.05)

    resumed = remote(server, key, "resume", "approval", "ctl")
    assert resumed.exit_code == 1 and "409" in resumed.stderr and "waiting" in resumed.stderr
    paused = remote(server, key, "pause", "approval", "ctl", "--json")
    assert paused.exit_code == 0 and json.loads(paused.stdout)["status"] == "paused"
    assert json.loads(remote(server, key, "resume", "approval", "ctl", "--json").stdout)["status"] != "paused"
    terminated = remote(server, key, "terminate", "approval", "ctl")
    assert terminated.exit_code == 0 and "terminated" in terminated.stdout
    late = remote(server, key, "events", "send", "approval", "ctl", "approved")
    assert late.exit_code == 1 and "409" in late.stderr
    restarted = remote(server, key, "restart", "approval", "ctl", "--json")
    assert restarted.exit_code == 0 and json.loads(restarted.stdout)["status"] == "queued"


def test_start_can_wait_for_the_end(server: ServerProcess, key: str) -> None:
    remote(server, key, "deploy", str(EXAMPLES / "order.py"))
    params = '{"order": "W-1", "declines": 1, "courier_after": 20}'
    done = remote(server, key, "start", "order", "--params", params, "--wait", "20", "--json")
    assert done.exit_code == 0, done.output
    finished = json.loads(done.stdout)
    assert finished["status"] == "complete" and finished["output"]["charge"]["gateway_calls"] == 2
    # Not finished in time: exit 1 and say so (the approval waits an hour for its event).
    slow = remote(server, key, "start", "approval", "--wait", "0.2")
    assert slow.exit_code == 1 and "still" in slow.stderr


def test_waits_are_long_polls_not_polling_loops(server: ServerProcess, key: str) -> None:
    """`start --wait 3` on an instance that waits an hour: a few held requests, not one every 50 ms;
    `status --wait` answers once the instance has settled."""
    remote(server, key, "deploy", str(EXAMPLES / "approval.py"))
    route = 'route="/v1/workflows/{name}/instances/{id}"'
    operator = server.create_tenant("metrics-reader", "--operator")["api_key"]

    def reads() -> float:
        with server.http(operator) as http:
            text = http.get("/metrics").text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("tenantflow_http_requests_total") and route in line and 'method="GET"' in line
        )

    before = reads()
    started = time.monotonic()
    slow = remote(server, key, "start", "approval", "--id", "long-poll", "--wait", "3")
    assert slow.exit_code == 1 and "still waiting after 3 s" in slow.stderr
    assert time.monotonic() - started >= 2.9
    assert reads() - before <= 3  # polling every 50 ms would be ~60

    settled = remote(server, key, "status", "approval", "long-poll", "--wait", "10", "--json")
    assert json.loads(settled.stdout)["status"] == "waiting"
    remote(server, key, "events", "send", "approval", "long-poll", "approved", "--payload", '{"by": "ana"}')
    done = remote(server, key, "status", "approval", "long-poll", "--wait", "10", "--seen", "waiting", "--json")
    assert json.loads(done.stdout)["status"] == "complete"


def test_tenant_command_errors(server: ServerProcess, key: str, tmp_path: Path) -> None:
    no_key = invoke("workflows", "--url", server.url)
    assert no_key.exit_code == 2 and "API key" in no_key.stderr
    wrong = invoke("workflows", "--url", server.url, "--key", "tf_wrong")
    assert wrong.exit_code == 1 and "401" in wrong.stderr
    missing = remote(server, key, "status", "approval", "nobody")
    assert missing.exit_code == 1 and "404" in missing.stderr and "nobody" in missing.stderr
    unreachable = invoke("workflows", "--url", "http://127.0.0.1:9", "--key", key)
    assert unreachable.exit_code == 1 and "cannot reach" in unreachable.stderr
    bad_json = remote(server, key, "start", "approval", "--params", "{nope")
    assert bad_json.exit_code == 2 and "--params" in bad_json.stderr

    broken = tmp_path / "broken.py"
    broken.write_text("def run(event, step):\n    return (\n")
    deployed = remote(server, key, "deploy", str(broken))
    assert deployed.exit_code == 1 and "422" in deployed.stderr and "line 2" in deployed.stderr
    problem = remote(server, key, "deploy", str(broken), "--json")
    assert problem.exit_code == 1 and json.loads(problem.stderr.splitlines()[0])["line"] == 2


WAITS = """
def run(event, step):
    return step.wait_for_event("go", event_type="go", timeout="1 hour")["payload"]
"""


def test_instances_across_workflows_with_times_and_latest(server: ServerProcess) -> None:
    lists_key = str(server.create_tenant("cli-lists")["api_key"])

    def run(*args: str) -> Result:
        return remote(server, lists_key, *args)

    def listed(*args: str) -> list[tuple[str, str]]:
        done = run("instances", *args, "--json")
        assert done.exit_code == 0, done.output
        return [(i["workflow"], i["id"]) for i in json.loads(done.stdout)["instances"]]

    assert listed() == []
    with server.client(lists_key) as client:
        for workflow in ("one", "two", "empty"):
            client.deploy(workflow, WAITS)
        client.start("one", "a1")
        client.start("one", "a2")
        time.sleep(0.05)
        between = time.time()
        time.sleep(0.05)
        client.start("two", "b1")
        for workflow, instance_id in (("one", "a1"), ("one", "a2"), ("two", "b1")):
            client.wait(workflow, instance_id, {"waiting"}, timeout=30)

    # Across workflows, newest first; with a workflow, as before.
    assert listed() == [("two", "b1"), ("one", "a2"), ("one", "a1")]
    assert listed("one") == [("one", "a2"), ("one", "a1")]
    table = run("instances")
    assert table.exit_code == 0 and "every workflow" in table.stdout and "workflow" in table.stdout
    assert table.stdout.index("b1") < table.stdout.index("a2") < table.stdout.index("a1")
    assert listed("--status", "complete") == []

    # --since and --until: a duration back from now, epoch seconds, or ISO 8601.
    assert len(listed("--since", "1h")) == 3 and listed("--until", "1h") == []
    assert listed("--since", str(between)) == [("two", "b1")]
    iso = datetime.fromtimestamp(between, UTC).isoformat().replace("+00:00", "Z")
    assert listed("--until", iso) == [("one", "a2"), ("one", "a1")]
    assert listed("one", "--since", "2d", "--until", iso) == [("one", "a2"), ("one", "a1")]
    bad = run("instances", "--since", "soon")
    assert bad.exit_code == 2 and "--since" in bad.stderr and "duration" in bad.stderr

    # Pages: the cursor to pass back.
    first = run("instances", "--limit", "2")
    cursor = first.stdout.split("more: --after ")[1].split()[0]
    assert listed("--limit", "2", "--after", cursor) == [("one", "a1")]

    # `latest`: the workflow's newest instance, wherever an instance id goes.
    assert json.loads(run("status", "one", "latest", "--json").stdout)["id"] == "a2"
    assert json.loads(run("journal", "two", "latest", "--json").stdout)["id"] == "b1"
    assert json.loads(run("pause", "one", "latest", "--json").stdout)["status"] == "paused"
    assert json.loads(run("resume", "one", "latest", "--json").stdout)["id"] == "a2"
    sent = run("events", "send", "two", "latest", "go", "--payload", '"went"')
    assert sent.exit_code == 0 and "two/b1" in sent.stdout
    with server.client(lists_key) as client:
        assert client.wait("two", "b1", timeout=30).output == "went"
    watched = run("watch", "two", "latest", "--json")
    assert watched.exit_code == 0 and '"b1"' in watched.stdout
    assert json.loads(run("terminate", "one", "latest", "--json").stdout)["status"] == "terminated"
    deleted = run("delete", "one", "latest", "--yes")
    assert deleted.exit_code == 0 and "deleted instance a2 of one" in deleted.stdout
    assert json.loads(run("status", "one", "latest", "--json").stdout)["id"] == "a1"
    assert json.loads(run("restart", "two", "latest", "--json").stdout)["id"] == "b1"
    none = run("status", "empty", "latest")
    assert none.exit_code == 1 and "no instances" in none.stderr
    unknown = run("terminate", "nope", "latest")
    assert unknown.exit_code == 1 and "404" in unknown.stderr


def test_the_console_script_and_python_m(server: ServerProcess, key: str) -> None:
    script = Path(sys.executable).parent / "tenantflow"
    assert script.exists()
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for command in ("serve", "worker", "tenants", "deploy", "start", "status", "events", "journal", "run"):
        assert command in done.stdout
    listed = cli("workflows", "--json", TENANTFLOW_URL=server.url, TENANTFLOW_KEY=key)
    assert isinstance(json.loads(listed.stdout), list)


# -- tenantflow run -------------------------------------------------------------------------------


def run_json(*args: str) -> dict[str, Any]:
    result = invoke("run", *args, "--json")
    assert result.exit_code in (0, 1), result.output
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_run_order_shows_retries_in_the_timeline() -> None:
    result = invoke("run", str(EXAMPLES / "order.py"), "--params", '{"order": "A-7", "declines": 2}')
    assert result.exit_code == 0, result.output
    for word in ("price order", "reserve stock", "charge card", "wait for the courier", "hand over", "complete"):
        assert word in result.stdout
    assert '"status": "shipped"' in result.stdout

    parsed = run_json(str(EXAMPLES / "order.py"), "--params", '{"order": "A-7", "declines": 3}')
    assert parsed["status"] == "complete"
    charge = next(s for s in parsed["steps"] if s["name"] == "charge card")
    assert charge["attempts"] == 4 and [a["ok"] for a in charge["attempt_log"]] == [False, False, False, True]
    stolen = run_json(str(EXAMPLES / "order.py"), "--params", '{"card": "stolen"}')
    assert stolen["output"]["status"] == "cancelled"


def test_run_approval_with_and_without_the_event() -> None:
    approved = run_json(str(EXAMPLES / "approval.py"), "--params", '{"amount": 9}', "--event", 'approved={"by": "ana"}')
    assert approved["output"] == {"approved": True, "by": "ana", "paid": 9, "to": "someone"}
    timed_out = run_json(str(EXAMPLES / "approval.py"), "--params", '{"amount": 9}')
    assert timed_out["output"] == {"approved": False, "amount": 9, "reason": "timed out"}
    table = invoke("run", str(EXAMPLES / "approval.py"))
    assert "timed_out" in table.stdout and "WaitTimeoutError" in table.stdout
    # An event with no payload: TYPE alone, or TYPE=.
    for bare_event in ("approved", "approved="):
        bare = run_json(str(EXAMPLES / "approval.py"), "--event", bare_event)
        assert bare["output"]["by"] == "unknown"


def test_run_agent_loop() -> None:
    result = invoke("run", str(EXAMPLES / "agent_loop.py"), "--params", '{"secret": 737}')
    assert result.exit_code == 0, result.output
    assert "think" in result.stdout and "rate limit" in result.stdout
    assert "turn 10" in result.stdout  # what the workflow printed
    parsed = run_json(str(EXAMPLES / "agent_loop.py"), "--params", '{"secret": 5, "high": 100}')
    assert parsed["output"]["answer"] == 5 and parsed["output"]["found"] is True
    assert len(parsed["steps"]) == 2 * parsed["output"]["turns"] + 1


def test_run_reports_failures(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def run(event, step):\n    x = (\n")
    result = invoke("run", str(broken))
    assert result.exit_code == 1 and "line 2" in result.stderr

    crash = tmp_path / "crash.py"
    crash.write_text("def run(event, step):\n    step.do('a', lambda: 1)\n    raise KeyError('gone')\n")
    result = invoke("run", str(crash))
    assert result.exit_code == 1 and "errored" in result.stdout and "KeyError" in result.stdout

    stuck = tmp_path / "stuck.py"
    stuck.write_text("def run(event, step):\n    return step.wait_for_event('w', event_type='never', timeout=None)\n")
    result = invoke("run", str(stuck))
    assert result.exit_code == 1 and "stuck" in result.stdout

    assert invoke("run", str(crash), "--event", "no-equals-sign-and-no-json={").exit_code == 2
    assert invoke("run", str(crash), "--params", "{bad").exit_code == 2
    assert invoke("run", str(tmp_path / "missing.py")).exit_code == 2


def test_loading_the_cli_leaves_the_sandbox_unloaded() -> None:
    """A remote command (`instances`, `send`, ...) never runs a guest: the CLI's import does not load wasmtime,
    the sandbox or the engine's heavy parts (they cost ~0.15 s a command here); `serve`, `worker` and `run` load
    them when they run."""
    probe = (
        "import sys, tenantflow.runtime.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'wasmtime' or m.startswith('tenantflow.host')))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout
