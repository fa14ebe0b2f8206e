"""The chunk engine under Lightning: a training step trains one chunk of the encoded corpus in
place with ``ns_plugins.engines.chunk.ChunkTrainer`` (the step the library's ``Word2Vec`` runs
too). Lightning drives the loop (manual optimisation), checkpoints, loggers, callbacks and resume;
there are no gradients.

The weights are two dense float32 parameters. On CPU they share memory with the numpy arrays the
kernel updates, so no step copies them. With several ranks every rank trains its own shard of the
corpus and ``WeightAveraging`` averages the weights every ``device.average_every`` steps.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from ns_plugins.app.config import Arch
from ns_plugins.app.engines.base import EngineModule
from ns_plugins.engines.base import step_seed
from ns_plugins.engines.chunk import ChunkSettings, ChunkTrainer

__all__ = ["ChunkModule", "chunk_seed"]

chunk_seed = step_seed  # the name the chunk engine's tests and tools know


class ChunkModule(EngineModule):
    """Word2vec (skip-gram or CBOW with averaged contexts) trained in place by a chunk kernel.

    Batches are ``(first sentence, end sentence)`` pairs of the encoded corpus held by the
    datamodule. The step is ``ChunkTrainer.step``; the tables are numpy arrays the kernel
    updates, shared with the parameters (no copies)."""

    ENGINE = "chunk"
    # Settings a checkpoint must share with the run resuming it: they change what a step means.
    RESUME_SETTINGS = (
        "vector_size", "window", "negative", "ns_exponent", "sample", "alpha", "min_alpha",
        "arch", "shrink_windows", "shared_negatives", "seed",
    )  # fmt: skip

    def __init__(
        self,
        counts=None,
        vector_size: int = 100,
        window: int = 5,
        negative: int = 5,
        ns_exponent: float = 0.75,
        sample: float = 1e-3,
        alpha: float = 0.025,
        min_alpha: float = 0.0001,
        arch: Arch | str = Arch.skipgram,
        shrink_windows: bool = True,
        shared_negatives: bool = False,
        init_scale: float = 0.5,
        workers: int = 2,
        seed: int = 1,
        copies_mib: float = 0.0,
        merge_every: int = 4,
    ):
        arch = Arch(arch)
        self.arch = arch
        self.engine: ChunkTrainer | None = None
        self._device_corpus = None
        self.settings = ChunkSettings(
            vector_size=vector_size,
            window=window,
            negative=negative,
            ns_exponent=ns_exponent,
            sample=sample,
            alpha=alpha,
            min_alpha=min_alpha,
            cbow=arch is Arch.cbow,
            shrink_windows=shrink_windows,
            shared_negatives=shared_negatives,
            init_scale=init_scale,
            workers=workers,
            seed=seed,
            copies_mib=copies_mib,
            merge_every=merge_every,
        )  # fmt: skip
        super().__init__(
            counts, vector_size=vector_size, window=window, negative=negative,
            ns_exponent=ns_exponent, sample=sample, alpha=alpha, min_alpha=min_alpha,
            arch=arch.value, shrink_windows=shrink_windows, shared_negatives=shared_negatives,
            init_scale=init_scale, workers=workers, seed=seed, copies_mib=copies_mib,
            merge_every=merge_every,
        )  # fmt: skip
        self.automatic_optimization = False

    def make_tables(self, counts, W_in, W_out) -> None:
        self.engine = ChunkTrainer(counts, self.settings, (W_in, W_out))
        # from_numpy shares memory: the CPU kernel updates these arrays, the parameters see it.
        self.in_embed = nn.Embedding.from_pretrained(torch.from_numpy(W_in), freeze=True)
        self.out_embed = nn.Embedding.from_pretrained(torch.from_numpy(W_out), freeze=True)

    def tables(self):
        """(keep probabilities, alias table) of this vocabulary, built once."""
        return self.engine.tables()

    # ------------------------------------------------------------------ Lightning hooks
    def configure_optimizers(self):
        # The kernel updates the weights itself; this optimiser holds the learning rate that is
        # logged and its step() advances Lightning's global step (it has no gradients to apply).
        return torch.optim.SGD([self.in_embed.weight], lr=self.hparams.alpha)

    def on_train_start(self) -> None:
        super().on_train_start()
        dm = self.trainer.datamodule
        if self.trainer.world_size > 1:
            # the ranks' merge (WeightAveraging) writes the tables between steps: the threads of
            # a rank share them rather than keep copies that would miss it
            self.engine.settings = dataclasses.replace(self.engine.settings, copies_mib=0.0)
        if self.device.type == "cuda":
            # the parameters moved to the device: the step trains them there
            self.engine.W_in = self.in_embed.weight.data
            self.engine.W_out = self.out_embed.weight.data
            corpus = dm.corpus
            self._device_corpus = self.engine.to_device(corpus.ids, corpus.offsets, self.device)

    def training_step(self, batch, batch_idx):
        s0, s1 = (int(v) for v in batch)
        step = self.trainer.global_step
        if self._device_corpus is not None:
            ids, offsets = self._device_corpus
            # a device sync every 64 steps, not every step
            loss_sum, pairs, _ = self.engine.step(
                ids, offsets[s0 : s1 + 1], step, self.total_steps, self.trainer.global_rank,
                check_every=64, first_position=self.trainer.datamodule.first_position,
            )  # fmt: skip
            pairs = pairs.clamp_min(1)
        else:
            corpus = self.trainer.datamodule.corpus
            loss_sum, pairs, _ = self.engine.step(
                corpus.ids, corpus.offsets[s0 : s1 + 1], step, self.total_steps,
                self.trainer.global_rank, first_position=self.trainer.datamodule.first_position,
            )  # fmt: skip
            pairs = max(pairs, 1)
        opt = self.optimizers()
        opt.param_groups[0]["lr"] = self.engine.schedule(step, self.total_steps)[0]
        opt.step()  # no gradients: only advances the global step
        self.log("train/loss", loss_sum / pairs, prog_bar=True, on_step=True)

    def on_train_end(self) -> None:
        self.engine.release_copies()

    # ------------------------------------------------------------------ readers of the weights
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the state dict holds the parameters themselves, saved after this hook: merge the
        # threads' copies into them first
        self.engine.sync()
        super().on_save_checkpoint(checkpoint)

    def vectors(self) -> np.ndarray:
        if self.engine is not None:
            self.engine.sync()
        return super().vectors()
