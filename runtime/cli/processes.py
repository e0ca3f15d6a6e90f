"""`serve --processes N`: worker processes beside the server's own workers, on its database.

Activations hold the GIL for their Python (host calls, journal, SQL); N processes use N cores. Each extra
process is `tenantflow worker --ready-json` on the same database: started (and waited for) before the
server listens, started again if it dies, and stopped with SIGTERM (its orderly stop: activations reach
their next step or are handed back) when the server stops. Fairness and per-tenant limits hold across
processes because the store enforces them at claim time.
"""

from __future__ import annotations

import json
import logging
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("tenantflow.processes")

READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
RESTART_DELAY_S = 1.0


class ProcessError(Exception):
    """A worker process did not come up."""


@dataclass(frozen=True)
class WorkerCommand:
    """How to start one worker process."""

    db: str
    workers: int
    log_level: str
    log_format: str
    park_memory_mb: int
    max_park_s: float
    tenant_cap: int

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tenantflow.runtime.cli",
            "worker",
            "--ready-json",
            f"--db={self.db}",
            f"--workers={self.workers}",
            f"--log-level={self.log_level}",
            f"--log-format={self.log_format}",
            f"--park-memory-mb={self.park_memory_mb}",
            f"--max-park-s={self.max_park_s}",
            f"--tenant-cap={self.tenant_cap}",
        ]


class WorkerProcesses:
    """`count` worker processes, kept running until `stop`."""

    def __init__(self, count: int, command: WorkerCommand) -> None:
        self.count = count
        self.command = command
        self.processes: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> WorkerProcesses:
        try:
            for _ in range(self.count):
                self.processes.append(self._spawn())
        except BaseException:
            self.stop()
            raise
        self._watcher = threading.Thread(target=self._watch, name="tenantflow-processes", daemon=True)
        self._watcher.start()
        return self

    def _spawn(self) -> subprocess.Popen[bytes]:
        # stderr is the server's: the workers' logs go where its own go.
        process = subprocess.Popen(self.command.argv(), stdout=subprocess.PIPE)
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], READY_TIMEOUT_S)
        line = process.stdout.readline() if ready else b""
        try:
            ok = bool(json.loads(line).get("ready"))
        except ValueError:
            ok = False
        if not ok:
            process.kill()
            process.wait()
            raise ProcessError(f"a worker process did not start (exit code {process.returncode})")
        log.info("worker process %d running", process.pid)
        return process

    def _watch(self) -> None:
        while not self._stopping.wait(RESTART_DELAY_S):
            for i, process in enumerate(self.processes):
                if process.poll() is None or self._stopping.is_set():
                    continue
                log.warning("worker process %d exited with %s; starting another", process.pid, process.returncode)
                try:
                    self.processes[i] = self._spawn()
                except ProcessError as error:
                    log.error("%s; retrying", error)

    def stop(self) -> None:
        """SIGTERM every process and wait for its orderly stop (killed after STOP_TIMEOUT_S)."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join()
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker process %d did not stop in %.0f s; killed", process.pid, STOP_TIMEOUT_S)
                process.kill()
                process.wait()
