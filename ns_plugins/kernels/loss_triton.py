"""Triton kernels for the negative-sampling loss and for alias sampling.

Every kernel gathers each needed row of ``W`` straight from its place in memory, computes
the dot products, softplus terms and gradients in registers, and writes only the outputs:
no ``(B, k+1, d)`` gathered copy and, on the training path, no dense ``V x d`` gradient.

Contract (the same as ``ns_plugins.core.reference``):

* ``x`` is ``(B, d)``, ``W`` is ``(V, d)``, both float16, bfloat16, float32 or float64 and of
  the same dtype; ``samples`` is ``(B, k+1)`` int64, column 0 the positive id.
* A row whose column 0 is ``-1`` (any negative) is ignored: loss 0, zero gradient, and its
  ids are not read.
* Per row ``loss = softplus(-x.W[t]) + sum_k softplus(x.W[n_k])``.
* float16/bfloat16 compute in float32, float64 in float64; results are cast back.
* Ids are assumed in range: the core op checks them before it calls a kernel here, and
  ``validate=True`` (the default) adds a device-side check for direct callers.

On CUDA these are the device kernels of the torch op. With ``TRITON_INTERPRET=1`` the same
functions run on CPU tensors, which is how the test suite checks them without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ns_plugins.core.checks import check_args, check_loss_shapes

__all__ = [
    "forward",
    "backward",
    "sparse_backward",
    "forward_backward_sparse",
    "sample",
]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Allocation of outputs the kernels write in full; tests swap it for a poisoned fill.
_empty = torch.empty


# ----------------------------------------------------------------------------- device helpers


@triton.jit
def _log1p_exp_neg_abs(z):
    # log1p(exp(-|z|)) without a log1p primitive: log(u) * e / (u - 1) is exact to a few
    # ulps even when 1 + e rounds (Goldberg's trick); e itself when it rounds to 1.
    e = tl.exp(-tl.abs(z))
    u = 1.0 + e
    small = u == 1.0
    return tl.where(small, e, tl.log(u) * (e / tl.where(small, 1.0, u - 1.0)))


@triton.jit
def _softplus(z):
    return tl.maximum(z, 0.0) + _log1p_exp_neg_abs(z)


@triton.jit
def _sigmoid(z):
    e = tl.exp(-tl.abs(z))
    r = 1.0 / (1.0 + e)
    return tl.where(z >= 0, r, e * r)


@triton.jit
def _row_ids(s_ptr, ssb, ssk, rb, rk, B, V, K: tl.constexpr):
    """Sample ids of a block of rows and the mask of (row, column) pairs that count."""
    row_ok = rb < B
    col_ok = rk < K
    ids = tl.load(
        s_ptr + rb[:, None] * ssb + rk[None, :] * ssk,
        mask=row_ok[:, None] & col_ok[None, :],
        other=-1,
    )
    pos = tl.sum(tl.where(rk[None, :] == 0, ids, 0), axis=1)
    live = row_ok & (pos >= 0)
    # Out-of-range ids are rejected on the host side; masking them here only keeps a bad
    # id from touching memory outside W.
    valid = live[:, None] & col_ok[None, :] & (ids >= 0) & (ids < V)
    return ids, live, valid


@triton.jit
def _load_x(x_ptr, sxb, sxd, rb, rd, live, D, ACC: tl.constexpr):
    m = live[:, None] & (rd[None, :] < D)
    return tl.load(x_ptr + rb[:, None] * sxb + rd[None, :] * sxd, mask=m, other=0.0).to(ACC)


@triton.jit
def _load_w(w_ptr, swv, swd, ids, rd, valid, D, ACC: tl.constexpr):
    m = valid[:, :, None] & (rd[None, None, :] < D)
    ptr = w_ptr + ids[:, :, None] * swv + rd[None, None, :] * swd
    return tl.load(ptr, mask=m, other=0.0).to(ACC)


# ----------------------------------------------------------------------------- loss kernels


@triton.jit
def _store_grads(gx_ptr, gw_ptr, coef, x, w, rb, rd, slots, valid, B, D):
    """For columns ``rd``: gx rows of the block, and the W-gradient slots added atomically."""
    gx = tl.sum(coef[:, :, None] * w, axis=1)
    tl.store(
        gx_ptr + rb[:, None] * D + rd[None, :],
        gx.to(gx_ptr.dtype.element_ty),
        mask=(rb[:, None] < B) & (rd[None, :] < D),
    )
    gm = valid[:, :, None] & (rd[None, None, :] < D)
    gptr = gw_ptr + slots[:, :, None] * D + rd[None, None, :]
    tl.atomic_add(gptr, coef[:, :, None] * x[:, None, :], mask=gm, sem="relaxed")


@triton.jit
def _ns_fwd_kernel(
    x_ptr, w_ptr, s_ptr, loss_ptr,
    B, D, V,
    sxb, sxd, swv, swd, ssb, ssk,
    K: tl.constexpr, KP: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
    ND: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    rb = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    rk = tl.arange(0, KP)
    ids, live, valid = _row_ids(s_ptr, ssb, ssk, rb, rk, B, V, K)

    score = tl.zeros((BLOCK_B, KP), dtype=ACC)
    for c in range(ND):
        rd = c * BLOCK_D + tl.arange(0, BLOCK_D)
        x = _load_x(x_ptr, sxb, sxd, rb, rd, live, D, ACC)
        w = _load_w(w_ptr, swv, swd, ids, rd, valid, D, ACC)
        score += tl.sum(x[:, None, :] * w, axis=2)

    z = tl.where(rk[None, :] == 0, -score, score)
    loss = tl.sum(tl.where(valid, _softplus(z), 0.0), axis=1)
    tl.store(loss_ptr + rb, loss.to(loss_ptr.dtype.element_ty), mask=rb < B)


@triton.jit
def _ns_bwd_kernel(
    gy_ptr, x_ptr, w_ptr, s_ptr, slot_ptr, gx_ptr, gw_ptr, loss_ptr,
    B, D, V,
    sgy, sxb, sxd, swv, swd, ssb, ssk, slb, slk,
    K: tl.constexpr, KP: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
    ND: tl.constexpr, ACC: tl.constexpr,
    HAS_GY: tl.constexpr, HAS_SLOTS: tl.constexpr, WRITE_LOSS: tl.constexpr,
):  # fmt: skip
    """gx rows are written once; W-gradient rows are accumulated with atomics.

    ``gw_ptr`` is a zeroed contiguous (R, D) buffer in ACC; ``slot`` says which of its rows a
    sample feeds (the id itself for a dense gradient, the index into the unique ids for
    the sparse one).
    """
    rb = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    rk = tl.arange(0, KP)
    ids, live, valid = _row_ids(s_ptr, ssb, ssk, rb, rk, B, V, K)
    if HAS_SLOTS:
        slots = tl.load(slot_ptr + rb[:, None] * slb + rk[None, :] * slk, mask=valid, other=0)
    else:
        slots = ids
    if HAS_GY:
        gy = tl.load(gy_ptr + rb * sgy, mask=rb < B, other=0.0).to(ACC)
    else:
        gy = tl.full((BLOCK_B,), 1.0, dtype=ACC)

    if ND == 1:
        # The common case (d <= BLOCK_D): one gather of W serves scores and gradients.
        rd = tl.arange(0, BLOCK_D)
        x = _load_x(x_ptr, sxb, sxd, rb, rd, live, D, ACC)
        w = _load_w(w_ptr, swv, swd, ids, rd, valid, D, ACC)
        score = tl.sum(x[:, None, :] * w, axis=2)
    else:
        score = tl.zeros((BLOCK_B, KP), dtype=ACC)
        for c in range(ND):
            rd = c * BLOCK_D + tl.arange(0, BLOCK_D)
            x = _load_x(x_ptr, sxb, sxd, rb, rd, live, D, ACC)
            w = _load_w(w_ptr, swv, swd, ids, rd, valid, D, ACC)
            score += tl.sum(x[:, None, :] * w, axis=2)

    # z = -s_0 for the positive, s_k for negatives; d loss / d s = sign * sigmoid(z).
    sign = tl.where(rk[None, :] == 0, -1.0, 1.0).to(ACC)
    z = sign * score
    coef = tl.where(valid, sign * _sigmoid(z) * gy[:, None], 0.0)
    if WRITE_LOSS:
        loss = tl.sum(tl.where(valid, _softplus(z), 0.0), axis=1)
        tl.store(loss_ptr + rb, loss.to(loss_ptr.dtype.element_ty), mask=rb < B)

    if ND == 1:
        _store_grads(gx_ptr, gw_ptr, coef, x, w, rb, tl.arange(0, BLOCK_D), slots, valid, B, D)
    else:
        for c in range(ND):
            rd = c * BLOCK_D + tl.arange(0, BLOCK_D)
            x = _load_x(x_ptr, sxb, sxd, rb, rd, live, D, ACC)
            w = _load_w(w_ptr, swv, swd, ids, rd, valid, D, ACC)
            _store_grads(gx_ptr, gw_ptr, coef, x, w, rb, rd, slots, valid, B, D)


# ----------------------------------------------------------------------------- host side


# Under TRITON_INTERPRET=1, @triton.jit gives interpreted functions that run on CPU tensors.
_INTERPRETED = type(_ns_fwd_kernel).__name__ == "InterpretedFunction"


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_device(device: torch.device) -> None:
    if device.type != "cuda" and not _INTERPRETED:
        raise ValueError(
            f"the Triton kernels need CUDA tensors, got {device} (CPU tensors run only with "
            "TRITON_INTERPRET=1 set before triton is imported)"
        )


def _check(x: torch.Tensor, W: torch.Tensor, samples: torch.Tensor, validate: bool) -> None:
    check_args(x, W, samples)
    if samples.dtype != torch.int64:
        raise TypeError(f"samples must be int64, got {samples.dtype}")
    if x.shape[1] == 0 or W.shape[0] == 0:
        raise ValueError("x and W need at least one column and W at least one row")
    _check_device(x.device)
    if validate and samples.numel():
        V = W.shape[0]
        in_range = ((samples >= 0) & (samples < V)).all(dim=1) | (samples[:, 0] < 0)
        # On CUDA this does not wait for the device; a bad id fails at the next sync, the way
        # an out-of-range index does in torch's own embedding kernels.
        torch._assert_async(
            in_range.all(), f"samples hold ids outside [0, {V}) in rows that are not ignored"
        )


def _blocks(d: int, k1: int) -> tuple[int, int, int, int, int]:
    """(KP, BLOCK_D, ND, BLOCK_B, num_warps): about 4096 gathered elements per program, enough
    independent row loads in flight to hide gather latency without spilling registers."""
    kp = triton.next_power_of_2(k1)
    block_d = min(triton.next_power_of_2(d), 128)
    nd = triton.cdiv(d, block_d)
    block_b = max(1, min(64, 4096 // (kp * block_d)))
    return kp, block_d, nd, block_b, 4


def forward(
    x: torch.Tensor, W: torch.Tensor, samples: torch.Tensor, *, validate: bool = True
) -> torch.Tensor:
    """Per-row loss ``(B,)`` in ``x.dtype``."""
    _check(x, W, samples, validate)
    B, d = x.shape
    loss = _empty(B, dtype=x.dtype, device=x.device)
    if B == 0:
        return loss
    kp, block_d, nd, block_b, warps = _blocks(d, samples.shape[1])
    _ns_fwd_kernel[(triton.cdiv(B, block_b),)](
        x, W, samples, loss,
        B, d, W.shape[0],
        x.stride(0), x.stride(1), W.stride(0), W.stride(1), samples.stride(0), samples.stride(1),
        K=samples.shape[1], KP=kp, BLOCK_B=block_b, BLOCK_D=block_d, ND=nd,
        ACC=tl.float64 if x.dtype == torch.float64 else tl.float32,
        num_warps=warps,
    )  # fmt: skip
    return loss


def _launch_bwd(gy, x, W, samples, slots, gw_acc, loss):
    """Shared launcher: fills gx (returned) and accumulates into ``gw_acc``."""
    B, d = x.shape
    gx = _empty((B, d), dtype=x.dtype, device=x.device)
    if B == 0:
        return gx
    kp, block_d, nd, block_b, warps = _blocks(d, samples.shape[1])
    _ns_bwd_kernel[(triton.cdiv(B, block_b),)](
        gy if gy is not None else x, x, W, samples,
        slots if slots is not None else samples, gx, gw_acc,
        loss if loss is not None else gx,
        B, d, W.shape[0],
        gy.stride(0) if gy is not None else 0,
        x.stride(0), x.stride(1), W.stride(0), W.stride(1), samples.stride(0), samples.stride(1),
        slots.stride(0) if slots is not None else 0, slots.stride(1) if slots is not None else 0,
        K=samples.shape[1], KP=kp, BLOCK_B=block_b, BLOCK_D=block_d, ND=nd,
        ACC=tl.float64 if x.dtype == torch.float64 else tl.float32,
        HAS_GY=gy is not None, HAS_SLOTS=slots is not None, WRITE_LOSS=loss is not None,
        num_warps=warps,
    )  # fmt: skip
    return gx


def _check_gy(gy: torch.Tensor, x: torch.Tensor) -> None:
    check_loss_shapes(x.shape, (0, x.shape[1]), gy_shape=gy.shape)
    if gy.device != x.device:
        raise ValueError(f"gy is on {gy.device} but x is on {x.device}")


def backward(
    gy: torch.Tensor,
    x: torch.Tensor,
    W: torch.Tensor,
    samples: torch.Tensor,
    *,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gx (B, d) in x.dtype, gW (V, d) in W.dtype)`` for the upstream per-row gradient gy.

    The dense gW exists only because autograd on a dense W asks for it. Rows are summed with
    float32 (float64 for float64) atomics straight into it: a sorted segment reduction would
    be deterministic but needs a sort and a permuted copy of the samples, more traffic than
    the atomics, which mostly hit distinct rows. float16/bfloat16 go through a float32 buffer.
    """
    _check(x, W, samples, validate)
    _check_gy(gy, x)
    acc = _acc_dtype(W.dtype)
    gw = torch.zeros(W.shape, dtype=acc, device=W.device)
    gx = _launch_bwd(gy, x, W, samples, None, gw, None)
    return gx, gw.to(W.dtype)


def _unique_rows(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Sorted unique ids of the live rows, each sample's slot among them, and how many leading
    entries of ``rows`` to drop (1 only when every row is ignored)."""
    live = samples[:, :1] >= 0
    # Ignored rows borrow an id some live row has (-1 if none), so they add no row of their own
    # and the only wait for the device is the one inside torch.unique.
    fill = torch.where(live, samples, -1).amax()
    rows, slots = torch.unique(torch.where(live, samples, fill), sorted=True, return_inverse=True)
    skip = int(rows.numel() == 1 and bool(rows[0] < 0))
    return rows, slots, skip


def _sparse(gy, x, W, samples, with_loss):
    if samples.shape[0] == 0:
        rows = torch.empty(0, dtype=torch.int64, device=W.device)
        gw = torch.empty((0, W.shape[1]), dtype=W.dtype, device=W.device)
        loss = torch.empty(0, dtype=x.dtype, device=x.device) if with_loss else None
        return loss, torch.empty_like(x), rows, gw
    rows, slots, skip = _unique_rows(samples)
    gw = torch.zeros((rows.numel(), x.shape[1]), dtype=_acc_dtype(W.dtype), device=W.device)
    loss = _empty(x.shape[0], dtype=x.dtype, device=x.device) if with_loss else None
    gx = _launch_bwd(gy, x, W, samples, slots, gw, loss)
    return loss, gx, rows[skip:], gw[skip:].to(W.dtype)


def sparse_backward(
    gy: torch.Tensor,
    x: torch.Tensor,
    W: torch.Tensor,
    samples: torch.Tensor,
    *,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(gx, rows, gW_rows)``: gradient only for the W rows that live samples touch.

    ``rows`` are the sorted unique ids (int64), ``gW_rows[i]`` the gradient of ``W[rows[i]]``.
    No ``V x d`` buffer exists; the one host sync is for the size of ``torch.unique``'s output.
    """
    _check(x, W, samples, validate)
    _check_gy(gy, x)
    _, gx, rows, gw_rows = _sparse(gy, x, W, samples, with_loss=False)
    return gx, rows, gw_rows


def forward_backward_sparse(
    x: torch.Tensor,
    W: torch.Tensor,
    samples: torch.Tensor,
    gy: torch.Tensor | None = None,
    *,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pass for training: ``(loss_rows, gx, rows, gW_rows)``.

    The upstream gradient of a summed loss is known before the forward pass (all ones, or
    ``gy``), so the loss and both gradients come from a single gather of W.
    """
    _check(x, W, samples, validate)
    if gy is not None:
        _check_gy(gy, x)
    return _sparse(gy, x, W, samples, with_loss=True)


# ----------------------------------------------------------------------------- alias sampling


@triton.jit
def _alias_kernel(prob_ptr, alias_ptr, out_ptr, N, V, seed, offset, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = i < N
    r0, r1, r2, r3 = tl.randint4x(seed, offset + i)
    # Column: floor(U64 * V / 2^64) from 64 random bits, exact with 64-bit integers
    # (V < 2^32), bias at most V / 2^64.
    hi = r0.to(tl.uint64)
    lo = r1.to(tl.uint64)
    col = ((hi * V + ((lo * V) >> 32)) >> 32).to(tl.int64)
    # Coin: 53 random bits, a float64 uniform on [0, 1) fine enough for the float64 table.
    coin = ((r2 >> 5).to(tl.uint64) * 67108864 + (r3 >> 6).to(tl.uint64)).to(tl.float64)
    coin = coin * 1.1102230246251565e-16  # 2^-53
    p = tl.load(prob_ptr + col, mask=m, other=1.0)
    a = tl.load(alias_ptr + col, mask=m, other=0)
    tl.store(out_ptr + i, tl.where(coin < p, col, a), mask=m)


def sample(
    prob: torch.Tensor,
    alias: torch.Tensor,
    shape,
    seed: int,
    offset: int = 0,
) -> torch.Tensor:
    """Draw ids of ``shape`` from an alias table on the table's device, no host sync.

    Element ``i`` uses Philox counter ``offset + i`` under key ``seed``: successive calls with
    one seed should advance ``offset`` by the number of elements drawn.
    """
    if prob.dim() != 1 or prob.numel() == 0:
        raise ValueError(f"prob must be a non-empty 1-D table, got shape {tuple(prob.shape)}")
    if alias.shape != prob.shape:
        raise ValueError(f"alias {tuple(alias.shape)} and prob {tuple(prob.shape)} differ")
    if prob.dtype != torch.float64 or alias.dtype != torch.int64:
        raise TypeError(f"tables must be float64 / int64, got {prob.dtype} / {alias.dtype}")
    if prob.device != alias.device:
        raise ValueError(f"prob is on {prob.device} but alias on {alias.device}")
    _check_device(prob.device)
    if prob.numel() >= 2**32:
        raise ValueError("the alias kernel supports fewer than 2**32 ids")
    if not 0 <= int(seed) < 2**63 or int(offset) < 0:
        raise ValueError(f"seed must be in [0, 2**63) and offset >= 0, got {seed}, {offset}")
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    prob, alias = prob.contiguous(), alias.contiguous()
    out = _empty(shape, dtype=torch.int64, device=prob.device)
    n = out.numel()
    if n:
        block = 1024
        _alias_kernel[(triton.cdiv(n, block),)](
            prob, alias, out, n, prob.numel(), int(seed), int(offset), BLOCK=block
        )
    return out
