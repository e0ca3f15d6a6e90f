"""The step commit alone (`SQLStore.record`, no guest): what the journal's hot write path costs.

Run: `python -m bench.commit_bench [--rounds N] [--seconds S] [--threads T] [--db postgresql://...]`. Prints
one JSON object per line. On SQLite (synchronous=full and normal) and PostgreSQL (a fresh scratch database):
step commits per second from one thread on one instance, and from `threads` threads on as many instances of
one workflow (one tenant, one day: the rows that commits share), each round next to the raw one-row commit
rate measured right before and after it, since this machine's disk flush speed swings within minutes.
Rounds alternate the databases; compare the medians of `ratio` (commits / raw commits) between versions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tenantflow.runtime.records import AttemptRecord, Claim, Entry, Quotas, Tenant
from tenantflow.runtime.store import SQLStore
from tenantflow.runtime.store.postgres import PostgresStore
from tenantflow.runtime.store.sqlite import SQLiteStore

from bench import pg_bench, runtime_bench
from bench.runtime_bench import SEQUENTIAL

RESULT = '{"order": 1234, "items": [1, 2, 3], "ok": true}'


def emit(name: str, **figures: Any) -> None:
    print(json.dumps({"bench": "commit", "name": name, **figures}), flush=True)


def prepare(store: SQLStore, instances: int) -> list[Claim]:
    quotas = Quotas(max_concurrent=1000, max_instances_per_minute=10**9)
    store.create_tenant(Tenant("bench", "bench", quotas, 0.0), "bench-key")
    version, _ = store.deploy("bench", "wf", SEQUENTIAL, "h", 0.0)
    store.create_instances("bench", version, [(f"i{n}", None) for n in range(instances)], time.time())
    return store.claim("bench", instances, time.time(), 3600.0, {}, max_per_tenant=instances)


def commits(store: SQLStore, claims: list[Claim], seconds: float, start: list[int]) -> float:
    """Step commits per second, one thread per claim, each committing the next position of its instance."""
    counts = [0] * len(claims)
    deadline = time.perf_counter() + seconds

    def commit(n: int, claim: Claim) -> None:
        position = start[n]
        while time.perf_counter() < deadline:
            now = time.time()
            entry = Entry(position, f"s{position}", "do", "done", 1, RESULT, created_at=now, updated_at=now)
            attempt = AttemptRecord(position, 1, True, None, None, 2_000_000, 0.4, now)
            store.record(claim, entry, attempt, now)
            position += 1
        counts[n] = position - start[n]
        start[n] = position

    started = time.perf_counter()
    threads = [threading.Thread(target=commit, args=(n, c)) for n, c in enumerate(claims)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def raw(kind: str, where: Path | str, seconds: float) -> float:
    if kind == "postgres":
        return pg_bench.raw_commit_rate(str(where), seconds, one_round_trip=True)
    synchronous = kind.split("-")[1]
    path = Path(where) / f"raw-{synchronous}-{time.monotonic_ns()}.db"
    return runtime_bench.raw_commit_rate(path, synchronous, int(seconds * 3000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--db", default=pg_bench.DEFAULT_SERVER, help="a database on the server (for CREATE DATABASE)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, pg_bench.fresh_database(args.db) as url:
        stores: dict[str, tuple[SQLStore, Path | str]] = {
            "sqlite-full": (SQLiteStore(str(Path(tmp) / "full.db"), synchronous="full"), Path(tmp)),
            "sqlite-normal": (SQLiteStore(str(Path(tmp) / "normal.db"), synchronous="normal"), Path(tmp)),
            "postgres": (PostgresStore(url), url),
        }
        claims = {kind: prepare(store, args.threads) for kind, (store, _) in stores.items()}
        positions = {kind: [0] * args.threads for kind in stores}
        rounds: dict[tuple[str, int], list[float]] = {}
        try:
            for n in range(args.rounds):
                for kind, (store, where) in stores.items():
                    for threads in (1, args.threads):
                        before = raw(kind, where, args.seconds / 2)
                        rate = commits(store, claims[kind][:threads], args.seconds, positions[kind])
                        after = raw(kind, where, args.seconds / 2)
                        rounds.setdefault((kind, threads), []).append(rate / ((before + after) / 2))
                        emit("round", round=n, db=kind, threads=threads, per_s=round(rate), raw_per_s=round(before))
        finally:
            for store, _ in stores.values():
                store.close()
    for (kind, threads), ratios in rounds.items():
        emit("ratio", db=kind, threads=threads, median=round(statistics.median(ratios), 3), runs=ratios)


if __name__ == "__main__":
    main()
