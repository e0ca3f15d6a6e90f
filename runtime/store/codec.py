"""JSON payloads as stored bytes: zstandard-compressed above a threshold."""

from __future__ import annotations

import json
from typing import Any

import zstandard

THRESHOLD = 1024
_ZSTD = b"Z"
_PLAIN = b"J"


def encode_text(text: str) -> bytes:
    raw = text.encode()
    if len(raw) < THRESHOLD:
        return _PLAIN + raw
    return _ZSTD + zstandard.ZstdCompressor(level=3).compress(raw)


def decode_text(blob: bytes | memoryview | None) -> str | None:
    if blob is None:
        return None
    data = bytes(blob)
    if data[:1] == _ZSTD:
        return zstandard.ZstdDecompressor().decompress(data[1:]).decode()
    return data[1:].decode()


# Enough of a stored value's start to know its decoded size (the prefix and a zstd frame header).
HEAD_BYTES = 24


def raw_size(head: bytes | memoryview | None, stored: int) -> int:
    """The decoded size in bytes of a stored value, from its first HEAD_BYTES and its stored length,
    without decompressing it."""
    if head is None:
        return 0
    data = bytes(head)
    if data[:1] == _ZSTD:
        size = zstandard.frame_content_size(data[1:])
        return size if size >= 0 else stored
    return max(stored - 1, 0)


def encode(value: Any) -> bytes:
    return encode_text(json.dumps(value))


def decode(blob: bytes | memoryview | None) -> Any:
    text = decode_text(blob)
    return None if text is None else json.loads(text)
