"""Each slot read in before its first reset (host/slots.py), against the wasmtime 50.0.1 behaviour it works around.

Pages are counted in fresh processes (a slot's state depends on everything the process did with it before): a
slot's anonymous pages are those a guest wrote or a reset copied the image over; read in, the image's pages are
the artifact file's (shared, and skipped by the reset)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from memjournal import MemJournal
from tenantflow.host import Sandbox
from tenantflow.host.slots import SlotPrimer

# `{mode}`: "read_in" (the Sandbox reads its slots in) or "as_is". Runs ACTIVATIONS activations on THREADS threads
# (with a pool of POOL ready isolates), then prints, for every slot the artifact's image is mapped into, its
# anonymous pages.
_SCRIPT = """
import json, shutil, sys, threading
from pathlib import Path
sys.path[:0] = [{tests!r}, {root!r}]
from bench.slot_reset import slot_anonymous_pages
from memjournal import MemJournal
from tenantflow.host import Sandbox
from tenantflow.host.engine import load_guest_file, make_engine
from wasmtime.component import Component

engine, settings = make_engine()
artifact = Path({tmp!r}) / "guest.cwasm"
shutil.copyfile(load_guest_file(engine, settings)[1], artifact)
component = Component.deserialize_file(engine, str(artifact))
box = Sandbox(component, engine, artifact=artifact if {mode!r} == "read_in" else None, pool={pool})
source = "def run(event, step):\\n    return [step.do(f's{{i}}', lambda: i) for i in range(10)]\\n"

def work():
    for _ in range({activations} // {threads}):
        box.run(source, {{"payload": None}}, MemJournal())

threads = [threading.Thread(target=work) for _ in range({threads})]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
box.close()
primer = box.isolates.primer
print(json.dumps({{"anonymous": slot_anonymous_pages(artifact), "primed": primer.slots if primer else 0}}))
"""


def _slots(tmp_path: Path, mode: str, activations: int, threads: int, pool: int) -> dict[str, list[int] | int]:
    script = _SCRIPT.format(
        tests=str(Path(__file__).resolve().parent.parent),
        root=str(Path(__file__).resolve().parents[2]),
        tmp=str(tmp_path),
        mode=mode,
        activations=activations,
        threads=threads,
        pool=pool,
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, list[int] | int] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_a_slot_read_in_is_reset_by_copying_what_the_guest_wrote(tmp_path: Path) -> None:
    """Without reading in, wasmtime 50.0.1's reset copies the image over every page of the slot the guest never
    touched as well (they become anonymous memory, ~1,400-2,800 pages of the image's 3,792; seen: 2,113); read in,
    a slot keeps the pages the guest wrote only (seen: 223-331)."""
    as_is = _slots(tmp_path, "as_is", 1, 1, pool=0)
    read_in = _slots(tmp_path, "read_in", 1, 1, pool=0)
    assert as_is["primed"] == 0 and read_in["primed"] == 1, (as_is, read_in)
    assert isinstance(as_is["anonymous"], list) and isinstance(read_in["anonymous"], list)
    assert len(as_is["anonymous"]) == len(read_in["anonymous"]) == 1, (as_is, read_in)
    assert as_is["anonymous"][0] > 1_200, as_is
    assert read_in["anonymous"][0] < 700, read_in


def test_every_slot_taken_under_load_is_read_in_before_its_first_reset(tmp_path: Path) -> None:
    """Four threads, the pool making isolates beside them: wasmtime takes new slots when it will (not only with the
    most isolates alive), and none is reset before it was read in."""
    result = _slots(tmp_path, "read_in", 400, 4, pool=4)
    anonymous = result["anonymous"]
    assert isinstance(anonymous, list) and len(anonymous) >= 2, result
    assert result["primed"] == len(anonymous), result
    assert max(anonymous) < 700, result


def test_a_primer_for_a_file_nothing_maps_primes_nothing(tmp_path: Path) -> None:
    artifact = tmp_path / "unmapped.cwasm"
    artifact.write_bytes(b"nothing maps this")
    primer = SlotPrimer(artifact)
    assert primer.prime() == 0 and primer.slots == 0 and primer.scans == 1


def test_the_default_sandbox_reads_its_slots_in(sandbox: Sandbox) -> None:
    primer = sandbox.isolates.primer
    assert primer is not None and primer.enabled
    assert Path(primer.artifact).suffix == ".cwasm" and Path(primer.artifact).is_file()


def test_resident_file_pages_shrinking_reads_every_slot_in_anew(sandbox: Sandbox) -> None:
    """A slot is remembered by its address: when the process's resident file pages shrink (a slot's image unmapped,
    which wasmtime may map afresh at the same address), every slot is read in again on the next look."""
    primer = sandbox.isolates.primer
    assert primer is not None
    sandbox.run("def run(event, step):\n    return 1\n", {"payload": None}, MemJournal())
    # The pool's thread looks too, as it makes and drops isolates: let it finish, or its look takes the shrink below.
    assert sandbox.isolates.settle(timeout=30)
    primer.prime()
    known = primer.slots
    assert known >= 1
    assert primer.check() == 0  # nothing new, nothing shrank
    primer._file_pages += 4 * 1024  # as if ~4,000 resident file pages had been there at the last look
    assert primer.check() >= 1 and primer.slots > known
