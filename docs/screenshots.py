"""The README's screenshots of the dashboard, made from a real server.

    .venv/bin/python docs/screenshots.py [--out docs] [--keep]

Needs `make install guest chromium` (Playwright from the test extra, the built guest, Debian's Chromium). It
starts `tenantflow serve` on 127.0.0.1 (a free port) with a SQLite file in a temporary directory, creates the
tenant "acme", deploys examples/agent_loop.py, order.py, approval.py and agent_tools.py (and "research", a
small agent defined below: none of the examples calls one step many times in a row, which the timeline
groups), starts a few dozen instances and lets them settle (complete, errored, waiting for an event or a
timer, retrying, paused, terminated), then opens the dashboard in headless Chromium, signed in with the
tenant's key as the browser tests do, and writes:

    instances.png      the Instances page: status tabs with counts, the filters, a page selected (bulk bar)
    instance.png       an instance waiting for an event: the Now line, the timeline (think ×40), the event form
    instance-dark.png  the same page in dark mode (prefers-color-scheme: dark)
    instance-390.png   the same page on a 390 px wide screen
    step-detail.png    a step's detail opened on the timeline: its attempts, a failed one's traceback
    usage.png          the Usage page: the daily chart and the table by workflow

It takes under a minute. Nothing is left behind but the PNGs (--keep keeps the temporary directory).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from tenantflow.client import Client

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
WIDE = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
MAX_PNG_BYTES = 250_000

RESEARCH = '''\
"""A research agent: plan, think in a loop, search (a flaky tool), draft, then wait for a reviewer."""


def run(event, step):
    params = event.payload or {}
    topic = params.get("topic", "durable execution")
    step.do("plan", lambda: ["read", "take notes", "search", "draft"])
    notes = [step.do("think", lambda n=n: f"note {n} on {topic}") for n in range(params.get("turns", 40))]

    def search(ctx):
        if ctx.attempt == 1:
            raise TimeoutError("the search API did not answer within 5 s")
        return {"hits": 12, "attempt": ctx.attempt}

    hits = step.do("search", search, retries={"limit": 3, "delay": "1 second", "backoff": "constant"})
    draft = step.do("draft", lambda: {"topic": topic, "notes": len(notes), "sources": hits["hits"]})
    step.sleep("cool down", "2 seconds")
    print(f"{len(notes)} notes, {hits['hits']} sources: review asked")
    review = step.wait_for_event("review", event_type="approved", timeout="1 day")
    return step.do("publish", lambda: {**draft, "approved_by": (review["payload"] or {}).get("by")})
'''


# -- the server --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tenantflow(*args: str) -> str:
    """Run the CLI (this interpreter's, so the virtualenv's) and return its standard output."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_")}
    done = subprocess.run(
        [sys.executable, "-m", "tenantflow.runtime.cli", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=ROOT,
        timeout=120,
    )
    if done.returncode != 0:
        sys.exit(f"tenantflow {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout


@contextmanager
def serving(db: str, log_path: Path) -> Iterator[str]:
    """`tenantflow serve` on 127.0.0.1 and a free port, until the block ends (SIGTERM)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_")}
    with open(log_path, "w") as log:
        command = [sys.executable, "-m", "tenantflow.runtime.cli", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(port), "--db", db, "--workers", "4"]
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environ, cwd=ROOT)
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    sys.exit(f"tenantflow serve exited {proc.returncode}:\n{log_path.read_text()}")
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    sys.exit(f"tenantflow serve did not come up:\n{log_path.read_text()}")
                time.sleep(0.1)
            yield url
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


# -- the instances -----------------------------------------------------------------------------------------------


def populate(client: Client) -> None:
    """Deploy the workflows and bring a few dozen instances to where the pictures want them."""
    for name in ("agent_loop", "order", "approval", "agent_tools"):
        client.deploy(name, (EXAMPLES / f"{name}.py").read_text())
    client.deploy("research", RESEARCH)

    tea = [{"sku": "tea", "qty": 2, "price": 4.5}]
    cups = [{"sku": "tea", "qty": 1, "price": 4.5}, {"sku": "cup", "qty": 2, "price": 7.25}]
    starts: list[tuple[str, str, Any, set[str]]] = []

    def start(workflow: str, instance_id: str, params: Any, *statuses: str) -> None:
        starts.append((workflow, instance_id, params, set(statuses)))

    # Orders: shipped after a short courier wait (the gateway declining 0–3 times first), waiting for the
    # courier, cancelled (a stolen card), errored (params the workflow cannot read) and retrying (a price
    # that is text: "price order" fails and is retried after 10 s, 20 s, ...).
    for n in range(12):
        params = {"order": f"A-{1001 + n}", "items": cups if n % 3 else tea, "declines": n % 4}
        start("order", f"order-{1001 + n}", {**params, "courier_after": "1 second"}, "complete")
    for n in range(12, 20):
        start("order", f"order-{1001 + n}", {"order": f"A-{1001 + n}", "items": tea, "declines": 1}, "waiting")
    for n in range(20, 22):
        start("order", f"order-{1001 + n}", {"order": f"A-{1001 + n}", "card": "stolen"}, "complete")
    for n in range(22, 24):
        start("order", f"order-{1001 + n}", {"order": f"A-{1001 + n}", "declines": "a few"}, "errored")
    bad_price = [{"sku": "tea", "qty": 2, "price": "4.50"}]
    start("order", "order-1025", {"order": "A-1025", "items": bad_price, "declines": 0}, "waiting")

    # Approvals: waiting for "approved", approved, or timed out and escalated.
    for n in range(10):
        start("approval", f"expense-{301 + n}", {"amount": 40 + 35 * n, "by": ["li", "ana", "sam"][n % 3]}, "waiting")
    for n in range(10, 12):
        start("approval", f"expense-{301 + n}", {"amount": 900, "by": "li", "timeout": "1 second"}, "complete")

    # Agents: a binary search of ~20 turns, five tools at once, and the research agent waiting for review.
    for n, secret in enumerate([737, 421_337, 99_001, 5]):
        start("agent_loop", f"guess-{n + 1}", {"secret": secret}, "complete")
    for n, question in enumerate(["weather in Lisbon?", "news about tea?", "a table for two tonight?"]):
        start("agent_tools", f"turn-{n + 1}", {"question": question, "latency_ms": 200}, "complete")
    start("research", "research-7", {"topic": "durable execution", "turns": 40}, "waiting")
    start("research", "research-8", {"topic": "sandboxing CPython", "turns": 12}, "waiting")

    # Started in a shuffled order (the same each time), so the newest page of the list mixes them.
    random.Random(16).shuffle(starts)
    for workflow, instance_id, params, _ in starts:
        client.start(workflow, instance_id, params)
    for workflow, instance_id, _, statuses in starts:
        got = client.wait(workflow, instance_id, statuses=statuses, timeout=90)
        if got.status not in statuses:
            sys.exit(f"{workflow}/{instance_id} is {got.status}, not {' or '.join(sorted(statuses))}")

    # Some answers and some operator work: approvals approved, one paused, two orders terminated.
    for n in range(3):
        client.send_event("approval", f"expense-{308 + n}", "approved", {"by": "grace"})
        client.wait("approval", f"expense-{308 + n}", timeout=30)
    client.control("approval", "expense-307", "pause")
    client.wait("approval", "expense-307", statuses={"paused"}, timeout=30)
    for instance_id in ("order-1013", "order-1014"):
        client.terminate("order", instance_id)
    client.send_event("research", "research-8", "approved", {"by": "grace"})
    client.wait("research", "research-8", timeout=30)


# -- the pictures ------------------------------------------------------------------------------------------------


class Shots:
    def __init__(self, browser: Any, url: str, key: str, out: Path) -> None:
        self.browser, self.url, self.key, self.out = browser, url, key, out
        self.written: list[Path] = []

    @contextmanager
    def page(self, viewport: dict[str, int] = WIDE, color_scheme: str = "light") -> Iterator[Any]:
        """A tab signed in through the sign-in form (the key stays in the tab's session storage)."""
        context = self.browser.new_context(viewport=viewport, color_scheme=color_scheme)
        context.set_default_timeout(20_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(self.url + "/")
        page.wait_for_url("**/login**")
        page.get_by_label("API key").fill(self.key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(self.url + "/")
        page.locator("#who-name").filter(has_text="acme").wait_for()
        try:
            yield page
        finally:
            context.close()
        if errors:
            sys.exit(f"the page reported errors: {errors}")

    def save(self, page: Any, name: str, *, full_page: bool = False, element: Any = None) -> None:
        assert "/login" not in page.url, f"{name}: still on the sign-in page"
        page.wait_for_timeout(400)  # let the last fragment settle and the caret stop blinking in a picture
        path = self.out / name
        if element is not None:
            element.screenshot(path=str(path), animations="disabled", caret="hide")
        else:
            page.screenshot(path=str(path), full_page=full_page, animations="disabled", caret="hide")
        size = path.stat().st_size
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {size:,} bytes")
        if size > MAX_PNG_BYTES:
            print(f"  warning: {name} is over {MAX_PNG_BYTES:,} bytes", file=sys.stderr)
        self.written.append(path)

    def instances(self) -> None:
        with self.page() as page:
            page.goto(self.url + "/instances")
            rows = page.locator("#instances-region tbody tr")
            rows.first.wait_for()
            page.locator('a[data-tab="waiting"]').wait_for()
            page.get_by_label("Select every instance on this page").check()
            page.locator("#select-matching").wait_for()
            self.save(page, "instances.png")

    def _instance(self, page: Any, workflow: str, instance_id: str) -> None:
        page.goto(f"{self.url}/workflows/{workflow}/instances/{instance_id}")
        page.locator("#now-line").filter(has_text="Waiting for event").wait_for()
        page.wait_for_selector("#timeline-region[aria-busy=false]")
        page.wait_for_selector("#activity-region[aria-busy=false]")
        page.locator("#timeline > li.row.group").first.wait_for()
        page.wait_for_selector("#gantt-axis rect.break")

    def instance(self) -> None:
        with self.page() as page:
            self._instance(page, "research", "research-7")
            page.get_by_label("Payload (JSON)").fill('{"by": "grace"}')
            page.evaluate("document.activeElement.blur()")
            self.save(page, "instance.png", full_page=True)
        with self.page(color_scheme="dark") as page:
            self._instance(page, "research", "research-7")
            self.save(page, "instance-dark.png", full_page=True)
        with self.page(viewport=PHONE) as page:
            self._instance(page, "research", "research-7")
            self.save(page, "instance-390.png", full_page=True)

    def step_detail(self) -> None:
        with self.page() as page:
            page.goto(f"{self.url}/workflows/order/instances/order-1003")
            page.wait_for_selector("#timeline-region[aria-busy=false]")
            row = page.locator('#timeline > li.row[data-step="charge card"]')
            row.get_by_role("button").first.click()
            row.locator(".attempt-error pre.trace").first.wait_for()
            row.scroll_into_view_if_needed()
            self.save(page, "step-detail.png", element=page.locator("#timeline-region"))

    def usage(self) -> None:
        with self.page() as page:
            page.get_by_role("link", name="Usage").click()
            page.wait_for_url(self.url + "/usage")
            page.locator("#usage-chart g.bar").first.wait_for()
            page.locator("#usage-table tbody tr").first.wait_for()
            self.save(page, "usage.png", full_page=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="Where the PNGs go (default: docs/).")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary directory (database, server log).")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is missing: make chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="tenantflow-shots-"))
    try:
        db = f"sqlite:///{folder / 'tf.db'}"
        key = tenantflow("tenants", "create", "acme", "--key-only", "--db", db).strip()
        with serving(db, folder / "serve.log") as url, Client(url, key) as client:
            print(f"serving on {url}; starting instances")
            populate(client)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                shots = Shots(browser, url, key, args.out)
                shots.instances()
                shots.instance()
                shots.step_detail()
                shots.usage()
                browser.close()
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
