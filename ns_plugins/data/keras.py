"""Keras-compatible ``skipgrams`` and ``make_sampling_table`` (keras.preprocessing.sequence).

Same signature, output types and semantics as Keras: id 0 is never a word, pairs go both ways
within ``window_size`` (no shrinking windows, one sequence = one sentence), negatives pair a
shuffled positive center with a uniform id in [1, vocabulary_size - 1], labels are 1/0 or
[0, 1]/[1, 0] with ``categorical``. Differences: everything is drawn from one generator seeded by
``seed`` (Keras seeds only the final shuffle), and the work is vectorised.
"""

from __future__ import annotations

import array
import gc

import numpy as np

from ns_plugins.kernels.pairs_numba import shuffled_couples, window_pairs

__all__ = ["make_sampling_table", "skipgrams"]


def make_sampling_table(size: int, sampling_factor: float = 1e-5) -> np.ndarray:
    """Keep probability of the word of rank ``i`` (Keras's formula, which assumes Zipf
    frequencies and ids sorted by frequency, index 0 treated as rank 1)."""
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    gamma = 0.577
    rank = np.arange(size)
    rank[0] = 1
    inv_fq = rank * (np.log(rank) + gamma) + 0.5 - 1.0 / (12.0 * rank)
    f = sampling_factor * inv_fq
    return np.minimum(1.0, f / np.sqrt(f))


def _as_ids(sequence) -> np.ndarray:
    if isinstance(sequence, list):  # Keras's usual input; array.array converts it fastest and
        try:  # refuses anything that is not an integer, leaving the error to the checks below
            return np.frombuffer(array.array("q", sequence), dtype=np.int64)
        except (TypeError, OverflowError):
            pass
    return np.asarray(sequence)


def _as_lists(*arrays):
    # Building millions of small lists triggers the cyclic GC over and over; none of them can be
    # part of a cycle, so pausing it makes the conversion several times faster.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return tuple(a.tolist() for a in arrays)
    finally:
        if enabled:
            gc.enable()


def skipgrams(
    sequence,
    vocabulary_size: int,
    window_size: int = 4,
    negative_samples: float = 1.0,
    shuffle: bool = True,
    categorical: bool = False,
    sampling_table=None,
    seed=None,
    *,
    negatives: str = "uniform",
    counts=None,
    ns_exponent: float = 0.75,
    return_arrays: bool = False,
):
    """Skip-gram couples and labels from a sequence of word ids, as Keras's ``skipgrams``.

    Returns ``(couples, labels)``: lists ``[[word, context], ...]`` and ``[1, ..., 0, ...]``
    (``[[0, 1], ..., [1, 0], ...]`` when ``categorical``). ``seed`` (int or numpy Generator) makes
    the whole output reproducible. ``sampling_table[w]`` is the keep probability of ``w`` as a
    center, compared as Keras compares it (dropped when below a uniform draw): NaN and values of
    1 or more always keep the word, values below 0 always drop it.

    Extensions (keyword-only): ``negatives="unigram"`` draws negative contexts from the unigram
    distribution raised to ``ns_exponent`` with the exact alias sampler, over ``counts`` (length
    ``vocabulary_size``) or, by default, the counts of ``sequence`` itself; id 0 is never drawn.
    ``return_arrays=True`` returns numpy arrays (couples ``(N, 2)``, labels ``(N,)`` or ``(N, 2)``)
    instead of lists, which skips the slowest step.
    """
    seq = _as_ids(sequence)
    if seq.ndim != 1:
        raise ValueError(f"sequence must be 1-D, got shape {seq.shape}")
    if seq.size and not np.issubdtype(seq.dtype, np.integer):
        raise ValueError(f"sequence must hold integer word ids, got dtype {seq.dtype}")
    seq = seq.astype(np.int64, copy=False)
    vocabulary_size = int(vocabulary_size)
    window_size = int(window_size)
    if window_size < 0:
        raise ValueError(f"window_size must be >= 0, got {window_size}")
    if seq.size and (seq.min() < 0 or seq.max() >= vocabulary_size):
        raise ValueError(
            f"word ids must lie in [0, vocabulary_size={vocabulary_size}), "
            f"got ids from {seq.min()} to {seq.max()}"
        )
    if negatives not in ("uniform", "unigram"):
        raise ValueError(f"negatives must be 'uniform' or 'unigram', got {negatives!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

    # centers: non-zero words that survive the sampling table
    center = np.flatnonzero(seq != 0)
    if sampling_table is not None:
        table = np.asarray(sampling_table, dtype=np.float64)
        if seq.size and seq.max() >= table.size:
            raise ValueError(
                f"sampling_table has {table.size} entries but the sequence holds id {seq.max()}"
            )
        # Keras drops a center when table[w] < random(), so NaN keeps it (a comparison with
        # NaN is false), as does any value >= 1; a value below 0 drops it
        center = center[~(table[seq[center]] < rng.random(center.size))]

    words, contexts = window_pairs(seq, center, window_size)
    n_pos = words.size

    n_neg = int(n_pos * negative_samples) if negative_samples > 0 and n_pos else 0
    if n_neg:
        if negatives == "uniform":
            if vocabulary_size < 2:
                raise ValueError("vocabulary_size must be >= 2 to draw negatives from [1, V-1]")
            neg_ctx = rng.integers(1, vocabulary_size, size=n_neg)
        else:
            neg_ctx = _unigram_negatives(seq, vocabulary_size, counts, ns_exponent, n_neg, rng)
    else:
        neg_ctx = contexts[:0]
    # Negative m pairs the m-th word of a shuffled copy of the positive words (reused in turn)
    # with a random context. After the final shuffle only the multiset of those words matters, so
    # whole cycles need no shuffling, only the partial last one.
    if shuffle:
        cycles, rest = divmod(n_neg, n_pos) if n_pos else (0, 0)
        rest_words = words[rng.permutation(n_pos)[:rest]] if rest else words[:0]
        couples, positive = shuffled_couples(words, contexts, cycles, rest_words, neg_ctx, rng)
    else:
        neg_words = rng.permutation(words)[np.arange(n_neg) % n_pos] if n_neg else words[:0]
        couples = np.stack(
            (np.concatenate((words, neg_words)), np.concatenate((contexts, neg_ctx))), 1
        )
        positive = (np.arange(couples.shape[0]) < n_pos).astype(np.int64)
    if categorical:
        labels = np.stack((1 - positive, positive), axis=1)
    else:
        labels = positive
    if return_arrays:
        return couples, labels
    return _as_lists(couples, labels)


def _unigram_negatives(seq, vocabulary_size, counts, ns_exponent, n, rng):
    from ns_plugins.core.alias import AliasSampler

    if counts is None:
        c = np.bincount(seq, minlength=vocabulary_size).astype(np.float64)
    else:
        c = np.asarray(counts, dtype=np.float64)
        if c.shape != (vocabulary_size,):
            raise ValueError(f"counts must have shape ({vocabulary_size},), got {c.shape}")
    c[0] = 0.0  # id 0 is reserved, never a word
    if not (c > 0).any():
        raise ValueError("no word with a positive count to draw unigram negatives from")
    return AliasSampler.from_counts(c, power=ns_exponent).sample(n, rng)
