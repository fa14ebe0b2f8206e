"""How a training run reports its progress: words/s (defined once, in ``Throughput``), the
logging cadence (``log_interval``, ``AutoLogInterval``), the log lines (``ProgressLog``,
``log_to_files``), the terminal bar (``ProgressBar``) and the figures of the closing summary
(``Throughput.summary``, ``human_rate``).

Separate from the other callbacks: these only watch the run; none of them changes what it trains,
scores or saves.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from functools import partial

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm, convert_inf

__all__ = [
    "AutoLogInterval",
    "ProgressBar",
    "ProgressLog",
    "Throughput",
    "human_rate",
    "log_interval",
    "log_to_files",
]


log = logging.getLogger("ns_plugins.train")


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
