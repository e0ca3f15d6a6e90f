"""Long polls' places (service.changes): bounded per tenant and per process, woken by a change or a stop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from tenantflow.runtime.errors import QuotaExceeded
from tenantflow.runtime.records import InstanceKey
from tenantflow.runtime.service.changes import Changes

A1 = InstanceKey("a", "wf", "1")
A2 = InstanceKey("a", "wf", "2")
B1 = InstanceKey("b", "wf", "1")


def test_places_are_bounded_per_tenant_and_in_all() -> None:
    async def main() -> None:
        changes = Changes(max_waits=3, max_per_tenant=2)
        async with changes.watch(A1), changes.watch(A2):
            with pytest.raises(QuotaExceeded, match="per tenant"):
                async with changes.watch(A1):
                    pass
            async with changes.watch(B1):
                assert changes.waiting == 3
                with pytest.raises(QuotaExceeded, match="as many long polls"):
                    async with changes.watch(InstanceKey("c", "wf", "1")):
                        pass
        assert changes.waiting == 0  # every place given back

    asyncio.run(main())


def test_a_change_from_another_thread_wakes_the_watch_and_is_not_lost() -> None:
    async def main() -> tuple[float, float]:
        changes = Changes()
        async with changes.watch(A1) as watch:
            started = time.monotonic()
            threading.Timer(0.1, changes.changed, (A1,)).start()
            await watch.wait(10)
            woke = time.monotonic() - started
            changes.changed(A2)  # another instance: no wake
            changes.changed(A1)  # before the next wait: kept
            started = time.monotonic()
            await watch.wait(10)
            kept = time.monotonic() - started
        return woke, kept

    woke, kept = asyncio.run(main())
    assert 0.05 < woke < 5 and kept < 1


def test_close_wakes_every_watch_and_later_ones_do_not_hold() -> None:
    async def main() -> tuple[float, float]:
        changes = Changes()
        async with changes.watch(A1) as watch:
            started = time.monotonic()
            threading.Timer(0.1, changes.close).start()
            await watch.wait(10)
            woke = time.monotonic() - started
        async with changes.watch(A1) as later:
            started = time.monotonic()
            await later.wait(10)
            held = time.monotonic() - started
        return woke, held

    woke, held = asyncio.run(main())
    assert woke < 5 and held < 1
