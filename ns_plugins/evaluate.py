"""Standard word-embedding evaluations, computed the way gensim's ``KeyedVectors`` computes them.

- word similarity (WordSim-353, SimLex-999): Spearman correlation between human scores and cosine
  similarity, as ``evaluate_word_pairs`` (case-insensitive, pairs with unknown words skipped);
- analogies (Google ``questions-words.txt``): 3CosAdd as ``evaluate_word_analogies``: the answer is
  the nearest of the ``restrict_vocab`` most frequent words to ``b - a + c`` (unit vectors), the
  three question words excluded; questions with unknown words are skipped;
- nearest neighbours by cosine similarity; planted-structure scores for the synthetic corpus.

Vocabularies are in frequency order, most frequent first, as everywhere in this package. With
``case_insensitive`` a word that occurs in several cases takes the vector of its most frequent form.
All scoring runs as chunked numpy matrix products, so a 46k-word vocabulary against the 19.5k
Google questions takes seconds. Vectors may be numpy arrays or torch tensors; this module does not
import torch itself, so evaluating saved vectors never loads it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "load_similarity",
    "load_analogies",
    "similarity_spearman",
    "analogy_accuracy",
    "nearest_neighbours",
    "planted_scores",
    "evaluate_all",
]

# Query rows times vocabulary entries scored at once: 32 MiB of float32, reused across batches.
# Fewer rows make the matrix product slower per row; picking the top k adds only a few MiB.
_CHUNK_ELEMS = 1 << 23


# --------------------------------------------------------------------------- files


def _read_lines(path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation file at {path}")
    return path.read_text(encoding="utf-8").splitlines()


def load_similarity(path) -> list[tuple[str, str, float]]:
    """Read word pairs with human scores: ``word1<TAB>word2<TAB>score`` lines, ``#`` comments.

    This is the format of gensim's bundled ``wordsim353.tsv`` and ``simlex999.txt``. Lines that do
    not parse are skipped (as gensim does); a file with no valid pair is an error.
    """
    pairs = []
    for line in _read_lines(path):
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        try:
            score = float(parts[2])
        except ValueError:
            continue
        pairs.append((parts[0], parts[1], score))
    if not pairs:
        raise ValueError(f"{path}: no 'word<TAB>word<TAB>score' lines found")
    return pairs


def load_analogies(path) -> list[tuple[str, list[tuple[str, str, str, str]]]]:
    """Read an analogy file: ``: section`` headers, then ``a b c d`` lines (``a:b = c:d``).

    Returns ``[(section, [(a, b, c, d), ...]), ...]``. Lines without exactly four words are
    skipped, as gensim does; a question before the first header is an error.
    """
    sections: list[tuple[str, list]] = []
    for line_no, line in enumerate(_read_lines(path), 1):
        if line.startswith(": "):
            sections.append((line.lstrip(": ").strip(), []))
            continue
        if not sections:
            raise ValueError(f"{path}: line {line_no}: question before the first ': section' line")
        parts = line.split()
        if len(parts) == 4:
            sections[-1][1].append(tuple(parts))
    if not sections:
        raise ValueError(f"{path}: no ': section' header found; not an analogy file")
    return sections


# --------------------------------------------------------------------------- helpers


def _as_matrix(words: Sequence[str], vectors) -> np.ndarray:
    if hasattr(vectors, "detach") and hasattr(vectors, "cpu"):
        # a torch tensor, taken without importing torch (.float() also covers bfloat16)
        vectors = vectors.detach().cpu().float().numpy()
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D (words x dim), got shape {tuple(vectors.shape)}")
    if vectors.shape[0] != len(words):
        raise ValueError(f"got {len(words)} words for {vectors.shape[0]} vectors")
    return vectors


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def _top_k(scores: np.ndarray, k: int, nan_possible: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(values, indices)`` of the ``k`` largest entries of each row, largest first.

    NaN ranks above every number, as in ``torch.topk``; equal values come lowest index first, so
    the result never depends on the order a partition leaves ties in. Needs ``1 <= k <= columns``;
    ``scores`` is used as scratch.
    """
    if nan_possible:
        # true scores are dot products of unit vectors, never +inf, so +inf can stand for NaN
        scores[np.isnan(scores)] = np.inf
    m, n = scores.shape
    blocks = max(64, 4 * k)
    if n < 2 * blocks:  # short rows: partition them whole
        bound = np.partition(scores, n - k, axis=1)[:, n - k, None]
        mask = scores >= bound
        many = np.count_nonzero(mask) > 4 * k * m
        if not many:
            rows, cols = np.nonzero(mask)
    else:
        # The k-th largest block maximum bounds each row's k-th largest value from below and few
        # entries reach it; only blocks whose maximum does need a second look. That is one pass
        # over the scores instead of a partition of whole rows. The last block runs on into the
        # tail, which is always looked at.
        width = n // blocks
        split = blocks * width
        maxima = np.maximum.reduceat(scores, np.arange(0, split, width), axis=1)
        bound = np.partition(maxima, blocks - k, axis=1)[:, blocks - k, None]
        br, bb = np.nonzero(maxima >= bound)
        many = br.size > 4 * k * m
        if not many:
            body = scores[:, :split].reshape(m, blocks, width)
            sr, sc = np.divmod(np.flatnonzero(body[br, bb] >= bound[br]), width)
            tr, tc = np.nonzero(scores[:, split:] >= bound)
            rows = np.concatenate([br[sr], tr])
            cols = np.concatenate([bb[sr] * width + sc, tc + split])
    if many:
        # ties galore (rows of zero vectors, say): one row at a time keeps the memory bounded
        values = np.empty((m, k), dtype=scores.dtype)
        top = np.empty((m, k), dtype=np.int64)
        for r, row in enumerate(scores):
            cols = np.flatnonzero(row >= bound[r])
            top[r] = cols[np.argsort(-row[cols], kind="stable")[:k]]
            values[r] = row[top[r]]
    else:
        vals = scores[rows, cols]
        order = np.lexsort((cols, -vals, rows))
        # every row has at least k candidates, so its best k follow its first one
        take = np.searchsorted(rows[order], np.arange(m))[:, None] + np.arange(k)
        values, top = vals[order][take], cols[order][take]
    if nan_possible:
        values[values == np.inf] = np.nan
    return values, top


def _lookup(words: Sequence[str], restrict_vocab: int | None, case_insensitive: bool):
    """Key -> index over the first ``restrict_vocab`` words; the first (most frequent) form wins."""
    ok = list(words[:restrict_vocab] if restrict_vocab else words)
    norm = str.upper if case_insensitive else str
    index: dict[str, int] = {}
    for i, w in enumerate(ok):
        index.setdefault(norm(w), i)
    return index, norm, len(ok)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho with average ranks for ties (scipy.stats.spearmanr's definition)."""

    def ranks(x):
        order = np.argsort(x, kind="mergesort")
        xs = x[order]
        starts = np.r_[True, xs[1:] != xs[:-1]]
        group = np.cumsum(starts) - 1
        bounds = np.r_[np.flatnonzero(starts), len(x)]
        avg = 0.5 * (bounds[:-1] + bounds[1:] - 1) + 1
        r = np.empty(len(x))
        r[order] = avg[group]
        return r

    if len(a) < 2:
        return math.nan
    ra, rb = ranks(np.asarray(a, float)), ranks(np.asarray(b, float))
    ra -= ra.mean()
    rb -= rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / denom if denom > 0 else math.nan


# --------------------------------------------------------------------------- metrics


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
    vecs = _as_matrix(words, vectors)
    index, norm, _ = _lookup(words, restrict_vocab, case_insensitive)
    ia, ib, gold = [], [], []
    n_oov = 0
    for a, b, score in pairs:
        a, b = norm(a), norm(b)
        if a in index and b in index:
            ia.append(index[a])
            ib.append(index[b])
            gold.append(float(score))
        else:
            n_oov += 1
    if not gold:
        return math.nan, 0, n_oov
    # only the rows in use, in float64
    ua, ub = _unit(vecs[ia].astype(np.float64)), _unit(vecs[ib].astype(np.float64))
    model = (ua * ub).sum(axis=1)
    return _spearman(np.array(gold), model), len(gold), n_oov


def _answer_3cosadd(
    unit: np.ndarray,
    canon: np.ndarray,
    questions: np.ndarray,
    topn: int = 5,
) -> np.ndarray:
    """Predicted index for each ``(a, b, c)`` row of ``questions`` (-1 when nothing is left).

    Follows gensim: take the ``topn`` words nearest to ``b - a + c`` other than the question words'
    own entries, then the first of those whose (case-folded) form is not a question word; if all
    are, the last one. ``canon`` maps each index to the index of its case-folded form.
    """
    n = unit.shape[0]
    out = np.full(questions.shape[0], -1, dtype=np.int64)
    k = min(topn, n)
    if k == 0 or questions.shape[0] == 0:
        return out
    nan_possible = bool(np.isnan(unit).any())
    rows = max(1, _CHUNK_ELEMS // n)
    buf = np.empty((min(rows, questions.shape[0]), n), dtype=np.float32)
    for s in range(0, questions.shape[0], rows):
        q = questions[s : s + rows]
        target = unit[q[:, 1]] - unit[q[:, 0]] + unit[q[:, 2]]
        scores = np.matmul(target, unit.T, out=buf[: len(q)])
        np.put_along_axis(scores, q, -np.inf, axis=1)
        top_scores, top = _top_k(scores, k, nan_possible)
        valid = top_scores > -np.inf
        cq = canon[top]
        fresh = valid & (cq != q[:, :1]) & (cq != q[:, 1:2]) & (cq != q[:, 2:3])
        # first fresh candidate; otherwise the last valid one (gensim keeps the loop's last value)
        last_valid = valid.sum(axis=1) - 1
        first_fresh = np.where(fresh.any(axis=1), fresh.argmax(axis=1), last_valid)
        pick = np.take_along_axis(top, np.maximum(first_fresh, 0)[:, None], axis=1)[:, 0]
        out[s : s + rows] = np.where(first_fresh >= 0, pick, -1)
    return out


def _analogy_sections(
    words: Sequence[str],
    vectors,
    sections: Iterable[tuple[str, Sequence[Sequence[str]]]],
    restrict_vocab: int | None,
    case_insensitive: bool,
) -> dict:
    vecs = _as_matrix(words, vectors)
    index, norm, n_ok = _lookup(words, restrict_vocab, case_insensitive)
    unit = _unit(vecs[:n_ok])
    canon = np.array([index[norm(w)] for w in words[:n_ok]], dtype=np.int64)

    names, quads, owner = [], [], []
    skipped = total = 0
    for name, questions in sections:
        names.append(name)
        for question in questions:
            total += 1
            key = [norm(w) for w in question]
            if all(k in index for k in key):
                quads.append([index[k] for k in key])
                owner.append(len(names) - 1)
            else:
                skipped += 1
    quads_a = np.array(quads, dtype=np.int64).reshape(-1, 4)
    predicted = _answer_3cosadd(unit, canon, quads_a[:, :3])
    # compared by case-folded form, as gensim compares upper-cased words
    correct = (predicted >= 0) & (canon[np.maximum(predicted, 0)] == quads_a[:, 3])
    owner_a = np.array(owner, dtype=np.int64)
    per_correct = np.bincount(owner_a[correct], minlength=len(names)).tolist()
    per_answered = np.bincount(owner_a, minlength=len(names)).tolist()

    def acc(c, n):
        return c / n if n else 0.0  # gensim's convention for an empty section

    n_correct, n_answered = int(correct.sum()), len(quads)
    return {
        "accuracy": acc(n_correct, n_answered),
        "correct": n_correct,
        "answered": n_answered,
        "skipped": skipped,
        "total": total,
        "sections": [
            {"section": s, "correct": c, "answered": n, "accuracy": acc(c, n)}
            for s, c, n in zip(names, per_correct, per_answered)
        ],
    }


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
    return _analogy_sections(words, vectors, sections, restrict_vocab, case_insensitive)


def nearest_neighbours(
    words: Sequence[str], vectors, queries: Iterable[str], k: int = 10
) -> dict[str, list[tuple[str, float]]]:
    """The ``k`` words with the highest cosine similarity to each query (the query excluded).

    Queries not in the vocabulary are left out of the result.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    vecs = _as_matrix(words, vectors)
    index = {w: i for i, w in enumerate(words)}
    found = [q for q in dict.fromkeys(queries) if q in index]
    if not found or len(words) < 2:
        return {}
    unit = _unit(vecs)
    qi = np.array([index[q] for q in found], dtype=np.int64)
    k = min(k, len(words) - 1)
    nan_possible = bool(np.isnan(unit).any())
    rows = max(1, _CHUNK_ELEMS // len(words))
    buf = np.empty((min(rows, len(found)), len(words)), dtype=np.float32)
    out = {}
    for lo in range(0, len(found), rows):
        q = qi[lo : lo + rows]
        scores = np.matmul(unit[q], unit.T, out=buf[: len(q)])
        scores[np.arange(len(q)), q] = -np.inf
        top_scores, top = _top_k(scores, k, nan_possible)
        for word, row, srow in zip(found[lo : lo + rows], top.tolist(), top_scores.tolist()):
            out[word] = [(words[j], s) for j, s in zip(row, srow)]
    return out


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
    vectors = _as_matrix(words, vectors)
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
