"""The checkpoints a run that stops early resumes from exactly: ``GracefulInterrupt`` (SIGINT or
SIGTERM, or a rank killed: ``interrupted.ckpt`` at a batch boundary) and ``RunCheckpoint``
(``last.ckpt`` where a run stops inside an epoch and at every epoch end; a checkpoint that would
skip part of an epoch is refused).

Separate from progress and evaluation: these decide what is on disk when a run ends, and read it
back when one resumes.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytorch_lightning as pl

from ns_plugins.app.signals import note_failure_checkpoint, rank_failure
from ns_plugins.errors import UsageError

__all__ = ["GracefulInterrupt", "RunCheckpoint"]


class GracefulInterrupt(pl.Callback):
    """SIGINT / SIGTERM stop training at the next batch boundary with a checkpoint.

    The handler only sets a flag; after each batch the ranks agree on it, save
    ``interrupted.ckpt`` and stop, so the checkpoint holds a consistent step that ``ckpt_path``
    resumes from exactly. When a forked rank is killed (kill -9, the OOM killer), rank 0's next
    collective fails; rank 0 then saves ``interrupted.ckpt`` from what it holds, to resume from.
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

    def on_exception(self, trainer, pl_module, exception):
        self.on_train_end(trainer, pl_module)
        if trainer.world_size < 2 or not isinstance(exception, RuntimeError):
            return
        failed = rank_failure(wait=2.0)  # a collective fails at once when a peer is killed
        if failed is None or not trainer.is_global_zero:
            return
        # The killed rank's updates since the last merge are gone; rank 0 keeps its own and where
        # the run is. No collective can run any more (Trainer.save_checkpoint waits at a
        # barrier): the checkpoint is written straight through the checkpoint IO.
        self.ckpt_path = self.ckpt_dir / "interrupted.ckpt"
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        trainer.strategy.checkpoint_io.save_checkpoint(checkpoint, self.ckpt_path)
        note_failure_checkpoint(self.ckpt_path)


class RunCheckpoint(pl.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` resumes to where a run that never stopped ends.

    Lightning saves ``last.ckpt`` at each epoch end. A run that stops inside an epoch (Ctrl-C or
    SIGTERM through ``GracefulInterrupt``, ``max_steps``, a callback's ``should_stop``) still gets
    that save, after the loop has closed the epoch: the file says the epoch is done, and a run
    resumed from it skipped the rest of the epoch without a word. Here such a stop saves
    ``last.ckpt`` at the batch where it happens, a mid-epoch checkpoint like ``interrupted.ckpt``
    (the epoch-end save then finds this step saved and leaves it). ``before_save`` (trainer,
    module) runs first on every rank, e.g. to merge the ranks' weights. Every epoch that ends
    saves ``last.ckpt``.

    A checkpoint that says an epoch is done at a step where it is not (written that way before)
    is refused instead of skipping part of an epoch."""

    def __init__(self, *args, before_save=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.before_save = before_save

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        at_max_steps = trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps
        if (
            (trainer.should_stop or at_max_steps)
            and not trainer.is_last_batch  # the epoch ends here: its own save comes
            and self.save_last
            and not self._should_skip_saving_checkpoint(trainer)
        ):
            if self.before_save is not None:
                self.before_save(trainer, pl_module)
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer, pl_module):
        super().on_train_epoch_end(trainer, pl_module)
        # Lightning (2.5 on) saves last.ckpt at an epoch end only beside a top-k checkpoint, and
        # this app keeps none (save_top_k=0): last.ckpt came only when training ended, so a run
        # killed on the way had no checkpoint at all.
        if (
            self.save_last
            and self._should_save_on_train_epoch_end(trainer)
            and not self._should_skip_saving_checkpoint(trainer)
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        steps = getattr(trainer.datamodule, "steps_per_epoch", None)
        loops = checkpoint.get("loops") or {}
        epochs = (loops.get("fit_loop") or {}).get("epoch_progress", {}).get("total")
        if not steps or not epochs or epochs["processed"] != epochs["started"]:
            return  # stopped inside an epoch, as interrupted.ckpt: resumes there
        done, step = epochs["processed"], checkpoint.get("global_step")
        if step != done * steps:
            raise UsageError(
                f"ckpt_path={trainer.ckpt_path}: it says {done} epochs are done at step {step} "
                f"(an epoch is {steps} steps here): it was saved as an epoch's end when a run "
                "stopped inside the epoch, and resuming would skip the rest of it; resume from "
                "that run's interrupted.ckpt, or from a checkpoint saved at an epoch's end"
            )
