"""What every training run shares, without torch: config checks, engine choice, the run's corpus,
evaluation, export, metrics files and the report; and ``train``, which picks the driver.

The hogwild engine (one CPU process, numba threads updating the weights in place) runs in
``ns_plugins.hogwild_run`` and never imports torch or Lightning; every other run goes through
Lightning in ``ns_plugins.lightning.run``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ns_plugins.config import Arch, Backend, DataSource, Engine, GradSync, Optimizer
from ns_plugins.errors import UsageError

__all__ = [
    "PLANTED_PURITY_LEARNED",
    "ConfigError",
    "RunEvaluator",
    "check_config",
    "eval_inputs",
    "export_run",
    "linear_decay",
    "open_run_data",
    "prepare_run_data",
    "resolve_engine",
    "train",
    "write_json",
    "write_report",
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
    if devices(cfg) < 1 or num_nodes(cfg) < 1:
        raise ConfigError("devices and num_nodes must be >= 1")
    gpu = cfg.device.accelerator in ("gpu", "cuda")
    if gpu and not _cuda_available():
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
    if engine is Engine.hogwild:
        if cfg.model.arch is Arch.cbow and not cfg.model.cbow_mean:
            raise ConfigError("the hogwild engine averages CBOW contexts (model.cbow_mean=true)")
        if cfg.model.chunk_words < 1:
            raise ConfigError(f"model.chunk_words must be >= 1, got {cfg.model.chunk_words}")
        if cfg.ckpt_path is not None and Path(cfg.ckpt_path).suffix != ".npz":
            raise ConfigError(
                f"ckpt_path={cfg.ckpt_path}: the hogwild engine resumes from its own checkpoints "
                "(checkpoints/last.npz or interrupted.npz of a hogwild run)"
            )


def resolve_engine(cfg: DictConfig) -> Engine:
    """``auto`` is hogwild on one CPU process (numba is a dependency), batched elsewhere."""
    engine = cfg.model.engine
    if engine is Engine.batched:
        return engine
    one_cpu = cfg.device.accelerator == "cpu" and devices(cfg) * num_nodes(cfg) == 1
    if engine is Engine.auto:
        return Engine.hogwild if one_cpu else Engine.batched
    if not one_cpu:
        raise ConfigError(
            "model.engine=hogwild runs in one CPU process (its threads share the weights); "
            "use device=cpu, or model.engine=batched"
        )
    return engine


def linear_decay(step: int, total: int, alpha: float, min_alpha: float) -> float:
    """word2vec's learning rate: linear from ``alpha`` at step 0 to ``min_alpha`` at ``total``."""
    if total <= 0:
        return alpha
    return alpha - (alpha - min_alpha) * min(step / total, 1.0)


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


def prepare_run_data_for(cfg: DictConfig, cache_dir: Path) -> Path:
    data = cfg.data
    return prepare_run_data(
        cache_dir,
        data.source,
        data.path,
        cfg.min_count,
        data.max_vocab_size,
        data.synthetic_seed,
        data.synthetic_sentences,
        max_final_vocab=OmegaConf.select(cfg, "data.max_final_vocab", default=None),
        tokenizer=OmegaConf.select(cfg, "data.tokenizer", default=None),
        vocab_file=OmegaConf.select(cfg, "data.vocab_file", default=None),
    )


def open_run_data(cache_dir: Path):
    """(EncodedCorpus, ground truth dict or None): of the directory ``prepare_run_data`` returned,
    or the corpus prepared last in the cache ``cache_dir``."""
    from ns_plugins.data.cache import open_cached_corpus

    return open_cached_corpus(cache_dir)


def cache_dir_of(cfg: DictConfig, run_dir: Path) -> Path:
    return Path(cfg.data.cache_dir) if cfg.data.cache_dir else run_dir / "data"


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
        self._loaded: dict | None = None

    def _load(self) -> dict:
        if self._loaded is None:
            from ns_plugins import evaluate

            loaded = {}
            for key in ("wordsim", "simlex"):
                if key in self.inputs:
                    loaded[key] = evaluate.load_similarity(self.inputs[key])
            if "analogies" in self.inputs:
                loaded["analogies"] = evaluate.load_analogies(self.inputs["analogies"])
            self._loaded = loaded
        return self._loaded

    def evaluate(self, words, vectors, ground_truth=None) -> dict:
        from ns_plugins import evaluate

        scores = evaluate.evaluate_all(words, vectors, ground_truth=ground_truth, **self._load())
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
    save_word2vec(run_dir / "vectors.txt", words, vectors, binary=False)
    save_word2vec(run_dir / "vectors.bin", words, vectors, binary=True)
    with open(run_dir / "vocab.tsv", "w", encoding="utf-8") as f:
        for w, c in zip(words, counts):
            f.write(f"{w}\t{int(c)}\n")


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def finish_run(cfg: DictConfig, run_dir: Path, metrics: dict, cache_dir: Path) -> None:
    """metrics.json, the ground truth next to it, the report, and a closing log line."""
    import shutil

    if "planted_purity" in metrics["eval"] and metrics["eval"]["planted_purity"] is not None:
        metrics["planted_learned"] = metrics["eval"]["planted_purity"] >= PLANTED_PURITY_LEARNED
    truth = cache_dir / "ground_truth.json"
    if truth.is_file() and truth.resolve() != (run_dir / "ground_truth.json").resolve():
        shutil.copyfile(truth, run_dir / "ground_truth.json")
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


# ---------------------------------------------------------------------------------- entry point
def train(cfg: DictConfig, run_dir, extra_callbacks=()) -> dict:
    """Check ``cfg``, train with the engine it resolves to, write the run directory, and return
    the final metrics (empty on ranks other than 0). ``extra_callbacks`` are Lightning callbacks,
    for Lightning runs only."""
    check_config(cfg)
    if resolve_engine(cfg) is Engine.hogwild:
        from ns_plugins.hogwild_run import train as train_hogwild

        return train_hogwild(cfg, Path(run_dir))
    from ns_plugins.lightning.run import train as train_lightning

    return train_lightning(cfg, Path(run_dir), extra_callbacks)
