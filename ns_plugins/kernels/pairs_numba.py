"""Keras-style skip-gram couples on the CPU, compiled with numba (no torch).

``window_pairs`` writes the positive couples in Keras's loop order in one pass over the centers.
``shuffled_couples`` lays positives and negatives out in a uniformly random order in two
cache-friendly passes (Rao-Sandelius): every couple goes to a random bucket, then each bucket is
Fisher-Yates shuffled on its own. A plain Fisher-Yates over millions of 16-byte rows misses the
cache on every swap; here each bucket fits in L2.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["shuffled_couples", "window_pairs"]

# Couples per bucket: 16 bytes each plus an 8-byte label, about 200 KB per bucket.
_BUCKET = 8192


@numba.njit(nogil=True, cache=True)
def _window_pairs(seq, center, window, words, contexts):
    n, size = 0, seq.size
    for i in center:
        w = seq[i]
        for j in range(max(i - window, 0), min(i + window + 1, size)):
            if j != i and seq[j] != 0:
                words[n] = w
                contexts[n] = seq[j]
                n += 1
    return n


def window_pairs(seq: np.ndarray, center: np.ndarray, window: int):
    """(words, contexts) for every non-zero context within ``window`` of each center, in order."""
    cap = center.size * 2 * window
    words, contexts = np.empty(cap, np.int64), np.empty(cap, np.int64)
    n = _window_pairs(seq, center, window, words, contexts)
    return words[:n], contexts[:n]


# While shuffling, a positive couple carries its label in bit 62 of its word id: one 16-byte row
# per couple to move instead of three values in separate arrays.
_FLAG = np.int64(1 << 62)


@numba.njit(nogil=True, cache=True)
def _scatter_shuffle(words, contexts, cycles, rest_words, neg_ctx, bucket, starts, u, out, label):
    n_pos, head = words.size, starts[:-1].copy()
    for k in range(n_pos):
        p = head[bucket[k]]
        head[bucket[k]] = p + 1
        out[p, 0], out[p, 1] = words[k] | _FLAG, contexts[k]
    i = 0  # negative m takes words[m % n_pos] for whole cycles, without a division per couple
    for m in range(neg_ctx.size):
        p = head[bucket[n_pos + m]]
        head[bucket[n_pos + m]] = p + 1
        w = words[i] if m < cycles * n_pos else rest_words[m - cycles * n_pos]
        out[p, 0], out[p, 1] = w, neg_ctx[m]
        i = i + 1 if i + 1 < n_pos else 0
    for b in range(starts.size - 1):
        lo, hi = starts[b], starts[b + 1]
        for i in range(hi - 1, lo, -1):
            j = lo + int(u[i] * (i - lo + 1))
            out[i, 0], out[j, 0] = out[j, 0], out[i, 0]
            out[i, 1], out[j, 1] = out[j, 1], out[i, 1]
        for i in range(lo, hi):  # the bucket is still in cache: take the labels out
            label[i] = out[i, 0] >> 62
            out[i, 0] &= _FLAG - 1


def shuffled_couples(words, contexts, cycles, rest_words, neg_ctx, rng: np.random.Generator):
    """Positive couples ``(words, contexts)`` and negatives, in a uniformly random order.

    Negative ``m`` pairs ``neg_ctx[m]`` with ``words[m % n_pos]`` for the first ``cycles`` whole
    passes over the positive words, then with ``rest_words``. Returns ``(couples (N, 2), labels
    (N,))``, int64, labels 1 for positives. Every random number comes from ``rng``.
    """
    n = words.size + neg_ctx.size
    n_buckets = max(1, -(-n // _BUCKET))
    bucket = rng.integers(0, n_buckets, size=n, dtype=np.int32)
    starts = np.zeros(n_buckets + 1, np.int64)
    np.cumsum(np.bincount(bucket, minlength=n_buckets), out=starts[1:])
    u = rng.random(n)
    out, label = np.empty((n, 2), np.int64), np.empty(n, np.int64)
    _scatter_shuffle(words, contexts, cycles, rest_words, neg_ctx, bucket, starts, u, out, label)
    return out, label
