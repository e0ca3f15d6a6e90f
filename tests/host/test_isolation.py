"""Hostile tenant code inside the real guest: limits end it with named errors and the host goes on serving.

Every hostile activation is followed by a normal one that must complete on the same Sandbox.
"""

from __future__ import annotations

import json
import socket
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from memjournal import MemJournal
from tenantflow.host import Completed, Failed, Limits, Outcome, Sandbox

SMALL = Limits(fuel=2_000_000_000, memory_bytes=64 << 20, deadline_s=5)
# For code that should hit the memory cap: fuel enough that memory, not fuel, runs out first.
MEMORY_BOUND = Limits(fuel=20_000_000_000, memory_bytes=64 << 20, deadline_s=5)
PROJECT = Path(__file__).resolve().parents[2]


def run(sandbox: Sandbox, source: str, limits: Limits = SMALL, journal: MemJournal | None = None) -> Outcome:
    return sandbox.run(textwrap.dedent(source), {"payload": None}, journal or MemJournal(), limits)


def output(outcome: Outcome) -> Any:
    assert isinstance(outcome, Completed), outcome
    return json.loads(outcome.output)


def still_serving(sandbox: Sandbox) -> None:
    """The next activation on the same Sandbox completes normally."""
    outcome = run(sandbox, "def run(event, step):\n    return step.do('ok', lambda: sum(range(10)))\n")
    assert output(outcome) == 45


def timed(sandbox: Sandbox, source: str, limits: Limits = SMALL) -> tuple[Outcome, float]:
    started = time.monotonic()
    outcome = run(sandbox, source, limits)
    return outcome, time.monotonic() - started


# -- CPU, memory, stack, output ------------------------------------------------------


HOSTILE = {
    "busy loop": (
        "def run(event, step):\n    while True:\n        pass\n",
        {"FuelExhausted", "DeadlineExceeded"},
    ),
    "busy loop at import": ("while True:\n    pass\n", {"FuelExhausted", "DeadlineExceeded"}),
    "busy loop in a step body": (
        "def run(event, step):\n    @step.do('spin')\n    def spin():\n        while True:\n            pass\n",
        {"FuelExhausted", "DeadlineExceeded"},
    ),
    "huge bytearray": ("def run(event, step):\n    x = bytearray(1_500_000_000)\n", {"MemoryLimitExceeded"}),
    "list growing forever": (
        "def run(event, step):\n    xs = []\n    while True:\n        xs.append(bytearray(4096))\n",
        {"MemoryLimitExceeded"},
    ),
    "list growing at import time": (
        "hoard = []\nwhile True:\n    hoard.append(bytearray(4096))\n\ndef run(event, step):\n    pass\n",
        {"MemoryLimitExceeded"},
    ),
    "int list growing forever": (
        "def run(event, step):\n    xs = []\n    i = 0\n    while True:\n        xs.append(i)\n        i += 1\n",
        {"MemoryLimitExceeded"},
    ),
    "dict growing forever": (
        "def run(event, step):\n    d = {}\n    while True:\n        d[len(d)] = [len(d)] * 1000\n",
        {"MemoryLimitExceeded"},
    ),
    "list repetition": ("def run(event, step):\n    return len([0] * 10**9)\n", {"MemoryLimitExceeded"}),
    "MemoryError swallowed in a loop": (
        """
        def run(event, step):
            hoard = []
            while True:
                try:
                    hoard.append(bytearray(1 << 20))
                except MemoryError:
                    pass
        """,
        {"FuelExhausted", "DeadlineExceeded"},
    ),
    "unbounded recursion": (
        "def f(n):\n    return f(n + 1) + 1\n\ndef run(event, step):\n    return f(0)\n",
        {"StackOverflow"},
    ),
    "recursion limit raised": (
        "import sys\nsys.setrecursionlimit(10**7)\n\ndef f(n):\n    return f(n + 1) + 1\n\n"
        "def run(event, step):\n    return f(0)\n",
        {"StackOverflow"},
    ),
    "deeply nested data": (
        "import json\n\ndef run(event, step):\n    x = []\n    for _ in range(10**5):\n        x = [x]\n"
        "    return json.dumps(x)\n",
        {"StackOverflow"},
    ),
    "print loop": ("def run(event, step):\n    while True:\n        print('x' * 1000)\n", {"OutputLimitExceeded"}),
    "one giant print": ("def run(event, step):\n    print('y' * 5_000_000)\n", {"OutputLimitExceeded"}),
    "host log called directly": (
        "from wit_world.imports import host\n\ndef run(event, step):\n"
        "    while True:\n        host.log(1, 'z' * 65536)\n",
        {"OutputLimitExceeded"},
    ),
    "huge return value": ("def run(event, step):\n    return 'x' * 5_000_000\n", {"OutputLimitExceeded"}),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_code_ends_with_named_error_and_host_keeps_serving(sandbox: Sandbox, case: str) -> None:
    source, names = HOSTILE[case]
    outcome, elapsed = timed(sandbox, source, MEMORY_BOUND if names == {"MemoryLimitExceeded"} else SMALL)
    assert isinstance(outcome, Failed), outcome
    assert outcome.error.name in names, outcome.error
    assert outcome.error.message
    # A limit is reported by name, never as a raw trap dump.
    assert "wasm backtrace" not in outcome.error.message and "wasm trap" not in outcome.error.message
    assert elapsed < 6.0, elapsed
    still_serving(sandbox)


def test_busy_loop_stops_on_fuel_quickly(sandbox: Sandbox) -> None:
    outcome, elapsed = timed(sandbox, "def run(e, s):\n    while True:\n        pass\n")
    assert isinstance(outcome, Failed) and outcome.error.name == "FuelExhausted"
    assert outcome.stats.fuel == SMALL.fuel
    assert elapsed < 3.0, elapsed
    still_serving(sandbox)


def test_busy_loop_stops_on_wall_clock_deadline(sandbox: Sandbox) -> None:
    limits = Limits(fuel=10**13, memory_bytes=64 << 20, deadline_s=0.3)
    outcome, elapsed = timed(sandbox, "def run(e, s):\n    while True:\n        pass\n", limits)
    assert isinstance(outcome, Failed) and outcome.error.name == "DeadlineExceeded", outcome
    assert 0.3 <= elapsed < 1.0, elapsed
    still_serving(sandbox)


def test_huge_bytearray_surfaces_as_memory_error_inside_the_guest(sandbox: Sandbox) -> None:
    source = """
        def run(event, step):
            try:
                bytearray(1_500_000_000)
            except MemoryError:
                return "MemoryError"
        """
    assert output(run(sandbox, source)) == "MemoryError"
    outcome = run(sandbox, "def run(e, s):\n    x = bytearray(1_500_000_000)\n")
    assert isinstance(outcome, Failed) and outcome.error.name == "MemoryLimitExceeded"
    assert outcome.error.line == 2 and "MemoryError" in outcome.error.traceback
    still_serving(sandbox)


def test_bytearray_beyond_wasm32_address_space_is_overflow_error(sandbox: Sandbox) -> None:
    # On wasm32 an index is 32 bits: CPython refuses the size before allocating.
    outcome = run(sandbox, "def run(e, s):\n    return bytearray(10**10)\n")
    assert isinstance(outcome, Failed) and outcome.error.name == "OverflowError", outcome
    still_serving(sandbox)


def test_memory_cap_is_per_activation(sandbox: Sandbox) -> None:
    source = "def run(e, s):\n    return len(bytearray(100 << 20))\n"
    small = run(sandbox, source, Limits(fuel=2_000_000_000, memory_bytes=64 << 20, deadline_s=5))
    assert isinstance(small, Failed) and small.error.name == "MemoryLimitExceeded"
    assert output(run(sandbox, source, Limits(fuel=2_000_000_000, memory_bytes=256 << 20, deadline_s=5))) == 100 << 20


def test_recursion_error_is_named_stack_overflow_with_tenant_traceback(sandbox: Sandbox) -> None:
    outcome = run(sandbox, "def f(n):\n    return f(n + 1)\n\ndef run(event, step):\n    return f(0)\n")
    assert isinstance(outcome, Failed) and outcome.error.name == "StackOverflow"
    assert outcome.error.line == 2
    assert 'File "workflow.py", line 2, in f' in outcome.error.traceback
    assert len(outcome.error.traceback) <= 16384


def test_exception_that_cannot_be_printed_is_still_reported(sandbox: Sandbox) -> None:
    source = """
        class Evil(Exception):
            def __str__(self):
                raise RuntimeError("no message for you")

        def run(event, step):
            raise Evil()
        """
    outcome = run(sandbox, source)
    assert isinstance(outcome, Failed) and outcome.error.name == "Evil", outcome
    assert outcome.error.line == 7 and "could not be rendered" in outcome.error.message
    still_serving(sandbox)


def test_oversized_step_result_is_a_non_retryable_attempt(sandbox: Sandbox) -> None:
    journal = MemJournal()
    outcome = run(
        sandbox, "def run(event, step):\n    return step.do('big', lambda: 'x' * 2_000_000)\n", journal=journal
    )
    assert isinstance(outcome, Failed) and outcome.error.name == "OutputLimitExceeded"
    [attempt] = journal.attempts_of("big")
    assert not attempt.ok and not attempt.retryable and attempt.error_name == "OutputLimitExceeded"
    assert journal.results == {}
    still_serving(sandbox)


def test_log_is_bounded_and_marked_truncated(sandbox: Sandbox) -> None:
    limits = Limits(fuel=2_000_000_000, memory_bytes=64 << 20, deadline_s=5, log_bytes=10_000)
    outcome = run(sandbox, "def run(e, s):\n    for i in range(10_000):\n        print(i)\n", limits)
    assert isinstance(outcome, Failed) and outcome.error.name == "OutputLimitExceeded"
    assert outcome.stats.log_truncated and len(outcome.stats.log) <= 10_000
    assert outcome.stats.log.startswith("0\n1\n2\n")


def test_forged_host_calls_are_refused(sandbox: Sandbox) -> None:
    # Tenant code can import the raw bindings; the host still checks the protocol.
    source = """
        from wit_world.imports import host

        def run(event, step):
            host.step_complete("never begun", 1, host.Attempt_Ok("1"))
        """
    journal = MemJournal()
    outcome = run(sandbox, source, journal=journal)
    assert isinstance(outcome, Failed) and outcome.error.name == "WorkflowCodeError"
    assert journal.attempts == []
    still_serving(sandbox)


def test_hostile_activation_does_not_block_another_thread(sandbox: Sandbox) -> None:
    """While one thread runs a busy loop, activations on another thread keep completing promptly."""
    spin_limits = Limits(fuel=10**13, memory_bytes=64 << 20, deadline_s=1.5)
    result: list[Outcome] = []
    spinner = threading.Thread(
        target=lambda: result.append(run(sandbox, "def run(e, s):\n    while True:\n        pass\n", spin_limits))
    )
    spinner.start()
    try:
        time.sleep(0.1)
        durations = []
        for _ in range(10):
            started = time.monotonic()
            still_serving(sandbox)
            durations.append(time.monotonic() - started)
        assert spinner.is_alive(), "the busy loop should still be running"
        assert max(durations) < 0.5, durations
    finally:
        spinner.join(timeout=10)
    assert not spinner.is_alive()
    assert isinstance(result[0], Failed) and result[0].error.name == "DeadlineExceeded"


# -- no host files, environment, network or processes ---------------------------------


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "/etc/hostname", "/proc/self/environ", str(PROJECT / "pyproject.toml"), "pyproject.toml", __file__],
)
def test_guest_cannot_read_host_files(sandbox: Sandbox, path: str) -> None:
    assert Path(path).exists() or not Path(path).is_absolute()
    source = f"""
        def run(event, step):
            try:
                with open({path!r}, "rb") as f:
                    return ["read", len(f.read())]
            except OSError as error:
                return ["refused", type(error).__name__]
        """
    assert output(run(sandbox, source))[0] == "refused"


def test_guest_sees_no_host_directories(sandbox: Sandbox) -> None:
    source = """
        import os

        def run(event, step):
            seen = {}
            for path in ["/", ".", "/etc", "/proc", "/tmp", os.path.expanduser("~")]:
                try:
                    seen[path] = os.listdir(path)
                except OSError as error:
                    seen[path] = type(error).__name__
            return seen
        """
    seen = output(run(sandbox, source))
    assert all(isinstance(value, str) for value in seen.values()), seen


def test_guest_cannot_write_files(sandbox: Sandbox, tmp_path: Path) -> None:
    target = tmp_path / "written-by-guest.txt"
    source = f"""
        def run(event, step):
            for path in [{str(target)!r}, "relative.txt", "/tmp/x"]:
                try:
                    with open(path, "w") as f:
                        f.write("pwned")
                    return "wrote " + path
                except OSError:
                    pass
            return "refused"
        """
    assert output(run(sandbox, source)) == "refused"
    assert not target.exists() and not (Path.cwd() / "relative.txt").exists()


def test_guest_sees_none_of_the_host_environment(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTFLOW_TEST_SECRET", "hunter2-do-not-leak")
    source = """
        import os

        def run(event, step):
            return {"environ": dict(os.environ), "getenv": os.getenv("TENANTFLOW_TEST_SECRET"),
                    "path": os.environ.get("PATH"), "home": os.environ.get("HOME")}
        """
    seen = output(run(sandbox, source))
    assert seen["getenv"] is None and seen["path"] is None and seen["home"] is None
    assert "TENANTFLOW_TEST_SECRET" not in seen["environ"]
    assert "hunter2" not in json.dumps(seen)
    assert seen["environ"] == {}


@pytest.fixture
def listener() -> Any:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    yield server
    server.close()


def test_guest_cannot_connect_to_a_local_listener(sandbox: Sandbox, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    source = f"""
        def run(event, step):
            tried = {{}}
            for module in ["socket", "_socket"]:
                try:
                    mod = __import__(module)
                    s = mod.socket(mod.AF_INET, mod.SOCK_STREAM)
                    s.connect(("127.0.0.1", {port}))
                    s.sendall(b"hello from the guest")
                    tried[module] = "connected"
                except BaseException as error:
                    tried[module] = type(error).__name__
            return tried
        """
    tried = output(run(sandbox, source))
    assert "connected" not in tried.values(), tried
    with pytest.raises(TimeoutError):
        listener.accept()
    # Plain `import socket` at module level fails the load with a clear error.
    outcome = run(
        sandbox, f"import socket\nsocket.create_connection(('127.0.0.1', {port}))\ndef run(e, s):\n    pass\n"
    )
    assert isinstance(outcome, Failed) and outcome.error.name == "WorkflowCodeError"
    with pytest.raises(TimeoutError):
        listener.accept()


def test_guest_cannot_start_processes(sandbox: Sandbox, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    command = f"touch {marker}"
    source = f"""
        import os

        def run(event, step):
            tried = {{}}
            attempts = {{
                "os.system": lambda: os.system({command!r}),
                "os.popen": lambda: os.popen({command!r}).read(),
                "os.fork": lambda: os.fork(),
                "os.execv": lambda: os.execv("/bin/sh", ["sh", "-c", {command!r}]),
                "os.posix_spawn": lambda: os.posix_spawn("/bin/sh", ["sh", "-c", {command!r}], {{}}),
                "os.spawnv": lambda: os.spawnv(os.P_WAIT, "/bin/sh", ["sh", "-c", {command!r}]),
                "subprocess": lambda: __import__("subprocess").run(["sh", "-c", {command!r}]),
                "multiprocessing": lambda: __import__("multiprocessing").Process(target=print).start(),
                "ctypes": lambda: __import__("ctypes").CDLL(None).system({command!r}.encode()),
            }}
            for name, attempt in attempts.items():
                try:
                    attempt()
                    tried[name] = "ran"
                except BaseException as error:
                    tried[name] = type(error).__name__
            return tried
        """
    tried = output(run(sandbox, source))
    assert "ran" not in tried.values(), tried
    assert not marker.exists()
    still_serving(sandbox)


def test_guest_cannot_start_threads_that_outlive_the_activation(sandbox: Sandbox) -> None:
    source = """
        def run(event, step):
            try:
                import threading
                threading.Thread(target=lambda: None).start()
                return "started"
            except BaseException as error:
                return type(error).__name__
        """
    assert output(run(sandbox, source)) != "started"


# -- no state shared between activations ---------------------------------------------


def test_module_globals_do_not_survive_to_the_next_activation(sandbox: Sandbox) -> None:
    source = """
        counter = []

        def run(event, step):
            counter.append(1)
            return len(counter)
        """
    assert [output(run(sandbox, source)) for _ in range(3)] == [1, 1, 1]


def test_builtins_and_module_mutations_do_not_leak_into_the_next_activation(sandbox: Sandbox) -> None:
    poison = """
        import builtins, json, sys, tenantflow

        def run(event, step):
            builtins.LEAKED = "secret of tenant A"
            builtins.len = lambda x: -1
            json.dumps = lambda *a, **k: '"poisoned"'
            sys.modules["leak_module"] = type(sys)("leak_module")
            tenantflow.NonRetryableError = KeyError
            import os
            os.environ["LEAKED_ENV"] = "secret"
            return "poisoned"
        """
    assert output(run(sandbox, poison)) == "poisoned"
    probe = """
        import builtins, json, os, sys, tenantflow

        def run(event, step):
            return {
                "builtin": getattr(builtins, "LEAKED", None),
                "len": len([1, 2, 3]),
                "json": json.dumps({"a": 1}),
                "module": "leak_module" in sys.modules,
                "sdk": tenantflow.NonRetryableError.__name__,
                "env": os.environ.get("LEAKED_ENV"),
            }
        """
    assert output(run(sandbox, probe)) == {
        "builtin": None,
        "len": 3,
        "json": '{"a": 1}',
        "module": False,
        "sdk": "NonRetryableError",
        "env": None,
    }


def test_heap_contents_of_a_previous_activation_are_not_visible(sandbox: Sandbox) -> None:
    marker = "TENANT-A-SECRET-" + "q" * 32
    assert output(run(sandbox, f"secret = {marker!r} * 1000\ndef run(e, s):\n    return len(secret)\n")) == 48_000
    probe = f"""
        import gc

        def run(event, step):
            # Every live object of this isolate, the interned strings and the snapshot's (frozen by guest/app.py)
            # included: none is tenant A's.
            gc.unfreeze()
            objects = gc.get_objects()
            return [len(objects) > 1000, any(isinstance(o, str) and {marker!r} in o for o in objects)]
        """
    assert output(run(sandbox, probe)) == [True, False]


# -- the host process does not leak ----------------------------------------------------


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_hundred_activations_do_not_leak_host_memory(sandbox: Sandbox) -> None:
    source = """
        def run(event, step):
            data = step.do("load", lambda: list(range(2000)))
            print("x" * 2000)
            blob = bytearray(4 << 20)
            return len(data) + len(blob)
        """
    for _ in range(20):
        run(sandbox, source)
    before = _rss_mb()
    for i in range(100):
        if i % 10 == 0:
            run(sandbox, "def run(e, s):\n    xs = []\n    while True:\n        xs.append(bytearray(1 << 16))\n")
        else:
            assert output(run(sandbox, source)) == 2000 + (4 << 20)
    growth = _rss_mb() - before
    assert growth < 30, f"RSS grew by {growth:.1f} MB over 100 activations"


def test_lone_surrogates_do_not_crash_the_isolate(sandbox: Sandbox) -> None:
    source = """
def run(event, step):
    print("\\ud800 half a pair")
    step.do("name \\udfff", lambda: "\\ud83d")
    try:
        step.do("boom", {"retries": {"limit": 0}}, lambda: (_ for _ in ()).throw(ValueError("bad \\ud800")))
    except Exception as error:
        return str(error)
"""
    outcome = sandbox.run(source, {"payload": None}, MemJournal())
    assert isinstance(outcome, Completed), outcome
    assert "\\ud800 half a pair" in outcome.stats.log
    assert "bad \\ud800" in json.loads(outcome.output)


def test_suspended_and_trapped_isolates_are_freed_without_the_cycle_collector(sandbox: Sandbox) -> None:
    import gc

    import wasmtime

    suspending = "def run(event, step):\n    step.do('a', lambda: 1)\n    step.sleep('z', '1 day')\n"
    trapping = "def run(event, step):\n    while True:\n        pass\n"
    gc.collect()
    gc.disable()
    try:
        # more activations than the pooling allocator has slots (128): leaked Stores would exhaust it
        for i in range(200):
            source = trapping if i % 20 == 0 else suspending
            outcome = sandbox.run(source, {"payload": None}, MemJournal(), Limits(fuel=50_000_000))
            assert not isinstance(outcome, Completed)
        assert sandbox.isolates.settle(timeout=30)
        held = sandbox.isolates.held()  # made ahead of time (host/pool.py)
        # Other Sandboxes of the session (their own engines) keep ready isolates too.
        ours = [o for o in gc.get_objects() if isinstance(o, wasmtime.Store) and o.engine is sandbox.engine]
        leaked = [o for o in ours if o not in held]
    finally:
        gc.enable()
    assert leaked == []
