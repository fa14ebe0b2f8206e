"""The negative-sampling loss as operators in PyTorch's registry.

``ns_plugins::ns_loss_fwd(x, W, samples) -> loss_rows`` and
``ns_plugins::ns_loss_bwd(gy, x, W, samples) -> (gx, gW)``, each with a fake (meta) implementation
and an autograd formula, so the loss works under ``torch.compile(fullgraph=True)`` and supports
double backward. On CPU the fused numba kernel runs for float32/float64 when numba is installed,
``ns_plugins.kernels.loss_torch`` otherwise (and for float16/bfloat16); on CUDA the fused Triton
kernel runs when Triton is importable, else the same torch code runs on the device.

Every entry point checks its input before a kernel runs (the kernels index W with the ids as
given): shapes and dtypes in the fake implementations too, so a traced graph fails at compile
time; the ids (column 0 in ``[-1, V)``, -1 meaning ignore, the other columns in ``[0, V)``) in the
real implementations with one min/max pass, which is where values exist under
``torch.compile`` (a custom op is opaque to the tracer, so the check runs at call time).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ns_plugins.core.checks import IdOutOfRangeError, check_args, check_float_pair, check_ids
from ns_plugins.kernels import loss_torch

__all__ = [
    "ns_loss",
    "ns_loss_sparse",
    "ns_loss_fwd",
    "ns_loss_bwd",
    "IdOutOfRangeError",
    "check_args",
    "check_float_pair",
    "check_ids",
]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _checked(x: Tensor, W: Tensor, samples: Tensor, gy: Tensor | None = None) -> None:
    check_args(x, W, samples, gy)
    check_ids(samples, W.shape[0])


try:
    from ns_plugins.kernels import loss_numba
except ImportError:  # numba is optional: the torch-ops kernel is the fallback
    loss_numba = None


def _kernels(x, W):
    """The kernel module for these tensors: fused CUDA, fused CPU, or plain torch ops."""
    if x.is_cuda:
        return _cuda_kernels() or loss_torch
    if loss_numba is not None and loss_numba.supports(x, W):
        return loss_numba
    return loss_torch


@torch.library.custom_op("ns_plugins::ns_loss_fwd", mutates_args=())
def ns_loss_fwd(x: Tensor, W: Tensor, samples: Tensor) -> Tensor:
    _checked(x, W, samples)
    return _kernels(x, W).forward(x, W, samples)


@ns_loss_fwd.register_fake
def _(x, W, samples):
    check_args(x, W, samples)
    return x.new_empty(x.shape[0])


@torch.library.custom_op("ns_plugins::ns_loss_bwd", mutates_args=())
def ns_loss_bwd(gy: Tensor, x: Tensor, W: Tensor, samples: Tensor) -> tuple[Tensor, Tensor]:
    _checked(x, W, samples, gy)
    return _kernels(x, W).backward(gy, x, W, samples)


@ns_loss_bwd.register_fake
def _(gy, x, W, samples):
    check_args(x, W, samples, gy)
    return torch.empty_like(x), torch.empty_like(W)


def _fwd_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _fwd_backward(ctx, gy):
    x, W, samples = ctx.saved_tensors
    gx, gW = ns_loss_bwd(gy, x, W, samples)
    return gx, gW, None


ns_loss_fwd.register_autograd(_fwd_backward, setup_context=_fwd_setup)


def _bwd_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _bwd_backward(ctx, ggx, ggW):
    """Second order, written in differentiable torch ops (so higher orders work too).

    With a_bk = ggx_b.w_bk + ggW[n_bk].x_b, f' and f'' the derivatives of softplus(sign * s):
    d/dgy_b = sum_k f'_bk a_bk; d/dx_b = sum_k (gy f'' a)_bk w_bk + (gy f')_bk ggW[n_bk];
    d/dW[n] += (gy f'' a)_bk x_b + (gy f')_bk ggx_b for every (b, k) with n_bk = n.
    """
    gy, x, W, samples = ctx.saved_tensors
    B, K = samples.shape
    dt = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    valid = (samples[:, 0] >= 0).to(dt)
    ids = samples.clamp_min(0)
    flat = ids.reshape(-1)
    sign = torch.ones(K, dtype=dt, device=x.device)
    sign[0] = -1
    xc, Wc, gyc = x.to(dt), W.to(dt), gy.to(dt)
    ggx = torch.zeros_like(xc) if ggx is None else ggx.to(dt)
    ggW = torch.zeros_like(Wc) if ggW is None else ggW.to(dt)
    w = Wc[flat].view(B, K, -1)
    s = torch.einsum("bd,bkd->bk", xc, w)
    f1 = sign * torch.sigmoid(sign * s) * valid[:, None]
    f2 = torch.sigmoid(s) * torch.sigmoid(-s) * valid[:, None]
    gg_rows = ggW[flat].view(B, K, -1)
    a = torch.einsum("bd,bkd->bk", ggx, w) + torch.einsum("bkd,bd->bk", gg_rows, xc)
    g = gyc[:, None] * f1
    h = gyc[:, None] * f2 * a
    g_gy = (f1 * a).sum(1)
    g_x = torch.einsum("bk,bkd->bd", h, w) + torch.einsum("bk,bkd->bd", g, gg_rows)
    contrib = h[:, :, None] * xc[:, None, :] + g[:, :, None] * ggx[:, None, :]
    g_W = torch.zeros_like(Wc).index_add(0, flat, contrib.reshape(B * K, -1))
    return g_gy.to(gy.dtype), g_x.to(x.dtype), g_W.to(W.dtype), None


ns_loss_bwd.register_autograd(_bwd_backward, setup_context=_bwd_setup)


class _SparseGradLoss(torch.autograd.Function):
    """Loss whose W gradient is a sparse COO tensor over the touched rows (for sparse optimizers and
    DDP's sparse all-reduce); no V x d temporary is made."""

    @staticmethod
    def forward(ctx, x, W, samples):
        ctx.save_for_backward(x, W, samples)
        return ns_loss_fwd(x, W, samples)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        x, W, samples = ctx.saved_tensors  # checked by ns_loss_fwd in forward
        gx, rows, gW_rows = _kernels(x, W).sparse_backward(gy, x, W, samples)
        gW = torch.sparse_coo_tensor(
            rows.unsqueeze(0), gW_rows, W.shape, is_coalesced=True, check_invariants=False
        )
        return gx, gW, None


def ns_loss(x: Tensor, W: Tensor, samples: Tensor, *, sparse_grad: bool = False) -> Tensor:
    """Per-row loss (B,) with autograd for x and W; ``sparse_grad=True``: W's grad is sparse."""
    if sparse_grad:
        return _SparseGradLoss.apply(x, W, samples)
    return ns_loss_fwd(x, W, samples)


def ns_loss_sparse(x: Tensor, W: Tensor, samples: Tensor, gy: Tensor | None = None):
    """Training path without autograd: (loss_rows, gx, rows, gW_rows) in one gather."""
    _checked(x, W, samples, gy)
    return _kernels(x, W).forward_backward_sparse(x, W, samples, gy)


def naive_loss(x: Tensor, W: Tensor, samples: Tensor) -> Tensor:
    """Plain autograd over gathered rows (the 'reference' backend and the benchmarks' naive row)."""
    valid = samples[:, 0] >= 0
    w = W[samples.clamp_min(0)]
    s = torch.einsum("bd,bkd->bk", x, w)
    sign = torch.ones(s.shape[1], dtype=s.dtype, device=s.device)
    sign[0] = -1
    return F.softplus(s * sign).sum(1) * valid


_CUDA_KERNELS: list = []


def _cuda_kernels():
    """The fused Triton kernels, imported once on first CUDA use; None when unavailable."""
    if not _CUDA_KERNELS:
        try:
            from ns_plugins.kernels import loss_triton
        except Exception:  # noqa: BLE001 - no triton / no CUDA: fall back to torch ops
            loss_triton = None
        _CUDA_KERNELS.append(loss_triton)
    return _CUDA_KERNELS[0]
