"""BatchedModule: skip-gram / CBOW with negative sampling as a LightningModule.

Two embedding tables as word2vec has them (``lightning.engine.EngineModule`` makes them):
``in_embed`` (the word vectors, uniform in ±init_scale/d; word2vec.c's 0.5 by default) and
``out_embed`` (the context vectors, zeros). Both are ``nn.Embedding(sparse=True)`` so each step
touches only the rows in the batch and DDP all-reduces them as sparse tensors; with
``sparse=False`` the gradients are dense (what NCCL can all-reduce).

Negatives are drawn on the device from the exact alias table. The noise generator is reseeded from
the step's seed (seed, rank, global step) at every step, so a resumed run draws the same negatives
as an uninterrupted one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ns_plugins.app.config import Arch, Backend, Optimizer, Reduce
from ns_plugins.app.engines.base import EngineModule
from ns_plugins.core import ops
from ns_plugins.core.alias import AliasSampler
from ns_plugins.engines.base import linear_decay

__all__ = ["BatchedModule"]


def _loss_fn(backend: Backend):
    """(x, W, samples, sparse_grad) -> per-row loss, for the chosen backend."""
    if backend is Backend.reference:
        return _reference_loss
    if backend is Backend.fused:
        # On CUDA the op dispatches to the Triton kernels; on CPU to the fused CPU kernel.
        return lambda x, W, samples, sparse_grad: ops.ns_loss(
            x, W, samples, sparse_grad=sparse_grad
        )
    if backend is Backend.cupy:
        try:
            from ns_plugins.kernels import loss_cupy
        except ImportError as err:
            raise RuntimeError(f"backend 'cupy' is not available: {err}") from err
        return loss_cupy.ns_loss
    raise ValueError(f"unknown backend {backend!r}")


def _reference_loss(x: Tensor, W: Tensor, samples: Tensor, sparse_grad: bool) -> Tensor:
    """Plain autograd over the gathered rows; an embedding lookup keeps W's gradient sparse."""
    rows, local = torch.unique(samples.clamp_min(0), return_inverse=True)
    local = torch.where(samples < 0, -1, local)
    W_rows = nn.functional.embedding(rows, W, sparse=sparse_grad)
    return ops.naive_loss(x, W_rows, local)


def _cap_rows(grad: Tensor, max_norm: float) -> Tensor:
    """``grad`` with every row's norm scaled down to at most ``max_norm`` (sparse or dense)."""
    if grad.is_sparse:
        grad = grad.coalesce()
        values = grad.values()
        scale = (max_norm / values.norm(dim=1, keepdim=True).clamp_min(1e-30)).clamp(max=1.0)
        return torch.sparse_coo_tensor(grad.indices(), values * scale, grad.shape).coalesce()
    scale = (max_norm / grad.norm(dim=1, keepdim=True).clamp_min(1e-30)).clamp(max=1.0)
    return grad * scale


class BatchedModule(EngineModule):
    """Word2vec with negative sampling: the pairs engine (``engine=batched``).

    Batches are dicts: skip-gram ``{"center": (B,), "context": (B,)}``; CBOW
    ``{"center": (B,), "context": (B, C)}`` with ``-1`` padding. (The chunk engine, which trains
    corpus chunks in place, is ``ns_plugins.app.engines.chunk.ChunkModule``.) Without ``counts``
    the tables are built in ``configure_model`` from the datamodule's vocabulary, or by
    ``load_from_checkpoint`` from the checkpoint's.
    """

    ENGINE = "batched"
    RESUME_SETTINGS = ("vector_size", "negative", "ns_exponent", "alpha", "min_alpha", "arch",
                       "seed")  # fmt: skip

    def __init__(
        self,
        counts=None,
        vector_size: int = 100,
        negative: int = 5,
        ns_exponent: float = 0.75,
        alpha: float = 0.025,
        min_alpha: float = 0.0001,
        backend: Backend | str = Backend.fused,
        reduce: Reduce | str = Reduce.sum,
        arch: Arch | str = Arch.skipgram,
        optimizer: Optimizer | str = Optimizer.sgd,
        cbow_mean: bool = True,
        init_scale: float = 0.5,
        max_row_step: float | None = 1.0,
        sparse: bool = True,
        seed: int = 1,
    ):
        if vector_size < 1 or negative < 0:
            raise ValueError(
                f"vector_size must be >= 1 and negative >= 0, got {vector_size}, {negative}"
            )
        backend, reduce, arch = Backend(backend), Reduce(reduce), Arch(arch)
        optimizer = Optimizer(optimizer)
        if optimizer is Optimizer.sparse_adam and not sparse:
            raise ValueError(
                "optimizer sparse_adam needs sparse gradients (device.grad_sync "
                "sparse or local_sgd, not dense)"
            )
        self.backend, self.reduce, self.arch, self.optimizer_kind = backend, reduce, arch, optimizer
        self._loss = _loss_fn(backend)
        self._generator: torch.Generator | None = None
        super().__init__(
            counts, vector_size=vector_size, negative=negative, ns_exponent=ns_exponent,
            alpha=alpha, min_alpha=min_alpha, backend=backend.value, reduce=reduce.value,
            arch=arch.value, optimizer=optimizer.value, cbow_mean=cbow_mean,
            init_scale=init_scale, max_row_step=max_row_step, sparse=sparse, seed=seed,
        )  # fmt: skip

    def make_tables(self, counts, W_in, W_out) -> None:
        sparse = self.hparams.sparse
        self.in_embed = nn.Embedding.from_pretrained(torch.from_numpy(W_in), freeze=False,
                                                     sparse=sparse)  # fmt: skip
        self.out_embed = nn.Embedding.from_pretrained(torch.from_numpy(W_out), freeze=False,
                                                      sparse=sparse)  # fmt: skip
        self.noise = AliasSampler.from_counts(counts, self.hparams.ns_exponent)

    # ------------------------------------------------------------------ pieces
    def _draw(self, shape) -> Tensor:
        if self._generator is None or self._generator.device != self.device:
            self._generator = torch.Generator(device=self.device)
        # A fresh stream per (seed, rank, step): resuming redraws the same ids.
        self._generator.manual_seed(self.step_seed())
        return self.noise.sample_torch(shape, generator=self._generator, device=self.device)

    def hidden(self, batch: dict) -> tuple[Tensor, Tensor]:
        """(x, target): the input-side vector of each example and the word it should predict."""
        center, context = batch["center"], batch["context"]
        if self.arch is Arch.skipgram:
            # word2vec.c trains the context word's input vector to predict the center word.
            return self.in_embed(context.clamp_min(0)), torch.where(context < 0, -1, center)
        mask = (context >= 0).unsqueeze(-1).to(self.in_embed.weight.dtype)
        x = (self.in_embed(context.clamp_min(0)) * mask).sum(1)
        n = mask.sum(1)
        if self.hparams.cbow_mean:
            x = x / n.clamp_min(1)
        return x, torch.where(n.squeeze(-1) > 0, center, -1)

    def row_losses(self, batch: dict) -> Tensor:
        x, target = self.hidden(batch)
        samples = self._draw((target.shape[0], self.hparams.negative + 1))
        samples[:, 0] = target
        return self._loss(x, self.out_embed.weight, samples, self.in_embed.sparse)

    def reduce_loss(self, rows: Tensor) -> Tensor:
        """The training objective for the chosen reduce mode. ``no`` keeps the rows for logging and
        backpropagates their sum, so the step equals ``sum``'s."""
        if self.reduce is Reduce.mean:
            return rows.mean()
        return rows.sum()

    # ------------------------------------------------------------------ Lightning hooks
    ENGINE = "batched"
    RESUME_SETTINGS = (
        "vector_size",
        "negative",
        "ns_exponent",
        "alpha",
        "min_alpha",
        "arch",
        "seed",
    )

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        rows = self.row_losses(batch)
        loss = self.reduce_loss(rows)
        n = max(int(rows.shape[0]), 1)
        self.log("train/loss", rows.detach().sum() / n, prog_bar=True, on_step=True)
        if self.reduce is Reduce.no:
            self.log("train/loss_max", rows.detach().max(), on_step=True)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        # A word seen n times in a batch gets the sum of n gradients taken at the same point; at
        # large batches that sum overshoots (word2vec's sequential updates saturate instead) and
        # the weights blow up. Cap each row's SGD step at max_row_step (in norm).
        cap = self.hparams.max_row_step
        if cap is None or self.optimizer_kind is not Optimizer.sgd:
            return
        lr = optimizer.param_groups[0]["lr"]
        for p in (self.in_embed.weight, self.out_embed.weight):
            if p.grad is not None:
                p.grad = _cap_rows(p.grad, cap / max(lr, 1e-30))

    def configure_optimizers(self):
        if self.optimizer_kind is Optimizer.sparse_adam:
            return torch.optim.SparseAdam(self.parameters(), lr=self.hparams.alpha)
        return torch.optim.SGD(self.parameters(), lr=self.hparams.alpha)

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # The rate is a function of the global step alone (no scheduler state), so a run resumed
        # from a checkpoint taken at any step continues on exactly the same schedule.
        lr = linear_decay(
            self.trainer.global_step, self.total_steps, self.hparams.alpha, self.hparams.min_alpha
        )
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
