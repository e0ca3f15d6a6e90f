"""Pages of instance lists: newest first, each ending with an opaque cursor (`next_after`) that a client passes
back as `after`. The cursor is the last instance's place in the order (created_at, workflow, instance_id), as
URL-safe base64 of JSON: a client keeps it as it is, the server reads it back exactly (floats round-trip). A page
also names the cursor of the page before it (`prev_before`), passed back as `before`. A search by id goes by
(instance_id, workflow) and takes the same cursors."""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass

from tenantflow.runtime.errors import InvalidInput
from tenantflow.runtime.records import Instance, ListPosition, check_id

__all__ = ["NOT_A_CURSOR", "InstancePage", "cursor", "position"]

NOT_A_CURSOR = "after is a cursor a list answered with (its next_after), passed back as it came"


@dataclass(frozen=True)
class InstancePage:
    instances: list[Instance]
    next_after: str | None
    """The cursor of the next page; None on the last one."""
    prev_before: str | None = None
    """The cursor of the page before (passed back as `before`); None on the first one, or when not known."""


def cursor(instance: Instance) -> str:
    text = json.dumps([instance.created_at, instance.workflow, instance.instance_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def position(after: str) -> ListPosition:
    """The place a cursor names; InvalidInput for anything that is not one."""
    try:
        raw = base64.urlsafe_b64decode(after + "=" * (-len(after) % 4))
        created_at, workflow, instance_id = json.loads(raw)
        if isinstance(created_at, bool) or not isinstance(created_at, int | float):
            raise TypeError
        at = float(created_at)
        if not math.isfinite(at):
            raise ValueError
        return ListPosition(at, check_id(workflow), check_id(instance_id))
    except (binascii.Error, ValueError, TypeError, OverflowError, RecursionError, InvalidInput):
        raise InvalidInput(NOT_A_CURSOR) from None
