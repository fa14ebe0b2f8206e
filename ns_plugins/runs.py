"""The run layer's pieces that need neither torch nor Lightning: config checks, the run's corpus,
initial weights, evaluation, export, metrics files and the report; and ``train``, the entry point.

Every run, on every engine and device, goes through one skeleton in ``ns_plugins.lightning.run``
(run directory, interrupt -> checkpoint -> resume, loggers, evaluation cadence, export, report);
the engines (``ns_plugins.lightning.chunk`` and the pairs engine in ``ns_plugins.lightning.module``)
only train. This module is imported by both and imports neither.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import traceback
from enum import Enum
from functools import partial
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ns_plugins.config import (
    Arch,
    Backend,
    DataSource,
    Engine,
    GradSync,
    Optimizer,
    Reduce,
    unknown_options,
)
from ns_plugins.engines.base import check_resume, initial_weights, linear_decay, vocab_fingerprint
from ns_plugins.errors import UsageError

__all__ = [
    "PLANTED_PURITY_LEARNED",
    "ConfigError",
    "RunEvaluator",
    "check_config",
    "check_init_vectors",
    "claim_run_dir",
    "eval_inputs",
    "export_run",
    "initial_weights",
    "linear_decay",
    "open_run_data",
    "prepare_run_data",
    "RankStopped",
    "RunInterrupted",
    "interruptible",
    "note_failure_checkpoint",
    "rank_failure",
    "release_run_dir",
    "run_dir_claimed",
    "train",
    "warm_start",
    "write_json",
    "write_report",
    "writing",
    "check_resume",
    "vocab_fingerprint",
]

log = logging.getLogger(__name__)

# Neighbour purity at which the synthetic corpus's clusters count as learned (chance is about
# 1 / number of clusters).
PLANTED_PURITY_LEARNED = 0.8


class ConfigError(UsageError):
    """A setting that cannot work; raised before training starts."""


def devices(cfg: DictConfig) -> int:
    return int(cfg.devices if cfg.devices is not None else cfg.device.devices)


def num_nodes(cfg: DictConfig) -> int:
    return int(cfg.num_nodes if cfg.num_nodes is not None else cfg.device.num_nodes)


def _cuda_available() -> bool:
    import torch  # only asked for GPU runs, which import torch anyway

    return torch.cuda.is_available()


# Options one engine reads and the other does not, with the schema's defaults: a run on the other
# engine refuses any of them set to something else, naming it.
PAIRS_ONLY = {
    "backend.name": Backend.fused,
    "reduce.mode": Reduce.sum,
    "model.optimizer": Optimizer.sgd,
    "batch_size": 1024,
    "data.num_workers": 0,
    "device.precision": "32-true",
    "model.max_row_step": 1.0,
}
CHUNK_ONLY = {"workers": 2, "model.chunk_words": 100_000, "model.shared_negatives": False}

MAX_SEED = 2**32 - 1
# device.precision values Lightning's Trainer accepts (lightning_fabric's _PRECISION_INPUT)
PRECISIONS = (
    "32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true",
    "transformer-engine", "transformer-engine-float16", "64", "32", "16", "bf16",
)  # fmt: skip
# The chunk kernels' limits, as ns_plugins.kernels.chunk_numba (SLOT_BITS, SLOT_DRAWS) and
# chunk_triton (_MAX_WINDOW, _MAX_K) define them; read here without importing numba or triton.
_SLOT_BITS, _SLOT_DRAWS = 20, 2
_CUDA_MAX_WINDOW, _CUDA_MAX_K = 32, 64


def check_config(cfg: DictConfig) -> None:
    """Fail early, naming the setting, for everything that would fail later."""
    missing = OmegaConf.missing_keys(cfg)
    if missing:
        raise ConfigError(f"missing value for {', '.join(sorted(missing))} (give it as key=value)")
    unknown = unknown_options(cfg)
    if unknown:
        raise ConfigError(unknown)
    _check_monitored(cfg)
    _check_loggers(cfg)
    if cfg.data.source is DataSource.text:
        if not cfg.data.path:
            raise ConfigError("data=text needs a corpus: give data.path=/path/to/corpus.txt(.gz)")
        if not Path(cfg.data.path).exists():
            raise ConfigError(f"corpus not found: data.path={cfg.data.path}")
    for key in ("wordsim", "simlex", "analogies"):
        path = cfg.eval[key]
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"evaluation file not found: eval.{key}={path}")
    for key in ("ckpt_path", "init_vectors", "data.vocab_file"):
        path = OmegaConf.select(cfg, key)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"file not found: {key}={path}")
    if cfg.ckpt_path is not None:
        _check_checkpoint_file(cfg.ckpt_path)
    if cfg.ckpt_path is not None and cfg.init_vectors is not None:
        raise ConfigError("give ckpt_path (resume a run) or init_vectors (start from vectors)")
    for key in ("vector_size", "epochs", "batch_size", "window", "min_count", "negative"):
        if cfg[key] < 1:
            hint = " (negative sampling needs negatives)" if key == "negative" else ""
            raise ConfigError(f"{key} must be >= 1, got {cfg[key]}{hint}")
    for key in ("workers", "eval.k", "model.chunk_words"):
        if OmegaConf.select(cfg, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {OmegaConf.select(cfg, key)}")
    for key in ("data.max_vocab_size", "data.max_final_vocab"):
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value < 2:
            raise ConfigError(f"{key} must be >= 2 (or null for no cap), got {value}")
    if cfg.seed < 0:
        raise ConfigError(f"seed must be >= 0, got {cfg.seed}")
    if cfg.seed > MAX_SEED:  # Lightning's seed_everything and numpy take 32 bits
        raise ConfigError(f"seed must be <= {MAX_SEED} (2**32 - 1), got {cfg.seed}")
    if str(cfg.device.precision) not in PRECISIONS:
        raise ConfigError(
            f"device.precision={cfg.device.precision} is not a precision Lightning knows; "
            f"use one of {', '.join(PRECISIONS)}"
        )
    for key in ("sample", "ns_exponent", "alpha", "min_alpha", "model.init_scale"):
        value = OmegaConf.select(cfg, key)
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value}")
    if cfg.sample < 0:
        raise ConfigError(f"sample must be >= 0, got {cfg.sample}")
    if not 0 <= cfg.min_alpha <= cfg.alpha or cfg.alpha == 0:
        raise ConfigError(
            f"need 0 <= min_alpha <= alpha, alpha > 0; got {cfg.min_alpha}, {cfg.alpha}"
        )
    if devices(cfg) < 1 or num_nodes(cfg) < 1:
        raise ConfigError("devices and num_nodes must be >= 1")
    if cfg.device.average_every < 1:
        raise ConfigError(f"device.average_every must be >= 1, got {cfg.device.average_every}")
    gpu = cfg.device.accelerator in ("gpu", "cuda")
    if gpu and not _cuda_available():
        raise ConfigError(
            f"device.accelerator={cfg.device.accelerator} but no CUDA device is visible; "
            "use device=cpu or device=ddp_cpu"
        )
    engine = cfg.model.engine
    unread = PAIRS_ONLY if engine is Engine.chunk else CHUNK_ONLY
    for key, default in unread.items():
        value = OmegaConf.select(cfg, key)
        if value != default:
            shown = value.value if isinstance(value, Enum) else value
            raise ConfigError(
                f"{key}={shown} is not read by the {engine.value} engine (model.engine); "
                f"remove it, or use model.engine={'batched' if engine is Engine.chunk else 'chunk'}"
            )
    if engine is Engine.chunk:
        _check_chunk_engine(cfg, gpu)
    else:
        _check_pairs_engine(cfg, gpu)
    if cfg.init_vectors is not None:
        check_init_vectors(cfg.init_vectors, cfg.vector_size)


# The evaluation file behind each logged score (eval/wordsim353, eval/wordsim353_pairs, ...).
_SCORE_FILES = {"wordsim353": "wordsim", "simlex999": "simlex", "analogy": "analogies"}
_SCORE_EXAMPLES = {"wordsim": "wordsim353.tsv", "simlex": "simlex999.txt",
                   "analogies": "questions-words.txt"}  # fmt: skip


def _check_monitored(cfg: DictConfig) -> None:
    """A configured callback that monitors an evaluation score (EarlyStopping, ModelCheckpoint)
    needs what that score is computed from; without it Lightning fails after the first epoch."""
    inputs = None
    for name, conf in (cfg.callbacks or {}).items():
        monitor = conf.get("monitor") if isinstance(conf, DictConfig) else None
        if not isinstance(monitor, str) or not monitor.startswith("eval/"):
            continue
        what = f"callbacks.{name} monitors {monitor}"
        score = monitor.removeprefix("eval/")
        if score.startswith("planted_"):
            if cfg.data.source is not DataSource.synthetic:
                raise ConfigError(f"{what}, which only the synthetic corpus has (data=synthetic)")
            continue
        key = next((v for k, v in _SCORE_FILES.items() if score.startswith(k)), None)
        if key is None:
            raise ConfigError(
                f"{what}, which no evaluation logs (eval/wordsim353, eval/simlex999, "
                "eval/analogy, eval/planted_purity)"
            )
        if inputs is None:
            inputs = eval_inputs(cfg.eval)
        if key not in inputs:
            raise ConfigError(
                f"{what}, which needs an evaluation file: give eval.{key}=/path/to/"
                f"{_SCORE_EXAMPLES[key]} (README: evaluation files)"
            )
        if key == "analogies" and cfg.epochs > 1 and not cfg.eval.analogies_each_epoch:
            raise ConfigError(
                f"{what}, scored at the last epoch only: add eval.analogies_each_epoch=true"
            )


# Lightning loggers that need a package of their own: (modules, any one of which does; install).
_LOGGER_PACKAGES = {
    "TensorBoardLogger": (("tensorboard", "tensorboardX"), 'pip install ".[tensorboard]"'),
    "WandbLogger": (("wandb",), "pip install wandb"),
    "MLFlowLogger": (("mlflow",), "pip install mlflow"),
    "CometLogger": (("comet_ml",), "pip install comet-ml"),
    "NeptuneLogger": (("neptune",), "pip install neptune"),
}


def _check_loggers(cfg: DictConfig) -> None:
    """A configured logger whose package is missing: one line with the install command, before
    anything is prepared (Lightning would raise ModuleNotFoundError when building the trainer)."""
    for name, conf in (cfg.logger or {}).items():
        target = conf.get("_target_") if isinstance(conf, DictConfig) else None
        if not isinstance(target, str):
            continue
        modules, install = _LOGGER_PACKAGES.get(target.rsplit(".", 1)[-1], ((), ""))
        if modules and not any(importlib.util.find_spec(m) for m in modules):
            raise ConfigError(f"logger.{name} ({target}) needs {modules[0]}: {install}")


def _check_checkpoint_file(path) -> None:
    """A Lightning checkpoint is a torch zip archive holding a data.pkl; its directory is read
    first, so a truncated or foreign file (an .npz, say) is refused before anything is loaded.
    Then every record is read against the CRC-32 the archive stores for it: torch.load checks
    none, so a flipped byte in the weights would load and train on without a word."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            ok = any(name.endswith("data.pkl") for name in z.namelist())
            damaged = z.testzip() if ok else None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ConfigError(f"ckpt_path={path}: not a readable checkpoint ({err})") from err
    if not ok:
        raise ConfigError(f"ckpt_path={path}: not a checkpoint of this app (no torch data in it)")
    if damaged is not None:
        raise ConfigError(
            f"ckpt_path={path}: the file is damaged (record {damaged} fails its CRC-32 check); "
            "resume from another checkpoint"
        )


def _check_chunk_engine(cfg: DictConfig, gpu: bool) -> None:
    if cfg.model.arch is Arch.cbow and not cfg.model.cbow_mean:
        raise ConfigError("the chunk engine averages CBOW contexts (model.cbow_mean=true)")
    if cfg.model.shared_negatives and cfg.model.arch is Arch.cbow:
        raise ConfigError("model.shared_negatives=true is a skip-gram option (CBOW shares already)")
    if cfg.device.grad_sync is not GradSync.local_sgd:
        raise ConfigError(
            f"device.grad_sync={cfg.device.grad_sync.value}: the chunk engine has no gradients; "
            "its ranks average weights every device.average_every steps (grad_sync=local_sgd)"
        )
    if gpu and importlib.util.find_spec("triton") is None:
        raise ConfigError("the chunk engine on CUDA needs the triton package installed")
    # The kernels' bounds (ns_plugins.kernels.chunk_numba and chunk_triton, which raise them
    # inside the first step): every negative of a center's window has its own random slots.
    if _SLOT_DRAWS + 4 * cfg.window * cfg.negative > 1 << _SLOT_BITS:
        raise ConfigError(
            f"window * negative must be below {(1 << _SLOT_BITS) // 4} for the chunk engine, "
            f"got window={cfg.window}, negative={cfg.negative}"
        )
    if gpu and cfg.window > _CUDA_MAX_WINDOW:
        raise ConfigError(
            f"window must be <= {_CUDA_MAX_WINDOW} for the chunk engine on CUDA, got {cfg.window}"
        )
    if gpu and cfg.negative >= _CUDA_MAX_K:
        raise ConfigError(
            f"negative must be <= {_CUDA_MAX_K - 1} for the chunk engine on CUDA, "
            f"got {cfg.negative}"
        )


def _check_pairs_engine(cfg: DictConfig, gpu: bool) -> None:
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


def check_init_vectors(path, d: int) -> None:
    """Refuse an ``init_vectors`` file that cannot start this run, before anything is prepared:
    arrays missing, shapes that do not fit ``vector_size`` ``d``, or rows holding NaN or inf
    (training would spread them). The tables are read a block of rows at a time, never whole."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as f:
            words = [str(w) for w in f["words"]]
        with zipfile.ZipFile(path) as z:
            for key in ("in_embed", "out_embed"):
                shape, bad = _nonfinite_rows(z, key)
                if shape != (len(words), d):
                    raise ConfigError(
                        f"init_vectors={path} holds {shape} {key} vectors for {len(words)} words; "
                        f"this run has vector_size {d}"
                    )
                if bad.size:
                    raise ConfigError(
                        f"init_vectors={path}: {bad.size} rows of {key} hold NaN or inf (the "
                        f"first: row {bad[0]}, word {words[bad[0]]!r}); the vectors must be finite"
                    )
    except ConfigError:
        raise
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise ConfigError(
            f"init_vectors={path}: not an .npz with words, in_embed and out_embed ({err})"
        ) from err


def _nonfinite_rows(z, key: str, block_bytes: int = 1 << 24):
    """(shape, indices of the rows holding NaN or inf) of the array ``key`` in the .npz ``z``."""
    fmt = np.lib.format
    with z.open(f"{key}.npy") as f:
        version = fmt.read_magic(f)
        if version not in ((1, 0), (2, 0)):  # (3, 0): read whole, as np.load does
            a = np.load(z.open(f"{key}.npy"), allow_pickle=False)
            return a.shape, _bad_rows(a, 0)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if dtype.hasobject:
            raise ValueError(f"{key} holds Python objects")
        if len(shape) != 2 or fortran or dtype.kind != "f":
            a = np.load(z.open(f"{key}.npy"), allow_pickle=False)
            return a.shape, (_bad_rows(a, 0) if a.ndim == 2 else np.zeros(0, np.int64))
        rows, cols = shape
        step = max(1, block_bytes // max(cols * dtype.itemsize, 1))
        bad = []
        for start in range(0, rows, step):
            n = min(step, rows - start)
            data = f.read(n * cols * dtype.itemsize)
            if len(data) != n * cols * dtype.itemsize:
                raise ValueError(f"{key} is truncated")
            bad.append(_bad_rows(np.frombuffer(data, dtype).reshape(n, cols), start))
        return tuple(shape), np.concatenate(bad) if bad else np.zeros(0, np.int64)


def _bad_rows(a: np.ndarray, start: int) -> np.ndarray:
    if a.dtype.kind not in "fc":
        return np.zeros(0, np.int64)
    return np.flatnonzero(~np.isfinite(a).all(axis=1)) + start


def warm_start(path, words, d: int, seed: int, scale: float):
    """(W_in, W_out) for ``words``: rows of the words in ``path`` (an .npz with ``words``,
    ``in_embed``, ``out_embed``; never unpickled) copied over a fresh start."""
    try:
        with np.load(path, allow_pickle=False) as f:
            saved_words = [str(w) for w in f["words"]]
            saved_in, saved_out = f["in_embed"], f["out_embed"]
    except (KeyError, ValueError, OSError) as err:
        raise ConfigError(
            f"init_vectors={path}: not an .npz with words, in_embed and out_embed ({err})"
        ) from err
    if saved_in.shape != (len(saved_words), d) or saved_out.shape != saved_in.shape:
        raise ConfigError(
            f"init_vectors={path} holds {saved_in.shape} vectors for {len(saved_words)} words; "
            f"this run has vector_size {d}"
        )
    W_in, W_out = initial_weights(len(words), d, seed, scale)
    index = {w: i for i, w in enumerate(saved_words)}
    rows = np.array([index.get(w, -1) for w in words], dtype=np.int64)
    have = rows >= 0
    W_in[have] = saved_in[rows[have]]
    W_out[have] = saved_out[rows[have]]
    log.info("init_vectors: %d of %d words start from %s", int(have.sum()), len(words), path)
    return W_in, W_out


# ---------------------------------------------------------------------------------- the corpus
def prepare_run_data(
    cache_dir: Path,
    source: DataSource | str = DataSource.synthetic,
    path: str | None = None,
    min_count: int = 5,
    max_vocab_size: int | None = None,
    synthetic_seed: int = 0,
    synthetic_sentences: int = 40000,
    *,
    max_final_vocab: int | None = None,
    tokenizer: str | None = None,
    vocab_file: str | None = None,
) -> Path:
    """The run's encoded corpus (and the synthetic corpus's ground truth) in the corpus cache
    ``cache_dir``, encoded unless a run already did for the same recipe; returns its directory."""
    from ns_plugins.data.cache import prepare_cached_corpus

    return prepare_cached_corpus(
        cache_dir,
        DataSource(source).value,
        path,
        min_count,
        max_vocab_size,
        max_final_vocab,
        tokenizer,
        vocab_file,
        synthetic_seed=synthetic_seed,
        synthetic_sentences=synthetic_sentences,
    )


def run_data_recipe(cfg: DictConfig) -> dict:
    """The corpus settings of ``cfg`` as ``prepare_run_data``'s keyword arguments: the one mapping,
    read by the run's data module and by the encoder started before it (so both ask the cache for
    the same recipe)."""
    data = cfg.data
    return dict(
        source=data.source,
        path=data.path,
        min_count=cfg.min_count,
        max_vocab_size=data.max_vocab_size,
        synthetic_seed=data.synthetic_seed,
        synthetic_sentences=data.synthetic_sentences,
        max_final_vocab=OmegaConf.select(cfg, "data.max_final_vocab", default=None),
        tokenizer=OmegaConf.select(cfg, "data.tokenizer", default=None),
        vocab_file=OmegaConf.select(cfg, "data.vocab_file", default=None),
    )


def prepare_run_data_for(cfg: DictConfig, cache_dir: Path) -> Path:
    return prepare_run_data(cache_dir, **run_data_recipe(cfg))


def open_run_data(cache_dir: Path):
    """(EncodedCorpus, ground truth dict or None): of the directory ``prepare_run_data`` returned,
    or the corpus prepared last in the cache ``cache_dir``."""
    from ns_plugins.data.cache import open_cached_corpus

    return open_cached_corpus(cache_dir)


def cache_dir_of(cfg: DictConfig, run_dir: Path) -> Path:
    """``data.cache_dir``; by default the run directory's ``data/``, or in a Hydra multirun the
    sweep directory's, so the jobs of a sweep encode each corpus recipe once."""
    if cfg.data.cache_dir:
        return Path(cfg.data.cache_dir)
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode is RunMode.MULTIRUN:
            return Path(hydra_cfg.sweep.dir) / "data"
    except ValueError:  # not inside a Hydra app (HydraConfig is not set)
        pass
    return run_dir / "data"


# ---------------------------------------------------------------------------------- evaluation
def eval_inputs(eval_cfg) -> dict:
    """Paths of the evaluation sets that are configured (or bundled with gensim when allowed)."""
    paths = {
        "wordsim": eval_cfg.wordsim,
        "simlex": eval_cfg.simlex,
        "analogies": eval_cfg.analogies,
    }
    if eval_cfg.use_gensim_data:
        try:
            from gensim.test.utils import datapath
        except ImportError:
            datapath = None
        bundled = {
            "wordsim": "wordsim353.tsv",
            "simlex": "simlex999.txt",
            "analogies": "questions-words.txt",
        }
        for key, name in bundled.items():
            if paths[key] is None and datapath is not None and Path(datapath(name)).is_file():
                paths[key] = datapath(name)
    return {k: v for k, v in paths.items() if v}


class RunEvaluator:
    """Scores word vectors on the configured sets (read once), the planted structure on
    synthetic data, and finds nearest neighbours of a few query words; keeps the latest."""

    def __init__(self, inputs: dict, queries=(), k: int = 10):
        self.inputs = dict(inputs)
        self.queries = list(queries)
        self.k = k
        self.scores: dict = {}
        self.neighbours: dict = {}
        self.complete = False  # whether the latest scores include every configured set
        self._loaded: dict | None = None

    def load(self) -> dict:
        """Read and check the evaluation files (once); bad ones raise before any training."""
        if self._loaded is None:
            from ns_plugins.evaluate import check_eval_files

            self._loaded = check_eval_files(self.inputs, self.k)
        return self._loaded

    def evaluate(self, words, vectors, ground_truth=None, analogies: bool = True) -> dict:
        """Score ``vectors``; ``analogies=False`` leaves the analogy set out (the costly one:
        about 0.7 s a time on gcide against 0.1 s for both similarity sets)."""
        from ns_plugins import evaluate

        sets = self.load()
        if not analogies:
            sets = {k: v for k, v in sets.items() if k != "analogies"}
        self.complete = len(sets) == len(self.load())
        scores = evaluate.evaluate_all(words, vectors, ground_truth=ground_truth, **sets)
        queries = self.queries or words[: min(5, len(words))]
        self.neighbours = evaluate.nearest_neighbours(words, vectors, queries, k=self.k)
        self.scores = scores
        return scores

    def finite_scores(self) -> dict:
        """The scores with NaN/inf as None (JSON has no NaN)."""
        return {
            k: (v if not isinstance(v, float) or math.isfinite(v) else None)
            for k, v in self.scores.items()
        }


# ---------------------------------------------------------------------------------- outputs
def export_run(run_dir: Path, words, vectors, counts) -> None:
    """The vectors in word2vec text and binary formats and the vocabulary with counts."""
    from ns_plugins.export import save_word2vec

    run_dir.mkdir(parents=True, exist_ok=True)
    for name, binary in (("vectors.txt", False), ("vectors.bin", True)):
        with writing(run_dir / name):  # save_word2vec writes <name>.part and renames it
            save_word2vec(run_dir / name, words, vectors, binary=binary)
    with writing(run_dir / "vocab.tsv") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for w, c in zip(words, counts):
                f.write(f"{w}\t{int(c)}\n")
        tmp.replace(run_dir / "vocab.tsv")


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
        tmp.replace(path)


@contextlib.contextmanager
def writing(path):
    """Write ``path`` through ``<path>.part`` (yielded; the block renames it into place). When the
    block fails the ``.part`` file goes, and an OSError about it (a full disk: ENOSPC, EDQUOT; the
    write itself names no file) names ``path``, the file a user knows."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    try:
        yield tmp
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno and str(err.filename) in ("None", str(tmp)):
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def finish_run(cfg: DictConfig, run_dir: Path, metrics: dict, ground_truth: dict | None) -> None:
    """metrics.json, the run's ground truth (synthetic corpora) next to it, the report, and a
    closing log line."""
    if "planted_purity" in metrics["eval"] and metrics["eval"]["planted_purity"] is not None:
        metrics["planted_learned"] = metrics["eval"]["planted_purity"] >= PLANTED_PURITY_LEARNED
    if ground_truth is not None:
        write_json(run_dir / "ground_truth.json", ground_truth)
    write_json(run_dir / "metrics.json", metrics)
    write_report(run_dir)
    if metrics.get("interrupted"):
        log.warning(
            "interrupted by signal %d; resume with ckpt_path=%s",
            metrics["interrupt_signal"],
            metrics["interrupt_checkpoint"],
        )
    elif "planted_learned" in metrics:
        verdict = "learned" if metrics["planted_learned"] else "NOT learned"
        log.info(
            "planted structure %s: neighbour purity %.3f (threshold %.2f)",
            verdict,
            metrics["eval"]["planted_purity"],
            PLANTED_PURITY_LEARNED,
        )


def write_report(run_dir: Path) -> None:
    try:
        from ns_plugins.report import build_report
    except ImportError:
        return
    try:
        build_report(run_dir)
    except Exception as err:  # noqa: BLE001 - a report problem must not lose the trained run
        log.warning("report not written: %s", err)


def config_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


# ---------------------------------------------------------------------------------- run directory
# Run directories whose lock this process holds: {resolved directory: what releases the lock}.
_HELD: dict = {}

# Variables by which a launcher tells a process that it is not a run's first one (rank > 0 under
# torchrun or SLURM, a rank Lightning's launcher started, another node): such a process writes
# into the directory that rank 0 holds.
_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")


def _owns_run_dir() -> bool:
    return all(os.environ.get(name, "0") in ("", "0") for name in _RANK_VARIABLES)


def claim_run_dir(run_dir, ckpt_path=None) -> bool:
    """Take ``RUN_DIR/.lock`` for this process and check that the directory may take a new run.

    A run directory holds one run. Another process running into it is refused at once, naming its
    pid; so is a directory that holds a run already (its ``metrics.json``, or checkpoints of a run
    that ended without one) unless ``ckpt_path`` resumes from a checkpoint inside it. Returns
    whether this call took the lock (False: this process holds it already, or is not the run's
    first process). The lock goes with the process (``release_run_dir``, or its exit)."""
    run_dir = Path(run_dir)
    key = run_dir.resolve()
    if key in _HELD or not _owns_run_dir():
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    _HELD[key] = _lock(run_dir / ".lock", run_dir)
    try:
        _check_run_dir_free(run_dir, ckpt_path)
    except BaseException:
        release_run_dir(run_dir)
        raise
    return True


def release_run_dir(run_dir) -> None:
    release = _HELD.pop(Path(run_dir).resolve(), None)
    if release is not None:
        release()


@contextlib.contextmanager
def run_dir_claimed(run_dir, ckpt_path=None):
    """``claim_run_dir`` for the duration of the block (nothing when this process holds it)."""
    taken = claim_run_dir(run_dir, ckpt_path)
    try:
        yield
    finally:
        if taken:
            release_run_dir(run_dir)


def _lock(path: Path, run_dir: Path):
    """An exclusive lock on ``path`` with this process's pid written in it, and the function
    that releases it; a ConfigError naming the holder's pid when another process holds it.

    flock, held by an open descriptor: the kernel drops it when the process ends, however it
    ends, so no stale lock is left; processes forked during the run share it."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): filelock's lock, without the holder's pid
        return _lock_without_flock(path, run_dir)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        raise ConfigError(
            f"the run directory {run_dir} is in use by another run (pid {holder}); "
            "choose another hydra.run.dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return partial(os.close, fd)


def _lock_without_flock(path: Path, run_dir: Path):
    from filelock import FileLock, Timeout

    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(
            f"the run directory {run_dir} is in use by another run; choose another hydra.run.dir"
        ) from None
    return lock.release


def _check_run_dir_free(run_dir: Path, ckpt_path) -> None:
    """Refuse a directory that holds a run, unless ``ckpt_path`` resumes from inside it."""
    if ckpt_path is not None and Path(ckpt_path).resolve().is_relative_to(run_dir.resolve()):
        return
    choose = "choose another hydra.run.dir or resume with ckpt_path="
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        try:
            saved = json.loads(metrics.read_text())
        except (OSError, ValueError):
            saved = {}
        if saved.get("interrupted") and saved.get("interrupt_checkpoint"):
            raise ConfigError(
                f"{run_dir} holds an interrupted run; {choose}{saved['interrupt_checkpoint']}"
            )
        raise ConfigError(
            f"{run_dir} holds a finished run; {choose}{run_dir / 'checkpoints' / 'last.ckpt'}"
        )
    checkpoints = run_dir / "checkpoints"
    for name in ("interrupted.ckpt", "last.ckpt"):
        if (checkpoints / name).is_file():
            raise ConfigError(
                f"{run_dir} holds the checkpoints of a run that did not finish; "
                f"{choose}{checkpoints / name}"
            )


# ---------------------------------------------------------------------------------- entry point
def train(cfg: DictConfig, run_dir, extra_callbacks=()) -> dict:
    """Check ``cfg``, train with the engine it names, write the run directory, and return the
    final metrics (empty on ranks other than 0). ``extra_callbacks`` are Lightning callbacks."""
    check_config(cfg)
    run_dir = Path(run_dir)
    with run_dir_claimed(run_dir, cfg.ckpt_path):
        return _train(cfg, run_dir, extra_callbacks)


def _train(cfg: DictConfig, run_dir: Path, extra_callbacks) -> dict:
    encoder = None
    try:
        with interruptible("preparing the corpus"):
            encoder = _encode_in_background(cfg, run_dir)
            try:
                from ns_plugins.lightning.run import train as train_lightning
            except ModuleNotFoundError as err:
                if err.name not in ("torch", "pytorch_lightning", "lightning_fabric"):
                    raise
                raise UsageError(
                    f"training needs {err.name}, which is not installed: from the clone, "
                    'pip install ".[lightning]" (with torch for your platform; README: Install)'
                ) from None
            if encoder is not None:
                encoder.join()
    finally:
        if encoder is not None and encoder.exitcode is None:  # interrupted, or failed
            encoder.kill()
            encoder.join()
    with _local_ranks(cfg):
        return train_lightning(cfg, run_dir, extra_callbacks)


class RunInterrupted(BaseException):
    """SIGINT or SIGTERM before training started (a BaseException, as KeyboardInterrupt is, so
    that no ``except Exception`` on the way takes it); the app reports it in one line and exits
    with 128 + the signal's number."""

    def __init__(self, signum: int, during: str):
        super().__init__(signum, during)
        self.signum, self.during = signum, during

    def __str__(self) -> str:
        return f"interrupted (signal {self.signum}) while {self.during}"


@contextlib.contextmanager
def interruptible(during: str):
    """For the block, SIGINT and SIGTERM raise ``RunInterrupted(signum, during)`` in the main
    thread, wherever it is (an import, a wait for a child, encoding); elsewhere a no-op. Once
    training starts, ``GracefulInterrupt`` takes the signals over (a checkpoint, then a stop)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise RunInterrupted(signum, during)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# Variables by which torchrun, SLURM, LSF or a cluster tell a process its rank: Lightning then
# starts no processes, and neither does _local_ranks.
_LAUNCHED_BY = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "SLURM_NTASKS", "LSB_JOBID")


@contextlib.contextmanager
def _local_ranks(cfg: DictConfig):
    """Start the other processes of a one-node DDP run by forking this one, with torch and
    Lightning imported and nothing trained yet; yields this process's local rank. A forked rank
    trains and exits inside the block.

    Lightning's launcher starts them only when ``fit`` begins, as new interpreters that compose the
    config and import torch and Lightning again while rank 0 waits (about 5 s here: two ranks ran
    at 0.87x the one-process words/s on gcide). Forked, a rank starts with everything imported, as
    a DataLoader worker does. Lightning finds ``LOCAL_RANK`` set and treats the processes as
    started by a launcher, as under torchrun. When a rank fails, the others are killed, as
    Lightning's launcher does, instead of waiting in a collective forever. Elsewhere (several
    nodes, processes started by a launcher, CUDA already initialised, not Linux) Lightning's
    launcher starts the ranks as before."""
    n = devices(cfg)
    torch = sys.modules.get("torch")
    if (
        cfg.device.strategy != "ddp"
        or n < 2
        or num_nodes(cfg) != 1
        or any(name in os.environ for name in _LAUNCHED_BY)
        or (torch is not None and torch.cuda.is_initialized())  # CUDA does not survive a fork
        or sys.platform != "linux"
    ):
        yield 0
        return
    with socket.socket() as sock:  # a free port for the process group (as Lightning finds one)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": "0",
           "WORLD_SIZE": str(n), "LOCAL_RANK": "0"}  # fmt: skip
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    children = {}
    for rank in range(1, n):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.environ["LOCAL_RANK"] = str(rank)
            status = 1
            try:
                yield rank
                status = 0
            except UsageError as err:  # bad input: one line, as rank 0 gives it
                status = 2
                print(f"ns-train: error: {err}", file=sys.stderr)
            except RunInterrupted as err:  # rank 0 says it
                status = 128 + err.signum
            except BaseException:  # noqa: BLE001 - this process ends here, whatever happened
                traceback.print_exc()
            finally:
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        children[pid] = rank
    global _WATCH
    waiting = dict(children)  # the watcher removes each rank it has seen end
    watch = _WATCH = _RankWatch()
    watcher = threading.Thread(target=_watch_ranks, args=(waiting, watch), daemon=True)
    watcher.start()
    try:
        yield 0
    except BaseException as err:
        # The other ranks usually fail too and say why (a rank 0 error is often only "connection
        # closed by peer"); any still running after a while would wait in a collective forever.
        watch.stopping = True
        _end(children, grace=5.0)
        if watch.failed is not None and isinstance(err, Exception):  # a rank was killed
            raise RankStopped(*watch.failed, watch.checkpoint) from err
        raise
    finally:
        _WATCH = None
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    watcher.join(timeout=60.0)  # the ranks end with this one's last collective
    watch.stopping = True
    _kill(list(waiting))


class RankStopped(Exception):
    """A forked rank was ended by a signal (kill -9, the OOM killer) during the run; rank 0 saved
    what it holds as the interrupt checkpoint when it could. The app reports it in one line and
    exits with 128 + the signal's number, as the shell reports a killed process."""

    def __init__(self, rank: int, status: int, checkpoint=None):
        super().__init__(rank, status, checkpoint)
        self.rank, self.status, self.checkpoint = rank, status, checkpoint
        self.exit_status = 128 - status if status < 0 else max(status, 1)

    def __str__(self) -> str:
        how = f"was killed by signal {-self.status}" if self.status < 0 else "failed"
        if self.checkpoint is None:
            return f"rank {self.rank} {how}; the run stopped without a checkpoint of this moment"
        return (
            f"rank {self.rank} {how}; rank 0 saved {self.checkpoint}: "
            f"resume with ckpt_path={self.checkpoint}"
        )


class _RankWatch:
    """What the watcher thread of a run's forked ranks tells the run's main thread."""

    def __init__(self):
        self.failed: tuple[int, int] | None = None  # (rank, exit status) of a rank a signal ended
        self.seen = threading.Event()  # set when failed is
        self.handled = threading.Event()  # the main thread takes it over (saves, then ends)
        self.stopping = False  # this process ends the ranks itself: their deaths are no news
        self.checkpoint: Path | None = None  # what rank 0 saved after the failure


_WATCH: _RankWatch | None = None


def rank_failure(wait: float):
    """(rank, exit status) of a forked rank of this run that a signal ended, waiting up to
    ``wait`` seconds for the watcher to see it (a collective fails the moment a peer dies; the
    watcher looks every 0.2 s), or None. A caller that gets it handles the failure: the watcher
    leaves the ending of this process to it."""
    watch = _WATCH
    if watch is None or not watch.seen.wait(wait):
        return None
    watch.handled.set()
    return watch.failed


def note_failure_checkpoint(path) -> None:
    """The checkpoint rank 0 saved after a rank failed, named in the run's last line."""
    if _WATCH is not None:
        _WATCH.checkpoint = Path(path)


def _kill(pids) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _exited(pid: int):
    """The exit status of a child that ended (reaping it), None while it runs; 0 when another
    thread already reaped it."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return 0
    return os.waitstatus_to_exitcode(status) if done else None


def _end(children, grace: float) -> None:
    """Give the children ``grace`` seconds to end, then kill the rest."""
    running = set(children)
    deadline = time.monotonic() + grace
    while running and time.monotonic() < deadline:
        running = {pid for pid in running if _exited(pid) is None}
        time.sleep(0.1)
    _kill(running)


def _watch_ranks(waiting: dict, watch: _RankWatch | None = None, grace: float = 5.0) -> None:
    """Wait for the forked ranks (``{pid: rank}``, emptied as they end); when one fails, kill the
    others (SIGKILL: a process waiting in a collective ignores SIGTERM) and, unless this process
    ends within ``grace`` seconds (a collective with a dead peer fails at once, and this rank may
    be failing itself, with the error that matters), end it with the failed rank's status.

    A rank ended by a signal did not fail on its own error: rank 0's collective with it fails
    next, and rank 0 saves where it is and ends the run with one line (``rank_failure``); this
    thread then waits for that, as long as it takes."""
    watch = watch or _RankWatch()
    while waiting:
        time.sleep(0.2)
        for pid in list(waiting):
            code = _exited(pid)
            if code is None:
                continue
            rank = waiting.pop(pid)
            if code == 0 or watch.stopping:
                continue
            if code < 0:
                watch.failed = (rank, code)
                watch.seen.set()
                _kill(waiting)
                if watch.handled.wait(grace):
                    return
                print(f"ns-train: error: {RankStopped(rank, code)}", file=sys.stderr, flush=True)
                os._exit(128 - code)
            print(f"ns-train: rank {rank} stopped (exit status {code}); stopping the run",
                  file=sys.stderr, flush=True)  # fmt: skip
            _kill(waiting)
            time.sleep(grace)
            os._exit(code)


def _encode_in_background(cfg: DictConfig, run_dir: Path):
    """Start encoding the corpus into its cache in a forked child, or return None.

    Importing torch and Lightning takes seconds, and so does encoding a corpus of a few million
    words: the child does the second while this process does the first. The run's data module
    then finds the recipe's directory ready. Whatever the child meets (a bad file, a signal) it
    leaves alone: the data module prepares the corpus again under the cache's lock and reports
    the error itself, and a directory the child left half-written is removed under that lock.
    Only before torch is imported (afterwards there is no import left to overlap), and only where
    fork is the platform's way (Linux)."""
    import multiprocessing

    if "torch" in sys.modules or sys.platform != "linux":
        return None
    proc = multiprocessing.get_context("fork").Process(
        target=_encode_quietly, args=(cfg, cache_dir_of(cfg, run_dir), os.getpid()), daemon=True
    )
    proc.start()
    return proc


def _encode_quietly(cfg: DictConfig, cache_dir: Path, parent: int) -> None:
    # The parent stops this child when it is interrupted; when it dies another way (kill -9),
    # the kernel ends this child with it instead of leaving it encoding as an orphan.
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        prepare_run_data_for(cfg, cache_dir)
    except BaseException:  # noqa: BLE001 - the data module prepares again and reports it
        pass


def _die_with_parent(parent: int) -> None:
    """Have the kernel send this process SIGKILL when its parent ends (Linux's
    prctl(PR_SET_PDEATHSIG)); exit at once if the parent ended already."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux's libc: the parent's handler stops it
        pass
    if os.getppid() != parent:
        os._exit(0)
