"""Exact alias sampler (Walker/Vose) shared by every backend.

The table is built in float64 with cumulative sums instead of a Python loop, so V = 1,000,000
builds in tens of milliseconds. Sampling draws the bucket as an integer and the coin as an
independent float64 uniform: unlike splitting one float32 draw into bucket and coin, no probability
is quantised.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["AliasSampler", "build_alias_table"]


def _check_weights(weights) -> np.ndarray:
    w = np.asarray(weights)
    if w.ndim != 1:
        raise ValueError(f"alias weights must be 1-D, got an array of shape {w.shape}")
    if w.size == 0:
        raise ValueError("alias weights are empty")
    if not (np.issubdtype(w.dtype, np.number) or w.dtype == np.bool_):
        raise ValueError(f"alias weights must be numeric, got dtype {w.dtype}")
    w = w.astype(np.float64)
    if np.isnan(w).any():
        raise ValueError(f"alias weights contain NaN (first at index {int(np.isnan(w).argmax())})")
    if np.isinf(w).any():
        raise ValueError(f"alias weights contain inf (first at index {int(np.isinf(w).argmax())})")
    if (w < 0).any():
        raise ValueError(
            f"alias weights must be non-negative (first negative at index "
            f"{int((w < 0).argmax())}: {w[(w < 0).argmax()]})"
        )
    total = w.sum()
    if total <= 0:
        raise ValueError("alias weights are all zero")
    return w / total


def build_alias_table(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (threshold float64[V], alias int64[V]) for a normalised distribution.

    Sweep formulation of Walker's method: smalls (q < 1) are served in order by the current large;
    a large whose residual drops below 1 becomes a bucket aliased to the next large. With D the
    cumulative deficits of the smalls and C the cumulative surpluses of the larges, small i is
    served by the first large j with C[j] >= D[i-1], and large j ends with threshold
    1 + C[j] - D[k] (k the first small with D[k] > C[j]) aliased to large j+1.
    Both lookups are searchsorted calls.
    """
    n = probs.size
    q = probs * n
    small = np.flatnonzero(q < 1.0)
    large = np.flatnonzero(q >= 1.0)
    threshold = np.ones(n, dtype=np.float64)
    alias = np.arange(n, dtype=np.int64)
    if small.size == 0 or large.size == 0:  # uniform, up to rounding
        return threshold, alias
    deficit = np.cumsum(1.0 - q[small])  # D[i]: deficit served up to and including small i
    surplus = np.cumsum(q[large] - 1.0)  # C[j]
    start = np.concatenate(([0.0], deficit[:-1]))  # D[i-1]
    j = np.searchsorted(surplus, start, side="left")
    j = np.minimum(j, large.size - 1)  # rounding at the very end of the sweep
    threshold[small] = q[small]
    alias[small] = large[j]
    # Larges that run out become buckets aliased to the next large.
    k = np.searchsorted(deficit, surplus, side="right")
    done = np.flatnonzero(k[:-1] < small.size)  # the last large always keeps threshold 1
    threshold[large[done]] = np.clip(1.0 + surplus[done] - deficit[k[done]], 0.0, 1.0)
    alias[large[done]] = large[done + 1]
    return threshold, alias


class AliasSampler:
    """Draws ids with probability proportional to ``weights`` in O(1) per draw.

    ``sampler(rng)`` and ``torch_sampler(...)`` return callables ``f(shape) -> ids``, the sampler
    contract used by every negative-sampling backend.
    """

    def __init__(self, weights):
        self._probs = _check_weights(weights)
        self.prob, self.alias = build_alias_table(self._probs)
        self._device_tables: dict = {}

    @classmethod
    def from_counts(cls, counts, power: float = 0.75) -> AliasSampler:
        """Unigram distribution raised to ``power`` (word2vec's 0.75 by default)."""
        p = _check_weights(counts)
        return cls(np.power(p, power))

    def __len__(self) -> int:
        return self.prob.size

    def probabilities(self) -> np.ndarray:
        """The normalised distribution the sampler was built for (float64)."""
        return self._probs.copy()

    def table_probabilities(self) -> np.ndarray:
        """The distribution the table implements; ``probabilities()`` up to rounding."""
        n = self.prob.size
        p = self.prob.copy()
        np.add.at(p, self.alias, 1.0 - self.prob)
        return p / n

    # numpy -------------------------------------------------------------------------------------
    def sample(self, shape, rng=None) -> np.ndarray:
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        shape = _as_shape(shape)
        bucket = rng.integers(0, self.prob.size, size=shape, dtype=np.int64)
        coin = rng.random(size=shape)
        return _select(bucket.reshape(-1), coin.reshape(-1), self.prob, self.alias).reshape(shape)

    def sampler(self, rng=None):
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return lambda shape: self.sample(shape, rng)

    # devices -----------------------------------------------------------------------------------
    def device_tables(self, device, index_dtype=None):
        """``(prob, alias)`` on a device, built once per device and index dtype: float64
        probabilities (the exact table) and int64 ids (``index_dtype`` for others, e.g. the chunk
        kernel's int32). ``device`` is a torch device, or ``"cupy"`` for CuPy arrays on the current
        CuPy device. The one place device tables are made (samplers and kernels read them)."""
        if str(device) == "cupy":
            import cupy

            index_dtype = cupy.dtype(index_dtype or cupy.int64)
            key = (f"cupy:{cupy.cuda.runtime.getDevice()}", str(index_dtype))
            if key not in self._device_tables:
                self._device_tables[key] = (
                    cupy.asarray(self.prob, dtype=cupy.float64),
                    cupy.asarray(self.alias, dtype=index_dtype),
                )
            return self._device_tables[key]
        import torch

        index_dtype = index_dtype or torch.int64
        device = torch.device(device)
        key = (str(device), str(index_dtype))
        if key not in self._device_tables:
            self._device_tables[key] = (
                torch.as_tensor(self.prob, dtype=torch.float64, device=device).contiguous(),
                torch.as_tensor(self.alias, device=device).to(index_dtype).contiguous(),
            )
        return self._device_tables[key]

    def sample_torch(self, shape, generator=None, device=None):
        """Draw on ``device`` (default: the generator's, else CPU) without a host round trip."""
        import torch

        if device is None and generator is not None:
            device = generator.device
        device = torch.device(device if device is not None else "cpu")
        shape = _as_shape(shape)
        n = math.prod(shape)
        bucket = torch.randint(0, len(self), (n,), generator=generator, device=device)
        coin = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
        if device.type == "cpu":  # the numpy tables serve CPU tensors: no torch copies kept
            _select(bucket.numpy(), coin.numpy(), self.prob, self.alias)  # in place
            return bucket.view(shape)
        prob, alias = self.device_tables(device)
        # index_select on a flat index is torch's fastest gather (advanced indexing is slower)
        accept = coin < prob.index_select(0, bucket)
        return torch.where(accept, bucket, alias.index_select(0, bucket)).view(shape)

    def torch_sampler(self, generator=None, device=None):
        return lambda shape: self.sample_torch(shape, generator=generator, device=device)

    # cupy --------------------------------------------------------------------------------------
    def sample_cupy(self, shape, seed=None):
        import cupy

        prob, alias = self.device_tables("cupy")
        rs = cupy.random.RandomState(seed) if seed is not None else cupy.random.get_random_state()
        shape = _as_shape(shape)
        bucket = rs.randint(0, prob.size, size=shape, dtype=cupy.int64)
        coin = rs.random_sample(size=shape, dtype=cupy.float64)
        return cupy.where(coin < prob[bucket], bucket, alias[bucket])


def _select(bucket: np.ndarray, coin: np.ndarray, prob: np.ndarray, alias: np.ndarray):
    """Keep the bucket where the coin falls under its threshold, else take its alias."""
    try:
        from ns_plugins.kernels.loss_numba import alias_select
    except ImportError:  # numba is optional
        return np.where(coin < prob.take(bucket), bucket, alias.take(bucket))
    return alias_select(bucket, coin, prob, alias)


def _as_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, numbers.Integral):
        return (int(shape),)
    return tuple(int(s) for s in shape)
