"""Per-activation limits and per-tenant grants, with their defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one activation may use before it is killed with a named error."""

    memory_bytes: int = 256 << 20
    # Fuel for the code outside step bodies (replay and orchestration) between two durable calls:
    # a segment that uses it all is FuelExhausted ("ran N s of CPU outside any step"). Past
    # CHECKPOINT_SHARE of it (new work only) or of the deadline, the activation checkpoints.
    fuel: int = 20_000_000_000
    deadline_s: float = 60.0
    # The tenant's cap on one step attempt's CPU budget (the step's `cpu` option, default 30 s).
    max_step_cpu_ms: int = 300_000
    log_bytes: int = 1 << 20
    output_bytes: int = 1 << 20


@dataclass(frozen=True)
class Grants:
    """Capabilities the platform grants a tenant; by default none."""

    egress: tuple[str, ...] = ()
    fetch_timeout_s: float = 10.0
    fetch_max_bytes: int = 1 << 20
    fetch_max_redirects: int = 5


# -- caps the host enforces on what a guest hands it (see the README's security model) -----------

# Step names and event types: enough for any readable name, small enough to store and list cheaply.
MAX_NAME_BYTES = 256
# Event types are identifiers the platform routes on: no spaces, quotes or control characters.
EVENT_TYPE_PATTERN = r"[A-Za-z0-9_.:-]{1,100}"
# A step config is a few small fields (retries, timeout) as JSON.
MAX_CONFIG_BYTES = 4 << 10
# A fetch request: a body of up to 1 MiB plus URL, method and headers.
MAX_CALL_REQUEST_BYTES = (1 << 20) + (64 << 10)
# The largest string the host lifts from the guest at all; longer ones are refused before decoding.
MAX_LIFT_BYTES = 16 << 20
# JSON nesting the host accepts in results, outputs, configs and requests (far below the ~1000
# where CPython's json and every reader would raise RecursionError).
MAX_JSON_DEPTH = 100
# Retries of one step: enough for any real back-off schedule, not a loop of millions of attempts.
MAX_RETRIES = 100
# Longest retry delay, step timeout, wait and sleep (`sleep_until` too, from now): 365 days, as
# Cloudflare Workflows; a year is already more than any workflow means.
MAX_DURATION_MS = 365 * 86_400_000
# `sleep_until` takes epoch seconds: a larger number (the year 5138) is milliseconds by mistake.
MAX_EPOCH_SECONDS = 100_000_000_000
# The latest wake time of a durable sleep: 9999-12-31T23:59:59.999Z, the last instant every reader
# (Python's datetime, JavaScript's Date, the dashboard) can show.
MAX_WAKE_AT_MS = 253_402_300_799_999
# Error strings from the guest, clipped on the host side with a marker, in UTF-8 bytes (the guest
# clips too, but is not trusted).
MAX_ERROR_NAME_BYTES = 128
MAX_ERROR_MESSAGE_BYTES = 16 << 10
MAX_TRACEBACK_BYTES = 64 << 10
# A failed step attempt's traceback, kept with the attempt (each retry has its own).
MAX_ATTEMPT_TRACEBACK_BYTES = 8 << 10
# os.urandom and friends: CPython asks for 256 bytes at a time; refuse huge asks before allocating.
MAX_RANDOM_BYTES = 64 << 10
# One output-stream write (C-level stdout/stderr); WASI's blocking-write-and-flush promises 4096.
MAX_STREAM_WRITE_BYTES = 4096
# Pollables one poll call may wait on.
MAX_POLL_LIST = 1024
# How much fuel a guest spin burns per CPU second on this machine kind (2 cores): host CPU (the
# activation thread's CPU time that its fuel does not account for) and WASI wait time are charged
# at this rate, so a guest that
# makes the host work or sleeps runs out of fuel after about as long as one that spins. Measured:
# `x = 0; while True: x += 1` under fuel 2e9 and 4e9 used 0.237 s and 0.436 s of thread CPU until
# FuelExhausted, i.e. ~1.0e10 fuel per marginal CPU second (default fuel 2e10 = ~2 s of CPU).
# Re-checked for the step budgets (2026-11-29, same machine kind, bench/step_cpu.py): the spin
# 8.8-9.5e9 fuel/s, JSON + sha256 + sorting library code 7.5-8.0e9 fuel/s, a step body of
# `sum(i * i for i in range(n))` ~1.0e10 fuel/s (n = 106,000: 3.3e8 fuel, ~33-36 ms). So the default
# step budget, 30 s x 1e10 = 3e11 fuel, is 30-40 s of guest CPU here, depending on the code.
FUEL_PER_SECOND = 10_000_000_000
# CPU budget of one step attempt, as Cloudflare Workflows: 30 s by default, at most 5 minutes (the
# step's `cpu` option; a tenant's `max_step_cpu_ms` may lower both). Fuel = ms * FUEL_PER_SECOND / 1000.
DEFAULT_STEP_CPU_MS = 30_000
MAX_STEP_CPU_MS = 300_000
# An activation that has used this share of its orchestration fuel (new work, not replay) or of its
# wall-clock deadline checkpoints at the next step boundary and goes on in a fresh activation.
CHECKPOINT_SHARE = 0.5
# Host CPU is measured (a ~2 us system call) and billed to the fuel at most this often.
CHARGE_QUANTUM_S = 0.001
