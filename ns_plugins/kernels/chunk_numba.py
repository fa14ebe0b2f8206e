"""Hogwild skip-gram / CBOW training with negative sampling on numpy arrays.

The CPU engine behind the word2vec-style experiments: the same update rule as gensim's
``train_batch_sg`` / ``train_batch_cbow`` (and word2vec.c), compiled with numba and run on several
threads that release the GIL and update the shared weight matrices in place without locks.

Differences from gensim, on purpose:

* negatives are drawn exactly from the alias table (integer bucket + independent 53-bit coin)
  instead of a binary search over a 32-bit cumulative table;
* the sigmoid is computed exactly (no 1000-entry table, no cut-off at |x| > 6);
* random numbers come from a counter-based generator keyed by (seed, corpus position, slot), so
  one thread with one seed reproduces the same weights bit for bit, the draws do not depend on how
  the chunk is cut into jobs, and the Triton chunk kernel draws the same numbers;
* ``shared_negatives=True`` (skip-gram only) draws one set of negatives per center word and updates
  all its context words against it as one small dense block (the HogBatch scheme of Ji et al.,
  "Parallelizing Word2Vec in Shared and Distributed Memory"): far fewer random rows touched.

Conventions: input rows are the context words, output rows the center word and the negatives
(as in word2vec.c). ``alpha`` decays linearly from ``alpha_start`` to ``alpha_end`` over the words
of the chunk; the caller splits training into chunks and passes each chunk its share of the global
schedule.
"""

from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numba as nb
import numpy as np
from numba import types
from numba.extending import overload

from ns_plugins.kernels.prefetch import prefetch_row as _prefetch_row

__all__ = ["ChunkStats", "train_chunk", "job_bounds"]

# error_model="numpy": a division by zero gives inf/NaN (caught by the caller as divergence)
# instead of a ZeroDivisionError raised from inside a thread.
_JIT = {"nogil": True, "fastmath": True, "cache": True, "error_model": "numpy"}

# splitmix64 constants; numba keeps module-level numpy scalars with their dtype, which keeps the
# arithmetic in uint64 (mixing uint64 with a Python int would promote to float64).
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S11 = np.uint64(11)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_LOW32 = np.uint64(0xFFFFFFFF)
_TWO32 = np.uint64(1 << 32)
_INV53 = 1.0 / 9007199254740992.0
_U64_MASK = (1 << 64) - 1


# ---------------------------------------------------------------- random numbers
# Kept in this file with the kernels that inline them: numba's cache rebuilds a kernel when its
# own file changes, not when a function it inlines from another module does.


@nb.njit(inline="always", **_JIT)
def _mix(z):
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


# Counter-based: every number is a pure function of (seed, corpus position, slot), so a draw does
# not depend on which thread or GPU program makes it, nor on the order; the Triton chunk kernel
# (``chunk_triton``) computes the same function and draws the same numbers. ``mix(key + n * GAMMA)``
# is the n-th output of splitmix64 seeded with ``key``; n = position * 2**20 + slot.
SLOT_BITS = 20
SLOT_KEEP = 0  # subsampling coin of the word at this position
SLOT_REACH = 1  # shrunk window of the center word at this position
SLOT_DRAWS = 2  # negatives of this center: bucket and coin at 2 + 2 * (context * negative + k)
_SLOTS = np.uint64(1 << SLOT_BITS)


@nb.njit(inline="always", **_JIT)
def stream_key(seed):
    """The generator key of a seed (any uint64)."""
    return _mix(np.uint64(seed) * _MIX2 + _GAMMA)


def position_key(seed, first_position: int = 0) -> int:
    """The key under which position ``p`` draws what position ``first_position + p`` draws under
    ``stream_key(seed)``: ``keyed_u64`` is linear in the position before mixing, so shifting the
    key shifts every position. A shard that holds a corpus's ids from ``first_position`` on trains
    with the draws the whole corpus would give its words."""
    key = int(stream_key(np.uint64(int(seed) & _U64_MASK)))
    shift = int(first_position) * (1 << SLOT_BITS) * int(_GAMMA)
    return (key + shift) & _U64_MASK


@nb.njit(inline="always", **_JIT)
def keyed_u64(key, pos, slot):
    """64 random bits for (key, position, slot)."""
    return _mix(key + (np.uint64(pos) * _SLOTS + np.uint64(slot)) * _GAMMA)


@nb.njit(inline="always", **_JIT)
def to_uniform(u):
    """Uniform float64 in [0, 1) from the top 53 bits."""
    return (u >> _S11) * _INV53


@nb.njit(inline="always", **_JIT)
def to_below(u, n):
    """Integer in [0, n) for 0 < n < 2**32: floor(u * n / 2**64) in 64-bit arithmetic, biased by
    at most n / 2**64 (no rejection loop, so every draw costs one number)."""
    bound = np.uint64(n)
    return np.int64(((u >> _S32) * bound + (((u & _LOW32) * bound) >> _S32)) >> _S32)


@nb.njit(inline="always", **_JIT)
def draw_alias(key, pos, slot, alias_prob, alias_idx):
    """One exact draw from a Vose alias table: a bucket from slot ``slot``, an independent coin
    from ``slot + 1``."""
    bucket = to_below(keyed_u64(key, pos, slot), alias_prob.shape[0])
    if to_uniform(keyed_u64(key, pos, slot + 1)) < alias_prob[bucket]:
        return bucket
    return alias_idx[bucket]


@nb.njit(**_JIT)
def draw_targets(key, pos, context, center, negative, alias_prob, alias_idx, targets):
    """Fill ``targets`` with the center word then the ``negative`` draws of (center position,
    context ordinal); a draw equal to the center is marked -1 and skipped by the update, as
    word2vec.c and gensim skip it. CBOW and shared negatives use context 0."""
    targets[0] = center
    base = SLOT_DRAWS + 2 * context * negative
    for k in range(1, negative + 1):
        t = draw_alias(key, pos, base + 2 * (k - 1), alias_prob, alias_idx)
        targets[k] = -1 if t == center else t


# ---------------------------------------------------------------- scalar helpers


def _like(x, arr):  # pragma: no cover - replaced by the overload inside jitted code
    return arr.dtype.type(x)


@overload(_like, inline="always")
def _like_impl(x, arr):
    # Cast a float64 scalar to the weights' dtype so the row loops stay in float32 and vectorise.
    if arr.dtype == types.float32:
        return lambda x, arr: np.float32(x)
    return lambda x, arr: np.float64(x)


@nb.njit(inline="always", **_JIT)
def _sigmoid(f):
    if f >= 0.0:
        return 1.0 / (1.0 + math.exp(-f))
    e = math.exp(f)
    return e / (1.0 + e)


@nb.njit(inline="always", **_JIT)
def _softplus(z):
    # log(1 + exp(z)) without overflow
    if z > 0.0:
        return z + math.log1p(math.exp(-z))
    return math.log1p(math.exp(z))


# ---------------------------------------------------------------- update rules


@nb.njit(inline="always", **_JIT)
def _targets_update(h, W_out, targets, alpha, neu1e, compute_loss):
    """Hidden vector ``h`` against ``targets`` (column 0 the positive, -1 = skip): SGD on each
    output row in place, its gradient for ``h`` summed into ``neu1e``. Returns the loss (0 unless
    asked)."""
    d = h.shape[0]
    loss = 0.0
    for k in range(targets.shape[0]):
        t = targets[k]
        if t < 0:
            continue
        out = W_out[t]
        acc = _like(0.0, W_out)
        for j in range(d):
            acc += h[j] * out[j]
        f = np.float64(acc)
        label = 1.0 if k == 0 else 0.0
        g = (label - _sigmoid(f)) * alpha
        if compute_loss:
            loss += _softplus(-f) if k == 0 else _softplus(f)
        gs = _like(g, W_out)
        # one fused pass over the row: gradient for h from the old output row, then SGD
        for j in range(d):
            o = out[j]
            neu1e[j] += gs * o
            out[j] = o + gs * h[j]
    return loss


@nb.njit(**_JIT)
def sg_update(W_in, W_out, inp, targets, alpha, neu1e, compute_loss):
    """One skip-gram step: input row ``inp`` against ``targets`` (column 0 the positive, the rest
    negatives, -1 = skip). SGD on the output rows in place, then the summed input gradient
    (gensim's ``neu1e``) on the input row. Returns the loss of the step (0 unless asked)."""
    d = W_in.shape[1]
    _prefetch_row(W_in, inp)
    for k in range(targets.shape[0]):
        if targets[k] >= 0:
            _prefetch_row(W_out, targets[k])
    x = W_in[inp]
    for j in range(d):
        neu1e[j] = 0.0
    loss = _targets_update(x, W_out, targets, alpha, neu1e, compute_loss)
    for j in range(d):
        x[j] += neu1e[j]
    return loss


@nb.njit(**_JIT)
def sg_block_update(W_in, W_out, inputs, n_inputs, targets, alpha, dX, dY, compute_loss):
    """Skip-gram step for several input rows sharing one target set (HogBatch). Every score comes
    from the weights as they were on entry: with G the (inputs x targets) matrix of scaled
    residuals, ``W_in[inputs] += G @ W_out[targets]`` and ``W_out[targets] += G.T @ W_in[inputs]``,
    duplicated rows accumulating. Returns the loss."""
    d = W_in.shape[1]
    m = targets.shape[0]
    for c in range(n_inputs):
        _prefetch_row(W_in, inputs[c])
    for k in range(m):
        if targets[k] >= 0:
            _prefetch_row(W_out, targets[k])
    loss = 0.0
    for k in range(m):
        for j in range(d):
            dY[k, j] = 0.0
    for c in range(n_inputs):
        x = W_in[inputs[c]]
        dx = dX[c]
        for j in range(d):
            dx[j] = 0.0
        for k in range(m):
            t = targets[k]
            if t < 0:
                continue
            out = W_out[t]
            acc = _like(0.0, W_in)
            for j in range(d):
                acc += x[j] * out[j]
            f = np.float64(acc)
            label = 1.0 if k == 0 else 0.0
            gs = _like((label - _sigmoid(f)) * alpha, W_in)
            if compute_loss:
                loss += _softplus(-f) if k == 0 else _softplus(f)
            # writes are deferred to the end, so both gradients see the entry weights
            dy = dY[k]
            for j in range(d):
                dx[j] += gs * out[j]
                dy[j] += gs * x[j]
    for k in range(m):
        t = targets[k]
        if t < 0:
            continue
        out = W_out[t]
        dy = dY[k]
        for j in range(d):
            out[j] += dy[j]
    for c in range(n_inputs):
        x = W_in[inputs[c]]
        dx = dX[c]
        for j in range(d):
            x[j] += dx[j]
    return loss


@nb.njit(**_JIT)
def cbow_update(W_in, W_out, inputs, n_inputs, targets, alpha, neu1, neu1e, compute_loss):
    """CBOW step with the mean of the context rows (gensim ``cbow_mean=1``): the hidden vector is
    the mean, and every context row receives the full hidden gradient. Returns the loss."""
    d = W_in.shape[1]
    inv = _like(1.0 / n_inputs, W_in)
    for c in range(n_inputs):
        _prefetch_row(W_in, inputs[c])
    for k in range(targets.shape[0]):
        if targets[k] >= 0:
            _prefetch_row(W_out, targets[k])
    for j in range(d):
        neu1[j] = 0.0
        neu1e[j] = 0.0
    for c in range(n_inputs):
        r = inputs[c]
        for j in range(d):
            neu1[j] += W_in[r, j]
    for j in range(d):
        neu1[j] *= inv
    loss = _targets_update(neu1, W_out, targets, alpha, neu1e, compute_loss)
    for c in range(n_inputs):
        r = inputs[c]
        for j in range(d):
            W_in[r, j] += neu1e[j]
    return loss


# ---------------------------------------------------------------- the training loop


@nb.njit(**_JIT)
def _train_jobs(
    ids,
    offsets,
    bounds,
    job,
    W_in,
    W_out,
    keep_prob,
    alias_prob,
    alias_idx,
    window,
    negative,
    alpha_start,
    alpha_end,
    key,
    shrink_windows,
    cbow,
    shared_negatives,
    compute_loss,
    max_len,
    out,
):
    d = W_in.shape[1]
    first = offsets[0]
    span = max(offsets[offsets.shape[0] - 1] - first, 1)
    sent = np.empty(max_len, dtype=np.int64)
    spos = np.empty(max_len, dtype=np.int64)  # corpus position of each kept word: its key
    targets = np.empty(negative + 1, dtype=np.int64)
    T = np.empty((2 * window, negative + 1), dtype=np.int64)
    ctx = np.empty(2 * window, dtype=np.int64)
    neu1 = np.empty(d, dtype=W_in.dtype)
    neu1e = np.empty(d, dtype=W_in.dtype)
    dX = np.empty((2 * window, d), dtype=W_in.dtype)
    dY = np.empty((negative + 1, d), dtype=W_in.dtype)
    loss = 0.0
    pairs = 0
    words = 0
    for s in range(bounds[job], bounds[job + 1]):
        a = offsets[s]
        b = offsets[s + 1]
        alpha = alpha_start + (alpha_end - alpha_start) * ((a - first) / span)
        # frequent-word subsampling: a coin only for words that can be dropped
        n = 0
        for p in range(a, b):
            w = ids[p]
            kp = keep_prob[w]
            if kp < 1.0 and kp <= to_uniform(keyed_u64(key, p, SLOT_KEEP)):
                continue
            sent[n] = w
            spos[n] = p
            n += 1
        words += n
        for i in range(n):
            pos = spos[i]
            reach = window
            if shrink_windows:
                reach = window - to_below(keyed_u64(key, pos, SLOT_REACH), window)
            lo = max(0, i - reach)
            hi = min(n, i + reach + 1)
            nc = 0
            for j in range(lo, hi):
                if j != i:
                    ctx[nc] = sent[j]
                    nc += 1
            if nc == 0:
                continue
            if cbow:
                draw_targets(key, pos, 0, sent[i], negative, alias_prob, alias_idx, targets)
                loss += cbow_update(W_in, W_out, ctx, nc, targets, alpha, neu1, neu1e, compute_loss)
                pairs += 1
            elif shared_negatives:
                draw_targets(key, pos, 0, sent[i], negative, alias_prob, alias_idx, targets)
                loss += sg_block_update(W_in, W_out, ctx, nc, targets, alpha, dX, dY, compute_loss)
                pairs += nc
            else:
                # all draws of this center first, so the rows of its pairs can be fetched from
                # memory together
                for c in range(nc):
                    draw_targets(key, pos, c, sent[i], negative, alias_prob, alias_idx, T[c])
                for c in range(nc):
                    _prefetch_row(W_in, ctx[c])
                    for k in range(1, negative + 1):
                        if T[c, k] >= 0:
                            _prefetch_row(W_out, T[c, k])
                for c in range(nc):
                    loss += sg_update(W_in, W_out, ctx[c], T[c], alpha, neu1e, compute_loss)
                pairs += nc
    out[0] += loss
    out[1] += pairs
    out[2] += words


# ---------------------------------------------------------------- Python entry


class ChunkStats(NamedTuple):
    loss_sum: float  # summed loss over all updates (0.0 when compute_loss=False)
    n_pairs: int  # (context, center) pairs trained; CBOW: center words trained
    n_words: int  # words left after subsampling


def job_bounds(offsets: np.ndarray, job_words: int) -> np.ndarray:
    """Sentence indices that cut ``offsets`` into pieces of about ``job_words`` words each (whole
    sentences): the jobs inside ``train_chunk``, and the chunks a caller hands to it."""
    n_sent = len(offsets) - 1
    if n_sent <= 0:
        return np.zeros(1, dtype=np.int64)
    targets = np.arange(offsets[0], offsets[-1], job_words, dtype=np.int64)
    cuts = np.searchsorted(offsets[:-1], targets, side="left")
    return np.unique(np.concatenate([cuts, [n_sent]])).astype(np.int64)


def _check(name, arr, dtypes, ndim):
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype {' or '.join(map(str, dtypes))}, got {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")


def train_chunk(
    ids: np.ndarray,
    offsets: np.ndarray,
    W_in: np.ndarray,
    W_out: np.ndarray,
    keep_prob: np.ndarray,
    alias_prob: np.ndarray,
    alias_idx: np.ndarray,
    window: int,
    negative: int,
    alpha_start: float,
    alpha_end: float,
    seed: int,
    shrink_windows: bool = True,
    cbow: bool = False,
    shared_negatives: bool = False,
    *,
    workers: int = 2,
    job_words: int = 4_000,
    compute_loss: bool = True,
    replicas=None,
    first_position: int = 0,
) -> ChunkStats:
    """Train ``W_in`` / ``W_out`` in place on one chunk of an encoded corpus.

    ``ids`` (int32/int64) are vocabulary ids, sentence ``s`` is ``ids[offsets[s]:offsets[s+1]]``
    (``offsets`` may start anywhere in ``ids``). ``keep_prob[w]`` is the probability of keeping
    word ``w`` (>= 1 keeps it always), ``alias_prob`` / ``alias_idx`` the alias table of the noise
    distribution. The chunk is cut into jobs of about ``job_words`` words, handed one by one to
    ``workers`` threads that update the weights without locks. One worker and one seed give
    identical results run after run.

    ``replicas``: ``(W_in, W_out)`` pairs, one per thread after the first, each thread training
    its own pair instead of the shared tables (the caller merges them: ``kernels.merge``).

    ``first_position``: the corpus position of ``ids[0]`` when ``ids`` is a shard of a larger
    corpus; random numbers are keyed by corpus position, so a shard draws what the whole corpus
    draws for the same words (``position_key``).
    """
    _check("ids", ids, (np.dtype(np.int32), np.dtype(np.int64)), 1)
    _check("offsets", offsets, (np.dtype(np.int64),), 1)
    _check("W_in", W_in, (np.dtype(np.float32), np.dtype(np.float64)), 2)
    _check("W_out", W_out, (W_in.dtype,), 2)
    _check("keep_prob", keep_prob, (np.dtype(np.float32), np.dtype(np.float64)), 1)
    _check("alias_prob", alias_prob, (np.dtype(np.float64),), 1)
    _check("alias_idx", alias_idx, (np.dtype(np.int64),), 1)
    V, d = W_in.shape
    if W_out.shape != (V, d):
        raise ValueError(f"W_out shape {W_out.shape} differs from W_in shape {W_in.shape}")
    if not (W_in.flags.writeable and W_out.flags.writeable):
        raise ValueError("W_in and W_out are updated in place and must be writeable")
    tables = (("keep_prob", keep_prob), ("alias_prob", alias_prob), ("alias_idx", alias_idx))
    for name, arr in tables:
        if arr.shape[0] != V:
            raise ValueError(f"{name} has {arr.shape[0]} entries, the vocabulary has {V}")
    if not 0 < V < 2**31:
        raise ValueError(f"vocabulary size must be in [1, 2**31), got {V}")
    if int(window) < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if int(negative) < 0:
        raise ValueError(f"negative must be >= 0, got {negative}")
    if SLOT_DRAWS + 4 * int(window) * int(negative) > 1 << SLOT_BITS:
        raise ValueError(f"window * negative must be below {(1 << SLOT_BITS) // 4}")
    if cbow and shared_negatives:
        raise ValueError("shared_negatives is a skip-gram option; CBOW already shares per center")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if int(job_words) < 1:
        raise ValueError(f"job_words must be >= 1, got {job_words}")
    tables_of = [(W_in, W_out)]
    for i, pair in enumerate(replicas or ()):
        for name, arr in zip(("W_in", "W_out"), pair):
            _check(f"replicas[{i}] {name}", arr, (W_in.dtype,), 2)
            if arr.shape != W_in.shape or not arr.flags.writeable:
                raise ValueError(f"replicas[{i}] {name} must be a writeable {W_in.shape} array")
        tables_of.append(tuple(pair))
    if not (math.isfinite(alpha_start) and math.isfinite(alpha_end)):
        raise ValueError("alpha_start and alpha_end must be finite")
    if len(offsets) < 1:
        raise ValueError("offsets must hold at least one entry")
    if len(offsets) == 1 or offsets[-1] == offsets[0]:
        return ChunkStats(0.0, 0, 0)
    lengths = np.diff(offsets)
    if offsets[0] < 0 or offsets[-1] > len(ids) or (lengths < 0).any():
        raise ValueError("offsets must be non-decreasing and within ids")
    used = ids[offsets[0] : offsets[-1]]
    lo, hi = int(used.min()), int(used.max())
    if lo < 0 or hi >= V:
        raise ValueError(f"ids must lie in [0, {V}), found {lo if lo < 0 else hi}")

    bounds = job_bounds(offsets, int(job_words))
    n_jobs = len(bounds) - 1
    n_threads = min(int(workers), n_jobs)
    if replicas is not None and len(tables_of) < n_threads:
        raise ValueError(f"{len(tables_of) - 1} replicas for {n_threads} threads: give workers - 1")
    max_len = max(int(lengths.max()), 1)
    outs = np.zeros((n_threads, 3), dtype=np.float64)
    if int(first_position) < 0:
        raise ValueError(f"first_position must be >= 0, got {first_position}")
    key = np.uint64(position_key(seed, first_position))

    # Jobs are handed out one at a time (next() on a shared counter is atomic under the GIL), so
    # a thread slowed by other processes does not hold the chunk back; every random number
    # depends only on (seed, position, slot), never on the thread that runs it.
    next_job = itertools.count()

    def run(t):
        W_in_t, W_out_t = tables_of[t] if replicas is not None else (W_in, W_out)
        while (job := next(next_job)) < n_jobs:
            _train_jobs(
                ids,
                offsets,
                bounds,
                job,
                W_in_t,
                W_out_t,
                keep_prob,
                alias_prob,
                alias_idx,
                int(window),
                int(negative),
                float(alpha_start),
                float(alpha_end),
                key,
                bool(shrink_windows),
                bool(cbow),
                bool(shared_negatives),
                bool(compute_loss),
                max_len,
                outs[t],
            )

    if n_threads == 1:
        run(0)
    else:
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            list(pool.map(run, range(n_threads)))
    total = outs.sum(axis=0)
    return ChunkStats(float(total[0]), int(total[1]), int(total[2]))
