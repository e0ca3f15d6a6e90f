"""Deterministic by construction: outside step bodies the sandbox's clocks give the instance's logical time and
its randomness comes from a per-instance seed, so a replay sees what the first run saw; inside bodies, the real
values. Checked in the real sandbox, across activations (a sleep forces a replay) and across instances."""

from __future__ import annotations

from typing import Any

from tenantflow.runtime.engine.clock import ManualClock
from tenantflow.runtime.records import InstanceKey, Tenant
from tenantflow.runtime.service import Service
from tenantflow.runtime.service.local import drive

# Everything the workflow reads outside bodies is recorded by a step on the first run and compared after the
# sleep, in a later activation that replays up to it.
SOURCE = """
import datetime, os, random, secrets, time, uuid

def observe(step):
    return {
        "time": time.time(),
        "time_ns": time.time_ns(),
        "now": datetime.datetime.now().isoformat(),
        "utcnow": datetime.datetime.now(datetime.UTC).isoformat(),
        "today": datetime.date.today().isoformat(),
        "monotonic": time.monotonic(),
        "perf_counter": time.perf_counter(),
        "random": random.random(),
        "choice": random.choice("abcdefghij" * 10),
        "own_random": random.Random().random(),
        "uuid4": str(uuid.uuid4()),
        "urandom": os.urandom(8).hex(),
        "secrets": secrets.token_hex(8),
        "set_order": list({"alpha", "beta", "gamma", "delta", "epsilon", "zeta"}),
        "explicit": [step.now().isoformat(), step.random(), str(step.uuid4())],
    }

def run(event, step):
    seen = observe(step)
    first = step.do("record", lambda: seen)
    inside = step.do("inside", lambda: [time.time(), random.random(), str(uuid.uuid4())])
    after_step = time.time()
    post = random.random()  # the body's draws (run on the first activation only) do not move this one
    recorded = step.do("post", lambda: post)
    step.sleep("nap", "1 hour")
    return {"first": first, "seen": seen, "inside": inside, "after_step": after_step,
            "after_sleep": time.time(), "matches": seen == first, "post_matches": post == recorded}
"""


def start(service: Service, tenant: Tenant, instance_id: str, create: bool = True) -> Any:
    if create:
        service.create_instances(tenant, "wf", [{"id": instance_id}])
    key = InstanceKey(tenant.tenant_id, "wf", instance_id)
    activations, _ = drive(service, service.clock, key)  # type: ignore[arg-type]
    done = service.store.instance(key)
    assert done.status == "complete", done.error
    assert activations == 2  # the replay after the nap
    return done.output


def test_outside_bodies_a_replay_sees_what_the_first_run_saw(
    service: Service, tenant: Tenant, clock: ManualClock
) -> None:
    service.deploy(tenant, "wf", SOURCE)
    created = clock.now()
    out = start(service, tenant, "one")
    assert out["matches"] is True, {k: (out["first"][k], v) for k, v in out["seen"].items() if out["first"][k] != v}
    assert out["post_matches"] is True
    first = out["first"]
    # Logical time: the instance's creation time until its first durable call returns.
    assert abs(first["time"] - created) < 0.01
    assert first["monotonic"] == first["perf_counter"]
    # After a step, the time it finished; after the sleep, the time it woke.
    assert out["after_step"] >= first["time"]
    assert out["after_sleep"] >= out["after_step"] + 3600


def test_instances_get_their_own_seed_and_bodies_the_real_values(
    service: Service, tenant: Tenant, clock: ManualClock
) -> None:
    service.deploy(tenant, "wf", SOURCE)
    one, two = start(service, tenant, "one"), start(service, tenant, "two")
    for key in ("random", "uuid4", "urandom", "secrets", "own_random"):
        assert one["first"][key] != two["first"][key], key
    assert one["first"]["set_order"] == two["first"]["set_order"]  # string hashing is stable


def test_a_restart_reseeds(service: Service, tenant: Tenant, clock: ManualClock) -> None:
    service.deploy(tenant, "wf", SOURCE)
    before = start(service, tenant, "r")
    service.control(tenant, "wf", "r", "restart")
    after = start(service, tenant, "r", create=False)
    assert before["first"]["random"] != after["first"]["random"]
