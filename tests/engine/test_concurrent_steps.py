"""Async workflows in the real sandbox and engine (SQLite): steps awaited together run side by side, with
their fetches in flight at once, and are matched in the journal by name and count, so a replay in which
they begin in another order answers them all and runs no body again."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tenantflow.host import Sandbox
from tenantflow.runtime.engine.clock import ManualClock, SystemClock
from tenantflow.runtime.records import InstanceKey, Quotas
from tenantflow.runtime.service import Service
from tenantflow.runtime.service.local import drive
from tenantflow.runtime.store.sqlite import SQLiteStore


class Tools:
    """A loopback HTTP server: GET /<ms>/<tag> answers {"tag"} after `ms` milliseconds; it counts the hits
    per tag and the most requests it held at once."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.active = 0
        self.most = 0
        self.lock = threading.Lock()
        tools = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                _, ms, tag = self.path.split("/", 2)
                with tools.lock:
                    tools.hits[tag] += 1
                    tools.active += 1
                    tools.most = max(tools.most, tools.active)
                time.sleep(int(ms) / 1000)
                with tools.lock:
                    tools.active -= 1
                body = json.dumps({"tag": tag}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def tools() -> Iterator[Tools]:
    server = Tools()
    yield server
    server.server.shutdown()
    server.server.server_close()


def run(
    sandbox: Sandbox, tmp_path: Path, source: str, params: Any = None, *, realtime: bool = False
) -> tuple[Service, InstanceKey, int]:
    """Deploy `source` for a tenant allowed to fetch from loopback and drive one instance to its end."""
    clock = SystemClock() if realtime else ManualClock()
    service = Service(SQLiteStore(str(tmp_path / "flow.db"), synchronous="normal"), sandbox, clock, workers=1)
    tenant, _ = service.create_tenant("acme", Quotas(egress=("127.0.0.1",)))
    service.deploy(tenant, "flow", source)
    instance = service.create_instances(tenant, "flow", [{"id": "i1", "params": params}])[0]
    if realtime:
        deadline = time.monotonic() + 60
        activations = 0
        while service.store.instance(instance.key).status not in ("complete", "errored", "terminated"):
            assert time.monotonic() < deadline, "the instance did not finish"
            activations += service.pool.run_one()
            time.sleep(0.01)
    else:
        activations, stuck = drive(service, clock, instance.key)  # type: ignore[arg-type]
        assert not stuck
    return service, instance.key, activations


def journal(service: Service, key: InstanceKey) -> list[dict[str, Any]]:
    tenant = service.store.tenant(key.tenant_id)
    assert tenant is not None
    steps: list[dict[str, Any]] = service.journal(tenant, key.workflow, key.instance_id)["steps"]
    return steps


FIVE_TOOLS = """
import asyncio
from tenantflow import fetch_async

async def run(event, step):
    async def tool(i):
        answer = await fetch_async(f"{event.payload['url']}/300/tool{i}")
        return answer.json()["tag"]

    found = await asyncio.gather(*(step.do(f"tool {i}", lambda i=i: tool(i)) for i in range(5)))
    await step.sleep("cool off", "1 hour")

    @step.do("summary")
    async def summary():
        return ",".join(found)

    return await summary()
"""


def test_five_tool_calls_run_at_once_and_replay_without_running_again(
    sandbox: Sandbox, tmp_path: Path, tools: Tools
) -> None:
    service, key, activations = run(sandbox, tmp_path, FIVE_TOOLS, {"url": tools.url})
    instance = service.store.instance(key)
    assert instance.status == "complete", instance.error
    assert instance.output == "tool0,tool1,tool2,tool3,tool4"
    assert tools.most == 5  # all five requests were in flight together
    assert activations == 2  # the sleep ended the first; the second replayed the tools from the journal
    assert tools.hits == Counter({f"tool{i}": 1 for i in range(5)})
    steps = journal(service, key)
    assert [(s["name"], s["state"], s["occurrence"]) for s in steps] == [
        *[(f"tool {i}", "done", 0) for i in range(5)],
        ("cool off", "sleeping", 0),
        ("summary", "done", 0),
    ]


OTHER_ORDER = """
import asyncio
from tenantflow import fetch_async

async def run(event, step):
    url = event.payload["url"]

    async def fetch(ms, tag):
        return (await fetch_async(f"{url}/{ms}/{tag}")).json()["tag"]

    async def quick():
        first = await step.do("a", lambda: fetch(10, "a"))
        second = await step.do("a", lambda: fetch(10, "a2"))  # the second call of the name "a"
        return [first, second]

    async def slow():
        return await step.do("b", lambda: fetch(400, "b"))

    both = await asyncio.gather(quick(), slow())
    await step.sleep("nap", "1 hour")
    return both
"""


def test_steps_that_begin_in_another_order_on_replay_are_answered_by_name_and_count(
    sandbox: Sandbox, tmp_path: Path, tools: Tools
) -> None:
    service, key, activations = run(sandbox, tmp_path, OTHER_ORDER, {"url": tools.url})
    instance = service.store.instance(key)
    assert instance.status == "complete", instance.error
    assert instance.output == [["a", "a2"], "b"]
    # First run: a, b begin, a ends, the second a begins (position 2). On replay a is answered at once, so
    # the second a begins before b: by position it would be a non-deterministic replay.
    steps = journal(service, key)
    assert [(s["position"], s["name"], s["occurrence"]) for s in steps] == [
        (0, "a", 0),
        (1, "b", 0),
        (2, "a", 1),
        (3, "nap", 0),
    ]
    assert activations == 2
    assert tools.hits == Counter({"a": 1, "a2": 1, "b": 1})


RETRY_BESIDE = """
import asyncio
from tenantflow import fetch_async

async def run(event, step):
    url = event.payload["url"]

    async def flaky(ctx):
        if ctx.attempt == 1:
            raise RuntimeError("the first attempt fails")
        return (await fetch_async(f"{url}/10/flaky")).json()["tag"]

    async def slow():
        return (await fetch_async(f"{url}/1500/slow")).json()["tag"]

    return await asyncio.gather(
        step.do("flaky", {"retries": {"limit": 2, "delay": "200 milliseconds", "backoff": "constant"}}, flaky),
        step.do("slow", slow),
    )
"""


def test_a_retry_back_off_is_waited_out_while_another_step_runs(sandbox: Sandbox, tmp_path: Path, tools: Tools) -> None:
    service, key, activations = run(sandbox, tmp_path, RETRY_BESIDE, {"url": tools.url}, realtime=True)
    instance = service.store.instance(key)
    assert instance.status == "complete", instance.error
    assert instance.output == ["flaky", "slow"]
    # The back-off did not end the activation: the slow step's request was made once.
    assert activations == 1
    assert tools.hits == Counter({"flaky": 1, "slow": 1})
    flaky = journal(service, key)[0]
    assert (flaky["name"], flaky["attempts"]) == ("flaky", 2)
    assert [a["ok"] for a in flaky["attempt_log"]] == [False, True]


ROLLBACK = """
import asyncio
from tenantflow import NonRetryableError

async def run(event, step):
    async def undo(output):
        print("undo", output)

    async def fails():
        await asyncio.sleep(0.01)
        raise NonRetryableError("card declined", "PaymentError")

    await asyncio.gather(
        step.do("reserve", lambda: "seat 4", rollback=undo),
        step.do("charge", fails),
    )
"""


def test_an_async_workflow_that_fails_runs_its_rollbacks(sandbox: Sandbox, tmp_path: Path) -> None:
    service, key, _ = run(sandbox, tmp_path, ROLLBACK)
    instance = service.store.instance(key)
    assert instance.status == "errored"
    assert instance.error is not None and instance.error["name"] == "PaymentError"
    assert "undo seat 4" in instance.log
    assert [(s["name"], s["kind"], s["state"]) for s in journal(service, key)] == [
        ("reserve", "do", "done"),
        ("charge", "do", "failed"),
        ("reserve", "rollback", "done"),
    ]


TIMEOUT = """
import asyncio
from tenantflow import fetch_async

async def run(event, step):
    async def stuck():
        return (await fetch_async(f"{event.payload['url']}/3000/stuck")).json()

    try:
        await step.do("stuck", {"timeout": "300 milliseconds", "retries": {"limit": 0}}, stuck)
    except Exception as error:
        return type(error).__name__ + ": " + str(error)
"""


def test_a_step_awaiting_a_fetch_past_its_timeout_fails_with_step_timeout(
    sandbox: Sandbox, tmp_path: Path, tools: Tools
) -> None:
    service, key, _ = run(sandbox, tmp_path, TIMEOUT, {"url": tools.url})
    instance = service.store.instance(key)
    assert instance.status == "complete", instance.error
    assert instance.output.startswith("StepError: StepTimeout: step 'stuck' ran longer than 300 ms")
    assert journal(service, key)[0]["attempt_log"][0]["error_name"] == "StepTimeout"


HOSTILE = """
import asyncio
from tenantflow import CapabilityError, fetch_async

async def run(event, step):
    url = event.payload["url"]

    async def many():
        calls = [asyncio.ensure_future(fetch_async(f"{url}/200/n{i}")) for i in range(17)]
        done = await asyncio.gather(*calls, return_exceptions=True)
        return sorted({type(d).__name__ for d in done})

    await step.do("many", many)
    await asyncio.get_running_loop().create_future()  # nothing will ever resolve it
"""


def test_calls_in_flight_are_bounded_and_a_wait_for_nothing_fails(
    sandbox: Sandbox, tmp_path: Path, tools: Tools
) -> None:
    service, key, _ = run(sandbox, tmp_path, HOSTILE, {"url": tools.url})
    instance = service.store.instance(key)
    assert instance.status == "errored"
    assert instance.error is not None
    assert "waits for something that can never happen" in instance.error["message"]
    steps = journal(service, key)
    assert json.loads(json.dumps(steps[0]["result"])) == ["CapabilityError", "Response"]
    assert tools.most <= 16


CRASH = """
import asyncio
from tenantflow import fetch_async

async def run(event, step):
    url = event.payload["url"]

    async def slow():
        return (await fetch_async(f"{url}/600/slow")).json()["tag"]

    async def burns(ctx):
        await fetch_async(f"{url}/10/burns")
        if ctx.attempt == 1:
            while True:  # past its CPU budget: the isolate is thrown away with "slow" in flight
                pass
        return "burnt"

    return await asyncio.gather(
        step.do("slow", slow),
        step.do("burns", {"cpu": "50 milliseconds", "retries": {"limit": 1, "delay": 0}}, burns),
    )
"""


def test_an_isolate_thrown_away_mid_flight_runs_only_the_unfinished_steps_again(
    sandbox: Sandbox, tmp_path: Path, tools: Tools
) -> None:
    service, key, activations = run(sandbox, tmp_path, CRASH, {"url": tools.url})
    instance = service.store.instance(key)
    assert instance.status == "complete", instance.error
    assert instance.output == ["slow", "burnt"]
    assert activations == 2
    # "slow" was in flight when the first isolate went: its attempt was not journaled, and it ran again.
    assert tools.hits == Counter({"slow": 2, "burns": 2})
    steps = {s["name"]: s for s in journal(service, key)}
    assert steps["slow"]["attempts"] == 1
    assert [a["error_name"] for a in steps["burns"]["attempt_log"]] == ["StepCPUExhausted", None]


RACE = """
import asyncio
from tenantflow import fetch_async

async def run(event, step):
    url = event.payload["url"]

    async def ask(model, ms):
        return (await fetch_async(f"{url}/{ms}/{model}")).json()["tag"]

    async def race():
        # Cloudflare's advice: a race of steps inside a step, so that the winner is journaled once.
        quick = asyncio.ensure_future(step.do("model a", lambda: ask("a", 20)))
        slow = asyncio.ensure_future(step.do("model b", {"timeout": "300 milliseconds"}, lambda: ask("b", 800)))
        done, pending = await asyncio.wait([quick, slow], return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return done.pop().result()

    winner = await step.do("race", race)
    # The loser was cancelled: its attempt is forgotten, so its timeout passing now fails nothing.
    later = await step.do("after", lambda: ask("c", 600))
    await step.sleep("nap", "1 hour")
    return [winner, later]
"""


def test_a_race_of_steps_in_a_step_journals_the_winner(sandbox: Sandbox, tmp_path: Path, tools: Tools) -> None:
    service, key, activations = run(sandbox, tmp_path, RACE, {"url": tools.url})
    instance = service.store.instance(key)
    assert instance.status == "complete", instance.error
    assert instance.output == ["a", "c"]
    assert activations == 2
    steps = journal(service, key)
    assert [(s["name"], s["state"], s["parent"]) for s in steps] == [
        ("race", "done", None),
        ("model a", "done", None),  # begun by tasks of the loop, not inside the race's body
        ("after", "done", None),
        ("nap", "sleeping", None),
    ]
    assert tools.hits["a"] == 1


def test_an_async_workflow_replays_from_its_export(sandbox: Sandbox, tmp_path: Path, tools: Tools) -> None:
    from tenantflow.runtime.cli.replaying import _entry
    from tenantflow.runtime.engine.replay import replay

    service, key, _ = run(sandbox, tmp_path, OTHER_ORDER, {"url": tools.url})
    instance = service.store.instance(key)
    entries = [_entry(step) for step in journal(service, key)]
    replayed = replay(
        sandbox,
        OTHER_ORDER,
        entries,
        params=instance.params,
        instance_id=instance.instance_id,
        created_at=instance.created_at,
        seed=instance.seed_bytes(),
        finished=True,
    )
    assert replayed.clean, replayed.divergence
    assert sorted(replayed.answered) == [0, 1, 2, 3]
    changed = OTHER_ORDER.replace('step.do("b"', 'step.do("c"')
    diverged = replay(
        sandbox,
        changed,
        entries,
        params=instance.params,
        instance_id=instance.instance_id,
        created_at=instance.created_at,
        seed=instance.seed_bytes(),
        finished=True,
    )
    assert diverged.divergence is not None and "do 'c'" in diverged.divergence.describe()
