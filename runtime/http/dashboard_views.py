"""The dashboard's view side: formatting for the templates, and the view models it renders.

Nothing here reads a request or the service: `build_timeline` turns an instance and its journal
(the API's journal shape) into what `_instance_timeline.html` shows. The routes are in
`tenantflow.runtime.http.dashboard`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from starlette.responses import HTMLResponse
from tenantflow.runtime.records import DUE_SLACK_S, FINISHED, Instance
from tenantflow.runtime.service.watching import FINAL_STATES

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

PAGE_SIZE = 25
MAX_PAGE_SIZE = 200
PREVIEW_CHARS = 64 * 1024
"""JSON values and logs longer than this are cut in the page (the API has them whole)."""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
NO_STORE = {"Cache-Control": "no-store"}

STATUS_SYMBOLS = {
    "queued": "○",
    "running": "▶",
    "waiting": "◷",
    "waiting_for_pause": "◷❚",
    "paused": "❚❚",
    "errored": "✕",
    "terminated": "■",
    "complete": "✓",
}


# -- formatting ----------------------------------------------------------------


def _datetime(epoch: float) -> datetime | None:
    """The UTC time of `epoch`, or None beyond what datetime holds (years 1-9999)."""
    try:
        return datetime.fromtimestamp(epoch, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def fmt_time(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    moment = _datetime(epoch)
    if moment is None:
        return f"{'after 9999' if epoch > 0 else 'before year 1'} ({epoch:.6g} s since 1970)"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_time(epoch: float | None) -> str:
    moment = None if epoch is None else _datetime(epoch)
    if moment is None:
        return ""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fmt_duration(ms: float | None) -> str:
    """A length of time, rounded to what it shows: "250 µs", "12.3 ms", "1.50 s", "2 min 5 s", "2 h", "3 d 4 h".

    It is rounded once, to the unit of its last part, before it is split: 7,199.9996 s is "2 h", not
    "1 h 59 min"; a zero last part is left out ("2 min", not "2 min 0 s")."""
    if ms is None or not math.isfinite(ms):
        return "—"
    if ms < 0:
        return "−" + fmt_duration(-ms)
    if ms < 0.9995:
        return f"{ms * 1000:.0f} µs"
    if ms < 99.95:
        return f"{ms:.1f} ms"
    if ms < 999.5:
        return f"{ms:.0f} ms"
    if ms < 59_995:
        return f"{ms / 1000:.2f} s"
    seconds = round(ms / 1000)
    if seconds < 3600:
        return _two(*divmod(seconds, 60), "min", "s")
    minutes = round(ms / 60_000)
    if minutes < 48 * 60:
        return _two(*divmod(minutes, 60), "h", "min")
    return _two(*divmod(round(ms / 3_600_000), 24), "d", "h")


def _two(big: int, small: int, big_unit: str, small_unit: str) -> str:
    return f"{big} {big_unit}" if small == 0 else f"{big} {big_unit} {small} {small_unit}"


def fmt_offset(seconds: float | None) -> str:
    """A time relative to the instance's start, e.g. "+1.25 s"."""
    if seconds is None:
        return "—"
    return "+" + fmt_duration(max(0.0, seconds) * 1000)


def fmt_relative(epoch: float | None, now: float) -> str:
    if epoch is None:
        return ""
    delta = epoch - now
    if abs(delta) < 0.5:
        return "now"
    text = fmt_duration(abs(delta) * 1000)
    return f"in {text}" if delta > 0 else f"{text} ago"


def fmt_count(value: int | float | None) -> str:
    """1234567 → "1.23 M" (the exact number goes in a title attribute)."""
    if value is None:
        return "—"
    n = float(value)
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            return f"{n / limit:.3g} {suffix}"
    return f"{int(n)}"


def fmt_bytes(size: int | None) -> str:
    if size is None:
        return "—"
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value:.1f} TiB"


def pretty_json(value: Any) -> str:
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False)
    except RecursionError:
        # Indented JSON is encoded in Python, a frame per level: very deep values go compact.
        text = _compact_json(value)
    except (TypeError, ValueError):
        text = repr(value)
    return _cut(text)


def _compact_json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (RecursionError, TypeError, ValueError):
        return "(too deeply nested to show; the API returns it)"


def _cut(text: str) -> str:
    if len(text) <= PREVIEW_CHARS:
        return text
    return text[:PREVIEW_CHARS] + f"\n… ({len(text) - PREVIEW_CHARS} more characters; the API returns all of it)"


def json_size(value: Any) -> int:
    try:
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    except (RecursionError, TypeError, ValueError):
        return 0


CONTROLS_SHOWN = {code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7F, 0xA0)] if chr(code) not in "\t\n\r"}
"""Control characters (none of which the templates use) as visible escapes, e.g. ESC as "\\x1b"."""


class SafeHTMLResponse(HTMLResponse):
    """HTML with tenant text made plain: control characters and lone surrogates (valid in stored
    JSON, not in UTF-8) are shown as escapes ("\\x1b", "\\ud800")."""

    def render(self, content: Any) -> bytes:
        if isinstance(content, str):
            return content.translate(CONTROLS_SHOWN).encode(self.charset, "backslashreplace")
        return bytes(super().render(content))


def safe_next(target: str | None) -> str:
    r"""Where to go after sign-in: `target` if it is a path on this origin, else "/".

    Browsers read "\\" as "/" and drop tabs and newlines from URLs, so "/\\evil.example" or
    "/\t/evil.example" would leave the origin: a path starts with one "/" and has no backslash or
    control character, also after one more round of percent-decoding; the sign-in page itself is
    no target.
    """
    if not target:
        return "/"
    for form in (target, unquote(target)):
        if not form.startswith("/") or form.startswith("//") or "\\" in form:
            return "/"
        if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in form):
            return "/"
    if target == "/login" or target.startswith(("/login?", "/login/")):
        return "/"
    return target


# -- view models -----------------------------------------------------------------


@dataclass
class AttemptView:
    number: int
    ok: bool
    error_name: str | None
    error_message: str | None
    fuel: int
    duration_ms: float
    start: float
    end: float
    traceback: str | None = None


@dataclass
class EventView:
    seq: int
    type: str
    payload: str
    size: int
    arrived: float
    consumed_by: int | None
    consumer: str | None = None


@dataclass
class StepView:
    position: int
    name: str
    kind: str
    state: str
    state_label: str
    attempts: int
    start: float | None
    end: float | None
    duration_ms: float | None
    fuel: int
    result: str | None
    result_size: int | None
    error_name: str | None
    error_message: str | None
    wake_at: float | None
    event_type: str | None
    attempt_log: list[AttemptView] = field(default_factory=list)
    events: list[EventView] = field(default_factory=list)
    bar_x: float = 0.0
    bar_w: float = 0.0
    # What the bar spans (epoch seconds), for the page to rescale it as the timeline grows; an open end
    # (a step still going) is None.
    bar_begin: float = 0.0
    bar_stop: float | None = None
    updated_at: float = 0.0

    @property
    def look(self) -> str:
        """The state the page colours by (a sleep whose time has come is shown as done)."""
        return "slept" if self.state_label == "slept" else self.state


@dataclass
class Timeline:
    start: float
    end: float
    steps: list[StepView]
    events: list[EventView]
    log_lines: list[str]
    total_fuel: int
    total_ms: float
    cursor: int = -1
    """The last position shown in its final state (with every one before it): where a watch resumes."""


STATE_LABELS = {
    "done": "done",
    "failed": "failed",
    "retrying": "retrying",
    "sleeping": "sleeping",
    "waiting": "waiting",
    "timed_out": "timed out",
}


def build_timeline(instance: Instance, journal: dict[str, Any], now: float) -> Timeline:
    """The journal as the page shows it: each position with its start, end and cost, in order."""
    live = instance.status not in FINISHED
    events = [
        EventView(
            seq=int(e["seq"]),
            type=str(e["type"]),
            payload=pretty_json(e["payload"]),
            size=json_size(e["payload"]),
            arrived=float(e["created_at"]),
            consumed_by=e.get("consumed_at"),
        )
        for e in journal.get("events", [])
    ]
    steps: list[StepView] = []
    for raw in journal.get("steps", []):
        attempts = [
            AttemptView(
                number=int(a["attempt"]),
                ok=bool(a["ok"]),
                error_name=a.get("error_name"),
                error_message=a.get("error_message"),
                fuel=int(a.get("fuel") or 0),
                duration_ms=float(a.get("duration_ms") or 0.0),
                start=float(a["finished_at"]) - float(a.get("duration_ms") or 0.0) / 1000,
                end=float(a["finished_at"]),
                traceback=a.get("traceback"),
            )
            for a in raw.get("attempt_log", [])
        ]
        kind = str(raw["kind"])
        state = str(raw["state"])
        created = float(raw.get("created_at") or instance.created_at)
        updated = float(raw.get("updated_at") or created)
        wake_at = raw.get("wake_at")
        start: float | None = created
        end: float | None = None
        duration: float | None = None
        label = STATE_LABELS.get(state, state)
        if kind in ("do", "rollback"):  # a rollback runs attempts as a step does
            if attempts:
                start = min(created, attempts[0].start)
            if state in ("done", "failed"):
                end = attempts[-1].end if attempts else updated
            duration = float(raw.get("duration_ms") or 0.0) or (sum(a.duration_ms for a in attempts) or None)
        elif kind == "sleep":
            if wake_at is not None and float(wake_at) <= now:
                end = float(wake_at)
                label = "slept"
            duration = None if wake_at is None else (float(wake_at) - created) * 1000
        else:
            if state in ("done", "timed_out"):
                end = updated
            duration = None if end is None else (end - created) * 1000
        has_result = state == "done" and kind != "sleep"
        result = raw.get("result")
        view = StepView(
            position=int(raw["position"]),
            name=str(raw["name"]),
            kind=kind,
            state=state,
            state_label=label,
            attempts=int(raw.get("attempts") or len(attempts)),
            start=start,
            end=end,
            duration_ms=duration,
            fuel=int(raw.get("fuel") or 0) or sum(a.fuel for a in attempts),
            result=pretty_json(result) if has_result else None,
            result_size=json_size(result) if has_result else None,
            error_name=raw.get("error_name"),
            error_message=raw.get("error_message"),
            wake_at=None if wake_at is None else float(wake_at),
            event_type=raw.get("event_type"),
            attempt_log=attempts,
            updated_at=updated,
        )
        steps.append(view)
    by_position = {s.position: s for s in steps}
    for event in events:
        if event.consumed_by is not None and event.consumed_by in by_position:
            consumer = by_position[event.consumed_by]
            event.consumer = consumer.name
            consumer.events.append(event)

    t0 = instance.created_at
    ends = [t0, instance.updated_at]
    for s in steps:
        ends += [x for x in (s.start, s.end) if x is not None]
    t1 = max([*ends, now] if live else ends)
    span = max(t1 - t0, 1e-3)
    for s in steps:
        begin = s.start if s.start is not None else t0
        stop = s.end if s.end is not None else (now if live else t1)
        if s.kind == "sleep" and s.wake_at is not None and s.end is None:
            stop = min(s.wake_at, t1)
        s.bar_x = round(max(0.0, min(1.0, (begin - t0) / span)) * 1000, 1)
        s.bar_w = round(max(0.004, min(1.0, (stop - begin) / span)) * 1000, 1)
        s.bar_w = min(s.bar_w, 1000 - s.bar_x) or 4.0
        s.bar_begin = begin
        s.bar_stop = None if live and s.end is None and not (s.kind == "sleep" and s.wake_at is not None) else stop
    log = str(journal.get("log") or "")
    return Timeline(
        start=t0,
        end=t1,
        steps=steps,
        events=events,
        log_lines=_cut(log).splitlines(),
        total_fuel=sum(s.fuel for s in steps),
        total_ms=sum(s.duration_ms or 0.0 for s in steps if s.kind == "do"),
        cursor=_cursor(steps),
    )


def _cursor(steps: list[StepView]) -> int:
    """As service.watching's cursor: every step but the last is final, and the last once it has ended."""
    if not steps:
        return -1
    last = steps[-1]
    return last.position if last.state in FINAL_STATES else last.position - 1


# -- the instance page: what it is doing now, and the compact timeline's rows ----------------------------------


@dataclass(frozen=True)
class NowLine:
    """One line on what an instance is doing now: `phrase`, then `until` (a time, if any), then `after`.

    `kind` is one of: queued, running, retry_running, sleeping, event, retry, waiting, paused,
    waiting_for_pause, rolling_back, complete, errored, terminated."""

    kind: str
    phrase: str
    until: float | None = None
    after: str = ""
    step: str | None = None
    event_type: str | None = None
    attempt: int | None = None

    def sentence(self) -> str:
        """As plain text (times in UTC)."""
        parts = [self.phrase]
        if self.until is not None:
            parts.append(fmt_time(self.until))
        if self.after:
            parts.append(self.after)
        return " ".join(parts)


def now_line(instance: Instance, last: list[dict[str, Any]], now: float) -> NowLine:
    """What the instance is doing now, from its status and its last journal entries (the journal API's shape,
    in position order; the last one or two are enough).

    An attempt is "attempt n of m" once the step has journaled its retry limit (after its first attempt)."""
    entry = last[-1] if last else None
    name = None if entry is None else str(entry["name"])
    state = None if entry is None else str(entry["state"])
    kind = None if entry is None else str(entry["kind"])
    wake = None if entry is None or entry.get("wake_at") is None else float(entry["wake_at"])
    attempts = 0 if entry is None else int(entry.get("attempts") or len(entry.get("attempt_log") or []))
    limit = None if entry is None or entry.get("attempt_limit") is None else int(entry["attempt_limit"])
    of = f"attempt {attempts + 1}" + ("" if limit is None else f" of {limit}")
    status = instance.status
    rolled = {"terminate": "after terminate", "error": "after an error"}.get(instance.rollback or "", "")
    if status == "complete":
        return NowLine("complete", "Complete: finished", instance.updated_at)
    if status == "errored":
        error = instance.error or {}
        what = f"{error.get('name') or 'Error'}: {str(error.get('message') or '')[:300]}".rstrip(": ")
        return NowLine("errored", f"Errored{' (rolled back)' if rolled else ''}: {what}; at", instance.updated_at)
    if status == "terminated":
        return NowLine("terminated", f"Terminated{' (rolled back)' if rolled else ''} at", instance.updated_at)
    if status == "paused":
        return NowLine("paused", "Paused" + (f" after step '{name}'" if name else "") + "; resume to go on", step=name)
    if status == "waiting_for_pause":
        return NowLine(
            "waiting_for_pause", "Waiting for pause: the running activation stops at its next durable call", step=name
        )
    if rolled and status in ("running", "waiting", "queued"):
        doing = f": step '{name}'" if kind == "rollback" and name else ""
        return NowLine("rolling_back", f"Rolling back ({rolled}){doing}", step=name if doing else None)
    if status == "queued":
        if instance.wake_at is not None and instance.wake_at > now + DUE_SLACK_S:
            return NowLine("queued", "Queued until", instance.wake_at)
        return NowLine("queued", "Queued: waiting for a worker")
    if status == "running":
        if state == "retrying" and kind in ("do", "rollback") and (wake is None or wake <= now + DUE_SLACK_S):
            return NowLine("retry_running", f"Running step '{name}'", after=f"({of})", step=name, attempt=attempts + 1)
        if name is None:
            return NowLine("running", "Running: no step journaled yet")
        return NowLine("running", f"Running: the code after step '{name}'", step=name)
    # waiting (sleep, event, retry back-off)
    if kind == "sleep" and state == "sleeping":
        return NowLine("sleeping", f"Sleeping in '{name}' until", wake, step=name)
    if kind == "wait" and state == "waiting":
        event_type = str(entry.get("event_type") or "") if entry else ""
        phrase = f"Waiting for event '{event_type}' (step '{name}')"
        if wake is None:
            return NowLine("event", phrase + ", with no timeout", step=name, event_type=event_type)
        return NowLine("event", phrase + " until", wake, step=name, event_type=event_type)
    if kind in ("do", "rollback") and state == "retrying":
        return NowLine("retry", f"Retry of '{name}' at", wake, after=f"({of})", step=name, attempt=attempts + 1)
    return NowLine("waiting", "Waiting until" if instance.wake_at is not None else "Waiting", instance.wake_at)


LOOK_ORDER = ("failed", "timed_out", "retrying", "waiting", "sleeping", "slept", "done")
"""A group's colour is its most pressing member's state."""


@dataclass
class RowView:
    """One row of the compact timeline: a step, or a run of consecutive calls of one name (`count` > 1)."""

    first: int
    last: int
    name: str
    kind: str
    count: int
    looks: dict[str, int]
    begin: float
    stop: float | None
    """The bar's end; None: still going (the page draws it to now)."""
    duration_ms: float | None
    busy: list[tuple[float, float]]
    """When something ran (attempts of its steps), merged; sleeps and waits are idle time."""
    updated: float = 0.0
    """Its last step's `updated_at` (the only one of a group that may still change)."""

    @property
    def look(self) -> str:
        return next((look for look in LOOK_ORDER if look in self.looks), next(iter(self.looks), "done"))

    @property
    def label(self) -> str:
        if len(self.looks) == 1:
            return STATE_LABELS.get(self.look, self.look)
        return " · ".join(
            f"{n:,} {STATE_LABELS.get(look, look)}"
            for look, n in sorted(self.looks.items(), key=lambda item: LOOK_ORDER.index(item[0]))
        )

    @property
    def busy_text(self) -> str:
        return " ".join(f"{b:.6f} {e:.6f}" for b, e in self.busy)


MAX_BUSY = 24
"""A row's busy intervals beyond this many are given as its whole span."""
BUSY_JOIN_S = 0.25
"""Busy intervals closer than this are one (a tight loop of steps is one stretch of work)."""
STATE_LABELS["slept"] = "slept"


def _merge(intervals: list[tuple[float, float]], join: float = BUSY_JOIN_S) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for begin, end in sorted(intervals):
        if merged and begin <= merged[-1][1] + join:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((begin, end))
    return merged


Bar = tuple[float, float | None, str, float | None, list[tuple[float, float]]]


def _step_bar(raw: dict[str, Any], default_start: float, now: float, live: bool) -> Bar:
    """A raw journal step's (begin, stop or None if still going, look, duration ms, busy intervals)."""
    kind, state = str(raw["kind"]), str(raw["state"])
    created = float(raw.get("created_at") or default_start)
    updated = float(raw.get("updated_at") or created)
    wake = raw.get("wake_at")
    look = state
    busy: list[tuple[float, float]] = []
    begin, stop = created, None
    duration: float | None = None
    if kind in ("do", "rollback"):
        for attempt in raw.get("attempt_log") or []:
            end = float(attempt["finished_at"])
            busy.append((end - float(attempt.get("duration_ms") or 0.0) / 1000, end))
        if busy:
            begin = min(created, busy[0][0])
        if state in ("done", "failed"):
            stop = busy[-1][1] if busy else updated
        elif state == "retrying" and wake is not None:
            stop = float(wake)
        duration = float(raw.get("duration_ms") or 0.0) or (sum(e - b for b, e in busy) * 1000 or None)
        if not busy:
            busy = [(begin, stop if stop is not None else begin)]
    elif kind == "sleep":
        stop = None if wake is None else float(wake)
        if stop is not None and stop <= now:
            look = "slept"
        duration = None if wake is None else (float(wake) - created) * 1000
    else:
        if state in ("done", "timed_out"):
            stop = updated
        duration = None if stop is None else (stop - created) * 1000
    if stop is None and not live:
        stop = updated
    return begin, stop, look, duration, busy


def build_rows(instance: Instance, steps: list[dict[str, Any]], now: float, *, group: bool = True) -> list[RowView]:
    """The compact timeline's rows: raw journal steps (the journal API's shape, in position order), with runs of
    consecutive calls of one name and kind made one row each (unless `group` is false)."""
    live = instance.status not in FINISHED
    rows: list[RowView] = []
    for raw in steps:
        begin, stop, look, duration, busy = _step_bar(raw, instance.created_at, now, live)
        position, name, kind = int(raw["position"]), str(raw["name"]), str(raw["kind"])
        row = rows[-1] if rows else None
        if group and row is not None and row.name == name and row.kind == kind and row.last == position - 1:
            row.last, row.count, row.updated = position, row.count + 1, raw.get("updated_at") or 0.0
            row.looks[look] = row.looks.get(look, 0) + 1
            row.stop = None if stop is None or row.stop is None else max(row.stop, stop)
            row.busy = _merge(row.busy + busy) if len(row.busy) <= MAX_BUSY else row.busy
            if duration is not None and kind in ("do", "rollback"):
                row.duration_ms = (row.duration_ms or 0.0) + duration
            continue
        updated = raw.get("updated_at") or 0.0
        rows.append(RowView(position, position, name, kind, 1, {look: 1}, begin, stop, duration, _merge(busy), updated))
    for row in rows:
        if row.count > 1 and row.kind not in ("do", "rollback"):
            row.duration_ms = None if row.stop is None else (row.stop - row.begin) * 1000
        if len(row.busy) > MAX_BUSY:
            row.busy = [(row.busy[0][0], row.busy[-1][1])]
    return rows


MAX_ROWS = 300
"""The most rows one timeline fragment renders: beyond it, a row stands for the rest and loads it when asked."""


@dataclass
class GapView:
    """Rows left out of a fragment (positions `first`..`last`), with the span and busy time they cover."""

    first: int
    last: int
    rows: int
    steps: int
    begin: float
    stop: float | None
    busy: list[tuple[float, float]]

    @property
    def busy_text(self) -> str:
        return " ".join(f"{b:.6f} {e:.6f}" for b, e in self.busy)


def cap_rows(rows: list[RowView], limit: int = MAX_ROWS) -> list[RowView | GapView]:
    """`rows`, or, when there are more than `limit`, the first third of them, a gap for the middle, and the rest
    (the end of a timeline is where it changes)."""
    if len(rows) <= limit:
        return list(rows)
    head = limit // 3
    tail = limit - head - 1
    middle = rows[head : len(rows) - tail]
    stops = [r.stop for r in middle]
    busy = _merge([span for r in middle for span in r.busy], join=BUSY_JOIN_S)
    if len(busy) > MAX_BUSY:
        busy = _merge(busy, join=max(1.0, (busy[-1][1] - busy[0][0]) / MAX_BUSY))[:MAX_BUSY]
    gap = GapView(
        first=middle[0].first,
        last=middle[-1].last,
        rows=len(middle),
        steps=sum(r.count for r in middle),
        begin=min(r.begin for r in middle),
        stop=None if any(s is None for s in stops) else max(s for s in stops if s is not None),
        busy=busy,
    )
    return [*rows[:head], gap, *rows[len(rows) - tail :]]
