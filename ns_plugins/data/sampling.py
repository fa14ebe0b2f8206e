"""Which words to keep and which to draw as negatives: word2vec's frequent-word subsampling and
the unigram^power noise distribution (no torch)."""

from __future__ import annotations

import numpy as np

__all__ = ["keep_probability", "negative_sampler"]


def keep_probability(counts, sample: float | None = 1e-3) -> np.ndarray:
    """Probability of keeping each occurrence of a word (word2vec/gensim downsampling).

    ``threshold = sample * total`` (or ``sample`` itself when it is >= 1, a count, as in gensim);
    ``p = (sqrt(c / threshold) + 1) * threshold / c`` clipped to 1. ``sample`` 0 or None keeps all.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1:
        raise ValueError(f"counts must be 1-D, got shape {c.shape}")
    if (c < 0).any() or not np.isfinite(c).all():
        raise ValueError("counts must be finite and non-negative")
    if sample is None or sample == 0:
        return np.ones_like(c)
    if sample < 0:
        raise ValueError(f"sample must be >= 0, got {sample}")
    threshold = sample if sample >= 1.0 else sample * c.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        p = (np.sqrt(c / threshold) + 1.0) * threshold / c
    p[c == 0] = 1.0
    return np.minimum(p, 1.0)


def negative_sampler(counts, ns_exponent: float = 0.75):
    """The shared alias sampler over unigram counts raised to ``ns_exponent``."""
    from ns_plugins.core.alias import AliasSampler

    counts = getattr(counts, "counts", counts)  # a Vocab or an EncodedCorpus
    return AliasSampler.from_counts(counts, power=ns_exponent)
