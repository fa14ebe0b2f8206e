"""The chunk engine's training step on CUDA: skip-gram / CBOW with negative sampling over one
chunk of the encoded corpus, trained in place on the device (Triton).

The same update rule and the same random numbers as the numba kernel
``ns_plugins.kernels.chunk_numba.train_chunk``: every random number is a pure function of (seed,
corpus position, slot) (``chunk_numba.keyed_u64``), so a draw does not depend on which program makes
it. With one program the kernel visits the words in the numba kernel's order and gives its
weights to float32 rounding; with many, programs update the shared tables without locks, as
word2vec.c's threads and GPU word2vec ports do.

Layout of the work: a fixed grid of programs (enough to fill the device) takes spans of ``SPAN``
consecutive corpus positions from a counter on the device, in order, until the chunk is done, so
the step needs no host-side word count and no host sync. For
each kept center word a program finds its context the way word2vec.c does after subsampling (the
``reach`` nearest kept words on each side inside the sentence; keep decisions are recomputed
from the position's key, in blocks), draws the negatives from the alias table, computes scores in
float32 and updates the rows in place:

* skip-gram: one (context, center) pair at a time; the k + 1 output rows are gathered at once and
  updated in registers in word2vec's order (a repeated negative sees the earlier update);
* CBOW (mean of the context rows): one step per center, context rows get the gradient by atomic
  adds (a word twice in the window gets it twice, as in word2vec.c);
* ``shared_negatives``: one set of negatives per center for its whole window (HogBatch), all
  scores from the entry weights, both tables updated by atomic adds.

Weight rows are read with ``.cg`` (cached in L2, not in the SM's L1), so a program sees what
programs on other SMs and its own atomic adds wrote, not a stale L1 copy.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ns_plugins.kernels.chunk_numba import (
    SLOT_BITS,
    SLOT_DRAWS,
    SLOT_KEEP,
    SLOT_REACH,
    position_key,
)
from ns_plugins.kernels.loss_triton import _sigmoid, _softplus  # the loss kernels' stable forms

__all__ = ["train_chunk", "device_tables"]

SPAN = 64  # corpus positions per unit of work
_BLK = 32  # positions scanned at once when looking for context words


# ----------------------------------------------------------------------------- random numbers


@triton.jit
def _bits(key, pos, slot):
    """chunk_numba.keyed_u64: splitmix64's output number pos * 2**20 + slot under ``key``."""
    n = (pos.to(tl.int64) * (1 << 20) + slot).to(tl.uint64, bitcast=True)
    z = key + n * 0x9E3779B97F4A7C15
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    return z ^ (z >> 31)


@triton.jit
def _uniform(u):
    return (u >> 11).to(tl.float64) * 1.1102230246251565e-16  # 2**-53


@triton.jit
def _below(u, n):
    """chunk_numba.to_below: floor(u * n / 2**64) in 64-bit arithmetic, n < 2**32."""
    b = n.to(tl.uint64)
    return (((u >> 32) * b + (((u & 0xFFFFFFFF) * b) >> 32)) >> 32).to(tl.int64)


@triton.jit
def _kept(ids_ptr, keep_ptr, key, q, inb):
    """Which positions ``q`` (masked by ``inb``) survive subsampling, and their words."""
    w = tl.load(ids_ptr + q, mask=inb, other=0)
    kp = tl.load(keep_ptr + w, mask=inb, other=1.0).to(tl.float64)
    coin = _uniform(_bits(key, q, 0))  # SLOT_KEEP
    return inb & ((kp >= 1.0) | (kp > coin)), w


@triton.jit
def _draw(prob_ptr, alias_ptr, key, pos, slot, V):
    """Alias draws: bucket from ``slot``, coin from ``slot + 1`` (chunk_numba.draw_alias)."""
    bucket = _below(_bits(key, pos, slot), V)
    coin = _uniform(_bits(key, pos, slot + 1))
    p = tl.load(prob_ptr + bucket)
    a = tl.load(alias_ptr + bucket).to(tl.int64)
    return tl.where(coin < p, bucket, a)


# ----------------------------------------------------------------------------- math


@triton.jit
def _pick(vec, idx, i):
    """Element ``i`` of a small register vector."""
    return tl.sum(tl.where(idx == i, vec, 0))


# ----------------------------------------------------------------------------- the step


@triton.jit
def _context(ids_ptr, keep_ptr, key, p, sa, sb, reach, WP: tl.constexpr, CP: tl.constexpr,
             BLK: tl.constexpr):  # fmt: skip
    """Words of the ``reach`` nearest kept positions left and right of ``p`` in [sa, sb), in
    word2vec's order (far left ... near left, near right ... far right), and their count."""
    rw = tl.arange(0, WP)
    o = tl.arange(0, BLK)
    left = tl.zeros([WP], dtype=tl.int64)
    right = tl.zeros([WP], dtype=tl.int64)
    nl = reach * 0
    base = p
    while (nl < reach) & (base > sa):
        q = base - 1 - o
        kept, w = _kept(ids_ptr, keep_ptr, key, q, q >= sa)
        rank = nl + tl.cumsum(kept.to(tl.int64), 0)  # 1 = nearest
        hit = kept[None, :] & (rank[None, :] == rw[:, None] + 1)
        left += tl.sum(tl.where(hit, w.to(tl.int64)[None, :], 0), axis=1)
        nl = tl.minimum(reach, nl + tl.sum(kept.to(tl.int64)))
        base -= BLK
    nr = reach * 0
    base = p + 1
    while (nr < reach) & (base < sb):
        q = base + o
        kept, w = _kept(ids_ptr, keep_ptr, key, q, q < sb)
        rank = nr + tl.cumsum(kept.to(tl.int64), 0)
        hit = kept[None, :] & (rank[None, :] == rw[:, None] + 1)
        right += tl.sum(tl.where(hit, w.to(tl.int64)[None, :], 0), axis=1)
        nr = tl.minimum(reach, nr + tl.sum(kept.to(tl.int64)))
        base += BLK
    cc = tl.arange(0, CP)
    ctx = tl.sum(tl.where(cc[:, None] == nl - 1 - rw[None, :], left[None, :], 0), axis=1)
    ctx += tl.sum(tl.where(cc[:, None] == nl + rw[None, :], right[None, :], 0), axis=1)
    return ctx, nl + nr


@triton.jit
def _targets_update(h, O, t, kk, K, alpha, LOSS: tl.constexpr):
    """word2vec's sequential rule for hidden vector ``h`` against the gathered output rows ``O``
    (row 0 the positive, t = -1 skipped): returns the updated rows, the gradient for ``h`` and
    the loss."""
    neu1e = tl.zeros_like(h)
    loss = tl.zeros([], dtype=tl.float32)
    for k in range(K):
        tk = _pick(t, kk, k)
        ok = tl.sum(tl.where(kk[:, None] == k, O, 0.0), axis=0)
        f = tl.sum(h * ok)
        label = tl.where(k == 0, 1.0, 0.0)
        g = tl.where(tk >= 0, (label - _sigmoid(f)) * alpha, 0.0)
        if LOSS:
            loss += tl.where(tk >= 0, _softplus(tl.where(k == 0, -f, f)), 0.0)
        neu1e += g * ok
        # every copy of a repeated row gets the update, so all copies end equal
        O += tl.where((t[:, None] == tk) & (tk >= 0), g * h[None, :], 0.0)
    return O, neu1e, loss


@triton.jit
def _chunk_kernel(
    ids_ptr, off_ptr, win_ptr, wout_ptr, keep_ptr, prob_ptr, alias_ptr, part_ptr, next_ptr,
    n_sent, V, D, key_lo, key_hi, alpha_start, alpha_end, window, negative,
    SHRINK: tl.constexpr, MODE: tl.constexpr, LOSS: tl.constexpr, SPAN: tl.constexpr,
    BLOCK_D: tl.constexpr, KP: tl.constexpr, WP: tl.constexpr, CP: tl.constexpr,
    BLK: tl.constexpr,
):  # fmt: skip
    # MODE: 0 skip-gram, 1 skip-gram with shared negatives, 2 CBOW
    pid = tl.program_id(0)
    zero = pid.to(tl.int64) * 0  # an int64 scalar: integer arguments equal to 1 are constants
    key = ((zero + key_hi).to(tl.uint64) << 32) | (zero + key_lo).to(tl.uint64)
    first = tl.load(off_ptr)
    last = tl.load(off_ptr + n_sent)
    total = last - first
    span = tl.maximum(total, 1).to(tl.float64)
    K = zero + negative + 1
    rd = tl.arange(0, BLOCK_D)
    dm = rd < D
    kk = tl.arange(0, KP)
    cc = tl.arange(0, CP)
    loss = tl.zeros([], dtype=tl.float64)
    pairs = zero
    words = zero
    n_spans = tl.cdiv(total, SPAN)
    # spans are handed out by a counter: a program that starts late (the grid may exceed what
    # the device holds at once) or meets long sentences simply takes fewer
    j = tl.atomic_add(next_ptr, 1, sem="relaxed").to(tl.int64)
    while j < n_spans:
        u = first + j * SPAN
        v = tl.minimum(u + SPAN, last)
        # the sentence holding u: the last s with offsets[s] <= u
        lo = zero
        hi = zero + n_sent
        while hi - lo > 1:
            mid = (lo + hi) // 2
            below = tl.load(off_ptr + mid) <= u
            lo = tl.where(below, mid, lo)
            hi = tl.where(below, hi, mid)
        s = lo
        sa = tl.load(off_ptr + s)
        sb = tl.load(off_ptr + s + 1)
        for pos in range(u, v):
            p = zero + pos  # a tensor, also where the interpreter hands out Python ints
            while p >= sb:  # next non-empty sentence
                s += 1
                sa = sb
                sb = tl.load(off_ptr + s + 1)
            kept, word = _kept(ids_ptr, keep_ptr, key, p, p >= 0)
            if kept:
                words += 1
                center = word.to(tl.int64)
                # alpha falls linearly over the chunk, per sentence (as the numba kernel)
                alpha = (alpha_start + (alpha_end - alpha_start) * ((sa - first) / span)).to(
                    tl.float32
                )
                reach = zero + window
                if SHRINK:
                    reach = window - _below(_bits(key, p, 1), zero + window)  # SLOT_REACH
                ctx, nc = _context(ids_ptr, keep_ptr, key, p, sa, sb, reach, WP, CP, BLK)
                cm = cc < nc
                if MODE == 0:
                    for ci in range(nc):
                        c = zero + ci
                        xi = _pick(ctx, cc, c)
                        x = tl.load(win_ptr + xi * D + rd, mask=dm, other=0.0, cache_modifier=".cg")
                        slot = 2 + 2 * (c * negative + kk - 1)  # SLOT_DRAWS
                        t = _draw(prob_ptr, alias_ptr, key, p, slot, V)
                        t = tl.where(kk == 0, center, tl.where(t == center, -1, t))
                        t = tl.where(kk < K, t, -1)
                        om = (t >= 0)[:, None] & dm[None, :]
                        optr = wout_ptr + t[:, None] * D + rd[None, :]
                        O = tl.load(optr, mask=om, other=0.0, cache_modifier=".cg")
                        O, neu1e, pl = _targets_update(x, O, t, kk, K, alpha, LOSS)
                        tl.store(optr, O, mask=om)
                        tl.store(win_ptr + xi * D + rd, x + neu1e, mask=dm)
                        loss += pl
                        pairs += 1
                        tl.debug_barrier()  # the next pair reads rows this one wrote
                else:
                    slot = 2 + 2 * (kk - 1)  # SLOT_DRAWS, context 0
                    t = _draw(prob_ptr, alias_ptr, key, p, slot, V)
                    t = tl.where(kk == 0, center, tl.where(t == center, -1, t))
                    t = tl.where((kk < K) & (nc > 0), t, -1)
                    om = (t >= 0)[:, None] & dm[None, :]
                    optr = wout_ptr + t[:, None] * D + rd[None, :]
                    xm = cm[:, None] & dm[None, :]
                    xptr = win_ptr + ctx[:, None] * D + rd[None, :]
                    X = tl.load(xptr, mask=xm, other=0.0, cache_modifier=".cg")
                    if MODE == 2:
                        inv = 1.0 / tl.maximum(nc, 1).to(tl.float32)
                        h = tl.sum(X, axis=0) * inv
                        O = tl.load(optr, mask=om, other=0.0, cache_modifier=".cg")
                        O, neu1e, pl = _targets_update(h, O, t, kk, K, alpha, LOSS)
                        tl.store(optr, O, mask=om)
                        tl.atomic_add(
                            xptr, tl.zeros_like(X) + neu1e[None, :], mask=xm, sem="relaxed"
                        )
                        loss += pl
                        pairs += tl.where(nc > 0, 1, 0)
                    else:
                        dX = tl.zeros_like(X)
                        dY = tl.zeros([KP, BLOCK_D], dtype=tl.float32)
                        for k in range(K):
                            tk = _pick(t, kk, k)
                            live_d = dm & (
                                tk + rd * 0 >= 0
                            )  # a vector mask: the interpreter wants one
                            ok = tl.load(
                                wout_ptr + tk * D + rd, mask=live_d, other=0.0, cache_modifier=".cg"
                            )
                            f = tl.sum(X * ok[None, :], axis=1)
                            label = tl.where(k == 0, 1.0, 0.0)
                            live = cm & (tk >= 0)
                            g = tl.where(live, (label - _sigmoid(f)) * alpha, 0.0)
                            if LOSS:
                                z = tl.where(k == 0, -f, f)
                                loss += tl.sum(tl.where(live, _softplus(z), 0.0))
                            dX += g[:, None] * ok[None, :]
                            dyk = tl.sum(g[:, None] * X, axis=0)
                            dY += tl.where(kk[:, None] == k, dyk[None, :], 0.0)
                        tl.atomic_add(optr, dY, mask=om, sem="relaxed")
                        tl.atomic_add(xptr, dX, mask=xm, sem="relaxed")
                        pairs += nc
                    tl.debug_barrier()
        j = tl.atomic_add(next_ptr, 1, sem="relaxed").to(tl.int64)
    tl.store(part_ptr + pid * 3, loss)
    tl.store(part_ptr + pid * 3 + 1, pairs.to(tl.float64))
    tl.store(part_ptr + pid * 3 + 2, words.to(tl.float64))


# ----------------------------------------------------------------------------- host side

_INTERPRETED = type(_chunk_kernel).__name__ == "InterpretedFunction"
_MAX_K = 64  # negative + 1 rows gathered per update
_MAX_WINDOW = 32


def device_tables(keep_prob, sampler, device):
    """The per-word tables as the kernel reads them fastest, on ``device``: keep probabilities
    float32, and the ``AliasSampler``'s table (float64 probabilities, int32 ids)."""
    keep = torch.as_tensor(keep_prob, device=device).to(torch.float32).contiguous()
    return (keep, *sampler.device_tables(device, index_dtype=torch.int32))


def _need(name, t, dtypes, ndim, device):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        names = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"{name} must have dtype {names}, got {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device}, ids on {device}: all must be on one device")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous")


def _programs(device: torch.device, num_warps: int) -> int:
    if device.type != "cuda":
        return 4
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return sms * max(1, 32 // num_warps)  # 32 resident warps per SM keep loads in flight


def train_chunk(
    ids: torch.Tensor,
    offsets: torch.Tensor,
    W_in: torch.Tensor,
    W_out: torch.Tensor,
    keep_prob: torch.Tensor,
    alias_prob: torch.Tensor,
    alias_idx: torch.Tensor,
    window: int,
    negative: int,
    alpha_start: float,
    alpha_end: float,
    seed: int,
    shrink_windows: bool = True,
    cbow: bool = False,
    shared_negatives: bool = False,
    *,
    compute_loss: bool = True,
    programs: int | None = None,
    first_position: int = 0,
) -> torch.Tensor:
    """Train ``W_in`` / ``W_out`` in place on one chunk; the arguments mean what they mean for
    ``chunk_numba.train_chunk``.

    All tensors on one CUDA device (CPU tensors only under ``TRITON_INTERPRET=1``): ``ids``
    int32 (the whole encoded corpus may stay on the device), ``offsets`` int64 sentence offsets
    into ``ids`` (the chunk), ``W_in`` / ``W_out`` float32 (V, d), ``keep_prob`` float32/float64,
    ``alias_prob`` float64, ``alias_idx`` int32/int64 (``device_tables`` makes them). Random
    numbers are keyed by (seed, corpus position), so chunks of one epoch never share draws; pass
    another seed per epoch. Ids are not checked here (once per run is the caller's job): an id
    outside [0, V) is undefined behaviour.

    Returns a float64 tensor ``[loss_sum, n_pairs, n_words]`` on the device, without waiting
    for the kernel. ``programs`` sets the number of persistent programs (default: enough to
    fill the device); one program visits the words in the numba kernel's order.
    """
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"ids must be a torch tensor, got {type(ids).__name__}")
    device = ids.device
    if device.type != "cuda" and not _INTERPRETED:
        raise ValueError(
            f"the Triton chunk kernel needs CUDA tensors, got {device} (CPU tensors run only "
            "with TRITON_INTERPRET=1 set before triton is imported)"
        )
    _need("ids", ids, (torch.int32,), 1, device)
    _need("offsets", offsets, (torch.int64,), 1, device)
    _need("W_in", W_in, (torch.float32,), 2, device)
    _need("W_out", W_out, (torch.float32,), 2, device)
    _need("keep_prob", keep_prob, (torch.float32, torch.float64), 1, device)
    _need("alias_prob", alias_prob, (torch.float64,), 1, device)
    _need("alias_idx", alias_idx, (torch.int32, torch.int64), 1, device)
    V, d = W_in.shape
    if W_out.shape != (V, d):
        raise ValueError(f"W_out shape {tuple(W_out.shape)} differs from W_in {tuple(W_in.shape)}")
    for name, t in (("keep_prob", keep_prob), ("alias_prob", alias_prob), ("alias_idx", alias_idx)):
        if t.shape[0] != V:
            raise ValueError(f"{name} has {t.shape[0]} entries, the vocabulary has {V}")
    if not 0 < V < 2**31 or d < 1:
        raise ValueError(f"W_in must be (V, d) with 0 < V < 2**31 and d >= 1, got {(V, d)}")
    window, negative = int(window), int(negative)
    if not 1 <= window <= _MAX_WINDOW:
        raise ValueError(f"window must be in [1, {_MAX_WINDOW}], got {window}")
    if not 0 <= negative < _MAX_K:
        raise ValueError(f"negative must be in [0, {_MAX_K - 1}], got {negative}")
    if SLOT_DRAWS + 4 * window * negative > 1 << SLOT_BITS:
        raise ValueError(f"window * negative must be below {(1 << SLOT_BITS) // 4}")
    if cbow and shared_negatives:
        raise ValueError("shared_negatives is a skip-gram option; CBOW already shares per center")
    if not (math.isfinite(alpha_start) and math.isfinite(alpha_end)):
        raise ValueError("alpha_start and alpha_end must be finite")
    if offsets.numel() < 1:
        raise ValueError("offsets must hold at least one entry")
    if programs is not None and int(programs) < 1:
        raise ValueError(f"programs must be >= 1, got {programs}")
    assert (SLOT_KEEP, SLOT_REACH, SLOT_DRAWS, SLOT_BITS) == (0, 1, 2, 20)  # as in the kernel

    mode = 2 if cbow else 1 if shared_negatives else 0
    block_d = triton.next_power_of_2(d)
    num_warps = 1 if mode == 0 and block_d <= 128 else 4
    n_prog = int(programs) if programs is not None else _programs(device, num_warps)
    partials = torch.empty((n_prog, 3), dtype=torch.float64, device=device)
    next_span = torch.zeros(1, dtype=torch.int32, device=device)
    if int(first_position) < 0:
        raise ValueError(f"first_position must be >= 0, got {first_position}")
    key = position_key(seed, first_position)
    _chunk_kernel[(n_prog,)](
        ids, offsets, W_in, W_out, keep_prob, alias_prob, alias_idx, partials, next_span,
        offsets.numel() - 1, V, d, key & 0xFFFFFFFF, key >> 32,
        float(alpha_start), float(alpha_end), window, negative,
        SHRINK=bool(shrink_windows), MODE=mode, LOSS=bool(compute_loss), SPAN=SPAN,
        BLOCK_D=block_d, KP=triton.next_power_of_2(negative + 1),
        WP=triton.next_power_of_2(window), CP=triton.next_power_of_2(2 * window), BLK=_BLK,
        num_warps=num_warps,
    )  # fmt: skip
    return partials.sum(dim=0)
