"""Tool calls one after another against the same calls side by side: `python -m bench.concurrent_steps`.

Not a test. A loopback HTTP server answers each request after `--latency-ms`; a synchronous workflow makes
`--tools` steps, each a `fetch`, one after another, and an async one makes the same steps awaited together
with `fetch_async`. Both run in the real sandbox on an in-memory journal, interleaved (the machine's load
hits both alike); one JSON line per way: wall time per activation (min, median), fuel, and the most
requests the server held at once. A third line is the async form's overhead with no I/O: `--steps`
sequential `step.do` calls, sync against async, fuel per step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tenantflow.host import Attempt, Done, Grants, Plan, Run, Sandbox, StepCall, StepConfig, StepFailed

SEQUENTIAL = """
from tenantflow import fetch

def run(event, step):
    url = event.payload["url"]
    return [step.do(f"tool {i}", lambda i=i: fetch(f"{url}/{i}").status) for i in range(event.payload["n"])]
"""

SIDE_BY_SIDE = """
import asyncio
from tenantflow import fetch_async

async def run(event, step):
    url = event.payload["url"]

    async def tool(i):
        return (await fetch_async(f"{url}/{i}")).status

    return await asyncio.gather(*(step.do(f"tool {i}", lambda i=i: tool(i)) for i in range(event.payload["n"])))
"""

STEPS_SYNC = """
def run(event, step):
    return [step.do(f"s{i}", lambda i=i: i) for i in range(event.payload["n"])]
"""

STEPS_ASYNC = """
async def run(event, step):
    return [await step.do(f"s{i}", lambda i=i: i) for i in range(event.payload["n"])]
"""


class _Journal:
    """Every step runs once and succeeds, keyed as the sandbox keys them."""

    def __init__(self) -> None:
        self.results: dict[tuple[str, int], str] = {}

    def step_begin(self, call: StepCall, config: StepConfig) -> Plan:
        found = self.results.get((call.name, call.occurrence))
        return Done(found) if found is not None else Run(1)

    def step_complete(self, call: StepCall, config: StepConfig, attempt: Attempt) -> Plan:
        if attempt.ok and attempt.result is not None:
            self.results[(call.name, call.occurrence)] = attempt.result
            return Done(attempt.result)
        return StepFailed(attempt.error_name or "Error", attempt.error_message or "")

    def sleep_until(self, call: StepCall, wake_at_ms: int | None, duration_ms: int | None) -> None:
        return None

    def wait_for_event(self, call: StepCall, event_type: str, timeout_ms: int | None) -> Any:
        raise NotImplementedError

    def moment(self, call: StepCall) -> float | None:
        return None


class _Server:
    def __init__(self, latency_s: float) -> None:
        self.active = self.most = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server.lock:
                    server.active += 1
                    server.most = max(server.most, server.active)
                time.sleep(latency_s)
                with server.lock:
                    server.active -= 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()


def _summary(way: str, walls: list[float], fuels: list[int], **extra: Any) -> str:
    return json.dumps(
        {
            "way": way,
            "wall_ms_min": round(min(walls), 1),
            "wall_ms_median": round(statistics.median(walls), 1),
            "fuel_median": int(statistics.median(fuels)),
            **extra,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", type=int, default=5)
    parser.add_argument("--latency-ms", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    sandbox = Sandbox()
    server = _Server(args.latency_ms / 1000)
    grants = Grants(egress=("127.0.0.1",))
    event = {"payload": {"url": server.url, "n": args.tools}, "timestamp": 1.0, "instance_id": "bench"}
    walls: dict[str, list[float]] = {"sequential": [], "side by side": []}
    fuels: dict[str, list[int]] = {"sequential": [], "side by side": []}
    most: dict[str, int] = {}
    for _ in range(args.rounds):
        for way, source in (("sequential", SEQUENTIAL), ("side by side", SIDE_BY_SIDE)):
            server.most = 0
            started = time.perf_counter()
            outcome = sandbox.run(source, event, _Journal(), grants=grants)
            walls[way].append((time.perf_counter() - started) * 1000)
            fuels[way].append(outcome.stats.fuel)
            most[way] = server.most
            assert type(outcome).__name__ == "Completed", outcome
    for way in walls:
        print(_summary(way, walls[way], fuels[way], tools=args.tools, latency_ms=args.latency_ms, most=most[way]))
    per_step: dict[str, list[float]] = {"sync": [], "async": []}
    steps_event = {"payload": {"n": args.steps}, "timestamp": 1.0, "instance_id": "bench"}
    for _ in range(args.rounds):
        for way, source in (("sync", STEPS_SYNC), ("async", STEPS_ASYNC)):
            outcome = sandbox.run(source, steps_event, _Journal())
            per_step[way].append(outcome.stats.fuel / args.steps)
    sync, side = min(per_step["sync"]), min(per_step["async"])
    print(
        json.dumps({"fuel_per_step_sync": int(sync), "fuel_per_step_async": int(side), "ratio": round(side / sync, 3)})
    )
    server.http.shutdown()
    sandbox.close()


if __name__ == "__main__":
    main()
