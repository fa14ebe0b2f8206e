"""Local SGD across ranks: ``AveragingDDPStrategy`` (DDP's processes and process group, without
the wrapper that all-reduces every step) and ``WeightAveraging`` (the ranks' weights merged every
few steps).

Separate from the other callbacks: the only ones that change the weights, and the only ones that
use ``torch.distributed`` directly.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy

from ns_plugins.kernels.merge import merge_deltas

__all__ = ["AveragingDDPStrategy", "WeightAveraging"]


class AveragingDDPStrategy(DDPStrategy):
    """DDP's processes and process group without the DistributedDataParallel wrapper, for local
    SGD (``WeightAveraging``): nothing is all-reduced per step, and the chunk engine, which has no
    gradients at all, could not be wrapped (DDP refuses a module with no trainable parameter)."""

    def configure_ddp(self) -> None:
        pass


class WeightAveraging(pl.Callback):
    """Local SGD: ranks train on their own shards with no per-step traffic and merge their weights
    every ``every`` steps, at each epoch end (before the epoch's checkpoint) and at the end.

    ``merge="sum"`` adds up what every rank changed since the last merge (W = W_last + sum of the
    ranks' deltas), so R ranks each training 1/R of the corpus apply the whole corpus's updates, as
    R hogwild threads sharing one table do; it keeps a copy of the weights at the last merge
    (2 x V x d floats per rank). ``merge="mean"`` replaces the weights with their mean over ranks
    (no copy), which divides each rank's updates by R: in effect the learning rate over R.
    """

    def __init__(self, every: int, merge: str = "sum"):
        if every < 1:
            raise ValueError(f"average_every must be >= 1, got {every}")
        if merge not in ("sum", "mean"):
            raise ValueError(f"merge must be 'sum' or 'mean', got {merge!r}")
        self.every = every
        self.merge_rule = merge
        self._anchors: list[torch.Tensor] | None = None

    def _active(self, trainer) -> bool:
        return trainer.world_size > 1 and dist.is_initialized()

    def on_train_start(self, trainer, pl_module):
        if self._active(trainer) and self.merge_rule == "sum":
            # every rank starts from the same weights (a fresh start is seeded alike; a resumed
            # run loads rank 0's checkpoint everywhere)
            self._anchors = [p.detach().clone() for p in pl_module.parameters()]

    @torch.no_grad()
    def merge(self, trainer, pl_module) -> None:
        if not self._active(trainer):
            return
        params = list(pl_module.parameters())
        if self.merge_rule == "mean":
            for p in params:
                dist.all_reduce(p.data, op=dist.ReduceOp.SUM)
                p.data /= trainer.world_size
            return

        def add_up(delta):
            dist.all_reduce(delta, op=dist.ReduceOp.SUM)

        for p, anchor in zip(params, self._anchors):
            merge_deltas([p.data], anchor, all_reduce=add_up)  # the threads' rule too

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0:
            self.merge(trainer, pl_module)

    # A merge right after another is a no-op (no deltas; equal weights), so these need no guard.
    def on_train_epoch_end(self, trainer, pl_module):
        self.merge(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self.merge(trainer, pl_module)
