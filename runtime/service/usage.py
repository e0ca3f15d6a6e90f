"""Usage reports: a tenant's own, and an operator's across tenants (the API, the dashboard and the CLI use these)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from tenantflow.host.limits import FUEL_PER_SECOND
from tenantflow.runtime.engine.clock import Clock
from tenantflow.runtime.errors import Forbidden
from tenantflow.runtime.records import Tenant, check_id
from tenantflow.runtime.store import SQLStore
from tenantflow.runtime.usage import UsageCounts, UsageGroup, UsageLine, UsageReport, total, usage_days


class UsageReports:
    def __init__(self, store: SQLStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def tenant(
        self, tenant: Tenant, first: date | None = None, last: date | None = None, group_by: UsageGroup = "day"
    ) -> UsageReport:
        """The tenant's usage over `first`..`last` (UTC days, both included; by default the last 30 days)."""
        return self._report(tenant.tenant_id, first, last, group_by)

    def admin(
        self,
        actor: Tenant,
        first: date | None = None,
        last: date | None = None,
        group_by: UsageGroup = "tenant",
        tenant: str | None = None,
    ) -> UsageReport:
        """Every tenant's usage (or one tenant's, by name), for an operator key only."""
        if not actor.operator:
            raise Forbidden("usage across tenants needs an operator key, not a tenant key")
        tenant_id = None if tenant is None else self.store.tenant(check_id(tenant, "tenant name")).tenant_id
        return self._report(tenant_id, first, last, group_by)

    def _report(self, tenant_id: str | None, first: date | None, last: date | None, group: UsageGroup) -> UsageReport:
        today = datetime.fromtimestamp(self.clock.now(), UTC).date()
        start, end = usage_days(first, last, today)
        rows = self.store.usage(tenant_id, start, end, group)
        if group == "day":
            rows = _every_day(rows, start, end)
        return UsageReport(start, end, group, total([r.counts for r in rows]), rows, tenant_id, FUEL_PER_SECOND)


def _every_day(rows: list[UsageLine], start: str, end: str) -> list[UsageLine]:
    """A row for each day of the range, zero where nothing was used (a chart's bars, a table's lines)."""
    found = {row.key: row for row in rows}
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    days = (first + timedelta(days=n) for n in range((last - first).days + 1))
    return [found.get(day.isoformat()) or UsageLine(day.isoformat(), UsageCounts()) for day in days]
