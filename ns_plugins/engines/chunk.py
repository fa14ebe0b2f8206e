"""The chunk engine's step: one span of whole sentences of an encoded corpus, trained in place.

A step hands the span to a fused kernel that does all of word2vec inside it (frequent-word
subsampling, shrinking windows, exact alias negatives, the SGD update with the learning rate
decaying per word): ``kernels.chunk_numba.train_chunk`` on numpy arrays with numba threads, or
``kernels.chunk_triton.train_chunk`` on CUDA tensors. ``ChunkTrainer`` holds the weights, the
tables and the settings, and is driven by the Lightning ``ChunkModule`` (one step per Lightning
step) and by the library's ``Word2Vec`` (a plain loop over epochs and chunks) alike.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from ns_plugins.engines.base import TrainingDiverged, initial_weights, linear_decay, step_seed

__all__ = ["ChunkSettings", "ChunkTrainer", "chunk_bounds"]

log = logging.getLogger(__name__)

# Rows checked for finite values after a step: the most frequent words, which every step updates,
# so a diverging run shows there first (a full scan would cost a pass over V x d per step).
_WATCHED_ROWS = 16


@dataclass(frozen=True)
class ChunkSettings:
    """What a chunk step does (gensim's names; ``cbow`` for ``sg=0``)."""

    vector_size: int = 100
    window: int = 5
    negative: int = 5
    ns_exponent: float = 0.75
    sample: float = 1e-3
    alpha: float = 0.025
    min_alpha: float = 0.0001
    cbow: bool = False
    shrink_windows: bool = True
    shared_negatives: bool = False
    init_scale: float = 0.5
    workers: int = 2
    seed: int = 1
    # Threads train their own copies of the tables, merged every ``merge_every`` steps, when the
    # copies (an anchor and one table pair per thread after the first) fit in ``copies_mib``;
    # otherwise (the default) they share the tables without locks. Copies trained apart for a
    # whole small corpus lose the structure (CBOW on the test corpus: neighbour purity 0.48
    # against 0.96 shared), so they are opt-in.
    merge_every: int = 4
    copies_mib: float = 0.0

    def __post_init__(self):
        for name in ("vector_size", "window", "workers", "merge_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.negative < 0:
            raise ValueError(f"negative must be >= 0, got {self.negative}")
        if self.shared_negatives and self.cbow:
            raise ValueError("shared_negatives is a skip-gram option; CBOW shares per center")
        for name in ("ns_exponent", "sample", "alpha", "min_alpha", "init_scale"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must be in [0, 2**64), got {self.seed}")


def chunk_bounds(offsets: np.ndarray, chunk_words: int) -> np.ndarray:
    """Sentence indices that cut a corpus (``offsets``) into steps of about ``chunk_words``
    words, whole sentences each."""
    from ns_plugins.kernels.chunk_numba import job_bounds

    return job_bounds(offsets, int(chunk_words))


class ChunkTrainer:
    """Weights (``W_in`` the word vectors, ``W_out`` the output vectors), the subsampling and
    noise tables of one vocabulary, and the step that trains a chunk of the corpus in place.

    ``weights = (W_in, W_out)`` (float32 numpy, used in place) or word2vec's initialisation. On
    CUDA the caller puts device tensors in ``W_in`` / ``W_out`` and the corpus on the device
    (``to_device``); the step is then the Triton kernel's.
    """

    def __init__(self, counts, settings: ChunkSettings, weights=None):
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim != 1 or counts.size < 2:
            raise ValueError(f"counts must be 1-D with at least 2 words, got shape {counts.shape}")
        self.settings = settings
        self.counts = counts
        V, d = counts.size, settings.vector_size
        if weights is None:
            weights = initial_weights(V, d, settings.seed, settings.init_scale)
        W_in, W_out = weights
        if tuple(W_in.shape) != (V, d) or tuple(W_out.shape) != (V, d):
            raise ValueError(
                f"weights of shapes {tuple(W_in.shape)} and {tuple(W_out.shape)} do not fit "
                f"{V} words of vector_size {d}"
            )
        self.W_in, self.W_out = W_in, W_out
        self._tables = None
        self._device_tables = None
        self._copies = None  # (anchors, replica pairs) while threads train their own copies
        self._since_merge = 0  # steps trained on the copies since the last merge

    def tables(self):
        """(keep probabilities, alias table) of this vocabulary, built once."""
        if self._tables is None:
            from ns_plugins.data.sampling import keep_probability, negative_sampler

            s = self.settings
            keep = keep_probability(self.counts, s.sample).astype(np.float32)
            self._tables = (keep, negative_sampler(self.counts, s.ns_exponent))
        return self._tables

    def to_device(self, ids, offsets, device):
        """The corpus and the tables as tensors on ``device`` for the Triton step; the ids are
        checked once here (the kernel trusts them)."""
        import torch

        from ns_plugins.errors import UsageError
        from ns_plugins.kernels import chunk_triton

        keep, noise = self.tables()
        ids = torch.as_tensor(np.asarray(ids), device=device)
        V = len(self.counts)
        if ids.numel() and not (0 <= int(ids.min()) and int(ids.max()) < V):
            raise UsageError(f"the encoded corpus holds ids outside [0, {V}): re-encode it")
        self._device_tables = chunk_triton.device_tables(keep, noise, device)
        offsets = torch.as_tensor(np.asarray(offsets), device=device)
        return ids.to(torch.int32), offsets.to(torch.int64)

    def schedule(self, step: int, total_steps: int, rank: int = 0):
        """(alpha at the start of the step, alpha at its end, the step's seed)."""
        s = self.settings
        a0 = linear_decay(step, total_steps, s.alpha, s.min_alpha)
        a1 = linear_decay(step + 1, total_steps, s.alpha, s.min_alpha)
        return a0, a1, step_seed(s.seed, rank, step)

    def step(self, ids, offsets, step: int, total_steps: int, rank: int = 0, *,
             compute_loss: bool = True, check_every: int = 1, first_position: int = 0):  # fmt: skip
        """Train sentences ``offsets[0]..offsets[-1]`` of ``ids`` as global step ``step`` of
        ``total_steps``; ``first_position``: the corpus position of ``ids[0]`` when ``ids`` is a
        shard (the kernels key their draws by corpus position). Returns (loss sum, pairs, words
        kept): floats on the CPU, a device tensor of the three on CUDA (no host sync). Raises
        ``TrainingDiverged`` once the weights stop being finite (checked every ``check_every``
        steps)."""
        a0, a1, seed = self.schedule(step, total_steps, rank)
        s = self.settings
        if self._device_tables is not None:
            from ns_plugins.kernels import chunk_triton

            stats = chunk_triton.train_chunk(
                ids, offsets, self.W_in, self.W_out, *self._device_tables, s.window, s.negative,
                a0, a1, seed, shrink_windows=s.shrink_windows, cbow=s.cbow,
                shared_negatives=s.shared_negatives, first_position=first_position,
            )  # fmt: skip
            if check_every and step % check_every == 0:
                self.check_finite(step, float(stats[0]) if compute_loss else 0.0)
            return stats
        from ns_plugins.kernels.chunk_numba import train_chunk

        keep, noise = self.tables()
        copies = self._thread_copies()
        t0 = time.perf_counter()
        first = not _KERNEL_READY
        stats = train_chunk(
            ids, np.ascontiguousarray(offsets, dtype=np.int64), self.W_in, self.W_out, keep,
            noise.prob, noise.alias, s.window, s.negative, a0, a1, seed=seed,
            shrink_windows=s.shrink_windows, cbow=s.cbow, shared_negatives=s.shared_negatives,
            workers=s.workers, compute_loss=compute_loss, first_position=first_position,
            replicas=None if copies is None else copies[1],
        )  # fmt: skip
        if first:
            _kernel_loaded(time.perf_counter() - t0)
        if copies is not None:
            self._since_merge += 1
            if self._since_merge >= s.merge_every:
                self.sync()
        if check_every and step % check_every == 0:
            self.check_finite(step, stats.loss_sum)
        return stats.loss_sum, stats.n_pairs, stats.n_words

    def _thread_copies(self):
        """(anchors, replica pairs) for threads that train their own copies, made at the first
        step that needs them; None when the threads share the tables (one worker, CUDA, or copies
        over the budget, which is logged once)."""
        s = self.settings
        if self._copies is not None:
            return self._copies or None
        if s.workers < 2 or s.copies_mib <= 0 or not isinstance(self.W_in, np.ndarray):
            return None
        need = s.workers * (self.W_in.nbytes + self.W_out.nbytes) / 2**20
        if need > s.copies_mib:
            log.info("%d threads share the tables without locks: their own copies would take "
                     "%.0f MiB, over copies_mib=%g", s.workers, need, s.copies_mib)  # fmt: skip
            self._copies = False
            return None
        log.info("%d threads train their own copies of the tables (%.0f MiB), merged every %d "
                 "steps", s.workers, need, s.merge_every)  # fmt: skip
        anchors = (self.W_in.copy(), self.W_out.copy())
        replicas = [(self.W_in.copy(), self.W_out.copy()) for _ in range(s.workers - 1)]
        self._copies = (anchors, replicas)
        self._since_merge = 0
        return self._copies

    def sync(self) -> None:
        """Merge the threads' copies into ``W_in`` / ``W_out`` (adding up their deltas); every
        reader of the weights (a checkpoint, an evaluation, the export) calls this first."""
        if not self._copies:
            return
        from ns_plugins.kernels.merge import merge_deltas

        (A_in, A_out), replicas = self._copies
        merge_deltas([self.W_in, *(r[0] for r in replicas)], A_in)
        merge_deltas([self.W_out, *(r[1] for r in replicas)], A_out)
        self._since_merge = 0

    def release_copies(self) -> None:
        """Merge and free the threads' copies (made again at the next step): after training, or
        before someone else writes ``W_in`` / ``W_out`` (a resumed checkpoint, the ranks' merge)."""
        self.sync()
        if self._copies:
            self._copies = None

    def check_finite(self, step: int, loss_sum: float = 0.0) -> None:
        """Raise ``TrainingDiverged``, naming the learning rate, when the loss or the most
        frequent words' rows are no longer finite."""
        n = min(_WATCHED_ROWS, len(self.counts))
        rows_ok = all(_finite(W[:n]) for W in (self.W_in, self.W_out))
        if math.isfinite(loss_sum) and rows_ok:
            return
        raise TrainingDiverged(
            f"training diverged at step {step} (the weights are no longer finite numbers): "
            f"alpha={self.settings.alpha} is too large for this corpus; lower alpha "
            "(word2vec's default is 0.025 for skip-gram, 0.05 for CBOW)"
        )

    def vectors(self) -> np.ndarray:
        """The word vectors (input embeddings) as float32 numpy."""
        self.sync()
        W = self.W_in
        if isinstance(W, np.ndarray):
            return W
        return W.detach().float().cpu().numpy()


_KERNEL_READY = False


def _kernel_loaded(seconds: float) -> None:
    """Say once per process whether numba compiled the CPU kernel (the first run after an install
    or an upgrade, some seconds) or loaded it from its cache."""
    global _KERNEL_READY
    from ns_plugins.kernels.chunk_numba import _train_jobs

    _KERNEL_READY = True
    stats = _train_jobs.stats
    if sum(stats.cache_misses.values()):
        log.info("compiled the training kernel in %.1f s; later runs load it from numba's cache "
                 "in %s", seconds, stats.cache_path)  # fmt: skip
    else:
        log.debug("training kernel loaded from numba's cache in %s", stats.cache_path)


def _finite(rows) -> bool:
    if isinstance(rows, np.ndarray):
        return bool(np.isfinite(rows).all())
    import torch

    return bool(torch.isfinite(rows).all())
