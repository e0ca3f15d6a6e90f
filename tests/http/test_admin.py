"""The admin API over real HTTP: operator keys provision, change, rotate and delete tenants; a tenant key
cannot; a deleted tenant's key is refused and its data is gone. Also the CLI's tenant commands over HTTP,
and a platform script that uses only `tenantflow.client`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers_server import EXAMPLES, ROOT, ServerProcess, Servers, cli, servers
from tenantflow.client import Client, Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from tenantflow.runtime.http.operations import OPERATIONS
from tenantflow.runtime.store import open_store
from tenantflow.runtime.store.schema import TENANT_TABLES

WAITER = """
def run(event, step):
    step.do("before", lambda: 1)
    got = step.wait_for_event("go", event_type="go", timeout="1 hour")
    return got["payload"]
"""
ADMIN = [op for op in OPERATIONS if op.path.startswith("/v1/admin")]


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with servers(tmp_path_factory.mktemp("admin")) as started:
        yield started


@pytest.fixture(scope="module")
def server(group: Servers) -> ServerProcess:
    return group.start("admin")


@pytest.fixture(scope="module")
def operator_key(server: ServerProcess) -> str:
    done = cli("admin", "create-key", "ops", "--db", server.db, "--json")
    key: str = json.loads(done.stdout)["api_key"]
    return key


def _rows(db: str, tenant: str) -> dict[str, int]:
    store = open_store(db)
    try:
        with store.transaction() as tx:
            return {
                t: int(tx.scalar(f"SELECT COUNT(*) AS n FROM {t} WHERE tenant_id = ?", (tenant,)))
                for t in TENANT_TABLES
            }
    finally:
        store.close()


def _path(template: str) -> str:
    return template.replace("{tenant}", "acme")


def test_a_tenant_key_cannot_call_the_admin_api(server: ServerProcess, operator_key: str) -> None:
    with Client(server.url, operator_key) as admin:
        tenant_key = admin.create_tenant("plain").api_key
    assert ADMIN, "no admin operations"
    for op in ADMIN:
        body: Any = {"name": "x"} if op.method == "POST" and op.body is not None else None
        if op.method == "PATCH":
            body = {"quotas": {"max_concurrent": 1}}
        with server.http(tenant_key) as http:
            answer = http.request(op.method, _path(op.path), json=body)
        assert answer.status_code == 403, (op.operation_id, answer.text)
        assert answer.json()["type"] == "urn:tenantflow:problem:forbidden"
        with server.http() as anonymous:
            assert anonymous.request(op.method, _path(op.path), json=body).status_code == 401
    with Client(server.url, tenant_key) as tenant, pytest.raises(Forbidden):
        tenant.tenants()


def test_operator_provisions_changes_rotates_and_deletes(server: ServerProcess, operator_key: str) -> None:
    with Client(server.url, operator_key) as admin:
        acme = admin.create_tenant("acme", {"max_concurrent": 2, "egress": ["api.example.com:443"]})
        assert acme.quotas.max_concurrent == 2 and acme.quotas.egress == ["api.example.com:443"]
        assert acme.quotas.memory_mb == 256  # the default for what was not named
        with pytest.raises(Conflict):
            admin.create_tenant("acme")
        for bad in ({"memory_mb": 1}, {"fuel": -1}, {"egress": ["not a host"]}, {"nonsense": 1}, {"max_steps": True}):
            with pytest.raises(InvalidInput):
                admin.update_tenant("acme", bad)
        names = [t.name for t in admin.tenants()]
        assert "acme" in names and "ops" in names
        changed = admin.update_tenant("acme", {"memory_mb": 64, "max_instances_per_minute": 100})
        assert changed.quotas.memory_mb == 64 and changed.quotas.max_concurrent == 2  # the rest kept
        assert admin.tenant("acme").quotas.max_instances_per_minute == 100

        with Client(server.url, acme.api_key) as tenant:
            tenant.deploy("waiter", WAITER)
            handles = [tenant.workflow("waiter").start(id=f"w{i}") for i in range(3)]
            for handle in handles:
                assert handle.wait({"waiting"}, timeout=30).status == "waiting"
            handles[0].send_event("go", 1)
            assert handles[0].result(timeout=30) == 1

        rotated = admin.rotate_key("acme")
        assert rotated.api_key != acme.api_key
        with Client(server.url, acme.api_key) as old, pytest.raises(Unauthorized):
            old.workflows()
        with Client(server.url, rotated.api_key) as new:
            assert [w.name for w in new.workflows()] == ["waiter"]

        before = _rows(server.db, "acme")
        assert before["instances"] == 3 and before["journal"] >= 5 and before["tenants"] == 1
        deleted = admin.delete_tenant("acme")
        assert (deleted.name, deleted.workflows, deleted.instances) == ("acme", 1, 3)
        assert _rows(server.db, "acme") == dict.fromkeys(TENANT_TABLES, 0)
        with Client(server.url, rotated.api_key) as gone, pytest.raises(Unauthorized):
            gone.workflows()
        with pytest.raises(NotFound):
            admin.tenant("acme")
        with pytest.raises(NotFound):
            admin.delete_tenant("acme")
        with pytest.raises(Conflict, match="its own tenant"):
            admin.delete_tenant("ops")

        # The name is free again, and nothing of the old tenant shows through.
        again = admin.create_tenant("acme")
        with Client(server.url, again.api_key) as fresh:
            assert fresh.workflows() == []
    assert "Traceback" not in server.log()


def test_admin_operations_are_in_the_openapi_document(server: ServerProcess) -> None:
    with server.http() as http:
        document = http.get("/openapi.json").json()
    admin = {
        (method, path): op
        for path, item in document["paths"].items()
        for method, op in item.items()
        if path.startswith("/v1/admin")
    }
    assert {op["operationId"] for op in admin.values()} == {
        "listTenants",
        "createTenant",
        "getTenant",
        "updateTenant",
        "rotateTenantKey",
        "deleteTenant",
        "getAdminUsage",
    }
    assert all(op["tags"] == ["admin"] and "403" in op["responses"] for op in admin.values())
    quotas = document["components"]["schemas"]["QuotaChanges"]["properties"]
    assert quotas["memory_mb"]["anyOf"][0]["minimum"] == 16


def test_cli_tenant_commands_over_http(server: ServerProcess, operator_key: str) -> None:
    over_http = {"TENANTFLOW_URL": server.url, "TENANTFLOW_OPERATOR_KEY": operator_key}
    nowhere = "sqlite:////nonexistent/dir/never.db"  # proves the commands did not use the database
    created = json.loads(
        cli("tenants", "create", "beta", "--max-concurrent", "3", "--json", db=nowhere, **over_http).stdout
    )
    assert created["name"] == "beta" and created["quotas"]["max_concurrent"] == 3 and created["api_key"]
    listed = json.loads(cli("tenants", "list", "--json", db=nowhere, **over_http).stdout)
    assert "beta" in [t["name"] for t in listed]
    updated = json.loads(
        cli("tenants", "update", "beta", "--memory-mb", "128", "--json", db=nowhere, **over_http).stdout
    )
    assert updated["quotas"]["memory_mb"] == 128
    rotated = json.loads(cli("tenants", "rotate-key", "beta", "--json", db=nowhere, **over_http).stdout)
    assert rotated["api_key"] != created["api_key"]
    refused = cli("tenants", "list", "--url", server.url, "--key", rotated["api_key"], db=nowhere, check=False)
    assert refused.returncode == 1 and "403" in refused.stderr and "Traceback" not in refused.stderr
    deleted = cli("tenants", "delete", "beta", "--yes", db=nowhere, **over_http)
    assert "deleted beta" in deleted.stdout
    missing = cli("tenants", "show", "beta", db=nowhere, check=False, **over_http)
    assert missing.returncode == 1 and "404" in missing.stderr


def test_a_platform_script_with_only_the_client(server: ServerProcess, operator_key: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_")}
    env["TENANTFLOW_OPERATOR_KEY"] = operator_key
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "platform_backend.py"), "--url", server.url, "--tenant", "customer-1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is waiting" in done.stdout
    assert "result: {'approved': True, 'by': 'ana', 'paid': 120, 'to': 'li'}" in done.stdout
    assert "deleted customer-1: 1 workflow(s), 1 instance(s)" in done.stdout
    assert _rows(server.db, "customer-1") == dict.fromkeys(TENANT_TABLES, 0)


def test_long_poll_answers_when_the_status_changes(server: ServerProcess, operator_key: str) -> None:
    with Client(server.url, operator_key) as admin:
        key = admin.create_tenant("poller").api_key
    with Client(server.url, key) as client, server.http(key) as http:
        client.deploy("waiter", WAITER)
        handle = client.workflow("waiter").start(id="p1")
        handle.wait({"waiting"}, timeout=30)
        path = "/v1/workflows/waiter/instances/p1"

        # Settled already: at once (without `status`, only queued and running are held).
        answer = http.get(path, params={"wait": 30})
        assert answer.json()["status"] == "waiting" and answer.elapsed.total_seconds() < 5
        # Still in the status last seen: held for the whole wait.
        answer = http.get(path, params={"wait": 1, "status": "waiting"})
        assert answer.json()["status"] == "waiting" and answer.elapsed.total_seconds() >= 0.95
        # The status last seen differs: at once.
        answer = http.get(path, params={"wait": 30, "status": "queued"})
        assert answer.json()["status"] == "waiting" and answer.elapsed.total_seconds() < 5
        # An event lets it finish: answered as soon as it has.
        timer = threading.Timer(0.5, lambda: client.send_event("waiter", "p1", "go", "went"))
        timer.start()
        answer = http.get(path, params={"wait": 30, "status": "waiting"})
        timer.join()
        assert answer.json()["status"] == "complete" and answer.json()["output"] == "went"
        assert answer.elapsed.total_seconds() < 10
        # Finished: at once, whatever the wait.
        answer = http.get(path, params={"wait": 30})
        assert answer.json()["status"] == "complete" and answer.elapsed.total_seconds() < 5
        for bad in ("61", "-1", "nan", "inf", "soon"):
            assert http.get(path, params={"wait": bad}).status_code == 422, bad
        assert http.get(path, params={"wait": 1, "status": "sleeping"}).status_code == 422


def test_every_table_with_tenant_data_is_purged(tmp_path: Any) -> None:
    """TENANT_TABLES names every table that has a tenant_id column (a new table must join it)."""
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        with store.transaction() as tx:
            tables = [row[0] for row in tx.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            with_tenant = {
                t for t in tables if any(col[1] == "tenant_id" for col in tx.execute(f"PRAGMA table_info({t})"))
            }
    finally:
        store.close()
    assert with_tenant == set(TENANT_TABLES)


def test_http_error_shapes_for_admin(server: ServerProcess, operator_key: str) -> None:
    with server.http(operator_key) as http:
        assert http.post("/v1/admin/tenants", json={"name": "-bad"}).status_code == 422
        assert http.post("/v1/admin/tenants", json={"name": "ok", "extra": 1}).status_code == 422
        assert http.post("/v1/admin/tenants", content=b"{").status_code == 400
        unchanged = http.patch("/v1/admin/tenants/ops", json={"quotas": {"memory_mb": None}})
        assert unchanged.status_code == 200 and unchanged.json()["quotas"]["memory_mb"] == 256
        assert http.get("/v1/admin/tenants/no-such").status_code == 404
        assert http.post("/v1/admin/tenants", json={"name": "x" * 65}).status_code == 422


def test_a_deletion_cut_short_goes_on_when_asked_again_and_at_the_next_start(tmp_path: Any) -> None:
    with ServerProcess(tmp_path / "cut.db") as server:
        operator_key = server.create_tenant("ops", "--operator")["api_key"]
        with Client(server.url, operator_key) as admin:
            for name in ("half", "later"):
                key = admin.create_tenant(name).api_key
                with Client(server.url, key) as tenant:
                    tenant.deploy("waiter", WAITER)
                    tenant.workflow("waiter").start(id="w1").wait({"waiting"}, timeout=30)
            # A crash right after the mark: the tenant is marked, nothing purged yet.
            store = open_store(server.db)
            try:
                store.mark_deleted("half", 0.0)
                store.mark_deleted("later", 0.0)
            finally:
                store.close()
            with pytest.raises(NotFound):
                admin.tenant("half")
            with pytest.raises(Conflict, match="being deleted"):
                admin.create_tenant("half")
            deleted = admin.delete_tenant("half")
            assert (deleted.workflows, deleted.instances) == (1, 1)
            assert _rows(server.db, "half") == dict.fromkeys(TENANT_TABLES, 0)
            assert admin.create_tenant("half").name == "half"
        db = server.db
    assert _rows(db, "later")["instances"] == 1
    with ServerProcess(tmp_path / "cut.db") as again:
        deadline = time.monotonic() + 20
        while _rows(db, "later") != dict.fromkeys(TENANT_TABLES, 0):
            assert time.monotonic() < deadline, "the next start did not finish the deletion"
            time.sleep(0.1)
        assert "Traceback" not in again.log()
