"""Shared core: the exact alias sampler, the float64 reference and the registered torch op."""

from ns_plugins.core.alias import AliasSampler

__all__ = ["AliasSampler"]
