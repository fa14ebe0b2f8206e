"""Chainer's negative-sampling API on torch tensors.

``negative_sampling(x, t, W, sampler, sample_size, reduce='sum', *, return_samples=False)`` keeps
Chainer's signature and semantics (the contract in README.md, "The core"; the float64 oracle is
``ns_plugins/core/reference.py``), and checks its inputs before any kernel runs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ns_plugins.core.alias import AliasSampler
from ns_plugins.core.checks import check_float_pair, check_id_bounds, check_loss_shapes, min_max
from ns_plugins.core.ops import ns_loss

__all__ = ["negative_sampling", "NegativeSampling", "check_reduce"]


def check_reduce(reduce) -> None:
    if reduce not in ("sum", "no"):
        raise ValueError(f"only 'sum' and 'no' are valid for 'reduce', but '{reduce}' is given")


def _check_inputs(x, t, W, sample_size) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(W, torch.Tensor):
        raise TypeError("x and W must be torch tensors")
    if not isinstance(t, torch.Tensor):
        raise TypeError("t must be a torch tensor")
    if t.dim() != 1:
        raise ValueError(f"t must be 1-D, got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"t must be an integer tensor, got {t.dtype}")
    if x.dim() >= 1 and t.shape[0] != x.shape[0]:
        raise ValueError(f"batch sizes differ: x has {x.shape[0]} rows, t has {t.shape[0]}")
    check_loss_shapes(x.shape, W.shape)
    check_float_pair(x, W)
    if isinstance(sample_size, bool) or not isinstance(sample_size, (int, np.integer)):
        raise TypeError(f"sample_size must be an int, got {type(sample_size).__name__}")
    if sample_size < 0:
        raise ValueError(f"sample_size must be non-negative, got {sample_size}")
    if t.numel():
        check_id_bounds(W.shape[0], min_max(t), None, "t")


def _draw(sampler, shape, V, t) -> torch.Tensor:
    """The sampler's ids with column 0 set to ``t``; its negatives checked to lie in [0, V)."""
    samples = sampler(shape)
    if not isinstance(samples, torch.Tensor):
        samples = torch.as_tensor(np.asarray(samples))
    if tuple(samples.shape) != shape:
        raise ValueError(f"sampler returned shape {tuple(samples.shape)}, expected {shape}")
    if samples.dtype.is_floating_point or samples.dtype.is_complex or samples.dtype == torch.bool:
        raise TypeError(f"sampler must return integer ids, got {samples.dtype}")
    samples = samples.to(device=t.device, dtype=torch.int64, copy=True)
    samples[:, 0] = t.to(torch.int64)
    neg = samples[:, 1:]
    if neg.numel():
        check_id_bounds(V, None, min_max(neg), "the sampler's output")
    return samples


def negative_sampling(x, t, W, sampler, sample_size, reduce="sum", *, return_samples=False):
    """Negative-sampling loss; ``sum`` gives a 0-d sum over rows, ``no`` the (B,) row losses."""
    check_reduce(reduce)
    _check_inputs(x, t, W, sample_size)
    B = x.shape[0]
    samples = _draw(sampler, (B, sample_size + 1), W.shape[0], t.to(x.device))
    rows = ns_loss(x, W, samples)
    loss = rows.sum() if reduce == "sum" else rows
    return (loss, samples) if return_samples else loss


class NegativeSampling(nn.Module):
    """``chainer.links.NegativeSampling`` on torch: owns W (zero-initialised, like Chainer's) and an
    exact alias sampler over ``counts ** power`` that draws on W's device."""

    def __init__(self, in_size: int, counts, sample_size: int, power: float = 0.75):
        super().__init__()
        self.sample_size = sample_size
        self.alias = AliasSampler.from_counts(counts, power)
        self.W = nn.Parameter(torch.zeros(len(self.alias), in_size))
        self.generator: torch.Generator | None = None

    def sampler(self, shape):
        return self.alias.sample_torch(shape, generator=self.generator, device=self.W.device)

    def forward(self, x, t, reduce="sum", *, return_samples=False):
        return negative_sampling(
            x, t, self.W, self.sampler, self.sample_size, reduce, return_samples=return_samples
        )
