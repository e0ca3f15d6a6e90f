"""The durable engine: the journal of an activation, the executor, the worker pool, clocks, local runs.

It runs instances through `tenantflow.host`'s public API and keeps their state in a store.
"""
