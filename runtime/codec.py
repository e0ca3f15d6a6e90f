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


def encode(value: Any) -> bytes:
    return encode_text(json.dumps(value))


def decode(blob: bytes | memoryview | None) -> Any:
    text = decode_text(blob)
    return None if text is None else json.loads(text)
