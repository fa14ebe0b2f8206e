"""Checks of a run's config before anything is prepared: every setting that would fail later
(in encoding, inside a kernel, at the first checkpoint) fails here, in one line naming it
(``ConfigError``, which the entry point prints as ``ns-train: error: ...``)."""

from __future__ import annotations

import functools
import importlib.util
import math
from enum import Enum
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ns_plugins.app.config import (
    Arch,
    Backend,
    DataSource,
    Engine,
    GradSync,
    Optimizer,
    TrainConfig,
    engine_of,
    unknown_options,
)
from ns_plugins.app.evaluation import eval_inputs
from ns_plugins.errors import UsageError


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
PAIRS_ONLY = ("backend.name", "reduce.mode", "model.optimizer", "batch_size", "data.num_workers",
              "device.precision", "model.max_row_step")  # fmt: skip
CHUNK_ONLY = ("workers", "model.chunk_words", "model.shared_negatives", "model.copies_mib",
              "model.merge_every")  # fmt: skip


@functools.cache
def _schema_default(key: str):
    """The schema's default of ``key`` (``config.TrainConfig``): what a run that never set the
    option holds."""
    return OmegaConf.select(OmegaConf.structured(TrainConfig), key)


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
    if cfg.model.engine is not None:
        raise ConfigError(
            f"model.engine={cfg.model.engine}: the engine is a config group now; "
            f"use engine={cfg.model.engine}"
        )
    engine = engine_of(cfg)
    unread = PAIRS_ONLY if engine is Engine.chunk else CHUNK_ONLY
    for key in unread:
        value = OmegaConf.select(cfg, key)
        if value != _schema_default(key):
            shown = value.value if isinstance(value, Enum) else value
            raise ConfigError(
                f"{key}={shown} is not read by the {engine.value} engine; "
                f"remove it, or use engine={'batched' if engine is Engine.chunk else 'chunk'}"
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
    copies = cfg.model.copies_mib
    if not (math.isfinite(copies) and copies >= 0) or cfg.model.merge_every < 1:
        raise ConfigError(
            f"need model.copies_mib >= 0 and model.merge_every >= 1, got {copies} and "
            f"{cfg.model.merge_every}"
        )
    if copies > 0 and (gpu or devices(cfg) * num_nodes(cfg) > 1):
        raise ConfigError(
            f"model.copies_mib={copies}: the threads' own copies are for one CPU process (the "
            "ranks of several processes already train their own tables); remove it"
        )
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
    if cfg.backend.name is Backend.cupy and not gpu:
        raise ConfigError(
            f"backend={cfg.backend.name.value} runs on CUDA only; use device=gpu or device=ddp, "
            "or backend=fused on CPU"
        )
    if cfg.device.grad_sync is GradSync.sparse and cfg.device.process_group_backend == "nccl":
        raise ConfigError(
            "NCCL cannot all-reduce sparse gradients: use device.grad_sync=local_sgd or dense"
        )
    if cfg.backend.name is Backend.cupy and importlib.util.find_spec("cupy") is None:
        raise ConfigError("backend=cupy needs the cupy package installed (the cuda extra)")
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
