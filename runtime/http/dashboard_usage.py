"""The dashboard's usage page: a tenant's usage per day (an inline SVG bar chart, no script) and per workflow; for
an operator, every tenant's per day and per tenant (or one tenant's, with `?tenant=NAME`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from tenantflow.runtime.contract import parse_day
from tenantflow.runtime.errors import InvalidInput
from tenantflow.runtime.http.dashboard_views import fmt_bytes, fmt_count, fmt_duration
from tenantflow.runtime.usage import UsageCounts, UsageLine, UsageReport

if TYPE_CHECKING:
    from tenantflow.runtime.http.dashboard import Dashboard

# What the chart can show: a counter, its label, and how a value of it reads.
METRICS: dict[str, tuple[str, Callable[[float], str]]] = {
    "steps": ("Steps completed", lambda v: fmt_count(int(v))),
    "attempts": ("Step attempts", lambda v: fmt_count(int(v))),
    "cpu_s": ("CPU seconds (from fuel)", lambda v: f"{v:,.3f} s"),
    "workflow_cpu_s": ("Workflow CPU seconds (outside steps)", lambda v: f"{v:,.3f} s"),
    "duration_ms": ("Wall time in steps", fmt_duration),
    "activations": ("Activations", lambda v: fmt_count(int(v))),
    "isolate_starts": ("Isolate starts", lambda v: fmt_count(int(v))),
    "replayed_steps": ("Replayed steps", lambda v: fmt_count(int(v))),
    "journal_bytes": ("Journal bytes (net)", lambda v: ("-" if v < 0 else "") + fmt_bytes(abs(int(v)))),
    "instances": ("Instances created", lambda v: fmt_count(int(v))),
}
CHART_HEIGHT = 160
BAR_WIDTH = 24
BAR_GAP = 4


def metric_value(counts: UsageCounts, metric: str, fuel_per_second: int) -> float:
    if metric == "cpu_s":
        return counts.fuel / fuel_per_second
    if metric == "workflow_cpu_s":
        return counts.workflow_fuel / fuel_per_second
    return float(getattr(counts, metric))


@dataclass(frozen=True)
class Bar:
    day: str
    value: float
    text: str
    x: int
    y: float
    height: float


@dataclass(frozen=True)
class Chart:
    metric: str
    label: str
    bars: list[Bar]
    top: str
    width: int
    height: int = CHART_HEIGHT


def chart(report: UsageReport, metric: str) -> Chart:
    """Bars per day of `metric`, scaled to the largest (negative values, net journal bytes, draw as none)."""
    label, fmt = METRICS[metric]
    values = [(row.key, metric_value(row.counts, metric, report.fuel_per_second)) for row in report.rows]
    top = max([v for _, v in values] + [0.0])
    bars = []
    for n, (day, value) in enumerate(values):
        height = 0.0 if top <= 0 or value <= 0 else max(1.0, value / top * CHART_HEIGHT)
        bars.append(Bar(day, value, fmt(value), n * (BAR_WIDTH + BAR_GAP), CHART_HEIGHT - height, height))
    return Chart(metric, label, bars, fmt(top), max(1, len(bars) * (BAR_WIDTH + BAR_GAP)))


def _day(request: Request, name: str) -> date | None:
    text = request.query_params.get(name) or None
    if text is None:
        return None
    try:
        return parse_day(text)
    except ValueError as error:
        raise InvalidInput(f"{name}: {error}") from None


def usage_routes(d: Dashboard) -> list[BaseRoute]:
    """The page and its fragment (the page is a shell, as every dashboard page)."""

    def fragment(request: Request) -> Response:
        actor = d.actor(request)
        first, last = _day(request, "from"), _day(request, "to")
        metric = request.query_params.get("metric", "steps")
        metric = metric if metric in METRICS else "steps"
        usage = d.service.usage
        if actor.operator and not request.query_params.get("tenant"):
            viewed = None
            days = usage.admin(actor, first, last, "day")
            rows = usage.admin(actor, first, last, "tenant")
        else:
            viewed = d.scope(request)[1]
            days = usage.tenant(viewed, first, last, "day")
            rows = usage.tenant(viewed, first, last, "workflow")
        context: dict[str, Any] = {
            "actor": actor,
            "viewed": viewed,
            "days": days,
            "rows": rows,
            "chart": chart(days, metric),
            "metrics": METRICS,
            "cells": _cells(days.fuel_per_second),
        }
        return d.render("_usage.html", fragment=True, **context)

    return [
        Route("/usage", d.page("usage.html"), methods=["GET"], include_in_schema=False),
        Route("/ui/fragments/usage", fragment, methods=["GET"], include_in_schema=False),
    ]


def _cells(fuel_per_second: int) -> Callable[[UsageLine | UsageCounts], list[str]]:
    """A table row's cells: each metric of a line (or a total), as it reads."""

    def cells(line: UsageLine | UsageCounts) -> list[str]:
        counts = line.counts if isinstance(line, UsageLine) else line
        return [fmt(metric_value(counts, metric, fuel_per_second)) for metric, (_, fmt) in METRICS.items()]

    return cells
