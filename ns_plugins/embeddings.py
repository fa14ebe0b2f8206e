"""Word vectors with gensim 4's ``KeyedVectors`` interface: lookup, similarity, evaluation and the
word2vec text and binary formats.

``KeyedVectors`` is the one embeddings type of this package: runs export through it, the run
evaluation and the report score through it, and ``Word2Vec.wv`` is one. Results follow gensim's
definitions (3CosAdd analogies over the ``restrict_vocab`` most frequent words, Spearman and
Pearson correlations with two-sided p-values, upper-cased lookups for ``case_insensitive``). Keys
are in frequency order, most frequent first. Scoring runs as chunked numpy matrix products; this
module imports neither torch nor scipy (a torch tensor given as vectors is converted without
importing torch).

The evaluation file readers live here too (``load_similarity``, ``load_analogies``): a file that
cannot be decoded, has the wrong layout or holds no usable row raises ``UsageError`` naming it.
"""

from __future__ import annotations

import logging
import math
from collections import namedtuple
from collections.abc import Iterable, Sequence
from numbers import Integral
from pathlib import Path

import numpy as np

from ns_plugins.errors import UsageError

__all__ = ["Correlation", "KeyedVectors", "load_analogies", "load_similarity"]

log = logging.getLogger(__name__)

# Query rows times vocabulary entries scored at once: 32 MiB of float32, reused across batches.
# Fewer rows make the matrix product slower per row; picking the top k adds only a few MiB.
_CHUNK_ELEMS = 1 << 23


class Correlation(namedtuple("Correlation", ["statistic", "pvalue"])):
    """A correlation with its two-sided p-value; indexable like scipy's results (``r[0]``)."""

    @property
    def correlation(self) -> float:
        return self.statistic


# --------------------------------------------------------------------------- evaluation files


def _read_lines(path, encoding: str = "utf-8") -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation file at {path}")
    try:
        return path.read_text(encoding=encoding).splitlines()
    except UnicodeDecodeError as err:
        raise UsageError(
            f"{path}: not {encoding} text (byte {err.start} cannot be decoded); "
            "evaluation files are plain UTF-8 text"
        ) from None


def load_similarity(path, delimiter: str = "\t", encoding: str = "utf-8"):
    """Read word pairs with human scores: ``word1<TAB>word2<TAB>score`` lines, ``#`` comments.

    This is the format of gensim's bundled ``wordsim353.tsv`` and ``simlex999.txt``. Lines that do
    not parse are skipped (as gensim does); a file with no valid pair raises ``UsageError``.
    """
    pairs = []
    for line in _read_lines(path, encoding):
        if not line or line.startswith("#"):
            continue
        parts = line.split(delimiter)
        if len(parts) != 3:
            continue
        try:
            score = float(parts[2])
        except ValueError:
            continue
        pairs.append((parts[0], parts[1], score))
    if not pairs:
        raise UsageError(
            f"{path}: no 'word<TAB>word<TAB>score' lines found; not a word-similarity file"
        )
    return pairs


def load_analogies(path, encoding: str = "utf-8"):
    """Read an analogy file: ``: section`` headers, then ``a b c d`` lines (``a:b = c:d``).

    Returns ``[(section, [(a, b, c, d), ...]), ...]``. Lines without exactly four words are
    skipped, as gensim does; a question before the first header, or a file with no header or no
    question, raises ``UsageError``.
    """
    sections: list[tuple[str, list]] = []
    for line_no, line in enumerate(_read_lines(path, encoding), 1):
        if line.startswith(": "):
            sections.append((line.lstrip(": ").strip(), []))
            continue
        if not sections:
            if not line.strip():
                continue
            raise UsageError(
                f"{path}: line {line_no}: question before the first ': section' line; "
                "not an analogy file"
            )
        parts = line.split()
        if len(parts) == 4:
            sections[-1][1].append(tuple(parts))
    if not sections:
        raise UsageError(f"{path}: no ': section' header found; not an analogy file")
    if not any(questions for _, questions in sections):
        raise UsageError(f"{path}: no 'a b c d' question lines found")
    return sections


# --------------------------------------------------------------------------- numeric helpers


def _as_matrix(vectors) -> np.ndarray:
    if hasattr(vectors, "detach") and hasattr(vectors, "cpu"):
        # a torch tensor, taken without importing torch (.float() also covers bfloat16)
        vectors = vectors.detach().cpu().float().numpy()
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D (words x dim), got shape {tuple(vectors.shape)}")
    if not np.issubdtype(vectors.dtype, np.floating):
        vectors = vectors.astype(np.float32)
    return vectors


def _row_norms(vectors: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row without a table-sized temporary (np.linalg.norm squares the
    whole table first: 1.2 GB at V = 1M, d = 300)."""
    return np.sqrt(np.einsum("ij,ij->i", vectors, vectors))


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def _unitvec(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


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


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks, ties sharing the mean of their positions (scipy.stats.rankdata's default)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[True, xs[1:] != xs[:-1]]
    group = np.cumsum(starts) - 1
    bounds = np.r_[np.flatnonzero(starts), len(x)]
    avg = 0.5 * (bounds[:-1] + bounds[1:] - 1) + 1
    r = np.empty(len(x))
    r[order] = avg[group]
    return r


def _pearson(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return max(-1.0, min(1.0, float(a @ b) / denom)) if denom > 0 else math.nan


def _spearman(a, b) -> float:
    """Spearman's rho with average ranks for ties (scipy.stats.spearmanr's definition)."""
    if len(a) < 2:
        return math.nan
    return _pearson(_ranks(np.asarray(a, float)), _ranks(np.asarray(b, float)))


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b), by its continued fraction (Lentz's method)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast below this point
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(log_front + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * f


def _correlation(r: float, n: int) -> Correlation:
    """``r`` with the two-sided p-value of the t test with n - 2 degrees of freedom, which is
    ``I_{1 - r^2}((n - 2) / 2, 1 / 2)`` (scipy's ``pearsonr`` and ``spearmanr``)."""
    if math.isnan(r) or n < 3:
        return Correlation(r, math.nan)
    return Correlation(r, _betainc((n - 2) / 2, 0.5, 1.0 - r * r) if abs(r) < 1 else 0.0)


def _answer_3cosadd(unit: np.ndarray, canon: np.ndarray, questions: np.ndarray, topn: int = 5):
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


def _check_keys(keys, n_rows: int) -> list[str]:
    keys = list(keys)
    if len(keys) != n_rows:
        raise ValueError(f"got {len(keys)} words for {n_rows} vectors")
    return keys


# --------------------------------------------------------------------------- the type


class KeyedVectors:
    """Vectors addressed by word, as gensim 4's ``KeyedVectors``.

    ``KeyedVectors(vector_size)`` starts empty (add words with :meth:`add_vectors`);
    :meth:`from_words` wraps existing arrays; :meth:`load_word2vec_format` reads a file.
    ``counts`` (word frequencies, aligned with ``index_to_key``) are kept when known.
    """

    def __init__(self, vector_size: int, dtype=np.float32):
        self.vector_size = int(vector_size)
        self.index_to_key: list[str] = []
        self.key_to_index: dict[str, int] = {}
        self.vectors = np.zeros((0, self.vector_size), dtype=dtype)
        self.counts: np.ndarray | None = None
        self.norms: np.ndarray | None = None

    @classmethod
    def from_words(cls, words: Sequence[str], vectors, counts=None) -> KeyedVectors:
        """Wrap ``vectors`` (``len(words)`` x dim; numpy or torch) without copying numpy input."""
        vectors = _as_matrix(vectors)
        kv = cls(vectors.shape[1], dtype=vectors.dtype)
        kv.index_to_key = _check_keys(words, vectors.shape[0])
        kv.key_to_index = {w: i for i, w in enumerate(kv.index_to_key)}
        if len(kv.key_to_index) != len(kv.index_to_key):
            seen = set()
            dup = next(w for w in kv.index_to_key if w in seen or seen.add(w))
            raise ValueError(f"duplicate word {dup!r}")
        kv.vectors = vectors
        if counts is not None:
            counts = np.asarray(counts, dtype=np.int64)
            if counts.shape != (len(kv.index_to_key),):
                raise ValueError(f"{len(kv.index_to_key)} words but counts of shape {counts.shape}")
            kv.counts = counts
        return kv

    # ------------------------------------------------------------------------------- lookup
    def __len__(self) -> int:
        return len(self.index_to_key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}<vector_size={self.vector_size}, {len(self)} keys>"

    def get_index(self, key, default=None) -> int:
        """The row of ``key``; an int in range stands for itself, as in gensim."""
        val = self.key_to_index.get(key, -1)
        if val >= 0:
            return val
        if isinstance(key, (int, np.integer)) and 0 <= key < len(self.index_to_key):
            return int(key)
        if default is not None:
            return default
        raise KeyError(f"Key '{key}' not present")

    def has_index_for(self, key) -> bool:
        return self.get_index(key, -1) >= 0

    __contains__ = has_index_for

    def get_vector(self, key, norm: bool = False) -> np.ndarray:
        index = self.get_index(key)
        if norm:
            self.fill_norms()
            n = self.norms[index]
            return self.vectors[index] / (n if n > 0 else 1)
        return self.vectors[index]

    def __getitem__(self, key_or_keys):
        if isinstance(key_or_keys, (str, int, np.integer)):
            return self.get_vector(key_or_keys)
        return np.vstack([self.get_vector(key) for key in key_or_keys])

    def get_vecattr(self, key, attr: str):
        if attr != "count" or self.counts is None:
            raise KeyError(f"no attribute {attr!r} stored for these vectors")
        return int(self.counts[self.get_index(key)])

    def add_vectors(self, keys, weights, replace: bool = False) -> None:
        """Append ``keys`` with rows ``weights``; keys already present keep their vectors unless
        ``replace``. New keys get count 0 where counts are kept."""
        if isinstance(keys, str):
            keys, weights = [keys], np.asarray(weights).reshape(1, -1)
        weights = _as_matrix(weights).astype(self.vectors.dtype, copy=False)
        keys = _check_keys(keys, weights.shape[0])
        if weights.shape[1] != self.vector_size:
            raise ValueError(
                f"vectors of size {weights.shape[1]} for vector_size {self.vector_size}"
            )
        old = np.array([k in self.key_to_index for k in keys], dtype=bool)
        if replace and old.any():
            self.vectors[[self.key_to_index[k] for k, o in zip(keys, old) if o]] = weights[old]
        new = [k for k, o in zip(keys, old) if not o]
        for k in new:
            self.key_to_index[k] = len(self.index_to_key)
            self.index_to_key.append(k)
        self.vectors = np.concatenate([self.vectors, weights[~old]])
        if self.counts is not None:
            self.counts = np.concatenate([self.counts, np.zeros(len(new), dtype=np.int64)])
        self.norms = None

    # ------------------------------------------------------------------------------- similarity
    def fill_norms(self, force: bool = False) -> None:
        if self.norms is None or force or len(self.norms) != len(self.vectors):
            self.norms = _row_norms(self.vectors)

    def get_normed_vectors(self) -> np.ndarray:
        """Every vector scaled to unit length (zero vectors stay zero)."""
        self.fill_norms()
        return self.vectors / np.where(self.norms > 0, self.norms, 1)[:, None]

    def get_mean_vector(
        self, keys, weights=None, pre_normalize=True, post_normalize=False, ignore_missing=True
    ) -> np.ndarray:
        """Weighted mean of the keys' vectors (or of vectors given as arrays), as gensim."""
        if len(keys) == 0:
            raise ValueError("cannot compute mean with no input")
        weights = np.ones(len(keys)) if weights is None else np.asarray(weights, dtype=float)
        if len(keys) != weights.shape[0]:
            raise ValueError("keys and weights array must have same number of elements")
        mean = np.zeros(self.vector_size, self.vectors.dtype)
        total = 0.0
        for key, w in zip(keys, weights):
            if isinstance(key, np.ndarray):
                mean += w * key
            elif key in self:
                mean += w * self.get_vector(key, norm=pre_normalize)
            elif not ignore_missing:
                raise KeyError(f"Key '{key}' not present in vocabulary")
            else:
                continue
            total += abs(w)
        if total > 0:
            mean = mean / total
        return _unitvec(mean).astype(self.vectors.dtype) if post_normalize else mean

    def most_similar(
        self,
        positive=None,
        negative=None,
        topn=10,
        clip_start: int = 0,
        clip_end: int | None = None,
        restrict_vocab: int | None = None,
    ):
        """The ``topn`` keys nearest by cosine to the mean of the unit vectors of ``positive``
        minus those of ``negative`` (3CosAdd), the input keys left out. Items may be keys,
        vectors, or ``(key, weight)`` pairs. ``topn=None`` returns every similarity as an array."""
        if isinstance(topn, Integral) and topn < 1:
            return []

        def as_list(x):
            if x is None:
                return []
            return [x] if isinstance(x, (str, int, np.integer, np.ndarray)) else list(x)

        positive, negative = as_list(positive), as_list(negative)
        self.fill_norms()
        clip_end = clip_end or len(self.vectors)
        if restrict_vocab:
            clip_start, clip_end = 0, restrict_vocab
        keys, weight = [], np.r_[np.ones(len(positive)), -np.ones(len(negative))]
        for i, item in enumerate(positive + negative):
            if isinstance(item, (str, int, np.integer, np.ndarray)):
                keys.append(item)
            else:
                keys.append(item[0])
                weight[i] = item[1]
        mean = self.get_mean_vector(keys, weight, pre_normalize=True, post_normalize=True,
                                    ignore_missing=False)  # fmt: skip
        inputs = {self.get_index(k) for k in keys if not isinstance(k, np.ndarray) and k in self}
        norms = self.norms[clip_start:clip_end]
        dists = self.vectors[clip_start:clip_end] @ mean / np.where(norms > 0, norms, 1)
        if not topn:
            return dists
        n_best = min(topn + len(inputs), len(dists))
        best = np.argpartition(-dists, n_best - 1)[:n_best] if n_best < len(dists) else None
        best = np.arange(len(dists)) if best is None else best
        best = best[np.lexsort((best, -dists[best]))]
        result = [
            (self.index_to_key[i + clip_start], float(dists[i]))
            for i in best
            if i + clip_start not in inputs
        ]
        return result[:topn]

    def similar_by_key(self, key, topn=10, restrict_vocab=None):
        return self.most_similar(positive=[key], topn=topn, restrict_vocab=restrict_vocab)

    similar_by_word = similar_by_key

    def similar_by_vector(self, vector, topn=10, restrict_vocab=None):
        return self.most_similar(positive=[vector], topn=topn, restrict_vocab=restrict_vocab)

    def similarity(self, w1, w2) -> float:
        """Cosine similarity of two keys."""
        return float(_unitvec(self.get_vector(w1)) @ _unitvec(self.get_vector(w2)))

    def distance(self, w1, w2) -> float:
        return 1.0 - self.similarity(w1, w2)

    def n_similarity(self, ws1, ws2) -> float:
        """Cosine similarity of the means of two sets of keys."""
        if not (len(ws1) and len(ws2)):
            raise ZeroDivisionError("At least one of the passed list is empty.")
        mean1 = self.get_mean_vector(ws1, pre_normalize=False)
        mean2 = self.get_mean_vector(ws2, pre_normalize=False)
        return float(_unitvec(mean1) @ _unitvec(mean2))

    def rank_by_centrality(self, words, use_norm: bool = True):
        """``[(similarity to the centroid, word), ...]``, most central first; unknown words are
        left out with a warning."""
        used = [w for w in words if w in self]
        if len(used) != len(words):
            log.warning(
                "vectors for words %s are not present, ignoring them", set(words) - set(used)
            )
        if not used:
            raise ValueError("cannot select a word from an empty list")
        vecs = np.vstack([self.get_vector(w, norm=use_norm) for w in used]).astype(np.float32)
        mean = self.get_mean_vector(vecs, post_normalize=True)
        return sorted(zip((vecs @ mean).tolist(), used), reverse=True)

    def doesnt_match(self, words):
        """The word furthest from the centroid of ``words``."""
        return self.rank_by_centrality(words)[-1][1]

    def nearest(self, queries: Iterable[str], topn: int = 10) -> dict[str, list[tuple[str, float]]]:
        """``most_similar(q, topn=topn)`` for many keys at once (queries not present are left
        out), as batched matrix products; equal scores come lowest index first."""
        if topn < 1:
            raise ValueError(f"k must be at least 1, got {topn}")
        found = [q for q in dict.fromkeys(queries) if q in self.key_to_index]
        n = len(self)
        if not found or n < 2:
            return {}
        # Scaled by the inverse norms after the product: no unit-length copy of the whole table
        # (at V = 1M, d = 300 that copy alone is 1.2 GB).
        vectors = self.vectors.astype(np.float32, copy=False)
        norms = _row_norms(vectors)
        inv = (1.0 / np.where(norms > 0, norms, 1)).astype(np.float32)
        qi = np.array([self.key_to_index[q] for q in found], dtype=np.int64)
        k = min(topn, n - 1)
        nan_possible = bool(np.isnan(norms).any())
        rows = max(1, _CHUNK_ELEMS // n)
        buf = np.empty((min(rows, len(found)), n), dtype=np.float32)
        out = {}
        for lo in range(0, len(found), rows):
            q = qi[lo : lo + rows]
            scores = np.matmul(vectors[q] * inv[q, None], vectors.T, out=buf[: len(q)])
            scores *= inv
            scores[np.arange(len(q)), q] = -np.inf
            top_scores, top = _top_k(scores, k, nan_possible)
            for word, row, srow in zip(found[lo : lo + rows], top.tolist(), top_scores.tolist()):
                out[word] = [(self.index_to_key[j], s) for j, s in zip(row, srow)]
        return out

    # ------------------------------------------------------------------------------- evaluation
    def _ok_vocab(self, restrict_vocab, case_insensitive: bool):
        """Key -> row over the first ``restrict_vocab`` keys; the first (most frequent) form of a
        key wins when case is folded. Returns (index, fold, number of rows)."""
        ok = self.index_to_key[:restrict_vocab] if restrict_vocab else self.index_to_key
        fold = str.upper if case_insensitive else str
        index: dict[str, int] = {}
        for i, w in enumerate(ok):
            index.setdefault(fold(w), i)
        return index, fold, len(ok)

    def pair_similarities(self, pairs, restrict_vocab=300000, case_insensitive=True):
        """``(gold, model, n_oov)`` for ``(word1, word2, score)`` pairs: human scores and cosine
        similarities (float64) of the pairs whose words are among the first ``restrict_vocab``."""
        index, fold, _ = self._ok_vocab(restrict_vocab, case_insensitive)
        ia, ib, gold = [], [], []
        n_oov = 0
        for a, b, score in pairs:
            a, b = fold(a), fold(b)
            if a in index and b in index:
                ia.append(index[a])
                ib.append(index[b])
                gold.append(float(score))
            else:
                n_oov += 1
        vecs = _as_matrix(self.vectors)
        ua, ub = _unit(vecs[ia].astype(np.float64)), _unit(vecs[ib].astype(np.float64))
        return np.array(gold), (ua * ub).sum(axis=1), n_oov

    def evaluate_word_pairs(
        self,
        pairs,
        delimiter: str = "\t",
        encoding: str = "utf8",
        restrict_vocab: int = 300000,
        case_insensitive: bool = True,
        dummy4unknown: bool = False,
    ):
        """``(pearson, spearman, oov_ratio)`` against human similarity scores, as gensim: each
        correlation a ``(statistic, pvalue)`` pair, ``oov_ratio`` the percentage of pairs with a
        word outside the first ``restrict_vocab`` keys (skipped, or scored 0 with
        ``dummy4unknown``). ``pairs`` is a file path or ``(word1, word2, score)`` triples."""
        if isinstance(pairs, (str, Path)):
            name, pairs = pairs, load_similarity(pairs, delimiter, encoding)
        else:
            name, pairs = "the given pairs", list(pairs)
        gold, model, n_oov = self.pair_similarities(pairs, restrict_vocab, case_insensitive)
        if dummy4unknown and n_oov:
            index, fold, _ = self._ok_vocab(restrict_vocab, case_insensitive)
            missing = [s for a, b, s in pairs if fold(a) not in index or fold(b) not in index]
            gold, model = np.r_[gold, missing], np.r_[model, np.zeros(len(missing))]
        if not len(gold):
            raise ValueError(
                f"No valid similarity judgements found in {name}: either invalid format or all "
                f"are out-of-vocabulary in {self}"
            )
        n = len(gold)
        pearson = _correlation(_pearson(gold, model), n)
        spearman = _correlation(_spearman(gold, model), n)
        oov_ratio = 100.0 * n_oov / (n if dummy4unknown else n + n_oov)
        log.info("Pearson correlation coefficient against %s: %.4f", name, pearson[0])
        log.info("Spearman rank-order correlation coefficient against %s: %.4f", name, spearman[0])
        log.info("Pairs with unknown words ratio: %.1f%%", oov_ratio)
        return pearson, spearman, oov_ratio

    def analogy_answers(self, sections, restrict_vocab=300000, case_insensitive=True):
        """Answer every question of ``[(section, [(a, b, c, d), ...]), ...]`` by 3CosAdd among the
        first ``restrict_vocab`` keys. Returns ``[(section, [(question folded, answered,
        correct), ...]), ...]``; a question with a word outside those keys is not answered."""
        index, fold, n_ok = self._ok_vocab(restrict_vocab, case_insensitive)
        vecs = _as_matrix(self.vectors)
        unit = _unit(vecs[:n_ok].astype(np.float32, copy=False))
        canon = np.array([index[fold(w)] for w in self.index_to_key[:n_ok]], dtype=np.int64)
        folded, quads = [], []
        for name, questions in sections:
            qs = [tuple(fold(w) for w in q) for q in questions]
            folded.append((name, qs))
            quads += [[index[w] for w in q] for q in qs if all(w in index for w in q)]
        quads_a = np.array(quads, dtype=np.int64).reshape(-1, 4)
        predicted = _answer_3cosadd(unit, canon, quads_a[:, :3])
        # compared by folded form, as gensim compares upper-cased words
        correct = iter((predicted >= 0) & (canon[np.maximum(predicted, 0)] == quads_a[:, 3]))
        out = []
        for name, qs in folded:
            rows = []
            for q in qs:
                answered = all(w in index for w in q)
                rows.append((q, answered, bool(next(correct)) if answered else False))
            out.append((name, rows))
        return out

    def evaluate_word_analogies(
        self,
        analogies,
        restrict_vocab: int = 300000,
        case_insensitive: bool = True,
        dummy4unknown: bool = False,
        similarity_function: str = "most_similar",
    ):
        """``(score, sections)`` as gensim: 3CosAdd accuracy over the questions whose words are
        all among the first ``restrict_vocab`` keys (the others skipped, or counted wrong with
        ``dummy4unknown``), and per section ``{"section", "correct": [...], "incorrect": [...]}``
        with the questions (upper-cased when ``case_insensitive``), then ``"Total accuracy"``."""
        if similarity_function != "most_similar":
            raise ValueError(f"similarity_function={similarity_function!r}: only 'most_similar'")
        if isinstance(analogies, (str, Path)):
            analogies = load_analogies(analogies)
        results, n_oov, n_all = [], 0, 0
        for name, rows in self.analogy_answers(analogies, restrict_vocab, case_insensitive):
            section = {"section": name, "correct": [], "incorrect": []}
            for q, answered, correct in rows:
                n_all += 1
                n_oov += not answered
                if answered or dummy4unknown:
                    section["correct" if correct else "incorrect"].append(q)
            results.append(section)
        total = {
            "section": "Total accuracy",
            "correct": [q for s in results for q in s["correct"]],
            "incorrect": [q for s in results for q in s["incorrect"]],
        }
        results.append(total)
        for s in results:
            n = len(s["correct"]) + len(s["incorrect"])
            if n:
                log.info("%s: %.1f%% (%i/%i)", s["section"], 100 * len(s["correct"]) / n,
                         len(s["correct"]), n)  # fmt: skip
        if n_all:
            log.info("Quadruplets with out-of-vocabulary words: %.1f%%", 100.0 * n_oov / n_all)
        n = len(total["correct"]) + len(total["incorrect"])
        return (len(total["correct"]) / n if n else 0.0), results

    # ------------------------------------------------------------------------------- files
    def save_word2vec_format(self, fname, fvocab=None, binary: bool = False) -> None:
        """Write the word2vec C tool's text (default) or binary format (``.gz`` compresses);
        ``fvocab`` gets ``word count`` lines, as gensim writes them."""
        from ns_plugins.export import save_word2vec

        save_word2vec(fname, self.index_to_key, self.vectors, binary=binary)
        if fvocab is not None:
            counts = self.counts if self.counts is not None else np.zeros(len(self), np.int64)
            with open(fvocab, "w", encoding="utf-8") as f:
                for w, c in zip(self.index_to_key, counts.tolist()):
                    f.write(f"{w} {c}\n")

    @classmethod
    def load_word2vec_format(
        cls, fname, fvocab=None, binary: bool | None = False, limit=None, datatype=np.float32
    ) -> KeyedVectors:
        """Read a word2vec text or binary file (``binary=None`` guesses from the name and
        contents); ``limit`` keeps the first rows; ``fvocab`` reads ``word count`` lines."""
        from ns_plugins.export import load_word2vec

        words, vectors = load_word2vec(fname, binary=binary)
        if limit:
            words, vectors = words[:limit], vectors[:limit]
        counts = None
        if fvocab is not None:
            known = {}
            with open(fvocab, encoding="utf-8") as f:
                for line in f:
                    word, count = line.rstrip("\n").rsplit(" ", 1)
                    known[word] = int(count)
            counts = [known.get(w, 0) for w in words]
        return cls.from_words(words, vectors.astype(datatype, copy=False), counts)

    def save(self, fname) -> None:
        """Keys, vectors and counts in one ``.npz`` (no pickle), written to ``fname`` exactly."""
        arrays = {"words": np.array(self.index_to_key, dtype=str), "vectors": self.vectors}
        if self.counts is not None:
            arrays["counts"] = self.counts
        with open(fname, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, fname) -> KeyedVectors:
        with np.load(fname, allow_pickle=False) as z:
            counts = z["counts"] if "counts" in z.files else None
            return cls.from_words(z["words"].tolist(), z["vectors"], counts)
