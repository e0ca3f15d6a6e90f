"""What hostile tenants cost another tenant, on a real `tenantflow serve` (SQLite, 2 workers).

    python -m bench.isolation [--quick] [--server-python PATH]

The attacks are the hostile end-to-end tests' own: the workflow sources (REAL_SLEEP, SPIN,
FLOOD_CALL, HOST_CPU), the `Tenant` helper and the server process (`ServerProcess`) are loaded
from tests/test_hostile.py and tests/helpers_server.py, not copied. Each scenario gets a fresh
server and database, so an attack that is never stopped cannot spill into the next one:

  baseline   a victim tenant's one-step instance, create -> complete, nothing else running
  sleep      4 x REAL_SLEEP (the real `time.sleep(90)` through WASI) by tenant A
  backlog    30 x SPIN 700 ms queued by tenant A
  flood      4 x FLOOD_CALL (~60 MiB of small JSON objects to a host import); server peak RSS growth
  host_cpu   2 x HOST_CPU (the host parses 8 MiB again and again); server CPU s per activation
  terminate  a tenant with fuel 1e13 runs 2 x SPIN 50 s (both workers), both are terminated:
             seconds from the terminate calls until the victim's next instance completes

Every wait has a timeout; a timed-out wait is recorded as "> N s" and the run goes on.
`--server-python PATH` runs the server (and the `tenants create` CLI) with another interpreter,
e.g. an editable install of older code, started with that code's repository as its cwd; the
JSON records which code the server ran. Writes bench/results/isolation-<time>.json and prints
a Markdown table. The attacker's "activation ends" are seconds from creating the first attack
instance until the first and the last of them finished (polled every ~0.1 s), so with more
instances than workers the last includes queueing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
RSS_GUARD = 8 << 30  # kill the server if its RSS passes this (the machine is shared)


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


helpers = _load("helpers_server", ROOT / "tests" / "helpers_server.py")
hostile = _load("test_hostile", ROOT / "tests" / "test_hostile.py")


def log(message: str) -> None:
    print(f"[isolation {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- which code the server runs -------------------------------------------------------


def code_root(python: str, cwd: Path) -> Path:
    """The repository whose `tenantflow` package `python` imports when started in `cwd`."""
    done = subprocess.run(
        [
            python,
            "-c",
            "import pathlib, tenantflow.runtime as r; print(pathlib.Path(r.__file__).resolve().parent.parent)",
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        timeout=60,
        check=True,
    )
    return Path(done.stdout.strip())


def use_server_python(python: str) -> dict[str, Any]:
    """Point helpers_server at `python` and its own repository (used as cwd); describe the code."""
    os.environ.pop("PYTHONPATH", None)
    root = code_root(python, Path("/"))
    again = code_root(python, root)
    helpers.sys = types.SimpleNamespace(executable=python)  # ServerProcess.start and cli() use sys.executable
    helpers.ROOT = root  # ... and ROOT as their cwd
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {
        "python": python,
        "code_root": str(again),
        "commit": head.stdout.strip(),
        "has_host_wasi_py": (again / "host" / "wasi.py").exists(),
    }


# -- measuring ------------------------------------------------------------------------


def proc_status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def echo_once(victim: Any, timeout: float) -> float | None:
    """Seconds from create to complete of one victim instance; None on timeout or error."""
    try:
        return float(victim.run_echo(timeout))
    except (AssertionError, httpx.HTTPError) as error:
        log(f"victim: {str(error)[:160]}")
        return None


def victim_runs(victim: Any, count: int, timeout: float) -> dict[str, Any]:
    """`count` sequential victim instances; stops at the first timeout (the rest would queue behind it)."""
    runs: list[float] = []
    timed_out = False
    for _ in range(count):
        seconds = echo_once(victim, timeout)
        if seconds is None:
            timed_out = True
            break
        runs.append(seconds)
    return {
        "runs_s": [round(s, 4) for s in runs],
        "timeout_s": timeout,
        "timed_out": timed_out,
        "p50_s": round(statistics.median(runs), 4) if runs else None,
        "max_s": None if timed_out else round(max(runs), 4),
    }


class Watcher(threading.Thread):
    """Polls the attacker's instances until all have finished or the deadline passes; samples the server's RSS."""

    def __init__(
        self, server: Any, key: str, workflow: str, instances: list[str], started: float, timeout: float
    ) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.http = server.http(key)
        self.http.timeout = httpx.Timeout(5)
        self.workflow = workflow
        self.instances = instances
        self.started = started  # before the first instance was created
        self.deadline = self.started + timeout
        self.timeout = timeout
        self.ended: dict[str, dict[str, Any]] = {}
        self.rss_max = 0
        self.killed = False

    def run(self) -> None:
        pid = self.server.proc.pid
        while len(self.ended) < len(self.instances) and time.monotonic() < self.deadline:
            if self.server.proc.poll() is not None:
                break
            rss = proc_status(pid, "VmRSS")
            self.rss_max = max(self.rss_max, rss)
            if rss > RSS_GUARD:
                log(f"server RSS {rss >> 20} MiB passed the guard: killing it")
                self.killed = True
                self.server.proc.kill()
                break
            for instance in self.instances:
                if instance in self.ended:
                    continue
                try:
                    answer = self.http.get(f"/v1/workflows/{self.workflow}/instances/{instance}")
                except httpx.HTTPError:
                    continue
                if answer.status_code != 200:
                    continue
                status = answer.json()
                if status["status"] in hostile.FINISHED:
                    self.ended[instance] = {
                        "after_s": round(time.monotonic() - self.started, 3),
                        "status": status["status"],
                        "error": (status.get("error") or {}).get("name"),
                        "message": str((status.get("error") or {}).get("message") or "")[:200],
                    }
            time.sleep(0.1)

    def summary(self) -> dict[str, Any]:
        ends = sorted(e["after_s"] for e in self.ended.values())
        return {
            "count": len(self.instances),
            "ended": len(self.ended),
            "timeout_s": self.timeout,
            "first_end_s": ends[0] if ends else None,
            "last_end_s": ends[-1] if len(ends) == len(self.instances) else None,
            "outcomes": sorted({e["error"] or e["status"] for e in self.ended.values()}),
            "per_instance": list(self.ended.values()),
            "server_killed_by_rss_guard": self.killed,
        }


@contextmanager
def fresh_server(workdir: Path, name: str) -> Iterator[Any]:
    server = helpers.ServerProcess(workdir / f"{name}.db", workers=2)
    server.start(timeout=60)
    cwd = os.readlink(f"/proc/{server.proc.pid}/cwd")
    log(f"{name}: server pid {server.proc.pid} on {server.url}, cwd {cwd}")
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.send_signal(signal.SIGTERM)
            try:
                server.proc.wait(5)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait(5)
        server._close_log()


def make_victim(server: Any) -> Any:
    victim = hostile.Tenant(server, "victim")
    victim.http.timeout = httpx.Timeout(5)
    victim.deploy("echo", hostile.ECHO)
    echo_once(victim, 30)  # warm up
    return victim


# -- scenarios --------------------------------------------------------------------------


def baseline(workdir: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    with fresh_server(workdir, "baseline") as server:
        victim = make_victim(server)
        return {"victim": victim_runs(victim, cfg["baseline_runs"], 30)}


ATTACKS: dict[str, dict[str, Any]] = {
    "sleep": {"source": "REAL_SLEEP", "count": 4, "params": None, "options": ("--memory-mb", "128")},
    "backlog": {"source": "SPIN", "count": 30, "params": {"ms": 700}, "options": ()},
    "flood": {"source": "FLOOD_CALL", "count": 4, "params": None, "options": ("--memory-mb", "128")},
    "host_cpu": {"source": "HOST_CPU", "count": 2, "params": None, "options": ("--memory-mb", "128")},
}


def attack(workdir: Path, name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    spec = ATTACKS[name]
    with fresh_server(workdir, name) as server:
        pid = server.proc.pid
        victim = make_victim(server)
        attacker = hostile.Tenant(server, "attacker", *spec["options"])
        attacker.deploy("attack", getattr(hostile, spec["source"]))
        hwm_before, cpu_before = proc_status(pid, "VmHWM"), cpu_seconds(pid)
        started = time.monotonic()
        instances = [attacker.start("attack", spec["params"]) for _ in range(spec["count"])]
        watcher = Watcher(server, attacker.key, "attack", instances, started, cfg["attack_timeout"][name])
        watcher.start()
        time.sleep(0.3)  # let the attack take the workers
        victim_result = victim_runs(victim, cfg["victim_runs"], cfg["victim_timeout"])
        watcher.join(cfg["attack_timeout"][name] + 10)
        alive = server.proc.poll() is None
        result = {
            "attack": f"{spec['count']} x {spec['source']}" + (f" {spec['params']}" if spec["params"] else ""),
            "victim": victim_result,
            "attacker": watcher.summary(),
            "server_alive": alive,
            "server_rss_hwm_growth_mib": round((proc_status(pid, "VmHWM") - hwm_before) / 2**20, 1) if alive else None,
            "server_rss_max_sampled_mib": round(watcher.rss_max / 2**20, 1),
            "server_cpu_s": round(cpu_seconds(pid) - cpu_before, 2) if alive else None,
        }
        if name == "host_cpu" and alive:
            result["server_cpu_s_per_activation"] = round(result["server_cpu_s"] / spec["count"], 2)
        return result


def terminate(workdir: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    with fresh_server(workdir, "terminate") as server:
        victim = make_victim(server)
        rich = hostile.Tenant(server, "rich", "--fuel", str(10**13))
        rich.http.timeout = httpx.Timeout(5)
        rich.deploy("spin", hostile.SPIN)
        spinners = [rich.start("spin", {"ms": 50_000}) for _ in range(2)]
        running = []
        for instance in spinners:
            try:
                running.append(rich.wait("spin", instance, 10, until={"running"})["status"])
            except AssertionError as error:
                running.append(str(error))
        time.sleep(0.2)
        started = time.monotonic()
        codes = [rich.http.post(f"/v1/workflows/spin/instances/{i}/terminate").status_code for i in spinners]
        timeout = cfg["terminate_timeout"]
        latency = echo_once(victim, timeout)
        freed = None if latency is None else round(time.monotonic() - started, 4)
        statuses = [rich.status("spin", i)["status"] for i in spinners]
        return {
            "attack": "2 x SPIN 50 s, fuel 1e13, then terminate both",
            "spinners_before": running,
            "terminate_http_status": codes,
            "terminate_to_victim_complete_s": freed,
            "victim_instance_s": None if latency is None else round(latency, 4),
            "timeout_s": timeout,
            "spinner_status_after": statuses,
        }


# -- report -----------------------------------------------------------------------------


def fmt(seconds: float | None, timeout: float | None = None) -> str:
    if seconds is None:
        return f"> {timeout:g} s" if timeout is not None else "–"
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.1f} s"


def table(results: dict[str, Any]) -> str:
    rows = [
        "| scenario | victim p50 | victim max | attacker's activation ends | error | notes |",
        "|---|---|---|---|---|---|",
    ]
    base = results["baseline"]["victim"]
    rows.append(
        f"| baseline ({len(base['runs_s'])} runs) | {fmt(base['p50_s'])} | "
        f"{fmt(base['max_s'], base['timeout_s'])} | – | – | nothing else running |"
    )
    for name in ATTACKS:
        if name not in results:
            continue
        r = results[name]
        v, a = r["victim"], r["attacker"]
        p50 = fmt(v["p50_s"]) if v["p50_s"] is not None else fmt(None, v["timeout_s"])
        if a["last_end_s"] is not None:
            ends = f"first {fmt(a['first_end_s'])}, last {fmt(a['last_end_s'])} ({a['count']}/{a['count']})"
        else:
            ends = f"> {a['timeout_s']:g} s ({a['ended']}/{a['count']} ended)"
        notes = [r["attack"]]
        if v["timed_out"]:
            notes.append(f"victim timed out after {len(v['runs_s'])} run(s)")
        if name == "flood":
            notes.append(f"server peak RSS +{r['server_rss_hwm_growth_mib']} MiB")
        if name == "host_cpu":
            per = r.get("server_cpu_s_per_activation")
            prefix = "≥ " if a["last_end_s"] is None else ""
            notes.append(f"server CPU {prefix}{per} s per activation ({r['server_cpu_s']} s in all)")
        if a["server_killed_by_rss_guard"]:
            notes.append("server killed by the RSS guard")
        if not r["server_alive"]:
            notes.append("server died")
        rows.append(
            f"| {name} | {p50} | {fmt(v['max_s'], v['timeout_s'])} | {ends} | "
            f"{', '.join(a['outcomes']) or '–'} | {'; '.join(str(n) for n in notes)} |"
        )
    if "terminate" in results:
        t = results["terminate"]
        rows.append(
            f"| terminate → worker free | {fmt(t['victim_instance_s'], t['timeout_s'])} | – | "
            f"{fmt(t['terminate_to_victim_complete_s'], t['timeout_s'])} (terminate → victim complete) | "
            f"{', '.join(sorted(set(t['spinner_status_after'])))} | {t['attack']}; terminate HTTP "
            f"{t['terminate_http_status']} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and shorter timeouts")
    parser.add_argument("--server-python", default=sys.executable, help="interpreter that runs the server")
    parser.add_argument("--only", nargs="*", help="scenarios to run (default: all)")
    args = parser.parse_args()
    cfg: dict[str, Any] = {
        "baseline_runs": 5 if args.quick else 10,
        "victim_runs": 3 if args.quick else 5,
        "victim_timeout": 10.0 if args.quick else 15.0,
        "terminate_timeout": 15.0 if args.quick else 20.0,
        "attack_timeout": {
            "sleep": 25.0 if args.quick else 35.0,
            "backlog": 30.0,
            "flood": 40.0 if args.quick else 60.0,
            "host_cpu": 25.0 if args.quick else 35.0,
        },
    }
    server = use_server_python(args.server_python)
    log(f"server code: {server}")
    names = args.only or ["baseline", *ATTACKS, "terminate"]
    results: dict[str, Any] = {}
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tf-isolation-") as tmp:
        workdir = Path(tmp)
        for name in names:
            log(f"{name} ...")
            t0 = time.monotonic()
            if name == "baseline":
                results[name] = baseline(workdir, cfg)
            elif name == "terminate":
                results[name] = terminate(workdir, cfg)
            else:
                results[name] = attack(workdir, name, cfg)
            results[name]["scenario_s"] = round(time.monotonic() - t0, 1)
            log(f"{name}: {time.monotonic() - t0:.1f} s")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = {
        "when": stamp,
        "quick": args.quick,
        "server": server,
        "bench_python": sys.executable,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "config": cfg,
        "total_s": round(time.monotonic() - began, 1),
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"isolation-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {out.relative_to(ROOT)} ({report['total_s']} s)")
    print(f"Server code: {server['code_root']} @ {server['commit']} (host/wasi.py: {server['has_host_wasi_py']})\n")
    print(table(results))


if __name__ == "__main__":
    main()
