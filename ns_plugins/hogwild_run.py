"""A training run on the hogwild engine: one CPU process whose numba threads update the weights in
place with word2vec.c's rule. No torch and no Lightning are imported, so the process stays small.

The run directory is the one a Lightning run writes (vectors, vocabulary, ``csv/metrics.csv``,
``metrics.json``, report); checkpoints are ``checkpoints/last.npz`` (and ``interrupted.npz`` after
SIGINT/SIGTERM), which ``ckpt_path=`` resumes. A step is one chunk of about ``model.chunk_words``
corpus words; its randomness is keyed by (seed, step), so with ``workers=1`` a resumed run ends
with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import logging
import signal
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from ns_plugins.config import Arch
from ns_plugins.runs import (
    ConfigError,
    RunEvaluator,
    cache_dir_of,
    config_dict,
    eval_inputs,
    export_run,
    finish_run,
    linear_decay,
    open_run_data,
    prepare_run_data_for,
)

__all__ = ["train"]

log = logging.getLogger(__name__)

_CKPT_FORMAT = "ns_plugins.hogwild_checkpoint/1"


class _Interrupt:
    """SIGINT / SIGTERM only set a flag; the loop saves a checkpoint and stops after the step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _MetricsLog:
    """Rows of ``{step, epoch, metric: value}`` written as Lightning's CSVLogger writes them."""

    def __init__(self, path: Path, rows: list | None = None):
        self.path = path
        self.rows: list[dict] = list(rows or [])

    def log(self, step: int, epoch: int, values: dict) -> None:
        self.rows.append({"epoch": epoch, "step": step, **values})

    def write(self) -> None:
        keys = sorted({k for row in self.rows for k in row} - {"epoch", "step"})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".part")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, ["epoch", "step", *keys])
            writer.writeheader()
            writer.writerows(self.rows)
        tmp.replace(self.path)


def _save_checkpoint(path: Path, W_in, W_out, step: int, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        np.savez(
            f,
            format=_CKPT_FORMAT,
            in_embed=W_in,
            out_embed=W_out,
            global_step=step,
            metrics=np.array(json.dumps(rows)),  # the CSV rows so far, for the report's curves
        )
    tmp.replace(path)  # a crash mid-write never leaves half a checkpoint
    return path


def _load_checkpoint(path, V: int, d: int):
    """(W_in, W_out, global step, metric rows) from a hogwild checkpoint of a V x d run."""
    try:
        with np.load(path, allow_pickle=False) as ck:
            if str(ck["format"]) != _CKPT_FORMAT:
                raise KeyError("format")
            W_in, W_out = ck["in_embed"], ck["out_embed"]
            step = int(ck["global_step"])
            rows = json.loads(str(ck["metrics"]))
    except (KeyError, ValueError, OSError) as err:
        raise ConfigError(f"ckpt_path={path} is not a hogwild checkpoint ({err})") from err
    if W_in.shape != (V, d):
        raise ConfigError(
            f"ckpt_path={path} holds {W_in.shape[0]} x {W_in.shape[1]} vectors, this run has "
            f"{V} words x vector_size {d} (another corpus or settings?)"
        )
    return np.ascontiguousarray(W_in), np.ascontiguousarray(W_out), step, rows


def _initial_weights(V: int, d: int, seed: int, scale: float):
    """Input vectors uniform in [-scale/d, scale/d) (word2vec.c: scale 0.5), output zeros; built
    in place, with no V x d temporaries."""
    W_in = np.random.default_rng(seed).random((V, d), dtype=np.float32)
    W_in -= 0.5
    W_in *= 2 * scale / d
    return W_in, np.zeros((V, d), dtype=np.float32)


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=0.5)


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Train as ``cfg`` says (already checked), write ``run_dir``, return the final metrics."""
    t_start = time.perf_counter()  # wall_seconds covers vocabulary and encoding, as gensim's does
    cache = cache_dir_of(cfg, run_dir)
    prepare_run_data_for(cfg, cache)
    # The weights and the corpus are gone when _train returns: the report that follows (matplotlib)
    # then does not add to the process's peak memory.
    metrics = _train(cfg, run_dir, cache, t_start)
    finish_run(cfg, run_dir, metrics, cache)
    return metrics


def _train(cfg: DictConfig, run_dir: Path, cache: Path, t_start: float) -> dict:
    from ns_plugins.data import keep_probability, negative_sampler
    from ns_plugins.kernels.hogwild import job_bounds, train_chunk

    corpus, truth = open_run_data(cache)
    vocab = corpus.vocab
    V, d = len(vocab), int(cfg.vector_size)
    if V < 2:
        raise ConfigError(f"the vocabulary has {V} word(s); training needs at least 2")
    keep = keep_probability(corpus.counts, cfg.sample).astype(np.float32)
    noise = negative_sampler(corpus.counts, cfg.ns_exponent)
    offsets = np.asarray(corpus.offsets)
    cuts = job_bounds(offsets, int(cfg.model.chunk_words))
    chunks = [(int(a), int(b)) for a, b in zip([0, *cuts[:-1]], cuts) if b > a]
    per_epoch = len(chunks)
    total = per_epoch * int(cfg.epochs)
    if cfg.trainer.max_steps is not None and cfg.trainer.max_steps >= 0:
        total = min(total, int(cfg.trainer.max_steps))
    if cfg.trainer.fast_dev_run:
        total = 1
    words_per_step = corpus.raw_words / per_epoch

    metrics_log = _MetricsLog(run_dir / "csv" / "metrics.csv")
    if cfg.ckpt_path is not None:
        W_in, W_out, step, rows = _load_checkpoint(cfg.ckpt_path, V, d)
        metrics_log.rows = [r for r in rows if r["step"] <= step]
        log.info("resuming from %s at step %d", cfg.ckpt_path, step)
    else:
        W_in, W_out = _initial_weights(V, d, cfg.seed, cfg.model.init_scale)
        step = 0
    evaluator = RunEvaluator(eval_inputs(cfg.eval), cfg.eval.queries, cfg.eval.k)
    ckpt_dir = run_dir / "checkpoints"
    every_ckpt = int(cfg.trainer.checkpoint_every_n_steps or 0)
    every_log = max(int(cfg.trainer.log_every_n_steps), 1)
    every_eval = int(cfg.eval.every_n_steps or 0)
    words_done, train_seconds, loss = 0.0, 0.0, None
    window_t, window_words, rate = time.perf_counter(), 0.0, float("nan")
    interrupt_ckpt = None

    def evaluate(at_step: int) -> None:
        scores = evaluator.evaluate(vocab.words, W_in, truth)
        finite = {f"eval/{k}": float(v) for k, v in scores.items() if np.isfinite(v)}
        if finite:
            metrics_log.log(at_step, max(at_step - 1, 0) // per_epoch, finite)

    bar = _progress(cfg.trainer.enable_progress_bar and not cfg.trainer.fast_dev_run, total, step)
    with _Interrupt() as interrupt:
        while step < total:
            epoch, i = divmod(step, per_epoch)
            s0, s1 = chunks[i]
            t0 = time.perf_counter()
            stats = train_chunk(
                corpus.ids,
                np.ascontiguousarray(offsets[s0 : s1 + 1]),
                W_in,
                W_out,
                keep,
                noise.prob,
                noise.alias,
                int(cfg.window),
                int(cfg.negative),
                linear_decay(step, total, cfg.alpha, cfg.min_alpha),
                linear_decay(step + 1, total, cfg.alpha, cfg.min_alpha),
                seed=(cfg.seed * 0x9E3779B1 + step) % (2**63),
                shrink_windows=cfg.shrink_windows,
                cbow=cfg.model.arch is Arch.cbow,
                shared_negatives=cfg.model.shared_negatives,
                workers=int(cfg.workers),
            )
            now = time.perf_counter()
            train_seconds += now - t0
            step += 1
            words_done += words_per_step
            window_words += words_per_step
            loss = stats.loss_sum / max(stats.n_pairs, 1)
            if now - window_t >= 0.5 or step == total:
                rate, window_t, window_words = window_words / (now - window_t), now, 0.0
            if step % every_log == 0 or step == total:
                lr = linear_decay(step, total, cfg.alpha, cfg.min_alpha)
                metrics_log.log(
                    step,
                    epoch,
                    {"train/loss": loss, "train/words_per_sec": rate, "train/lr": lr},
                )
            if bar is not None:
                bar.set_postfix(epoch=epoch, loss=f"{loss:.3f}", words_s=f"{rate:,.0f}")
                bar.update(1)
            if (every_eval and step % every_eval == 0) or step % per_epoch == 0:
                evaluate(step)
                metrics_log.write()  # curves on disk while a long run goes on
                window_t = time.perf_counter()  # evaluation time is not training time
            if (every_ckpt and step % every_ckpt == 0) or step % per_epoch == 0:
                # at each epoch end too, as Lightning's ModelCheckpoint does by default
                _save_checkpoint(ckpt_dir / "last.npz", W_in, W_out, step, metrics_log.rows)
            if interrupt.received is not None:
                interrupt_ckpt = _save_checkpoint(
                    ckpt_dir / "interrupted.npz", W_in, W_out, step, metrics_log.rows
                )
                break
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t_start
    if not cfg.trainer.fast_dev_run:
        _save_checkpoint(ckpt_dir / "last.npz", W_in, W_out, step, metrics_log.rows)
    if not evaluator.scores:  # no epoch ended (interrupted or fast_dev_run): score now
        evaluate(step)
    metrics_log.write()
    export_run(run_dir, vocab.words, W_in, vocab.counts)
    return {
        "engine": "hogwild",
        "global_step": step,
        "epochs_completed": step // per_epoch,
        "final_loss": loss,
        "wall_seconds": seconds,
        "words": int(words_done),
        "train_seconds": train_seconds,
        "words_per_sec": words_done / train_seconds if train_seconds > 0 else float("nan"),
        "eval": evaluator.finite_scores(),
        "neighbours": evaluator.neighbours,
        "interrupted": interrupt.received is not None,
        "interrupt_signal": interrupt.received,
        "interrupt_checkpoint": str(interrupt_ckpt) if interrupt_ckpt else None,
        "config": config_dict(cfg),
    }
