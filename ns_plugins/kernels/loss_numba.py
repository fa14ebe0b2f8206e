"""Fused CPU kernels for the negative-sampling loss, compiled with numba.

Forward and the input gradient run in one parallel pass over rows: each gathered W row is read
once per direction, the dot, softplus and sigmoid stay in registers. The W gradient is accumulated
per touched row over the (b, k) pairs sorted by id, so threads never write the same row: the result
is exact and deterministic, with no atomics and no (B, K, d) temporary.
Arrays are float32 or float64 numpy views of the torch tensors (zero copy).
Inputs are assumed checked (ids in range, shapes, dtypes): ``ns_plugins.core.ops`` checks them
before any kernel here runs; an unchecked id reads or writes outside W.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from ns_plugins.kernels.prefetch import prefetch_row

__all__ = ["forward", "backward", "sparse_backward", "forward_backward_sparse", "supports",
           "loss_rows", "pair_grads", "scatter_dense", "alias_select"]  # fmt: skip

# Reassociation lets the dot products vectorise; no assumptions about NaN or inf.
_JIT = dict(nogil=True, parallel=True, cache=True, fastmath={"reassoc", "contract"})


@numba.njit(inline="always")
def _softplus(z):
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


@numba.njit(inline="always")
def _sigmoid(z):
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@numba.njit(**_JIT)
def _forward(x, W, samples, loss):
    B, K = samples.shape
    d = x.shape[1]
    for b in prange(B):
        if samples[b, 0] < 0:
            loss[b] = 0.0
            continue
        acc = 0.0
        for k in range(K):
            n = samples[b, k]
            s = 0.0
            for j in range(d):
                s += x[b, j] * W[n, j]
            acc += _softplus(-s if k == 0 else s)
        loss[b] = acc


@numba.njit(**_JIT)
def _rows_pass(gy, x, W, samples, g, gx, loss):
    """Per row: optional loss, g[b, k] = d(gy_b loss_b)/d s_bk, and gx_b = sum_k g[b, k] W[n_bk]."""
    B, K = samples.shape
    d = x.shape[1]
    want_loss = loss.shape[0] > 0
    for b in prange(B):
        if b + 1 < B:  # the next row's K gathers load while this row computes
            for k in range(K):
                prefetch_row(W, max(samples[b + 1, k], 0))
        if samples[b, 0] < 0:
            g[b, :] = 0.0
            gx[b, :] = 0.0
            if want_loss:
                loss[b] = 0.0
            continue
        xb = x[b]
        acc = 0.0
        for k in range(K):
            wn = W[samples[b, k]]
            s = 0.0
            for j in range(d):
                s += xb[j] * wn[j]
            z = -s if k == 0 else s
            if want_loss:
                acc += _softplus(z)
            gk = gy[b] * _sigmoid(z)
            g[b, k] = -gk if k == 0 else gk
        if want_loss:
            loss[b] = acc
        # second sweep over the same K rows, now hot in L1
        gxb = gx[b]
        w0 = W[samples[b, 0]]
        for j in range(d):
            gxb[j] = g[b, 0] * w0[j]
        for k in range(1, K):
            wn = W[samples[b, k]]
            gk = g[b, k]
            for j in range(d):
                gxb[j] += gk * wn[j]


@numba.njit(nogil=True, cache=True)
def _counting_order(flat, counts):
    """Stable counting sort of the pair indices by id (ids are bounded by V)."""
    pos = np.empty(counts.shape[0] + 1, np.int64)
    pos[0] = 0
    for i in range(counts.shape[0]):
        pos[i + 1] = pos[i] + counts[i]
    order = np.empty(flat.shape[0], np.int64)
    fill = pos[:-1].copy()
    for p in range(flat.shape[0]):
        v = flat[p]
        order[fill[v]] = p
        fill[v] += 1
    return order, pos


@numba.njit(**_JIT)
def _scatter_sorted(order, starts, g, x, K, out, out_index):
    """out[out_index[r]] = sum over pairs p in segment r of g[p] * x[p // K]."""
    R = starts.shape[0] - 1
    d = x.shape[1]
    gflat = g.reshape(-1)
    for r in prange(R):
        dst = out_index[r]
        for j in range(d):
            out[dst, j] = 0.0
        for p in range(starts[r], starts[r + 1]):
            pair = order[p]
            gp = gflat[pair]
            if gp == 0.0:
                continue
            b = pair // K
            for j in range(d):
                out[dst, j] += gp * x[b, j]


def supports(*tensors) -> bool:
    """True when every tensor is a CPU float32/float64 tensor of one dtype."""
    import torch  # the torch entry points only; the numpy ones below run without torch

    dt = tensors[0].dtype
    return dt in (torch.float32, torch.float64) and all(
        t.device.type == "cpu" and t.dtype == dt for t in tensors
    )


def _np(a) -> np.ndarray:
    """A C-contiguous numpy view of a numpy array or a CPU tensor (a copy only if strided)."""
    if isinstance(a, np.ndarray):
        return np.ascontiguousarray(a)
    return a.detach().contiguous().numpy()


def _segments(samples_np, V):
    """Group the (b, k) pairs by id: (order, segment starts, unique ids)."""
    flat = np.maximum(samples_np.reshape(-1), 0)
    counts = np.bincount(flat, minlength=V)
    order, pos = _counting_order(flat, counts)
    rows = np.flatnonzero(counts)
    starts = np.append(pos[rows], flat.size).astype(np.int64)
    return order, starts, rows


def loss_rows(x: np.ndarray, W: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Per-row loss of numpy arrays (no torch needed)."""
    x = _np(x)
    loss = np.empty(x.shape[0], dtype=x.dtype)
    _forward(x, _np(W), _np(samples), loss)
    return loss


def forward(x, W, samples):
    import torch

    return torch.from_numpy(loss_rows(_np(x), _np(W), _np(samples)))


def pair_grads(gy: np.ndarray, x: np.ndarray, W: np.ndarray, samples: np.ndarray, with_loss):
    """(g, gx, loss) of numpy arrays: the pair gradients g[b, k] = d(gy_b loss_b)/d s_bk, gx, and
    the per-row loss when ``with_loss`` (else empty); ``gy`` has shape (B,)."""
    x = _np(x)
    B, K = samples.shape
    g = np.empty((B, K), dtype=x.dtype)
    gx = np.empty_like(x)
    loss = np.empty(B if with_loss else 0, dtype=x.dtype)
    _rows_pass(_np(gy.astype(x.dtype, copy=False)), x, _np(W), _np(samples), g, gx, loss)
    return g, gx, loss


def rows_grad(gy, x, W, samples, with_loss):
    """``pair_grads`` on tensors: g as numpy, gx and loss as tensors."""
    import torch

    g, gx, loss = pair_grads(_np(gy.to(x.dtype)), _np(x), _np(W), _np(samples), with_loss)
    return g, torch.from_numpy(gx), torch.from_numpy(loss)


def backward(gy, x, W, samples):
    import torch

    g, gx, _ = rows_grad(gy, x, W, samples, False)
    s = _np(samples)
    order, starts, rows = _segments(s, W.shape[0])
    gW = torch.zeros_like(W)
    _scatter_sorted(order, starts, g, _np(x), s.shape[1], gW.numpy(), rows)
    return gx, gW


def _sparse(g, x, W, samples):
    import torch

    s = _np(samples)
    order, starts, rows = _segments(s, W.shape[0])
    gW_rows = torch.empty((rows.size, x.shape[1]), dtype=x.dtype)
    _scatter_sorted(
        order, starts, g, _np(x), s.shape[1], gW_rows.numpy(), np.arange(rows.size, dtype=np.int64)
    )
    return torch.from_numpy(rows), gW_rows


def sparse_backward(gy, x, W, samples):
    g, gx, _ = rows_grad(gy, x, W, samples, False)
    rows, gW_rows = _sparse(g, x, W, samples)
    return gx, rows, gW_rows


def forward_backward_sparse(x, W, samples, gy=None):
    import torch

    if gy is None:
        gy = torch.ones(x.shape[0], dtype=x.dtype)
    g, gx, loss = rows_grad(gy, x, W, samples, True)
    rows, gW_rows = _sparse(g, x, W, samples)
    return loss, gx, rows, gW_rows


@numba.njit(**_JIT)
def _alias_select(bucket, coin, prob, alias):
    for i in prange(bucket.shape[0]):
        b = bucket[i]
        if coin[i] >= prob[b]:
            bucket[i] = alias[b]


def alias_select(bucket: np.ndarray, coin: np.ndarray, prob, alias) -> np.ndarray:
    """Alias draw from pre-drawn buckets and coins, in place on the flat ``bucket``: one pass
    instead of numpy's gather, compare, gather and select."""
    _alias_select(bucket, coin, prob, alias)
    return bucket


@numba.njit(nogil=True, parallel=True, cache=True)
def _clear_other_rows(bits, rows):
    V = bits.shape[0]
    chunk = 512
    for c in prange((V + chunk - 1) // chunk):
        lo, hi = c * chunk, min(c * chunk + chunk, V)
        r = np.searchsorted(rows, lo)
        for v in range(lo, hi):
            if r < rows.shape[0] and rows[r] == v:
                r += 1
                continue
            acc = bits[v, 0]
            for j in range(1, bits.shape[1]):
                acc |= bits[v, j]
            if acc != 0:  # read every row, write only those something else wrote to
                bits[v, :] = 0


_BITS = {4: np.uint32, 8: np.uint64}


def scatter_dense(g: np.ndarray, x, samples, out: np.ndarray) -> None:
    """``out`` (V, d), float32/float64, C-contiguous, any contents: becomes the dense W gradient
    for the pair gradients ``g`` (from ``pair_grads``), zeros in rows no sample touches; ``x``
    and ``samples`` are numpy arrays or CPU tensors.

    Rows that are already zero are only read, so an array reused between steps costs one read of
    it plus the touched rows, and nothing but ``out`` is allocated at V x d size."""
    s = _np(samples)
    order, starts, rows = _segments(s, out.shape[0])
    # Rows are checked as 8-byte words where they split evenly: half the loads of float32 words.
    row_bytes = out.shape[1] * out.dtype.itemsize
    word = 8 if row_bytes % 8 == 0 else out.dtype.itemsize
    _clear_other_rows(out.view(_BITS[word]), rows)
    _scatter_sorted(order, starts, g, _np(x), s.shape[1], out, rows)
