"""Per-activation limits and per-tenant grants, with their defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one activation may use before it is killed with a named error."""

    memory_bytes: int = 256 << 20
    fuel: int = 20_000_000_000
    deadline_s: float = 60.0
    log_bytes: int = 1 << 20
    output_bytes: int = 1 << 20


@dataclass(frozen=True)
class Grants:
    """Capabilities the platform grants a tenant; by default none."""

    egress: tuple[str, ...] = ()
    fetch_timeout_s: float = 10.0
    fetch_max_bytes: int = 1 << 20
    fetch_max_redirects: int = 5
