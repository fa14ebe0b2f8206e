"""CorpusDataModule: corpus -> vocabulary -> encoded ids -> batches sharded by rank and worker.

A batch is either a batch of (center, context) examples (the pairs engine) or, with
``chunk_words``, one chunk of the rank's shard given as a sentence range (the chunk engine).

Local rank 0 builds the vocabulary and the encoded corpus once (``prepare_data``); every rank then
memory-maps them and iterates only its own shard. All ranks run the same number of steps per
epoch: the shortest shard sets it. The batch stream is a pure function of (seed, epoch, rank), so
resuming skips exactly the batches already trained on.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ns_plugins.app.config import Arch, DataSource
from ns_plugins.app.recipe import CorpusRecipe, open_run_data, warm_start
from ns_plugins.app.signals import interruptible
from ns_plugins.errors import UsageError

__all__ = ["CorpusDataModule"]


def _to_tensor(a) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))


def as_batch(raw, arch: Arch) -> dict:
    """A batch from the pipeline as int64 tensors: skip-gram gives (centers, contexts), CBOW
    (contexts (B, C) padded with -1, centers)."""
    if arch is Arch.skipgram:
        center, context = raw
    else:
        context, center = raw
    return {"center": _to_tensor(center).long(), "context": _to_tensor(context).long()}


class _Shard(IterableDataset):
    """One rank's batches for the current epoch, split further across DataLoader workers.

    DataLoader hands out batches round-robin over workers, so global batch ``i`` comes from
    shard ``i % n`` and resuming after ``skip`` batches skips ``ceil((skip - s) / n)`` in shard s.
    A resumed loader starts its round at worker 0 again, so worker ``w`` iterates shard
    ``(w + skip) % n``: the batch after the checkpoint's comes first, as it would have.
    """

    def __init__(self, make_batches, steps: int, convert):
        self.make_batches = make_batches  # (worker, num_workers) -> batches with set_epoch/len
        self.convert = convert  # raw batch -> what training_step receives
        self.steps = steps
        self.epoch = 0
        self.skip = 0

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        info = get_worker_info()
        worker, n = (info.id, info.num_workers) if info is not None else (0, 1)
        shard = (worker + self.skip) % n
        batches = self.make_batches(shard, n)
        batches.set_epoch(self.epoch)
        skip = max(0, math.ceil((self.skip - shard) / n))
        limit = max(0, math.ceil((self.steps - shard) / n))  # same count on every rank
        for i, raw in enumerate(batches):
            if i >= limit:
                break
            if i >= skip:
                yield self.convert(raw)


def _as_chunk(raw) -> torch.Tensor:
    return torch.tensor(raw, dtype=torch.int64)


def balanced_cuts(offsets: np.ndarray, s0: int, s1: int, n: int) -> np.ndarray:
    """``n + 1`` sentence indices cutting sentences [s0, s1) into ``n`` runs of whole sentences
    with about equal word counts (a run may be empty when one sentence outweighs it)."""
    targets = offsets[s0] + (offsets[s1] - offsets[s0]) * np.arange(1, n) / n
    cuts = np.searchsorted(offsets[s0:s1], targets, side="left") + s0
    return np.concatenate(([s0], np.clip(cuts, s0, s1), [s1])).astype(np.int64)


class _Chunks:
    """One rank's shard of the corpus (a token-balanced run of whole sentences) cut into chunks of
    about ``chunk_words`` words. Every rank gets the same number of chunks, set by the corpus
    size, so all ranks run the same steps without asking each other."""

    def __init__(self, offsets: np.ndarray, chunk_words: int, rank: int, world: int):
        n_sent = offsets.size - 1
        self.rank, self.world = rank, world
        self.edges = balanced_cuts(offsets, 0, n_sent, world)
        n = max(1, math.ceil((offsets[-1] - offsets[0]) / world / chunk_words))
        cuts = balanced_cuts(offsets, int(self.edges[rank]), int(self.edges[rank + 1]), n)
        self.chunks = list(zip(cuts[:-1].tolist(), cuts[1:].tolist()))

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self):
        return iter(self.chunks)

    def set_epoch(self, epoch: int) -> None:
        pass  # word2vec's order: the same chunks every epoch; the kernel's draws change per step

    def shard(self) -> tuple[int, int]:
        return self.rank, self.world

    def _shard_sentences(self, n_shards: int) -> np.ndarray:
        return self.edges


class _EpochLoader(DataLoader):
    """Sets the shard's epoch and resume offset each time an epoch starts iterating (in this
    process, before any worker is forked).

    The position is (epoch, batches of it done), a function of the trainer's global step alone:
    every epoch is the same number of steps. So a run resumed from any checkpoint continues at
    the batch after the checkpoint's step, wherever in an epoch it was saved (at an epoch's last
    batch, the next epoch starts). ``state_dict`` records it in checkpoints, and the loader is
    resumable to Lightning; what ``load_state_dict`` hands back is the position the restored
    global step gives again.
    """

    def __init__(self, shard: _Shard, position, **kwargs):
        super().__init__(shard, batch_size=None, **kwargs)
        self._position = position

    def state_dict(self) -> dict:
        epoch, done = self._position()
        return {"epoch": epoch, "batches_done": done}

    def load_state_dict(self, state: dict) -> None:
        pass  # the position follows from the restored global step

    def __iter__(self):
        self.dataset.epoch, self.dataset.skip = self._position()
        return super().__iter__()


class CorpusDataModule(pl.LightningDataModule):
    """The run's corpus (``recipe``, a ``CorpusRecipe``, prepared in the cache ``cache_dir``) as
    batches: (center, context) pairs for the batched engine, or with ``chunk_words`` sentence
    ranges for the chunk engine."""

    def __init__(
        self,
        recipe: CorpusRecipe | None = None,
        cache_dir: str | Path = "data",
        arch: Arch | str = Arch.skipgram,
        window: int = 5,
        sample: float = 1e-3,
        shrink_windows: bool = True,
        batch_size: int = 1024,
        seed: int = 1,
        num_workers: int = 0,
        chunk_words: int | None = None,
        init_vectors: str | None = None,
        init_scale: float = 0.5,
    ):
        super().__init__()
        self.recipe = recipe if recipe is not None else CorpusRecipe()
        self.arch = Arch(arch)
        if DataSource(self.recipe.source) is DataSource.text:
            path = self.recipe.path
            if not path:
                raise ValueError("data.path is required for data=text (a text corpus, .gz allowed)")
            if not Path(path).exists():  # a file or a directory of files
                raise FileNotFoundError(f"corpus not found: data.path={path}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.cache_dir = Path(cache_dir)
        self.window, self.sample, self.shrink_windows = window, sample, shrink_windows
        self.batch_size, self.seed = batch_size, seed
        self.num_workers = num_workers
        if chunk_words is not None and chunk_words < 1:
            raise ValueError(f"chunk_words must be >= 1, got {chunk_words}")
        self.chunk_words = chunk_words
        self.init_vectors, self.init_scale = init_vectors, init_scale
        self.vocab = None
        self.corpus = None
        self.ground_truth: dict | None = None
        self._shard: _Shard | None = None

    def _prepare(self) -> Path:
        """The corpus cache's directory for this recipe, encoded unless already there."""
        return self.recipe.prepare(self.cache_dir)

    def prepare_data(self) -> None:
        """Local rank 0 only: write the synthetic corpus, build the vocabulary, encode the ids."""
        with interruptible("preparing the corpus"):
            self._prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.corpus is not None:
            return
        # every rank opens this recipe's directory (reused, never re-encoded), not the cache's
        # latest, which another run sharing the cache may have changed since prepare_data
        with interruptible("preparing the corpus"):
            self.corpus, self.ground_truth = open_run_data(self._prepare())
        self.vocab = self.corpus.vocab
        rank, world = self._rank_world()
        # Each of n DataLoader workers yields the batches of its own shard, all shards the same
        # number; the loader takes them round-robin, so an epoch is n times that many steps.
        workers = max(self.num_workers, 1)
        steps = workers * len(self._batches(rank, world, 0, workers))
        steps = self._min_over_ranks(steps)
        if steps < 1:
            raise UsageError(
                f"the corpus gives no full batch per rank ({world} ranks, batch_size "
                f"{self.batch_size}); use a smaller batch_size or more data"
            )
        convert = _as_chunk if self.chunk_words else partial(as_batch, arch=self.arch)
        self._shard = _Shard(lambda w, n: self._batches(rank, world, w, n), steps, convert)
        self._rank_world_used = (rank, world)

    def _rank_world(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        return 0, 1

    def _min_over_ranks(self, n: int) -> int:
        if self.trainer is None or self.trainer.world_size == 1:
            return n
        t = torch.tensor(n, device=self.trainer.strategy.root_device)
        return int(self.trainer.strategy.reduce(t, reduce_op="min"))

    def initial_weights(self, hparams):
        """(W_in, W_out) from ``init_vectors`` for this vocabulary, or None for a fresh start."""
        if self.init_vectors is None:
            return None
        return warm_start(
            self.init_vectors, self.vocab.words, hparams.vector_size, hparams.seed, self.init_scale
        )

    def _batches(self, rank: int, world: int, worker: int, num_workers: int):
        from ns_plugins.data import CBOWBatches, SkipGramBatches

        if self.chunk_words:
            return _Chunks(np.asarray(self.corpus.offsets), self.chunk_words, rank, world)
        cls = SkipGramBatches if self.arch is Arch.skipgram else CBOWBatches
        return cls(
            self.corpus,
            window=self.window,
            sample=self.sample,
            shrink_windows=self.shrink_windows,
            batch_size=self.batch_size,
            seed=self.seed,
            rank=rank,
            world_size=world,
            worker=worker,
            num_workers=num_workers,
        )

    # ------------------------------------------------------------------ loaders
    @property
    def steps_per_epoch(self) -> int:
        if self._shard is None:
            raise RuntimeError("call setup() first")
        return self._shard.steps

    @property
    def words_per_step(self) -> float:
        """Corpus words one step covers on all ranks together (for words/s)."""
        return self.corpus.raw_words / self.steps_per_epoch

    def shard_summary(self) -> dict:
        """Which part of the corpus this rank trains on: its shard and sentence range."""
        rank, world = self._rank_world_used
        batches = self._batches(rank, world, 0, 1)
        index, n_shards = batches.shard()
        edges = batches._shard_sentences(n_shards)
        return {
            "index": index,
            "count": n_shards,
            "sentences": [int(edges[index]), int(edges[index + 1])],
        }

    def train_dataloader(self) -> DataLoader:
        if self._shard is None:
            self.setup("fit")
        return _EpochLoader(self._shard, self._position, num_workers=self.num_workers)

    def _position(self) -> tuple[int, int]:
        """(epoch, batches of it already trained): every step is one batch on every rank, and
        every epoch ``steps_per_epoch`` steps."""
        if self.trainer is None:
            return 0, 0
        return divmod(self.trainer.global_step, self._shard.steps)
