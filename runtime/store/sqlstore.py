"""`SQLStore`: everything the runtime stores, for any SQL dialect, composed of one module per concern.

- `tenants`: the tenant registry; `workflows`: versions and sources; `instances`: create, read, list;
  `controls`: pause, resume, terminate, restart, events; `forks`: a new instance from another's journal;
  `activation`: load, the fenced step commit, finish, host faults; `journal`: the journal in pages;
  `scheduling`: claims, leases, wake times; `storage`: what a tenant stores, for its quota; `purge`: deleting
  instances with all they store, in bounded batches; `retention`: how long a workflow's finished instances are
  kept, and purging those past it; `usage`: the metering counters, kept by the writes they count.
- `core.StoreCore`: the hooks a dialect supplies (`sqlite.SQLiteStore`, `postgres.PostgresStore`); no dialect
  overrides a business operation.
- `_sql`: transactions and rows by column name; `rows`: the row shapes read.
"""

from __future__ import annotations

from abc import ABC

from tenantflow.runtime.store.activation import Activation
from tenantflow.runtime.store.controls import Controls
from tenantflow.runtime.store.forks import Forks
from tenantflow.runtime.store.instances import Instances
from tenantflow.runtime.store.journal import Journal
from tenantflow.runtime.store.retention import Retentions
from tenantflow.runtime.store.scheduling import Scheduling
from tenantflow.runtime.store.storage import Storage
from tenantflow.runtime.store.tenants import Tenants
from tenantflow.runtime.store.usage import Usage
from tenantflow.runtime.store.workflows import Workflows


class SQLStore(
    Tenants, Workflows, Instances, Controls, Forks, Activation, Journal, Scheduling, Storage, Retentions, Usage, ABC
):
    """Everything the runtime stores; a dialect subclass supplies connections, transactions and clauses."""
