"""Prometheus metrics, in a registry of their own (one per service, no process globals)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from tenantflow.host import LIMIT_ERRORS, Failed, Outcome

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StatusCollector(Collector):
    def __init__(self, counts: Callable[[], list[tuple[str, str, int]]]) -> None:
        self._counts = counts

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "tenantflow_instances", "Instances by tenant and status", labels=["tenant", "status"]
        )
        for tenant, status, count in self._counts():
            family.add_metric([tenant, status], count)
        yield family


class _ParkingCollector(Collector):
    def __init__(self, usage: Callable[[], tuple[int, int]]) -> None:
        self._usage = usage

    def collect(self) -> Iterable[GaugeMetricFamily]:
        count, used = self._usage()
        yield GaugeMetricFamily("tenantflow_parked_isolates", "Isolates parked at a wait (hot resume)", value=count)
        yield GaugeMetricFamily(
            "tenantflow_parked_budget_bytes", "Memory budget held by parked isolates (their memory caps)", value=used
        )


class _QueueCollector(Collector):
    def __init__(self, next_due: Callable[[], float | None], now: Callable[[], float]) -> None:
        self._next_due = next_due
        self._now = now

    def collect(self) -> Iterable[GaugeMetricFamily]:
        due, now = self._next_due(), self._now()
        lag = 0.0 if due is None or due > now else now - due
        yield GaugeMetricFamily(
            "tenantflow_queue_lag_seconds",
            "How long the oldest runnable instance (a due wake or an expired lease) has waited for a worker",
            value=lag,
        )


class Metrics:
    def __init__(self, status_counts: Callable[[], list[tuple[str, str, int]]] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.activations = Counter(
            "tenantflow_activations", "Activations by tenant and outcome", ["tenant", "outcome"], registry=self.registry
        )
        self.limit_hits = Counter(
            "tenantflow_limit_hits", "Activations killed by a limit", ["tenant", "kind"], registry=self.registry
        )
        self.isolate_start = Histogram(
            "tenantflow_isolate_start_seconds",
            "Time to a fresh isolate",
            ["tenant"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1),
            registry=self.registry,
        )
        self.step_latency = Histogram(
            "tenantflow_step_seconds",
            "Wall time of step.do attempts",
            ["tenant"],
            buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=self.registry,
        )
        self.step_fuel = Counter("tenantflow_step_fuel", "Fuel used by step bodies", ["tenant"], registry=self.registry)
        self.step_attempt_fuel = Histogram(
            "tenantflow_step_attempt_fuel",
            "Fuel (1e10 = about 1 s of CPU) of one step attempt",
            ["tenant"],
            buckets=(1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 3e12),
            registry=self.registry,
        )
        self.http_requests = Counter(
            "tenantflow_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "tenantflow_http_request_seconds",
            "HTTP request latency by method and route template",
            ["method", "route"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=self.registry,
        )
        self.replayed_steps = Counter(
            "tenantflow_replayed_steps",
            "Journal positions replayed by activations (re-run from the journal)",
            ["tenant"],
            registry=self.registry,
        )
        self.hot_resumes = Counter(
            "tenantflow_hot_resumes",
            "Waits gone on from in a parked isolate, without replay",
            ["tenant"],
            registry=self.registry,
        )
        self.evictions = Counter(
            "tenantflow_evictions",
            "Waits that ended their isolate (replayed when they end), by reason",
            ["tenant", "reason"],
            registry=self.registry,
        )
        if status_counts is not None:
            self.registry.register(_StatusCollector(status_counts))

    def watch_parking(self, usage: Callable[[], tuple[int, int]]) -> None:
        self.registry.register(_ParkingCollector(usage))

    def watch_queue(self, next_due: Callable[[], float | None], now: Callable[[], float]) -> None:
        self.registry.register(_QueueCollector(next_due, now))

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request, by its route's template (never the raw path: ids are not labels)."""
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_seconds.labels(method, route).observe(seconds)

    def park(self, tenant: str, evicted: str | None) -> None:
        """A wait ended: resumed in its isolate (None) or the isolate goes, and why."""
        if evicted is None:
            self.hot_resumes.labels(tenant).inc()
        else:
            self.evictions.labels(tenant, evicted).inc()

    def activation(
        self, tenant: str, outcome: Outcome, steps: Sequence[tuple[float, int]] = (), replayed: int = 0
    ) -> None:
        kind = type(outcome).__name__.lower()
        self.activations.labels(tenant, kind).inc()
        self.isolate_start.labels(tenant).observe(outcome.stats.instantiate_ms / 1000)
        if isinstance(outcome, Failed) and outcome.error.name in LIMIT_ERRORS:
            self.limit_hits.labels(tenant, outcome.error.name).inc()
        if steps:
            latency, fuel_total = self.step_latency.labels(tenant), self.step_fuel.labels(tenant)
            attempt_fuel = self.step_attempt_fuel.labels(tenant)
            for duration_ms, fuel in steps:
                latency.observe(duration_ms / 1000)
                fuel_total.inc(fuel)
                attempt_fuel.observe(fuel)
        if replayed:
            self.replayed_steps.labels(tenant).inc(replayed)

    def render(self) -> bytes:
        return generate_latest(self.registry)
