"""`json.dumps` and `json.loads` with their default arguments, without the per-call set-up.

A step's result crosses as JSON twice in the guest: the body's value is encoded for the journal and the
journaled text is decoded back (so that the first run and a replay return the same value). `json.dumps`
builds a new C encoder on every call (`JSONEncoder.iterencode`, with a closure and a markers dict) and
`json.loads` matches whitespace around the document with a regex twice; in the guest's interpreter that
set-up was ~80% of encoding or decoding a small value (measured in fuel: ~27,000 against ~4,500 for
`dumps(1)`, ~20,000 against ~4,000 for `loads("1")`). Here the encoder and the scanner are made once and
called directly; the output and the errors are `json`'s own.

Depends on the `json` package's internals (CPython 3.11-3.14): `json.encoder.c_make_encoder`, its nine
positional arguments as `JSONEncoder.iterencode` passes them, and `JSONDecoder.scan_once`. Where the C
accelerator is missing, `json.dumps` is used as it is.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any

__all__ = ["dumps", "loads"]

_DEFAULTS = json.JSONEncoder()
_DECODER = json.JSONDecoder()
_scan: Callable[[str, int], tuple[Any, int]] = getattr(_DECODER, "scan_once")  # noqa: B009 (untyped in typeshed)


def _make_encoder() -> Callable[[Any, int], Any] | None:
    make = getattr(json.encoder, "c_make_encoder", None)  # noqa: B009 (private: not in typeshed)
    if make is None:
        return None
    d = _DEFAULTS
    # No markers (check_circular=False): the encoder then keeps no state between calls, so one serves every
    # call and thread. A circular value runs into the recursion limit instead, and `dumps` hands it to
    # `json.dumps`, which names it.
    encoder: Callable[[Any, int], Any] = make(
        None,
        d.default,
        json.encoder.encode_basestring_ascii,
        None,
        d.key_separator,
        d.item_separator,
        d.sort_keys,
        d.skipkeys,
        d.allow_nan,
    )
    return encoder


_encode = _make_encoder()


def dumps(value: Any) -> str:
    """`json.dumps(value)`: the same text, the same TypeError, ValueError or RecursionError."""
    if _encode is None:
        return json.dumps(value)
    try:
        return "".join(_encode(value, 0))
    except RecursionError:
        return json.dumps(value)  # a circular value (ValueError) or one nested too deep (RecursionError again)


def loads(text: str) -> Any:
    """`json.loads(text)` of a str: the same value, and the same JSONDecodeError for text that is not JSON."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return json.loads(text)  # leading whitespace, or not JSON: json's own handling and error
    if end != len(text):
        return json.loads(text)
    return value
