"""Results JSON -> the Markdown table (docs/bench.md) and the chart (docs/bench.png).

`python -m bench.report RESULTS.json --md OUT.md --png OUT.png`. The Markdown needs only the standard
library; the chart needs matplotlib, which lives in the benchmark's own environment
(bench/.venv-dbos), so the runner calls this module with that environment's Python.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SCENARIOS = {
    "sequential": ("sequential: 1 instance × {sequential} steps", "steps/s", True),
    "fan_out": ("fan-out: {fan_out} instances × 10 steps", "instances/s", True),
    "recovery": ("recovery: kill -9 mid fan-out of {recovery}, restart", "s to finish", False),
}
BACKENDS = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
ENGINES = ("tenantflow", "dbos", "baseline", "raw")
ENGINE_LABELS = {
    "tenantflow": "tenantflow",
    "dbos": "DBOS",
    "baseline": "plain Python + INSERT per step",
    "raw": "raw 1-row commits: the limit (fan-out: ÷ 10 steps)",
}


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(stats: dict[str, Any] | None, suffix: str = "") -> str:
    if not stats:
        return "–"
    if stats["min"] == stats["max"]:
        return f"{fmt(stats['median'])}{suffix}"
    return f"{fmt(stats['median'])}{suffix} ({fmt(stats['min'])}–{fmt(stats['max'])})"


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    summary = results["summary"]
    sizes = meta["sizes"]
    lines = [
        f"Measured {meta['finished'][:16].replace('T', ' ')} UTC on {meta['machine']}; "
        f"{meta['runs']} alternating run(s){' (quick form, small sizes)' if meta['quick'] else ''}; "
        f"load average before/after {meta['load_before']} / {meta['load_after']}. "
        "Each cell: median (min–max over the runs); ratios are taken within each run, then summarised.",
        "",
        "| scenario | database | tenantflow | DBOS | plain Python + INSERT/step | raw commit limit "
        "| tenantflow / DBOS | tenantflow / raw | target | met |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for scenario, (title, unit, _) in SCENARIOS.items():
        for backend, label in BACKENDS.items():
            entry = summary.get(backend, {}).get(scenario)
            if entry is None:
                continue
            engines = entry["engines"]
            ratios = entry["ratios"]
            target = entry.get("target")
            met_text = "–" if target is None else met(target["met"])
            lines.append(
                f"| {title.format(**sizes)} ({unit}) | {label} | {cell(engines.get('tenantflow'))} "
                f"| {cell(engines.get('dbos'))} | {cell(engines.get('baseline'))} | {cell(engines.get('raw'))} "
                f"| {cell(ratios.get('tenantflow/dbos'), '×')} | {cell(ratios.get('tenantflow/raw'), '×')} "
                f"| {target['text'] if target else '–'} | {met_text} |"
            )
    lines.append("")
    if any(results.get(k) for k in ("sleepers", "isolate_start", "fast_path", "guest_speed")):
        lines += ["| tenantflow only | figure |", "| --- | --- |"]
    sleep = results.get("sleepers")
    if sleep:
        ok = sleep["peak_rss_mb"] < 1024 and sleep["parked_before_wake"] and sleep["activations_held_while_parked"] == 0
        lines += [
            f"| sleepers: {sleep['instances']:,} instances created at once, each sleeps then finishes (SQLite) "
            f"| created at {fmt(sleep['creation_per_s'])}/s; all parked (`waiting`, no isolate held: "
            f"{sleep['running_at_park']} running, {sleep['activations_held_while_parked']} activations held) "
            f"after {fmt(sleep['park_s'])} s; RSS {fmt(sleep['rss_parked_mb'])} MiB while parked, "
            f"peak {fmt(sleep['peak_rss_mb'])} MiB (target < 1 GiB: {met(ok)}); "
            f"all finished {fmt(sleep['wake_to_all_done_s'])} s after the wake time "
            f"({fmt(sleep['woken_per_s'])}/s) |",
        ]
    lines += tenantflow_only(results)
    recoveries = [x for x in results["samples"] if x["scenario"] == "recovery"]
    if recoveries:
        parts = []
        for engine in ("tenantflow", "dbos"):
            mine = [x for x in recoveries if x["engine"] == engine]
            remaining = sorted(x["remaining_at_kill"] for x in mine)
            ready = sorted(x["spawn_to_ready_s"] for x in mine if x.get("spawn_to_ready_s") is not None)
            if remaining:
                parts.append(
                    f"{ENGINE_LABELS[engine]}: {remaining[len(remaining) // 2]} left at the kill"
                    + (f", new process ready {fmt(ready[len(ready) // 2])} s after spawn" if ready else "")
                )
        lines += [
            "",
            "Recovery: the worker process is killed with SIGKILL once half of the instances are complete; the time "
            "is from spawning the replacement process until the last instance finished, as the database recorded "
            f"it (medians: {'; '.join(parts)}).",
        ]
    delete = results.get("raw_sqlite_delete") or []
    if delete:
        low, high = min(delete), max(delete)
        lines += [
            "",
            f"Raw SQLite commits/s in DBOS's mode (rollback journal, synchronous=FULL), same runs: "
            f"median {fmt(sorted(delete)[len(delete) // 2])} ({fmt(low)}–{fmt(high)}).",
        ]
    lines += ["", "Storage modes: " + "; ".join(f"{k}: {v}" for k, v in meta["modes"].items()) + "."]
    lines += ["", f"Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}.", ""]
    return "\n".join(lines)


def met(ok: bool) -> str:
    return f"**{'yes' if ok else 'no'}**"


def tenantflow_only(results: dict[str, Any]) -> list[str]:
    """Rows for the fast-path figures: isolate start, a real server's first step, fan-out and long instance,
    guest speed; each with its target."""
    lines = []
    start = results.get("isolate_start")
    if start:
        lines.append(
            f"| isolate start, back to back (the pool cannot keep up), the source compiled in the guest: fresh "
            f"instance to the tenant's first instruction | p50 {start['p50_ms']:.2f} ms, "
            f"p99 {start['p99_ms']:.2f} ms (n = {start['n']}) (target ≤ 0.25 ms: {met(start['p50_ms'] <= 0.25)}) |"
        )
        pooled = start.get("pooled")
        if pooled:
            lines.append(
                "| isolate start as the runtime starts an activation: an isolate the pool made ahead, the version's "
                f"code compiled at deploy, to the tenant's first instruction | p50 {pooled['p50_ms']:.2f} ms, "
                f"p99 {pooled['p99_ms']:.2f} ms (n = {pooled['n']}, {pooled['from_the_pool']} from the pool) "
                f"(target ≤ 0.25 ms: {met(pooled['p50_ms'] <= 0.25)}) |"
            )
    fast = results.get("fast_path") or {}
    first = fast.get("first_step")
    if first:
        lines.append(
            "| real `tenantflow serve` (SQLite, WAL, synchronous=FULL, 4 workers): instance created → its first step's "
            "journal time (taken just before its commit), one at a time | "
            f"p50 {first['p50_ms']:.2f} ms, p90 {first['p90_ms']:.2f} ms "
            f"(n = {first['n']}; raw commits/s beside it {first['raw_commits_per_s']:,}) "
            f"(target p50 ≤ 2 ms: {met(first['p50_ms'] <= 2)}) |"
        )
        if "round_trip_p50_ms" in first:
            lines.append(
                "| real server, as its client sees it: create's POST sent → `GET ...?wait` answered with the finished "
                f"instance | p50 {first['round_trip_p50_ms']:.2f} ms, p90 {first['round_trip_p90_ms']:.2f} ms |"
            )
    fan = fast.get("fan_out")
    if fan:
        lines.append(
            f"| real server: {results['meta']['sizes'].get('server_fan_out', 500)} ten-step instances created in "
            f"batches of 100 | {fmt(fan['instances_per_s'])} instances/s (raw commits/s beside it "
            f"{fan['raw_commits_per_s']:,}) (target ≥ 1,000/s: {met(fan['instances_per_s'] >= 1000)}) |"
        )
    seq = fast.get("sequential")
    if seq:
        lines.append(
            f"| real server: one instance of {results['meta']['sizes'].get('server_steps', 2000):,} sequential steps "
            f"| {fmt(seq['steps_per_s'])} steps/s, {seq['ratio_to_raw']:.2f} of the raw commit rate beside it "
            f"({seq['raw_commits_per_s']:,}/s) (target ≥ 0.75: {met(seq['ratio_to_raw'] >= 0.75)}) |"
        )
    guest = [g for g in results.get("guest_speed") or [] if g["engine"] != "native"]
    if guest:
        ratios = ", ".join(f"{g['workload']} {g['cpu_median_ratio']:.2f}×" for g in guest)
        worst = max(g["cpu_median_ratio"] for g in guest)
        lines.append(
            "| guest Python against native CPython, the same CPU-bound loop, interleaved (this thread's CPU time, "
            f"median of {guest[0]['rounds']} per-round ratios) | {ratios} (target ≤ 2×: {met(worst <= 2)}) |"
        )
    return lines


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    colors = {"tenantflow": "#2563eb", "dbos": "#f97316", "baseline": "#9ca3af", "raw": "#111827"}
    figure, axes = plt.subplots(1, 4, figsize=(17, 4.6))
    backends = [b for b in BACKENDS if b in summary]
    for ax, (scenario, (title, unit, higher)) in zip(axes, SCENARIOS.items(), strict=False):
        engines = [e for e in ENGINES if any(e in summary[b].get(scenario, {}).get("engines", {}) for b in backends)]
        width = 0.8 / max(len(engines), 1)
        for i, engine in enumerate(engines):
            xs, ys, lo, hi = [], [], [], []
            for j, backend in enumerate(backends):
                stats = summary[backend].get(scenario, {}).get("engines", {}).get(engine)
                if stats is None:
                    continue
                xs.append(j + (i - (len(engines) - 1) / 2) * width)
                ys.append(stats["median"])
                lo.append(stats["median"] - stats["min"])
                hi.append(stats["max"] - stats["median"])
            bars = ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, color=colors[engine], label=ENGINE_LABELS[engine])
            ax.bar_label(bars, labels=[fmt(y) for y in ys], fontsize=7, padding=2)
        ax.set_xticks(range(len(backends)), [BACKENDS[b] for b in backends])
        ax.set_yscale("log")
        ax.set_title(title.format(**results["meta"]["sizes"]), fontsize=9)
        ax.set_ylabel(f"{unit} ({'higher' if higher else 'lower'} is better, log)", fontsize=8)
        ax.margins(y=0.15)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    ax = axes[3]
    labels, values, targets, spans = [], [], [], []
    for scenario in SCENARIOS:
        for backend in backends:
            entry = summary[backend].get(scenario)
            if entry is None or "tenantflow/dbos" not in entry["ratios"]:
                continue
            ratio = entry["ratios"]["tenantflow/dbos"]
            invert = scenario == "recovery"  # DBOS time / tenantflow time: "times faster" everywhere
            med = 1 / ratio["median"] if invert else ratio["median"]
            low = 1 / ratio["max"] if invert else ratio["min"]
            high = 1 / ratio["min"] if invert else ratio["max"]
            labels.append(f"{scenario.replace('_', '-')}\n{BACKENDS[backend]}")
            values.append(med)
            spans.append((med - low, high - med))
            target = entry.get("target")
            targets.append(None if target is None else (1 / target["value"] if invert else target["value"]))
    bars = ax.bar(
        range(len(values)),
        values,
        0.6,
        yerr=[[s[0] for s in spans], [s[1] for s in spans]],
        capsize=3,
        color=colors["tenantflow"],
    )
    ax.bar_label(bars, labels=[f"{v:.1f}×" for v in values], fontsize=7, padding=2)
    for x, target in enumerate(targets):
        if target is not None:
            ax.hlines(target, x - 0.35, x + 0.35, colors="#dc2626", linestyles="dashed")
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_title("tenantflow vs DBOS (× faster; red dash = target)", fontsize=9)
    ax.set_ylabel("× DBOS (median, min–max)", fontsize=8)
    ax.margins(y=0.15)
    figure.suptitle(
        f"tenantflow vs DBOS Transact {results['meta']['versions'].get('dbos', '')} on the same database, "
        f"{results['meta']['runs']} alternating run(s), {results['meta']['machine']}",
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.report")
    parser.add_argument("results", type=Path)
    parser.add_argument("--md", type=Path)
    parser.add_argument("--png", type=Path)
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    if args.md:
        args.md.write_text(markdown(results))
    if args.png:
        chart(results, args.png)


if __name__ == "__main__":
    main()
