"""The `tenantflow` module that workflow code imports inside the sandbox.

Every durable operation is a call into the host, which reads and writes the
journal. When the host needs the workflow to wait (a sleep, an event, a retry
back-off) it does not return: it traps, and the isolate is thrown away.
"""

import datetime
import json
import re
from typing import Any, Callable

from componentize_py_types import Err
from wit_world.imports import host

__all__ = [
    "CapabilityError",
    "Event",
    "NonRetryableError",
    "Response",
    "Step",
    "StepError",
    "WaitTimeoutError",
    "WorkflowEntrypoint",
    "fetch",
    "parse_duration",
]

MAX_RESULT_BYTES = 1 << 20

_UNITS_MS = {
    "millisecond": 1,
    "second": 1000,
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
    "week": 7 * 86_400_000,
    "month": 30 * 86_400_000,
    "year": 365 * 86_400_000,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+?)s?\s*$")


class NonRetryableError(Exception):
    """Raise from a step body to fail the step at once, without retries."""


class StepError(Exception):
    """A step that failed for good (retries used up); `name` is the original error's class."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class WaitTimeoutError(Exception):
    """`step.wait_for_event` timed out before a matching event arrived."""


class WorkflowEntrypoint:
    """Base class for the class form of a workflow: override `run(self, event, step)`."""

    def run(self, event: "Event", step: "Step") -> Any:
        raise NotImplementedError("define run(self, event, step)")


class Event:
    """What started the instance: its params, when, and its id."""

    def __init__(self, payload: Any, timestamp: float, instance_id: str) -> None:
        self.payload = payload
        self.timestamp = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
        self.instance_id = instance_id

    def __repr__(self) -> str:
        return f"Event(instance_id={self.instance_id!r}, payload={self.payload!r})"


def parse_duration(value: Any) -> int:
    """Milliseconds from a number of milliseconds or a string such as "10 seconds"."""
    if isinstance(value, bool):
        raise TypeError("a duration is a number of milliseconds or a string like '10 seconds'")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return int(value)
    if isinstance(value, datetime.timedelta):
        return int(value.total_seconds() * 1000)
    if isinstance(value, str):
        match = _DURATION.match(value.lower())
        if match and match.group(2) in _UNITS_MS:
            return int(float(match.group(1)) * _UNITS_MS[match.group(2)])
        raise ValueError(f"cannot read duration {value!r}; use e.g. '10 seconds' or '2 hours'")
    raise TypeError("a duration is a number of milliseconds or a string like '10 seconds'")


def _step_config(retries: Any, timeout: Any) -> str:
    if retries is None and timeout is None:
        return "{}"
    config: dict[str, Any] = {}
    if retries is not None:
        if not isinstance(retries, dict):
            raise TypeError("retries is a dict with limit, delay and backoff")
        unknown = set(retries) - {"limit", "delay", "backoff"}
        if unknown:
            raise ValueError(f"unknown retries keys: {sorted(unknown)}")
        if "limit" in retries:
            limit = retries["limit"]
            if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
                raise ValueError("retries.limit is a whole number >= 0")
            config["limit"] = limit
        if "delay" in retries:
            config["delay_ms"] = parse_duration(retries["delay"])
        if "backoff" in retries:
            if retries["backoff"] not in ("constant", "linear", "exponential"):
                raise ValueError("retries.backoff is 'constant', 'linear' or 'exponential'")
            config["backoff"] = retries["backoff"]
    if timeout is not None:
        config["timeout_ms"] = parse_duration(timeout)
    return json.dumps(config)


def host_text(value: str) -> str:
    """`value` as valid UTF-8 for the host: lone surrogates become backslash escapes."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode()
    return value


def _failure(error: BaseException) -> host.Failure:
    return host.Failure(type(error).__name__, host_text(str(error)[:4096]))


def _raise_failure(failure: host.Failure) -> None:
    if failure.name == "NonRetryableError":
        raise NonRetryableError(failure.message)
    raise StepError(failure.name, failure.message)


class Step:
    """The `step` argument of `run(event, step)`."""

    def __init__(self) -> None:
        self._in_body = False

    def do(
        self,
        name: str,
        fn_or_config: Any = None,
        fn: Callable[[], Any] | None = None,
        *,
        retries: dict[str, Any] | None = None,
        timeout: Any = None,
    ) -> Any:
        """Run `fn` once, durably: `step.do(name, fn)`, `step.do(name, config, fn)` or `@step.do(name)`."""
        if not isinstance(name, str) or not name:
            raise TypeError("a step name is a non-empty string")
        if isinstance(fn_or_config, dict):
            retries = fn_or_config.get("retries", retries)
            timeout = fn_or_config.get("timeout", timeout)
        elif callable(fn_or_config):
            fn = fn_or_config
        elif fn_or_config is not None:
            raise TypeError("step.do(name, fn) or step.do(name, config, fn)")
        config = _step_config(retries, timeout)
        if fn is None:
            return lambda body: self._run_step(name, config, body)
        return self._run_step(name, config, fn)

    def _run_step(self, name: str, config: str, fn: Callable[[], Any]) -> Any:
        if self._in_body:
            raise RuntimeError(f"step {name!r} is called inside another step's body; steps cannot nest")
        name = host_text(name)
        plan = host.step_begin(name, config)
        while True:
            if isinstance(plan, host.Plan_Done):
                return json.loads(plan.value)
            if isinstance(plan, host.Plan_Failed):
                _raise_failure(plan.value)
            plan = host.step_complete(name, self._attempt(fn))

    def _attempt(self, fn: Callable[[], Any]) -> host.Attempt:
        self._in_body = True
        try:
            value = fn()
        except NonRetryableError as error:
            return host.Attempt_Fatal(_failure(error))
        except Exception as error:
            return host.Attempt_Retryable(_failure(error))
        finally:
            self._in_body = False
        try:
            text = json.dumps(value)
        except (TypeError, ValueError) as error:
            return host.Attempt_Fatal(host.Failure("ResultNotSerializable", str(error)))
        if len(text) > MAX_RESULT_BYTES:
            message = f"a step result is at most {MAX_RESULT_BYTES} bytes of JSON, got {len(text)}"
            return host.Attempt_Fatal(host.Failure("OutputLimitExceeded", message))
        return host.Attempt_Ok(text)

    def sleep(self, name: str, duration: Any) -> None:
        """Sleep durably for a duration ("1 day", or milliseconds)."""
        self._check_outside_body(name)
        host.sleep(host_text(name), parse_duration(duration))

    def sleep_until(self, name: str, when: Any) -> None:
        """Sleep durably until a datetime (naive means UTC) or epoch seconds."""
        self._check_outside_body(name)
        if isinstance(when, datetime.datetime):
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.timezone.utc)
            epoch = when.timestamp()
        elif isinstance(when, (int, float)) and not isinstance(when, bool):
            epoch = float(when)
        else:
            raise TypeError("sleep_until takes a datetime or epoch seconds")
        host.sleep_until(host_text(name), int(epoch * 1000))

    def wait_for_event(self, name: str, event_type: str, timeout: Any = "24 hours") -> dict[str, Any]:
        """Wait durably for an event of `event_type`; returns {type, payload, timestamp}."""
        self._check_outside_body(name)
        if not isinstance(event_type, str) or not event_type:
            raise TypeError("event_type is a non-empty string")
        timeout_ms = None if timeout is None else parse_duration(timeout)
        try:
            result: dict[str, Any] = json.loads(host.wait_for_event(host_text(name), host_text(event_type), timeout_ms))
        except Err as err:
            raise WaitTimeoutError(err.value.message) from None
        return result

    def _check_outside_body(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError("a step name is a non-empty string")
        if self._in_body:
            raise RuntimeError(f"step {name!r} is called inside a step body; steps cannot nest")


class Response:
    """The answer to `fetch`."""

    def __init__(self, status: int, headers: dict[str, str], text: str) -> None:
        self.status = status
        self.headers = headers
        self.text = text

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.text)

    def __repr__(self) -> str:
        return f"Response(status={self.status})"


class CapabilityError(Exception):
    """The host refused or failed a capability call (e.g. a host not on the egress allowlist)."""


def fetch(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: str | bytes | None = None,
) -> Response:
    """HTTP through the host, to hosts on the tenant's egress allowlist only."""
    if isinstance(body, bytes):
        body = body.decode()
    request = {"url": url, "method": method, "headers": headers or {}, "body": body}
    try:
        answer = json.loads(host.call("fetch", json.dumps(request)))
    except Err as err:
        raise CapabilityError(f"{err.value.name}: {err.value.message}") from None
    return Response(answer["status"], answer["headers"], answer["body"])
