"""The sandbox's `random` streams, natively: `seed()` from the host's bytes gives the state CPython gives."""

from __future__ import annotations

import os
import random

from tenantflow._streams import SEED_BYTES, Streams, mt_state


def test_mt_state_is_what_cpython_seeds_from_the_same_words() -> None:
    for _ in range(5):
        key = os.urandom(SEED_BYTES - 4) + b"\x01\x00\x00\x80"  # the last word not 0: an int uses all 624
        assert mt_state(key) == random.Random(int.from_bytes(key, "little")).getstate()[1][:624]


def test_seed_reads_the_bytes_once_and_draws_as_cpython_would() -> None:
    key = os.urandom(SEED_BYTES - 4) + b"\xff\x00\x00\x00"
    asked: list[int] = []
    streams = Streams(lambda n: asked.append(n) or key)
    assert asked == []  # the build-time seeding is CPython's own
    streams.seed()
    assert asked == [SEED_BYTES]
    expected = random.Random(int.from_bytes(key, "little"))
    assert [streams.random() for _ in range(3)] == [expected.random() for _ in range(3)]
    streams.seed(42)  # a seed given is CPython's, as always
    assert asked == [SEED_BYTES] and streams.random() == random.Random(42).random()


def test_a_key_whose_last_word_is_zero_seeds_all_624_words() -> None:
    # An int of these bytes has fewer 32-bit words, and CPython would seed from those alone: the state must be
    # the one all 624 give (init_by_array over the whole key, as CPython's seed() without an argument does).
    key = os.urandom(SEED_BYTES - 4) + b"\x00\x00\x00\x00"
    streams = Streams(lambda n: key)
    streams.seed()
    assert streams.getstate()[1] == (*mt_state(key), 624)
    assert streams.getstate()[1][:624] != random.Random(int.from_bytes(key, "little")).getstate()[1][:624]


def test_a_body_seeds_and_sets_its_own_stream_never_the_workflows() -> None:
    streams = Streams()
    streams.seed(7)
    workflow = streams.getstate()
    streams.enter_body()
    streams.seed(42)  # a body's `random.seed(42)`: a replay does not run the body, so it must not move the workflow
    expected = random.Random(42)
    assert [streams.random() for _ in range(2)] == [expected.random() for _ in range(2)]
    saved = streams.getstate()
    first = streams.random()
    streams.setstate(saved)
    assert streams.random() == first  # the body's own state, set back
    streams.leave_body()
    assert streams.getstate() == workflow
    assert streams.random() == random.Random(7).random()


def test_the_run_seed_is_asked_at_the_first_draw_and_never_without_one() -> None:
    key = os.urandom(SEED_BYTES - 4) + b"\x01\x00\x00\x80"
    asked: list[str] = []

    def run_seed() -> bytes:
        asked.append("run-seed")
        return key

    streams = Streams(lambda n: os.urandom(n))
    streams.seed_at_first_draw(run_seed)
    streams.enter_body()
    streams.random()  # a body draws from its own stream
    streams.leave_body()
    assert asked == []
    expected = random.Random(int.from_bytes(key, "little"))
    assert [streams.random(), streams.getrandbits(64), streams.randbytes(3)] == [
        expected.random(),
        expected.getrandbits(64),
        expected.randbytes(3),
    ]
    assert streams.randint(0, 10**9) == expected.randint(0, 10**9)  # built on the primitives
    assert asked == ["run-seed"]


def test_getstate_seeds_first_and_a_seed_or_state_set_before_any_draw_replaces_the_run_seed() -> None:
    key = os.urandom(SEED_BYTES - 4) + b"\x01\x00\x00\x80"
    streams = Streams(lambda n: os.urandom(n))
    streams.seed_at_first_draw(lambda: key)
    assert streams.getstate() == random.Random(int.from_bytes(key, "little")).getstate()
    asked: list[int] = []
    for replace in (lambda s: s.seed(5), lambda s: s.setstate(random.Random(5).getstate())):
        streams = Streams(lambda n: asked.append(n) or os.urandom(n))
        streams.seed_at_first_draw(lambda: (asked.append(0), key)[1])
        replace(streams)
        assert streams.random() == random.Random(5).random()
    assert asked == []


def test_the_bodies_stream_is_seeded_once_at_its_first_use() -> None:
    from tenantflow import _streams

    seeded: list[int] = []
    original = random.Random.seed

    def counting(self: random.Random, a: object = None, version: int = 2) -> None:
        seeded.append(1)
        original(self, a, version)  # type: ignore[arg-type]

    random.Random.seed = counting  # type: ignore[method-assign]
    try:
        body = _streams._BodyStream()
        assert seeded == []  # no placeholder seeding
        first = [body.random() for _ in range(3)]
        assert len(seeded) == 1
    finally:
        random.Random.seed = original  # type: ignore[method-assign]
    assert first != [_streams._BodyStream().random() for _ in range(3)]  # from the CSPRNG
    given = _streams._BodyStream()
    given.seed(7)
    assert given.random() == random.Random(7).random()
