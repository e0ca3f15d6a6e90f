"""Every store test also checks the tenant-scoping rule (see scoping.py) on each statement the store issued."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scoping import capturing


@pytest.fixture(autouse=True)
def statements_are_scoped_by_tenant() -> Iterator[None]:
    with capturing() as capture:
        yield
    unscoped = [f for f in capture.findings() if f.allowed_by is None]
    assert not unscoped, "statements that reach a tenant's rows without tenant_id:\n" + "\n".join(
        f"- {f.table} in {f.block!r} (statement: {f.statement!r})" for f in unscoped
    )
