"""CPU budgets: each step attempt has its own, the code outside step bodies another per segment; checkpoints."""

from __future__ import annotations

import json
import textwrap
import time
from typing import Any

import pytest
from memjournal import MemJournal
from tenantflow.host import Completed, Failed, Limits, Outcome, Plan, Sandbox, StepCall, StepConfig, Suspended
from tenantflow.host.limits import FUEL_PER_SECOND

# Orchestration fuel of ~0.2 s: small, so that budgets and checkpoints show in tests that take little time.
SMALL = Limits(fuel=2 * 10**9, memory_bytes=64 << 20, deadline_s=10)
# A step body of ~36 ms of CPU here (3.6e8 fuel): 80 of them are more than Limits().fuel.
BURN = "sum(i * i for i in range({n}))"


def run(sandbox: Sandbox, source: str, journal: MemJournal, limits: Limits = SMALL, payload: Any = None) -> Outcome:
    return sandbox.run(textwrap.dedent(source), {"payload": payload}, journal, limits)


def completed(outcome: Outcome) -> Any:
    assert isinstance(outcome, Completed), outcome
    return json.loads(outcome.output)


def until_done(sandbox: Sandbox, source: str, journal: MemJournal, limits: Limits) -> tuple[Any, list[Outcome]]:
    """Activations until one completes: the output and every outcome."""
    outcomes = [run(sandbox, source, journal, limits)]
    while isinstance(outcomes[-1], Suspended) and len(outcomes) < 50:
        assert outcomes[-1].reason == "continue", outcomes[-1]
        outcomes.append(run(sandbox, source, journal, limits))
    return completed(outcomes[-1]), outcomes


def test_each_step_attempt_has_its_own_budget(sandbox: Sandbox) -> None:
    # 6 steps of ~0.1 s of CPU each, with ~0.05 s of fuel for the code outside them, in one activation.
    source = f"""
    def run(event, step):
        return [step.do("burn", lambda: {BURN.format(n=300_000)}) for _ in range(6)]
    """
    journal = MemJournal()
    limits = Limits(fuel=5 * 10**8, memory_bytes=64 << 20, deadline_s=30)
    outcome = run(sandbox, source, journal, limits)
    assert len(completed(outcome)) == 6
    attempts = journal.attempts_of("burn")
    assert len(attempts) == 6 and all(a.ok for a in attempts)
    assert all(a.fuel > limits.fuel for a in attempts), [a.fuel for a in attempts]
    # The activation's stats count everything: the attempts' fuel and the orchestration's.
    assert outcome.stats.fuel > sum(a.fuel for a in attempts)


def test_a_step_over_its_cpu_budget_is_a_failed_attempt(sandbox: Sandbox) -> None:
    source = """
    def run(event, step):
        step.do("first", lambda: 1)

        @step.do("spin", cpu="50 milliseconds")
        def spin():
            while True:
                pass
    """
    journal = MemJournal()
    started = time.monotonic()
    outcome = run(sandbox, source, journal)
    assert time.monotonic() - started < 2
    assert isinstance(outcome, Suspended), outcome
    [attempt] = journal.attempts_of("spin")
    assert not attempt.ok and attempt.retryable
    assert attempt.error_name == "StepCPUExhausted"
    assert attempt.error_message == "step 'spin' used its CPU budget of 50 ms"
    assert attempt.fuel == 50 * FUEL_PER_SECOND // 1000


def test_host_time_in_a_step_body_is_charged_to_the_step(sandbox: Sandbox) -> None:
    # A real sleep in the body is charged to the attempt's budget (the host's WASI wait), not the orchestration's.
    source = """
    import _imp, importlib.machinery
    real_time = _imp.create_builtin(importlib.machinery.ModuleSpec("time", None, origin="built-in"))

    def run(event, step):
        step.do("nap", {"cpu": 100}, lambda: real_time.sleep(5))
    """
    journal = MemJournal()
    outcome = run(sandbox, source, journal)
    assert isinstance(outcome, Suspended), outcome
    assert [a.error_name for a in journal.attempts_of("nap")] == ["StepCPUExhausted"]


def test_the_tenant_cap_bounds_the_step_budget(sandbox: Sandbox) -> None:
    seen: list[StepConfig] = []

    class Recording(MemJournal):
        def step_begin(self, call: StepCall, config: StepConfig) -> Plan:
            seen.append(config)
            return super().step_begin(call, config)

    source = """
    def run(event, step):
        step.do("spin", {"cpu": "10 seconds"}, lambda: [None for _ in iter(int, 1)])
    """
    journal = Recording()
    limits = Limits(fuel=2 * 10**9, memory_bytes=64 << 20, deadline_s=10, max_step_cpu_ms=80)
    started = time.monotonic()
    assert isinstance(run(sandbox, source, journal, limits), Suspended)
    assert time.monotonic() - started < 2
    assert seen == [StepConfig(cpu_ms=10_000)]
    [attempt] = journal.attempts_of("spin")
    assert attempt.error_message == "step 'spin' used its CPU budget of 80 ms"


@pytest.mark.parametrize(
    ("cpu", "name"),
    [("'6 minutes'", "ValueError"), ("-1", "ValueError"), ("'lots'", "ValueError")],
)
def test_a_bad_cpu_option_is_a_tenant_error(sandbox: Sandbox, cpu: str, name: str) -> None:
    outcome = run(sandbox, f"def run(event, step):\n    step.do('s', lambda: 1, cpu={cpu})\n", MemJournal())
    assert isinstance(outcome, Failed) and outcome.error.name == name, outcome


def test_the_host_refuses_a_cpu_over_five_minutes(sandbox: Sandbox) -> None:
    source = """
    from wit_world.imports import host
    def run(event, step):
        host.step_begin("a", '{"cpu_ms": 300001}')
    """
    outcome = run(sandbox, source, MemJournal())
    assert isinstance(outcome, Failed) and outcome.error.name == "InvalidHostCall", outcome
    assert "cpu_ms is at most 300000" in outcome.error.message


def test_orchestration_past_half_its_fuel_checkpoints_at_a_step_boundary(sandbox: Sandbox) -> None:
    # ~25 ms of CPU outside steps per turn, 30 turns: ~0.75 s, well over the orchestration's ~0.2 s.
    source = f"""
    def run(event, step):
        total = 0
        for i in range(30):
            {BURN.format(n=75_000)}
            total += step.do("turn", lambda: i)
        return total
    """
    journal = MemJournal()
    output, outcomes = until_done(sandbox, source, journal, SMALL)
    assert output == sum(range(30))
    assert len(outcomes) >= 3, outcomes
    # Every turn ran once: a checkpoint comes after the step's result is journaled.
    assert len(journal.attempts_of("turn")) == 30


def test_the_wall_clock_checkpoints_at_a_step_boundary(sandbox: Sandbox) -> None:
    # 10 steps of ~0.1 s here (d, measured first: a slower machine takes 3x as long): more than the deadline
    # of 5 d in all, yet no step is cut short (the checkpoint comes at the first boundary past 2.5 d).
    body = BURN.format(n=300_000)
    warm_up = MemJournal()
    completed(run(sandbox, f"def run(event, step):\n    return step.do('work', lambda: {body})\n", warm_up))
    step_s = warm_up.attempts_of("work")[0].duration_ms / 1000
    source = f"""
    def run(event, step):
        return [step.do("work", lambda: {body}) for _ in range(10)]
    """
    journal = MemJournal()
    limits = Limits(fuel=10**12, memory_bytes=64 << 20, deadline_s=max(0.6, 5 * step_s))
    output, outcomes = until_done(sandbox, source, journal, limits)
    assert len(output) == 10
    assert len(outcomes) >= 2
    assert all(a.ok for a in journal.attempts_of("work"))


def test_an_endless_loop_outside_steps_is_an_error_naming_that(sandbox: Sandbox) -> None:
    source = """
    def run(event, step):
        step.do("first", lambda: 1)
        while True:
            pass
    """
    journal = MemJournal()
    outcome = run(sandbox, source, journal)
    assert isinstance(outcome, Failed) and outcome.error.name == "FuelExhausted", outcome
    assert outcome.error.message.startswith("the workflow ran 0.2 s of CPU outside any step without reaching one")
    assert len(journal.attempts_of("first")) == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("step.sleep('s', '366 days')", "a sleep is at most 365 days"),
        ("step.sleep('s', '1 year'); step.sleep('t', '400 days')", "a sleep is at most 365 days"),
        ("import time; step.sleep_until('s', time.time() * 1000)", "takes epoch seconds"),
    ],
)
def test_sleeps_over_a_year_and_epoch_milliseconds_are_refused(sandbox: Sandbox, call: str, message: str) -> None:
    journal = MemJournal()
    journal.wakes[0] = 0  # a first sleep, if any, is over
    outcome = run(sandbox, f"def run(event, step):\n    {call}\n", journal)
    assert isinstance(outcome, Failed) and outcome.error.name == "InvalidHostCall", outcome
    assert message in outcome.error.message


def test_a_step_whose_cpu_asks_for_more_than_the_deadline_gets_that_time(sandbox: Sandbox) -> None:
    # ~0.5 s of CPU or more in a body, under a 0.2 s activation deadline: `cpu` says how long it may take.
    source = f"""
    def run(event, step):
        return step.do("long", lambda: {BURN.format(n=2_000_000)} > 0, cpu="3 seconds")
    """
    journal = MemJournal()
    limits = Limits(fuel=10**12, memory_bytes=64 << 20, deadline_s=0.2)
    output, outcomes = until_done(sandbox, source, journal, limits)
    assert output is True
    assert [a.ok for a in journal.attempts_of("long")] == [True]
    assert journal.attempts_of("long")[0].duration_ms > 200
    # Without `cpu`, the activation's deadline bounds the body as before.
    outcome = run(sandbox, source.replace(', cpu="3 seconds"', ""), MemJournal(), limits)
    assert isinstance(outcome, Failed) and outcome.error.name == "DeadlineExceeded", outcome
