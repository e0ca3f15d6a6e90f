"""The application layer: tenants, workflows, instances and quotas, on one store and one engine."""

from tenantflow.runtime.service.application import MAX_BATCH, MAX_PAGE, Service, hash_key

__all__ = ["MAX_BATCH", "MAX_PAGE", "Service", "hash_key"]
