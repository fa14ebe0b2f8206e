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
import math

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from ns_plugins.config import Arch
from ns_plugins.engines.base import check_resume, step_seed, vocab_fingerprint
from ns_plugins.engines.chunk import ChunkSettings, ChunkTrainer
from ns_plugins.errors import UsageError

__all__ = ["ChunkModule", "chunk_seed"]

chunk_seed = step_seed  # the name the chunk engine's tests and tools know

# Settings a checkpoint must share with the run resuming it: they change what a step means.
RESUME_SETTINGS = (
    "vector_size",
    "window",
    "negative",
    "ns_exponent",
    "sample",
    "alpha",
    "min_alpha",
    "arch",
    "shrink_windows",
    "shared_negatives",
    "seed",
)


class ChunkModule(pl.LightningModule):
    """Word2vec (skip-gram or CBOW with averaged contexts) trained in place by a chunk kernel.

    Batches are ``(first sentence, end sentence)`` pairs of the encoded corpus held by the
    datamodule. Without ``counts`` the tables are built in ``configure_model`` from the
    datamodule's vocabulary; ``load_from_checkpoint`` rebuilds them from the checkpoint.
    """

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
    ):
        super().__init__()
        arch = Arch(arch)
        if vector_size < 1 or window < 1 or negative < 0 or workers < 1:
            raise ValueError(
                "need vector_size >= 1, window >= 1, negative >= 0 and workers >= 1, got "
                f"{vector_size}, {window}, {negative}, {workers}"
            )
        if shared_negatives and arch is Arch.cbow:
            raise ValueError("shared_negatives is a skip-gram option; CBOW shares per center")
        # Plain values only: checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(
            {
                "vector_size": vector_size,
                "window": window,
                "negative": negative,
                "ns_exponent": ns_exponent,
                "sample": sample,
                "alpha": alpha,
                "min_alpha": min_alpha,
                "arch": arch.value,
                "shrink_windows": shrink_windows,
                "shared_negatives": shared_negatives,
                "init_scale": init_scale,
                "workers": workers,
                "seed": seed,
            }
        )
        self.automatic_optimization = False
        self.arch = arch
        self.total_steps = 0  # set in on_train_start from the trainer
        self.fingerprint: str | None = None  # of the vocabulary this run trains
        self.in_embed: nn.Embedding | None = None
        self.out_embed: nn.Embedding | None = None
        self.engine: ChunkTrainer | None = None
        self._device_corpus = None
        if counts is not None:
            self.build(counts)

    # ------------------------------------------------------------------ tables
    def build(self, counts, weights=None) -> None:
        """Create the weights for a vocabulary with these counts: word2vec's initialisation, or
        ``weights = (W_in, W_out)`` (float32 numpy, used in place)."""
        hp = self.hparams
        settings = ChunkSettings(
            vector_size=hp.vector_size, window=hp.window, negative=hp.negative,
            ns_exponent=hp.ns_exponent, sample=hp.sample, alpha=hp.alpha,
            min_alpha=hp.min_alpha, cbow=self.arch is Arch.cbow,
            shrink_windows=hp.shrink_windows, shared_negatives=hp.shared_negatives,
            init_scale=hp.init_scale, workers=hp.workers, seed=hp.seed,
        )  # fmt: skip
        self.engine = ChunkTrainer(counts, settings, weights)
        # from_numpy shares memory: the CPU kernel updates these arrays, the parameters see it.
        # Embedding tables keep the checkpoint keys of the pairs engine (in_embed.weight, ...).
        self.in_embed = nn.Embedding.from_pretrained(
            torch.from_numpy(self.engine.W_in), freeze=True
        )
        self.out_embed = nn.Embedding.from_pretrained(
            torch.from_numpy(self.engine.W_out), freeze=True
        )
        self.register_buffer("counts", torch.from_numpy(self.engine.counts.copy()))

    def tables(self):
        """(keep probabilities, alias table) of this vocabulary, built once."""
        return self.engine.tables()

    # ------------------------------------------------------------------ Lightning hooks
    def configure_model(self) -> None:
        if self._trainer is None:  # load_from_checkpoint: on_load_checkpoint builds the tables
            return
        dm = self.trainer.datamodule
        if self.in_embed is None:
            self.build(dm.vocab.counts, dm.initial_weights(self.hparams))
        self.fingerprint = vocab_fingerprint(dm.vocab.words, dm.vocab.counts)

    def configure_optimizers(self):
        # The kernel updates the weights itself; this optimiser holds the learning rate that is
        # logged and its step() advances Lightning's global step (it has no gradients to apply).
        return torch.optim.SGD([self.in_embed.weight], lr=self.hparams.alpha)

    def on_train_start(self) -> None:
        total = self.trainer.estimated_stepping_batches
        self.total_steps = int(total) if math.isfinite(total) else 0
        dm = self.trainer.datamodule
        if self.trainer.world_size > 1:
            # the ranks' merge (WeightAveraging) writes the tables between steps: the threads of
            # a rank share them rather than keep copies that would miss it
            self.engine.settings = dataclasses.replace(self.engine.settings, copies_mib=0.0)
        if self.device.type == "cuda":
            # the parameters moved to the device: the step trains them there
            self.engine.W_in, self.engine.W_out = (
                self.in_embed.weight.data,
                self.out_embed.weight.data,
            )
            self._device_corpus = self.engine.to_device(
                dm.corpus.ids, dm.corpus.offsets, self.device
            )

    def training_step(self, batch, batch_idx):
        s0, s1 = (int(v) for v in batch)
        step = self.trainer.global_step
        if self._device_corpus is not None:
            ids, offsets = self._device_corpus
            # a device sync every 64 steps, not every step
            loss_sum, pairs, _ = self.engine.step(
                ids, offsets[s0 : s1 + 1], step, self.total_steps, self.trainer.global_rank,
                check_every=64,
            )  # fmt: skip
            pairs = pairs.clamp_min(1)
        else:
            corpus = self.trainer.datamodule.corpus
            loss_sum, pairs, _ = self.engine.step(
                corpus.ids, corpus.offsets[s0 : s1 + 1], step, self.total_steps,
                self.trainer.global_rank,
            )  # fmt: skip
            pairs = max(pairs, 1)
        opt = self.optimizers()
        opt.param_groups[0]["lr"] = self.engine.schedule(step, self.total_steps)[0]
        opt.step()  # no gradients: only advances the global step
        self.log("train/loss", loss_sum / pairs, prog_bar=True, on_step=True)

    def on_train_end(self) -> None:
        self.engine.release_copies()

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the state dict holds the parameters themselves, saved after this hook: merge the
        # threads' copies into them first
        self.engine.sync()
        checkpoint["ns_plugins"] = {
            "engine": "chunk",
            "vocab_fingerprint": self.fingerprint,
            "settings": {k: self.hparams[k] for k in RESUME_SETTINGS},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get("ns_plugins") or {}
        if meta.get("engine") != "chunk":
            raise UsageError("the checkpoint was not written by the chunk engine (model.engine)")
        if self.in_embed is None:  # load_from_checkpoint: no datamodule, the checkpoint has all
            state = checkpoint["state_dict"]
            weights = (
                state["in_embed.weight"].numpy().copy(),
                state["out_embed.weight"].numpy().copy(),
            )
            self.build(state["counts"].numpy(), weights)
            self.fingerprint = meta["vocab_fingerprint"]
            return
        check_resume(meta, self.fingerprint, {k: self.hparams[k] for k in RESUME_SETTINGS})

    def vectors(self) -> np.ndarray:
        """The word vectors (input embeddings) as float32 numpy."""
        if self.engine is not None:
            self.engine.sync()
        return self.in_embed.weight.detach().float().cpu().numpy()
