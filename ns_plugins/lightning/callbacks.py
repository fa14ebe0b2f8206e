"""Callbacks for the training app: throughput, evaluation, export, interrupts, local SGD."""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.distributed as dist

from ns_plugins.runs import RunEvaluator, export_run

__all__ = [
    "ExportVectors",
    "GracefulInterrupt",
    "PeriodicEvaluation",
    "Throughput",
    "WeightAveraging",
]


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


class PeriodicEvaluation(pl.Callback):
    """Scores the word vectors at each epoch end (and every ``every_n_steps`` steps when > 0) on
    rank 0 with a ``RunEvaluator``, and logs ``eval/*``."""

    def __init__(self, evaluator: RunEvaluator, every_n_steps: int = 0):
        self.evaluator = evaluator
        self.every_n_steps = every_n_steps

    def evaluate(self, trainer: pl.Trainer, pl_module) -> dict:
        return self.evaluator.evaluate(
            _vocab_words(trainer), pl_module.vectors(), trainer.datamodule.ground_truth
        )

    def _run(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        if trainer.is_global_zero:
            scores = self.evaluate(trainer, pl_module)
            finite = {f"eval/{k}": float(v) for k, v in scores.items() if math.isfinite(v)}
            if finite:
                for logger in trainer.loggers:
                    logger.log_metrics(finite, step=trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self._run(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module):
        self._run(trainer, pl_module)


class ExportVectors(pl.Callback):
    """Writes vectors.txt, vectors.bin and vocab.tsv into the run directory when training ends
    (also after an interrupt), from rank 0."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)

    def on_train_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            vocab = trainer.datamodule.vocab
            export_run(self.run_dir, list(vocab.words), pl_module.vectors(), vocab.counts)


class GracefulInterrupt(pl.Callback):
    """SIGINT / SIGTERM stop training at the next batch boundary with a checkpoint.

    The handler only sets a flag; after each batch the ranks agree on it, save
    ``interrupted.ckpt`` and stop, so the checkpoint holds a consistent step that ``ckpt_path``
    resumes from exactly.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, ckpt_dir):
        self.ckpt_dir = Path(ckpt_dir)
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
            trainer.save_checkpoint(self.ckpt_path)
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class WeightAveraging(pl.Callback):
    """Local SGD: every ``every`` steps (and at the end) all ranks replace their weights with the
    mean over ranks, one dense all-reduce per parameter. Between averages no gradient is sent."""

    def __init__(self, every: int):
        if every < 1:
            raise ValueError(f"average_every must be >= 1, got {every}")
        self.every = every

    @torch.no_grad()
    def _average(self, trainer, pl_module):
        if trainer.world_size == 1 or not dist.is_initialized():
            return
        for p in pl_module.parameters():
            dist.all_reduce(p.data, op=dist.ReduceOp.SUM)
            p.data /= trainer.world_size

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every == 0:
            self._average(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self._average(trainer, pl_module)
