"""A fresh PostgreSQL database per test session, dropped afterwards.

The server is the one at 127.0.0.1:5432 (or TENANTFLOW_TEST_PG, a URL naming any
existing database to connect to for CREATE DATABASE). If it does not answer,
this tries to start the local cluster once; if it still does not answer, the
tests that need it fail (they are never skipped).

    def test_x(pg_server: str):       # the fixture (tests/conftest.py): a fresh database's URL
        url = fresh_schema(pg_server) # a URL whose connections use a new, empty schema
"""

from __future__ import annotations

import glob
import os
import subprocess
import time
import uuid
from urllib.parse import urlencode, urlsplit, urlunsplit

import psycopg

ADMIN_URL = os.environ.get("TENANTFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _with_database(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


def _start_local_cluster() -> None:
    for conf in glob.glob("/etc/postgresql/*/main"):
        version = conf.split("/")[3]
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
            check=False,
            capture_output=True,
            timeout=60,
        )


def admin_connect() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError:
        _start_local_cluster()
        deadline = time.monotonic() + 30
        while True:
            try:
                return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def create_database() -> str:
    name = f"tf_test_{uuid.uuid4().hex[:12]}"
    with admin_connect() as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return _with_database(ADMIN_URL, name)


def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with admin_connect() as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fresh_schema(url: str) -> str:
    """Create an empty schema in the database at `url`; a URL whose sessions use it."""
    schema = f"s_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    parts = urlsplit(url)
    query = urlencode({"options": f"-csearch_path={schema}"})
    return urlunsplit(parts._replace(query=query))


def database_names() -> list[str]:
    with admin_connect() as connection:
        return [r[0] for r in connection.execute("SELECT datname FROM pg_database")]
