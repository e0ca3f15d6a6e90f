"""A real `tenantflow serve` in a subprocess, on 127.0.0.1 and a free port, with its own SQLite file.

    with ServerProcess(tmp_path / "tf.db") as server:
        key = server.create_tenant("acme")["api_key"]
        client = server.client(key)

The process is stopped (SIGTERM, then SIGKILL if it hangs) when the block ends. `app_server(app)`
serves an app under uvicorn on a thread of the test's own process instead.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp
from tenantflow.client import Client
from tenantflow.runtime.http.server import bind

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def app_server(app: ASGIApp, config: uvicorn.Config | None = None) -> Iterator[str]:
    """`app` under uvicorn (`config`, by default a quiet one) on a thread, listening on 127.0.0.1 as
    `tenantflow serve` does (its `bind`); the URL until the block ends, when the server stops."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(config or uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def cli(
    *args: str, db: str | None = None, check: bool = True, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run `tenantflow ARGS` as a subprocess (python -m, so no console script is needed)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_")}
    environ.update(env)
    environ.setdefault("COLUMNS", "160")
    if db is not None:
        environ["TENANTFLOW_DB"] = db
    done = subprocess.run(
        [sys.executable, "-m", "tenantflow.runtime.cli", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=timeout,
        cwd=ROOT,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"tenantflow {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


class ServerProcess:
    def __init__(self, db_path: Path, workers: int = 4, extra: Sequence[str] = ()) -> None:
        self.db_path = Path(db_path)
        self.db = f"sqlite:///{self.db_path}"
        self.workers = workers
        self.extra = list(extra)
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = self.db_path.with_suffix(".serve.log")
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.port = free_port()
        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tenantflow.runtime.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--db",
                self.db,
                "--workers",
                str(self.workers),
                *self.extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tenantflow serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"tenantflow serve did not come up in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"the server did not stop within {timeout} s of SIGTERM:\n{self.log()}") from None
        finally:
            self._close_log()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- conveniences --------------------------------------------------------------

    def create_tenant(self, name: str, *options: str) -> dict[str, Any]:
        """`tenantflow tenants create NAME --db DB OPTIONS` (works while the server runs)."""
        done = cli("tenants", "create", name, "--db", self.db, *options)
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def client(self, key: str | None = None) -> Client:
        return Client(self.url, key, timeout=30)

    def http(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


class Servers:
    """Starts servers on temp databases and stops them all at the end (use from a fixture)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.started: list[ServerProcess] = []

    def start(self, name: str = "tf", **kwargs: Any) -> ServerProcess:
        server = ServerProcess(self.directory / f"{name}.db", **kwargs).start()
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()


@contextmanager
def servers(directory: Path) -> Iterator[Servers]:
    group = Servers(directory)
    try:
        yield group
    finally:
        group.stop_all()
