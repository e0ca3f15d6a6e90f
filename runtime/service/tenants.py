"""Tenants and their keys: needs only a store, so operator commands never start a sandbox."""

from __future__ import annotations

import hashlib
import secrets

from tenantflow.runtime.engine.clock import Clock
from tenantflow.runtime.errors import NotFound, Unauthorized
from tenantflow.runtime.records import Quotas, Tenant, check_id
from tenantflow.runtime.store import SQLStore


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_key() -> str:
    return "tf_" + secrets.token_urlsafe(32)


class Tenants:
    """Create tenants, authenticate keys (only their SHA-256 is stored) and decide who sees whom."""

    def __init__(self, store: SQLStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def create(self, name: str, quotas: Quotas | None = None, operator: bool = False) -> tuple[Tenant, str]:
        """A new tenant and its key; Conflict if the name is taken."""
        check_id(name, "tenant name")
        api_key = new_key()
        tenant = Tenant(name, name, quotas or Quotas(), self.clock.now(), operator)
        self.store.create_tenant(tenant, hash_key(api_key))
        return tenant, api_key

    def set_key(self, tenant_id: str, api_key: str) -> None:
        self.store.set_key(tenant_id, hash_key(api_key))

    def authenticate(self, api_key: str | None) -> Tenant:
        if not api_key:
            raise Unauthorized("send the tenant's API key as 'Authorization: Bearer <key>'")
        tenant = self.store.tenant_by_key(hash_key(api_key))
        if tenant is None:
            raise Unauthorized("unknown API key")
        return tenant

    def tenants(self, actor: Tenant) -> list[Tenant]:
        """The tenants `actor` may look at: every tenant for an operator, else only itself."""
        if not actor.operator:
            return [actor]
        return sorted(self.store.tenants(), key=lambda t: (t.tenant_id != actor.tenant_id, t.name))

    def view_as(self, actor: Tenant, tenant_id: str | None) -> Tenant:
        """The tenant whose resources `actor` reads: itself, or (for an operator only) the one named.

        Anyone else asking for another tenant gets NotFound, as for another tenant's resources."""
        if tenant_id is None or tenant_id == actor.tenant_id:
            return actor
        if not actor.operator:
            raise NotFound(f"no tenant {tenant_id!r}")
        return self.store.tenant(check_id(tenant_id, "tenant name"))
