"""Cosine-similarity arithmetic on embedding matrices: unit-length rows, the top k of each row of
scores, batched nearest neighbours and 3CosAdd analogy answers (gensim's definitions).

Everything works on numpy arrays in chunks of about 32 MiB of scores; a torch tensor given as
vectors is converted without importing torch.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CHUNK_ELEMS",
    "answer_3cosadd",
    "as_matrix",
    "best_first",
    "nearest_rows",
    "row_norms",
    "top_k",
    "unit_rows",
    "unit_vector",
]

# Query rows times vocabulary entries scored at once: 32 MiB of float32, reused across batches.
# Fewer rows make the matrix product slower per row; picking the top k adds only a few MiB.
CHUNK_ELEMS = 1 << 23


def as_matrix(vectors) -> np.ndarray:
    """``vectors`` as a 2-D floating numpy array (integers become float32); numpy input of a
    floating type is not copied."""
    if hasattr(vectors, "detach") and hasattr(vectors, "cpu"):
        # a torch tensor, taken without importing torch (.float() also covers bfloat16)
        vectors = vectors.detach().cpu().float().numpy()
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D (words x dim), got shape {tuple(vectors.shape)}")
    if not np.issubdtype(vectors.dtype, np.floating):
        vectors = vectors.astype(np.float32)
    return vectors


def row_norms(vectors: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row without a table-sized temporary (np.linalg.norm squares the
    whole table first: 1.2 GB at V = 1M, d = 300)."""
    return np.sqrt(np.einsum("ij,ij->i", vectors, vectors))


def unit_rows(vectors, dtype=None) -> np.ndarray:
    """A copy of ``vectors`` (numpy or torch, see :func:`as_matrix`) with every row scaled to
    unit length, in ``dtype`` when given; zero rows stay zero."""
    vectors = as_matrix(vectors)
    if dtype is not None:
        vectors = vectors.astype(dtype, copy=False)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def unit_vector(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to unit length; a zero vector is returned as it is."""
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def best_first(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest of the 1-D ``scores`` (all when fewer), highest first, equal
    scores lowest index first."""
    n = min(n, len(scores))
    best = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    return best[np.lexsort((best, -scores[best]))]


def top_k(scores: np.ndarray, k: int, nan_possible: bool) -> tuple[np.ndarray, np.ndarray]:
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


def nearest_rows(vectors: np.ndarray, queries: np.ndarray, k: int):
    """``(indices, scores)``, each ``len(queries) x k``: for each row index in ``queries`` the
    ``k`` other rows of ``vectors`` with the highest cosine similarity, best first, equal scores
    lowest index first. Needs ``1 <= k < len(vectors)``."""
    n = vectors.shape[0]
    # Scaled by the inverse norms after the product: no unit-length copy of the whole table
    # (at V = 1M, d = 300 that copy alone is 1.2 GB).
    vectors = vectors.astype(np.float32, copy=False)
    norms = row_norms(vectors)
    inv = (1.0 / np.where(norms > 0, norms, 1)).astype(np.float32)
    nan_possible = bool(np.isnan(norms).any())
    rows = max(1, CHUNK_ELEMS // n)
    buf = np.empty((min(rows, len(queries)), n), dtype=np.float32)
    indices = np.empty((len(queries), k), dtype=np.int64)
    scores_out = np.empty((len(queries), k), dtype=np.float32)
    for lo in range(0, len(queries), rows):
        q = queries[lo : lo + rows]
        scores = np.matmul(vectors[q] * inv[q, None], vectors.T, out=buf[: len(q)])
        scores *= inv
        scores[np.arange(len(q)), q] = -np.inf
        scores_out[lo : lo + len(q)], indices[lo : lo + len(q)] = top_k(scores, k, nan_possible)
    return indices, scores_out


def answer_3cosadd(unit: np.ndarray, canon: np.ndarray, questions: np.ndarray, topn: int = 5):
    """Predicted index for each ``(a, b, c)`` row of ``questions`` (-1 when nothing is left).

    ``unit`` holds unit-length rows. Follows gensim: take the ``topn`` words nearest to
    ``b - a + c`` other than the question words' own entries, then the first of those whose
    (case-folded) form is not a question word; if all are, the last one. ``canon`` maps each index
    to the index of its case-folded form (``arange`` when case matters).
    """
    n = unit.shape[0]
    out = np.full(questions.shape[0], -1, dtype=np.int64)
    k = min(topn, n)
    if k == 0 or questions.shape[0] == 0:
        return out
    nan_possible = bool(np.isnan(unit).any())
    rows = max(1, CHUNK_ELEMS // n)
    buf = np.empty((min(rows, questions.shape[0]), n), dtype=np.float32)
    for s in range(0, questions.shape[0], rows):
        q = questions[s : s + rows]
        target = unit[q[:, 1]] - unit[q[:, 0]] + unit[q[:, 2]]
        scores = np.matmul(target, unit.T, out=buf[: len(q)])
        np.put_along_axis(scores, q, -np.inf, axis=1)
        top_scores, top = top_k(scores, k, nan_possible)
        valid = top_scores > -np.inf
        cq = canon[top]
        fresh = valid & (cq != q[:, :1]) & (cq != q[:, 1:2]) & (cq != q[:, 2:3])
        # first fresh candidate; otherwise the last valid one (gensim keeps the loop's last value)
        last_valid = valid.sum(axis=1) - 1
        first_fresh = np.where(fresh.any(axis=1), fresh.argmax(axis=1), last_valid)
        pick = np.take_along_axis(top, np.maximum(first_fresh, 0)[:, None], axis=1)[:, 0]
        out[s : s + rows] = np.where(first_fresh >= 0, pick, -1)
    return out
