"""The guest's own work in an activation, in fuel: `python -m bench.guest_fuel [--artifact PATH ...]`.

Not a test, and not timed: fuel counts the guest's wasm instructions, so these figures are the same on a busy
machine and a quiet one. Between two host calls the Store's counter moves only by what the guest runs (the host's
CPU is charged to it inside the calls), so the fuel burnt from the end of one host call to the start of the next is
the guest's alone. For each workflow: the run's start (the guest's entry to its first `step-begin`), each step's
body (`step-begin` to `step-complete`, host calls inside it excluded) and the workflow's code between two steps.

With `--artifact` (a precompiled guest from another build's cache, e.g. a worktree's
`~/.cache/tenantflow/guest-*.cwasm`), each artifact is measured with this checkout's host: a before/after of the
guest alone. Prints one JSON line per workflow and guest.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tenantflow.host import Completed, Sandbox
from tenantflow.host.engine import make_engine
from wasmtime.component import Component

from bench.sandbox_bench import FastJournal

WORKFLOWS = {
    "one step": "def run(event, step):\n    return step.do('s', lambda: 1)\n",
    "five steps": "def run(event, step):\n    return [step.do(f'step-name-{i}', lambda: {'i': i}) for i in range(5)]\n",
    "async, four steps": (
        "async def run(event, step):\n"
        "    return [await step.do(f'step-name-{i}', lambda: {'i': i}) for i in range(4)]\n"
    ),
}


class FuelSandbox(Sandbox):
    """Adds up the guest's fuel between host calls: before the first `step-begin`, inside each body, between steps."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reset()
        # The guest's entry: its fuel as the export is called (set just before, nothing burns it in between).
        for index, call in list(self._calls.items()):
            self._calls[index] = self._entering(call)

    def _entering(self, call: Any) -> Any:
        def entering(func: Any, store: Any, *args: Any) -> Any:
            self._since = store.get_fuel()
            return call(func, store, *args)

        return entering

    def reset(self) -> None:
        self.start = 0
        self.bodies: list[int] = []
        self.between: list[int] = []
        self._since: int | None = None
        self._phase = "start"

    def _guarded(self, call: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        guarded = super()._guarded(call, fn, *args, **kwargs)

        def recording(store: Any, *values: Any) -> Any:
            self._entered(call)
            return guarded(store, *values)

        return recording

    def _meter(self) -> None:
        super()._meter()
        act = getattr(self._local, "activation", None)
        self._since = None if act is None else act.fuel.get()

    def _entered(self, call: str) -> None:
        act = getattr(self._local, "activation", None)
        if act is None:
            return
        burnt = 0 if self._since is None else self._since - act.fuel.get()
        self._since = None
        # What led up to this call belongs to the phase it ends.
        if self._phase == "start":
            self.start += burnt
        elif self._phase == "body":
            self.bodies[-1] += burnt
        else:
            self.between[-1] += burnt
        if call == "step-begin":
            self._phase = "body"
            self.bodies.append(0)
        elif call == "step-complete" and self._phase == "body":
            self._phase = "between"
            self.between.append(0)


def measure(box: FuelSandbox, source: str) -> dict[str, Any]:
    code = box.compile(source)
    assert isinstance(code, bytes), code
    box.reset()
    outcome = box.run(source, {"payload": None}, FastJournal(), code=code, seed=b"bench")
    assert isinstance(outcome, Completed), outcome
    between = box.between[: len(box.bodies) - 1]  # after the last step: nothing ends it with a host call
    total = box.start + sum(box.bodies) + sum(between)
    return {"start": box.start, "bodies": box.bodies, "between": between, "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", action="append", default=[], help="a precompiled guest to measure instead")
    args = parser.parse_args()
    guests: list[tuple[str, FuelSandbox]] = []
    if args.artifact:
        for path in args.artifact:
            engine, _ = make_engine()
            guests.append((Path(path).name, FuelSandbox(Component.deserialize_file(engine, path), engine, pool=0)))
    else:
        guests.append(("this checkout", FuelSandbox(pool=0)))
    for name, source in WORKFLOWS.items():
        for label, box in guests:
            figures = measure(box, source)
            print(json.dumps({"bench": "guest_fuel", "workflow": name, "guest": label, **figures}), flush=True)
    for _, box in guests:
        box.close()


if __name__ == "__main__":
    main()
