"""Upgrade in flight: move a waiting or paused instance to another version, only if its journal replays cleanly
under that version's code (the replay check of `tenantflow replay --source`, done here in the sandbox)."""

from __future__ import annotations

from tenantflow.host import Sandbox
from tenantflow.runtime.engine.executor import limits_for
from tenantflow.runtime.engine.replay import Replay, replay
from tenantflow.runtime.errors import Conflict, InvalidState, TooLarge
from tenantflow.runtime.records import Entry, Instance, Quotas
from tenantflow.runtime.store import SQLStore

__all__ = ["MAX_UPGRADE_BYTES", "UPGRADABLE", "check_upgrade", "journal_entries", "target_version"]

UPGRADABLE = ("waiting", "paused")
MAX_UPGRADE_BYTES = 64 << 20
"""The largest instance (stored bytes) whose journal is read whole for an upgrade's replay check."""


def target_version(store: SQLStore, instance: Instance, version: int) -> str:
    """The source hash of `version` of the instance's workflow; InvalidState unless the instance can move."""
    if instance.status not in UPGRADABLE:
        raise InvalidState(f"only a waiting or paused instance is upgraded; this one is {instance.status}")
    return store.version(instance.tenant_id, instance.workflow, version).source_hash


def journal_entries(store: SQLStore, instance: Instance) -> list[Entry]:
    """The instance's whole journal, page by page; TooLarge past MAX_UPGRADE_BYTES."""
    if instance.stored_bytes > MAX_UPGRADE_BYTES:
        raise TooLarge(
            f"the instance stores {instance.stored_bytes} bytes; an upgrade checks at most {MAX_UPGRADE_BYTES}"
        )
    entries: list[Entry] = []
    after: int | None = -1
    while after is not None:
        page = store.journal_page(instance.key, after)
        entries += page.entries
        after = page.next_after
    return entries


def check_upgrade(
    sandbox: Sandbox, instance: Instance, version: int, source: str, entries: list[Entry], quotas: Quotas
) -> Replay:
    """Replay the journal with `source`; Conflict naming the divergence if it does not replay cleanly."""
    replayed = replay(
        sandbox,
        source,
        entries,
        params=instance.params,
        instance_id=instance.instance_id,
        created_at=instance.clock_origin(),
        seed=instance.seed_bytes(),
        finished=False,
        limits=limits_for(quotas),
    )
    if replayed.divergence is not None:
        raise Conflict(
            f"version {version} does not replay instance {instance.instance_id!r}: {replayed.divergence.describe()}"
        )
    return replayed
