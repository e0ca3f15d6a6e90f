"""The dashboard's usage page: its fragment over HTTP (keys, scoping, ranges), then in headless Chromium (Debian's,
driven by Playwright as in test_dashboard.py): the chart's bars and the table carry the numbers the API reports,
for a tenant and for an operator across tenants."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers_server import app_server
from midday import MiddayClock
from tenantflow.host import Sandbox
from tenantflow.runtime.http.api import create_app
from tenantflow.runtime.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
ARTIFACTS = Path(__file__).parent.parent / "artifacts"
CLOCK = MiddayClock()
TODAY = CLOCK.today().isoformat()

STEPS = """
def run(event, step):
    return [step.do(f"s{i}", lambda: i) for i in range(event.payload["steps"])]
"""


@dataclass
class Site:
    url: str
    service: Service
    acme: str
    globex: str
    operator: str

    def get(self, path: str, key: str | None = None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.get(self.url + path, headers=headers, params=params, timeout=10)


def _run(service: Service, key: str, workflow: str, instances: dict[str, int]) -> None:
    tenant = service.authenticate(key)
    service.deploy(tenant, workflow, STEPS)
    service.create_instances(tenant, workflow, [{"id": i, "params": {"steps": n}} for i, n in instances.items()])
    deadline = time.monotonic() + 30
    while any(service.instance(tenant, workflow, i).status != "complete" for i in instances):
        assert time.monotonic() < deadline, "instances did not complete"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def site(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    db = tmp_path_factory.mktemp("usage-dashboard") / "tf.db"
    service = Service.open(f"sqlite:///{db}", sandbox=sandbox, workers=2, clock=CLOCK).start()
    _, acme = service.create_tenant("acme")
    _, globex = service.create_tenant("globex")
    _, operator = service.create_tenant("ops", operator=True)
    _run(service, acme, "orders", {"o1": 3, "o2": 4})  # 7 steps
    _run(service, acme, "emails", {"e1": 2})  # 2 steps
    _run(service, globex, "reports", {"r1": 5})
    try:
        with app_server(create_app(service)) as url:
            yield Site(url, service, acme, globex, operator)
    finally:
        service.stop()
        service.store.close()


def test_the_page_is_a_shell_and_the_fragment_needs_a_key(site: Site) -> None:
    page = site.get("/usage")
    assert page.status_code == 200 and 'data-fragment="/ui/fragments/usage"' in page.text
    assert 'href="/usage"' in page.text  # in the navigation
    assert site.get("/ui/fragments/usage").status_code == 401


def test_the_fragment_shows_only_the_tenants_own(site: Site) -> None:
    mine = site.get("/ui/fragments/usage", site.acme)
    assert mine.status_code == 200
    assert 'data-key="orders"' in mine.text and 'data-key="emails"' in mine.text
    assert "reports" not in mine.text
    # A tenant key cannot look at another tenant's usage.
    assert site.get("/ui/fragments/usage", site.acme, tenant="globex").status_code in (403, 404)
    week = site.get("/ui/fragments/usage", site.acme, **{"from": "2026-01-01", "to": "2026-01-07"})
    assert week.text.count('class="bar"') == 7 and "Nothing was used" in week.text
    assert site.get("/ui/fragments/usage", site.acme, **{"from": "2020-01-01", "to": "2022-01-01"}).status_code == 422
    assert site.get("/ui/fragments/usage", site.acme, **{"from": "soon"}).status_code == 422


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def _sign_in(page: Any, site: Site, key: str) -> None:
    page.goto(site.url + "/")
    page.wait_for_url(re.compile(r"/login"))
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(site.url + "/")


def test_browser_usage_chart_and_table(site: Site, browser: Any) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    api = site.get("/v1/usage", site.acme).json()

    _sign_in(page, site, site.acme)
    page.get_by_role("link", name="Usage").click()
    page.wait_for_url(site.url + "/usage")
    chart = page.locator("#usage-chart")
    expect(chart).to_be_visible()
    bars = chart.locator("g.bar")
    expect(bars).to_have_count(30)  # the last 30 days, today last
    today = chart.locator(f'g.bar[data-day="{TODAY}"]')
    assert float(today.get_attribute("data-value") or "") == api["total"]["steps"] == 9
    assert float(today.locator("rect").get_attribute("height") or "0") > 0
    assert float(bars.first.locator("rect").get_attribute("height") or "1") == 0
    expect(today.locator("title")).to_have_text(f"{TODAY}: 9")
    expect(page.locator('#usage-totals [data-metric="steps"] dd')).to_have_text("9")
    expect(page.locator('#usage-table tr[data-key="orders"] td').first).to_have_text("7")
    expect(page.locator('#usage-table tr[data-key="emails"] td').first).to_have_text("2")
    expect(page.locator("#usage-table tfoot td").first).to_have_text("9")
    expect(page.locator("#usage-table")).not_to_contain_text("reports")
    page.screenshot(path=str(ARTIFACTS / "usage.png"), full_page=True)

    # Another metric, over a week chosen with the form.
    page.locator("#usage-metric").select_option("attempts")
    page.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"metric=attempts"))
    expect(page.locator("#usage-chart")).to_have_attribute("data-metric", "attempts")
    value = page.locator(f'#usage-chart g.bar[data-day="{TODAY}"]').get_attribute("data-value")
    assert float(value or "") == api["total"]["attempts"]

    # An operator sees every tenant, a row each, and a tenant's own page from its row.
    page.get_by_role("button", name="Sign out").click()
    _sign_in(page, site, site.operator)
    page.goto(site.url + "/usage")
    expect(page.locator("#usage-range")).to_contain_text("every tenant")
    expect(page.locator('#usage-table tr[data-key="acme"] td').first).to_have_text("9")
    expect(page.locator('#usage-table tr[data-key="globex"] td').first).to_have_text("5")
    everyone = page.locator(f'#usage-chart g.bar[data-day="{TODAY}"]').get_attribute("data-value")
    assert float(everyone or "") == 14
    page.get_by_role("link", name="globex").click()
    expect(page).to_have_url(re.compile(r"/usage\?tenant=globex"))
    expect(page.locator('#usage-table tr[data-key="reports"] td').first).to_have_text("5")
    page.screenshot(path=str(ARTIFACTS / "usage-operator.png"), full_page=True)
    assert not errors, errors
    context.close()
