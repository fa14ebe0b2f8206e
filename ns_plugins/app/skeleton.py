"""The run skeleton, one for every engine and device: data module, engine module, trainer, fit,
then export, metrics and report. Lightning does the loop, checkpoints, resume, loggers, callbacks
and progress; the engines (``chunk``: corpus chunks trained in place; ``batched``: pairs through
the loss op) only train.

``ns_plugins.app.launch.train`` checks the config and calls ``train`` here.
"""

from __future__ import annotations

import csv
import gc
import logging
import math
import os
import pickle
import sys
import time
import warnings
import zipfile
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from lightning_fabric.loggers.logger import rank_zero_experiment
from lightning_fabric.plugins import TorchCheckpointIO
from omegaconf import DictConfig
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from ns_plugins.app.callbacks import PeriodicEvaluation
from ns_plugins.app.checkpoints import GracefulInterrupt, RunCheckpoint
from ns_plugins.app.checks import devices, num_nodes
from ns_plugins.app.config import Engine, GradSync, engine_of
from ns_plugins.app.datamodule import CorpusDataModule
from ns_plugins.app.evaluation import RunEvaluator, eval_inputs
from ns_plugins.app.local_sgd import AveragingDDPStrategy, WeightAveraging
from ns_plugins.app.outputs import config_dict, export_run, finish_run, write_json, writing
from ns_plugins.app.progress import AutoLogInterval, ProgressBar, ProgressLog, Throughput
from ns_plugins.app.recipe import CorpusRecipe, cache_dir_of
from ns_plugins.errors import UsageError

__all__ = ["build", "train"]

log = logging.getLogger(__name__)


def _strategy(cfg: DictConfig):
    """The Lightning strategy for ``device.strategy`` and ``device.grad_sync``.

    Gradient sync across ranks, by ``device.grad_sync``:

    * ``sparse``: the embeddings are ``nn.Embedding(sparse=True)`` and DDP all-reduces their sparse
      gradients (only the touched rows travel). gloo supports this; NCCL does not.
    * ``dense``: dense embedding gradients, all-reduced by DDP: 2 x V x d floats every step,
      whatever the batch touched. Exact synchronous SGD on NCCL, but the traffic grows with V.
    * ``local_sgd`` (the default, and the chunk engine's only mode): every rank trains on its own
      shard with no gradient traffic and all ranks average their weights every
      ``device.average_every`` steps and at the end: 2 x V x d floats per ``average_every`` steps.
      Nothing is all-reduced per step, so the module is not wrapped in DDP at all.
    """
    name = cfg.device.strategy
    if name != "ddp":
        return name
    from pytorch_lightning.strategies import DDPStrategy

    kwargs = {"process_group_backend": cfg.device.process_group_backend}
    if cfg.device.grad_sync is GradSync.local_sgd:
        return AveragingDDPStrategy(**kwargs)  # gradients stay local; WeightAveraging syncs
    return DDPStrategy(**kwargs)


# Lightning's notices that say nothing about this run, or that a user cannot act on: the
# accelerator inventory, an advertising tip, the distributed banner, "fit stopped" (all INFO on
# these loggers; their warnings still show), and warnings raised inside Lightning and torch.
_QUIET_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning_fabric.utilities.distributed",
)
_IGNORED_WARNINGS = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),  # Lightning's _pytree
    (r"Sparse invariant checks are implicitly disabled", UserWarning),  # torch, sparse gradients
    (r"Your `IterableDataset` has `__len__` defined", UserWarning),  # our shards' length is exact
    # a resumed run writes into its own run directory, as the app asks; last.ckpt is written anew
    (r"The dirpath has changed from", UserWarning),
)


def quiet_lightning() -> None:
    """Leave Lightning's notices and the warnings a user can do nothing about off the console."""
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message, category in _IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def build(cfg: DictConfig, run_dir: Path, extra_callbacks=(), recipe: CorpusRecipe | None = None):
    """(datamodule, module, trainer, callbacks dict) for ``cfg``, writing into ``run_dir``;
    ``recipe``: the corpus recipe the launcher made from ``cfg`` (made here when not given)."""
    quiet_lightning()
    data = cfg.data
    chunk = engine_of(cfg) is Engine.chunk
    dm = CorpusDataModule(
        recipe or CorpusRecipe.from_config(cfg),
        cache_dir=cache_dir_of(cfg, run_dir),
        arch=cfg.model.arch,
        window=cfg.window,
        sample=cfg.sample,
        shrink_windows=cfg.shrink_windows,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        num_workers=data.num_workers,
        chunk_words=cfg.model.chunk_words if chunk else None,
        init_vectors=cfg.init_vectors,
        init_scale=cfg.model.init_scale,
    )
    # the engine group's choice (config.ChunkEngineConfig / BatchedEngineConfig); the batched
    # engine's gradient layout follows device.grad_sync
    extra = {} if chunk else {"sparse": cfg.device.grad_sync is not GradSync.dense}
    model = instantiate(cfg.engine, **extra)
    ckpt_dir = run_dir / "checkpoints"
    cbs = {"throughput": Throughput()}
    if cfg.device.grad_sync is GradSync.local_sgd:
        cbs["averaging"] = WeightAveraging(cfg.device.average_every, cfg.device.merge.value)
    cbs["evaluation"] = PeriodicEvaluation(
        RunEvaluator(eval_inputs(cfg.eval), cfg.eval.queries, cfg.eval.k),
        cfg.eval.every_n_steps,
        cfg.eval.analogies_each_epoch,
    )
    merge = cbs["averaging"].merge if "averaging" in cbs else None
    cbs["checkpoint"] = RunCheckpoint(
        dirpath=ckpt_dir,
        save_last=True,
        save_top_k=0,
        enable_version_counter=False,  # one last.ckpt, overwritten (not last-v1.ckpt beside it)
        every_n_train_steps=cfg.trainer.checkpoint_every_n_steps or None,
        before_save=merge,
    )
    cbs["interrupt"] = GracefulInterrupt(ckpt_dir, before_save=merge)
    if cfg.trainer.log_every_n_steps is None:
        cbs["log_interval"] = AutoLogInterval()
    # A bar on a terminal; one line per interval, as gensim logs, in ns-train.log (and on the
    # console when it is not a terminal).
    bar = cfg.trainer.enable_progress_bar and sys.stderr.isatty()
    if cfg.trainer.enable_progress_bar:
        cbs["progress_log"] = ProgressLog(cfg.trainer.progress_seconds, console=not bar)
    if bar:
        cbs["progress"] = ProgressBar()
    configured = [instantiate(c) for c in (cfg.callbacks or {}).values() if c is not None]
    trainer = pl.Trainer(
        accelerator=cfg.device.accelerator,
        strategy=_strategy(cfg),
        devices=devices(cfg),
        num_nodes=num_nodes(cfg),
        precision=cfg.device.precision,
        max_epochs=cfg.epochs,
        max_steps=cfg.trainer.max_steps,
        fast_dev_run=cfg.trainer.fast_dev_run,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        enable_progress_bar=bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        logger=_loggers(cfg, run_dir),
        plugins=[StreamingCheckpointIO()],
        callbacks=[*extra_callbacks, *configured, *cbs.values()],
        default_root_dir=run_dir,
    )
    return dm, model, trainer, cbs


class StreamingCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint straight into ``<name>.part`` and renames it into place. Lightning's own
    atomic save serialises the whole checkpoint into memory first, which doubles a run's peak
    memory at the first checkpoint (2.4 GB more at V = 1M, d = 300). A failed write (a full disk)
    leaves neither a partial checkpoint nor a ``.part`` file, and raises the OS error naming the
    checkpoint."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("storage_options are not supported by StreamingCheckpointIO")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with writing(path) as tmp:
            # through a Python file: a failed write raises its OSError (ENOSPC, EDQUOT), where
            # torch's own file writer raises a RuntimeError that names no cause
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
            os.replace(tmp, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        """torch.load's errors on a damaged file (a zip record that does not read, a tensor whose
        shape does not fit its storage, a truncated pickle) as one line naming ``path``."""
        kwargs = {"weights_only": weights_only}
        if map_location is not None:
            kwargs["map_location"] = map_location
        try:
            return super().load_checkpoint(path, **kwargs)
        except (RuntimeError, EOFError, ValueError, IndexError, zipfile.BadZipFile) as err:
            if isinstance(err, UsageError):
                raise
            raise UsageError(
                f"ckpt_path={path}: not a readable checkpoint ({_first_line(err)})"
            ) from None


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def _loggers(cfg: DictConfig, run_dir: Path) -> list:
    """The ``logger`` group's Lightning loggers (``_target_`` entries; ``save_dir`` defaults to the
    run directory), plus the CSV logger the report reads when none of them is one."""
    resumed = cfg.ckpt_path is not None
    loggers = []
    for conf in (cfg.logger or {}).values():
        if conf is None:
            continue
        kwargs = {} if conf.get("save_dir") else {"save_dir": str(run_dir)}
        if conf.get("_target_") in _CSV_LOGGERS:  # a resumed run's curves continue in its file
            kwargs.update(_target_=f"{__name__}.ContinuedCSVLogger", resumed=resumed)
        loggers.append(instantiate(conf, **kwargs))
    if not any(isinstance(lg, pl.loggers.CSVLogger) for lg in loggers):
        loggers.insert(0, ContinuedCSVLogger(run_dir, name="csv", version="", resumed=resumed))
    return loggers


_CSV_LOGGERS = ("pytorch_lightning.loggers.CSVLogger", "lightning.pytorch.loggers.CSVLogger",
                "pytorch_lightning.loggers.csv_logs.CSVLogger")  # fmt: skip


class ContinuedCSVLogger(pl.loggers.CSVLogger):
    """Lightning's CSV logger; with ``resumed=True`` the rows already in ``metrics.csv`` stay (a
    resumed run's curves continue) where Lightning's logger deletes the file. Rows of steps the
    resumed run trains again (written after its checkpoint) give way to the new ones. A failed
    write (a full disk) names the file."""

    def __init__(self, *args, resumed: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.resumed = resumed

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuedWriter(log_dir=self.log_dir, keep=self.resumed)
        return self._experiment


class _ContinuedWriter(ExperimentWriter):
    def __init__(self, log_dir: str, keep: bool = False) -> None:
        self._keep = keep
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        self._earlier = None  # (header, rows) of the file there, kept until the first save
        if not self._keep:
            super()._check_log_dir_exists()
        elif self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                reader = csv.DictReader(f)
                self._earlier = (list(reader.fieldnames or ()), list(reader))

    def save(self) -> None:
        try:
            self._save()
        except OSError as err:  # a write names no file
            if not err.errno or err.filename is not None:
                raise
            raise OSError(err.errno, err.strerror, self.metrics_file_path) from err

    def _save(self) -> None:
        if self._earlier is not None and self.metrics:
            header, rows = self._earlier
            self._earlier = None
            first = min(m["step"] for m in self.metrics)
            rows = [r for r in rows if _step(r) < first]
            self.metrics_keys = sorted(set(header))
            with self._fs.open(self.metrics_file_path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(rows)
        super().save()


def _step(row: dict) -> float:
    try:
        return float(row.get("step") or "nan")
    except ValueError:
        return math.nan


def train(cfg: DictConfig, run_dir: Path, extra_callbacks=(), recipe=None) -> dict:
    """Train as ``cfg`` says (already checked), write the run directory, and return the final
    metrics (rank 0). ``extra_callbacks`` run before the built-in ones (so a callback that stops
    training is seen by the interrupt handler in the same step)."""
    t0 = time.perf_counter()  # wall_seconds counts vocabulary and encoding, as gensim's does
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm, model, trainer, cbs = build(cfg, run_dir, extra_callbacks, recipe)
    cbs["evaluation"].evaluator.load()  # a bad evaluation file fails now, not after an epoch
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=cfg.ckpt_path)
    except pickle.UnpicklingError as err:  # torch.load(weights_only=True) met foreign objects
        first = str(err).strip().splitlines()[0]
        raise UsageError(f"ckpt_path={cfg.ckpt_path}: refused to load ({first})") from None
    except RuntimeError as err:  # nn.Module.load_state_dict: tensors that do not fit the model
        if cfg.ckpt_path is None or not str(err).startswith("Error(s) in loading state_dict"):
            raise
        detail = str(err).strip().splitlines()[1:] or [str(err)]
        raise UsageError(
            f"ckpt_path={cfg.ckpt_path}: its weights do not fit this run ({detail[0].strip()})"
        ) from None
    finally:
        # gloo can abort at interpreter exit while a process group is alive.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    _write_rank_summary(run_dir, trainer, model, dm)
    if not trainer.is_global_zero:
        return {}
    # After fit, not in a callback: a run that stops before any step still exports its vectors.
    export_run(run_dir, list(dm.vocab.words), model.vectors(), dm.vocab.counts)
    metrics = _final_metrics(cfg, trainer, cbs, time.perf_counter() - t0)
    truth = dm.ground_truth
    # The weights and the corpus go before the report (matplotlib): the run's peak memory is
    # training's, not training's plus the report's.
    del dm, model, trainer, cbs
    gc.collect()
    finish_run(cfg, run_dir, metrics, truth)
    return metrics


def _final_metrics(cfg, trainer, cbs, seconds: float) -> dict:
    evaluation = cbs["evaluation"]
    # stopped between evaluations, or the last one left the analogies out: score what is exported
    if evaluation.step != trainer.global_step or not evaluation.evaluator.complete:
        evaluation.evaluate(trainer, trainer.lightning_module)
    loss = trainer.callback_metrics.get("train/loss")
    interrupt = cbs["interrupt"]
    return {
        "engine": engine_of(cfg).value,
        "global_step": trainer.global_step,
        "epochs_completed": _epochs_completed(trainer),
        "final_loss": float(loss) if loss is not None else None,
        "wall_seconds": seconds,
        **cbs["throughput"].summary(),
        "eval": evaluation.evaluator.finite_scores(),
        "neighbours": evaluation.evaluator.neighbours,
        "interrupted": interrupt.received is not None,
        "interrupt_signal": interrupt.received,
        "interrupt_checkpoint": str(interrupt.ckpt_path) if interrupt.ckpt_path else None,
        "config": config_dict(cfg),
    }


def _epochs_completed(trainer) -> int:
    """Whole epochs trained: Lightning counts an epoch that a stop cut short as done too."""
    per_epoch = trainer.num_training_batches
    if isinstance(per_epoch, int) and per_epoch > 0:
        return trainer.global_step // per_epoch
    return trainer.current_epoch


def _write_rank_summary(run_dir: Path, trainer, model, dm) -> None:
    """ranks/rank{r}.json: steps, a checksum of the final weights, and this rank's shard."""
    import hashlib

    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().contiguous().numpy())  # the buffer itself, not a copy
    summary = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "steps_per_epoch": dm.steps_per_epoch,
        "weights_sha256": h.hexdigest(),
        "shard": dm.shard_summary(),
    }
    write_json(run_dir / "ranks" / f"rank{trainer.global_rank}.json", summary)
