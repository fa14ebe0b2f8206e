"""The chunk engine: a training step trains one chunk of the encoded corpus in place.

A step hands a span of whole sentences (tens of thousands of words, ``model.chunk_words``) to a
fused kernel that does all of word2vec inside it: frequent-word subsampling, shrinking windows,
exact alias negatives and the in-place SGD update, the learning rate decaying per word. On CPU the
kernel is ``ns_plugins.kernels.hogwild.train_chunk`` (numba threads, ``workers``); on CUDA it is
``ns_plugins.kernels.triton_chunk.train_chunk``. Lightning drives the loop (manual
optimisation), checkpoints, loggers, callbacks and resume; there are no gradients.

The weights are two dense float32 parameters. On CPU they share memory with the numpy arrays the
kernel updates, so no step copies them. With several ranks every rank trains its own shard of the
corpus and ``WeightAveraging`` averages the weights every ``device.average_every`` steps.
"""

from __future__ import annotations

import math

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from ns_plugins.config import Arch
from ns_plugins.errors import UsageError
from ns_plugins.runs import check_resume, initial_weights, linear_decay, vocab_fingerprint

__all__ = ["ChunkModule", "chunk_seed"]

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


def chunk_seed(seed: int, rank: int, step: int) -> int:
    """The kernel's seed for one step: a function of (seed, rank, global step) alone, so a resumed
    run draws what an uninterrupted one draws."""
    return (seed * 0x9E3779B1 + rank * 0x85EBCA77 + step) % (2**63)


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
        self._tables = None
        self._device_corpus = None
        if counts is not None:
            self.build(counts)

    # ------------------------------------------------------------------ tables
    def build(self, counts, weights=None) -> None:
        """Create the weights for a vocabulary with these counts: word2vec's initialisation, or
        ``weights = (W_in, W_out)`` (float32 numpy, used in place)."""
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim != 1 or counts.size < 2:
            raise ValueError(f"counts must be 1-D with at least 2 words, got shape {counts.shape}")
        V, d = counts.size, self.hparams.vector_size
        if weights is None:
            weights = initial_weights(V, d, self.hparams.seed, self.hparams.init_scale)
        W_in, W_out = weights
        # from_numpy shares memory: the CPU kernel updates these arrays, the parameters see it.
        # Embedding tables keep the checkpoint keys of the pairs engine (in_embed.weight, ...).
        self.in_embed = nn.Embedding.from_pretrained(torch.from_numpy(W_in), freeze=True)
        self.out_embed = nn.Embedding.from_pretrained(torch.from_numpy(W_out), freeze=True)
        self.register_buffer("counts", torch.from_numpy(counts.copy()))
        self._tables = None

    def tables(self):
        """(keep probabilities, alias table) of this vocabulary, built once."""
        if self._tables is None:
            from ns_plugins.data import keep_probability, negative_sampler

            counts = self.counts.numpy()
            keep = keep_probability(counts, self.hparams.sample).astype(np.float32)
            self._tables = (keep, negative_sampler(counts, self.hparams.ns_exponent))
        return self._tables

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
        if self.device.type == "cuda":
            from ns_plugins.kernels import triton_chunk

            keep, noise = self.tables()
            ids = torch.as_tensor(np.asarray(dm.corpus.ids), device=self.device)
            offsets = torch.as_tensor(np.asarray(dm.corpus.offsets), device=self.device)
            # the kernel trusts its ids: check them once per run (one sync), not per step
            V = len(self.counts)
            if ids.numel() and not (0 <= int(ids.min()) and int(ids.max()) < V):
                raise UsageError(f"the encoded corpus holds ids outside [0, {V}): re-encode it")
            self._device_corpus = (
                ids.to(torch.int32),
                offsets.to(torch.int64),
                triton_chunk.device_tables(keep, noise.prob, noise.alias, self.device),
            )

    def training_step(self, batch, batch_idx):
        s0, s1 = (int(v) for v in batch)
        step = self.trainer.global_step
        hp = self.hparams
        a0 = linear_decay(step, self.total_steps, hp.alpha, hp.min_alpha)
        a1 = linear_decay(step + 1, self.total_steps, hp.alpha, hp.min_alpha)
        seed = chunk_seed(hp.seed, self.trainer.global_rank, step)
        stats = self._train_chunk(s0, s1, a0, a1, seed)
        opt = self.optimizers()
        opt.param_groups[0]["lr"] = a0
        opt.step()  # no gradients: only advances the global step
        loss_sum, pairs = stats
        self.log("train/loss", loss_sum / pairs, prog_bar=True, on_step=True)

    def _train_chunk(self, s0: int, s1: int, a0: float, a1: float, seed: int):
        """(loss sum, pairs trained, at least 1): floats on CPU, device tensors on CUDA."""
        hp = self.hparams
        flags = {
            "shrink_windows": hp.shrink_windows,
            "cbow": self.arch is Arch.cbow,
            "shared_negatives": hp.shared_negatives,
        }
        if self._device_corpus is not None:
            from ns_plugins.kernels import triton_chunk

            ids, offsets, tables = self._device_corpus
            stats = triton_chunk.train_chunk(
                ids,
                offsets[s0 : s1 + 1],
                self.in_embed.weight.data,
                self.out_embed.weight.data,
                *tables,
                hp.window,
                hp.negative,
                a0,
                a1,
                seed,
                **flags,
            )
            return stats[0], stats[1].clamp_min(1)
        from ns_plugins.kernels.hogwild import train_chunk

        corpus = self.trainer.datamodule.corpus
        keep, noise = self.tables()
        stats = train_chunk(
            corpus.ids,
            np.ascontiguousarray(corpus.offsets[s0 : s1 + 1], dtype=np.int64),
            self.in_embed.weight.data.numpy(),
            self.out_embed.weight.data.numpy(),
            keep,
            noise.prob,
            noise.alias,
            hp.window,
            hp.negative,
            a0,
            a1,
            seed=seed,
            workers=hp.workers,
            **flags,
        )
        return stats.loss_sum, max(stats.n_pairs, 1)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
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
        return self.in_embed.weight.detach().float().cpu().numpy()
