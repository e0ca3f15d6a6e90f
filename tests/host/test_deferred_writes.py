"""A journal that answers a step's completion before committing it (`tenantflow.host.Deferring`): the host commits
the pending writes (`flush`) before the workflow's next call with an effect outside its isolate, never later, and
leaves writes still pending at the end to the caller of `Sandbox.run` (the runtime commits them with the end)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memjournal import MemJournal
from tenantflow.host import Attempt, Completed, Deferring, Plan, Sandbox, StepCall, StepConfig, Suspend, Suspended


@dataclass
class DeferringJournal(MemJournal):
    """MemJournal whose successful steps stay pending until `flush`; `order` is what the host asked, in turn."""

    unwritten: list[int] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    refuse: Suspend | None = None

    @property
    def pending(self) -> bool:
        return bool(self.unwritten)

    def flush(self) -> None:
        positions, self.unwritten = self.unwritten, []
        self.order += [f"flush {p}" for p in positions]
        if positions and self.refuse is not None:
            raise self.refuse

    def step_begin(self, call: StepCall, config: StepConfig) -> Plan:
        self.order.append(f"begin {call.name}")
        return super().step_begin(call, config)

    def step_complete(self, call: StepCall, config: StepConfig, attempt: Attempt) -> Plan:
        plan = super().step_complete(call, config, attempt)
        if attempt.ok:
            self.unwritten.append(call.position)
        self.order.append(f"complete {call.name}")
        return plan

    def sleep_until(self, call: StepCall, wake_at_ms: int | None, duration_ms: int | None) -> None:
        self.order.append(f"sleep {call.name}")
        self.flush()  # as a journal would commit it with the sleep's own write
        super().sleep_until(call, wake_at_ms, duration_ms)


def run(sandbox: Sandbox, source: str, journal: DeferringJournal) -> Any:
    return sandbox.run(source, {"payload": None}, journal)


def test_it_is_a_deferring_journal() -> None:
    assert isinstance(DeferringJournal(), Deferring)


def test_steps_between_effects_are_left_pending_to_the_caller(sandbox: Sandbox) -> None:
    journal = DeferringJournal()
    source = (
        "def run(event, step):\n"
        "    a = step.do('a', lambda: 1)\n"
        "    print('between', a)\n"
        "    b = step.do('b', lambda: a + 1)\n"
        "    return [a, b]\n"
    )
    outcome = run(sandbox, source, journal)
    assert isinstance(outcome, Completed) and outcome.output == "[1, 2]"
    # Neither the print (the log has no effect outside) nor the next step waits for the write.
    assert journal.order == ["begin a", "complete a", "begin b", "complete b"]
    assert journal.pending and journal.unwritten == [0, 1]
    assert "between 1" in outcome.stats.log


# A capability call refused (no egress granted): an effect outside the isolate all the same, flushed before.
FETCH_BETWEEN = (
    "from tenantflow import CapabilityError, fetch\n"
    "def run(event, step):\n"
    "    step.do('a', lambda: 1)\n"
    "    step.do('b', lambda: 2)\n"
    "    try:\n"
    "        fetch('http://127.0.0.1:9/')\n"
    "    except CapabilityError:\n"
    "        pass\n"
    "    return step.do('c', lambda: 3)\n"
)


def test_a_call_with_an_effect_waits_for_the_pending_writes(sandbox: Sandbox) -> None:
    journal = DeferringJournal()
    outcome = run(sandbox, FETCH_BETWEEN, journal)
    assert isinstance(outcome, Completed) and outcome.output == "3"
    assert journal.order == [
        "begin a",
        "complete a",
        "begin b",
        "complete b",
        "flush 0",
        "flush 1",
        "begin c",
        "complete c",
    ]
    assert journal.unwritten == [2]


def test_a_sleep_after_a_step_is_left_to_commit_it(sandbox: Sandbox) -> None:
    """The host does not flush before the journal's own waits: they commit the step with theirs."""
    journal = DeferringJournal()
    source = "def run(event, step):\n    step.do('a', lambda: 1)\n    step.sleep('nap', 60_000)\n    return 1\n"
    outcome = run(sandbox, source, journal)
    assert isinstance(outcome, Suspended)
    assert journal.order == ["begin a", "complete a", "sleep nap", "flush 0"]


def test_a_step_with_an_effect_in_its_body_is_written_as_it_completes(sandbox: Sandbox) -> None:
    """A crash after it must not run its fetch again: its write is not left pending behind the effect."""
    journal = DeferringJournal()
    source = (
        "from tenantflow import CapabilityError, fetch\n"
        "def call():\n"
        "    try:\n"
        "        fetch('http://127.0.0.1:9/')\n"
        "    except CapabilityError:\n"
        "        return 'refused'\n"
        "def run(event, step):\n"
        "    step.do('a', lambda: 1)\n"
        "    step.do('b', call)\n"
        "    return step.do('c', lambda: 3)\n"
    )
    outcome = run(sandbox, source, journal)
    assert isinstance(outcome, Completed) and outcome.output == "3"
    assert journal.order == [
        "begin a",
        "complete a",
        "begin b",
        "flush 0",
        "complete b",
        "flush 1",
        "begin c",
        "complete c",
    ]
    assert journal.unwritten == [2]


def test_what_the_write_raises_ends_the_activation_before_the_effect(sandbox: Sandbox) -> None:
    journal = DeferringJournal(refuse=Suspend("paused"))
    outcome = run(sandbox, FETCH_BETWEEN, journal)
    assert isinstance(outcome, Suspended) and outcome.reason == "paused"
    assert journal.order == ["begin a", "complete a", "begin b", "complete b", "flush 0", "flush 1"]
    assert [call.name for call, _ in journal.attempts] == ["a", "b"]  # c's body never ran


def test_a_wait_in_the_workflows_own_code_commits_the_step_first(sandbox: Sandbox) -> None:
    """A wait in WASI outside a body (the SDK refuses `time.sleep`, not every way to block): the step is committed
    before it, not held through it."""
    journal = DeferringJournal()
    source = "import select\ndef run(event, step):\n    step.do('a', lambda: 1)\n    select.select([], [], [], 0.01)\n"
    outcome = run(sandbox, source, journal)
    assert isinstance(outcome, Completed)
    assert journal.order == ["begin a", "complete a", "flush 0"] and not journal.pending
