"""What every store module builds on: transactions (`Tx`), rows mapped by column name, the instance key.

Statements are written with `?` placeholders; a dialect translates them. A read names its columns once, in
the record it builds (`columns(Record)`), and the rows are mapped to the record's fields by the column names
the cursor reports, never by position.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

from tenantflow.runtime.records import InstanceKey

R = TypeVar("R")
Params = Sequence[Any]

# An instance's primary key; every statement on an instance's rows starts with it.
KEY = "tenant_id = ? AND workflow = ? AND instance_id = ?"


def key_params(k: InstanceKey) -> tuple[str, str, str]:
    """The parameters of `KEY`."""
    return (k.tenant_id, k.workflow, k.instance_id)


# -- rows by name ------------------------------------------------------------------------------


def expr(sql: str) -> Any:
    """A record field read as an SQL expression (selected `AS` the field's name) rather than a column."""
    return dataclasses.field(metadata={"sql": sql})


@functools.cache
def columns(record: type[Any], table: str = "") -> str:
    """The select list of a record: its fields in order, each a column of that name or its `expr`,
    prefixed with `table.` when given (expressions are written as they are)."""
    parts = []
    for f in dataclasses.fields(record):
        sql = f.metadata.get("sql")
        if sql is not None:
            parts.append(f"{sql} AS {f.name}")
        else:
            parts.append(f"{table}.{f.name}" if table else f.name)
    return ", ".join(parts)


Picker = Callable[[Sequence[Any]], tuple[Any, ...]]
_pickers: dict[tuple[type[Any], tuple[str, ...]], Picker] = {}


def _picker(record: type[Any], names: tuple[str, ...]) -> Picker:
    """For a result with these column names: a function from a row to the record's field values, in field
    order (looked up by name once per shape of result)."""
    pick = _pickers.get((record, names))
    if pick is None:
        wanted = [f.name for f in dataclasses.fields(record)]
        missing = [n for n in wanted if n not in names]
        if missing:
            raise LookupError(f"{record.__name__} needs columns {missing}; the result has {list(names)}")
        at = [names.index(n) for n in wanted]
        if len(at) == 1:
            only = at[0]
            pick = _pickers[(record, names)] = lambda row: (row[only],)
        else:
            pick = _pickers[(record, names)] = operator.itemgetter(*at)
    return pick


class Result:
    """The rows of one statement and the names of their columns."""

    __slots__ = ("names", "rows")

    def __init__(self, names: Sequence[str], rows: list[Sequence[Any]]) -> None:
        self.names = tuple(names)
        self.rows = rows

    def records(self, record: type[R]) -> list[R]:
        if not self.rows:
            return []
        pick = _picker(record, self.names)
        return [record(*pick(row)) for row in self.rows]

    def record(self, record: type[R]) -> R | None:
        if not self.rows:
            return None
        return record(*_picker(record, self.names)(self.rows[0]))

    def values(self) -> list[Any]:
        """The one column of every row."""
        if len(self.names) != 1:
            raise LookupError(f"a read of values returns one column, not {list(self.names)}")
        return [row[0] for row in self.rows]

    def scalar(self) -> Any:
        """The one column of the first row (None without rows)."""
        values = self.values()
        return values[0] if values else None


class Later(ABC):
    """A statement sent in a transaction whose result is read once the transaction has ended."""

    @abstractmethod
    def result(self) -> Result: ...

    def records(self, record: type[R]) -> list[R]:
        return self.result().records(record)

    def record(self, record: type[R]) -> R | None:
        return self.result().record(record)

    def values(self) -> list[Any]:
        return self.result().values()

    def scalar(self) -> Any:
        return self.result().scalar()


class Done(Later):
    """A result already at hand (a dialect that runs every statement at once)."""

    def __init__(self, result: Result) -> None:
        self._result = result

    def result(self) -> Result:
        return self._result


class Statement(NamedTuple):
    sql: str
    params: Params = ()


# Where a statement that follows a fenced write (`Tx.fenced`) says "if the fenced write applied".
APPLIED = "{applied}"


def applied(sql: str) -> str:
    """`sql`, one of a fenced write's `then`, where that write is known to have applied (APPLIED being TRUE): right
    where the row cannot change in between, every writer taking its turn (SQLite)."""
    return sql.replace(APPLIED, "TRUE")


class Tx(ABC):
    """One transaction. `run` executes a statement now; `send` may hold it back so that a dialect sends
    every statement of a write, and its commit, in one round trip (its result is read after the commit)."""

    @abstractmethod
    def run(self, sql: str, params: Params = ()) -> Result: ...

    def send(self, sql: str, params: Params = ()) -> Later:
        return Done(self.run(sql, params))

    def send_many(self, sql: str, rows: Sequence[Params]) -> None:
        """`sql` once for each of `rows` (its parameters), in order; no results."""
        for params in rows:
            self.send(sql, params)

    def fenced(self, write: Statement, then: Sequence[Statement]) -> Later:
        """A write that checks a fence (an UPDATE ... RETURNING: a row if it applied), and the writes that apply
        only with it: each of `then` has APPLIED among its conditions, after its last parameter.

        Here: the fenced write, then, if it applied, the others (APPLIED being TRUE), which is right where the
        row cannot change in between, every writer taking its turn (SQLite). A dialect whose writers
        interleave sends them as one statement, APPLIED then asking the fenced write's own outcome."""
        result = self.send(*write)
        if result.result().rows:
            for statement in then:
                self.send(applied(statement.sql), statement.params)
        return result

    def execute(self, sql: str, params: Params = ()) -> list[Sequence[Any]]:
        """The rows as tuples (for callers outside the store: health checks, tests, benchmarks)."""
        return self.run(sql, params).rows

    def one(self, sql: str, params: Params = ()) -> Sequence[Any] | None:
        rows = self.execute(sql, params)
        return rows[0] if rows else None

    def records(self, record: type[R], sql: str, params: Params = ()) -> list[R]:
        return self.run(sql, params).records(record)

    def record(self, record: type[R], sql: str, params: Params = ()) -> R | None:
        return self.run(sql, params).record(record)

    def scalar(self, sql: str, params: Params = ()) -> Any:
        return self.run(sql, params).scalar()
