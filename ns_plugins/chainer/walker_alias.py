"""``chainer.utils.WalkerAlias`` built on the exact core alias sampler."""

from __future__ import annotations

from ns_plugins.chainer import _fixed  # noqa: F401  (Chainer imports on new stacks after it)

# isort: split
import chainer
import numpy
from chainer import device_resident
from chainer.backends import cuda

from ns_plugins.core.alias import AliasSampler


class WalkerAlias(device_resident.DeviceResident):
    """Walker's alias method, a drop-in for :class:`chainer.utils.WalkerAlias`.

    Same interface: ``threshold``, ``values``, ``sample(shape)`` (int32 ids on the sampler's
    device), device moves. ``threshold`` and ``values`` keep Chainer's meaning (bucket ``i``
    yields ``values[2 * i]`` when its coin is below ``threshold[i]``, else ``values[2 * i + 1]``)
    but the table is built in float64 in O(V) and the coin is an independent float64 draw, so
    no probability is quantised; ``threshold`` is therefore float64 instead of float32.

    Draws come from numpy's global random state on CPU and cupy's on GPU, as in Chainer, so
    ``numpy.random.seed`` makes a program reproducible.
    """

    def __init__(self, probs):
        super().__init__()
        probs = numpy.asarray(probs)
        if probs.ndim != 1:
            raise ValueError(f"probs must be 1-D, got shape {probs.shape}")
        self._sampler = AliasSampler(probs)
        self.threshold = self._sampler.prob.copy()
        values = numpy.empty(2 * len(self._sampler), numpy.int32)
        values[0::2] = numpy.arange(len(self._sampler), dtype=numpy.int32)
        values[1::2] = self._sampler.alias
        self.values = values

    @property
    def sampler(self) -> AliasSampler:
        """The core sampler (exact probabilities via ``sampler.probabilities()``)."""
        return self._sampler

    @property
    def use_gpu(self):
        xp = self.device.xp
        if xp is cuda.cupy:
            return True
        if xp is numpy:
            return False
        raise RuntimeError(
            "WalkerAlias.use_gpu attribute is only applicable for numpy or "
            "cupy devices. Use WalkerAlias.device attribute for general "
            "devices."
        )

    def device_resident_accept(self, visitor):
        super().device_resident_accept(visitor)
        self.threshold = visitor.visit_array(self.threshold)
        self.values = visitor.visit_array(self.values)

    def sample(self, shape):
        """Draw ids of ``shape``: numpy on CPU, cupy on GPU, int32 as in Chainer."""
        device = self.device
        xp = device.xp
        with chainer.using_device(device):
            # through the methods, as Chainer's sample does (subclasses and patches see it)
            if xp is cuda.cupy:
                return self.sample_gpu(shape)
            ids = self.sample_xp(numpy, shape)
            return ids if xp is numpy else device.send(ids)

    def sample_xp(self, xp, shape):
        """Draw with ``xp``'s global random state: numpy (seeded by ``numpy.random.seed``) or
        cupy."""
        if xp is cuda.cupy:
            return self.sample_gpu(shape)
        if xp is not numpy:
            raise TypeError(
                f"WalkerAlias.sample_xp supports numpy and cupy, got {getattr(xp, '__name__', xp)}"
            )
        # A fresh generator seeded from the global state: seeding numpy reproduces the draws.
        rng = numpy.random.default_rng(numpy.random.randint(0, 2**63 - 1, dtype=numpy.int64))
        return self._sampler.sample(shape, rng).astype(numpy.int32)

    def sample_gpu(self, shape):
        return self._sampler.sample_cupy(shape).astype(numpy.int32)
