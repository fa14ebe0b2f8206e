"""Float64 numpy oracle for the negative-sampling loss: forward, gradients and second-order terms.

``samples`` has shape (B, k + 1): column 0 holds the positive id, the rest the negatives. Rows whose
column 0 is -1 are ignored (loss 0, zero gradients). Per row:
    loss_b = softplus(-x_b . W[n_b0]) + sum_{k>=1} softplus(x_b . W[n_bk])
Every backend is tested against these functions; they favour clarity over speed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ns_loss_rows", "ns_loss_grad", "ns_loss_double_grad", "negative_sampling"]


def _softplus(z):
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _prepare(x, W, samples):
    x = np.asarray(x, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    samples = np.asarray(samples, dtype=np.int64)
    valid = samples[:, 0] >= 0
    ids = np.where(valid[:, None], samples, 0)
    sign = np.ones(samples.shape[1])
    sign[0] = -1.0
    w = W[ids]  # (B, K, d)
    s = np.einsum("bd,bkd->bk", x, w)
    return x, W, ids, valid, sign, w, s


def ns_loss_rows(x, W, samples) -> np.ndarray:
    """Per-row loss, shape (B,)."""
    _, _, _, valid, sign, _, s = _prepare(x, W, samples)
    return _softplus(sign * s).sum(axis=1) * valid


def negative_sampling(x, t, W, samples, reduce: str = "sum"):
    """Chainer-signature loss with explicit samples; column 0 of ``samples`` is replaced by t."""
    samples = np.array(samples, dtype=np.int64, copy=True)
    samples[:, 0] = np.asarray(t)
    rows = ns_loss_rows(x, W, samples)
    if reduce == "sum":
        return rows.sum()
    if reduce == "no":
        return rows
    raise ValueError(f"only 'sum' and 'no' are valid for 'reduce', but '{reduce}' is given")


def _first_derivative(valid, sign, s):
    # d/ds softplus(sign * s) = sign * sigmoid(sign * s)
    return sign * _sigmoid(sign * s) * valid[:, None]


def ns_loss_grad(gy, x, W, samples):
    """Gradients of sum_b gy_b * loss_b: returns (gx (B, d), gW (V, d))."""
    x, W, ids, valid, sign, w, s = _prepare(x, W, samples)
    g = np.asarray(gy, dtype=np.float64)[:, None] * _first_derivative(valid, sign, s)
    gx = np.einsum("bk,bkd->bd", g, w)
    gW = np.zeros_like(W)
    np.add.at(gW, ids, g[:, :, None] * x[:, None, :])
    return gx, gW


def ns_loss_double_grad(gy, x, W, samples, ggx, ggW):
    """Gradients of J = <ggx, gx> + <ggW, gW> with (gx, gW) = ns_loss_grad(gy, x, W, samples).

    Returns (g_gy (B,), g_x (B, d), g_W (V, d)): what double backprop needs.
    """
    x, W, ids, valid, sign, w, s = _prepare(x, W, samples)
    gy = np.asarray(gy, dtype=np.float64)
    ggx = np.asarray(ggx, dtype=np.float64)
    ggW = np.asarray(ggW, dtype=np.float64)
    f1 = _first_derivative(valid, sign, s)
    f2 = _sigmoid(s) * _sigmoid(-s) * valid[:, None]  # second derivative, same for both signs
    g = gy[:, None] * f1
    gg_rows = ggW[ids]  # (B, K, d)
    a = np.einsum("bd,bkd->bk", ggx, w) + np.einsum("bkd,bd->bk", gg_rows, x)
    h = gy[:, None] * f2 * a
    g_gy = (f1 * a).sum(axis=1)
    g_x = np.einsum("bk,bkd->bd", h, w) + np.einsum("bk,bkd->bd", g, gg_rows)
    g_W = np.zeros_like(W)
    np.add.at(g_W, ids, h[:, :, None] * x[:, None, :] + g[:, :, None] * ggx[:, None, :])
    return g_gy, g_x, g_W
