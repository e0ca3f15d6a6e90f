"""The SDK's JSON codec gives json.dumps's and json.loads's text, values and errors, natively.

In the guest the same module runs on its own CPython (3.14); the step and workflow tests under tests/host and
tests/engine carry results through it there.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from tenantflow import _codec

VALUES: list[Any] = [
    1,
    -1,
    2**70,
    1.5,
    -0.0,
    1.25e300,
    float("nan"),
    float("inf"),
    'héllo\u2028\n"\\',
    "",
    "\ud800",
    None,
    True,
    False,
    [],
    {},
    (1, 2),
    {"a": [1, {"b": None}], "ü": [1.5, "x"]},
    {2: 2, 3.5: "x", None: 1, True: 0},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_dumps_and_loads_match_json(value: Any) -> None:
    text = _codec.dumps(value)
    assert text == json.dumps(value)
    assert repr(_codec.loads(text)) == repr(json.loads(text))


def _error(fn: Any, arg: Any) -> tuple[str, str]:
    try:
        fn(arg)
    except Exception as error:  # noqa: BLE001 (comparing what each raises)
        return type(error).__name__, str(error)
    return "no error", ""


@pytest.mark.parametrize("value", [object(), {"k": {1, 2}}, {(1, 2): 3}, [1, b"x"]], ids=repr)
def test_a_value_json_cannot_encode_raises_the_same_error(value: Any) -> None:
    assert _error(_codec.dumps, value)[0] == "TypeError"
    assert _error(_codec.dumps, value) == _error(json.dumps, value)


def test_a_circular_value_is_named_as_json_names_it() -> None:
    looped: list[Any] = []
    looped.append(looped)
    inner: dict[str, Any] = {}
    inner["x"] = [inner]
    for value in (looped, inner):
        assert _error(_codec.dumps, value) == ("ValueError", "Circular reference detected")
    # The encoder keeps nothing from a failed call: the next value encodes.
    shared = [1]
    assert _codec.dumps([shared, shared]) == "[[1], [1]]"


def test_a_value_nested_too_deep_is_a_recursion_error() -> None:
    deep: list[Any] = []
    cursor = deep
    for _ in range(100_000):
        cursor.append([])
        cursor = cursor[0]
    assert _error(_codec.dumps, deep)[0] == "RecursionError"


@pytest.mark.parametrize(
    "text", [" 1", "1 ", "[1, 2] x", "", '{"a": }', "NaN", "[" * 100_000, '"\\ud800"', "\ufeff1"], ids=repr
)
def test_loads_of_text_that_is_not_plain_json_behaves_as_json(text: str) -> None:
    assert _error(_codec.loads, text) == _error(json.loads, text)


def test_one_encoder_serves_threads_at_once() -> None:
    shared = {"items": [{"n": i, "s": "x" * 50} for i in range(2_000)]}
    expected = json.dumps(shared)
    seen: list[str] = []

    def encode() -> None:
        for _ in range(20):
            seen.append(_codec.dumps(shared))

    threads = [threading.Thread(target=encode) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [expected] * 80
