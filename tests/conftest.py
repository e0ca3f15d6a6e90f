"""Shared fixtures: one `Sandbox` (engine, compiled guest, linker) and one fresh PostgreSQL database
for the whole session. Helpers that are not fixtures (tests/helpers_server.py, tests/memjournal.py,
tests/pg.py) are plain modules on the path (`pythonpath` in pyproject.toml)."""

from __future__ import annotations

from collections.abc import Iterator

import pg
import pytest
from tenantflow.host import Sandbox


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (dropped at the end): its URL."""
    url = pg.create_database()
    try:
        yield url
    finally:
        pg.drop_database(url)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox()
    yield box
    box.close()
