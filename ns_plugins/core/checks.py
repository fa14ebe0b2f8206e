"""What every loss kernel assumes of its arguments, checked in one place before any kernel runs.

The kernels (numba, torch ops, Triton, CuPy) read ``x.shape[1]`` values from every row of ``W``
they gather and index ``W`` with the ids as given, so a face checks shapes with
``check_loss_shapes`` and ids with ``check_id_bounds`` first. Both take plain shapes and numbers,
so numpy, CuPy and torch arrays share them; each face reads the min/max of its own ids (one pass,
one host sync) and its own dtypes. The Chainer face keeps Chainer's own exception types and ids
counted from the end of W (``ns_plugins.chainer.functions``).
"""

from __future__ import annotations

__all__ = [
    "IdOutOfRangeError",
    "check_args",
    "check_float_pair",
    "check_id_bounds",
    "check_ids",
    "check_loss_shapes",
    "min_max",
]


class IdOutOfRangeError(ValueError, IndexError):
    """An id that would index outside W; a ValueError and an IndexError (as numpy's AxisError)."""


def check_loss_shapes(x_shape, W_shape, samples_shape=None, gy_shape=None) -> None:
    """x (B, d), W (V, d), samples (B, k + 1) with column 0 the positive id, gy (B,)."""
    x_shape, W_shape = tuple(x_shape), tuple(W_shape)
    if len(x_shape) != 2:
        raise ValueError(f"x must be 2-D (batch, features), got shape {x_shape}")
    if len(W_shape) != 2:
        raise ValueError(f"W must be 2-D (vocabulary, features), got shape {W_shape}")
    if x_shape[1] != W_shape[1]:
        raise ValueError(f"x has {x_shape[1]} features but W has {W_shape[1]} columns")
    if samples_shape is not None:
        s = tuple(samples_shape)
        if len(s) != 2 or s[0] != x_shape[0] or s[1] < 1:
            raise ValueError(
                f"samples must be 2-D (B, k+1) with B = {x_shape[0]} and k >= 0 (column 0 the "
                f"positive id), got shape {s}"
            )
    if gy_shape is not None and tuple(gy_shape) != (x_shape[0],):
        raise ValueError(f"gy must have shape ({x_shape[0]},), got {tuple(gy_shape)}")


def check_id_bounds(V: int, labels=None, negatives=None, name: str = "samples") -> None:
    """``labels`` (min, max) of column 0 must lie in [-1, V) (-1: the row is ignored),
    ``negatives`` (min, max) of the other columns in [0, V); None where there are none."""
    if labels is not None:
        lo, hi = labels
        if lo < -1 or hi >= V:
            bad = lo if lo < -1 else hi
            raise IdOutOfRangeError(
                f"{name} holds label {bad}, out of range [-1, {V}) (-1 means ignore)"
            )
    if negatives is not None:
        lo, hi = negatives
        if lo < 0 or hi >= V:
            bad = lo if lo < 0 else hi
            raise IdOutOfRangeError(f"{name} holds id {bad}, out of range [0, {V})")


# ------------------------------------------------------------------ torch tensors
# (torch is imported where a function needs it: the CuPy and Chainer faces load this module
# without torch)
def _is_int(t) -> bool:
    return not (t.dtype.is_floating_point or t.dtype.is_complex or str(t.dtype) == "torch.bool")


def check_float_pair(x, W) -> None:
    """x and W: torch tensors of one floating point dtype."""
    import torch

    floats = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    if x.dtype not in floats or W.dtype != x.dtype:
        raise TypeError(
            f"x and W must be floating point tensors of the same dtype, got {x.dtype}, {W.dtype}"
        )


def check_args(x, W, samples, gy=None) -> None:
    """Shapes, dtypes and devices of the op's arguments (no values read: safe on fake tensors)."""
    check_loss_shapes(x.shape, W.shape, samples.shape, None if gy is None else gy.shape)
    check_float_pair(x, W)
    if not _is_int(samples):
        raise TypeError(f"samples must hold integer ids, got {samples.dtype}")
    if not (x.device == W.device == samples.device):
        raise ValueError(
            f"x, W and samples must be on one device, got {x.device}, {W.device}, {samples.device}"
        )


def min_max(t) -> tuple[int, int]:
    """(min, max) of a torch tensor, read with one host sync."""
    import torch

    return tuple(torch.stack([t.min(), t.max()]).tolist())


def check_ids(samples, V: int, name: str = "samples") -> None:
    """Column 0 in [-1, V) (-1: row ignored), the negatives' columns in [0, V): one min/max pass
    and one host sync; raises IdOutOfRangeError naming the bad value."""
    if samples.numel() == 0:
        return
    import torch

    pos, neg = samples[:, 0], samples[:, 1:]
    bounds = torch.stack([pos.min(), pos.max(), *((neg.min(), neg.max()) if neg.numel() else ())])
    bounds = bounds.tolist()
    negatives = tuple(bounds[2:]) if neg.numel() else None
    check_id_bounds(V, tuple(bounds[:2]), None, f"{name}[:, 0]")
    check_id_bounds(V, None, negatives, f"{name}[:, 1:] (the negatives)")
