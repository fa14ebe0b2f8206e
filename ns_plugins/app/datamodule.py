"""CorpusDataModule: corpus -> vocabulary -> encoded ids -> batches sharded by rank and worker.

A batch is either a batch of (center, context) examples (the pairs engine) or, with
``chunk_words``, one chunk of the rank's shard given as a sentence range (the chunk engine).

Local rank 0 builds the vocabulary and the encoded corpus once (``prepare_data``); every rank then
memory-maps them and iterates only its own shard, a run of whole sentences balanced by tokens, the
runs contiguous in rank order. All ranks run the same number of steps per epoch: the shortest
shard sets it. The batch stream is a pure function of (seed, epoch, rank), so resuming skips
exactly the batches already trained on.

Across nodes (a text corpus and ``num_nodes > 1``, ``CorpusRecipe.sharded``) no node reads the
whole corpus: in ``setup`` each rank encodes its own part (``CorpusRecipe.prepare_shard``: about
1/world of the bytes, cut at line ends, with the whole corpus's vocabulary, the one a single
process builds; with ``max_vocab_size`` rank 0 first reads the whole text to count it) and
trains all of it. Per rank, not per node, so that a rank's shard is exactly its run and no rank
maps more than it trains. The layout is the one-node layout's (contiguous runs in rank order;
rank ``r`` trains sentences ``[S[r], S[r + 1])`` of the one-node encoding, ``S[r]`` the sentences
of the parts before it, where a line that a cut splits, one with no line end for 1 MiB, is two
sentences) except in two ways:

- the runs are balanced by bytes, not tokens: a cut falls where a one-node run cuts when bytes
  and tokens balance at the same line end, otherwise a few sentences away;
- the random draws are keyed by token positions in the ids a rank holds (the chunk kernel's, and
  the batched engine's subsampling, windows and shuffles), which start at 0 in every shard: the
  same sentences get other draws than on one node, so the weights differ from a one-node run's
  as another seed's would.

The chunk engine cuts a run into as many chunks as on one node (their number follows the whole
corpus's tokens); the batched engine's DataLoader workers split the shard into parts balanced by
tokens, as they split a run on one node.
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
    size, so all ranks run the same steps without asking each other.

    ``offsets``: the whole corpus's; or, with ``layout`` (a ``_ShardLayout``), the rank's shard
    alone, which is all its run."""

    def __init__(self, offsets: np.ndarray, chunk_words: int, rank: int, world: int, layout=None):
        n_sent = offsets.size - 1
        self.rank, self.world = rank, world
        if layout is None:
            self.edges = balanced_cuts(offsets, 0, n_sent, world)
            run = int(self.edges[rank]), int(self.edges[rank + 1])
            tokens = int(offsets[-1] - offsets[0])
        else:
            self.edges, run, tokens = layout.edges, (0, n_sent), layout.tokens
        n = max(1, math.ceil(tokens / world / chunk_words))
        cuts = balanced_cuts(offsets, *run, n)
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


class _ShardLayout:
    """Where the ranks' shards lie in the whole corpus: ``edges`` (world + 1 sentence indices:
    rank ``r`` holds sentences ``[edges[r], edges[r + 1])``), and the whole corpus's ``tokens``
    and ``raw_words``, from each rank's (sentences, tokens, raw words)."""

    def __init__(self, sizes: list):
        n_sent, n_tok, raw = (np.array(column, dtype=np.int64) for column in zip(*sizes))
        self.edges = np.concatenate(([0], np.cumsum(n_sent)))
        self.token_edges = np.concatenate(([0], np.cumsum(n_tok)))  # rank r's first position
        self.tokens, self.raw_words = int(n_tok.sum()), int(raw.sum())


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
        self._layout: _ShardLayout | None = None  # across nodes: where the ranks' shards lie

    def _sharded(self) -> bool:
        return self.trainer is not None and self.recipe.sharded(self.trainer.num_nodes)

    def _prepare(self) -> Path:
        """The corpus cache's directory for this recipe, encoded unless already there."""
        return self.recipe.prepare(self.cache_dir)

    def prepare_data(self) -> None:
        """Local rank 0 only: write the synthetic corpus, build the vocabulary, encode the ids."""
        if self._sharded():
            return  # every rank encodes its own part in setup
        with interruptible("preparing the corpus"):
            self._prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.corpus is not None:
            return
        rank, world = self._rank_world()
        with interruptible("preparing the corpus"):
            if self._sharded():
                self.corpus, self._layout = self._prepare_shard(rank, world)
            else:
                # every rank opens this recipe's directory (reused, never re-encoded), not the
                # cache's latest, which another run sharing the cache may have changed since
                # prepare_data
                self.corpus, self.ground_truth = open_run_data(self._prepare())
        self.vocab = self.corpus.vocab
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

    def _prepare_shard(self, rank: int, world: int):
        """(this rank's shard, the ranks' ``_ShardLayout``): every rank encodes its part, the
        counts merged over the process group."""
        import torch.distributed as dist

        # The word counts travel as pickles: over gloo they stay in CPU memory, where NCCL would
        # stage every rank's on each GPU.
        group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")

        def all_gather(out: list, obj) -> None:
            dist.all_gather_object(out, obj, group=group)

        try:
            corpus = self.recipe.prepare_shard(
                self.cache_dir, rank, world, all_gather, self._encode_workers(world)
            )
            sizes = [None] * world
            all_gather(sizes, (corpus.n_sentences, corpus.n_tokens, corpus.raw_words))
        finally:
            if group is not None:
                dist.destroy_process_group(group)
        return corpus, _ShardLayout(sizes)

    def _encode_workers(self, world: int) -> int | None:
        """Processes that read this rank's part: with several ranks on a node, each gets its share
        of the node's CPUs (and no more than its part's size calls for); with one, None lets
        the cache choose."""
        from ns_plugins.data.encode import MIN_PART_BYTES
        from ns_plugins.data.parallel import usable_cpus
        from ns_plugins.data.textfiles import corpus_files

        per_node = self.trainer.num_devices
        if per_node < 2:
            return None
        size = sum(f.stat().st_size for f in corpus_files(self.recipe.path))
        return max(1, min(usable_cpus() // per_node, size // world // MIN_PART_BYTES))

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

        offsets = np.asarray(self.corpus.offsets)
        if self.chunk_words:
            return _Chunks(offsets, self.chunk_words, rank, world, self._layout)
        seed = self.seed
        if self._layout is not None:  # the shard is all of this rank's run
            # positions start at 0 in every shard: the rank in the seed keeps the draws apart
            rank, world, seed = 0, 1, self.seed + (rank << 32)
        cls = SkipGramBatches if self.arch is Arch.skipgram else CBOWBatches
        return cls(
            self.corpus,
            window=self.window,
            sample=self.sample,
            shrink_windows=self.shrink_windows,
            batch_size=self.batch_size,
            seed=seed,
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
    def first_position(self) -> int:
        """The corpus position of this rank's ``corpus.ids[0]``: 0, or across nodes where its
        shard starts in the whole corpus (the chunk kernel keys its draws by corpus position, so
        a shard trains with the draws of the one-node layout)."""
        if self._layout is None:
            return 0
        return int(self._layout.token_edges[self._rank_world_used[0]])

    @property
    def words_per_step(self) -> float:
        """Corpus words one step covers on all ranks together (for words/s)."""
        words = self.corpus.raw_words if self._layout is None else self._layout.raw_words
        return words / self.steps_per_epoch

    def shard_summary(self) -> dict:
        """Which part of the corpus this rank trains on: its shard and sentence range."""
        rank, world = self._rank_world_used
        if self._layout is not None:  # sentence indices of the whole corpus, as on one node
            edges = self._layout.edges
            return {
                "index": rank,
                "count": world,
                "sentences": [int(edges[rank]), int(edges[rank + 1])],
            }
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
