"""What both Lightning engines share, written once: the two tables and their initialisation
(word2vec's, or ``init_vectors`` through the datamodule), the vocabulary fingerprint, the
checkpoint's contents and the resume check, the total steps, per-step seeds and ``vectors()``.

An engine (``ChunkModule``: corpus chunks trained in place; ``BatchedModule``: pairs through the
loss op) names itself (``ENGINE``), lists the settings a checkpoint must share with a run resuming
it (``RESUME_SETTINGS``), makes its tables from the initial weights (``make_tables``) and adds its
training step.
"""

from __future__ import annotations

import math

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from ns_plugins.engines.base import check_resume, initial_weights, step_seed, vocab_fingerprint
from ns_plugins.errors import UsageError

__all__ = ["EngineModule"]


class EngineModule(pl.LightningModule):
    """Base of the engines: ``in_embed`` (the word vectors) and ``out_embed`` (the output
    vectors) as ``nn.Embedding`` tables, built from the vocabulary's counts in ``build``: at
    construction when ``counts`` is given, else in ``configure_model`` from the datamodule's
    vocabulary, or by ``load_from_checkpoint`` from the checkpoint alone."""

    ENGINE = ""
    RESUME_SETTINGS: tuple[str, ...] = ()

    def __init__(self, counts=None, **hparams):
        super().__init__()
        # Plain values only: checkpoints load with torch.load(weights_only=True). (counts is an
        # array, which Lightning would compare with the dict while naming it.)
        self.save_hyperparameters(hparams, ignore=["counts"])
        self.total_steps = 0  # set in on_train_start from the trainer
        self.fingerprint: str | None = None  # of the vocabulary this run trains
        self.in_embed: nn.Embedding | None = None
        self.out_embed: nn.Embedding | None = None
        if counts is not None:
            self.build(counts)

    # ------------------------------------------------------------------ tables
    def build(self, counts, weights=None) -> None:
        """The tables for a vocabulary with these counts: ``weights = (W_in, W_out)`` (float32
        numpy) or word2vec's initialisation."""
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim != 1 or counts.size < 2:
            raise ValueError(f"counts must be 1-D with at least 2 words, got shape {counts.shape}")
        hp = self.hparams
        if weights is None:
            weights = initial_weights(counts.size, hp.vector_size, hp.seed, hp.init_scale)
        self.make_tables(counts, *weights)
        # in the checkpoint, so load_from_checkpoint can rebuild the tables without a datamodule
        self.register_buffer("counts", torch.from_numpy(counts.copy()))

    def make_tables(self, counts: np.ndarray, W_in: np.ndarray, W_out: np.ndarray) -> None:
        raise NotImplementedError

    def step_seed(self) -> int:
        """The seed of this step's random draws: (seed, rank, global step) alone, so a resumed
        run draws what an uninterrupted one draws."""
        if self._trainer is None:
            return step_seed(self.hparams.seed, 0, 0)
        return step_seed(self.hparams.seed, self.trainer.global_rank, self.trainer.global_step)

    def vectors(self) -> np.ndarray:
        """The word vectors (input embeddings) as float32 numpy."""
        return self.in_embed.weight.detach().float().cpu().numpy()

    # ------------------------------------------------------------------ Lightning hooks
    def configure_model(self) -> None:
        if self._trainer is None:  # load_from_checkpoint: on_load_checkpoint builds the tables
            return
        dm = self.trainer.datamodule
        if self.in_embed is None:
            self.build(dm.vocab.counts, dm.initial_weights(self.hparams))
        self.fingerprint = vocab_fingerprint(dm.vocab.words, dm.vocab.counts)

    def on_train_start(self) -> None:
        # Asked here, not in configure_optimizers: estimating the steps there builds the train
        # loader before a checkpoint is restored, and the loader would not know where to resume.
        total = self.trainer.estimated_stepping_batches
        self.total_steps = int(total) if math.isfinite(total) else 0

    def resume_settings(self) -> dict:
        return {k: self.hparams[k] for k in self.RESUME_SETTINGS}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ns_plugins"] = {
            "engine": self.ENGINE,
            "vocab_fingerprint": self.fingerprint,
            "settings": self.resume_settings(),
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get("ns_plugins") or {}
        if meta.get("engine") != self.ENGINE:
            raise UsageError(
                f"the checkpoint was not written by the {self.ENGINE} engine (engine=chunk|batched)"
            )
        if self.in_embed is None:  # load_from_checkpoint: no datamodule, the checkpoint has all
            state = checkpoint["state_dict"]
            weights = tuple(
                state[f"{name}.weight"].float().numpy().copy() for name in ("in_embed", "out_embed")
            )
            self.build(state["counts"].numpy(), weights)
            self.fingerprint = meta.get("vocab_fingerprint")
            return
        check_resume(meta, self.fingerprint, self.resume_settings())
