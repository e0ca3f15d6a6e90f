"""Workflow code compiled once per version, not on every activation.

Compiling the source was a third of a short activation's CPU in the guest (the approval example: 8.5 M of
its 30 M fuel). The guest compiles a version once (its `check` export, in an isolate of its own) and the
marshalled code object is kept here by source hash, so each activation hands the guest ready code. A cache
per process, bounded in bytes, least recently used out first; a version whose compile fails (a limit the
deploy check did not hit) is remembered as such and runs from source as before.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from tenantflow.host import Limits, Sandbox

__all__ = ["MAX_CODE_BYTES", "CodeCache"]

MAX_CODE_BYTES = 32 << 20
"""What the cache holds at most, in bytes of marshalled code (a version's is a few times its source)."""


class CodeCache:
    def __init__(self, sandbox: Sandbox, max_bytes: int = MAX_CODE_BYTES) -> None:
        self.sandbox = sandbox
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._codes: OrderedDict[str, bytes | None] = OrderedDict()
        self._size = 0
        self.compiles = 0

    def code(self, source_hash: str, source: str, limits: Limits) -> bytes | None:
        """The version's compiled code, compiling it on the first ask; None: run it from source."""
        with self._lock:
            if source_hash in self._codes:
                self._codes.move_to_end(source_hash)
                return self._codes[source_hash]
        compiled = self.sandbox.compile(source, limits)
        code = compiled if isinstance(compiled, bytes) else None
        with self._lock:
            self.compiles += 1
            if source_hash not in self._codes and len(code or b"") <= self.max_bytes:
                self._codes[source_hash] = code
                self._size += len(code or b"")
                while self._size > self.max_bytes:
                    _, dropped = self._codes.popitem(last=False)
                    self._size -= len(dropped or b"")
        return code
