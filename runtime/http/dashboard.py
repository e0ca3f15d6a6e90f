"""The dashboard: server-rendered pages over the same `Service` and the same API keys as the /v1 API.

How it fits together:

- Pages (`/`, `/login`, `/workflows/{name}`, `/workflows/{name}/instances/{id}`) are HTML shells that
  carry no tenant data, so they need no credentials.
- The sign-in page keeps the tenant's API key in the tab's `sessionStorage` (gone when the tab
  closes; never a cookie, so no request is ever authenticated by the browser on its own).
- `static/dashboard.js` fills each shell's regions from HTML fragments rendered here
  (`/ui/fragments/...`), sending `Authorization: Bearer <key>` exactly as an HTTP client does.
  The instance page (`static/instance.js`) follows the API's watch stream (`GET /v1/.../watch`, read with
  fetch: EventSource cannot send that header) and fetches only what changed: the now-line on any change,
  the summary and activity on a status change, the timeline's rows from the first one an entry event
  touches (`.../rows?from=`). A step's detail (`.../step?position=`) and a group's members
  (`.../rows?from=&to=&flat=1`) are fetched when their row is opened. Other live regions, and the instance page
  while its stream is down (or for an operator viewing another tenant), are polled every second or two.
- Every action (start, pause, resume, terminate, restart, send an event) is a `fetch` to the /v1
  API with the same header: the dashboard has no write path of its own.
- An operator key may read every tenant's workflows and instances (`?tenant=NAME`); controls
  on another tenant's instances need that tenant's own key, so they are not offered there.

All tenant data is escaped by Jinja2's autoescaping, and every dashboard response carries a
Content-Security-Policy that allows only this origin's scripts and styles (no inline script).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from tenantflow.runtime.contract import MAX_PAGE
from tenantflow.runtime.http.auth import bearer_key
from tenantflow.runtime.http.dashboard_lists import instance_list
from tenantflow.runtime.http.dashboard_usage import usage_routes
from tenantflow.runtime.http.dashboard_views import (
    NO_STORE,
    SECURITY_HEADERS,
    STATIC,
    STATUS_SYMBOLS,
    TEMPLATES,
    SafeHTMLResponse,
    build_rows,
    build_timeline,
    cap_rows,
    fmt_bytes,
    fmt_count,
    fmt_duration,
    fmt_offset,
    fmt_relative,
    fmt_time,
    iso_time,
    now_line,
    pretty_json,
    safe_next,
)
from tenantflow.runtime.records import FINISHED, STATUSES, Tenant, check_id
from tenantflow.runtime.service import Service
from tenantflow.runtime.service.watching import FINAL_STATES

# The last journal position there can be (a tenant's `max_steps` is at most 100,000).
MAX_POSITION = 10**9
# The workflow page lists this many of the newest versions; the operator's front page this many workflows of
# each tenant. The API pages through the rest.
VERSIONS_SHOWN = 100
WORKFLOWS_PER_TENANT = 100

__all__ = [
    "STATIC",
    "Dashboard",
    "build_timeline",
    "dashboard_routes",
    "fmt_bytes",
    "fmt_count",
    "fmt_duration",
    "fmt_relative",
    "fmt_time",
    "iso_time",
    "safe_next",
]

# -- the routes --------------------------------------------------------------------


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        time=fmt_time,
        iso=iso_time,
        duration=fmt_duration,
        offset=fmt_offset,
        count=fmt_count,
        bytes=fmt_bytes,
        json=pretty_json,
    )
    env.globals.update(statuses=STATUSES, symbols=STATUS_SYMBOLS, relative=fmt_relative, finished=FINISHED)
    return env


class Dashboard:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.env = _environment()

    # -- plumbing ------------------------------------------------------------

    def render(self, template: str, status_code: int = 200, *, fragment: bool = False, **context: Any) -> Response:
        html = self.env.get_template(template).render(**context)
        headers = dict(SECURITY_HEADERS)
        if fragment:
            headers.update(NO_STORE)
        return SafeHTMLResponse(html, status_code=status_code, headers=headers)

    def actor(self, request: Request) -> Tenant:
        return self.service.authenticate(bearer_key(request))

    def scope(self, request: Request) -> tuple[Tenant, Tenant]:
        """(who is asking, whose resources are shown)."""
        actor = self.actor(request)
        return actor, self.service.view_as(actor, request.query_params.get("tenant") or None)

    @staticmethod
    def query(viewed: Tenant, actor: Tenant, **params: Any) -> str:
        """A query string that keeps the viewed tenant (for an operator looking at another tenant)."""
        items = {k: v for k, v in params.items() if v not in (None, "")}
        if viewed.tenant_id != actor.tenant_id:
            items = {"tenant": viewed.tenant_id, **items}
        return ("?" + urlencode(items)) if items else ""

    # -- pages (no tenant data: safe without credentials) -----------------------

    def page(self, template: str) -> Any:
        def endpoint(request: Request) -> Response:
            params = dict(request.path_params)
            for key, what in (("name", "workflow name"), ("id", "instance id")):
                if key in params:
                    check_id(params[key], what)
            return self.render(
                template,
                page=template.removesuffix(".html"),
                path=params,
                query=dict(request.query_params),
                statuses=STATUSES,
            )

        return endpoint

    def login(self, request: Request) -> Response:
        return self.render(
            "login.html",
            page="login",
            path={},
            query=dict(request.query_params),
            statuses=STATUSES,
            next=safe_next(request.query_params.get("next")),
        )

    def favicon(self, request: Request) -> Response:
        return RedirectResponse("/ui/static/favicon.svg", status_code=301)

    # -- fragments (Bearer auth, like the API) ----------------------------------

    def me(self, request: Request) -> Response:
        actor = self.actor(request)
        return JSONResponse(
            {"tenant": actor.tenant_id, "name": actor.name, "operator": actor.operator}, headers=NO_STORE
        )

    def workflows_fragment(self, request: Request) -> Response:
        actor = self.actor(request)
        tenants = self.service.tenants(actor)
        # One tenant's page holds as many as its quota allows by default; an operator's view of every tenant
        # shows the first WORKFLOWS_PER_TENANT of each (the API pages through the rest).
        limit = MAX_PAGE if len(tenants) == 1 else WORKFLOWS_PER_TENANT
        groups = [(tenant, self.service.workflows(tenant, limit=limit)) for tenant in tenants]
        return self.render("_workflows.html", fragment=True, actor=actor, groups=groups, q=self.query)

    def workflow_fragment(self, request: Request) -> Response:
        actor, viewed = self.scope(request)
        name = request.path_params["name"]
        versions = self.service.versions(viewed, name, limit=VERSIONS_SHOWN)
        version_text = request.query_params.get("version", "")
        chosen = int(version_text) if version_text.isdigit() and len(version_text) < 10 else None
        version, source = self.service.source(viewed, name, chosen)
        return self.render(
            "_workflow.html",
            fragment=True,
            actor=actor,
            viewed=viewed,
            readonly=viewed.tenant_id != actor.tenant_id,
            name=name,
            versions=versions.versions,
            older=versions.next_before,
            version=version,
            source_lines=source.splitlines(),
            open_source=chosen is not None,
            q=self.query,
        )

    def instances_fragment(self, request: Request) -> Response:
        """One workflow's list (the workflow page)."""
        return instance_list(self, request, request.path_params["name"])

    def tenant_instances_fragment(self, request: Request) -> Response:
        """The tenant's list across its workflows, or one workflow's (`?workflow=`) (the instances page)."""
        return instance_list(self, request, None)

    def instance_fragment(self, part: str) -> Any:
        """The instance's summary (status, params, output or error), what it is doing now, its timeline (compact
        rows), some of its rows (`rows`), one step's detail (`step`), or its events and log (`activity`)."""

        def endpoint(request: Request) -> Response:
            return self._instance(request, part)

        return endpoint

    def _instance(self, request: Request, part: str) -> Response:
        actor, viewed = self.scope(request)
        name, instance_id = request.path_params["name"], request.path_params["id"]
        instance = self.service.instance(viewed, name, instance_id)
        now = time.time()
        context: dict[str, Any] = {}
        if part == "now":  # from the last entries only
            context["line"] = now_line(instance, self._last_entries(viewed, name, instance_id, instance.steps), now)
        elif part == "step":
            # From the start: "Fork from here" names the call by its count among the calls of its name.
            position = _int(request, "position", 0)
            steps, events = self._journal(viewed, name, instance_id, 0, position)
            mine = [s for s in steps if int(s["position"]) == position]
            journal = {"steps": mine, "events": [e for e in events if e.get("consumed_at") == position]}
            context["step"] = next(iter(build_timeline(instance, journal, now).steps), None)
            context["position"] = position
            context["start"] = instance.created_at
            context["count"] = sum(1 for s in steps if mine and s["name"] == mine[0]["name"])
        elif part in ("timeline", "rows"):
            first = _int(request, "from", 0) if part == "rows" else 0
            last = _int(request, "to", MAX_POSITION) if part == "rows" else MAX_POSITION
            steps, _ = self._journal(viewed, name, instance_id, first, last)
            flat = part == "rows" and request.query_params.get("flat") == "1"
            rows = build_rows(instance, steps, now, group=not flat)
            context.update(rows=cap_rows(rows), steps=len(steps), start=instance.created_at, cursor=_cursor(steps))
        else:
            steps, events = self._journal(viewed, name, instance_id, 0, MAX_POSITION)
            everything: dict[str, Any] = {"steps": steps, "events": events, "log": instance.log}
            context["timeline"] = build_timeline(instance, everything, now)
        return self.render(
            f"_instance_{part}.html",
            fragment=True,
            actor=actor,
            viewed=viewed,
            readonly=viewed.tenant_id != actor.tenant_id,
            name=name,
            instance=instance,
            now=now,
            q=self.query,
            **context,
        )

    def _last_entries(self, viewed: Tenant, name: str, instance_id: str, counted: int) -> list[dict[str, Any]]:
        """The journal's last entries. The instance's step count (step.do calls) is at most its positions, so
        reading from just below it is reading the end (sleeps and waits are the rest)."""
        for start in (max(-1, counted - 3), -1):
            after: int | None = start
            tail: list[dict[str, Any]] = []
            while after is not None:
                page = self.service.journal(viewed, name, instance_id, after, MAX_PAGE)
                tail = (tail + page["steps"])[-3:]
                after = page["next_after"]
            if tail or start == -1:
                return tail
        return []

    def _journal(
        self, viewed: Tenant, name: str, instance_id: str, first: int, last: int
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The journal's steps at positions first..last, page by page, and the events they consumed (with those
        not consumed yet, when the range reaches the end)."""
        steps: list[dict[str, Any]] = []
        events: dict[int, dict[str, Any]] = {}
        after: int | None = first - 1
        while after is not None and after < last:
            page = self.service.journal(viewed, name, instance_id, after, min(MAX_PAGE, last - after))
            steps += [s for s in page["steps"] if int(s["position"]) <= last]
            events.update((int(e["seq"]), e) for e in page["events"])
            after = page["next_after"]
        return steps, [events[seq] for seq in sorted(events)]


def _cursor(steps: list[dict[str, Any]]) -> int:
    """Where a watch resumes (as service.watching's cursor): every step but the last is final, and the last
    once it has ended."""
    if not steps:
        return -1
    last = steps[-1]
    return int(last["position"]) if last["state"] in FINAL_STATES else int(last["position"]) - 1


def _int(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name, "")
    return int(text) if text.isdigit() and len(text) < 10 else default


def _get(path: str, endpoint: Any, name: str | None = None) -> Route:
    return Route(path, endpoint, methods=["GET"], name=name, include_in_schema=False)


def dashboard_routes(service: Service) -> list[BaseRoute]:
    """The dashboard, to add to the API app's routes (it shares the app's error handlers).

    Its routes are left out of the API's schema (`include_in_schema=False`): they are HTML for a
    browser, not part of the contract the OpenAPI document describes."""
    d = Dashboard(service)
    fragments = "/ui/fragments/workflows"
    return [
        _get("/", d.page("workflows.html"), name="dashboard"),
        _get("/login", d.login),
        _get("/instances", d.page("instances.html")),
        _get("/workflows/{name}", d.page("workflow.html")),
        _get("/workflows/{name}/instances/{id}", d.page("instance.html")),
        _get("/favicon.ico", d.favicon),
        _get("/ui/me", d.me),
        _get(fragments, d.workflows_fragment),
        _get(fragments + "/{name}", d.workflow_fragment),
        _get(fragments + "/{name}/instances", d.instances_fragment),
        _get("/ui/fragments/instances", d.tenant_instances_fragment),
        _get(fragments + "/{name}/instances/{id}/summary", d.instance_fragment("summary")),
        _get(fragments + "/{name}/instances/{id}/timeline", d.instance_fragment("timeline")),
        _get(fragments + "/{name}/instances/{id}/now", d.instance_fragment("now")),
        _get(fragments + "/{name}/instances/{id}/rows", d.instance_fragment("rows")),
        _get(fragments + "/{name}/instances/{id}/step", d.instance_fragment("step")),
        _get(fragments + "/{name}/instances/{id}/activity", d.instance_fragment("activity")),
        *usage_routes(d),
        Mount("/ui/static", StaticFiles(directory=str(STATIC)), name="dashboard-static"),
    ]
