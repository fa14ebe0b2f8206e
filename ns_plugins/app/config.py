"""Structured configs for the training app, registered in Hydra's ConfigStore.

The YAML files in ``conf/`` fill these schemas; every choice is an enum, so a bad value such as
``backend.name=foo`` fails while the config is composed, with a message listing the valid names.
Hyperparameters keep gensim's names (``vector_size``, ``window``, ``negative``, ...) and sit at the
top level, so ``epochs=3`` works as an override. This module imports neither torch nor Lightning.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import II, DictConfig, OmegaConf

from ns_plugins.errors import UsageError

__all__ = [
    "Arch",
    "Backend",
    "DataSource",
    "BatchedEngineConfig",
    "ChunkEngineConfig",
    "Engine",
    "GradSync",
    "Merge",
    "Optimizer",
    "Reduce",
    "Tokenizer",
    "TrainConfig",
    "config_dir",
    "engine_of",
    "register_configs",
    "unknown_options",
]


class Backend(Enum):
    reference = "reference"  # plain torch autograd over gathered rows
    fused = "fused"  # the registered op: the numba kernel on CPU, the Triton kernels on CUDA
    cupy = "cupy"  # CUDA only


class Reduce(Enum):
    sum = "sum"
    mean = "mean"
    no = "no"


class Arch(Enum):
    skipgram = "skipgram"
    cbow = "cbow"


class Optimizer(Enum):
    sgd = "sgd"  # word2vec's plain SGD with a linearly decaying rate
    sparse_adam = "sparse_adam"


class Engine(Enum):
    chunk = "chunk"  # a step trains a chunk of the corpus in place with a fused kernel
    batched = "batched"  # pairs through a data loader, the loss op and an optimizer


class DataSource(Enum):
    synthetic = "synthetic"
    text = "text"


class Tokenizer(Enum):
    words = "words"  # lowercased runs of letters and digits
    split = "split"  # str.split, case kept (gensim's LineSentence)


class GradSync(Enum):
    sparse = "sparse"  # DDP all-reduces the sparse embedding gradients (gloo only)
    dense = "dense"  # dense embedding gradients, all-reduced by DDP (works on NCCL)
    local_sgd = "local_sgd"  # no gradient traffic; ranks average weights every few steps


class Merge(Enum):
    sum = "sum"  # W = W_last_merge + sum of the ranks' deltas: every rank's updates count fully
    mean = "mean"  # W = mean of the ranks' weights: each rank's updates divided by the ranks


@dataclass
class BackendConfig:
    name: Backend = Backend.fused


@dataclass
class ReduceConfig:
    mode: Reduce = Reduce.sum


@dataclass
class DeviceConfig:
    accelerator: str = "cpu"
    strategy: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    precision: str = "32-true"
    process_group_backend: str | None = None
    grad_sync: GradSync = GradSync.local_sgd
    average_every: int = 4  # local_sgd: steps between weight merges
    merge: Merge = Merge.sum  # local_sgd: add up the ranks' updates (sum) or average weights


@dataclass
class DataConfig:
    source: DataSource = DataSource.synthetic
    path: str | None = None  # text corpus (plain or .gz), one sentence per line
    cache_dir: str | None = None  # where the encoded corpus goes; default: the run directory
    max_vocab_size: int | None = None  # memory cap while counting: prunes rare words (gensim's)
    max_final_vocab: int | None = None  # keep the most frequent words after counting
    # use this vocabulary (``word<TAB>count`` lines, as a run's vocab.tsv) instead of counting
    vocab_file: str | None = None
    tokenizer: Tokenizer = Tokenizer.words
    num_workers: int = 0
    synthetic_seed: int = 0
    synthetic_sentences: int = 40000  # ~11 tokens each


@dataclass
class ModelConfig:
    arch: Arch = Arch.skipgram
    optimizer: Optimizer = Optimizer.sgd
    # the engine is the `engine` group now (engine=chunk|batched); kept only to say so to a command
    # written for the earlier layout (refused when set)
    engine: str | None = None
    cbow_mean: bool = True  # CBOW: average (True) or sum the context vectors
    # input vectors start uniform in +-init_scale / vector_size: 0.5 is word2vec.c's, 1.0 gensim 4's
    init_scale: float = 0.5
    chunk_words: int = 100_000  # chunk engine: corpus words per training step
    # chunk engine, skip-gram: one set of negatives per center word for its window (HogBatch)
    shared_negatives: bool = False
    # chunk engine, CPU, one process: MiB the threads may use for their own copies of the tables
    # (an anchor and a table pair per thread after the first), merged by adding their deltas
    # every merge_every steps; 0, or copies over it: the threads share the tables without locks
    copies_mib: float = 0.0
    merge_every: int = 4
    # batched engine, SGD: a row's step per batch is at most this long (null: no cap); keeps large
    # batches from diverging, where a frequent word's summed gradient overshoots
    max_row_step: float | None = 1.0


# The engines, one structured config each, registered as the `engine` group and built with
# hydra.utils.instantiate. Their settings are the run's top-level names (gensim's) and the groups',
# reached by interpolation, so `window=3` or `model.shared_negatives=true` reaches the engine.


@dataclass
class _EngineSettings:
    """The settings both engines read."""

    vector_size: int = II("vector_size")
    negative: int = II("negative")
    ns_exponent: float = II("ns_exponent")
    alpha: float = II("alpha")
    min_alpha: float = II("min_alpha")
    arch: Arch = II("model.arch")
    init_scale: float = II("model.init_scale")
    seed: int = II("seed")


@dataclass
class ChunkEngineConfig(_EngineSettings):
    _target_: str = "ns_plugins.app.engines.chunk.ChunkModule"
    window: int = II("window")
    sample: float = II("sample")
    shrink_windows: bool = II("shrink_windows")
    shared_negatives: bool = II("model.shared_negatives")
    workers: int = II("workers")
    copies_mib: float = II("model.copies_mib")
    merge_every: int = II("model.merge_every")


@dataclass
class BatchedEngineConfig(_EngineSettings):
    _target_: str = "ns_plugins.app.engines.batched.BatchedModule"
    backend: Backend = II("backend.name")
    reduce: Reduce = II("reduce.mode")
    optimizer: Optimizer = II("model.optimizer")
    cbow_mean: bool = II("model.cbow_mean")
    max_row_step: float | None = II("model.max_row_step")
    # sparse: from device.grad_sync (dense gradients for grad_sync=dense), given by the skeleton


ENGINE_CONFIGS = {Engine.chunk: ChunkEngineConfig, Engine.batched: BatchedEngineConfig}


def engine_of(cfg: DictConfig) -> Engine:
    """The engine a composed config trains with (its ``engine`` group's choice)."""
    target = cfg.engine._target_
    for engine, schema in ENGINE_CONFIGS.items():
        if schema._target_ == target:
            return engine
    raise UsageError(
        f"engine._target_={target} is not one of this app's engines (engine=chunk|batched)"
    )


@dataclass
class TrainerConfig:
    max_steps: int = -1
    fast_dev_run: bool = False
    # null: about 50 rows a run in csv/metrics.csv, every step of a short run, at most 50 apart
    log_every_n_steps: int | None = None
    enable_progress_bar: bool = True
    checkpoint_every_n_steps: int = 0  # 0: checkpoints/last.ckpt at epoch ends (and on interrupt)
    progress_seconds: float = 5.0  # output not a terminal: a progress log line this often


@dataclass
class EvalConfig:
    every_n_steps: int = 0  # 0: evaluate at the end of each epoch only
    # the analogy set costs most: scored at the last epoch (and at the end) unless this is true
    analogies_each_epoch: bool = False
    queries: list[str] = field(default_factory=list)  # nearest-neighbour words; default: top few
    k: int = 10
    wordsim: str | None = None
    simlex: str | None = None
    analogies: str | None = None
    use_gensim_data: bool = False  # fall back to the copies bundled with gensim when installed


@dataclass
class ReportConfig:
    words: list[str] = field(default_factory=list)  # extra nearest-neighbour rows in report.html


@dataclass
class TrainConfig:
    backend: BackendConfig = field(default_factory=BackendConfig)
    reduce: ReduceConfig = field(default_factory=ReduceConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    # the engine group's choice (ChunkEngineConfig or BatchedEngineConfig): engine=chunk|batched
    engine: Any = None
    # Lightning loggers and extra callbacks, each a `_target_` entry (the `logger` and `callbacks`
    # config groups); a CSV logger is always added when none is given (the report reads it)
    logger: dict[str, Any] = field(default_factory=dict)
    callbacks: dict[str, Any] = field(default_factory=dict)
    # the metrics.json entry a Hydra sweeper optimises, e.g. eval/wordsim353 (the app returns it)
    optimized_metric: str | None = None
    # gensim's hyperparameter names
    vector_size: int = 100
    window: int = 5
    min_count: int = 5
    sample: float = 1e-3
    negative: int = 5
    ns_exponent: float = 0.75
    alpha: float = 0.025
    min_alpha: float = 0.0001
    shrink_windows: bool = True
    epochs: int = 5
    workers: int = 2  # chunk engine: kernel threads per process (CPU)
    batch_size: int = 1024
    seed: int = 1
    # shortcuts for the device group
    devices: int | None = None
    num_nodes: int | None = None
    ckpt_path: str | None = None  # resume from this checkpoint
    # start from these weights (.npz: words, in_embed, out_embed); other words start random
    init_vectors: str | None = None


SCHEMA_NAME = "ns_train_schema"


def register_configs() -> None:
    """Store the schema (``conf/train.yaml`` lists it first in its defaults) and the engines."""
    store = ConfigStore.instance()
    store.store(name=SCHEMA_NAME, node=TrainConfig)
    for engine, schema in ENGINE_CONFIGS.items():
        store.store(group="engine", name=engine.value, node=schema)


# Names a Lightning or gensim user may guess, and this app's option for each (None: no such option).
# ``+key=value`` adds a key Hydra does not check, so a guess would otherwise be silently unread.
_GUESSES: dict[str, str | None] = {
    "trainer.max_epochs": "epochs",
    "trainer.min_epochs": None,
    "trainer.accelerator": "device.accelerator",
    "trainer.devices": "devices",
    "trainer.num_nodes": "num_nodes",
    "trainer.strategy": "device.strategy",
    "trainer.precision": "device.precision",
    "trainer.logger": "logger (a config group: logger=csv, logger=tensorboard, logger=many)",
    "trainer.callbacks": "callbacks (a config group, or +callbacks.NAME._target_=...)",
    "trainer.default_root_dir": "hydra.run.dir",
    "trainer.resume_from_checkpoint": "ckpt_path",
    "trainer.ckpt_path": "ckpt_path",
    "trainer.val_check_interval": "eval.every_n_steps",
    "trainer.seed": "seed",
    "max_epochs": "epochs",
    "iter": "epochs",  # gensim 3
    "size": "vector_size",  # gensim 3
    "dim": "vector_size",
    "lr": "alpha",
    "learning_rate": "alpha",
    "threads": "workers",
    "sg": "model=sgns or model=cbow",
    "hs": None,  # hierarchical softmax: only negative sampling here
    "cbow_mean": "model.cbow_mean",
    "max_vocab_size": "data.max_vocab_size",
    "engines": "engine (a config group: engine=chunk or engine=batched)",
    "max_final_vocab": "data.max_final_vocab",
    "corpus_file": "data.path",
    "accelerator": "device.accelerator",
    "strategy": "device.strategy",
    "precision": "device.precision",
}

# Nodes that hold free-form entries (a `_target_` and its arguments each), checked by no schema.
_OPEN = ("logger", "callbacks")


def _schema_keys(node, prefix: str = "") -> list[str]:
    keys = []
    for key in node:
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if dataclasses.is_dataclass(OmegaConf.get_type(node, key)):
            keys.extend(_schema_keys(node[key], dotted + "."))
    return keys


def _unknown(cfg: DictConfig, schema: DictConfig, prefix: str = "") -> list[str]:
    found = []
    for key in cfg:
        dotted = f"{prefix}{key}"
        if key not in schema:
            found.append(dotted)
        elif (
            dotted not in _OPEN
            and isinstance(schema[key], DictConfig)
            and isinstance(cfg[key], DictConfig)
        ):
            found.extend(_unknown(cfg[key], schema[key], dotted + "."))
    return found


def unknown_options(cfg: DictConfig) -> str | None:
    """A one-line message naming the keys of ``cfg`` that the schema does not have (added with
    ``+key=value``, which Hydra lets through unchecked), each with the option meant where one is
    known or close; None when every key is read."""
    schema = OmegaConf.structured(TrainConfig)
    if isinstance(cfg.get("engine"), DictConfig):  # the schema of the engine chosen
        schema.engine = OmegaConf.structured(ENGINE_CONFIGS[engine_of(cfg)])
    unknown = [k for k in _unknown(cfg, schema) if k != "hydra"]
    if not unknown:
        return None
    known = _schema_keys(schema)
    parts = []
    for key in unknown:
        if key in _GUESSES:
            meant = _GUESSES[key]
        else:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
            meant = close[0] if close else None
        parts.append(f"{key} (use {meant})" if meant else key)
    many = len(parts) > 1
    return (
        f"unknown option{'s' if many else ''} {'; '.join(parts)}: this app does not read "
        f"{'them' if many else 'it'} (python train.py --help lists the options)"
    )


def config_dir() -> Path:
    """The ``conf`` directory: inside an installed wheel (``ns_plugins/conf``), or at the root of a
    checkout."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no Hydra config directory (conf/train.yaml) in or next to {package}")


register_configs()
