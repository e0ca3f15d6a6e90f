"""The dialect's side of a store: what SQLite and PostgreSQL supply, and nothing else.

Every business operation is written once, in the modules that mix into `SQLStore`, against these hooks:

- `transaction()`: a transaction (`Tx`); `read()`: one statement that needs no transaction around it;
  `snapshot()`: reads that must see one commit and write nothing;
  `write(fn)`: a write transaction, which a dialect may commit together with other callers' writes.
- `Tx.run` / `Tx.send`: statements with `?` placeholders; `send` lets a dialect send every statement of a
  write and its commit in one round trip; `Tx.send_many`: one statement for many rows (`executemany`).
  `Tx.fenced`: a fenced write and the writes that apply only with it (statements in turn on SQLite; one
  statement, with data-modifying CTEs, on PostgreSQL).
- No hook for `RETURNING`, `ON CONFLICT` (upserts; a conflict found as an insert that returned no row) or
  `MATERIALIZED` CTEs: both dialects take the same SQL.
- `for_update` and `skip_locked`: the row-lock clauses of a database whose writers interleave (PostgreSQL),
  empty where every writer takes its turn (SQLite).
- `_notify()`: called after a commit that made work runnable, so that idle workers elsewhere look now.
- `_lock_migrations(tx)`: one migrating process at a time.
- `_instances_added(tenant_id)`: called after a commit that created instances (PostgreSQL gives a table it has
  never analyzed its first statistics).
- `dialect`: the column types that `schema.MIGRATIONS` is written with.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TypeVar

from tenantflow.runtime.store._sql import Tx
from tenantflow.runtime.store.schema import MIGRATIONS

T = TypeVar("T")


class StoreCore(ABC):
    dialect: dict[str, str]
    # Appended to the reads that decide a write (a control's status check, a step commit, finish), and to
    # the claim's lock on the tenants it fills: where transactions do not serialize all writers
    # (PostgreSQL), they lock the rows so that nothing changes under them.
    for_update = ""
    keyset_bound = True
    """Whether a keyset page also bounds the index's leading sort column on its own (SQLite seeks on that, not
    on the row comparison; PostgreSQL seeks on the row comparison, and the bound only skews its estimates)."""
    # Appended to the read of the instance a claim leases: an instance another claim has locked is left to it.
    skip_locked = ""
    # The rows each (tenant, workflow, day) of usage is spread over (store/usage.py): one where every writer takes
    # its turn anyway (SQLite); more where concurrent step commits would wait for each other's row lock.
    usage_shards = 1
    # Whether statements run at once, in the process, and every writer takes its turn (SQLite): a write may then
    # read what it replaces at no round trip's cost, and what it found holds until it commits, so pending journal
    # writes go as one batch of statements (store/activation.py `recordings`). Where every statement costs a round
    # trip unless sent together and writers interleave (PostgreSQL), they go as one statement whose parts read what
    # they replace themselves.
    immediate = False

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Tx]: ...

    @abstractmethod
    def close(self) -> None: ...

    def read(self) -> AbstractContextManager[Tx]:
        """Where to run one read statement (it needs no transaction of its own around it)."""
        return self.transaction()

    def snapshot(self) -> AbstractContextManager[Tx]:
        """Where to run reads that must all see one commit, and write nothing: a transaction by default."""
        return self.transaction()

    def write(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` in a write transaction; a dialect may commit several callers' writes together."""
        with self.transaction() as tx:
            return fn(tx)

    def ping(self) -> None:
        """Raise unless the database answers a trivial query."""
        with self.read() as tx:
            tx.execute("SELECT 1")

    def listen(self, callback: Callable[[], None]) -> None:
        """Call `callback` when another process may have made work runnable; a dialect without
        notifications (SQLite) does nothing and the workers' polling finds the work."""
        return None

    def _notify(self) -> None:
        """Work became runnable (committed): wake the workers of other processes. Nothing by default."""
        return None

    def _lock_migrations(self, tx: Tx) -> None:
        """Make concurrent migrations of one database take turns (SQLite's write lock already does)."""
        return None

    def _instances_added(self, tenant_id: str) -> None:
        """`tenant_id`'s new instances have committed. Nothing by default."""
        return None

    def migrate(self) -> None:
        with self.transaction() as tx:
            self._lock_migrations(tx)
            tx.run("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
            current = tx.scalar("SELECT MAX(version) AS version FROM schema_migrations") or 0
            for number, statements in enumerate(MIGRATIONS, start=1):
                if number <= current:
                    continue
                for statement in statements:
                    tx.run(statement.format(**self.dialect))
                tx.run("INSERT INTO schema_migrations (version) VALUES (?)", (number,))
