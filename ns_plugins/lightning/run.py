"""A batched training run through Lightning: data module, model, trainer, fit, export, report.

``ns_plugins.runs.train`` checks the config and calls this for every run that is not hogwild.
"""

from __future__ import annotations

import importlib.util
import logging
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from ns_plugins.config import GradSync
from ns_plugins.lightning.callbacks import (
    ExportVectors,
    GracefulInterrupt,
    PeriodicEvaluation,
    Throughput,
    WeightAveraging,
)
from ns_plugins.lightning.datamodule import CorpusDataModule
from ns_plugins.lightning.module import SGNSModule
from ns_plugins.runs import (
    RunEvaluator,
    cache_dir_of,
    config_dict,
    devices,
    eval_inputs,
    finish_run,
    num_nodes,
    write_json,
)

__all__ = ["build", "train"]

log = logging.getLogger(__name__)


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
    dm = CorpusDataModule(
        source=data.source,
        path=data.path,
        cache_dir=cache_dir_of(cfg, run_dir),
        arch=cfg.model.arch,
        min_count=cfg.min_count,
        max_vocab_size=data.max_vocab_size,
        max_final_vocab=data.max_final_vocab,
        tokenizer=data.get("tokenizer"),  # a choice the config may not offer yet
        vocab_file=data.vocab_file,
        window=cfg.window,
        sample=cfg.sample,
        shrink_windows=cfg.shrink_windows,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        num_workers=data.num_workers,
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
        cbow_mean=cfg.model.cbow_mean,
        init_scale=cfg.model.init_scale,
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
        RunEvaluator(eval_inputs(cfg.eval), cfg.eval.queries, cfg.eval.k), cfg.eval.every_n_steps
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
        devices=devices(cfg),
        num_nodes=num_nodes(cfg),
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


def train(cfg: DictConfig, run_dir: Path, extra_callbacks=()) -> dict:
    """Train as ``cfg`` says (already checked), write the run directory, and return the final
    metrics (rank 0). ``extra_callbacks`` run before the built-in ones (so a callback that stops
    training is seen by the interrupt handler in the same step)."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm, model, trainer, cbs = build(cfg, run_dir, extra_callbacks)
    t0 = time.perf_counter()
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=cfg.ckpt_path)
    finally:
        # gloo can abort at interpreter exit while a process group is alive.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    _write_rank_summary(run_dir, trainer, model, dm)
    if not trainer.is_global_zero:
        return {}
    metrics = _final_metrics(cfg, trainer, cbs, time.perf_counter() - t0)
    finish_run(cfg, run_dir, metrics, dm.cache_dir)
    return metrics


def _final_metrics(cfg, trainer, cbs, seconds: float) -> dict:
    evaluation = cbs["evaluation"]
    if not evaluation.evaluator.scores:  # no epoch ended (interrupted or fast_dev_run): score now
        evaluation.evaluate(trainer, trainer.lightning_module)
    loss = trainer.callback_metrics.get("train/loss")
    interrupt = cbs["interrupt"]
    return {
        "engine": "batched",
        "global_step": trainer.global_step,
        "epochs_completed": trainer.current_epoch,
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
