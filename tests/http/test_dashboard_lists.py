"""The dashboard's instance lists: the instances page across workflows and a workflow's list, over HTTP (the
fragment: tabs with counts, filters, pages both ways, tenant scoping) and in Debian's Chromium (tabs and filters
without a page reload, the address kept in step, select all matching with a confirmation naming the count)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import test_dashboard
from test_dashboard import ARTIFACTS, Site, _sign_in

# The dashboard tests' server and browser, one of each for this module too.
site = test_dashboard.site
browser = test_dashboard.browser

WAITS = """\
def run(event, step):
    return step.wait_for_event("go", event_type="go", timeout="1 hour")
"""

ECHO = """\
def run(event, step):
    return step.do("echo", lambda: event.payload)
"""


def _wait_statuses(site: Site, workflow: str, ids: list[str], status: str) -> None:
    for instance_id in ids:
        site.wait_status(workflow, instance_id, status, timeout=30)


@pytest.fixture(scope="module")
def orders(site: Site) -> list[str]:
    tenant = site.service.authenticate(site.acme)
    site.service.deploy(tenant, "order", WAITS)
    site.service.deploy(tenant, "mail", ECHO)
    ids = [f"order-{n:02d}" for n in range(30)]
    for start in range(0, 30, 10):
        site.service.create_instances(tenant, "order", [{"id": i} for i in ids[start : start + 10]])
        time.sleep(0.01)
    site.service.create_instances(tenant, "mail", [{"id": f"mail-{n}", "params": n} for n in range(3)])
    _wait_statuses(site, "order", ids, "waiting")
    _wait_statuses(site, "mail", [f"mail-{n}" for n in range(3)], "complete")
    for instance_id in ids[:5]:
        site.service.control(tenant, "order", instance_id, "terminate")
    return ids


def tabs(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-tab="(\w*)"[^>]*>\w+ <span class="count"[^>]*>([\d,+]+)</span>', html))


def test_the_fragment_counts_filters_and_pages(site: Site, orders: list[str]) -> None:
    page = site.get("/ui/fragments/instances", site.acme).text
    counted = tabs(page)
    assert counted[""] == "33" and counted["waiting"] == "25" and counted["terminated"] == "5"
    assert counted["complete"] == "3" and counted["errored"] == "0"
    assert 'data-total="33"' in page and "mail-2" in page and "order-29" in page
    # One workflow, by status, by id prefix, by time.
    order = site.get("/ui/fragments/instances", site.acme, workflow="order", status="terminated").text
    assert re.findall(r'data-instance="([\w-]+)"', order) == ids_desc(orders[:5])
    assert tabs(order)["complete"] == "0"
    found = site.get("/ui/fragments/instances", site.acme, id="order-2").text
    assert re.findall(r'data-instance="([\w-]+)"', found) == [f"order-2{n}" for n in range(10)]
    assert "by id" in found
    future = site.get("/ui/fragments/instances", site.acme, created_after=str(time.time() + 3600)).text
    assert "No instances match the filter" in future and tabs(future)[""] == "0"
    # Pages: older, then newer, meeting exactly.
    first = site.get("/ui/fragments/workflows/order/instances", site.acme, limit="7").text
    older = re.search(r'href="[^"]*after=([\w-]+)" rel="next"', first)
    assert older is not None
    second = site.get("/ui/fragments/workflows/order/instances", site.acme, limit="7", after=older.group(1)).text
    newer = re.search(r'href="[^"]*before=([\w-]+)" rel="prev"', second)
    assert newer is not None
    again = site.get("/ui/fragments/workflows/order/instances", site.acme, limit="7", before=newer.group(1)).text
    rows = re.compile(r'data-instance="([\w-]+)"')
    assert rows.findall(again) == rows.findall(first) and 'rel="prev"' not in again
    # Bad filters are a problem, not a page; another tenant sees none of it.
    for bad in ({"status": "bogus"}, {"created_after": "yesterday"}, {"id": "-x"}, {"after": "nope"}):
        assert site.get("/ui/fragments/instances", site.acme, **bad).status_code == 422, bad
    theirs = site.get("/ui/fragments/instances", site.globex).text
    assert "order-" not in theirs and tabs(theirs)[""] == "0"
    assert site.get("/ui/fragments/instances", site.globex, tenant="acme").status_code == 404
    viewed = site.get("/ui/fragments/instances", site.operator, tenant="acme").text
    assert "order-29" in viewed and 'data-readonly="true"' in viewed and "pick-one" not in viewed
    assert site.get("/instances").status_code == 200


def ids_desc(ids: list[str]) -> list[str]:
    return sorted(ids, reverse=True)


def test_browser_tabs_filters_and_bulk_over_all_matching(site: Site, browser: Any, orders: list[str]) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    _sign_in(page, site, site.acme)

    # The instances page, across workflows: tabs with counts; a tab filters without reloading the page.
    page.get_by_role("link", name="Instances", exact=True).click()
    page.wait_for_url(site.url + "/instances")
    tab = page.locator('a[data-tab="terminated"]')
    expect(tab).to_contain_text("5")
    expect(page.locator('a[data-tab=""]')).to_contain_text("33")
    page.evaluate("window.notReloaded = true")
    tab.click()
    expect(page.locator("#instances-region tbody tr")).to_have_count(5)
    expect(page).to_have_url(site.url + "/instances?status=terminated")
    expect(page.locator('a[data-tab="terminated"]')).to_have_attribute("aria-current", "page")
    # The id search and the time range apply the same way.
    page.get_by_label("Id").fill("order-0")
    expect(page).to_have_url(re.compile(r"/instances\?status=terminated&id=order-0$"))
    expect(page.locator("#instances-region tbody tr")).to_have_count(5)
    page.get_by_label("Id").fill("order-03")
    expect(page.locator("#instances-region tbody tr")).to_have_count(1)
    page.locator("#since-filter").fill("2099-01-01T00:00:00")
    expect(page.locator(".instance-list .empty")).to_contain_text("No terminated instances match the filter")
    expect(page).to_have_url(re.compile(r"created_after=\d+"))
    assert page.evaluate("window.notReloaded") is True
    # A reload (or coming back) shows the same list: the address holds the filters.
    page.reload()
    expect(page.locator(".instance-list .empty")).to_be_visible()
    expect(page.get_by_label("Id")).to_have_value("order-03")
    assert page.locator("#since-filter").input_value().startswith("2099-01-01T00:00")
    page.get_by_role("button", name="Clear", exact=True).click()
    expect(page).to_have_url(site.url + "/instances")
    expect(page.locator('a[data-tab=""]')).to_have_attribute("aria-current", "page")
    page.screenshot(path=str(ARTIFACTS / "instances.png"), full_page=True)

    # The workflow page: the source is folded away, the list is a page of 10 waiting ones with pages both ways.
    page.goto(site.url + "/workflows/order?status=waiting&limit=10")
    assert page.locator("details#source-details").get_attribute("open") is None
    expect(page.get_by_role("heading", name="Source of v1")).to_be_visible()
    rows = page.locator("#instances-region tbody tr")
    expect(rows).to_have_count(10)
    first_ids = rows.evaluate_all("rs => rs.map(r => r.dataset.instance)")
    page.get_by_role("link", name="Older →").click()
    expect(page).to_have_url(re.compile(r"after="))
    expect(rows.first).not_to_have_attribute("data-instance", first_ids[0])
    page.get_by_role("link", name="← Newer").click()
    expect(rows.first).to_have_attribute("data-instance", first_ids[0])
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.instance)") == first_ids

    # Select the page, then every matching one; the confirmation names the count; cancel changes nothing.
    page.get_by_label("Select every instance on this page").check()
    expect(page.locator("#selection-text")).to_have_text("10 selected.")
    page.get_by_role("button", name="Select all 25 matching").click()
    expect(page.locator("#selection-text")).to_have_text("All 25 matching instances are selected.")
    dialog = page.locator("dialog#confirm")
    page.locator("#selection-bar").get_by_role("button", name="Terminate").click()
    expect(dialog).to_be_visible()
    expect(dialog.locator("#confirm-text")).to_have_text("Terminate 25 waiting instances of 'order'?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(page.locator("#bulk-status")).to_have_text("Terminate cancelled.")
    assert site.service.count_instances(site.service.authenticate(site.acme), "order").counts["waiting"] == 25
    page.locator("#selection-bar").get_by_role("button", name="Terminate").click()
    dialog.get_by_role("button", name="Terminate").click()
    expect(page.locator("#bulk-status")).to_have_text("Terminate: 25 terminated, 0 skipped.")
    expect(page.locator('a[data-tab="terminated"]')).to_contain_text("30")
    expect(page.locator('a[data-tab="waiting"]')).to_contain_text("0")
    expect(page.locator("#selection-bar")).to_be_hidden()
    page.screenshot(path=str(ARTIFACTS / "workflow-list.png"), full_page=True)

    # Picked ones, across workflows: restart two terminated ones and one complete one.
    page.goto(site.url + "/instances?id=order-0")
    expect(rows).to_have_count(10)
    page.get_by_label("Select order-01").check()
    page.get_by_label("Select order-02").check()
    page.locator("#selection-bar").get_by_role("button", name="Restart").click()
    expect(dialog.locator("#confirm-text")).to_have_text("Restart 2 selected instances?")
    dialog.get_by_role("button", name="Restart").click()
    expect(page.locator("#bulk-status")).to_have_text("Restart: 2 restarted, 0 skipped.")
    _wait_statuses(site, "order", ["order-01", "order-02"], "waiting")
    assert errors == []
    context.close()
