"""Evaluation during training: ``PeriodicEvaluation`` scores the word vectors at each epoch end
(and every few steps when asked) and logs ``eval/*`` on every rank, for checkpoints, early
stopping and sweepers to monitor.

The app's other callbacks live by concern: ``progress`` (words/s, the logging cadence, log lines,
the bar), ``checkpoints`` (interrupts, ``last.ckpt``) and ``local_sgd`` (weight averaging across
ranks).
"""

from __future__ import annotations

import math

import pytorch_lightning as pl

from ns_plugins.app.evaluation import RunEvaluator

__all__ = ["PeriodicEvaluation"]


def _vocab_words(trainer: pl.Trainer) -> list[str]:
    return list(trainer.datamodule.vocab.words)


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
