"""Each isolate slot's pages read in once, before the slot is first reset (a workaround for wasmtime 50.0.1).

When an isolate is dropped, the pooling allocator resets its slot for the next one. With `pagemap_scan`
(host/engine.py POOLING) it asks Linux's PAGEMAP_SCAN which pages of the slot's first `keep_resident` bytes the
guest wrote, and copies the guest's image back over those only. wasmtime 50.0.1's scan asks for pages that are
"written" and not file-backed, but not for pages that are present, and the kernel reports a page nobody touched
(no page-table entry yet) as written: so the slot's first reset copies the image over every page the isolate never
touched too, each a page fault and a 4 KiB copy, and leaves them anonymous memory, which every later reset of that
slot copies again. Measured (`python -m bench.slot_reset`, README "Resetting a used slot"): ~1,860 pages copied
at each drop where the guest wrote ~320. (Later wasmtime adds "present" to the scan's mask.)

`SlotPrimer.prime` reads in every page of each new slot the guest's image is mapped into (`MADV_POPULATE_READ`,
Linux 5.14): the image's pages are then mapped from the artifact's file, which the scan skips, and the rest of the
slot from the zero page, which it skips too. A reset then copies what the guest wrote, and nothing else.

Finding the slots takes a read of /proc/self/maps (~0.5 ms with a few dozen slots), too much for every isolate;
nothing cheaper says which slot an isolate has, and wasmtime takes a new one when it will (not only with more
isolates alive than ever). But a new slot shows in the process's resident file pages, which /proc/self/statm
gives in ~1 µs: a guest reads ~530 pages of its image at its first call (`prepare`) and ~1,900 in an activation,
each first mapped in the new slot, while in a slot read in before they are all mapped already. `check`, called
after an isolate is made and before one is dropped, reads the slots in when those pages grew by GROWTH_PAGES or
more since the last look, and every slot anew when they shrank by SHRINK_PAGES (a slot is remembered by its
mapping's address, and an image mapped afresh at the same address would hold untouched pages again).

Depends on wasmtime's layout (a slot is the image, mapped privately from the precompiled artifact's file, between
two anonymous read-write mappings; read from /proc/self/maps) but not for safety: reading a page in never changes
what it holds (the image's bytes, zeros, or what the guest wrote), so priming a slot that is in use, or a mapping
that is not a slot, changes nothing a guest can see. If the layout is not found, nothing is primed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from dataclasses import dataclass

__all__ = ["SlotPrimer"]

MADV_POPULATE_READ = 22
# Growth of the process's resident file pages that makes `check` look for new slots (a new slot's first call maps
# ~530 of the image's pages; the guest's code, faulted in as it first runs, grows by a few pages at a time).
GROWTH_PAGES = 128
# Shrinkage that makes it read every slot in anew: a slot read in holds ~3,500 of the image's pages, and loses them
# only if its image is unmapped (wasmtime giving the slot to another module) or the kernel reclaims them.
SHRINK_PAGES = 1024
# The most read in beside the image, either side: a slot's parts outside it (the guest's stack and its static
# data below the image, ~1 MiB; the heap's first growth above) are within the allocator's keep_resident (16 MiB).
NEIGHBOUR_BYTES = 16 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.madvise.restype = ctypes.c_int


@dataclass(frozen=True)
class _Mapping:
    start: int
    end: int
    perms: str
    path: str

    @classmethod
    def parse(cls, line: str) -> _Mapping:
        # "start-end perms offset dev inode [path]": the path may hold spaces, so split the first five fields off.
        fields = line.rstrip("\n").split(maxsplit=5)
        start, end = (int(part, 16) for part in fields[0].split("-"))
        return cls(start, end, fields[1], fields[5].strip() if len(fields) > 5 else "")


class SlotPrimer:
    """Reads in each slot that `artifact`'s image is mapped into, once (`prime`); safe from many threads."""

    def __init__(self, artifact: str | os.PathLike[str]) -> None:
        self.artifact = os.path.realpath(artifact)
        self._suffix = self.artifact + "\n"
        self._primed: set[int] = set()
        self._lock = threading.Lock()
        self.enabled = True
        # The process's resident file pages at the last look, and the /proc/self/statm it read them from (opened
        # by the process that reads it: a forked child opens its own).
        self._file_pages = 0
        self._statm: tuple[int, int] | None = None
        # Counters (read by tests and benchmarks): slots read in, and /proc/self/maps reads.
        self.slots = 0
        self.scans = 0

    def check(self) -> int:
        """Read in new slots if the process's resident file pages grew by GROWTH_PAGES since the last look; how
        many slots were read in."""
        if not self.enabled:
            return 0
        with self._lock:  # read under the lock: not before a read-in that another thread is finishing
            pages = self._resident_file_pages()
            grew = pages - self._file_pages >= GROWTH_PAGES
            if self._file_pages - pages >= SHRINK_PAGES:
                # A slot's image unmapped (or its pages reclaimed): one mapped again at the same address would hold
                # untouched pages again, so every slot is read in anew (~0.9 ms a slot already read in).
                self._primed.clear()
                grew = True
            self._file_pages = pages
        return self.prime() if grew else 0

    def prime(self) -> int:
        """Read in every slot of the artifact's image not read in yet; how many were."""
        if not self.enabled:
            return 0
        with self._lock:
            self.scans += 1
            with open("/proc/self/maps") as maps:
                lines = maps.readlines()
            primed = 0
            for at, line in enumerate(lines):
                if not line.endswith(self._suffix) or " rw-p " not in line:
                    continue
                mapping = _Mapping.parse(line)
                if mapping.perms != "rw-p" or mapping.path != self.artifact or mapping.start in self._primed:
                    continue
                self._primed.add(mapping.start)
                low, high = mapping.start, mapping.end
                before = _Mapping.parse(lines[at - 1]) if at > 0 else None
                if before is not None and _anonymous_rw(before) and before.end == low:
                    low = max(before.start, low - NEIGHBOUR_BYTES)
                after = _Mapping.parse(lines[at + 1]) if at + 1 < len(lines) else None
                if after is not None and _anonymous_rw(after) and after.start == high:
                    high = min(after.end, high + NEIGHBOUR_BYTES)
                if _libc.madvise(low, high - low, MADV_POPULATE_READ) != 0:
                    if ctypes.get_errno() == errno.EINVAL:  # a kernel before 5.14: nothing to gain, stop asking
                        self.enabled = False
                        return primed
                    continue  # e.g. the mapping changed meanwhile: it is left as wasmtime made it
                primed += 1
            self.slots += primed
            if primed:
                self._file_pages = self._resident_file_pages()
            return primed

    def close(self) -> None:
        with self._lock:
            if self._statm is not None and self._statm[0] == os.getpid():
                os.close(self._statm[1])
            self._statm = None

    def _resident_file_pages(self) -> int:
        """The process's resident file-backed (and shmem) pages; called with the lock held."""
        statm = self._statm
        if statm is None or statm[0] != os.getpid():
            statm = self._statm = (os.getpid(), os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC))
        # "size resident shared text lib data dt", in pages.
        return int(os.pread(statm[1], 128, 0).split()[2])


def _anonymous_rw(mapping: _Mapping) -> bool:
    return mapping.perms == "rw-p" and not mapping.path
