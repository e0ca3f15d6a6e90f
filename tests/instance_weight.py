"""How heavy the dashboard's instance page is for a long instance: bytes fetched and DOM nodes.

    .venv/bin/python tests/instance_weight.py [--steps 2000]

Starts a service on a temporary SQLite file (the real app under uvicorn on 127.0.0.1), runs an instance that
journals STEPS `step.do("think")` calls and then waits for an event, opens its page in Debian's Chromium
(headless, signed in with the tenant's key), waits for the timeline, and prints one JSON line: the bytes of
every response the page loaded (the watch stream aside), the timeline fragment's bytes, the DOM's element
count and the page's height. tests/http/test_web_instance.py uses `measure` to hold the page to a budget.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from helpers_server import app_server
from tenantflow.host import Sandbox
from tenantflow.runtime.http.api import create_app
from tenantflow.runtime.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

LONG = """\
def run(event, step):
    for n in range(event.payload["steps"]):
        step.do("think", lambda: n)
    return step.wait_for_event("approval", event_type="approved", timeout="1 day")
"""


@dataclass
class Weight:
    steps: int
    total_bytes: int
    timeline_bytes: int
    dom_nodes: int
    page_height: int
    responses: int


def long_instance(service: Service, key: str, steps: int, instance_id: str = "long-1") -> None:
    """Deploy the LONG workflow and run one instance of it to its event wait (STEPS steps before it)."""
    tenant = service.authenticate(key)
    service.deploy(tenant, "long", LONG)
    service.create_instances(tenant, "long", [{"id": instance_id, "params": {"steps": steps}}])
    deadline = time.monotonic() + 120
    while service.instance(tenant, "long", instance_id).status != "waiting":
        assert time.monotonic() < deadline, "the long instance never reached its wait"
        time.sleep(0.1)


def measure(browser: Any, url: str, key: str, path: str) -> tuple[int, int, int, int, int]:
    """(all bytes, timeline fragment bytes, DOM elements, page height, responses) of the page at `path`."""
    from playwright.sync_api import Error as PlaywrightError

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.goto(url + "/login")
    page.evaluate("key => sessionStorage.setItem('tenantflow.apiKey', key)", key)
    responses: list[Any] = []
    page.on("response", lambda response: responses.append(response))
    page.goto(url + path)
    page.wait_for_selector("#timeline-region[aria-busy=false]")
    page.wait_for_selector("#activity-region[aria-busy=false]")
    page.wait_for_timeout(500)
    total = timeline = 0
    kept = [r for r in responses if "/watch" not in r.url and not 300 <= r.status < 400]
    for response in kept:
        try:
            size = len(response.body())
        except PlaywrightError:  # a late answer to the sign-in page (navigated away from)
            continue
        total += size
        if "/timeline" in response.url:
            timeline = max(timeline, size)
    nodes = int(page.evaluate("document.getElementsByTagName('*').length"))
    height = int(page.evaluate("document.documentElement.scrollHeight"))
    context.close()
    return total, timeline, nodes, height, len(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        sandbox = Sandbox()
        service = Service.open(f"sqlite:///{Path(folder) / 'tf.db'}", sandbox=sandbox, workers=2).start()
        try:
            _, key = service.create_tenant("acme")
            long_instance(service, key, args.steps)
            with app_server(create_app(service)) as url, sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                total, timeline, nodes, height, count = measure(browser, url, key, "/workflows/long/instances/long-1")
                browser.close()
        finally:
            service.stop()
            service.store.close()
            sandbox.close()
    print(json.dumps(asdict(Weight(args.steps, total, timeline, nodes, height, count))))


if __name__ == "__main__":
    main()
