"""Local replay of an instance's journal in the real sandbox (`tenantflow replay`): no store, no step body run,
the same logical time and randomness; a divergence of other code is found and named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from tenantflow.host import Completed, Sandbox, Suspended
from tenantflow.runtime.cli import main
from tenantflow.runtime.cli.replaying import _entry
from tenantflow.runtime.contract import BUNDLE_FORMAT
from tenantflow.runtime.engine.replay import replay
from tenantflow.runtime.service.local import LocalRun, run_local

AGENT = """
import random, time

def run(event, step):
    plan = step.do("plan", lambda: ["search", "summarize"])
    for turn, tool in enumerate(plan):
        # A name drawn outside the steps: the replay draws the same (the instance's seed).
        label = f"{tool}-{random.randint(0, 999)}"
        print("turn", turn, label, time.time())
        step.do(label, lambda: {"tool": tool, "ran_at": time.time()})
    step.sleep("cool down", "1 hour")
    return step.do("answer", lambda: "42")
"""


def bundle(done: LocalRun, source: str) -> dict[str, Any]:
    """The export document's fields a replay reads, from a local run."""
    instance = done.instance
    return {
        "format": BUNDLE_FORMAT,
        "workflow": instance.workflow,
        "instance": instance.public(),
        "created_at": instance.created_at,
        "seed": instance.seed_bytes().hex(),
        "version": {"version": instance.version, "source_hash": instance.source_hash, "source": source},
        "params": instance.params,
        "journal": done.journal["steps"],
        "events": done.journal["events"],
        "log": instance.log,
    }


def replay_bundle(sandbox: Sandbox, data: dict[str, Any], source: str | None = None, **kw: Any) -> Any:
    entries = [_entry(step) for step in data["journal"]]
    return replay(
        sandbox,
        source or data["version"]["source"],
        entries,
        params=data["params"],
        instance_id=data["instance"]["id"],
        created_at=data["created_at"],
        seed=bytes.fromhex(data["seed"]),
        finished=data["instance"]["status"] == "complete",
        **kw,
    )


def test_the_pinned_code_replays_cleanly_and_prints_what_the_run_printed(sandbox: Sandbox) -> None:
    done = run_local(AGENT, sandbox=sandbox)
    assert done.instance.status == "complete", done.instance.error
    data = bundle(done, AGENT)
    replayed = replay_bundle(sandbox, data)
    assert replayed.clean and replayed.stop is None
    assert isinstance(replayed.outcome, Completed) and json.loads(replayed.outcome.output) == "42"
    assert replayed.answered == [s["position"] for s in data["journal"]]
    # The run's last activation printed the turns too (a replay after the sleep): the same lines, same times.
    assert replayed.outcome.stats.log == done.instance.log


def test_until_stops_before_a_step(sandbox: Sandbox) -> None:
    data = bundle(run_local(AGENT, sandbox=sandbox), AGENT)
    replayed = replay_bundle(sandbox, data, until=("answer", 1))
    assert isinstance(replayed.outcome, Suspended) and replayed.clean
    assert replayed.answered == [s["position"] for s in data["journal"]][:-1]


def test_other_code_that_renames_a_step_diverges_there(sandbox: Sandbox) -> None:
    data = bundle(run_local(AGENT, sandbox=sandbox), AGENT)
    renamed = AGENT.replace('step.sleep("cool down"', 'step.sleep("rest"')
    replayed = replay_bundle(sandbox, data, renamed)
    assert replayed.divergence is not None
    assert (replayed.divergence.position, replayed.divergence.recorded, replayed.divergence.called) == (
        3,
        "sleep 'cool down'",
        "sleep 'rest'",
    )
    early = AGENT.replace(
        '    step.sleep("cool down", "1 hour")\n    return step.do("answer", lambda: "42")', "    return 1"
    )
    assert replay_bundle(sandbox, data, early).divergence.describe() == (
        "at position 3 the journal holds sleep 'cool down', but the code calls nothing (the workflow returns)"
    )


def test_the_cli_replays_a_bundle_and_checks_other_code(sandbox: Sandbox, tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle(run_local(AGENT, sandbox=sandbox), AGENT)))
    runner = CliRunner()
    shown = runner.invoke(main, ["replay", str(path)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "replays cleanly with the pinned version" in shown.output and "turn 1" in shown.output
    other = tmp_path / "other.py"
    other.write_text(AGENT.replace('"answer"', '"reply"'))
    checked = runner.invoke(main, ["replay", str(path), "--source", str(other), "--json"])
    assert checked.exit_code == 1
    verdict = json.loads(checked.output)
    assert verdict["clean"] is False and verdict["divergence"]["called"] == "do 'reply'"
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    refused = runner.invoke(main, ["replay", str(bad)])
    assert refused.exit_code == 1 and "not a tenantflow export" in refused.output
