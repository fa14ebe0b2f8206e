"""What every engine shares: initial weights, the learning-rate schedule, per-step seeds, the
vocabulary fingerprint a checkpoint carries, and the check that a checkpoint fits a run.

numpy only: the app's engines (Lightning modules) and the library's ``Word2Vec`` import it alike.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ns_plugins.errors import UsageError

__all__ = [
    "TrainingDiverged",
    "check_resume",
    "initial_weights",
    "linear_decay",
    "step_seed",
    "vocab_fingerprint",
]


class TrainingDiverged(UsageError):
    """The weights stopped being finite numbers: the learning rate is too large for the data."""


def initial_weights(V: int, d: int, seed: int, scale: float):
    """word2vec's start: input vectors uniform in [-scale/d, scale/d) (word2vec.c: scale 0.5,
    gensim 4: 1.0), output vectors zero; float32, built in place with no V x d temporaries."""
    W_in = np.random.default_rng(seed).random((V, d), dtype=np.float32)
    W_in -= 0.5
    W_in *= 2 * scale / d
    return W_in, np.zeros((V, d), dtype=np.float32)


def linear_decay(step: int, total: int, alpha: float, min_alpha: float) -> float:
    """word2vec's learning rate: linear from ``alpha`` at step 0 to ``min_alpha`` at ``total``."""
    if total <= 0:
        return alpha
    return alpha - (alpha - min_alpha) * min(step / total, 1.0)


def step_seed(seed: int, rank: int, step: int) -> int:
    """The kernel's seed for one step: a function of (seed, rank, global step) alone, so a resumed
    run draws what an uninterrupted one draws, whichever engine or face runs it."""
    return (seed * 0x9E3779B1 + rank * 0x85EBCA77 + step) % (2**63)


def vocab_fingerprint(words, counts) -> str:
    """sha256 over the vocabulary's words and counts: which corpus and recipe the weights fit."""
    h = hashlib.sha256()
    for w in words:
        h.update(w.encode("utf-8") + b"\0")
    h.update(np.ascontiguousarray(counts, dtype=np.int64).tobytes())
    return h.hexdigest()


def check_resume(meta: dict, fingerprint: str | None, settings: dict) -> None:
    """Refuse a checkpoint of another corpus, vocabulary or settings, naming what differs."""
    if fingerprint is not None and meta.get("vocab_fingerprint") != fingerprint:
        raise UsageError(
            "the checkpoint was trained on another vocabulary (another corpus, min_count or "
            "max_vocab_size); resume with the data settings it was trained with"
        )
    saved = meta.get("settings", {})
    differ = [
        f"{k}={saved.get(k)!r} there, {v!r} here" for k, v in settings.items() if saved.get(k) != v
    ]
    if differ:
        raise UsageError(f"the checkpoint was trained with other settings: {'; '.join(differ)}")
