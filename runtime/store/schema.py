"""The schema, as numbered migrations shared by SQLite and PostgreSQL.

Every table carries tenant_id first in its primary key and every query is
scoped by it, so the schema can be distributed by tenant (Citus) unchanged.
`{blob}`, `{float}`, `{bigint}`, `{clustered}` and `{bytewise}` are filled in per dialect (`{clustered}` makes
SQLite store a table's rows in its primary key's b-tree: one b-tree to write per row, not two; `{bytewise}`
orders a text column by its bytes, as SQLite always does, so a prefix is one range of an index whatever the
PostgreSQL database's collation).
"""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE tenants (
            tenant_id TEXT NOT NULL,
            name TEXT NOT NULL,
            key_hash TEXT NOT NULL,
            quotas TEXT NOT NULL,
            operator INTEGER NOT NULL DEFAULT 0,
            created_at {float} NOT NULL,
            PRIMARY KEY (tenant_id)
        )""",
        "CREATE UNIQUE INDEX tenants_key_hash ON tenants (key_hash)",
        """CREATE TABLE sources (
            tenant_id TEXT NOT NULL,
            source_hash TEXT NOT NULL,
            source {blob} NOT NULL,
            PRIMARY KEY (tenant_id, source_hash)
        ){clustered}""",
        """CREATE TABLE versions (
            tenant_id TEXT NOT NULL,
            workflow TEXT NOT NULL,
            version INTEGER NOT NULL,
            source_hash TEXT NOT NULL,
            created_at {float} NOT NULL,
            PRIMARY KEY (tenant_id, workflow, version)
        ){clustered}""",
        """CREATE TABLE instances (
            tenant_id TEXT NOT NULL,
            workflow TEXT NOT NULL,
            instance_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            source_hash TEXT NOT NULL,
            status TEXT NOT NULL,
            params {blob},
            output {blob},
            error {blob},
            created_at {float} NOT NULL,
            updated_at {float} NOT NULL,
            wake_at {float},
            waiting_for TEXT,
            lease_owner TEXT,
            lease_until {float},
            fence {bigint} NOT NULL DEFAULT 0,
            steps INTEGER NOT NULL DEFAULT 0,
            log {blob},
            PRIMARY KEY (tenant_id, workflow, instance_id)
        ){clustered}""",
        "CREATE INDEX instances_runnable ON instances (wake_at) WHERE status IN ('queued', 'waiting', 'running')",
        "CREATE INDEX instances_leases ON instances (lease_until) WHERE status = 'running'",
        "CREATE INDEX instances_by_status ON instances (tenant_id, workflow, status, created_at)",
        """CREATE TABLE journal (
            tenant_id TEXT NOT NULL,
            workflow TEXT NOT NULL,
            instance_id TEXT NOT NULL,
            position INTEGER NOT NULL,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            result {blob},
            error_name TEXT,
            error_message TEXT,
            wake_at {float},
            event_type TEXT,
            fuel {bigint} NOT NULL DEFAULT 0,
            duration_ms {float} NOT NULL DEFAULT 0,
            created_at {float} NOT NULL,
            updated_at {float} NOT NULL,
            PRIMARY KEY (tenant_id, workflow, instance_id, position)
        ){clustered}""",
        """CREATE TABLE attempts (
            tenant_id TEXT NOT NULL,
            workflow TEXT NOT NULL,
            instance_id TEXT NOT NULL,
            position INTEGER NOT NULL,
            attempt INTEGER NOT NULL,
            ok INTEGER NOT NULL,
            error_name TEXT,
            error_message TEXT,
            fuel {bigint} NOT NULL DEFAULT 0,
            duration_ms {float} NOT NULL DEFAULT 0,
            finished_at {float} NOT NULL,
            PRIMARY KEY (tenant_id, workflow, instance_id, position, attempt)
        ){clustered}""",
        """CREATE TABLE events (
            tenant_id TEXT NOT NULL,
            workflow TEXT NOT NULL,
            instance_id TEXT NOT NULL,
            seq {bigint} NOT NULL,
            type TEXT NOT NULL,
            payload {blob},
            created_at {float} NOT NULL,
            consumed_at INTEGER,
            PRIMARY KEY (tenant_id, workflow, instance_id, seq)
        ){clustered}""",
    ],
    [
        # Due instances are found by wake time among queued and waiting ones only.
        "DROP INDEX instances_runnable",
        "CREATE INDEX instances_wake ON instances (wake_at) WHERE status IN ('queued', 'waiting')",
    ],
    [
        # Fair share at claim time: a tenant's due instances and live leases, each found by index seeks.
        "CREATE INDEX instances_due_by_tenant ON instances (tenant_id, wake_at) WHERE status IN ('queued', 'waiting')",
        "CREATE INDEX instances_leases_by_tenant ON instances (tenant_id, lease_until) WHERE status = 'running'",
        # What an instance stores (params, journal, attempts, events, output, error, log), for the storage quota.
        "ALTER TABLE instances ADD COLUMN stored_bytes {bigint} NOT NULL DEFAULT 0",
        # Activations in a row that failed in the host (reset by a normal finish).
        "ALTER TABLE instances ADD COLUMN host_faults INTEGER NOT NULL DEFAULT 0",
        # The error's name and the start of its message, so lists never decode the whole error.
        "ALTER TABLE instances ADD COLUMN error_name TEXT",
        "ALTER TABLE instances ADD COLUMN error_summary TEXT",
        # An event's payload size as JSON, for the cap on what an instance buffers.
        "ALTER TABLE events ADD COLUMN size {bigint}",
    ],
    [
        # How an instance has run: activations, journal positions replayed by them, waits gone on from
        # without replay (hot resume); the dashboard and metrics show them.
        "ALTER TABLE instances ADD COLUMN activations INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE instances ADD COLUMN replayed_steps {bigint} NOT NULL DEFAULT 0",
        "ALTER TABLE instances ADD COLUMN hot_resumes INTEGER NOT NULL DEFAULT 0",
        # Parked instances (waiting on a live lease): few rows, found at start-up when a worker died.
        "CREATE INDEX instances_parked ON instances (lease_until) "
        "WHERE status IN ('waiting', 'paused') AND lease_until IS NOT NULL",
    ],
    [
        # Each tenant's instance-creation token bucket, shared by every process on the database.
        """CREATE TABLE creation_buckets (
            tenant_id TEXT NOT NULL,
            tokens {float} NOT NULL,
            updated_at {float} NOT NULL,
            PRIMARY KEY (tenant_id)
        ){clustered}""",
    ],
    [
        # A deleted tenant is marked first (its key stops working, its instances are no longer claimed), then
        # its rows are purged in bounded transactions, then the mark goes; a purge cut short resumes.
        "ALTER TABLE tenants ADD COLUMN deleted_at {float}",
    ],
    [
        # The instance's rollback phase: 'terminate' (terminated with a rollback: the next activation unwinds
        # and runs the rollbacks) or 'error' (it failed and runs them); NULL otherwise.
        "ALTER TABLE instances ADD COLUMN rollback TEXT",
    ],
    [
        # When an instance finished (complete, errored, terminated; NULL while it has not): its retention counts
        # from it. Instances that finished before are taken to have finished at their last update.
        "ALTER TABLE instances ADD COLUMN finished_at {float}",
        "UPDATE instances SET finished_at = updated_at WHERE tenant_id IN (SELECT tenant_id FROM tenants) "
        "AND status IN ('complete', 'errored', 'terminated')",
        # A workflow's expired instances, oldest first, by index seeks per status.
        "CREATE INDEX instances_finished ON instances (tenant_id, workflow, status, finished_at) "
        "WHERE finished_at IS NOT NULL",
        # How long a workflow's finished instances are kept, per status, in seconds (NULL: forever); a workflow
        # keeping all of them forever has no row.
        """CREATE TABLE retention (
            tenant_id TEXT NOT NULL,
            workflow TEXT NOT NULL,
            complete_s {float},
            errored_s {float},
            terminated_s {float},
            updated_at {float} NOT NULL,
            PRIMARY KEY (tenant_id, workflow)
        ){clustered}""",
    ],
    [
        # Lists go newest first with keyset paging: each list reads an index in its own order (created_at, then
        # the workflow across workflows, then instance_id, each descending), so a page, the first as a deep
        # one, reads its own rows and sorts nothing. One workflow's, in a status or not; all the tenant's, too.
        "DROP INDEX instances_by_status",
        "CREATE INDEX instances_by_status ON instances (tenant_id, workflow, status, created_at, instance_id)",
        "CREATE INDEX instances_by_created ON instances (tenant_id, workflow, created_at, instance_id)",
        "CREATE INDEX instances_by_tenant_created ON instances (tenant_id, created_at, workflow, instance_id)",
        "CREATE INDEX instances_by_tenant_status ON instances (tenant_id, status, created_at, workflow, instance_id)",
    ],
    [
        # The seed of an instance's randomness outside step bodies (hex), set by a restart (a new run draws
        # anew) or a fork (the copy replays as the original); NULL: derived from the instance's key.
        "ALTER TABLE instances ADD COLUMN seed TEXT",
        # A nested step.do's enclosing step (its position); NULL at the top level. A replay that is answered
        # the enclosing step from the journal skips its nested positions.
        "ALTER TABLE journal ADD COLUMN parent INTEGER",
    ],
    [
        # Where an instance's logical clock starts: a fork's is its original's, so the journal it copied replays
        # at the same times; NULL: at its creation (created_at).
        "ALTER TABLE instances ADD COLUMN clock_start {float}",
    ],
    [
        # Metering: what each workflow used per UTC day (YYYY-MM-DD), counted in the transactions of the writes
        # it counts (store/usage.py); `shard` spreads one day's step commits of a workflow over a few rows.
        """CREATE TABLE usage (
            tenant_id TEXT NOT NULL,
            workflow TEXT NOT NULL,
            day TEXT NOT NULL,
            shard INTEGER NOT NULL,
            activations {bigint} NOT NULL DEFAULT 0,
            isolate_starts {bigint} NOT NULL DEFAULT 0,
            replayed_steps {bigint} NOT NULL DEFAULT 0,
            steps {bigint} NOT NULL DEFAULT 0,
            attempts {bigint} NOT NULL DEFAULT 0,
            fuel {bigint} NOT NULL DEFAULT 0,
            duration_ms {float} NOT NULL DEFAULT 0,
            journal_bytes {bigint} NOT NULL DEFAULT 0,
            instances {bigint} NOT NULL DEFAULT 0,
            PRIMARY KEY (tenant_id, workflow, day, shard)
        ){clustered}""",
    ],
    [
        # Search by instance id across a tenant's workflows, exact or by prefix: one range of this index (in
        # byte order), by id, then workflow.
        "CREATE INDEX instances_by_id ON instances (tenant_id, instance_id{bytewise}, workflow)",
    ],
    [
        # An async workflow's calls are matched by name and occurrence on replay (they may begin in another order).
        "ALTER TABLE journal ADD COLUMN occurrence INTEGER",
    ],
    [
        # Each failed attempt's traceback; a step's most attempts (its retry limit + 1), for "attempt n of m".
        "ALTER TABLE attempts ADD COLUMN traceback TEXT",
        "ALTER TABLE journal ADD COLUMN attempt_limit INTEGER",
        # The fuel of the workflow's code outside step bodies, metered per activation end.
        "ALTER TABLE usage ADD COLUMN workflow_fuel {bigint} NOT NULL DEFAULT 0",
        "ALTER TABLE instances ADD COLUMN workflow_fuel {bigint} NOT NULL DEFAULT 0",
    ],
]

# Every table that holds a tenant's data, children before parents: what deleting a tenant purges. A test
# checks that the schema has no other table with a tenant_id.
TENANT_TABLES: tuple[str, ...] = (
    "journal",
    "attempts",
    "events",
    "instances",
    "versions",
    "retention",
    "sources",
    "creation_buckets",
    "usage",
    "tenants",
)
# The tables of one instance's rows (keyed by tenant_id, workflow, instance_id), purged instance by instance.
INSTANCE_TABLES: tuple[str, ...] = ("journal", "attempts", "events", "instances")
