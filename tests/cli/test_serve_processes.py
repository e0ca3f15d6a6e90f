"""`tenantflow serve --processes 2`: a worker process beside the server's own workers runs activations on the
same database, and stops with the server."""

from __future__ import annotations

import json
import os
from pathlib import Path

from helpers_server import ServerProcess

BUSY = """
def run(event, step):
    def work():
        total = 0
        for i in range(3_000_000):  # ~0.5 s of CPU: one worker thread cannot take them all at once
            total += i
        return total
    return step.do("work", work)
"""


def _children(pid: int) -> set[int]:
    """The live processes whose parent is `pid` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_worker_processes_share_the_work_and_stop_with_the_server(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "tf.db", workers=1, extra=["--processes", "2", "--log-format", "json"])
    with server:
        assert server.proc is not None
        children = _children(server.proc.pid)
        assert len(children) == 1, children
        client = server.client(server.create_tenant("acme")["api_key"])
        client.deploy("busy", BUSY)
        batch = client.start_batch("busy", [{"id": f"b{i:02d}"} for i in range(16)])
        assert len(batch.instances) == 16 and not batch.errors
        for handle in batch.instances:
            assert client.wait("busy", handle.id, timeout=120).status == "complete"
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        completed_by = [line["pid"] for line in lines if line.get("event") == "instance complete"]
        assert len(completed_by) == 16
        assert set(completed_by) & children, f"no instance ran in the worker process {children}: {completed_by}"
        assert server.terminate() == 0
    assert not any(_alive(pid) for pid in children)
