"""Hostile input to host functions is a named error, host CPU and memory spent for a guest are bounded."""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

import pytest
from memjournal import MemJournal
from tenantflow.host import Completed, Failed, Limits, Outcome, Sandbox, jsoncheck
from tenantflow.host.errors import HostRefusal
from tenantflow.host.limits import MAX_ERROR_NAME_BYTES

LIMITS = Limits(deadline_s=10, memory_bytes=128 << 20, fuel=2 * 10**9)


def run(sandbox: Sandbox, source: str, limits: Limits = LIMITS, journal: MemJournal | None = None) -> Outcome:
    return sandbox.run(textwrap.dedent(source), {"payload": None}, journal or MemJournal(), limits)


def failed_with(outcome: Outcome, name: str) -> Failed:
    assert isinstance(outcome, Failed), outcome
    assert outcome.error.name == name, outcome.error
    return outcome


@pytest.mark.parametrize(
    "call",
    [
        "step.do('a', {'timeout': 10**400}, lambda: 1)",
        "step.do('a', {'retries': {'limit': 1, 'delay': 10**400}}, lambda: 1)",
        "step.do('a', {'retries': {'limit': 10**9}}, lambda: 1)",
        "host.step_begin('a', '[' * 3000 + ']' * 3000)",
        "host.step_begin('a', '{\"limit\": \"many\"}')",
        "host.call('fetch', '[' * 100000 + ']' * 100000)",
        "host.call('fetch', 'x' * (20 << 20))",
        "host.step_begin('x' * 1000, '{}')",
        "host.step_begin('bell\\x07', '{}')",
        "step.wait_for_event('w', 'no spaces allowed')",
        "step.wait_for_event('w', 'ok', 10**15)",
        "step.sleep('s', 2**64 - 1)",
        "step.sleep_until('s', 9e12)",
        "step.sleep_until('s', -1)",
        "host.step_begin('a', '{}'); host.step_complete('a', 1, host.Attempt_Ok('not json'))",
        "host.step_begin('a', '{}'); host.step_complete('a', 1, host.Attempt_Ok('[' * 200 + ']' * 200))",
        "host.step_begin('a', '{}'); host.step_complete('a', 1, host.Attempt_Ok('{\"a\": }'))",
        "host.seed_bytes(2**32 - 1)",
    ],
)
def test_bad_host_calls_are_invalid_host_call(sandbox: Sandbox, call: str) -> None:
    source = f"from wit_world.imports import host\ndef run(event, step):\n    {call}\n"
    failed_with(run(sandbox, source), "InvalidHostCall")


def test_nan_and_infinity_are_kept(sandbox: Sandbox) -> None:
    # Python's json writes them; the runtime answers them as null.
    outcome = run(sandbox, "def run(event, step):\n    return [step.do('a', lambda: float('inf')), float('nan')]\n")
    assert isinstance(outcome, Completed) and outcome.output == "[Infinity, NaN]", outcome


@pytest.mark.parametrize("output", ["'not json'", "'[' * 500 + ']' * 500", "'{\"a\": 1'"])
def test_an_output_that_is_not_json_is_refused(sandbox: Sandbox, output: str) -> None:
    # The guest's harness encodes the workflow's return value with the SDK's codec: a workflow can replace it.
    source = f"import tenantflow._codec\ndef run(event, step):\n    tenantflow._codec.dumps = lambda value: {output}\n"
    failed_with(run(sandbox, source), "InvalidHostCall")


def test_error_strings_are_clipped_by_the_host(sandbox: Sandbox) -> None:
    source = """
    def run(event, step):
        raise type("E" * 5000, (Exception,), {})("boom")
    """
    outcome = failed_with(run(sandbox, source), "E" * MAX_ERROR_NAME_BYTES + "... [clipped by the host: 5000 bytes]")
    assert len(outcome.error.name) < 200


def test_the_log_cap_counts_bytes(sandbox: Sandbox) -> None:
    # 300,000 four-byte characters are 1.2 MB: over a 1 MiB log cap.
    failed_with(run(sandbox, "def run(event, step):\n    print('\\U0001f600' * 300_000)\n"), "OutputLimitExceeded")


def test_host_cpu_is_charged_to_the_fuel(sandbox: Sandbox) -> None:
    # Each call makes the host parse ~1 MiB of small JSON objects (then refuse the request for
    # having no url); the guest itself barely runs. Uncharged, this ran until the deadline.
    source = """
    from wit_world.imports import host
    def run(event, step):
        big = '{"items": [' + ",".join(['{"a":1}'] * 130_000) + "]}"
        while True:
            try:
                host.call("fetch", big)
            except Exception:
                pass
    """
    started = time.monotonic()
    outcome = run(sandbox, source, Limits(deadline_s=20, memory_bytes=128 << 20, fuel=2 * 10**9))
    failed_with(outcome, "FuelExhausted")
    assert time.monotonic() - started < 3


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_host_memory_stays_within_a_multiple_of_the_memory_cap(sandbox: Sandbox) -> None:
    """4 concurrent activations each hand the host ~40 MiB of small JSON objects (call and result)."""
    cap = 128 << 20
    source = """
    from wit_world.imports import host
    def run(event, step):
        big = "[" + ",".join(['{"a":1}'] * 5_000_000) + "]"
        host.step_begin("s", "{}")
        host.step_complete("s", 1, host.Attempt_Ok(big))
        host.call("fetch", big)
    """
    baseline = _rss()
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.005):
            peak = max(peak, _rss())

    sampler = threading.Thread(target=sample)
    sampler.start()
    outcomes: list[Outcome] = []
    threads = [
        threading.Thread(
            target=lambda: outcomes.append(run(sandbox, source, Limits(deadline_s=30, memory_bytes=cap, fuel=10**11)))
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    sampler.join()
    # The guests' own memory is up to 4 x cap (it counts in this process's RSS); the host may add
    # at most 2 x cap in all: wasmtime's one copy of each lifted string, never decoded or parsed.
    # Before the caps, the host's json.loads of the 4 x 40 MiB took several GB.
    assert peak - baseline < 6 * cap, (peak - baseline) / (1 << 20)
    assert len(outcomes) == 4
    for outcome in outcomes:
        failed_with(outcome, "InvalidHostCall")


@pytest.mark.parametrize("grow", ["x += x", "x = x + x"])
def test_doubling_a_string_until_out_of_memory_is_a_memory_limit(sandbox: Sandbox, grow: str) -> None:
    source = f"def run(event, step):\n    x = 'ab'\n    while True:\n        {grow}\n"
    failed_with(run(sandbox, source, Limits(memory_bytes=64 << 20)), "MemoryLimitExceeded")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("[" * 100 + "]" * 100, True),
        ("[" * 101 + "]" * 101, False),
        ('["' + "[" * 500 + '"]', True),  # brackets inside a string do not nest
        ('["\\\\", "\\"[[[", ' + "[" * 99 + "]" * 99 + "]", True),  # escapes do not end strings
        ('{"a":' * 101 + "1" + "}" * 101, False),
        ("[" * 5000 + "]" * 5000, False),  # deeper than json itself can go: still a named refusal
    ],
)
def test_json_nesting_is_bounded(text: str, ok: bool) -> None:
    if ok:
        jsoncheck.check(text, "test")
    else:
        with pytest.raises(HostRefusal, match="nested deeper than 100"):
            jsoncheck.check(text, "test")
