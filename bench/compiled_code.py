"""An activation from source against one handed the version's compiled code: `python -m bench.compiled_code`.

Not a test. Runs examples/approval.py (four durable calls) in the real sandbox on an in-memory journal, the two
ways interleaved (so the machine's load hits both alike), and prints one JSON line per way: minimum and median
fuel (guest instructions plus the host CPU charged to them) and thread CPU per activation.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from tenantflow.host import Attempt, Done, Limits, Plan, Run, Sandbox, StepCall, StepConfig, StepFailed

ROOT = Path(__file__).resolve().parent.parent
RUNS = 40
EVENT = {"payload": {"amount": 75, "by": "li"}, "timestamp": 1.0, "instance_id": "bench"}


class _Journal:
    """Every step runs once and succeeds; the approval arrives at once."""

    def __init__(self) -> None:
        self.results: dict[int, str] = {}

    def step_begin(self, call: StepCall, config: StepConfig) -> Plan:
        return Done(self.results[call.position]) if call.position in self.results else Run(1)

    def step_complete(self, call: StepCall, config: StepConfig, attempt: Attempt) -> Plan:
        if attempt.ok and attempt.result is not None:
            self.results[call.position] = attempt.result
            return Done(attempt.result)
        return StepFailed(attempt.error_name or "Error", attempt.error_message or "")

    def sleep_until(self, call: StepCall, wake_at_ms: int | None, duration_ms: int | None) -> None:
        return None

    def wait_for_event(self, call: StepCall, event_type: str, timeout_ms: int | None) -> Any:
        return {"type": event_type, "payload": {"by": "ana"}, "timestamp": 2.0}

    def moment(self, call: StepCall) -> float | None:
        return None


def main() -> None:
    sandbox = Sandbox()
    source = (ROOT / "examples" / "approval.py").read_text()
    code = sandbox.compile(source)
    assert isinstance(code, bytes), code
    fuel: dict[str, list[int]] = {"from source": [], "compiled": []}
    cpu: dict[str, list[float]] = {"from source": [], "compiled": []}
    for _ in range(RUNS):
        for way, given in (("from source", None), ("compiled", code)):
            started = time.thread_time()
            outcome = sandbox.run(source, EVENT, _Journal(), Limits(), code=given)
            cpu[way].append((time.thread_time() - started) * 1000)
            fuel[way].append(outcome.stats.fuel)
    for way in fuel:
        figure = {
            "figure": f"approval activation, {way}",
            "fuel_min": min(fuel[way]),
            "fuel_median": statistics.median(fuel[way]),
            "cpu_ms_min": round(min(cpu[way]), 2),
            "cpu_ms_median": round(statistics.median(cpu[way]), 2),
        }
        print(json.dumps(figure))


if __name__ == "__main__":
    main()
