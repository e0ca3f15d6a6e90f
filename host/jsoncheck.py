"""JSON from the guest, checked before the host keeps it: valid and bounded in nesting.

NaN and Infinity are accepted: Python's json.dumps writes them for float('nan') and float('inf'),
workflows return them, and the runtime's codec answers them as null (tests/test_api.py).

Lone surrogates: a component-model string is valid UTF-8 (wasmtime checks it), so a raw lone
surrogate never reaches the host; an escaped one ("\\ud800") is JSON that Python's own json.dumps
writes for such a str, so it is accepted and kept escaped in the stored text. Readers that decode
it must encode with an error handler (the runtime's read paths).

A tenant can replace `json.dumps` inside the guest or call the host binding directly, so a result,
an output, a step config or a fetch request may be anything. Everything here runs in C (regex,
json) except a loop of at most MAX_JSON_DEPTH regex passes; a 1 MiB result costs a few ms.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tenantflow.host.errors import HostRefusal, invalid_call
from tenantflow.host.limits import MAX_JSON_DEPTH

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")


def _check_depth(text: str, call: str, max_depth: int) -> None:
    if text.count("[") + text.count("{") <= max_depth:
        return
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for _ in range(max_depth):
        if not brackets:
            return
        reduced = _INNERMOST.sub("", brackets)
        if reduced == brackets:
            return  # unbalanced: json.loads refuses it below
        brackets = reduced
    if brackets:
        raise invalid_call(call, f"JSON nested deeper than {max_depth} levels")


def parse(text: str, call: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The value of `text`, or InvalidHostCall naming `call` and what is wrong."""
    _check_depth(text, call, max_depth)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise invalid_call(call, f"not valid JSON ({str(error)[:200]})") from None
    return value


def check(text: str, call: str) -> None:
    """Raise InvalidHostCall unless `text` is JSON the host may store."""
    parse(text, call)


__all__ = ["HostRefusal", "check", "parse"]
