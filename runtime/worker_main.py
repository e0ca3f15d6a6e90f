"""A worker process: `python -m tenantflow.runtime.worker_main --db URL [--threads N] [--lease S]`.

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
from collections.abc import Sequence
from types import FrameType

from tenantflow.runtime.service import Service
from tenantflow.runtime.store import DEFAULT_DB
from tenantflow.runtime.worker import DEFAULT_LEASE_S


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tenantflow.runtime.worker_main", description=__doc__)
    parser.add_argument("--db", default=os.environ.get("TENANTFLOW_DB", DEFAULT_DB), help="database URL")
    parser.add_argument("--threads", type=int, default=4, help="activations run at once (default 4)")
    parser.add_argument("--lease", type=float, default=DEFAULT_LEASE_S, help="lease period in seconds")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads is at least 1")
    if args.lease <= 0:
        parser.error("--lease is positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service = Service.open(args.db, workers=args.threads, lease_s=args.lease)
    try:
        service.start()
        print(json.dumps({"ready": True, "owner": service.pool.owner, "pid": os.getpid()}), flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
