"""``KeyedVectors``: word vectors with gensim 4's interface (lookup, similarity queries,
evaluation, word2vec files), the one embeddings type of this package.

Runs export through it, the run evaluation and the report score through it, and
``Word2Vec.wv`` is one. Keys are in frequency order, most frequent first. The arithmetic lives in
:mod:`.similarity`, the evaluation scores in :mod:`.scoring` and the file formats in
:mod:`.word2vec_format`; this module imports neither torch nor scipy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from numbers import Integral

import numpy as np

from . import scoring
from .similarity import as_matrix, best_first, nearest_rows, row_norms, unit_vector
from .word2vec_format import load_word2vec, save_word2vec

__all__ = ["KeyedVectors"]

log = logging.getLogger(__name__)


def _check_keys(keys, n_rows: int) -> list[str]:
    keys = list(keys)
    if len(keys) != n_rows:
        raise ValueError(f"got {len(keys)} words for {n_rows} vectors")
    return keys


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
        vectors = as_matrix(vectors)
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
        weights = as_matrix(weights).astype(self.vectors.dtype, copy=False)
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
            self.norms = row_norms(self.vectors)

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
        return unit_vector(mean).astype(self.vectors.dtype) if post_normalize else mean

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
        best = best_first(dists, topn + len(inputs))
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
        return float(unit_vector(self.get_vector(w1)) @ unit_vector(self.get_vector(w2)))

    def distance(self, w1, w2) -> float:
        return 1.0 - self.similarity(w1, w2)

    def n_similarity(self, ws1, ws2) -> float:
        """Cosine similarity of the means of two sets of keys."""
        if not (len(ws1) and len(ws2)):
            raise ZeroDivisionError("At least one of the passed list is empty.")
        mean1 = self.get_mean_vector(ws1, pre_normalize=False)
        mean2 = self.get_mean_vector(ws2, pre_normalize=False)
        return float(unit_vector(mean1) @ unit_vector(mean2))

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
        qi = np.array([self.key_to_index[q] for q in found], dtype=np.int64)
        top, scores = nearest_rows(self.vectors, qi, min(topn, n - 1))
        return {
            word: [(self.index_to_key[j], s) for j, s in zip(row, srow)]
            for word, row, srow in zip(found, top.tolist(), scores.tolist())
        }

    # ------------------------------------------------------------------------------- evaluation
    def evaluate_word_pairs(
        self,
        pairs,
        delimiter: str = "\t",
        encoding: str = "utf8",
        restrict_vocab: int = 300000,
        case_insensitive: bool = True,
        dummy4unknown: bool = False,
    ):
        """gensim's ``evaluate_word_pairs``: see :func:`.scoring.evaluate_word_pairs`."""
        return scoring.evaluate_word_pairs(
            self, pairs, delimiter, encoding, restrict_vocab, case_insensitive, dummy4unknown
        )

    def evaluate_word_analogies(
        self,
        analogies,
        restrict_vocab: int = 300000,
        case_insensitive: bool = True,
        dummy4unknown: bool = False,
        similarity_function: str = "most_similar",
    ):
        """gensim's ``evaluate_word_analogies``: see :func:`.scoring.evaluate_word_analogies`."""
        return scoring.evaluate_word_analogies(
            self, analogies, restrict_vocab, case_insensitive, dummy4unknown, similarity_function
        )

    # ------------------------------------------------------------------------------- files
    def save_word2vec_format(self, fname, fvocab=None, binary: bool = False) -> None:
        """Write the word2vec C tool's text (default) or binary format (``.gz`` compresses);
        ``fvocab`` gets ``word count`` lines, as gensim writes them."""
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
        contents); ``limit`` reads the first rows only (0 or None: all; negative: ``ValueError``);
        ``fvocab`` reads ``word count`` lines."""
        words, vectors = load_word2vec(fname, binary=binary, limit=limit)
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
