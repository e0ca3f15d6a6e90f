"""Randomness that replays: in the sandbox, the `random` module draws from two streams.

Outside step bodies it draws from the workflow's stream, seeded from the instance's seed (the host answers
WASI's random bytes from it there), so every replay draws the same; inside a body, from a stream seeded from
the host's CSPRNG (what the body computes is journaled anyway). A body's draws never move the workflow's
stream: a replay, which does not run a finished body, then draws what the first run drew after it.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

__all__ = ["SEED_BYTES", "Streams", "install", "mt_state"]

SEED_BYTES = 2496
"""What CPython's `seed()` (no argument) reads from the OS: 624 32-bit words, all of them fed to `init_by_array`."""


class Streams(random.Random):
    """`random.Random` whose primitives (`random`, `getrandbits`, `randbytes`) go to the body's stream while a
    body runs; every other method is built on them. So do `seed`, `getstate` and `setstate`: a body that seeds
    `random` seeds its own stream, never the workflow's (a replay, which does not run the body, would not).

    With `seed_bytes` (the host's, in the sandbox), `seed()` reads its 2,496 bytes in one call of it, not in ten
    WASI reads of 256, and seeds exactly as CPython would have from them: the same state, so the same draws.

    `skip_first_reseed`: the first `seed()` without an argument does nothing (componentize-py's first call into an
    isolate reseeds `random`; the sandbox's harness seeds each run from the run's seed instead, so that one would be
    work for nothing).

    `seed_at_first_draw(run_seed)`: the stream is seeded from `run_seed()`'s bytes, as `seed()` from `seed_bytes`, at
    its first use (a draw, or `getstate`) unless something seeds it before; most workflows never draw, and ask nothing.
    """

    def __init__(self, seed_bytes: Callable[[int], bytes] | None = None, skip_first_reseed: bool = False) -> None:
        self._seed_bytes: Callable[[int], bytes] | None = None
        self._run_seed: Callable[[], bytes] | None = None
        self._real: random.Random | None = None
        self._body: random.Random | None = None
        super().__init__()  # seeded as CPython seeds (at build time: the snapshot's state, reseeded by each run)
        self._seed_bytes = seed_bytes
        self._skip_reseed = skip_first_reseed

    def seed_at_first_draw(self, run_seed: Callable[[], bytes]) -> None:
        self._run_seed = run_seed

    def _unseeded(self) -> None:
        """Seed from the run's seed, which nothing has replaced since `seed_at_first_draw`."""
        run_seed, self._run_seed = self._run_seed, None
        if run_seed is not None:
            self._seed_from(run_seed())

    def _seed_from(self, key: bytes) -> None:
        number = int.from_bytes(key, "little")
        if number >> (SEED_BYTES * 8 - 32):
            # An int seeds `init_by_array` with its 32-bit words, little-endian: all 624 while the last is not 0.
            super().seed(number)
        else:  # fewer words would be used (one key in 2**32): set the state that all 624 give
            super().setstate((3, (*mt_state(key), 624), None))

    def seed(self, a: Any = None, version: int = 2) -> None:
        if self._body is not None:
            self._body.seed(a, version)
            return
        if a is None and self._seed_bytes is not None and self._skip_reseed:
            self._skip_reseed = False
            return
        self._run_seed = None
        if a is not None or self._seed_bytes is None:
            super().seed(a, version)
            return
        self._seed_from(self._seed_bytes(SEED_BYTES))

    def getstate(self) -> tuple[Any, ...]:
        if self._body is not None:
            return self._body.getstate()
        if self._run_seed is not None:
            self._unseeded()
        return super().getstate()

    def setstate(self, state: tuple[Any, ...]) -> None:
        if self._body is None:
            self._run_seed = None
            super().setstate(state)
        else:
            self._body.setstate(state)

    def enter_body(self) -> None:
        if self._real is None:
            self._real = _BodyStream()
        self._body = self._real

    def leave_body(self) -> None:
        self._body = None

    def forget_bodies(self) -> None:
        """Drop the bodies' stream: the next body's first draw makes it again, seeded from the CSPRNG."""
        self._body = self._real = None

    def random(self) -> float:
        body = self._body
        if body is not None:
            return body.random()
        if self._run_seed is not None:
            self._unseeded()
        return super().random()

    def getrandbits(self, k: int, /) -> int:
        body = self._body
        if body is not None:
            return body.getrandbits(k)
        if self._run_seed is not None:
            self._unseeded()
        return super().getrandbits(k)

    def randbytes(self, n: int) -> bytes:
        body = self._body
        if body is not None:
            return body.randbytes(n)
        if self._run_seed is not None:
            self._unseeded()
        return super().randbytes(n)


class _BodyStream(random.Random):
    """The bodies' stream: seeded from the host's CSPRNG at its first use, 256 bits in one WASI call
    (`random.Random()` would read 2,496 bytes, ten calls of 256); most bodies draw nothing, and make no call."""

    def __init__(self) -> None:
        # Not `super().__init__()`, which seeds (CPython's `init_by_array`: ~90,000 fuel in the guest, a tenth of a
        # short activation's own) only for `_seed_once` to seed again: the state is set before anything reads it.
        self.gauss_next = None
        self._seeded = False

    def _seed_once(self) -> None:
        if not self._seeded:
            self._seeded = True
            super().seed(int.from_bytes(os.urandom(32), "little"))

    def seed(self, a: Any = None, version: int = 2) -> None:
        super().seed(a, version)
        self._seeded = True  # (`__init__` resets it after its placeholder)

    def getstate(self) -> tuple[Any, ...]:
        self._seed_once()
        return super().getstate()

    def setstate(self, state: tuple[Any, ...]) -> None:
        self._seeded = True
        super().setstate(state)

    def random(self) -> float:
        self._seed_once()
        return super().random()

    def getrandbits(self, k: int, /) -> int:
        self._seed_once()
        return super().getrandbits(k)

    def randbytes(self, n: int) -> bytes:
        self._seed_once()
        return super().randbytes(n)


def mt_state(key: bytes) -> tuple[int, ...]:
    """The Mersenne Twister's 624 words after CPython's `init_by_array` over `key`'s 32-bit little-endian words."""
    n = 624
    words = [int.from_bytes(key[i : i + 4], "little") for i in range(0, len(key), 4)]
    mt = [19650218] + [0] * (n - 1)
    for i in range(1, n):
        mt[i] = (1812433253 * (mt[i - 1] ^ (mt[i - 1] >> 30)) + i) & 0xFFFFFFFF
    i, j = 1, 0
    for _ in range(max(n, len(words))):
        mt[i] = ((mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1664525)) + words[j] + j) & 0xFFFFFFFF
        i, j = i + 1, j + 1
        if i >= n:
            mt[0], i = mt[n - 1], 1
        if j >= len(words):
            j = 0
    for _ in range(n - 1):
        mt[i] = ((mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1566083941)) - i) & 0xFFFFFFFF
        i += 1
        if i >= n:
            mt[0], i = mt[n - 1], 1
    mt[0] = 0x80000000
    return tuple(mt)


# The module-level functions of `random`: bound methods of its hidden instance `random._inst`, as random.py
# binds them at import (CPython 3.14's list). Rebinding them to a `Streams` is what makes `random.random()`
# and `from random import choice` (imported later by the workflow) draw from the two streams.
_FUNCTIONS = (
    "seed",
    "random",
    "uniform",
    "triangular",
    "randint",
    "choice",
    "randrange",
    "sample",
    "shuffle",
    "choices",
    "normalvariate",
    "lognormvariate",
    "expovariate",
    "vonmisesvariate",
    "gammavariate",
    "gauss",
    "betavariate",
    "binomialvariate",
    "paretovariate",
    "weibullvariate",
    "getstate",
    "setstate",
    "getrandbits",
    "randbytes",
)


def install(streams: Streams) -> None:
    """Make the `random` module draw from `streams` (the sandbox's harness does, at build time)."""
    random._inst = streams
    for name in _FUNCTIONS:
        if hasattr(random, name):
            setattr(random, name, getattr(streams, name))
