"""The application layer: tenants, workflows, instances and quotas, on one store and one engine."""

from tenantflow.runtime.service.admin import Admin, DeletedTenant
from tenantflow.runtime.service.application import Service
from tenantflow.runtime.service.tenants import Tenants, hash_key

__all__ = ["Admin", "DeletedTenant", "Service", "Tenants", "hash_key"]
