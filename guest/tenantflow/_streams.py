"""Randomness that replays: in the sandbox, the `random` module draws from two streams.

Outside step bodies it draws from the workflow's stream, seeded from the instance's seed (the host answers
WASI's random bytes from it there), so every replay draws the same; inside a body, from a stream seeded from
the host's CSPRNG (what the body computes is journaled anyway). A body's draws never move the workflow's
stream: a replay, which does not run a finished body, then draws what the first run drew after it.
"""

from __future__ import annotations

import os
import random

__all__ = ["Streams", "install"]


class Streams(random.Random):
    """`random.Random` whose primitives (`random`, `getrandbits`, `randbytes`) go to the body's stream while a
    body runs; every other method is built on them. `seed`, `getstate` and `setstate` are the workflow's."""

    def __init__(self) -> None:
        super().__init__()
        self._real: random.Random | None = None
        self._body: random.Random | None = None

    def enter_body(self) -> None:
        if self._real is None:
            # Seeded inside a body, from the host's CSPRNG: 256 bits in one WASI call (`random.Random()` would
            # read 2,496 bytes, ten calls of 256).
            self._real = random.Random(int.from_bytes(os.urandom(32), "little"))
        self._body = self._real

    def leave_body(self) -> None:
        self._body = None

    def random(self) -> float:
        body = self._body
        return super().random() if body is None else body.random()

    def getrandbits(self, k: int, /) -> int:
        body = self._body
        return super().getrandbits(k) if body is None else body.getrandbits(k)

    def randbytes(self, n: int) -> bytes:
        body = self._body
        return super().randbytes(n) if body is None else body.randbytes(n)


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
