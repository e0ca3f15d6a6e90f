"""The tenant-scoping rule for the store's SQL, and a way to capture every statement the store issues.

The rule (what keeps the schema distributable by tenant, e.g. with Citus): every read or write of a tenant's
tables (instances, journal, attempts, events, versions, sources) reaches its rows through a key that starts with
tenant_id, i.e. each query block that names such a table has a top-level condition `tenant_id = ...` (or
`tenant_id IN (...)`, or a row `(tenant_id, ...) IN (...)`) on it, in its WHERE or in its JOIN's ON, and each
INSERT into one sets tenant_id. The only blocks that read across tenants are listed in CROSS_TENANT, each with
why, and (but for the metrics count) the scheduling index it reads through: an index whose first column is a
scheduling column (wake_at or lease_until), partial on the scheduling status, so it holds only the instances
that are due or running, never a tenant's history.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import tenantflow.runtime.store.postgres  # noqa: F401  (its Tx class is captured too)
import tenantflow.runtime.store.sqlite  # noqa: F401
from tenantflow.runtime.store._sql import Tx

TENANT_TABLES = frozenset(
    {"instances", "journal", "attempts", "events", "versions", "sources", "creation_buckets", "retention", "usage"}
)
# Tables outside the rule, and why.
OTHER_TABLES = {
    "tenants": "the registry of tenants itself (one row per tenant; a Citus reference table): a tenant is found "
    "by its key hash when it authenticates, and claims walk the registry to share workers fairly",
    "schema_migrations": "the schema's version, not tenant data",
    "pg_stats": "PostgreSQL's view of the planner's statistics: whether the instances table has any yet "
    "(store/postgres.py ANALYZE_AT_ROWS)",
}
SCHEDULING_COLUMNS = frozenset({"wake_at", "lease_until"})


@dataclass(frozen=True)
class CrossTenant:
    """A query block that reads instances across tenants: its exact SQL, why, and the index it must use."""

    name: str
    sql: str
    index: str | None
    reason: str


CROSS_TENANT: tuple[CrossTenant, ...] = (
    CrossTenant(
        "the earliest wake time",
        "SELECT MIN(wake_at) AS t FROM instances WHERE status IN ('queued', 'waiting') "
        "AND (lease_until IS NULL OR lease_until < ?)",
        "instances_wake",
        "next_wake: how long an idle worker may sleep; one seek to the first entry of the wake index",
    ),
    CrossTenant(
        "the earliest lease expiry",
        "SELECT MIN(lease_until) AS t FROM instances WHERE status = 'running'",
        "instances_leases",
        "next_wake: an expiring lease makes its instance runnable; one seek in the lease index",
    ),
    CrossTenant(
        "the live leases of every tenant",
        "SELECT tenant_id, lease_until FROM instances WHERE status = 'running' AND lease_until IS NOT NULL",
        "instances_leases",
        "claim: fair share needs each tenant's running count and expired leases; one read of the lease "
        "index (one row per activation running), then each tenant is read by tenant_id",
    ),
    CrossTenant(
        "the leases of dead workers",
        "UPDATE instances SET lease_until = 0 WHERE status = 'running' AND lease_until IS NOT NULL "
        "AND lease_owner = ? RETURNING instance_id",
        "instances_leases",
        "expire_leases: a dead worker's leases, of any tenant, by owner, through the lease index",
    ),
    CrossTenant(
        "the lease owners",
        "SELECT DISTINCT lease_owner FROM instances WHERE status = 'running' AND lease_until IS NOT NULL",
        "instances_leases",
        "lease_owners: which workers hold leases (to find dead local ones), through the lease index",
    ),
    CrossTenant(
        "the earliest expiry of a parked lease",
        "SELECT MIN(lease_until) AS t FROM instances WHERE status IN ('waiting', 'paused') AND lease_until IS NOT NULL",
        "instances_parked",
        "next_wake: a parked instance whose worker died becomes runnable when its lease runs out",
    ),
    CrossTenant(
        "the parked leases of dead workers",
        "UPDATE instances SET lease_owner = NULL, lease_until = NULL WHERE status IN ('waiting', 'paused') "
        "AND lease_until IS NOT NULL AND lease_owner = ? RETURNING instance_id",
        "instances_parked",
        "expire_leases: a dead worker's parked isolates (hot resume), of any tenant, through the parked index",
    ),
    CrossTenant(
        "the owners of parked leases",
        "SELECT DISTINCT lease_owner FROM instances WHERE status IN ('waiting', 'paused') AND lease_until IS NOT NULL",
        "instances_parked",
        "lease_owners: which workers hold parked isolates, through the parked index",
    ),
    CrossTenant(
        "the workflows with instances past their retention",
        "SELECT r.tenant_id, r.workflow FROM retention r WHERE (r.tenant_id, r.workflow) > (?, ?) AND ("
        "EXISTS (SELECT 1 FROM instances i WHERE i.tenant_id = r.tenant_id AND i.workflow = r.workflow "
        "AND i.status = 'complete' AND i.finished_at < ? - r.complete_s) OR "
        "EXISTS (SELECT 1 FROM instances i WHERE i.tenant_id = r.tenant_id AND i.workflow = r.workflow "
        "AND i.status = 'errored' AND i.finished_at < ? - r.errored_s) OR "
        "EXISTS (SELECT 1 FROM instances i WHERE i.tenant_id = r.tenant_id AND i.workflow = r.workflow "
        "AND i.status = 'terminated' AND i.finished_at < ? - r.terminated_s)) "
        "ORDER BY r.tenant_id, r.workflow LIMIT ?",
        None,
        "expired_workflows, for the retention purger: reads the retention table across tenants (one row per "
        "workflow that set a retention: settings, never history), in key order from a cursor; each workflow's "
        "instances are read by tenant_id, through instances_finished",
    ),
    CrossTenant(
        "instances by tenant and status",
        "SELECT tenant_id, status, COUNT(*) AS count FROM instances GROUP BY tenant_id, status",
        None,
        "status_counts, for metrics: counts every instance, grouped by tenant_id (Citus runs it on each "
        "shard and adds up); no scheduling index: it reads every instance, from the covering index "
        "instances_by_status",
    ),
)


# -- parsing just enough SQL ------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:('(?:[^']|'')*')|(\d+(?:\.\d+)?)|([A-Za-z_][A-Za-z_0-9]*(?:\.[A-Za-z_][A-Za-z_0-9]*)?)"
    r"|(<>|<=|>=|!=|\|\||\[\]|[(),=<>?*+\-/;%])|(\"[A-Za-z_0-9]+\"))"  # [] an array type's; "C" a collation's
)
_KEYWORDS = frozenset(
    [
        "where",
        "join",
        "left",
        "right",
        "inner",
        "outer",
        "cross",
        "on",
        "set",
        "group",
        "order",
        "limit",
        "returning",
        "union",
        "intersect",
        "except",
        "for",
        "having",
        "window",
        "values",
        "select",
        "as",
        "using",
        "natural",
    ]
)
_WHERE_ENDS = frozenset(
    ["group", "order", "limit", "returning", "on", "for", "union", "intersect", "except", "having", "window"]
)


# What a parenthesized block starts with when it is a query of its own (a subquery, a CTE's body).
_QUERIES = frozenset({"select", "with", "insert", "update", "delete"})


class Group(list[Any]):
    """A parenthesized part of a statement."""


def tokenize(sql: str) -> Group:
    tokens: list[str] = []
    position = 0
    sql = sql.strip().rstrip(";")
    while position < len(sql):
        match = _TOKEN.match(sql, position)
        if match is None or match.end() == position:
            if sql[position:].strip() == "":
                break
            raise ValueError(f"cannot read SQL at {sql[position : position + 30]!r}")
        text = match.group(match.lastindex or 0)
        tokens.append(text if text.startswith("'") else text.lower())
        position = match.end()
    root = Group()
    stack = [root]
    for token in tokens:
        if token == "(":
            group = Group()
            stack[-1].append(group)
            stack.append(group)
        elif token == ")":
            stack.pop()
        else:
            stack[-1].append(token)
    if len(stack) != 1:
        raise ValueError(f"unbalanced parentheses in {sql!r}")
    return root


def render(tokens: Sequence[Any]) -> str:
    return " ".join(f"({render(t)})" if isinstance(t, Group) else t for t in tokens)


def canonical(sql: str) -> str:
    return render(tokenize(sql))


def blocks(tokens: Group) -> Iterator[Group]:
    """Every query block: the statement, and each parenthesized query in it, split at UNION & co."""
    yield from _split_compound(tokens)
    for token in tokens:
        if isinstance(token, Group):
            if token and isinstance(token[0], str) and token[0] in _QUERIES:
                yield from blocks(token)
            else:
                for inner in _groups(token):
                    yield from blocks(inner)


def _groups(tokens: Group) -> Iterator[Group]:
    for token in tokens:
        if isinstance(token, Group):
            if token and isinstance(token[0], str) and token[0] in _QUERIES:
                yield token
            else:
                yield from _groups(token)


def _split_compound(tokens: Group) -> Iterator[Group]:
    current = Group()
    for token in tokens:
        if token in ("union", "intersect", "except"):
            yield current
            current = Group()
        elif token == "all" and not current:
            continue
        else:
            current.append(token)
    yield current


@dataclass
class TableRef:
    table: str
    alias: str
    verb: str  # from, join, update, into
    columns: Group | None = None  # an INSERT's column list


def table_refs(block: Group) -> list[TableRef]:
    refs = []
    for n, token in enumerate(block):
        if token not in ("from", "join", "update", "into") or n + 1 >= len(block):
            continue
        if token == "update" and n > 0 and block[n - 1] in ("for", "do"):
            continue  # FOR UPDATE, ON CONFLICT DO UPDATE
        target = block[n + 1]
        if isinstance(target, Group) or target in _KEYWORDS:
            continue
        alias = target
        rest = block[n + 2 :]
        if token in ("from", "join") and rest and isinstance(rest[0], Group):
            continue  # a set-returning function (unnest of the statement's own arrays), not a table
        if rest and rest[0] == "as" and len(rest) > 1 and isinstance(rest[1], str):
            alias = rest[1]
        elif rest and isinstance(rest[0], str) and rest[0] not in _KEYWORDS and re.match(r"^[a-z_]\w*$", rest[0]):
            alias = rest[0]
        columns = rest[0] if token == "into" and rest and isinstance(rest[0], Group) else None
        refs.append(TableRef(target, alias, token, columns))
    return refs


def _conditions(block: Group) -> list[list[Any]]:
    """The top-level conjuncts of the block's WHERE and of its JOINs' ON clauses."""
    clauses: list[list[Any]] = []
    n = 0
    while n < len(block):
        token = block[n]
        if token == "where" or (token == "on" and n + 1 < len(block) and block[n + 1] != "conflict"):
            end = n + 1
            while end < len(block) and not (
                isinstance(block[end], str)
                and (block[end] in _WHERE_ENDS or block[end] in ("join", "left", "inner", "right", "cross", "where"))
            ):
                end += 1
            clauses.append(block[n + 1 : end])
            n = end
        else:
            n += 1
    conjuncts: list[list[Any]] = []
    for clause in clauses:
        current: list[Any] = []
        for token in clause:
            if token == "and":
                conjuncts.append(current)
                current = []
            else:
                current.append(token)
        conjuncts.append(current)
    return conjuncts


def _names_tenant(token: Any, ref: TableRef) -> bool:
    return isinstance(token, str) and token in ("tenant_id", f"{ref.alias}.tenant_id", f"{ref.table}.tenant_id")


def _scopes(conjunct: list[Any], ref: TableRef) -> bool:
    """`tenant_id = x`, `x = tenant_id`, `tenant_id IN (...)` or `(tenant_id, ...) IN (...)`, and nothing else."""
    if len(conjunct) != 3:
        return False
    left, operator, right = conjunct
    if operator == "=":
        return _names_tenant(left, ref) or _names_tenant(right, ref)
    if operator == "in" and isinstance(right, Group):
        return _names_tenant(left, ref) or (isinstance(left, Group) and bool(left) and _names_tenant(left[0], ref))
    return False


@dataclass
class Finding:
    statement: str
    block: str
    table: str
    allowed_by: CrossTenant | None


def check(sql: str) -> list[Finding]:
    """Each block of `sql` that names a tenant table without a tenant_id key: allowed (by the CROSS_TENANT entry)
    or not (allowed_by None)."""
    findings = []
    for block in blocks(tokenize(sql)):
        conjuncts = _conditions(block)
        for ref in table_refs(block):
            if ref.table not in TENANT_TABLES:
                if ref.table not in OTHER_TABLES and not _is_cte(ref.table, sql):
                    findings.append(Finding(sql, render(block), ref.table, None))
                continue
            if ref.verb == "into":
                if ref.columns is not None and ref.columns and ref.columns[0] == "tenant_id":
                    continue
            elif any(_scopes(c, ref) for c in conjuncts):
                continue
            text = render(block)
            allowed = next((c for c in CROSS_TENANT if canonical(c.sql) == text), None)
            findings.append(Finding(sql, text, ref.table, allowed))
    return findings


def _is_cte(name: str, sql: str) -> bool:
    return re.search(rf"\b{name}\b(\s*\([^)]*\))?\s+as\s+(materialized\s+)?\(", sql, re.IGNORECASE) is not None


# -- capturing what the store issues ---------------------------------------------------------------------


@dataclass
class Statement:
    sql: str
    params: tuple[Any, ...]
    origin: str  # the store function that issued it


TRANSACTION_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b", re.IGNORECASE)


@dataclass
class Capture:
    statements: dict[str, Statement] = field(default_factory=dict)
    count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sql: str, params: Sequence[Any], origin: str) -> None:
        if TRANSACTION_CONTROL.match(sql):  # a savepoint a write takes through its Tx: no rows, nothing to scope
            return
        with self._lock:
            self.count += 1
            self.statements.setdefault(sql, Statement(sql, tuple(params), origin))

    def findings(self) -> list[Finding]:
        return [f for s in list(self.statements.values()) for f in check(s.sql)]


def _origin() -> str | None:
    """The store function that issued the statement being captured, or None if it came from elsewhere (a test's
    own SQL through `store.transaction()`)."""
    frame = sys._getframe(2)
    while frame is not None and isinstance(frame.f_locals.get("self"), Tx):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return None
    module = frame.f_globals.get("__name__", "")
    if not module.startswith("tenantflow.runtime.store"):
        return None
    return f"{module.rsplit('.', 1)[-1]}.{frame.f_code.co_name}"


@contextmanager
def capturing() -> Iterator[Capture]:
    """Capture every statement the store issues (through any Tx, on any thread) while the block runs."""
    capture = Capture()
    patched: list[tuple[type[Tx], str, Any]] = []
    for cls in Tx.__subclasses__():
        for name in ("run", "send"):
            original = cls.__dict__.get(name)
            if original is None:
                continue

            def wrapper(self: Tx, sql: str, params: Sequence[Any] = (), _original: Any = original) -> Any:
                origin = _origin()
                if origin is not None:
                    capture.add(sql, params, origin)
                return _original(self, sql, params)

            patched.append((cls, name, original))
            setattr(cls, name, wrapper)
        many = cls.__dict__.get("send_many")
        if many is not None:  # one statement for many rows: each row runs it once

            def many_wrapper(self: Tx, sql: str, rows: Sequence[Sequence[Any]], _original: Any = many) -> Any:
                origin = _origin()
                if origin is not None:
                    for params in rows:
                        capture.add(sql, params, origin)
                return _original(self, sql, rows)

            patched.append((cls, "send_many", many))
            cls.send_many = many_wrapper  # type: ignore[method-assign]
    try:
        yield capture
    finally:
        for cls, name, original in patched:
            setattr(cls, name, original)
