"""A worker process: `python -m tenantflow.runtime.cli.worker_main --db URL [--threads N] [--lease S]`.

Runs a Service's worker pool on the given store until SIGTERM or SIGINT, then
lets running activations suspend at their next step and exits. When the pool is
running it prints one JSON line, {"ready": true, "owner": ..., "pid": ...}, so a
parent (tests, benchmarks) knows when it can count on this worker.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Sequence
from types import FrameType

# Stop on SIGTERM/SIGINT from the start: the imports below take a while, and a worker asked to stop
# while it starts should still exit cleanly.
_stop = threading.Event()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _stop.set()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

from tenantflow.runtime.engine.worker import DEFAULT_LEASE_S  # noqa: E402
from tenantflow.runtime.service import Service  # noqa: E402
from tenantflow.runtime.store import DEFAULT_DB  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tenantflow.runtime.cli.worker_main", description=__doc__)
    parser.add_argument("--db", default=os.environ.get("TENANTFLOW_DB", DEFAULT_DB), help="database URL")
    parser.add_argument("--threads", type=int, default=4, help="activations run at once (default 4)")
    parser.add_argument("--lease", type=float, default=DEFAULT_LEASE_S, help="lease period in seconds")
    parser.add_argument(
        "--host-alias",
        help="lease owner host name to use instead of this host's (tests: a worker that looks remote, whose "
        "instances are recovered by lease expiry only, never by the local dead-process check)",
    )
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads is at least 1")
    if args.lease <= 0:
        parser.error("--lease is positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    service = Service.open(args.db, workers=args.threads, lease_s=args.lease)
    if args.host_alias:
        service.pool.owner = f"{args.host_alias}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    try:
        service.start()
        print(json.dumps({"ready": True, "owner": service.pool.owner, "pid": os.getpid()}), flush=True)
        while not _stop.wait(1.0):
            pass
    finally:
        service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
