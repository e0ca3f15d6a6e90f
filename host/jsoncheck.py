"""JSON from the guest, checked before the host keeps it: valid and bounded in nesting.

NaN and Infinity are accepted: Python's json.dumps writes them for float('nan') and float('inf'),
workflows return them, and the runtime's codec answers them as null (tests/http/test_api.py).

Lone surrogates: a component-model string is valid UTF-8 (wasmtime checks it), so a raw lone
surrogate never reaches the host; an escaped one ("\\ud800") is JSON that Python's own json.dumps
writes for such a str, so it is accepted and kept escaped in the stored text. Readers that decode
it must encode with an error handler (the runtime's read paths).

A tenant can replace `json.dumps` inside the guest or call the host binding directly, so a result,
an output, a step config or a fetch request may be anything. Everything here runs in C (regex,
json) except a loop of at most MAX_JSON_DEPTH regex passes over the brackets alone.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tenantflow.host.errors import HostRefusal, invalid_call
from tenantflow.host.limits import MAX_JSON_DEPTH

# Everything but quotes and brackets, deleted in one C pass (bytes.translate).
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'"[]{}'))
_QUOTED = re.compile(rb'"[^"]*"')
_INNERMOST = re.compile(rb"\[\]|\{\}")


def _structure(text: str) -> bytes:
    """The brackets of `text` outside its strings, in order: `[{}{}]` for `[{"a": "["}, {}]`."""
    # Escapes first: a doubled backslash, then an escaped quote, so that every '"' left delimits.
    unescaped = text.replace("\\\\", "").replace('\\"', "")
    kept = unescaped.encode("utf-8", "surrogatepass").translate(None, _NOT_STRUCTURE)
    kept = kept.replace(b'""', b"")  # strings without brackets inside: most of them
    return _QUOTED.sub(b"", kept) if b'"' in kept else kept


def _check_depth(text: str, call: str, max_depth: int) -> None:
    if text.count("[") + text.count("{") <= max_depth:
        return
    brackets = _structure(text)
    for _ in range(max_depth):
        if not brackets:
            return
        reduced = _INNERMOST.sub(b"", brackets)
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
