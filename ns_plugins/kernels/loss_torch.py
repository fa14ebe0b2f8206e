"""Negative-sampling loss in plain torch ops: the CPU kernel of the core op (it also runs on CUDA
when no fused GPU kernel is available).

One gather of the (B, K, d) rows, batched dots, softplus; the backward scatters with a single
``index_add_``. float16/bfloat16 inputs are computed in float32 and cast back.
Inputs are assumed checked (ids in range, shapes, dtypes): ``ns_plugins.core.ops`` checks them
before any kernel here runs; an unchecked id reads or writes outside W.
"""

from __future__ import annotations

import torch

__all__ = ["forward", "backward", "sparse_backward", "forward_backward_sparse"]


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype


def _gather_scores(x, W, samples):
    """Rows (B, K, d) and signed scores z = sign * x.w (B, K) in the compute dtype."""
    B, K = samples.shape
    dt = _compute_dtype(x)
    valid = samples[:, 0] >= 0
    ids = samples.clamp_min(0)
    w = W.index_select(0, ids.reshape(-1)).view(B, K, W.shape[1]).to(dt)
    xc = x.to(dt)
    z = torch.bmm(w, xc.unsqueeze(2)).squeeze(2)
    z[:, 0] = -z[:, 0]
    return xc, w, ids, valid, z


def _loss_rows(z, valid):
    # exact softplus: F.softplus returns z itself above its threshold, off by up to exp(-20)
    softplus = z.clamp_min(0) + torch.log1p(torch.exp(-z.abs()))
    return softplus.sum(dim=1) * valid


def _score_grad(gy, z, valid):
    """d(gy_b * loss_b)/d s_bk = gy_b * sign_k * sigmoid(z_bk)."""
    g = torch.sigmoid(z) * (gy.to(z.dtype) * valid).unsqueeze(1)
    g[:, 0] = -g[:, 0]
    return g


def forward(x, W, samples):
    _, _, _, valid, z = _gather_scores(x, W, samples)
    return _loss_rows(z, valid).to(x.dtype)


def backward(gy, x, W, samples):
    """Dense gradients (gx, gW): autograd needs a dense gW for a dense W."""
    xc, w, ids, valid, z = _gather_scores(x, W, samples)
    g = _score_grad(gy, z, valid)
    gx = torch.bmm(g.unsqueeze(1), w).squeeze(1)
    gW = torch.zeros(W.shape, dtype=xc.dtype, device=W.device)
    gW.index_add_(0, ids.reshape(-1), (g.unsqueeze(2) * xc.unsqueeze(1)).reshape(-1, W.shape[1]))
    return gx.to(x.dtype), gW.to(W.dtype)


def _sparse_rows(g, xc, ids, d):
    rows, inverse = torch.unique(ids.reshape(-1), return_inverse=True)
    gW_rows = torch.zeros((rows.numel(), d), dtype=xc.dtype, device=xc.device)
    gW_rows.index_add_(0, inverse, (g.unsqueeze(2) * xc.unsqueeze(1)).reshape(-1, d))
    return rows, gW_rows


def sparse_backward(gy, x, W, samples):
    """(gx, rows, gW_rows): the gradient only for the W rows the batch touched."""
    xc, w, ids, valid, z = _gather_scores(x, W, samples)
    g = _score_grad(gy, z, valid)
    gx = torch.bmm(g.unsqueeze(1), w).squeeze(1)
    rows, gW_rows = _sparse_rows(g, xc, ids, W.shape[1])
    return gx.to(x.dtype), rows, gW_rows.to(W.dtype)


def forward_backward_sparse(x, W, samples, gy=None):
    """One gather for a training step: (loss_rows, gx, rows, gW_rows) for upstream ``gy``."""
    xc, w, ids, valid, z = _gather_scores(x, W, samples)
    loss = _loss_rows(z, valid)
    if gy is None:
        gy = torch.ones_like(loss)
    g = _score_grad(gy, z, valid)
    gx = torch.bmm(g.unsqueeze(1), w).squeeze(1)
    rows, gW_rows = _sparse_rows(g, xc, ids, W.shape[1])
    return loss.to(x.dtype), gx.to(x.dtype), rows, gW_rows.to(W.dtype)
