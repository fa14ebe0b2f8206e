"""ns_plugins: fast, exact negative sampling for Chainer, PyTorch and Lightning."""

__version__ = "0.1.0"
