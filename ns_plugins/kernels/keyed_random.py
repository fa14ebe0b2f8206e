"""The counter-based random numbers of the chunk kernels.

Every number is a pure function of (seed, corpus position, slot): splitmix64's output number
``position * 2**20 + slot`` under a key made from the seed. A draw therefore does not depend on
which thread or GPU program makes it, nor on the order, nor on how a chunk is cut into jobs; the
numba kernels (``chunk_numba``) and the Triton kernel (``chunk_triton``, which computes the same
function in its own language) draw the same numbers. Negatives are exact draws from a Vose alias
table: an integer bucket and an independent 53-bit coin.
"""

from __future__ import annotations

import numba as nb
import numpy as np

__all__ = [
    "JIT",
    "SLOT_BITS",
    "SLOT_DRAWS",
    "SLOT_KEEP",
    "SLOT_REACH",
    "draw_alias",
    "draw_targets",
    "keyed_u64",
    "position_key",
    "stream_key",
    "to_below",
    "to_uniform",
]

# The chunk kernels' numba options. error_model="numpy": a division by zero gives inf/NaN (caught
# by the caller as divergence) instead of a ZeroDivisionError raised from inside a thread.
JIT = {"nogil": True, "fastmath": True, "cache": True, "error_model": "numpy"}

# splitmix64 constants; numba keeps module-level numpy scalars with their dtype, which keeps the
# arithmetic in uint64 (mixing uint64 with a Python int would promote to float64).
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S11 = np.uint64(11)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_LOW32 = np.uint64(0xFFFFFFFF)
_TWO32 = np.uint64(1 << 32)
_INV53 = 1.0 / 9007199254740992.0
_U64_MASK = (1 << 64) - 1


@nb.njit(inline="always", **JIT)
def _mix(z):
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


# ``mix(key + n * GAMMA)`` is the n-th output of splitmix64 seeded with ``key``;
# n = position * 2**20 + slot.
SLOT_BITS = 20
SLOT_KEEP = 0  # subsampling coin of the word at this position
SLOT_REACH = 1  # shrunk window of the center word at this position
SLOT_DRAWS = 2  # negatives of this center: bucket and coin at 2 + 2 * (context * negative + k)
_SLOTS = np.uint64(1 << SLOT_BITS)


@nb.njit(inline="always", **JIT)
def stream_key(seed):
    """The generator key of a seed (any uint64)."""
    return _mix(np.uint64(seed) * _MIX2 + _GAMMA)


def position_key(seed, first_position: int = 0) -> int:
    """The key under which position ``p`` draws what position ``first_position + p`` draws under
    ``stream_key(seed)``: ``keyed_u64`` is linear in the position before mixing, so shifting the
    key shifts every position. A shard that holds a corpus's ids from ``first_position`` on trains
    with the draws the whole corpus would give its words."""
    key = int(stream_key(np.uint64(int(seed) & _U64_MASK)))
    shift = int(first_position) * (1 << SLOT_BITS) * int(_GAMMA)
    return (key + shift) & _U64_MASK


@nb.njit(inline="always", **JIT)
def keyed_u64(key, pos, slot):
    """64 random bits for (key, position, slot)."""
    return _mix(key + (np.uint64(pos) * _SLOTS + np.uint64(slot)) * _GAMMA)


@nb.njit(inline="always", **JIT)
def to_uniform(u):
    """Uniform float64 in [0, 1) from the top 53 bits."""
    return (u >> _S11) * _INV53


@nb.njit(inline="always", **JIT)
def to_below(u, n):
    """Integer in [0, n) for 0 < n < 2**32: floor(u * n / 2**64) in 64-bit arithmetic, biased by
    at most n / 2**64 (no rejection loop, so every draw costs one number)."""
    bound = np.uint64(n)
    return np.int64(((u >> _S32) * bound + (((u & _LOW32) * bound) >> _S32)) >> _S32)


@nb.njit(inline="always", **JIT)
def draw_alias(key, pos, slot, alias_prob, alias_idx):
    """One exact draw from a Vose alias table: a bucket from slot ``slot``, an independent coin
    from ``slot + 1``."""
    bucket = to_below(keyed_u64(key, pos, slot), alias_prob.shape[0])
    if to_uniform(keyed_u64(key, pos, slot + 1)) < alias_prob[bucket]:
        return bucket
    return alias_idx[bucket]


@nb.njit(**JIT)
def draw_targets(key, pos, context, center, negative, alias_prob, alias_idx, targets):
    """Fill ``targets`` with the center word then the ``negative`` draws of (center position,
    context ordinal); a draw equal to the center is marked -1 and skipped by the update, as
    word2vec.c and gensim skip it. CBOW and shared negatives use context 0."""
    targets[0] = center
    base = SLOT_DRAWS + 2 * context * negative
    for k in range(1, negative + 1):
        t = draw_alias(key, pos, base + 2 * (k - 1), alias_prob, alias_idx)
        targets[k] = -1 if t == center else t
