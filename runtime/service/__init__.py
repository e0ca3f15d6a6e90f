"""The application layer: tenants, workflows, instances and quotas, on one store and one engine."""

from tenantflow.runtime.service.application import MAX_BATCH, MAX_PAGE, Service
from tenantflow.runtime.service.tenants import Tenants, hash_key

__all__ = ["MAX_BATCH", "MAX_PAGE", "Service", "Tenants", "hash_key"]
