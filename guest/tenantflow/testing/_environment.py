"""`WorkflowTestEnvironment`: run a workflow on the host with steps, events and time under control."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from tenantflow._durations import Duration, parse_duration
from tenantflow._step import MAX_RESULT_BYTES, Step
from tenantflow._workflow import Event, RunFunction, WorkflowEntrypoint, find_entrypoint, is_async
from tenantflow.host.journal import Abort, StepCall
from tenantflow.testing._journal import Entry, Moment, PendingEvent, TestJournal
from tenantflow.testing._transport import Stop, TestTransport
from tenantflow.transport import Failure, installed

MAX_ACTIVATIONS = 10_000
_MISSING: Any = object()

Workflow = RunFunction | type[WorkflowEntrypoint] | ModuleType | str | os.PathLike[str]
"""A `run(event, step)` function, a `WorkflowEntrypoint` subclass, a module, or a workflow file's path."""
FetchHandler = Callable[[dict[str, Any]], dict[str, Any]]
"""Answers `tenantflow.fetch`: gets {url, method, headers, body}, returns {status, headers, body}."""


class WorkflowError(Exception):
    """The workflow failed the way the platform fails it (not by raising): `name` is the failure's name,
    e.g. NonDeterminismError, OutputNotSerializable, OutputLimitExceeded, InvalidHostCall."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class WorkflowStuck(WorkflowError):
    """The workflow waits for an event that never comes (`timeout=None` and none given)."""


@dataclass
class StepMock:
    """What `mock_step` installs: the step's body is replaced, the rest (retries, journal) is not."""

    name: str
    result: Any = _MISSING
    raise_: BaseException | Sequence[BaseException] | None = None
    body: Callable[[], Any] | None = None
    call: int | None = None
    attempts: int = 0

    def stand_in(self, attempt: int) -> Callable[[], Any] | None:
        self.attempts += 1
        failures = self.raise_
        if isinstance(failures, BaseException):
            return _raiser(failures)
        if failures is not None and attempt <= len(failures):
            return _raiser(failures[attempt - 1])
        if self.body is not None:
            return self.body
        if self.result is not _MISSING:
            result = self.result
            return lambda: result
        return None  # the real body


def _raiser(error: BaseException) -> Callable[[], Any]:
    def body() -> Any:
        raise error

    return body


@dataclass
class StepRecord:
    """One durable call, as the journal holds it after the run."""

    position: int
    name: str
    call: int
    kind: str
    state: str
    result: Any
    error: tuple[str, str] | None
    attempts: int
    wake_at: datetime.datetime | None = None
    event_type: str | None = None


@dataclass
class TimelineEntry:
    """One thing that happened, at virtual time `at` (`elapsed` since the run started)."""

    at: datetime.datetime
    elapsed: datetime.timedelta
    what: str
    name: str
    detail: str = ""


@dataclass
class WorkflowTestEnvironment:
    """Runs workflows in this process, through the same SDK code as the sandbox, on a virtual clock.

    Sleeps, retry back-offs and event timeouts take no time: the clock jumps to the next wake.
    After each wait the workflow is replayed from the top against the journal, as the engine
    does, so a workflow that calls its steps in a different order fails with NonDeterminismError.
    """

    start: datetime.datetime | None = None
    fetch: FetchHandler | None = None
    mocks: list[StepMock] = field(default_factory=list)
    activations: int = 0
    _queued: list[PendingEvent] = field(default_factory=list, init=False, repr=False)
    _journal: TestJournal = field(init=False, repr=False)
    _started_ms: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._reset()

    # -- set-up ----------------------------------------------------------------

    def mock_step(
        self,
        name: str,
        result: Any = _MISSING,
        *,
        raise_: BaseException | Sequence[BaseException] | None = None,
        body: Callable[[], Any] | None = None,
        call: int | None = None,
    ) -> StepMock:
        """Replace the body of `step.do(name, ...)` (every call of it, or only its `call`-th, from 0).

        `result=` returns a value; `raise_=` an exception raises it on every attempt, a list raises
        them on the first attempts and then returns `result` (or runs the real body); `body=` runs
        a function instead. Retries, NonRetryableError and JSON checks apply as to the real body.
        """
        if body is not None and (result is not _MISSING or raise_ is not None):
            raise TypeError("mock_step takes body= alone, or result= and/or raise_=")
        if body is None and result is _MISSING and raise_ is None:
            raise TypeError("mock_step needs result=, raise_= or body=")
        mock = StepMock(name, result, raise_ if isinstance(raise_, BaseException | None) else list(raise_), body, call)
        self.mocks.insert(0, mock)
        return mock

    def send_event(self, event_type: str, payload: Any = None, *, after: Duration = 0) -> None:
        """Have an event arrive `after` (a duration, e.g. "2 hours") the start of the next run."""
        self._queued.append(PendingEvent(event_type, _roundtrip(payload), parse_duration(after)))

    # -- running ---------------------------------------------------------------

    def run(
        self,
        workflow: Workflow,
        params: Any = None,
        *,
        events: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        instance_id: str = "test-instance",
    ) -> Any:
        """Run `workflow` to the end and return its output (as JSON gives it back).

        `events` are buffered up front ({type: payload}, or (type, payload) pairs in order of
        arrival). What the workflow raises is raised here; a platform failure is a `WorkflowError`.
        """
        self._reset()
        for event_type, payload in events.items() if isinstance(events, Mapping) else events or ():
            self.send_event(event_type, payload)
        for queued in self._queued:
            self._journal.events.append(PendingEvent(queued.type, queued.payload, self._started_ms + queued.at_ms))
        self._queued.clear()
        loader = _loader(workflow)
        while self.activations < MAX_ACTIVATIONS:
            self.activations += 1
            transport = TestTransport(self, self._journal)
            try:
                with installed(transport):
                    # A fresh `event` per activation too, as the engine hands the guest.
                    event = Event(_roundtrip(params), self._started_ms / 1000, instance_id)
                    entry = loader()
                    if is_async(entry):
                        transport.concurrent()
                        result = asyncio.run(_run_async(entry, event, Step(transport, concurrent=True)))
                    else:
                        step = Step(transport)
                        try:
                            result = entry(event, step)
                        except Exception as error:
                            step._roll_back(error)  # RollbackError if one fails for good
                            raise
            except Stop as stop:
                self._after(stop)
                continue
            return _output(result)
        raise WorkflowError("TooManyActivations", f"the workflow was still running after {MAX_ACTIVATIONS} activations")

    def _after(self, stop: Stop) -> None:
        signal = stop.signal
        if isinstance(signal, Abort):
            raise WorkflowError(signal.name, signal.message) from None
        journal = self._journal
        wakes = [t for t in (signal.wake_at_ms, journal.next_event_ms(journal.waiting_for())) if t is not None]
        if not wakes:
            raise WorkflowStuck("Stuck", f"{signal.reason}, and no such event was given") from None
        journal.now_ms = max(journal.now_ms, min(wakes))

    # -- what happened ---------------------------------------------------------

    @property
    def now(self) -> datetime.datetime:
        """The virtual clock."""
        return _datetime(self._journal.now_ms)

    @property
    def elapsed(self) -> datetime.timedelta:
        """Virtual time since the last run started."""
        return datetime.timedelta(milliseconds=self._journal.now_ms - self._started_ms)

    @property
    def steps(self) -> list[StepRecord]:
        """The journal of the last run, in order."""
        return [_record(entry) for _, entry in sorted(self._journal.entries.items())]

    def step(self, name: str, call: int = 0) -> StepRecord:
        """The journal entry of the `call`-th call (from 0) of `name`."""
        for record in self.steps:
            if record.name == name and record.call == call:
                return record
        raise KeyError(f"no call {call} of step {name!r} in the journal")

    @property
    def timeline(self) -> list[TimelineEntry]:
        """Attempts, retries, sleeps, wakes, events and timeouts, in virtual-time order."""
        return [self._entry(moment) for moment in self._journal.timeline]

    def _entry(self, moment: Moment) -> TimelineEntry:
        elapsed = datetime.timedelta(milliseconds=moment.at_ms - self._started_ms)
        return TimelineEntry(_datetime(moment.at_ms), elapsed, moment.what, moment.name, moment.detail)

    # -- for the transport -----------------------------------------------------

    def _stand_in(self, call: StepCall, attempt: int) -> Callable[[], Any] | None:
        for mock in self.mocks:
            if mock.name == call.name and mock.call in (None, call.occurrence):
                return mock.stand_in(attempt)
        return None

    def _fetch(self, request: dict[str, Any]) -> str | Failure:
        if self.fetch is None:
            return Failure("EgressDenied", "no fetch handler in this WorkflowTestEnvironment (pass fetch=...)")
        return json.dumps(self.fetch(request))

    def _reset(self) -> None:
        start = self.start.timestamp() if self.start is not None else time.time()
        self._started_ms = int(start * 1000)
        self._journal = TestJournal(self._started_ms)
        self.activations = 0


def _loader(workflow: Workflow) -> Callable[[], RunFunction]:
    """How to get the entry point for each activation (a fresh instance, a fresh module for a file)."""
    if isinstance(workflow, (str, os.PathLike)):
        path = Path(workflow)
        code = compile(path.read_text(), str(path), "exec")

        def from_file() -> RunFunction:
            namespace: dict[str, Any] = {"__name__": "workflow", "__file__": str(path)}
            exec(code, namespace)  # a fresh module per activation, as in a fresh isolate
            return _entry(namespace, str(path))

        return from_file
    if isinstance(workflow, ModuleType):
        module = workflow
        return lambda: _entry(vars(module), module.__name__)
    if isinstance(workflow, type) and issubclass(workflow, WorkflowEntrypoint):
        cls = workflow
        return lambda: cls().run
    if callable(workflow):
        fn = workflow
        return lambda: fn
    raise TypeError("a workflow is a run(event, step) function, a WorkflowEntrypoint subclass, a module or a path")


def _entry(namespace: Mapping[str, Any], where: str) -> RunFunction:
    entry = find_entrypoint(namespace)
    if entry is None:
        raise WorkflowError(
            "WorkflowCodeError", f"{where} defines neither run(event, step) nor a WorkflowEntrypoint subclass"
        )
    return entry


async def _run_async(entry: RunFunction, event: Event, step: Step) -> Any:
    """An `async def run` on asyncio's own loop (a fetch_async runs the transport's fetch in a thread)."""
    try:
        return await entry(event, step)
    except Exception as error:
        await step._roll_back_async(error)  # RollbackError if one fails for good
        raise


def _output(result: Any) -> Any:
    try:
        text = json.dumps(result)
    except (TypeError, ValueError) as error:
        raise WorkflowError("OutputNotSerializable", f"the workflow's return value is not JSON: {error}") from None
    if len(text) > MAX_RESULT_BYTES:
        raise WorkflowError(
            "OutputLimitExceeded", f"the workflow's output is at most {MAX_RESULT_BYTES} bytes of JSON, got {len(text)}"
        )
    return json.loads(text)


def _roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _datetime(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)


def _record(entry: Entry) -> StepRecord:
    error = (entry.error_name or "Error", entry.error_message or "") if entry.error_name else None
    wake = _datetime(entry.wake_at_ms) if entry.wake_at_ms is not None else None
    return StepRecord(
        entry.position,
        entry.name,
        entry.call,
        entry.kind,
        entry.state,
        entry.result,
        error,
        len(entry.attempts),
        wake,
        entry.event_type,
    )
