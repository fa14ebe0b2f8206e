"""Loss kernels, one module per backend, each keeping the contract of ``core.reference``."""
