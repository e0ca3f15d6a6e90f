"""Fuel per CPU second, for the step budgets: `python -m bench.step_cpu` prints one JSON line per figure.

Not a test. Each figure is the marginal rate: the thread CPU of a workload run to FuelExhausted under
two fuel budgets, fuel difference / CPU difference (the fixed cost of an activation cancels out).
host/limits.py's FUEL_PER_SECOND and its comment come from these figures.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tenantflow.host import Attempt, Done, Failed, Limits, Plan, Run, Sandbox, StepCall, StepConfig, StepFailed

LOW_FUEL = 2 * 10**9
HIGH_FUEL = 10**10
REPEATS = 3

WORKLOADS = {
    "spin": "def run(e, s):\n    x = 0\n    while True:\n        x += 1\n",
    "json+sha256+sort": (
        "import json, hashlib\ndef run(e, s):\n    d = {'a': list(range(100))}\n    while True:\n"
        "        hashlib.sha256(json.dumps(d).encode()).hexdigest()\n        sorted(str(i) for i in range(50))\n"
    ),
}
# A step body of about 36 ms of CPU at FUEL_PER_SECOND (the tests' "80 steps x 36 ms").
STEP = "def run(e, s):\n    return s.do('w', lambda: sum(i * i for i in range(106_000)) % 7)\n"


class _Journal:
    def __init__(self) -> None:
        self.attempts: list[Attempt] = []

    def step_begin(self, call: StepCall, config: StepConfig) -> Plan:
        return Run(1)

    def step_complete(self, call: StepCall, config: StepConfig, attempt: Attempt) -> Plan:
        self.attempts.append(attempt)
        return Done(attempt.result or "null") if attempt.ok else StepFailed("E", "")

    def sleep_until(self, call: StepCall, wake_at_ms: int | None, duration_ms: int | None) -> None:
        raise AssertionError("no sleeps here")

    def wait_for_event(self, call: StepCall, event_type: str, timeout_ms: int | None) -> Any:
        raise AssertionError("no waits here")


def _cpu_to_exhaustion(sandbox: Sandbox, source: str, fuel: int) -> float:
    started = time.thread_time()
    outcome = sandbox.run(source, {"payload": None}, _Journal(), Limits(fuel=fuel, deadline_s=120))
    assert isinstance(outcome, Failed) and outcome.error.name == "FuelExhausted", outcome
    return time.thread_time() - started


def main() -> None:
    sandbox = Sandbox()
    try:
        for name, source in WORKLOADS.items():
            rates = []
            for _ in range(REPEATS):
                low = _cpu_to_exhaustion(sandbox, source, LOW_FUEL)
                high = _cpu_to_exhaustion(sandbox, source, HIGH_FUEL)
                rates.append((HIGH_FUEL - LOW_FUEL) / (high - low))
            print(json.dumps({"figure": f"fuel per CPU second, {name}", "min": min(rates), "max": max(rates)}))
        journal = _Journal()
        started = time.thread_time()
        sandbox.run(STEP, {"payload": None}, journal, Limits())
        cpu_s = time.thread_time() - started
        [attempt] = journal.attempts
        print(
            json.dumps(
                {
                    "figure": "step body sum(i * i for i in range(106_000))",
                    "fuel": attempt.fuel,
                    "duration_ms": round(attempt.duration_ms, 1),
                    "activation_cpu_ms": round(cpu_s * 1000, 1),
                    "fuel_per_activation_cpu_s": attempt.fuel / cpu_s,
                }
            )
        )
    finally:
        sandbox.close()


if __name__ == "__main__":
    main()
