"""The dashboard's instance lists: the tenant's instances page (`/instances`, across workflows or one) and the
list on a workflow's page, from one fragment (`_instances.html`).

The fragment's query is the page's own (so its links are the page's links, and work without script):
`status`, `created_after` and `created_before` (epoch seconds, as the API takes), `id` (an id or the start of
one), `after` / `before` (cursors: older and newer pages), `limit`, `workflow` (the instances page only) and
`tenant` (an operator viewing another tenant). `static/instances.js` fetches it for each change of filter and
puts it in place without reloading the page, keeping the address in step (history.replaceState). The status
tabs carry capped per-status counts (`Service.count_instances`), and the list knows how many instances its
filter matches, for "select all matching" and the confirmation naming the count.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response
from tenantflow.runtime.contract import parse_time
from tenantflow.runtime.errors import InvalidInput
from tenantflow.runtime.http.dashboard_views import MAX_PAGE_SIZE, PAGE_SIZE
from tenantflow.runtime.records import STATUSES
from tenantflow.runtime.service.application import COUNT_CAP

if TYPE_CHECKING:
    from tenantflow.runtime.http.dashboard import Dashboard

__all__ = ["instance_list"]

# The page's filters, in the order links carry them (a cursor last).
FILTERS = ("tenant", "workflow", "status", "created_after", "created_before", "id")


def _time(text: str | None, name: str) -> float | None:
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        raise InvalidInput(f"{name} is a time: epoch seconds or ISO 8601 with a timezone") from None


def _limit(text: str | None) -> int:
    if text and text.isdigit() and len(text) < 5:
        return max(1, min(int(text), MAX_PAGE_SIZE))
    return PAGE_SIZE


def count_text(count: int, capped: bool) -> str:
    return f"{count:,}+" if capped else f"{count:,}"


def instance_list(dashboard: Dashboard, request: Request, workflow: str | None) -> Response:
    """The list fragment: status tabs with counts, the page of instances (with checkboxes to act on them, for
    the tenant's own key), and the pager. `workflow`: the workflow page's (NotFound if it has none such)."""
    actor, viewed = dashboard.scope(request)
    service = dashboard.service
    query = request.query_params
    page_path = "/instances" if workflow is None else f"/workflows/{quote(workflow, safe='')}"
    chosen = workflow if workflow is not None else (query.get("workflow") or None)
    status = query.get("status") or None
    created_after = _time(query.get("created_after"), "created_after")
    created_before = _time(query.get("created_before"), "created_before")
    id_prefix = query.get("id") or None
    after, before = query.get("after") or None, query.get("before") or None
    limit = _limit(query.get("limit"))
    if workflow is not None:
        page = service.instances(
            viewed, workflow, status, limit, after, created_after, created_before, before=before, id_prefix=id_prefix
        )
    else:
        page = service.tenant_instances(
            viewed, chosen, status, limit, after, created_after, created_before, before=before, id_prefix=id_prefix
        )
    counted = service.count_instances(viewed, chosen, created_after, created_before, id_prefix)
    capped = set(counted.capped)
    everything = sum(counted.counts.values())
    total, total_capped = (
        (counted.counts[status], status in capped) if status is not None else (everything, bool(capped))
    )
    kept: dict[str, Any] = {
        "workflow": chosen if workflow is None else None,
        "status": status,
        "created_after": query.get("created_after") or None,
        "created_before": query.get("created_before") or None,
        "id": id_prefix,
        "limit": query.get("limit") if limit != PAGE_SIZE else None,
    }

    def link(**changes: Any) -> str:
        """The page's address with these filters changed (and no cursor unless one is given)."""
        params = {**kept, **changes}
        items = {k: v for k, v in params.items() if v not in (None, "")}
        if viewed.tenant_id != actor.tenant_id:
            items = {"tenant": viewed.tenant_id, **items}
        return page_path + (("?" + urlencode(items)) if items else "")

    # What "select all matching" acts on: the API's bulk filter, and the words the confirmation uses.
    matching = {
        k: v
        for k, v in (
            ("status", status),
            ("created_after", created_after),
            ("created_before", created_before),
            ("id_prefix", id_prefix),
        )
        if v is not None
    }
    readonly = viewed.tenant_id != actor.tenant_id
    return dashboard.render(
        "_instances.html",
        fragment=True,
        actor=actor,
        viewed=viewed,
        readonly=readonly,
        name=workflow,
        workflow=chosen,
        across=workflow is None,
        instances=page.instances,
        status=status,
        searching=id_prefix,
        after=after,
        before=before,
        next_after=page.next_after,
        prev_before=page.prev_before,
        counts=counted.counts,
        capped=capped,
        all_count=count_text(everything, bool(capped)),
        total=total,
        total_text=count_text(total, total_capped),
        total_capped=total_capped,
        cap=COUNT_CAP,
        filter_json=json.dumps({"workflow": chosen, "filter": matching}),
        filtered=bool(created_after is not None or created_before is not None or id_prefix),
        link=link,
        count_text=count_text,
        statuses=STATUSES,
        now=time.time(),
        q=dashboard.query,
    )
