"""The sandbox's hostile-code tests against the core-module prototype (a pytest plugin; not part of `make test`).

    .venv/bin/python -m pytest -p bench.core_isolation tests/host/test_isolation.py -q

Loaded before the tests' conftest imports `tenantflow.host.Sandbox`, it puts `CoreIsolationSandbox` in its
place: the same `run(source, event, journal, limits)` → Outcome over the prototype's `CoreSandbox`
(bench/core_module.py), with the limits mapped to the same failure names (fuel, epoch deadline, memory cap,
stack). It is only as complete as the prototype host: no log cap, no cancel, no step budgets, wasmtime's own
WASI rather than host/wasi.py. What passes and what fails is the measure of "the same isolation".
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import tenantflow.host
import wasmtime
from tenantflow.host import Completed, ErrorInfo, Failed, Limits, Outcome, Suspended
from tenantflow.host.engine import EpochTicker, make_engine
from tenantflow.host.journal import Suspend
from tenantflow.host.outcome import Stats

from bench.core_module import CoreSandbox, load_core_module

_GUEST_ERRORS = {"MemoryError": "MemoryLimitExceeded", "RecursionError": "StackOverflow"}
_TRAPS = (
    ("all fuel consumed", "FuelExhausted"),
    ("interrupt", "DeadlineExceeded"),
    ("call stack exhausted", "StackOverflow"),
    ("memory", "MemoryLimitExceeded"),
)


class CoreIsolationSandbox:
    """`tenantflow.host.Sandbox`'s `run` over the core-module prototype."""

    def __init__(self, component: Any = None, engine: Any = None) -> None:
        self.engine, self.settings = make_engine()
        self._ticker = EpochTicker(self.engine)
        self.core = CoreSandbox(self.engine, load_core_module(self.engine, self.settings), self._ticker.ticks)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._ticker.close()

    def run(
        self,
        source: str,
        event: dict[str, Any],
        journal: Any,
        limits: Limits | None = None,
        grants: Any = None,
        cancel: threading.Event | None = None,
        *,
        clock_start: float | None = None,
        seed: bytes | None = None,
        code: bytes | None = None,
    ) -> Outcome:
        limits = limits or Limits()
        started = time.perf_counter()
        self._ticker.hold()
        # CoreSandbox keeps its current activation on itself (a prototype): one activation at a time.
        with self._lock:
            inst = self.core.instance(journal, limits)
            try:
                status, text = inst.run(source, event)
            except Suspend as wait:
                return Suspended(wait.reason, wait.wake_at_ms, self._stats(inst, limits, started))
            except (wasmtime.WasmtimeError, wasmtime.Trap) as trap:
                stats = self._stats(inst, limits, started)
                message = str(trap)
                for needle, name in _TRAPS:
                    if needle in message:
                        return Failed(ErrorInfo(name, message[:1000]), stats)
                return Failed(ErrorInfo("GuestTrap", message[:1000]), stats)
            finally:
                self._ticker.release()
        stats = self._stats(inst, limits, started)
        if status == 0:
            return Completed(text, stats)
        error = json.loads(text)
        name = _GUEST_ERRORS.get(error["name"], error["name"])
        return Failed(ErrorInfo(name, error["message"], error.get("traceback", "")), stats)

    def _stats(self, inst: Any, limits: Limits, started: float) -> Stats:
        fuel = limits.fuel - inst.store.get_fuel()
        return Stats(fuel=fuel, duration_ms=(time.perf_counter() - started) * 1000, log="".join(inst.act.log))


tenantflow.host.Sandbox = CoreIsolationSandbox  # type: ignore[misc,assignment]
