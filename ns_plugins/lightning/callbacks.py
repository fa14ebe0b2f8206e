"""Callbacks for the training app: throughput, progress lines, evaluation, export, interrupts,
local SGD."""

from __future__ import annotations

import logging
import math
import signal
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy

from ns_plugins.runs import RunEvaluator

__all__ = [
    "AveragingDDPStrategy",
    "GracefulInterrupt",
    "PeriodicEvaluation",
    "ProgressLog",
    "Throughput",
    "WeightAveraging",
]


log = logging.getLogger("ns_plugins.train")


def _vocab_words(trainer: pl.Trainer) -> list[str]:
    return list(trainer.datamodule.vocab.words)


class Throughput(pl.Callback):
    """Logs ``train/words_per_sec`` (corpus words over all ranks, as word2vec counts them) and
    ``train/lr``; words/s shows in Lightning's progress bar next to the loss."""

    def __init__(self):
        self.words = 0
        self.seconds = 0.0
        self._t0: float | None = None
        self._since = 0
        self.rate = math.nan

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        n = trainer.datamodule.words_per_step
        self.words += n
        self._since += n
        now = time.perf_counter()
        if now - self._t0 >= 0.5 or trainer.is_last_batch:
            self.seconds += now - self._t0
            self.rate = self._since / max(now - self._t0, 1e-9)
            self._t0, self._since = now, 0
        pl_module.log("train/words_per_sec", self.rate, prog_bar=True, on_step=True)
        pl_module.log("train/lr", trainer.optimizers[0].param_groups[0]["lr"], on_step=True)

    def on_train_epoch_end(self, trainer, pl_module):
        self._t0 = None  # evaluation time is not training time

    def summary(self) -> dict:
        rate = self.words / self.seconds if self.seconds > 0 else math.nan
        return {"words": int(self.words), "train_seconds": self.seconds, "words_per_sec": rate}


def _finite(value) -> bool:
    return value is not None and math.isfinite(float(value))


class ProgressLog(pl.Callback):
    """One log line every ``seconds`` (and at each epoch end) for runs whose output is not a
    terminal, as gensim logs: epoch, percent done, words/s, loss and learning rate."""

    def __init__(self, seconds: float = 5.0):
        self.seconds = seconds
        self._last = 0.0

    def _line(self, trainer, final: bool = False) -> None:
        steps = trainer.num_training_batches
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        m = trainer.callback_metrics
        loss, rate = m.get("train/loss"), m.get("train/words_per_sec")
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else math.nan
        log.info(
            "EPOCH %d - %s: %.1f%% of %d steps, %s words/s, loss %s, lr %.6f",
            trainer.current_epoch + 1,
            "DONE" if final else "PROGRESS",
            100.0 * done / max(steps, 1),
            steps,
            f"{float(rate):,.0f}" if _finite(rate) else "-",
            f"{float(loss):.4f}" if _finite(loss) else "-",
            lr,
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.monotonic()
        if trainer.is_global_zero and now - self._last >= self.seconds:
            self._last = now
            self._line(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            self._line(trainer, final=True)


class AveragingDDPStrategy(DDPStrategy):
    """DDP's processes and process group without the DistributedDataParallel wrapper, for local
    SGD (``WeightAveraging``): nothing is all-reduced per step, and the chunk engine, which has no
    gradients at all, could not be wrapped (DDP refuses a module with no trainable parameter)."""

    def configure_ddp(self) -> None:
        pass


class PeriodicEvaluation(pl.Callback):
    """Scores the word vectors at each epoch end (and every ``every_n_steps`` steps when > 0) on
    rank 0 with a ``RunEvaluator`` and logs ``eval/*`` with ``self.log`` on every rank (the scores
    are broadcast), so ``ModelCheckpoint(monitor=...)``, ``EarlyStopping`` and sweepers see them."""

    def __init__(
        self, evaluator: RunEvaluator, every_n_steps: int = 0, analogies_each_epoch: bool = False
    ):
        self.evaluator = evaluator
        self.every_n_steps = every_n_steps
        self.analogies_each_epoch = analogies_each_epoch
        self.step: int | None = None  # global step of the last evaluation

    def evaluate(self, trainer: pl.Trainer, pl_module, analogies: bool = True) -> dict:
        self.step = trainer.global_step
        return self.evaluator.evaluate(
            _vocab_words(trainer),
            pl_module.vectors(),
            trainer.datamodule.ground_truth,
            analogies=analogies,
        )

    def _run(self, trainer, pl_module, epoch_end: bool):
        if trainer.sanity_checking:
            return
        # analogies (the costly set) at the last epoch, or at every one when asked
        last = trainer.current_epoch + 1 >= trainer.max_epochs or (
            trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        )
        full = self.analogies_each_epoch or (epoch_end and last)
        scores = self.evaluate(trainer, pl_module, full) if trainer.is_global_zero else None
        if trainer.world_size > 1:
            scores = trainer.strategy.broadcast(scores, src=0)
            self.step = trainer.global_step
        finite = {f"eval/{k}": float(v) for k, v in scores.items() if math.isfinite(v)}
        if epoch_end:
            # every rank holds the same scores: the sync changes no value, it only tells Lightning
            # that the ranks agree (it warns about epoch-level values logged without it)
            sync = trainer.world_size > 1
            for k, v in finite.items():
                pl_module.log(k, v, on_step=False, on_epoch=True, sync_dist=sync)
        elif finite and trainer.is_global_zero:
            # mid-epoch: straight to the loggers (self.log would average them over the epoch)
            for logger in trainer.loggers:
                logger.log_metrics(finite, step=trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self._run(trainer, pl_module, epoch_end=False)

    def on_train_epoch_end(self, trainer, pl_module):
        self._run(trainer, pl_module, epoch_end=True)


class GracefulInterrupt(pl.Callback):
    """SIGINT / SIGTERM stop training at the next batch boundary with a checkpoint.

    The handler only sets a flag; after each batch the ranks agree on it, save
    ``interrupted.ckpt`` and stop, so the checkpoint holds a consistent step that ``ckpt_path``
    resumes from exactly.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, ckpt_dir, before_save=None):
        self.ckpt_dir = Path(ckpt_dir)
        self.before_save = before_save  # (trainer, module) -> None, e.g. merge the ranks' weights
        self.received: int | None = None
        self.ckpt_path: Path | None = None
        self._previous: dict = {}

    def _handler(self, signum, frame):
        self.received = signum

    def on_train_start(self, trainer, pl_module):
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        flag = self.received is not None
        if trainer.world_size > 1:
            flag = trainer.strategy.reduce_boolean_decision(flag, all=False)
        if flag:
            if self.received is None:
                self.received = signal.SIGTERM  # another rank was signalled
            self.ckpt_path = self.ckpt_dir / "interrupted.ckpt"
            if self.before_save is not None:
                self.before_save(trainer, pl_module)
            trainer.save_checkpoint(self.ckpt_path)
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


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
        for p, anchor in zip(params, self._anchors):
            p.data -= anchor  # this rank's delta since the last merge
            dist.all_reduce(p.data, op=dist.ReduceOp.SUM)
            p.data += anchor
            anchor.copy_(p.data)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0:
            self.merge(trainer, pl_module)

    # A merge right after another is a no-op (no deltas; equal weights), so these need no guard.
    def on_train_epoch_end(self, trainer, pl_module):
        self.merge(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self.merge(trainer, pl_module)
