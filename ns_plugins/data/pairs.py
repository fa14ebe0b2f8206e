"""Training examples from an encoded corpus: subsampling, dynamic windows, skip-gram pairs and CBOW
context bags, vectorised over chunks of ~1M tokens.

Randomness is tied to token positions, not to processes: the keep coin and the window of token
``i`` come from a generator seeded with (seed, epoch, i // BLOCK). So the set of examples of an
epoch is the same whatever the number of ranks and workers; sharding only decides who yields what.

Sharding: the sentences are cut into ``world_size * num_workers`` contiguous shards of about equal
token count. Every process counts the examples of every shard (cheap: no examples are built) and
yields the same number, the smallest shard's count; the few surplus examples of larger shards,
after shuffling, are dropped for that epoch.
"""

from __future__ import annotations

import math

import numpy as np
from torch.utils.data import IterableDataset

from .sampling import keep_probability

__all__ = ["CBOWBatches", "SkipGramBatches"]

BLOCK = 1 << 16  # tokens per random block
CHUNK_TOKENS = 1 << 20


def _position_randomness(seed: int, epoch: int, start: int, stop: int):
    """(coin float64, window coin float64) for token positions [start, stop)."""
    n = stop - start
    u = np.empty(n)
    v = np.empty(n)
    b0, b1 = start // BLOCK, (stop - 1) // BLOCK
    for b in range(b0, b1 + 1):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, b])))
        r = rng.random((2, BLOCK))
        lo, hi = max(start, b * BLOCK), min(stop, (b + 1) * BLOCK)
        u[lo - start : hi - start] = r[0, lo - b * BLOCK : hi - b * BLOCK]
        v[lo - start : hi - start] = r[1, lo - b * BLOCK : hi - b * BLOCK]
    return u, v


class _Kept:
    """Tokens of a sentence range that survived subsampling, with their sentence geometry."""

    __slots__ = ("ids", "pos", "right", "win")

    def __init__(self, ids, pos, right, win):
        self.ids, self.pos, self.right, self.win = ids, pos, right, win


class _Examples(IterableDataset):
    """Shared machinery of skip-gram and CBOW batches.

    ``corpus``: an ``EncodedCorpus`` (anything with ``ids``, ``offsets`` and ``counts``).
    ``window``, ``sample``, ``shrink_windows``: as in gensim. ``batch_size``: examples per batch;
    a shard's last batch may be smaller. ``seed`` and ``epoch`` fix all randomness
    (``set_epoch`` moves to another epoch). ``rank``/``world_size`` default to torch.distributed's
    when it is initialised, ``worker``/``num_workers`` to the DataLoader worker that iterates
    (0 and 1 elsewhere); ``len()`` is the batch count of one (rank, worker) shard, so a rank
    running ``n`` DataLoader workers yields ``n * len()`` batches. ``counts`` overrides the
    corpus's word counts for subsampling.
    """

    def __init__(
        self,
        corpus,
        window: int = 5,
        sample: float | None = 1e-3,
        shrink_windows: bool = True,
        batch_size: int = 4096,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        worker: int | None = None,
        num_workers: int | None = None,
        epoch: int = 0,
        counts=None,
        chunk_tokens: int = CHUNK_TOKENS,
    ):
        for attr in ("ids", "offsets"):
            if not hasattr(corpus, attr):
                raise TypeError(
                    f"corpus must have .ids and .offsets (an EncodedCorpus), got {corpus!r}"
                )
        if counts is None:
            counts = getattr(corpus, "counts", None)
        if counts is None:
            raise ValueError("corpus has no .counts: pass counts= for subsampling")
        if int(window) < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.corpus = corpus
        self.window = int(window)
        self.sample = sample
        self.shrink_windows = bool(shrink_windows)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.keep = keep_probability(counts, sample)
        n_ids = len(corpus.ids)
        top = int(np.max(corpus.ids)) if n_ids else -1
        if top >= self.keep.size or (n_ids and int(np.min(corpus.ids)) < 0):
            raise ValueError(
                f"corpus ids must lie in [0, {self.keep.size}) (one count per word), "
                f"got ids up to {top}"
            )
        self.chunk_tokens = int(chunk_tokens)
        self._shard_args = (rank, world_size, worker, num_workers)
        self._count_cache: dict = {}

    # sharding -------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def shard(self) -> tuple[int, int]:
        """(index, count) of this process's shard; unset rank/worker are read from
        torch.distributed and the DataLoader worker info when iterating."""
        rank, world_size, worker, num_workers = self._shard_args
        if rank is None or world_size is None:
            r, w = _dist_rank()
            rank = r if rank is None else rank
            world_size = w if world_size is None else world_size
        if worker is None or num_workers is None:
            k, n = _worker_info()
            if num_workers is not None and worker is None and n not in (1, num_workers):
                raise ValueError(f"num_workers={num_workers} but the DataLoader runs {n} workers")
            worker = k if worker is None else worker
            num_workers = n if num_workers is None else num_workers
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        if not 0 <= worker < num_workers:
            raise ValueError(f"worker {worker} out of range for num_workers {num_workers}")
        return rank * num_workers + worker, world_size * num_workers

    def _shard_sentences(self, n_shards: int) -> np.ndarray:
        """Sentence boundaries of the shards, balanced by tokens."""
        off = self.corpus.offsets
        n_sent = off.size - 1
        if n_sent < n_shards:
            raise ValueError(f"corpus has {n_sent} sentences, fewer than the {n_shards} shards")
        i = np.arange(1, n_shards)
        cuts = np.searchsorted(off, i * (off[-1] / n_shards))
        cuts = np.clip(cuts, i, n_sent - n_shards + i)  # leave every shard a sentence
        cuts = np.maximum.accumulate(cuts - i) + i  # strictly increasing
        return np.concatenate(([0], cuts, [n_sent])).astype(np.int64)

    def _chunks(self, s0: int, s1: int) -> list[tuple[int, int]]:
        """Sentence ranges of about ``chunk_tokens`` tokens covering sentences [s0, s1)."""
        off = self.corpus.offsets
        n_tok = off[s1] - off[s0]
        n = max(1, math.ceil(n_tok / self.chunk_tokens))
        cuts = np.searchsorted(off, off[s0] + np.arange(1, n) * (n_tok / n))
        cuts = np.unique(np.clip(cuts, s0 + 1, s1 - 1)) if s1 - s0 > 1 else np.array([], int)
        edges = [s0, *cuts.tolist(), s1]
        return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]

    def _kept(self, s0: int, s1: int) -> _Kept:
        off = self.corpus.offsets
        a, b = int(off[s0]), int(off[s1])
        ids = np.asarray(self.corpus.ids[a:b], dtype=np.int32)  # int32 halves memory traffic
        lengths = np.diff(off[s0 : s1 + 1])
        seg = np.repeat(np.arange(s1 - s0), lengths)
        u, v = _position_randomness(self.seed, self.epoch, a, b)
        keep = u < self.keep[ids]
        ids, seg = ids[keep], seg[keep]
        if self.shrink_windows:
            win = 1 + (v[keep] * self.window).astype(np.int64)  # uniform in [1, window]
        else:
            win = np.full(ids.size, self.window, dtype=np.int64)
        klen = np.bincount(seg, minlength=s1 - s0)
        kstart = np.cumsum(klen) - klen
        pos = np.arange(ids.size) - kstart[seg]
        right = klen[seg] - 1 - pos
        return _Kept(ids, pos, right, win)

    def _count(self, kept: _Kept) -> int:
        raise NotImplementedError

    def _build(self, kept: _Kept, rng: np.random.Generator):
        raise NotImplementedError

    def shard_counts(self) -> np.ndarray:
        """Examples in each shard this epoch (computed once per epoch and shard layout)."""
        _, n_shards = self.shard()
        key = (self.epoch, n_shards)
        if key not in self._count_cache:
            edges = self._shard_sentences(n_shards)
            counts = np.zeros(n_shards, dtype=np.int64)
            for s in range(n_shards):
                for a, b in self._chunks(int(edges[s]), int(edges[s + 1])):
                    counts[s] += self._count(self._kept(a, b))
            self._count_cache = {key: counts}
        return self._count_cache[key]

    def examples_per_shard(self) -> int:
        return int(self.shard_counts().min())

    def __len__(self) -> int:
        """Batches this (rank, worker) yields this epoch; the same for all of them."""
        return math.ceil(self.examples_per_shard() / self.batch_size)

    def __iter__(self):
        index, n_shards = self.shard()
        quota = self.examples_per_shard()
        edges = self._shard_sentences(n_shards)
        chunks = self._chunks(int(edges[index]), int(edges[index + 1]))
        rng = np.random.default_rng([self.seed, self.epoch, index, n_shards])
        order = rng.permutation(len(chunks))
        pending: list[tuple] = []
        n_pending = 0
        emitted = 0
        for c in order:
            if emitted >= quota:
                return
            ex = self._build(self._kept(*chunks[c]), rng)
            pending.append(ex)
            n_pending += ex[0].shape[0]
            while n_pending >= self.batch_size and emitted < quota:
                batch, pending, n_pending = _take(pending, min(self.batch_size, quota - emitted))
                emitted += batch[0].shape[0]
                yield batch
        while n_pending and emitted < quota:
            batch, pending, n_pending = _take(pending, min(self.batch_size, quota - emitted))
            emitted += batch[0].shape[0]
            yield batch


def _take(pending, n):
    """The first ``n`` examples of a list of array tuples, and what remains."""
    parts = [np.concatenate(cols) for cols in zip(*pending)] if len(pending) > 1 else pending[0]
    n = min(n, parts[0].shape[0])
    head = tuple(p[:n].astype(np.int64) for p in parts)
    tail = tuple(p[n:] for p in parts)
    rest = tail[0].shape[0]
    return head, ([tail] if rest else []), rest


class SkipGramBatches(_Examples):
    """Batches of (centers int64 (B,), contexts int64 (B,)) skip-gram pairs.

    A kept token at position ``i`` of its (subsampled) sentence pairs with every kept token within
    its effective window ``b`` (uniform in [1, window] with ``shrink_windows``, else ``window``) on
    both sides; pairs never cross sentences. Pairs are shuffled within chunks of ~1M tokens.
    """

    def _count(self, k: _Kept) -> int:
        return int((np.minimum(k.win, k.pos) + np.minimum(k.win, k.right)).sum())

    def _build(self, k: _Kept, rng):
        centers, contexts = [], []
        idx = np.arange(k.ids.size)
        for d in range(1, self.window + 1):
            ok = k.win >= d
            left = idx[ok & (k.pos >= d)]
            right = idx[ok & (k.right >= d)]
            centers += [k.ids[left], k.ids[right]]
            contexts += [k.ids[left - d], k.ids[right + d]]
        centers = np.concatenate(centers)
        contexts = np.concatenate(contexts)
        perm = rng.permutation(centers.size)
        return centers[perm], contexts[perm]


class CBOWBatches(_Examples):
    """Batches of (contexts int64 (B, 2*window), centers int64 (B,)).

    Row ``j`` holds the kept neighbours of center ``j`` within its effective window, in sentence
    order, packed to the front and padded with -1. Centers with no neighbour (a
    one-word sentence after subsampling) give no example.
    """

    def _count(self, k: _Kept) -> int:
        return int(((k.pos > 0) | (k.right > 0)).sum())

    def _build(self, k: _Kept, rng):
        w = self.window
        has = np.flatnonzero((k.pos > 0) | (k.right > 0))
        d = np.concatenate((np.arange(-w, 0), np.arange(1, w + 1)))
        pos, right, win = k.pos[has, None], k.right[has, None], k.win[has, None]
        valid = (np.abs(d) <= win) & (-d <= pos) & (d <= right)
        src = np.clip(has[:, None] + d, 0, k.ids.size - 1)
        ctx = np.where(valid, k.ids[src], np.int32(-1))
        pack = np.argsort(~valid, axis=1, kind="stable")
        ctx = np.take_along_axis(ctx, pack, axis=1)
        perm = rng.permutation(has.size)
        return ctx[perm], k.ids[has][perm]


def _dist_rank() -> tuple[int, int]:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:
        pass
    return 0, 1


def _worker_info() -> tuple[int, int]:
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)
