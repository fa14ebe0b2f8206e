"""Loss kernels, one module per backend, all keeping the contract of ``ns_plugins.core.reference``."""
