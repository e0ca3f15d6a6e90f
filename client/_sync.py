"""`Client`: the API over httpx, blocking; `WorkflowHandle` and `InstanceHandle` on it."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal, TypeVar

import httpx
from tenantflow.client._calls import (
    DEFAULT_URL,
    LONG_POLL_S,
    PASSING,
    Batch,
    Call,
    Day,
    Poll,
    Retry,
    Time,
    calls,
    merge_journal,
)
from tenantflow.client._errors import InstanceFailed, WaitTimeout, error_for
from tenantflow.client._watch import Follow, StatusEvent, WatchEvent
from tenantflow.runtime import contract as c
from tenantflow.runtime.records import FINISHED

__all__ = ["Client", "InstanceHandle", "WorkflowHandle"]

T = TypeVar("T")


class Client:
    """A tenant's (or an operator's) view of a tenantflow server.

    Answers are the contract's models; a 4xx or 5xx raises the matching `ApiError`; a 429 or 503 is
    retried as `retry` says, honouring Retry-After."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        key: str | None = None,
        *,
        timeout: float = 30.0,
        retry: Retry | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.url = url.rstrip("/")
        self.retry = retry if retry is not None else Retry()
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, call: Call[T]) -> T:
        """Send one call, retrying 429 and 503 as `retry` says."""
        attempt, waited = 0, 0.0
        while True:
            attempt += 1
            response = self._http.send(call.request(self._http))
            delay = self.retry.delay(response, attempt, waited)
            if delay is None:
                return call.answer(response)
            time.sleep(delay)
            waited += delay

    # -- server ---------------------------------------------------------------------

    def health(self) -> c.Health:
        return self.send(calls.health())

    def metrics(self) -> str:
        return self.send(calls.metrics())

    def openapi(self) -> dict[str, Any]:
        return self.send(calls.openapi())

    # -- workflows ------------------------------------------------------------------

    def workflow(self, name: str) -> WorkflowHandle:
        """A handle on the workflow `name` (no request is made)."""
        return WorkflowHandle(self, name)

    def deploy(self, name: str, source: str) -> c.Deployed:
        return self.send(calls.deploy(name, source))

    def workflows(self) -> list[c.Version]:
        """The latest version of each workflow, by name (every page of them)."""
        found: list[c.Version] = []
        page = self.send(calls.workflows())
        found += page.workflows
        while page.next_after is not None:
            page = self.send(calls.workflows(page.next_after))
            found += page.workflows
        return found

    def versions(self, name: str, *, before: int | None = None, limit: int | None = None) -> c.Workflow:
        """The workflow with a page of its versions: the newest `limit` (100 by default) below `before`, oldest
        first; the answer's `next_before`, passed as `before`, asks for older ones."""
        return self.send(calls.versions(name, before, limit))

    def set_retention(
        self, name: str, *, complete: str | None = None, errored: str | None = None, terminated: str | None = None
    ) -> c.Retention:
        """Keep the workflow's finished instances this long after they finished, per status ("7 days"; None:
        forever), replacing its retention; older ones are deleted in the background."""
        retention = {"complete": complete, "errored": errored, "terminated": terminated}
        return self.send(calls.set_retention(name, retention))

    def delete_workflow(self, name: str) -> c.WorkflowDeleted:
        """Delete a workflow with its versions and instances (InvalidState while one of them is unfinished)."""
        return self.send(calls.delete_workflow(name))

    def delete_instance(self, workflow: str, instance_id: str) -> c.InstanceDeleted:
        """Delete a finished instance with its journal (InvalidState while it has not finished)."""
        return self.send(calls.delete_instance(workflow, instance_id))

    # -- instances ------------------------------------------------------------------

    def instance(self, workflow: str, instance_id: str) -> InstanceHandle:
        """A handle on an instance (no request is made)."""
        return InstanceHandle(self, workflow, instance_id)

    def start(self, workflow: str, instance_id: str | None = None, params: Any = None) -> InstanceHandle:
        created = self.send(calls.start(workflow, instance_id, params))
        return InstanceHandle(self, workflow, created.id, created)

    def start_batch(
        self, workflow: str, items: Iterable[Mapping[str, Any]] | int, params: Any = None
    ) -> Batch[InstanceHandle]:
        """Start the batch's entries ({id?, params?} each), or `items` instances with `params`: handles on
        those created, and the entries that were not, with their problem."""
        answer = self.send(calls.start_batch(workflow, items, params))
        return Batch([InstanceHandle(self, workflow, i.id, i) for i in answer.instances], answer.errors)

    def instances(
        self,
        workflow: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        *,
        created_after: Time | None = None,
        created_before: Time | None = None,
        before: str | None = None,
        id_prefix: str | None = None,
    ) -> c.InstancePage:
        """A page of instances, newest first: the workflow's (NotFound if there is none), or, without one, all
        the tenant's across its workflows. Created strictly after/before a time (epoch seconds or a datetime;
        a naive one is local time); pass the answer's `next_after` as `after` for the next page, or its
        `prev_before` as `before` for the page before. With `id_prefix`: those whose id starts with it, by id."""
        return self.send(
            calls.instances(workflow, status, limit, after, created_after, created_before, before, id_prefix)
        )

    def count_instances(
        self,
        workflow: str | None = None,
        *,
        created_after: Time | None = None,
        created_before: Time | None = None,
        id_prefix: str | None = None,
    ) -> c.InstanceCounts:
        """How many instances (the workflow's, or all the tenant's) the filters match in each status, each
        counted up to `cap` (a status in `capped` has more)."""
        return self.send(calls.counts(workflow, created_after, created_before, id_prefix))

    def bulk(
        self,
        action: c.Control | str,
        workflow: str | None = None,
        ids: Iterable[str] | None = None,
        *,
        instances: Iterable[tuple[str, str]] | None = None,
        status: str | None = None,
        created_after: Time | None = None,
        created_before: Time | None = None,
        id_prefix: str | None = None,
        limit: int | None = None,
    ) -> Iterator[c.BulkResult]:
        """One control on many instances: `ids` of `workflow`, or `instances` as (workflow, id) pairs, or else
        every instance the filter matches (of `workflow`, or across the tenant's workflows), newest first, at
        most `limit` (default and most: 1000) per request. Returns each request's answer as it comes: for a
        filter, one after another until none matches any more (`next_after` carries on from `after`); each
        instance is done or skipped with the reason (e.g. already finished)."""
        after = None
        ids = None if ids is None else list(ids)
        instances = None if instances is None else list(instances)
        while True:
            answer = self.send(
                calls.bulk(
                    action, workflow, ids, instances, status, created_after, created_before, id_prefix, after, limit
                )
            )
            yield answer
            if answer.next_after is None:
                return
            after = answer.next_after

    def status(self, workflow: str, instance_id: str, *, wait_s: float = 0.0, seen: str | None = None) -> c.Instance:
        """The instance; with `wait_s`, a long poll answered when its status differs from `seen` (default: the
        status it has when the request arrives) or it has finished, or after `wait_s`."""
        return self.send(calls.status(workflow, instance_id, wait_s, seen))

    def wait(
        self, workflow: str, instance_id: str, statuses: Iterable[str] = FINISHED, timeout: float = 60.0
    ) -> c.Instance:
        """Long-poll until the instance's status is one of `statuses`, or it has finished (it would not change
        again), and return it; WaitTimeout after `timeout` seconds. (For a passing status, queued or running,
        it polls: every 50 ms at first, then less often, up to 1 s.)"""
        wanted = frozenset(statuses)
        deadline = time.monotonic() + timeout
        # A long poll answers once the instance has settled, so a passing status (queued, running) is
        # looked for by polling instead.
        poll = Poll() if wanted & PASSING else None
        current = self.status(workflow, instance_id)
        while current.status not in wanted and current.status not in FINISHED:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(current, timeout)
            if poll is not None:
                pause = poll.next(left)
                time.sleep(pause)
                current = self.status(workflow, instance_id)
            else:
                current = self.status(workflow, instance_id, wait_s=min(left, LONG_POLL_S), seen=current.status)
        return current

    def journal(self, workflow: str, instance_id: str, after: int = -1, limit: int = c.MAX_PAGE) -> c.Journal:
        """One page of the journal; pass `next_after` back as `after` for the next (None: the last page)."""
        return self.send(calls.journal(workflow, instance_id, after, limit))

    def watch(self, workflow: str, instance_id: str, after: str | None = None) -> Iterator[WatchEvent]:
        """Follow the instance (server-sent events): its status, its journal entries, then each change, until it
        has finished. A lost stream is resumed where it left off (after the last event's id, or `after`);
        WatchBroken if that keeps failing."""
        follow = Follow(workflow, instance_id, after)
        while not follow.done:
            try:
                yield from self._watch_once(follow)
                reason = "the stream ended"
            except httpx.TransportError as error:
                reason = f"{type(error).__name__}: {error}"
            if not follow.done:
                time.sleep(follow.broken(reason))

    def _watch_once(self, follow: Follow) -> Iterator[WatchEvent]:
        attempt, waited = 0, 0.0
        while True:
            attempt += 1
            response = self._http.send(follow.request(self._http), stream=True)
            try:
                if response.status_code < 400:
                    for line in response.iter_lines():
                        event = follow.feed(line)
                        if event is not None:
                            yield event
                    return
                response.read()
            finally:
                response.close()
            delay = self.retry.delay(response, attempt, waited)
            if delay is None:
                raise error_for(response)
            time.sleep(delay)
            waited += delay

    def send_event(self, workflow: str, instance_id: str, event_type: str, payload: Any = None) -> c.EventAccepted:
        return self.send(calls.send_event(workflow, instance_id, event_type, payload))

    def control(self, workflow: str, instance_id: str, action: c.Control | str) -> c.Instance:
        return self.send(calls.control(workflow, instance_id, action))

    def upgrade(self, workflow: str, instance_id: str, version: int) -> c.Instance:
        """Move a waiting or paused instance to `version` if its journal replays cleanly under it (Conflict,
        naming where it diverges, otherwise)."""
        return self.send(calls.upgrade(workflow, instance_id, version))

    def terminate(self, workflow: str, instance_id: str, *, rollback: bool = False) -> c.Instance:
        """Terminate; with `rollback`, after the rollbacks of its completed steps have run."""
        return self.send(calls.terminate(workflow, instance_id, rollback))

    def restart(self, workflow: str, instance_id: str, from_step: str | None = None, count: int = 1) -> c.Instance:
        """Restart from scratch, or from the `count`-th call of step `from_step` (the journal before it is kept)."""
        return self.send(calls.restart(workflow, instance_id, from_step, count))

    def export(self, workflow: str, instance_id: str) -> dict[str, Any]:
        """The instance as one self-contained document (format tenantflow.bundle/1: the instance, its source,
        params, seed, whole journal, events and log), as a dict; TooLarge past the server's limit."""
        return self.send(calls.export(workflow, instance_id))

    def fork(
        self,
        workflow: str,
        instance_id: str,
        from_step: str,
        count: int = 1,
        version: int | None = None,
        id: str | None = None,  # noqa: A002 - the API's name
    ) -> InstanceHandle:
        """A new instance from this one's journal before the `count`-th call of step `from_step` (those steps are
        replayed, not run again), running `version` (default: the latest), with id `id` (default: a random one).
        The original is not changed."""
        created = self.send(calls.fork(workflow, instance_id, from_step, count, version, id))
        return InstanceHandle(self, workflow, created.id, created)

    # -- admin (operator keys) ------------------------------------------------------

    def create_tenant(
        self, name: str, quotas: Mapping[str, Any] | None = None, *, operator: bool = False
    ) -> c.TenantKey:
        """A new tenant; its `api_key` is in the answer, this once."""
        return self.send(calls.create_tenant(name, quotas, operator))

    def usage(
        self, first: Day | None = None, last: Day | None = None, group_by: Literal["workflow", "day"] = "day"
    ) -> c.UsageReport:
        """The tenant's usage per UTC day (`group_by="day"`, every day of the range) or per workflow, over
        `first`..`last` (both included, at most 366 days; by default the 30 days up to today) and its total."""
        return self.send(calls.usage(first, last, group_by))

    def admin_usage(
        self,
        first: Day | None = None,
        last: Day | None = None,
        group_by: Literal["tenant", "workflow", "day"] = "tenant",
        tenant: str | None = None,
    ) -> c.UsageReport:
        """Usage across tenants (operator key) per tenant, workflow or day; `tenant`: only that tenant's."""
        return self.send(calls.admin_usage(first, last, group_by, tenant))

    def tenants(self) -> list[c.TenantInfo]:
        return self.send(calls.tenants())

    def tenant(self, name: str) -> c.TenantInfo:
        return self.send(calls.tenant(name))

    def update_tenant(self, name: str, quotas: Mapping[str, Any]) -> c.TenantInfo:
        """Change some quotas (the rest stay)."""
        return self.send(calls.update_tenant(name, quotas))

    def rotate_key(self, name: str) -> c.TenantKey:
        """A new key for the tenant (the old one stops working at once)."""
        return self.send(calls.rotate_key(name))

    def delete_tenant(self, name: str) -> c.TenantDeleted:
        """Delete the tenant with all its workflows, instances and journals."""
        return self.send(calls.delete_tenant(name))


class WorkflowHandle:
    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.name!r})"

    def deploy(self, source: str) -> c.Deployed:
        return self.client.deploy(self.name, source)

    def versions(self) -> c.Workflow:
        return self.client.versions(self.name)

    def delete(self) -> c.WorkflowDeleted:
        return self.client.delete_workflow(self.name)

    def set_retention(
        self, *, complete: str | None = None, errored: str | None = None, terminated: str | None = None
    ) -> c.Retention:
        """Keep finished instances this long after they finished, per status ("7 days"; None: forever)."""
        return self.client.set_retention(self.name, complete=complete, errored=errored, terminated=terminated)

    def retention(self) -> c.Retention:
        return self.client.versions(self.name).retention

    def start(self, params: Any = None, *, id: str | None = None) -> InstanceHandle:  # noqa: A002 - the API's name
        return self.client.start(self.name, id, params)

    def start_batch(self, items: Iterable[Mapping[str, Any]] | int, params: Any = None) -> Batch[InstanceHandle]:
        return self.client.start_batch(self.name, items, params)

    def instance(self, instance_id: str) -> InstanceHandle:
        return InstanceHandle(self.client, self.name, instance_id)

    def instances(
        self,
        status: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        *,
        created_after: Time | None = None,
        created_before: Time | None = None,
    ) -> c.InstancePage:
        """A page of this workflow's instances, newest first (see `Client.instances`)."""
        return self.client.instances(
            self.name, status, limit, after, created_after=created_after, created_before=created_before
        )


class InstanceHandle:
    """One instance; `instance` is its state as last read (None until a call reads it)."""

    def __init__(self, client: Client, workflow: str, id: str, instance: c.Instance | None = None) -> None:  # noqa: A002
        self.client = client
        self.workflow = workflow
        self.id = id
        self.instance = instance

    def __repr__(self) -> str:
        seen = f", {self.instance.status}" if self.instance is not None else ""
        return f"InstanceHandle({self.workflow!r}, {self.id!r}{seen})"

    def _seen(self, instance: c.Instance) -> c.Instance:
        self.instance = instance
        return instance

    def status(self) -> c.Instance:
        return self._seen(self.client.status(self.workflow, self.id))

    def wait(self, statuses: Iterable[str] = FINISHED, timeout: float = 60.0) -> c.Instance:
        """Long-poll until the status is one of `statuses` (default: finished) or it has finished; WaitTimeout
        after `timeout` seconds."""
        return self._seen(self.client.wait(self.workflow, self.id, statuses, timeout))

    def result(self, timeout: float = 60.0) -> Any:
        """The output once complete; InstanceFailed if it errored or was terminated, WaitTimeout if it is
        still going after `timeout` seconds."""
        done = self.wait(FINISHED, timeout)
        if done.status != "complete":
            raise InstanceFailed(done)
        return done.output

    def send_event(self, event_type: str, payload: Any = None) -> c.EventAccepted:
        return self.client.send_event(self.workflow, self.id, event_type, payload)

    def pause(self) -> c.Instance:
        return self._seen(self.client.control(self.workflow, self.id, "pause"))

    def resume(self) -> c.Instance:
        return self._seen(self.client.control(self.workflow, self.id, "resume"))

    def upgrade(self, version: int) -> c.Instance:
        """Move it to `version` if its journal replays cleanly under that code (it must be waiting or paused)."""
        return self._seen(self.client.upgrade(self.workflow, self.id, version))

    def terminate(self, *, rollback: bool = False) -> c.Instance:
        """Terminate; with `rollback`, after the rollbacks of its completed steps have run (it stays unfinished
        until then)."""
        return self._seen(self.client.terminate(self.workflow, self.id, rollback=rollback))

    def restart(self, from_step: str | None = None, count: int = 1) -> c.Instance:
        """From scratch, or from the `count`-th call of step `from_step` (the steps before it are kept)."""
        return self._seen(self.client.restart(self.workflow, self.id, from_step, count))

    def delete(self) -> c.InstanceDeleted:
        return self.client.delete_instance(self.workflow, self.id)

    def export(self) -> dict[str, Any]:
        """The instance as one self-contained document (see `Client.export`)."""
        return self.client.export(self.workflow, self.id)

    def fork(
        self,
        from_step: str,
        count: int = 1,
        version: int | None = None,
        id: str | None = None,  # noqa: A002 - the API's name
    ) -> InstanceHandle:
        """A new instance from the journal before the `count`-th call of step `from_step` (see `Client.fork`)."""
        return self.client.fork(self.workflow, self.id, from_step, count, version, id)

    def journal(self) -> c.Journal:
        """The whole journal (every page)."""
        pages = [self.client.journal(self.workflow, self.id)]
        while pages[-1].next_after is not None:
            pages.append(self.client.journal(self.workflow, self.id, after=pages[-1].next_after))
        return merge_journal(pages)

    def watch(self, after: str | None = None) -> Iterator[WatchEvent]:
        """Follow the instance until it has finished: StatusEvent, EntryEvent and ResetEvent as they come (the
        latest status is kept in `instance`)."""
        for event in self.client.watch(self.workflow, self.id, after):
            if isinstance(event, StatusEvent):
                self._seen(event.instance)
            yield event
