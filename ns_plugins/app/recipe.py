"""What a run trains on: its corpus recipe (the config's data settings, as the corpus cache keys
them), the cache directory it lives in, and the initial weights from ``init_vectors``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ns_plugins.app.checks import ConfigError
from ns_plugins.app.config import DataSource
from ns_plugins.engines.base import initial_weights

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class CorpusRecipe:
    """A run's corpus settings as the corpus cache keys them: made once from the config
    (``from_config``) and handed unchanged to the encoder started early and to the data module,
    so both ask the cache for the same directory. Across nodes (``sharded``) no encoder starts
    early and each rank asks for its own shard (``prepare_shard``)."""

    source: str = "synthetic"
    path: str | None = None
    min_count: int = 5
    max_vocab_size: int | None = None
    max_final_vocab: int | None = None
    tokenizer: str | None = None
    vocab_file: str | None = None
    synthetic_seed: int = 0
    synthetic_sentences: int = 40000

    @classmethod
    def from_config(cls, cfg: DictConfig) -> CorpusRecipe:
        data = cfg.data
        tokenizer = OmegaConf.select(cfg, "data.tokenizer", default=None)
        return cls(
            source=DataSource(data.source).value,
            path=None if data.path is None else str(data.path),
            min_count=int(cfg.min_count),
            max_vocab_size=data.max_vocab_size,
            max_final_vocab=OmegaConf.select(cfg, "data.max_final_vocab", default=None),
            tokenizer=getattr(tokenizer, "value", tokenizer),
            vocab_file=OmegaConf.select(cfg, "data.vocab_file", default=None),
            synthetic_seed=int(data.synthetic_seed),
            synthetic_sentences=int(data.synthetic_sentences),
        )

    def prepare(self, cache_dir) -> Path:
        """The encoded corpus (and a synthetic corpus's ground truth) in the cache ``cache_dir``,
        encoded unless a run already did for this recipe; returns its directory."""
        from ns_plugins.data.cache import prepare_cached_corpus

        return prepare_cached_corpus(
            Path(cache_dir), self.source, self.path, self.min_count, self.max_vocab_size,
            self.max_final_vocab, self.tokenizer, self.vocab_file,
            synthetic_seed=self.synthetic_seed, synthetic_sentences=self.synthetic_sentences,
        )  # fmt: skip

    def sharded(self, num_nodes: int) -> bool:
        """Whether each rank encodes only its own part of the corpus (``prepare_shard``) instead
        of every node encoding all of it: a text corpus on more than one node. One node reads
        the whole corpus either way: the early encoder reads it once while torch imports and
        the ranks map that one encoding (the one-node layout exactly); shards would read the
        same bytes, only later, once the process group is up."""
        return self.source == "text" and num_nodes > 1

    def prepare_shard(self, cache_dir, rank: int, world_size: int, all_gather, workers=None):
        """This rank's shard of the corpus (an ``EncodedCorpus``: the whole corpus's vocabulary,
        the ids of part ``rank`` of ``world_size`` only), encoded in the cache ``cache_dir``
        unless a run already did; every rank calls it (see ``cache.prepare_corpus_shard``)."""
        from ns_plugins.data.cache import prepare_corpus_shard

        return prepare_corpus_shard(
            self.path, Path(cache_dir), rank, world_size, all_gather, self.min_count,
            self.max_vocab_size, self.tokenizer, max_final_vocab=self.max_final_vocab,
            vocab_file=self.vocab_file, workers=workers,
        )  # fmt: skip


def open_run_data(cache_dir: Path):
    """(EncodedCorpus, ground truth dict or None) of a directory ``CorpusRecipe.prepare``
    returned, or of the corpus prepared last in the cache ``cache_dir``."""
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
