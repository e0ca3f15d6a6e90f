"""The dashboard: pages, fragments and tenant scoping over HTTP, then a real headless Chromium run.

The server is the real app (`create_app`, which mounts the dashboard) under uvicorn on a free
127.0.0.1 port, with workers and a temporary SQLite database. The browser is Debian's chromium
(/usr/bin/chromium) driven by Playwright; no browser is downloaded. Screenshots go to
tests/artifacts/.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers_server import app_server
from tenantflow.host import Sandbox
from tenantflow.runtime.http.api import create_app
from tenantflow.runtime.http.dashboard import (
    STATIC,
    VERSIONS_SHOWN,
    WORKFLOWS_PER_TENANT,
    build_timeline,
    fmt_bytes,
    fmt_count,
    fmt_duration,
)
from tenantflow.runtime.records import Instance
from tenantflow.runtime.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent.parent / "artifacts"

APPROVAL = """\
from tenantflow import StepError


def run(event, step):
    name = event.payload["name"]
    greeting = step.do("greet", lambda: "hello " + name)
    print("greeted", name)

    def flaky():
        raise ValueError("the upstream said no")

    try:
        step.do("call upstream", flaky, retries={"limit": 1, "delay": "1 second", "backoff": "constant"})
    except StepError as error:
        print("gave up on upstream:", error.message)
    step.sleep("cool off", "1 second")
    approval = step.wait_for_event("approval", event_type="approved", timeout="1 hour")
    print("approved by", approval["payload"]["by"])
    return {"greeting": greeting, "approved_by": approval["payload"]["by"]}
"""

GLOBEX = """\
def run(event, step):
    return step.do("secret", lambda: "globex only")
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

    def wait_status(self, workflow: str, instance_id: str, status: str, timeout: float = 20) -> None:
        tenant = self.service.authenticate(self.acme)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.service.instance(tenant, workflow, instance_id).status == status:
                return
            time.sleep(0.05)
        raise AssertionError(f"{instance_id} never became {status}")


@pytest.fixture(scope="module")
def site(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    db = tmp_path_factory.mktemp("dashboard") / "tf.db"
    service = Service.open(f"sqlite:///{db}", sandbox=sandbox, workers=2).start()
    _, acme = service.create_tenant("acme")
    _, globex = service.create_tenant("globex")
    _, operator = service.create_tenant("ops", operator=True)
    service.deploy(service.authenticate(acme), "approval", APPROVAL)
    service.deploy(service.authenticate(acme), "approval", APPROVAL.replace("cool off", "cool down"))
    service.deploy(service.authenticate(globex), "globex-flow", GLOBEX)
    try:
        with app_server(create_app(service)) as url:
            yield Site(url, service, acme, globex, operator)
    finally:
        service.stop()
        service.store.close()


# -- formatting and the timeline model (no server) -------------------------------------


def test_formatting() -> None:
    assert fmt_duration(0.25) == "250 µs"
    assert fmt_duration(12.34) == "12.3 ms"
    assert fmt_duration(1500) == "1.50 s"
    assert fmt_duration(999.9) == "1.00 s"
    assert fmt_duration(125_000) == "2 min 5 s"
    assert fmt_duration(None) == "—"
    assert fmt_count(1_234_567) == "1.23 M"
    assert fmt_count(999) == "999"
    assert fmt_bytes(100) == "100 B"
    assert fmt_bytes(2048) == "2.0 KiB"


def test_timeline_model() -> None:
    t0 = 1_700_000_000.0
    instance = Instance("acme", "wf", "i1", 1, "h", "complete", {"a": 1}, {"ok": True}, None, t0, t0 + 10)
    attempt = {"position": 1, "ok": False, "error_name": "ValueError", "error_message": "no", "fuel": 2_000_000}
    journal = {
        "steps": [
            {
                "position": 0,
                "name": "greet",
                "kind": "do",
                "state": "done",
                "attempts": 1,
                "result": "hello",
                "fuel": 1000,
                "duration_ms": 5.0,
                "created_at": t0 + 0.1,
                "updated_at": t0 + 0.105,
                "attempt_log": [
                    {
                        **attempt,
                        "position": 0,
                        "attempt": 1,
                        "ok": True,
                        "fuel": 1000,
                        "duration_ms": 5.0,
                        "finished_at": t0 + 0.105,
                        "error_name": None,
                        "error_message": None,
                    }
                ],
            },
            {
                "position": 1,
                "name": "flaky",
                "kind": "do",
                "state": "failed",
                "attempts": 2,
                "error_name": "ValueError",
                "error_message": "no",
                "fuel": 4_000_000,
                "duration_ms": 20.0,
                "created_at": t0 + 0.2,
                "updated_at": t0 + 1.3,
                "attempt_log": [
                    {**attempt, "attempt": 1, "duration_ms": 10.0, "finished_at": t0 + 0.21},
                    {**attempt, "attempt": 2, "duration_ms": 10.0, "finished_at": t0 + 1.3},
                ],
            },
            {
                "position": 2,
                "name": "nap",
                "kind": "sleep",
                "state": "sleeping",
                "wake_at": t0 + 3,
                "created_at": t0 + 2,
                "updated_at": t0 + 2,
            },
            {
                "position": 3,
                "name": "approval",
                "kind": "wait",
                "state": "done",
                "event_type": "approved",
                "result": {"type": "approved", "payload": {"by": "ann"}},
                "created_at": t0 + 3,
                "updated_at": t0 + 9,
            },
        ],
        "events": [
            {"seq": 1, "type": "approved", "payload": {"by": "ann"}, "created_at": t0 + 9, "consumed_at": 3},
            {"seq": 2, "type": "other", "payload": None, "created_at": t0 + 9.5, "consumed_at": None},
        ],
        "log": "one\ntwo\n",
    }
    timeline = build_timeline(instance, journal, now=t0 + 20)
    greet, flaky, nap, wait = timeline.steps
    assert greet.result_size == len('"hello"') and greet.end == pytest.approx(t0 + 0.105)
    assert greet.start == pytest.approx(t0 + 0.1)
    assert flaky.fuel == 4_000_000 and len(flaky.attempt_log) == 2 and flaky.result is None
    assert flaky.attempt_log[1].start == pytest.approx(t0 + 1.29)
    assert nap.state_label == "slept" and nap.end == t0 + 3 and nap.duration_ms == pytest.approx(1000)
    assert wait.end == t0 + 9 and [e.seq for e in wait.events] == [1]
    assert timeline.events[0].consumer == "approval" and timeline.events[1].consumer is None
    assert timeline.log_lines == ["one", "two"]
    assert timeline.total_fuel == 4_001_000
    for step in timeline.steps:
        assert 0 <= step.bar_x <= 1000 and step.bar_w > 0 and step.bar_x + step.bar_w <= 1000.01


# -- over HTTP ---------------------------------------------------------------------------


def test_pages_are_shells_with_a_strict_policy(site: Site) -> None:
    for path in ("/", "/login", "/workflows/approval", "/workflows/approval/instances/x1"):
        page = site.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert '<script src="/ui/static/dashboard.js"' in page.text
        assert "<script>" not in page.text and " on" + "click=" not in page.text
    assert site.get("/ui/static/dashboard.js").status_code == 200
    assert site.get("/ui/static/dashboard.css").status_code == 200
    # No CDN: nothing the browser loads points off this origin.
    for path in STATIC.iterdir():
        if path.suffix in (".js", ".css"):
            assert not re.search(r"https?://", path.read_text()), path
    assert not re.search(r"(src|href)=\"https?://", site.get("/").text)
    assert site.get("/workflows/bad%20name").status_code == 422


def test_the_api_keeps_its_404_and_405(site: Site) -> None:
    for method, path, status in (
        ("GET", "/nope", 404),
        ("GET", "/ui/nope", 404),
        ("PATCH", "/v1/workflows/approval", 405),
        ("POST", "/", 405),
        ("POST", "/ui/fragments/workflows", 405),
    ):
        response = httpx.request(method, site.url + path, timeout=10)
        assert response.status_code == status, (method, path)
        assert response.headers["content-type"].startswith("application/problem+json"), (method, path)
    assert site.get("/healthz").json() == {"status": "ok"}


def test_fragments_need_a_key(site: Site) -> None:
    for key in (None, "tf_not-a-key"):
        response = site.get("/ui/fragments/workflows", key)
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")
    assert site.get("/ui/me", site.acme).json() == {"tenant": "acme", "name": "acme", "operator": False}


def test_tenants_see_only_their_own(site: Site) -> None:
    mine = site.get("/ui/fragments/workflows", site.acme).text
    assert "approval" in mine and "globex-flow" not in mine
    theirs = site.get("/ui/fragments/workflows", site.globex).text
    assert "globex-flow" in theirs and "approval" not in theirs
    assert site.get("/ui/fragments/workflows/approval", site.globex).status_code == 404
    assert site.get("/ui/fragments/workflows/approval/instances", site.globex).status_code == 404
    # Naming another tenant does not help a tenant key.
    assert site.get("/ui/fragments/workflows/approval", site.globex, tenant="acme").status_code == 404
    assert site.get("/ui/fragments/workflows/globex-flow", site.acme, tenant="globex").status_code == 404
    # An operator sees every tenant, read only.
    everything = site.get("/ui/fragments/workflows", site.operator).text
    assert "approval" in everything and "globex-flow" in everything
    assert "?tenant=acme" in everything
    view = site.get("/ui/fragments/workflows/approval", site.operator, tenant="acme")
    assert view.status_code == 200 and "read only" in view.text and "start-form" not in view.text


def test_workflow_fragment_shows_versions_and_source(site: Site) -> None:
    latest = site.get("/ui/fragments/workflows/approval", site.acme).text
    assert "v1" in latest and "v2" in latest and "cool down" in latest and "Source of v2" in latest
    first = site.get("/ui/fragments/workflows/approval", site.acme, version="1").text
    assert "Source of v1" in first and "cool off" in first
    assert site.get("/ui/fragments/workflows/approval", site.acme, version="9").status_code == 404


def test_long_lists_show_their_newest_page_and_say_where_the_rest_is(site: Site) -> None:
    tenant, key = site.service.create_tenant("prolific")
    for n in range(1, VERSIONS_SHOWN + 3):  # straight into the store: a deploy check each would take a while
        site.service.store.deploy(tenant.tenant_id, "many", f"x = {n}\n", f"h{n}", time.time())
    page = site.get("/ui/fragments/workflows/many", key).text
    shown = {int(n) for n in re.findall(r">v(\d+)</a>", page)}
    assert shown == set(range(3, VERSIONS_SHOWN + 3)) and "Source of v102" in page
    assert "older versions (v1 to v2)" in page and "before=3" in page
    assert "Source of v1<" in site.get("/ui/fragments/workflows/many", key, version="1").text  # still reachable

    for n in range(WORKFLOWS_PER_TENANT):
        site.service.store.deploy(tenant.tenant_id, f"w{n:03}", "x = 0\n", "h0", time.time())
    mine = site.get("/ui/fragments/workflows", key).text  # the tenant's own page: all of them
    assert "w099" in mine and "many" in mine and "after=" not in mine
    everyone = site.get("/ui/fragments/workflows", site.operator).text  # the operator's: 100 of each tenant
    assert "many" in everyone and "w098" in everyone and "w099" not in everyone  # "many" sorts first
    assert "GET /v1/workflows?after=w098" in everyone
    assert "approval" in everyone  # the other tenants' lists are unaffected


def test_tenant_text_is_escaped(site: Site) -> None:
    tenant = site.service.authenticate(site.acme)
    hostile = {"name": "<img src=x onerror=alert(1)>", "note": "</script><script>alert(2)</script>"}
    site.service.create_instances(tenant, "approval", [{"id": "hostile", "params": hostile}])
    site.wait_status("approval", "hostile", "waiting")  # the name went into a step result and the log
    for part in ("summary", "step?position=0"):  # the step's detail has its result
        page = site.get(f"/ui/fragments/workflows/approval/instances/hostile/{part}", site.acme)
        assert page.status_code == 200
        assert "<img src=x" not in page.text and "<script>" not in page.text
        assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    site.service.control(tenant, "approval", "hostile", "terminate")


def test_summary_says_whether_the_isolate_is_parked(site: Site) -> None:
    tenant = site.service.authenticate(site.acme)
    site.service.create_instances(tenant, "approval", [{"id": "parked-1", "params": {"name": "pat"}}])
    deadline = time.monotonic() + 20
    while len(site.service.journal(tenant, "approval", "parked-1")["steps"]) < 4:  # at the event wait
        assert time.monotonic() < deadline, "parked-1 never reached its event wait"
        time.sleep(0.05)
    path = "/ui/fragments/workflows/approval/instances/parked-1/summary"
    deadline = time.monotonic() + 10
    while "parked in worker" not in (page := site.get(path, site.acme).text):
        assert time.monotonic() < deadline, page
        time.sleep(0.05)
    assert "1 (0 steps replayed, 2 hot resumes)" in page  # the retry's back-off and the sleep
    assert site.get("/v1/workflows/approval/instances/parked-1", site.acme).json()["parked"] is True
    site.service.control(tenant, "approval", "parked-1", "pause")
    site.wait_status("approval", "parked-1", "paused")
    deadline = time.monotonic() + 10
    while "evicted: replays its journal when it wakes" not in (page := site.get(path, site.acme).text):
        assert time.monotonic() < deadline, page
        time.sleep(0.05)
    site.service.control(tenant, "approval", "parked-1", "terminate")


def test_instances_fragment_filters_and_pages(site: Site) -> None:
    tenant = site.service.authenticate(site.acme)
    site.service.create_instances(
        tenant, "approval", [{"id": f"page-{n:02d}", "params": {"name": "p"}} for n in range(5)]
    )
    for n in range(5):
        site.service.control(tenant, "approval", f"page-{n:02d}", "terminate")
    first = site.get("/ui/fragments/workflows/approval/instances", site.acme, status="terminated", limit="3").text
    assert first.count('data-status="terminated"') == 3 and "Older →" in first
    # Newest first (one batch shares its creation time: by id, descending).
    assert re.findall(r'data-instance="([\w-]+)"', first) == ["page-04", "page-03", "page-02"]
    after = re.search(r'after=([\w-]+)" rel="next"', first)
    assert after is not None
    second = site.get(
        "/ui/fragments/workflows/approval/instances", site.acme, status="terminated", limit="3", after=after.group(1)
    ).text
    assert second.count('data-status="terminated"') >= 2 and "Newest" in second and "← Newer" in second
    none = site.get("/ui/fragments/workflows/approval/instances", site.acme, status="paused").text
    assert "No paused instances" in none
    assert site.get("/ui/fragments/workflows/approval/instances", site.acme, status="bogus").status_code == 422


# -- in the browser ------------------------------------------------------------------------


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


def test_browser_run_approve_and_timeline(site: Site, browser: Any) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)

    # Sign in: a wrong key is refused on the page, the right one is kept in sessionStorage only.
    page.goto(site.url + "/login")
    page.get_by_label("API key").fill("tf_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_have_text("That API key is not known.")
    errors.clear()  # the browser logs the 401 it was meant to get
    _sign_in(page, site, site.acme)
    expect(page.locator("#who-name")).to_have_text("acme")
    assert page.evaluate("sessionStorage.getItem('tenantflow.apiKey')") == site.acme
    assert context.cookies() == []

    # The deployed workflow, its versions and source.
    link = page.get_by_role("link", name="approval", exact=True)
    expect(link).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "workflows.png"), full_page=True)
    link.click()
    expect(page.get_by_role("heading", name="Source of v2")).to_be_visible()
    expect(page.locator("pre.source")).to_contain_text('wait_for_event("approval"')

    # Start an instance from the page; bad JSON is caught before anything is sent.
    page.get_by_label("Instance id").fill("order-1")
    page.get_by_label("Params (JSON)").fill("{not json")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator("#start-params-error")).to_contain_text("Not valid JSON")
    assert page.locator("#start-params").get_attribute("aria-invalid") == "true"
    page.get_by_label("Params (JSON)").fill('{"name": "Ada"}')
    page.get_by_role("button", name="Start", exact=True).click()
    page.wait_for_url(re.compile(r"/workflows/approval/instances/order-1$"))

    # Live updates: the page reaches `waiting` on the event wait by itself.
    status = page.locator("#instance-status")
    expect(status).to_contain_text("waiting", timeout=20_000)
    expect(page.locator('li[data-step="approval"]')).to_contain_text("waiting")
    expect(page.locator('li[data-step="cool down"]')).to_contain_text("slept")
    flaky = page.locator('li[data-step="call upstream"]')
    expect(flaky).to_contain_text("failed")
    flaky.get_by_role("button").first.click()  # a row's detail is fetched when it is opened
    expect(flaky).to_contain_text("the upstream said no")
    expect(flaky).to_contain_text("Attempts (2)")
    expect(flaky.locator("table.attempts tbody tr")).to_have_count(2)
    expect(page.get_by_role("button", name="Resume")).to_be_disabled()

    # The workflow page's list shows it live, and the filter narrows it.
    other = context.new_page()
    other.goto(site.url + "/workflows/approval?status=waiting")
    row = other.locator('tr[data-instance="order-1"]')
    expect(row).to_contain_text("waiting")
    other.screenshot(path=str(ARTIFACTS / "workflow.png"), full_page=True)

    # Send the event from the page: the payload is validated first.
    page.get_by_label("Event type").fill("approved")
    page.get_by_label("Payload (JSON)").fill('{"by": ')
    page.get_by_role("button", name="Send event").click()
    expect(page.locator("#event-payload-error")).to_contain_text("Not valid JSON")
    page.get_by_label("Payload (JSON)").fill('{"by": "Grace"}')
    page.get_by_role("button", name="Send event").click()
    expect(page.locator("#action-status")).to_contain_text("Event #1 (approved) delivered")
    expect(status).to_contain_text("complete", timeout=20_000)
    output = json.loads(page.locator("#instance-output").inner_text())
    assert output == {"greeting": "hello Ada", "approved_by": "Grace"}

    # The timeline: every step, attempts, the sleep, the wait with its event, and the log.
    steps = page.locator("#timeline > li")
    expect(steps).to_have_count(4)
    assert steps.evaluate_all("els => els.map(e => e.dataset.step)") == [
        "greet",
        "call upstream",
        "cool down",
        "approval",
    ]
    greet = page.locator('li[data-step="greet"]')
    expect(greet).to_contain_text("done")
    greet.get_by_role("button").first.click()
    expect(greet).to_contain_text("Fuel")
    expect(greet).to_contain_text("Result")
    expect(greet).to_contain_text("11 B")  # "hello Ada" as JSON
    page.locator('li[data-step="approval"]').get_by_role("button").first.click()
    expect(page.locator('li[data-step="approval"]')).to_contain_text("#1 approved")
    expect(page.locator("#events")).to_contain_text("received by approval")
    expect(page.locator("#instance-log")).to_contain_text("approved by Grace")
    expect(page.locator("#instance-log")).to_contain_text("gave up on upstream: the upstream said no")
    expect(page.get_by_role("button", name="Terminate")).to_be_disabled()
    page.screenshot(path=str(ARTIFACTS / "instance.png"), full_page=True)

    # Restart needs confirmation: cancel keeps it complete, confirm starts it again from scratch.
    page.get_by_role("button", name="Restart").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Cancel").click()
    expect(page.locator("#action-status")).to_have_text("Restart cancelled.")
    expect(status).to_contain_text("complete")
    page.get_by_role("button", name="Restart").click()
    dialog.get_by_role("button", name="Restart").click()
    expect(status).to_contain_text("waiting", timeout=20_000)
    expect(page.get_by_text("No events sent to this instance.")).to_be_visible()

    # Pause and resume (no confirmation), then terminate (confirmed).
    page.get_by_role("button", name="Pause").click()
    expect(status).to_contain_text("paused")
    page.get_by_role("button", name="Resume").click()
    expect(status).to_contain_text("waiting")
    page.get_by_role("button", name="Terminate").click()
    dialog.get_by_role("button", name="Terminate").click()
    expect(status).to_contain_text("terminated")
    expect(page.get_by_role("button", name="Send event")).to_be_disabled()

    # A narrow window still shows the status by word and the controls.
    page.set_viewport_size({"width": 390, "height": 844})
    expect(status).to_contain_text("terminated")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.screenshot(path=str(ARTIFACTS / "instance-narrow.png"), full_page=True)

    # Sign out forgets the key.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login"))
    assert page.evaluate("sessionStorage.getItem('tenantflow.apiKey')") is None
    assert errors == []
    context.close()


def test_browser_other_tenant_and_operator(site: Site, browser: Any) -> None:
    from playwright.sync_api import expect

    tenant = site.service.authenticate(site.acme)
    site.service.create_instances(tenant, "approval", [{"id": "private-1", "params": {"name": "Bo"}}])
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()

    # A second tenant's key sees none of acme's workflows or instances.
    _sign_in(page, site, site.globex)
    expect(page.get_by_role("link", name="globex-flow")).to_be_visible()
    expect(page.get_by_role("link", name="approval", exact=True)).to_have_count(0)
    page.goto(site.url + "/workflows/approval/instances/private-1")
    expect(page.locator("#instance-region")).to_contain_text("no instance 'private-1'")
    expect(page.locator("#controls")).to_be_hidden()
    page.goto(site.url + "/workflows/approval/instances/private-1?tenant=acme")
    expect(page.locator("#instance-region [role=alert]")).to_be_visible()
    assert "Bo" not in page.locator("main").inner_text()

    # An operator sees every tenant, read only.
    page.get_by_role("button", name="Sign out").click()
    _sign_in(page, site, site.operator)
    expect(page.locator("#who-operator")).to_be_visible()
    expect(page.get_by_role("link", name="globex-flow")).to_be_visible()
    page.get_by_role("link", name="approval", exact=True).click()
    expect(page).to_have_url(re.compile(r"/workflows/approval\?tenant=acme$"))
    expect(page.get_by_text("read only").first).to_be_visible()
    expect(page.locator("#start-form")).to_have_count(0)
    page.locator('tr[data-instance="private-1"] a').click()
    expect(page.locator("#instance-params")).to_contain_text('"Bo"')
    expect(page.locator("#controls")).to_be_hidden()
    page.screenshot(path=str(ARTIFACTS / "operator.png"), full_page=True)
    context.close()


# -- sign-in redirect ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (None, "/"),
        ("", "/"),
        ("/workflows/approval?status=waiting", "/workflows/approval?status=waiting"),
        ("/\\127.0.0.1:9/x", "/"),
        ("/%5C127.0.0.1:9/x", "/"),
        ("//127.0.0.1:9/x", "/"),
        ("/%2F127.0.0.1:9/x", "/"),
        ("/\t/127.0.0.1:9/x", "/"),
        ("/\n/evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("evil.example", "/"),
        ("/login?next=/x", "/"),
    ],
)
def test_safe_next_keeps_only_same_origin_paths(target: str | None, expected: str) -> None:
    from tenantflow.runtime.http.dashboard import safe_next

    assert safe_next(target) == expected


def test_the_login_page_carries_a_checked_next(site: Site) -> None:
    evil = site.get("/login", next="/\\127.0.0.1:9/x").text
    assert 'data-next="/"' in evil and "127.0.0.1:9" not in evil
    good = site.get("/login", next="/workflows/approval").text
    assert 'data-next="/workflows/approval"' in good


def test_browser_sign_in_never_leaves_the_origin(site: Site, browser: Any) -> None:
    context = browser.new_context()
    context.set_default_timeout(15_000)
    page = context.new_page()
    port = site.url.rsplit(":", 1)[1]
    # "localhost" is another origin than "127.0.0.1"; the browser reads "\" as "/".
    for next_path in (f"/%5Clocalhost:{port}/workflows/approval", f"/%09/localhost:{port}/", "//localhost:" + port):
        page.goto(site.url + "/login?next=" + next_path)
        page.get_by_label("API key").fill(site.acme)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(site.url + "/")
        assert page.url == site.url + "/"
        page.evaluate("sessionStorage.clear()")
    # Without the server's check, the script still refuses a target that leaves the origin.
    page.goto(site.url + "/login")
    page.evaluate(f"document.getElementById('login-form').dataset.next = '/\\\\localhost:{port}/workflows/approval'")
    page.get_by_label("API key").fill(site.acme)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(site.url + "/")
    page.evaluate("sessionStorage.clear()")
    # A same-origin target is followed.
    page.goto(site.url + "/login?next=/workflows/approval")
    page.get_by_label("API key").fill(site.acme)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(site.url + "/workflows/approval")
    context.close()


LIVE = """\
def run(event, step):
    step.do("before", lambda: 1)
    step.wait_for_event("go", event_type="go", timeout="1 hour")
    step.do("after", lambda: "appeared")
    step.wait_for_event("end", event_type="end", timeout="1 hour")
    return "done"
"""


def test_browser_a_step_appears_live_from_the_watch_stream(site: Site, browser: Any) -> None:
    """The instance page follows the API's watch stream: a new step's card is put in place without a page
    reload and without fetching whole fragments again (nothing is polled while the stream is up)."""
    from playwright.sync_api import expect

    tenant = site.service.authenticate(site.acme)
    site.service.deploy(tenant, "live", LIVE)
    site.service.create_instances(tenant, "live", [{"id": "live-1"}])
    site.wait_status("live", "live-1", "waiting")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    _sign_in(page, site, site.acme)
    page.goto(site.url + "/workflows/live/instances/live-1")
    expect(page.locator('li[data-step="go"]')).to_contain_text("waiting")
    page.wait_for_function("document.body.dataset.live === 'stream'")
    page.evaluate("window.notReloaded = true")
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))

    page.wait_for_timeout(2500)  # polling would ask for each region at least twice in this time
    assert [url for url in requests if "/ui/fragments/" in url] == []

    site.service.send_event(tenant, "live", "live-1", "go", None)  # not from the page: nothing reloads by itself
    after = page.locator('li[data-step="after"]')
    expect(after).to_contain_text("done")
    expect(page.locator('li[data-step="go"]')).to_contain_text("done")
    expect(page.locator("#timeline > li")).to_have_count(4)
    assert page.evaluate("window.notReloaded") is True
    fragments = [url.split("/instances/live-1/")[1] for url in requests if "/ui/fragments/" in url]
    assert any(f.startswith("rows?") for f in fragments), fragments
    assert not any(f.startswith("timeline") for f in fragments), f"the whole timeline was fetched: {fragments}"
    assert not any("/watch" in url for url in requests), "the stream stayed open"
    expect(page.locator("#instance-status")).to_contain_text("waiting")
    assert errors == []
    site.service.send_event(tenant, "live", "live-1", "end", None)
    expect(page.locator("#instance-status")).to_contain_text("complete")
    context.close()


FORKED = """
def run(event, step):
    first = step.do("a", lambda: 1)
    second = step.do("a", lambda: 2)
    got = step.wait_for_event("go", event_type="go", timeout="1 hour")
    return [first, second, got["payload"]]
"""


def test_browser_forks_from_a_step(site: Site, browser: Any) -> None:
    """A step card's "Fork from here" forks from that call (its name and its count among calls of that name)
    and lands on the fork, which has the steps before it as they were and runs the rest."""
    from playwright.sync_api import expect

    tenant = site.service.authenticate(site.acme)
    site.service.deploy(tenant, "forked", FORKED)
    site.service.create_instances(tenant, "forked", [{"id": "fork-me"}])
    site.wait_status("forked", "fork-me", "waiting")
    site.service.send_event(tenant, "forked", "fork-me", "go", 5)
    site.wait_status("forked", "fork-me", "complete")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    _sign_in(page, site, site.acme)
    page.goto(site.url + "/workflows/forked/instances/fork-me")
    expect(page.locator("#timeline > li")).to_have_count(2)  # "a ×2" and "go"
    group = page.locator("#timeline > li").first
    expect(group).to_contain_text("a ×2")
    group.get_by_role("button").first.click()
    second = group.locator("ol.members > li").nth(1)
    expect(second).to_have_attribute("data-first", "1")
    second.get_by_role("button").first.click()
    second.get_by_role("button", name="Fork from here").click()

    page.wait_for_url(re.compile(r"/workflows/forked/instances/(?!fork-me$)[A-Za-z0-9_-]+$"))
    fork_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#instance-status")).to_contain_text("waiting", timeout=20_000)
    expect(page.locator('li[data-step="go"]')).to_contain_text("waiting")
    original = site.service.journal(tenant, "forked", "fork-me")["steps"]
    fork = site.service.journal(tenant, "forked", fork_id)["steps"]
    assert fork[0] == original[0]  # the first call of a, copied
    assert fork[1]["name"] == "a" and fork[1]["updated_at"] > original[1]["updated_at"]  # the second, run again
    assert site.service.instance(tenant, "forked", "fork-me").status == "complete"
    page.screenshot(path=str(ARTIFACTS / "fork.png"), full_page=True)
    assert errors == []
    context.close()
