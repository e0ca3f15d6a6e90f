"""The instance page: what it is doing now, the compact timeline, the event form's warning, copy buttons,
local times, dark mode and a 390 px screen. Unit tests for the view side, then Debian's Chromium against
the real app (as tests/http/test_dashboard.py runs it)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers_server import app_server
from instance_weight import CHROMIUM, long_instance, measure
from tenantflow.host import Sandbox
from tenantflow.runtime.http.api import create_app
from tenantflow.runtime.http.dashboard_views import build_rows, cap_rows, fmt_duration, now_line
from tenantflow.runtime.records import Instance
from tenantflow.runtime.service import Service
from waiting import wait_until

ARTIFACTS = Path(__file__).parent.parent / "artifacts"
T0 = 1_700_000_000.0

# -- formatting ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0.25, "250 µs"),
        (0.9996, "1.0 ms"),
        (12.34, "12.3 ms"),
        (999.9, "1.00 s"),
        (1500, "1.50 s"),
        (59_994, "59.99 s"),
        (59_996, "1 min"),
        (120_000, "2 min"),
        (125_000, "2 min 5 s"),
        (3_599_600, "1 h"),
        (7_199_999.6, "2 h"),  # was "1 h 59 min"
        (7_200_000, "2 h"),
        (7_260_000, "2 h 1 min"),
        (48 * 3_600_000, "2 d"),
        (3 * 86_400_000 + 4 * 3_600_000, "3 d 4 h"),
        (-1500, "−1.50 s"),
        (None, "—"),
        (float("nan"), "—"),
    ],
)
def test_durations_are_rounded_to_what_they_show(ms: float | None, text: str) -> None:
    assert fmt_duration(ms) == text


# -- what it is doing now -------------------------------------------------------------------------------------


def _instance(status: str, **fields: Any) -> Instance:
    return Instance("acme", "wf", "i1", 1, "h", status, {}, created_at=T0, updated_at=T0 + 5, **fields)  # type: ignore[arg-type]


def _entry(position: int, name: str, kind: str, state: str, **fields: Any) -> dict[str, Any]:
    return {"position": position, "name": name, "kind": kind, "state": state, "created_at": T0 + position, **fields}


def test_now_line_names_what_the_instance_waits_for() -> None:
    now = T0 + 10
    done = _entry(0, "load", "do", "done", attempts=1)
    sleep = now_line(
        _instance("waiting", wake_at=T0 + 86_400),
        [done, _entry(1, "nap", "sleep", "sleeping", wake_at=T0 + 86_400)],
        now,
    )
    assert (sleep.kind, sleep.step, sleep.until) == ("sleeping", "nap", T0 + 86_400)
    assert sleep.sentence() == "Sleeping in 'nap' until 2023-11-15 22:13:20 UTC"

    wait = _entry(1, "approval", "wait", "waiting", event_type="approved", wake_at=T0 + 3600)
    event = now_line(_instance("waiting", wake_at=T0 + 3600), [done, wait], now)
    assert (event.kind, event.event_type, event.until) == ("event", "approved", T0 + 3600)
    assert event.phrase == "Waiting for event 'approved' (step 'approval') until"
    forever = now_line(_instance("waiting"), [{**wait, "wake_at": None}], now)
    assert forever.phrase.endswith("with no timeout") and forever.until is None

    retry = _entry(1, "charge", "do", "retrying", attempts=2, wake_at=T0 + 60)
    later = now_line(_instance("waiting", wake_at=T0 + 60), [retry], now)
    assert (later.kind, later.attempt, later.until) == ("retry", 3, T0 + 60)
    assert later.sentence().startswith("Retry of 'charge' at ") and later.after == "(attempt 3)"
    running = now_line(_instance("running"), [{**retry, "wake_at": now - 1}], now)
    assert (running.kind, running.phrase, running.after) == ("retry_running", "Running step 'charge'", "(attempt 3)")
    # Once the step has journaled its retry limit (limit 5: six attempts at most), "n of m".
    limited = now_line(_instance("waiting", wake_at=T0 + 60), [{**retry, "attempt_limit": 6}], now)
    assert limited.after == "(attempt 3 of 6)"


def test_now_line_for_every_other_state() -> None:
    now = T0 + 10
    done = _entry(0, "load", "do", "done", attempts=1)
    cases = {
        "running": (_instance("running"), [done], "Running: the code after step 'load'"),
        "queued": (_instance("queued"), [], "Queued: waiting for a worker"),
        "paused": (_instance("paused"), [done], "Paused after step 'load'; resume to go on"),
        "waiting_for_pause": (_instance("waiting_for_pause"), [done], "Waiting for pause"),
        "rolling_back": (
            _instance("running", rollback="terminate"),
            [done, _entry(1, "undo", "rollback", "done")],
            "Rolling back (after terminate): step 'undo'",
        ),
        "complete": (_instance("complete"), [done], "Complete: finished"),
        "errored": (
            _instance("errored", error={"name": "ValueError", "message": "no"}),
            [done],
            "Errored: ValueError: no",
        ),
        "terminated": (_instance("terminated", rollback="terminate"), [done], "Terminated (rolled back) at"),
    }
    for kind, (instance, entries, start) in cases.items():
        line = now_line(instance, entries, now)
        assert line.kind == kind, (kind, line)
        assert line.phrase.startswith(start), (kind, line.phrase)
    # A wait that is over while the instance runs again is no wait: it is running.
    ended = _entry(1, "approval", "wait", "done", event_type="approved")
    assert now_line(_instance("running"), [done, ended], now).kind == "running"


# -- the compact timeline's rows ----------------------------------------------------------------------------------


def _do(position: int, name: str, start: float, seconds: float = 0.01, state: str = "done") -> dict[str, Any]:
    attempt = {"attempt": 1, "ok": state == "done", "duration_ms": seconds * 1000, "finished_at": start + seconds}
    return {**_entry(position, name, "do", state, attempts=1), "created_at": start, "attempt_log": [attempt]}


def test_rows_group_repeated_calls() -> None:
    steps = [_do(0, "load", T0)]
    steps += [_do(n, "think", T0 + n * 0.02) for n in range(1, 2001)]
    steps += [_do(2001, "think", T0 + 41, state="retrying")]
    steps += [{**_entry(2002, "nap", "sleep", "sleeping", wake_at=T0 + 86_400), "created_at": T0 + 42}]
    rows = build_rows(_instance("waiting"), steps, T0 + 50)
    assert [(r.name, r.count) for r in rows] == [("load", 1), ("think", 2001), ("nap", 1)]
    think = rows[1]
    assert (think.first, think.last) == (1, 2001)
    assert think.look == "retrying" and think.label == "1 retrying · 2,000 done"
    assert think.busy[0][0] == pytest.approx(T0 + 0.02) and len(think.busy) <= 24
    nap = rows[2]
    assert nap.busy == [] and nap.stop == T0 + 86_400 and nap.look == "sleeping"
    flat = build_rows(_instance("waiting"), steps, T0 + 50, group=False)
    assert len(flat) == 2003


def test_long_timelines_are_capped_with_a_gap() -> None:
    steps = [_do(n, f"step-{n % 2}", T0 + n) for n in range(1000)]  # alternating names: nothing to group
    rows = build_rows(_instance("complete"), steps, T0 + 2000)
    shown = cap_rows(rows, 300)
    assert len(shown) == 300
    gap = shown[100]
    assert not hasattr(gap, "count") and (gap.first, gap.last) == (100, 100 + 1000 - 300)  # type: ignore[union-attr]
    assert len(gap.busy) <= 24  # type: ignore[union-attr]
    assert cap_rows(rows[:10], 300) == rows[:10]


# -- in the browser ---------------------------------------------------------------------------------------------

SLEEPY = """\
def run(event, step):
    step.do("load " + "0123456789abcdef" * 6, lambda: event.payload)
    for n in range(3):
        step.do("think", lambda: n)
    step.sleep("nap", "1 day")
"""

EVENTY = """\
from tenantflow import StepError


def run(event, step):
    step.do("prepare", lambda: {"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" * 2})

    def flaky():
        raise ValueError("the upstream said no: " + "a very long line of an error message " * 12)

    try:
        step.do("call upstream", flaky, retries={"limit": 1, "delay": "1 second", "backoff": "constant"})
    except StepError:
        pass
    got = step.wait_for_event("approval", event_type="approved", timeout="1 hour")
    return got["payload"]
"""

SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@dataclass
class Site:
    url: str
    service: Service
    key: str

    def wait_status(self, workflow: str, instance_id: str, status: str, timeout: float = 30) -> None:
        tenant = self.service.authenticate(self.key)
        wait_until(
            lambda: self.service.instance(tenant, workflow, instance_id).status == status,
            timeout,
            f"{instance_id} to become {status}",
            every=0.05,
        )


@pytest.fixture(scope="module")
def site(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    db = tmp_path_factory.mktemp("instance-page") / "tf.db"
    service = Service.open(f"sqlite:///{db}", sandbox=sandbox, workers=2).start()
    _, key = service.create_tenant("acme")
    tenant = service.authenticate(key)
    service.deploy(tenant, "sleepy", SLEEPY)
    service.deploy(tenant, "eventy", EVENTY)
    try:
        with app_server(create_app(service)) as url:
            yield Site(url, service, key)
    finally:
        service.stop()
        service.store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        yield chromium
        chromium.close()


def _page(site: Site, browser: Any, path: str, **options: Any) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(**{"viewport": {"width": 1280, "height": 900}, **options})
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(site.url + "/login")
    page.evaluate("key => sessionStorage.setItem('tenantflow.apiKey', key)", site.key)
    page.goto(site.url + path)
    return context, page, errors


def _start(site: Site, workflow: str, instance_id: str, params: Any = None) -> None:
    tenant = site.service.authenticate(site.key)
    site.service.create_instances(tenant, workflow, [{"id": instance_id, "params": params}])
    site.wait_status(workflow, instance_id, "waiting")


def _start_eventy(site: Site, instance_id: str, params: Any = None) -> None:
    """An `eventy` instance, once it waits for its event: its first wait is the retry's second (1 s), which a page
    loaded then would have to see end within its expectation's time (not always so on a slow machine)."""
    _start(site, "eventy", instance_id, params)
    tenant = site.service.authenticate(site.key)
    wait_until(
        lambda: any(s["name"] == "approval" for s in site.service.journal(tenant, "eventy", instance_id)["steps"]),
        30,
        f"{instance_id} to reach its event wait",
        every=0.05,
    )
    site.wait_status("eventy", instance_id, "waiting")


def test_browser_sleeping_instance_now_line_and_grouped_timeline(site: Site, browser: Any) -> None:
    from playwright.sync_api import expect

    _start(site, "sleepy", "nap-1", {"sha256": SHA})
    context, page, errors = _page(site, browser, "/workflows/sleepy/instances/nap-1")
    now = page.locator("#now-line")
    expect(now).to_contain_text("Sleeping in 'nap' until")
    expect(now).to_contain_text(re.compile(r"\(in (24 h|23 h 59 min)\)"))
    # Shown in the viewer's zone, with UTC on hover.
    assert page.locator("#now-line time").get_attribute("title").startswith("UTC: ")  # type: ignore[union-attr]

    rows = page.locator("#timeline > li.row")
    expect(rows).to_have_count(3)
    think = rows.nth(1)
    expect(think).to_contain_text("think ×3")
    # The first step ran for milliseconds before a day-long sleep: on a linear axis its bar would be a
    # sliver (0.35 % of the width); the axis cuts the idle day short, so the steps keep most of it.
    page.wait_for_function("document.querySelector('#gantt-axis rect.break') !== null")
    first = rows.nth(0).locator("svg.gbar rect")
    nap = rows.nth(2).locator("svg.gbar rect")
    think_x = float(think.locator("svg.gbar rect").get_attribute("x").rstrip("%"))  # type: ignore[union-attr]
    nap_x = float(nap.get_attribute("x").rstrip("%"))  # type: ignore[union-attr]
    assert think_x > 5, "the steps before the sleep are squeezed into a sliver"
    assert nap_x < 97 and float(nap.get_attribute("width").rstrip("%")) > 3  # type: ignore[union-attr]
    assert float(first.get_attribute("width").rstrip("%")) >= 0.35  # type: ignore[union-attr]
    expect(page.locator("#gantt-axis .break-label")).to_contain_text(re.compile(r"\d+ h"))

    # Nothing is rendered per step until asked: the group opens to its members, a member to its detail.
    assert page.locator(".step-detail").count() == 0
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    think.get_by_role("button").first.click()
    members = think.locator("ol.members > li.row")
    expect(members).to_have_count(3)
    assert any("/rows?" in url and "flat=1" in url for url in requests), requests
    members.nth(1).get_by_role("button").first.click()
    detail = members.nth(1).locator(".step-detail")
    expect(detail).to_contain_text("Attempts (1)")
    expect(detail).to_contain_text("Result")
    expect(detail.locator("pre.json")).to_have_text("1")
    assert any("/step?position=2" in url for url in requests), requests
    page.screenshot(path=str(ARTIFACTS / "instance-sleeping.png"), full_page=True)

    # Copy buttons on the id and JSON blocks.
    expect(page.get_by_role("button", name="Copy instance id")).to_be_visible()
    expect(page.locator("#instance-params").locator("xpath=..").get_by_role("button", name="Copy JSON")).to_be_visible()
    assert errors == []
    context.close()


def test_browser_event_wait_prefills_and_warns(site: Site, browser: Any) -> None:
    from playwright.sync_api import expect

    _start_eventy(site, "ev-1")
    context, page, errors = _page(site, browser, "/workflows/eventy/instances/ev-1")
    expect(page.locator("#now-line")).to_contain_text("Waiting for event 'approved' (step 'approval') until")
    field = page.get_by_label("Event type")
    expect(field).to_have_value("approved")
    warning = page.locator("#event-type-warning")
    expect(warning).to_be_hidden()
    field.fill("aproved")
    expect(warning).to_be_visible()
    expect(warning).to_have_text(
        "The instance waits for 'approved'; an event of another type is buffered until a wait for it."
    )
    expect(page.locator("#event-curl")).to_contain_text('"type":"aproved"')
    field.fill("approved")
    expect(warning).to_be_hidden()

    # The failed step's error, at full width and not clipped, for each attempt.
    upstream = page.locator('#timeline > li.row[data-step="call upstream"]')
    expect(upstream).to_contain_text("failed")
    upstream.get_by_role("button").first.click()
    traces = upstream.locator(".attempt-error pre.trace")
    expect(traces).to_have_count(2)
    box = traces.first.evaluate("e => [e.scrollWidth, e.clientWidth, e.scrollHeight, e.clientHeight]")
    assert box[0] <= box[1] and box[2] <= box[3], f"the error is clipped: {box}"
    assert traces.first.evaluate("e => e.getBoundingClientRect().width") > 900

    page.get_by_label("Payload (JSON)").fill('{"by": "Grace"}')
    page.get_by_role("button", name="Send event").click()
    expect(page.locator("#action-status")).to_contain_text("(approved) delivered")
    expect(page.locator("#now-line")).to_contain_text("Complete", timeout=20_000)
    assert errors == []
    context.close()


def test_browser_narrow_screen_and_dark_mode(site: Site, browser: Any) -> None:
    from playwright.sync_api import expect

    _start_eventy(site, "a-rather-long-instance-id-0123456789abcdef-0123456789abcdef-0123", {"sha256": SHA})
    context, page, errors = _page(
        site,
        browser,
        "/workflows/eventy/instances/a-rather-long-instance-id-0123456789abcdef-0123456789abcdef-0123",
        viewport={"width": 390, "height": 844},
        color_scheme="dark",
    )
    expect(page.locator("#now-line")).to_contain_text("Waiting for event")
    page.locator('#timeline > li.row[data-step="prepare"]').get_by_role("button").first.click()
    expect(page.locator(".step-detail pre.json")).to_contain_text("9f86d081")
    page.locator('#timeline > li.row[data-step="call upstream"]').get_by_role("button").first.click()
    expect(page.locator(".attempt-error")).to_have_count(2)
    page.locator("details.curl > summary").click()
    wide = page.evaluate(
        """() => Array.from(document.querySelectorAll('body *'))
        .filter((e) => e.getBoundingClientRect().right > 391)
        .map((e) => e.tagName + '.' + e.className + '#' + e.id).slice(0, 8)"""
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, wide
    # Dark colours from prefers-color-scheme: the page's background and a card's are dark.
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 19, 24)", background
    page.screenshot(path=str(ARTIFACTS / "instance-narrow-dark.png"), full_page=True)
    page.emulate_media(color_scheme="light")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(246, 247, 249)"
    assert errors == []
    context.close()


def test_browser_a_long_instance_stays_light(site: Site, browser: Any) -> None:
    """10,000 steps and an event wait: the first load is under 300 KB in all, the timeline a few rows, the page
    a few hundred elements. (Before the compact timeline: 2.2 MB of timeline fragment and 70,865 elements, for
    1,000 steps.)"""
    long_instance(site.service, site.key, 10_000, "long-10000")
    total, timeline, nodes, height, _ = measure(browser, site.url, site.key, "/workflows/long/instances/long-10000")
    assert timeline < 20_000, timeline
    assert nodes < 600, nodes
    assert height < 3000, height
    assert total < 300_000, total
