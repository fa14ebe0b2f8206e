"""Callbacks for the training app: throughput (words/s, defined in ``Throughput``), the logging
cadence, progress lines and bar, evaluation, export, interrupts, local SGD."""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm, convert_inf
from pytorch_lightning.strategies import DDPStrategy

from ns_plugins.app.evaluation import RunEvaluator
from ns_plugins.app.signals import note_failure_checkpoint, rank_failure
from ns_plugins.errors import UsageError
from ns_plugins.kernels.merge import merge_deltas

__all__ = [
    "AutoLogInterval",
    "AveragingDDPStrategy",
    "GracefulInterrupt",
    "PeriodicEvaluation",
    "ProgressBar",
    "ProgressLog",
    "RunCheckpoint",
    "Throughput",
    "WeightAveraging",
    "human_rate",
    "log_interval",
    "log_to_files",
]


log = logging.getLogger("ns_plugins.train")


def _vocab_words(trainer: pl.Trainer) -> list[str]:
    return list(trainer.datamodule.vocab.words)


class Throughput(pl.Callback):
    """Words/s, defined here once; the log lines, the progress bar, ``train/words_per_sec`` in
    csv/metrics.csv (and the report's throughput panel), ``words_per_sec`` in metrics.json and the
    closing summary all give this figure:

        words/s = corpus words trained / seconds of training

    *Corpus words trained*: the words of the corpus the steps covered, on all ranks together,
    counted before ``min_count`` and ``sample`` drop any (as word2vec and gensim count them), so
    an epoch adds the corpus's word count. *Seconds of training*: from the end of one step to the
    end of the next (loading a batch counts). Left out of both: the run's first step, which pays
    one-off costs (compiling the kernels: seconds on a fresh install), time between epochs
    (evaluation, checkpoints) and everything before training (imports, vocabulary, encoding);
    ``wall_seconds`` in metrics.json counts all of it. The log lines and the bar show the rate
    over the latest ``window`` seconds or so (and each epoch's last steps); metrics.json and the
    summary over the whole run. Also logs ``train/lr``."""

    def __init__(self, window: float = 0.5):
        self.window = window
        self.words = 0  # every step, the first included
        self.timed_words = 0
        self.seconds = 0.0
        self.warmup_words = 0
        self.warmup_seconds = 0.0
        self.rate = math.nan  # over the latest window
        self._t0: float | None = None
        self._warm = False
        self._window_words = 0
        self._window_seconds = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        n = trainer.datamodule.words_per_step
        now = time.perf_counter()
        seconds, self._t0 = now - self._t0, now
        self.words += n
        if not self._warm:
            self._warm = True
            self.warmup_words, self.warmup_seconds = n, seconds
        else:
            self.timed_words += n
            self.seconds += seconds
            self._window_words += n
            self._window_seconds += seconds
            if self._window_seconds >= self.window or trainer.is_last_batch:
                self.rate = self._window_words / max(self._window_seconds, 1e-9)
                self._window_words, self._window_seconds = 0, 0.0
        if math.isfinite(self.rate):
            pl_module.log("train/words_per_sec", self.rate, prog_bar=True, on_step=True)
        pl_module.log("train/lr", trainer.optimizers[0].param_groups[0]["lr"], on_step=True)

    def on_train_epoch_end(self, trainer, pl_module):
        self._t0 = None  # evaluation time is not training time

    def summary(self) -> dict:
        """``words`` and ``train_seconds`` (every step, the first included), ``warmup_seconds``
        (the first step) and ``words_per_sec`` (without it; a run of one step gives that step's
        rate)."""
        words, seconds = self.timed_words, self.seconds
        if seconds <= 0:
            words, seconds = self.warmup_words, self.warmup_seconds
        return {
            "words": int(self.words),
            "train_seconds": self.seconds + self.warmup_seconds,
            "warmup_seconds": self.warmup_seconds,
            "words_per_sec": words / seconds if seconds > 0 else math.nan,
        }


# Lightning logs every log_every_n_steps steps (50 by default): a run of a few dozen steps would
# leave the training curves empty. Unless trainer.log_every_n_steps is given, about this many
# points a run, every step of a short run, and at most every 50 steps.
LOG_POINTS = 50


def log_interval(total_steps: int, points: int = LOG_POINTS) -> int:
    """Steps between logged rows for a run of ``total_steps``: every step up to ``2 * points``
    steps, then ``points`` or more rows, at most 50 steps apart (Lightning's default)."""
    return max(1, min(50, total_steps // points))


class AutoLogInterval(pl.Callback):
    """Sets the trainer's ``log_every_n_steps`` from the run's length (``log_interval``) once the
    data module knows its steps per epoch, before Lightning checks it against them."""

    def setup(self, trainer, pl_module, stage):
        total = trainer.datamodule.steps_per_epoch * max(trainer.max_epochs or 1, 1)
        if trainer.max_steps is not None and trainer.max_steps > 0:
            total = min(total, trainer.max_steps)
        trainer.log_every_n_steps = log_interval(total)


def _finite(value) -> bool:
    return value is not None and math.isfinite(float(value))


def log_to_files(logger: logging.Logger, level: int, msg: str, *args) -> None:
    """Log a record to the log files alone (the ``FileHandler`` of ``logger`` or of a logger it
    propagates to, such as ``ns-train.log``), not to the console, which a progress bar holds."""
    if not logger.isEnabledFor(level):
        return
    record = logger.makeRecord(logger.name, level, __file__, 0, msg, args, None)
    node: logging.Logger | None = logger
    while node is not None:
        for handler in node.handlers:
            if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
                handler.handle(record)
        node = node.parent if node.propagate else None


class ProgressLog(pl.Callback):
    """One log line every ``seconds`` (and at each epoch end), as gensim logs: epoch, percent
    done, words/s (``Throughput``'s), loss and learning rate. ``console=False`` (a progress bar
    holds the terminal) writes the lines to the log files only."""

    def __init__(self, seconds: float = 5.0, console: bool = True):
        self.seconds = seconds
        self.console = console
        self._last = 0.0

    def _line(self, trainer, final: bool = False) -> None:
        steps = trainer.num_training_batches
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        m = trainer.callback_metrics
        loss, rate = m.get("train/loss"), m.get("train/words_per_sec")
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else math.nan
        emit = (
            partial(log.log, logging.INFO)
            if self.console
            else partial(log_to_files, log, logging.INFO)
        )
        emit(
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


def human_rate(words_per_sec) -> str:
    """812,345.6 -> '812k', 1.23e6 -> '1.23M' (words/s as the bar and the summary show it)."""
    if not _finite(words_per_sec):
        return "-"
    value = float(words_per_sec)
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.0f}k"
    return f"{value:.0f}"


class ProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, for a terminal: on stderr (where the app checks for one), showing
    ``loss`` and ``words/s`` (``Throughput``'s), redrawn about ``per_second`` times a second
    whatever the length of a step (and at each epoch's end), and 100 columns wide where the
    terminal reports no size (tqdm then draws nothing at all)."""

    def __init__(self, per_second: float = 5.0):
        super().__init__(refresh_rate=1)
        self.interval = 1.0 / per_second
        self._drawn = 0.0

    def init_train_tqdm(self) -> Tqdm:
        width = _columns(sys.stderr)
        return Tqdm(
            desc=self.train_description,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=width > 0,
            # a terminal of size 0 x 0 (a pseudo-terminal nobody sized): tqdm would hide the bar
            ncols=None if width > 0 else 100,
            nrows=None if width > 0 else 20,
            file=sys.stderr,
            smoothing=0,
            bar_format=self.BAR_FORMAT,
        )

    def on_train_epoch_start(self, trainer, *args) -> None:
        # as Lightning's, with epochs counted from 1 (as the log lines count them) and the new
        # description in place before the bar is redrawn
        bar = self.train_progress_bar
        epoch = f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
        bar.set_description(epoch, refresh=False)
        bar.reset(total=convert_inf(self.total_train_batches))
        bar.initial = 0

    def _should_update(self, current: int, total: int) -> bool:
        now = time.monotonic()
        if not self.is_enabled or (current != total and now - self._drawn < self.interval):
            return False
        self._drawn = now
        return True

    def get_metrics(self, trainer, pl_module) -> dict:
        items = dict(super().get_metrics(trainer, pl_module))
        items.pop("v_num", None)
        loss = items.pop("train/loss", None)
        rate = items.pop("train/words_per_sec", None)
        shown = {}
        if _finite(loss):
            shown["loss"] = f"{float(loss):.4f}"
        if _finite(rate):
            shown["words/s"] = human_rate(rate)
        return {**shown, **items}


def _columns(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


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
