"""One training run from a composed config: checks, data, model, trainer, fit, export, report.

Everything that can be wrong with the configuration (a missing corpus, evaluation file or
checkpoint, a CUDA-only backend on CPU, an engine that is not available) fails here before any
training starts, with a message that names the setting.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import shutil
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from ns_plugins.config import Arch, Backend, DataSource, Engine, GradSync, Optimizer
from ns_plugins.lightning.callbacks import (
    ExportVectors,
    GracefulInterrupt,
    PeriodicEvaluation,
    Throughput,
    WeightAveraging,
    eval_inputs,
    write_json,
)
from ns_plugins.lightning.datamodule import CorpusDataModule
from ns_plugins.lightning.module import SGNSModule

__all__ = ["ConfigError", "check_config", "train", "PLANTED_PURITY_LEARNED"]

log = logging.getLogger(__name__)

# Neighbour purity at which the synthetic corpus's clusters count as learned (chance is about
# 1 / number of clusters).
PLANTED_PURITY_LEARNED = 0.8


class ConfigError(ValueError):
    """A setting that cannot work; raised before training starts."""


def _devices(cfg: DictConfig) -> int:
    return int(cfg.devices if cfg.devices is not None else cfg.device.devices)


def _num_nodes(cfg: DictConfig) -> int:
    return int(cfg.num_nodes if cfg.num_nodes is not None else cfg.device.num_nodes)


def check_config(cfg: DictConfig) -> None:
    """Fail early, naming the setting, for everything that would fail later."""
    missing = OmegaConf.missing_keys(cfg)
    if missing:
        raise ConfigError(f"missing value for {', '.join(sorted(missing))} (give it as key=value)")
    if cfg.data.source is DataSource.text:
        if not cfg.data.path:
            raise ConfigError("data=text needs a corpus: give data.path=/path/to/corpus.txt(.gz)")
        if not Path(cfg.data.path).exists():
            raise ConfigError(f"corpus not found: data.path={cfg.data.path}")
    for key in ("wordsim", "simlex", "analogies"):
        path = cfg.eval[key]
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"evaluation file not found: eval.{key}={path}")
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise ConfigError(f"checkpoint not found: ckpt_path={cfg.ckpt_path}")
    for key in ("vector_size", "epochs", "batch_size", "window", "min_count"):
        if cfg[key] < 1:
            raise ConfigError(f"{key} must be >= 1, got {cfg[key]}")
    if cfg.negative < 0 or cfg.sample < 0:
        raise ConfigError("negative and sample must be >= 0")
    if not 0 <= cfg.min_alpha <= cfg.alpha:
        raise ConfigError(f"need 0 <= min_alpha <= alpha, got {cfg.min_alpha}, {cfg.alpha}")
    if _devices(cfg) < 1 or _num_nodes(cfg) < 1:
        raise ConfigError("devices and num_nodes must be >= 1")
    gpu = cfg.device.accelerator in ("gpu", "cuda")
    if gpu and not torch.cuda.is_available():
        raise ConfigError(
            f"device.accelerator={cfg.device.accelerator} but no CUDA device is visible; "
            "use device=cpu or device=ddp_cpu"
        )
    if cfg.backend.name in (Backend.triton, Backend.cupy) and not gpu:
        raise ConfigError(
            f"backend={cfg.backend.name.value} runs on CUDA only; use device=gpu or device=ddp, "
            "or backend=fused on CPU"
        )
    if cfg.device.grad_sync is GradSync.sparse and cfg.device.process_group_backend == "nccl":
        raise ConfigError(
            "NCCL cannot all-reduce sparse gradients: use device.grad_sync=local_sgd or dense"
        )
    for backend, package in ((Backend.triton, "triton"), (Backend.cupy, "cupy")):
        if cfg.backend.name is backend and importlib.util.find_spec(package) is None:
            raise ConfigError(f"backend={backend.value} needs the {package} package installed")
    if cfg.model.optimizer is Optimizer.sparse_adam and cfg.device.grad_sync is GradSync.dense:
        raise ConfigError("model.optimizer=sparse_adam needs sparse gradients, not grad_sync=dense")
    engine = resolve_engine(cfg)
    if cfg.model.shared_negatives and (engine is not Engine.hogwild or cfg.model.arch is Arch.cbow):
        raise ConfigError(
            "model.shared_negatives=true needs skip-gram on the hogwild engine "
            f"(got model.arch={cfg.model.arch.value}, engine {engine.value})"
        )


def resolve_engine(cfg: DictConfig) -> Engine:
    engine = cfg.model.engine
    if engine is Engine.batched:
        return engine
    one_cpu = cfg.device.accelerator == "cpu" and _devices(cfg) * _num_nodes(cfg) == 1
    available = importlib.util.find_spec("numba") is not None
    if engine is Engine.auto:
        return Engine.hogwild if one_cpu and available else Engine.batched
    if not one_cpu:
        raise ConfigError(
            "model.engine=hogwild runs in one CPU process (its threads share the weights); "
            "use device=cpu, or model.engine=batched"
        )
    if not available:
        raise ConfigError("model.engine=hogwild needs numba (pip install numba)")
    return engine


def _strategy(cfg: DictConfig):
    """The Lightning strategy for ``device.strategy`` and ``device.grad_sync``.

    Gradient sync across ranks, by ``device.grad_sync``:

    * ``sparse``: the embeddings are ``nn.Embedding(sparse=True)`` and DDP all-reduces their sparse
      gradients (only the touched rows travel). gloo supports this; NCCL does not.
    * ``dense``: dense embedding gradients, all-reduced by DDP: 2 x V x d floats every step,
      whatever the batch touched. Exact synchronous SGD on NCCL, but the traffic grows with V.
    * ``local_sgd`` (the NCCL default): every rank trains on its own shard with no gradient
      traffic (DDP gets a no-op communication hook) and all ranks average their weights every
      ``device.average_every`` steps and at the end: 2 x V x d floats per ``average_every`` steps.
    """
    name = cfg.device.strategy
    if name != "ddp":
        return name
    from pytorch_lightning.strategies import DDPStrategy

    kwargs = {"process_group_backend": cfg.device.process_group_backend}
    if cfg.device.grad_sync is GradSync.local_sgd:
        from torch.distributed.algorithms.ddp_comm_hooks.debugging_hooks import noop_hook

        kwargs["ddp_comm_hook"] = noop_hook  # gradients stay local; WeightAveraging syncs
    return DDPStrategy(**kwargs)


def build(cfg: DictConfig, run_dir: Path, extra_callbacks=()):
    """(datamodule, module, trainer, callbacks dict) for ``cfg``, writing into ``run_dir``."""
    data = cfg.data
    engine = resolve_engine(cfg)
    cache = Path(data.cache_dir) if data.cache_dir else run_dir / "data"
    dm = CorpusDataModule(
        source=data.source,
        path=data.path,
        cache_dir=cache,
        arch=cfg.model.arch,
        min_count=cfg.min_count,
        max_vocab_size=data.max_vocab_size,
        window=cfg.window,
        sample=cfg.sample,
        shrink_windows=cfg.shrink_windows,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        num_workers=data.num_workers,
        hogwild_chunk_words=cfg.model.chunk_words if engine is Engine.hogwild else None,
        synthetic_seed=data.synthetic_seed,
        synthetic_sentences=data.synthetic_sentences,
    )
    model = SGNSModule(
        counts=None,
        vector_size=cfg.vector_size,
        negative=cfg.negative,
        ns_exponent=cfg.ns_exponent,
        alpha=cfg.alpha,
        min_alpha=cfg.min_alpha,
        backend=cfg.backend.name,
        reduce=cfg.reduce.mode,
        arch=cfg.model.arch,
        optimizer=cfg.model.optimizer,
        engine=engine,
        cbow_mean=cfg.model.cbow_mean,
        hogwild_threads=cfg.workers,
        shared_negatives=cfg.model.shared_negatives,
        sparse=cfg.device.grad_sync is not GradSync.dense,
        seed=cfg.seed,
    )
    # Our shards split the data across workers themselves, so their length is exact.
    warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")
    ckpt_dir = run_dir / "checkpoints"
    cbs = {"throughput": Throughput()}
    if cfg.device.grad_sync is GradSync.local_sgd:
        cbs["averaging"] = WeightAveraging(cfg.device.average_every)
    cbs["evaluation"] = PeriodicEvaluation(
        eval_inputs(cfg.eval), cfg.eval.queries, cfg.eval.k, cfg.eval.every_n_steps
    )
    cbs["checkpoint"] = pl.callbacks.ModelCheckpoint(
        dirpath=ckpt_dir,
        save_last=True,
        save_top_k=0,
        every_n_train_steps=cfg.trainer.checkpoint_every_n_steps or None,
    )
    cbs["interrupt"] = GracefulInterrupt(ckpt_dir)
    cbs["export"] = ExportVectors(run_dir)
    if cfg.trainer.enable_progress_bar:
        cbs["progress"] = pl.callbacks.TQDMProgressBar(refresh_rate=10)
    trainer = pl.Trainer(
        accelerator=cfg.device.accelerator,
        strategy=_strategy(cfg),
        devices=_devices(cfg),
        num_nodes=_num_nodes(cfg),
        precision=cfg.device.precision,
        max_epochs=cfg.epochs,
        max_steps=cfg.trainer.max_steps,
        fast_dev_run=cfg.trainer.fast_dev_run,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        enable_progress_bar=cfg.trainer.enable_progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        logger=_loggers(run_dir),
        callbacks=[*extra_callbacks, *cbs.values()],
        default_root_dir=run_dir,
    )
    return dm, model, trainer, cbs


def _loggers(run_dir: Path) -> list:
    """CSV always (the report reads it); TensorBoard as well when it is installed."""
    loggers = [pl.loggers.CSVLogger(run_dir, name="csv", version="")]
    if any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        loggers.append(pl.loggers.TensorBoardLogger(run_dir, name="tensorboard", version=""))
    return loggers


def train(cfg: DictConfig, run_dir, extra_callbacks=()) -> dict:
    """Train as ``cfg`` says, write the run directory, and return the final metrics (rank 0).

    ``extra_callbacks`` run before the built-in ones (so a callback that stops training is seen
    by the interrupt handler in the same step)."""
    run_dir = Path(run_dir)
    check_config(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm, model, trainer, cbs = build(cfg, run_dir, extra_callbacks)
    t0 = time.perf_counter()
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=cfg.ckpt_path)
    finally:
        # gloo can abort at interpreter exit while a process group is alive.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    interrupt = cbs["interrupt"]
    _write_rank_summary(run_dir, trainer, model, dm)
    if not trainer.is_global_zero:
        return {}
    metrics = _final_metrics(cfg, trainer, cbs, time.perf_counter() - t0)
    truth = dm.cache_dir / "ground_truth.json"
    if truth.is_file() and truth.resolve() != (run_dir / "ground_truth.json").resolve():
        shutil.copyfile(truth, run_dir / "ground_truth.json")
    write_json(run_dir / "metrics.json", metrics)
    _report(run_dir)
    if interrupt.received is not None:
        log.warning(
            "interrupted by signal %d; resume with ckpt_path=%s",
            interrupt.received,
            interrupt.ckpt_path,
        )
    elif "planted_purity" in metrics["eval"]:
        verdict = "learned" if metrics["planted_learned"] else "NOT learned"
        log.info(
            "planted structure %s: neighbour purity %.3f (threshold %.2f)",
            verdict,
            metrics["eval"]["planted_purity"],
            PLANTED_PURITY_LEARNED,
        )
    return metrics


def _final_metrics(cfg, trainer, cbs, seconds: float) -> dict:
    evaluation = cbs["evaluation"]
    if not evaluation.scores:  # no epoch ended (interrupted or fast_dev_run): score now
        evaluation.evaluate(trainer, trainer.lightning_module)
    scores = {
        k: (v if not isinstance(v, float) or math.isfinite(v) else None)
        for k, v in evaluation.scores.items()
    }
    loss = trainer.callback_metrics.get("train/loss")
    interrupt = cbs["interrupt"]
    metrics = {
        "global_step": trainer.global_step,
        "epochs_completed": trainer.current_epoch,
        "final_loss": float(loss) if loss is not None else None,
        "wall_seconds": seconds,
        **cbs["throughput"].summary(),
        "eval": scores,
        "neighbours": evaluation.neighbours,
        "interrupted": interrupt.received is not None,
        "interrupt_signal": interrupt.received,
        "interrupt_checkpoint": str(interrupt.ckpt_path) if interrupt.ckpt_path else None,
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
    }
    if "planted_purity" in scores and scores["planted_purity"] is not None:
        metrics["planted_learned"] = scores["planted_purity"] >= PLANTED_PURITY_LEARNED
    return metrics


def _write_rank_summary(run_dir: Path, trainer, model, dm) -> None:
    """ranks/rank{r}.json: steps, a checksum of the final weights, and this rank's shard."""
    import hashlib

    h = hashlib.sha256()
    for p in (model.in_embed.weight, model.out_embed.weight):
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    summary = {
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "steps_per_epoch": dm.steps_per_epoch,
        "weights_sha256": h.hexdigest(),
        "shard": dm.shard_summary(),
    }
    write_json(run_dir / "ranks" / f"rank{trainer.global_rank}.json", summary)


def _report(run_dir: Path) -> None:
    try:
        from ns_plugins.report import build_report
    except ImportError:
        return
    try:
        build_report(run_dir)
    except Exception as err:  # noqa: BLE001 - a report problem must not lose the trained run
        log.warning("report not written: %s", err)
