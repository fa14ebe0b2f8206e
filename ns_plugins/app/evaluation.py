"""Standard word-embedding evaluations for training runs, computed as gensim's ``KeyedVectors``
computes them, by :mod:`ns_plugins.embeddings` (this module only adapts its scores to a run):

- word similarity (WordSim-353, SimLex-999): Spearman correlation between human scores and cosine
  similarity, as ``evaluate_word_pairs`` (case-insensitive, pairs with unknown words skipped);
- analogies (Google ``questions-words.txt``): 3CosAdd as ``evaluate_word_analogies``: the answer is
  the nearest of the ``restrict_vocab`` most frequent words to ``b - a + c`` (unit vectors), the
  three question words excluded; questions with unknown words are skipped;
- nearest neighbours by cosine similarity; planted-structure scores for the synthetic corpus.

The functions take ``(words, vectors)`` (numpy arrays or torch tensors; torch is never imported
here) and return flat numbers for ``metrics.json``. :func:`check_eval_files` reads the evaluation
files before a run trains, so that a bad one fails at the start.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from ns_plugins.embeddings import (
    KeyedVectors,
    analogy_scores,
    load_analogies,
    load_similarity,
    pair_similarities,
    spearman,
)
from ns_plugins.errors import UsageError

__all__ = [
    "check_eval_files",
    "load_similarity",
    "load_analogies",
    "similarity_spearman",
    "analogy_accuracy",
    "nearest_neighbours",
    "planted_scores",
    "evaluate_all",
]

# --------------------------------------------------------------------------- files


def check_eval_files(inputs: dict, k: int) -> dict:
    """Read and parse every configured evaluation file once, before training, so that a wrong one
    fails at the start with ``UsageError`` naming the setting, the file and the cause.

    ``inputs`` maps ``wordsim`` / ``simlex`` / ``analogies`` to paths (as ``eval_inputs``
    gives them); ``k`` is ``eval.k``, the number of nearest neighbours shown. Returns the parsed
    files under the same keys, ready for :func:`evaluate_all`.
    """
    if int(k) < 1:
        raise UsageError(f"eval.k must be >= 1 (nearest neighbours per query word), got {k}")
    readers = {"wordsim": load_similarity, "simlex": load_similarity, "analogies": load_analogies}
    unknown = sorted(set(inputs) - set(readers))
    if unknown:
        raise UsageError(f"unknown evaluation input(s) {unknown}; known: {sorted(readers)}")
    parsed = {}
    for key, path in inputs.items():
        try:
            parsed[key] = readers[key](path)
        except FileNotFoundError:
            raise UsageError(f"evaluation file not found: eval.{key}={path}") from None
        except UsageError as err:
            raise UsageError(f"eval.{key}: {err}") from None
        except OSError as err:
            raise UsageError(f"eval.{key}={path}: cannot be read ({err.strerror})") from None
    return parsed


# --------------------------------------------------------------------------- metrics


def _kv(words: Sequence[str], vectors) -> KeyedVectors:
    return KeyedVectors.from_words(words, vectors)


def similarity_spearman(
    words: Sequence[str],
    vectors,
    pairs,
    restrict_vocab: int = 300000,
    case_insensitive: bool = True,
) -> tuple[float, int, int]:
    """Spearman correlation of cosine similarity with human scores.

    ``pairs`` is a path (see :func:`load_similarity`) or a sequence of ``(word1, word2, score)``.
    Returns ``(rho, n_used, n_oov)``; pairs with a word outside the first ``restrict_vocab`` words
    are skipped and counted in ``n_oov``. ``rho`` is NaN when fewer than two pairs are usable.
    """
    if isinstance(pairs, (str, Path)):
        pairs = load_similarity(pairs)
    gold, model, n_oov = pair_similarities(
        _kv(words, vectors), pairs, restrict_vocab, case_insensitive
    )
    return spearman(gold, model), len(gold), n_oov


def analogy_accuracy(
    words: Sequence[str],
    vectors,
    path,
    restrict_vocab: int = 300000,
    case_insensitive: bool = True,
) -> dict:
    """3CosAdd analogy accuracy over the ``restrict_vocab`` most frequent words.

    ``path`` is an analogy file (see :func:`load_analogies`) or its parsed sections. Returns
    ``{"accuracy", "correct", "answered", "skipped", "total", "sections": [...]}`` where
    ``accuracy = correct / answered`` (0.0 when nothing was answered, as gensim) and each section
    entry has ``section``, ``correct``, ``answered``, ``accuracy``.
    """
    sections = load_analogies(path) if isinstance(path, (str, Path)) else path
    return analogy_scores(_kv(words, vectors), sections, restrict_vocab, case_insensitive)


def nearest_neighbours(
    words: Sequence[str], vectors, queries: Iterable[str], k: int = 10
) -> dict[str, list[tuple[str, float]]]:
    """The ``k`` words with the highest cosine similarity to each query (the query excluded).

    Queries not in the vocabulary are left out of the result.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return _kv(words, vectors).nearest(queries, k)


def planted_scores(words: Sequence[str], vectors, ground_truth, k: int = 10) -> dict[str, float]:
    """Scores on the synthetic corpus's planted structure.

    ``ground_truth`` is a dict or a ``ground_truth.json`` path with ``clusters`` ({word: id}) and/or
    ``analogies`` ([[a, b, c, d], ...]). Returns ``planted_purity`` (mean share of each clustered
    word's ``k`` nearest clustered words in its cluster; chance is about 1/number of clusters) and
    ``planted_analogy`` (3CosAdd accuracy over the whole vocabulary, case-sensitive) for what the
    ground truth holds, plus ``planted_analogy_answered``. The scoring itself is the synthetic
    corpus's own (:mod:`ns_plugins.data.synthetic`); NaN where no word of the structure is known.
    """
    from ns_plugins.data.synthetic import analogy_accuracy as planted_analogy
    from ns_plugins.data.synthetic import neighbour_purity

    if isinstance(ground_truth, (str, Path)):
        ground_truth = json.loads(Path(ground_truth).read_text(encoding="utf-8"))
    words = list(words)
    vectors = KeyedVectors.from_words(words, vectors).vectors
    present = set(words)
    scores: dict[str, float] = {}
    clusters = ground_truth.get("clusters") or {}
    n_clustered = sum(w in clusters for w in present)
    if n_clustered >= 2:
        k = min(k, n_clustered - 1)
        scores["planted_purity"] = neighbour_purity(vectors, words, clusters, k)
    elif clusters:
        scores["planted_purity"] = math.nan
    analogies = ground_truth.get("analogies") or []
    answerable = sum(all(w in present for w in quad) for quad in analogies)
    if analogies:
        scores["planted_analogy"] = (
            planted_analogy(vectors, words, analogies) if answerable else math.nan
        )
        scores["planted_analogy_answered"] = answerable
    return scores


def evaluate_all(
    words: Sequence[str],
    vectors,
    wordsim=None,
    simlex=None,
    analogies=None,
    ground_truth=None,
    restrict_vocab: int = 300000,
) -> dict[str, float | int]:
    """Every evaluation whose input is given, as one flat dict for ``metrics.json`` and loggers.

    Keys: ``wordsim353``, ``wordsim353_pairs``, ``wordsim353_oov``; ``simlex999``,
    ``simlex999_pairs``, ``simlex999_oov``; ``analogy``, ``analogy_correct``, ``analogy_answered``,
    ``analogy_skipped``; and :func:`planted_scores` keys for ``ground_truth``. Inputs that are None
    are left out.
    """
    out: dict[str, float | int] = {}
    for name, pairs in (("wordsim353", wordsim), ("simlex999", simlex)):
        if pairs is not None:
            rho, used, oov = similarity_spearman(words, vectors, pairs, restrict_vocab)
            out.update({name: rho, f"{name}_pairs": used, f"{name}_oov": oov})
    if analogies is not None:
        res = analogy_accuracy(words, vectors, analogies, restrict_vocab)
        out.update(
            analogy=res["accuracy"],
            analogy_correct=res["correct"],
            analogy_answered=res["answered"],
            analogy_skipped=res["skipped"],
        )
    if ground_truth is not None:
        out.update(planted_scores(words, vectors, ground_truth))
    return out


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
            self._loaded = check_eval_files(self.inputs, self.k)
        return self._loaded

    def evaluate(self, words, vectors, ground_truth=None, analogies: bool = True) -> dict:
        """Score ``vectors``; ``analogies=False`` leaves the analogy set out (the costly one:
        about 0.7 s a time on gcide against 0.1 s for both similarity sets)."""
        sets = self.load()
        if not analogies:
            sets = {k: v for k, v in sets.items() if k != "analogies"}
        self.complete = len(sets) == len(self.load())
        scores = evaluate_all(words, vectors, ground_truth=ground_truth, **sets)
        queries = self.queries or words[: min(5, len(words))]
        self.neighbours = nearest_neighbours(words, vectors, queries, k=self.k)
        self.scores = scores
        return scores

    def finite_scores(self) -> dict:
        """The scores with NaN/inf as None (JSON has no NaN)."""
        return {
            k: (v if not isinstance(v, float) or math.isfinite(v) else None)
            for k, v in self.scores.items()
        }
