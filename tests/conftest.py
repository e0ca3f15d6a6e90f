"""Shared fixtures: one `Sandbox` (engine, compiled guest, linker) for the whole session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tenantflow.host import Sandbox

# `from memjournal import MemJournal` works whether or not tests/ is a package.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox()
    yield box
    box.close()
