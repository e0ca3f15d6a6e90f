"""Usage over HTTP: GET /v1/usage and GET /v1/admin/usage, the clients' usage() and admin_usage(), and the CLI's
`usage` and `tenants usage` (over HTTP and on --db), on a real server (uvicorn in a thread) with workers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from helpers_server import app_server
from midday import MiddayClock
from tenantflow.client import AsyncClient, Client, Forbidden, InvalidInput, NotFound
from tenantflow.host import Sandbox
from tenantflow.runtime.cli import main
from tenantflow.runtime.http.api import create_app
from tenantflow.runtime.service import Service

FLOW = """
def run(event, step):
    def flaky():
        raise RuntimeError("once")

    try:
        step.do("flaky", flaky, retries={"limit": 1, "delay": 10, "backoff": "constant"})
    except Exception:
        pass
    return step.do("sum", lambda: sum(range(1000)))
"""


@dataclass
class Site:
    url: str
    db: str
    service: Service
    acme: str
    globex: str
    operator: str

    def get(self, path: str, key: str | None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.get(self.url + path, headers=headers, params=params, timeout=10)


def _finished(service: Service, key: str, workflow: str, ids: list[str]) -> None:
    tenant = service.authenticate(key)
    deadline = time.monotonic() + 30
    while any(service.instance(tenant, workflow, i).status != "complete" for i in ids):
        assert time.monotonic() < deadline, "instances did not complete"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def site(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    db = f"sqlite:///{tmp_path_factory.mktemp('usage') / 'tf.db'}"
    service = Service.open(db, sandbox=sandbox, workers=2, clock=CLOCK).start()
    _, acme = service.create_tenant("acme")
    _, globex = service.create_tenant("globex")
    _, operator = service.create_tenant("ops", operator=True)
    for key, workflows in ((acme, ["orders", "emails"]), (globex, ["reports"])):
        for workflow in workflows:
            service.deploy(service.authenticate(key), workflow, FLOW)
            ids = [f"{workflow}-{n}" for n in range(2)]
            service.create_instances(service.authenticate(key), workflow, [{"id": i} for i in ids])
            _finished(service, key, workflow, ids)
    try:
        with app_server(create_app(service)) as url:
            yield Site(url, db, service, acme, globex, operator)
    finally:
        service.stop()
        service.store.close()


CLOCK = MiddayClock()
TODAY = CLOCK.today()


def test_a_tenant_sees_its_own_usage_by_day_and_by_workflow(site: Site) -> None:
    by_day = site.get("/v1/usage", site.acme)
    assert by_day.status_code == 200, by_day.text
    report = by_day.json()
    assert report["from"] == (TODAY - timedelta(days=29)).isoformat() and report["to"] == TODAY.isoformat()
    assert report["group_by"] == "day" and report["tenant"] == "acme" and len(report["rows"]) == 30
    total = report["total"]
    # Two workflows of two instances, each: flaky (2 attempts, failed for good) and sum (1 attempt, done).
    assert total["instances"] == 4 and total["steps"] == 4 and total["attempts"] == 12
    assert total["fuel"] > 0 and total["cpu_s"] == pytest.approx(total["fuel"] / report["fuel_per_second"])
    assert total["activations"] >= 4 and total["journal_bytes"] > 0
    assert report["rows"][-1] == {"key": TODAY.isoformat(), **total}

    by_workflow = site.get("/v1/usage", site.acme, group_by="workflow", **{"from": TODAY.isoformat()}).json()
    assert [row["key"] for row in by_workflow["rows"]] == ["emails", "orders"]
    assert sum(row["steps"] for row in by_workflow["rows"]) == total["steps"]
    assert by_workflow["from"] == TODAY.isoformat()

    globex = site.get("/v1/usage", site.globex, group_by="workflow").json()
    assert [row["key"] for row in globex["rows"]] == ["reports"] and globex["total"]["instances"] == 2

    # Days as epoch seconds or ISO times name their UTC day; a range without usage is zeros.
    epoch = site.get("/v1/usage", site.acme, **{"from": "0", "to": "86399.5"}).json()
    assert (epoch["from"], epoch["to"]) == ("1970-01-01", "1970-01-01") and epoch["total"]["steps"] == 0


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2025-01-01", "to": "2026-01-02"},  # 367 days
        {"from": "2026-02-01", "to": "2026-01-01"},  # ends before it starts
        {"from": "2026-02-30"},
        {"from": "yesterday"},
        {"to": "2026-01-01T00:00:00"},  # an ISO time needs its timezone
        {"group_by": "tenant"},  # the admin API's grouping
        {"tenant": "globex"},
        {"to": "0001-01-10"},  # the 30 days up to it are not all in the calendar
    ],
)
def test_bad_ranges_and_groupings_are_422(site: Site, params: dict[str, str]) -> None:
    answer = site.get("/v1/usage", site.acme, **params)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")


def test_366_days_is_the_most(site: Site) -> None:
    answer = site.get("/v1/usage", site.acme, **{"from": "2024-01-01", "to": "2024-12-31"})
    assert answer.status_code == 200 and len(answer.json()["rows"]) == 366


def test_admin_usage_needs_an_operator_key(site: Site) -> None:
    assert site.get("/v1/usage", None).status_code == 401
    assert site.get("/v1/admin/usage", None).status_code == 401
    assert site.get("/v1/admin/usage", site.acme).status_code == 403
    by_tenant = site.get("/v1/admin/usage", site.operator).json()
    assert by_tenant["tenant"] is None and by_tenant["group_by"] == "tenant"
    rows = {row["key"]: row for row in by_tenant["rows"]}
    assert set(rows) == {"acme", "globex"}
    assert rows["acme"] == {"key": "acme", **site.get("/v1/usage", site.acme).json()["total"]}
    one = site.get("/v1/admin/usage", site.operator, tenant="globex", group_by="workflow").json()
    assert one["tenant"] == "globex" and [r["key"] for r in one["rows"]] == ["reports"]
    assert site.get("/v1/admin/usage", site.operator, tenant="nobody").status_code == 404
    assert site.get("/v1/admin/usage", site.operator, group_by="week").status_code == 422


def test_the_clients(site: Site) -> None:
    with Client(site.url, site.acme) as client:
        report = client.usage(TODAY - timedelta(days=6), TODAY)
        assert len(report.rows) == 7 and report.from_ == (TODAY - timedelta(days=6)).isoformat()
        assert client.usage(group_by="workflow").total == report.total
        assert client.usage(CLOCK.now()).rows[0].key == TODAY.isoformat()
        with pytest.raises(InvalidInput):
            client.usage(date(2020, 1, 1), date(2022, 1, 1))
        with pytest.raises(Forbidden):
            client.admin_usage()
    with Client(site.url, site.operator) as admin:
        assert {r.key for r in admin.admin_usage(group_by="tenant").rows} == {"acme", "globex"}
        with pytest.raises(NotFound):
            admin.admin_usage(tenant="nobody")

    async def both() -> tuple[Any, Any]:
        async with AsyncClient(site.url, site.acme) as client, AsyncClient(site.url, site.operator) as admin:
            return await client.usage(group_by="workflow"), await admin.admin_usage(tenant="acme", group_by="day")

    mine, theirs = asyncio.run(both())
    assert mine.total == report.total and theirs.total == report.total


def _cli(*args: str, **env: str) -> Any:
    return CliRunner().invoke(main, list(args), env={"COLUMNS": "200", "TENANTFLOW_KEY": "", **env})


def test_the_cli(site: Site) -> None:
    env = {"TENANTFLOW_URL": site.url, "TENANTFLOW_KEY": site.acme}
    as_json = _cli("usage", "--by", "workflow", "--json", **env)
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == site.get("/v1/usage", site.acme, group_by="workflow").json()
    table = _cli("usage", "--from", TODAY.isoformat(), **env)
    assert table.exit_code == 0 and "total" in table.output and TODAY.isoformat() in table.output
    bad = _cli("usage", "--from", "2020-01-01", "--to", "2022-01-01", **env)
    assert bad.exit_code == 1 and "366" in bad.output

    over_http = _cli("tenants", "usage", "--json", "--url", site.url, "--key", site.operator)
    assert over_http.exit_code == 0, over_http.output
    on_db = _cli("tenants", "usage", "--json", "--db", site.db)
    assert on_db.exit_code == 0, on_db.output
    assert json.loads(on_db.output) == json.loads(over_http.output)
    one = _cli("tenants", "usage", "--tenant", "globex", "--by", "workflow", "--db", site.db)
    assert one.exit_code == 0 and "reports" in one.output and "globex" in one.output
    assert _cli("tenants", "usage", "--from", "soon", "--db", site.db).exit_code == 1
