"""CuPy kernels for the negative-sampling loss and alias sampling (no torch involved).

The Chainer drop-in calls these for cupy inputs, so GPU programs written for Chainer need
nothing beyond cupy. Same contract as ``ns_plugins.core.reference``: ``x`` (B, d), ``W`` (V, d)
of one dtype (float16, float32 or float64), ``samples`` (B, k+1) int64 with the positive id in
column 0, rows whose column 0 is negative ignored (loss 0, zero gradient).
The kernels assume ids in range; ``validate=True`` (the default) checks them before a launch.

One warp handles one row: its lanes stride over the d columns of x and of each sampled row of
W (coalesced reads of whole rows), the dot is a warp shuffle reduction, and softplus / sigmoid
are evaluated once per (row, sample) in float32 (float64 for float64). The W gradient is summed
with atomics into a zeroed float32/float64 buffer, so there is no gathered (B, k+1, d) copy.
float16 is handled as raw 16-bit values converted with ``cvt`` instructions, which keeps the
source free of CUDA headers that a cupy install may not ship.
"""

from __future__ import annotations

import functools

import numpy as np

from ns_plugins.core.checks import check_loss_shapes

try:
    import cupy as cp
except ImportError:  # the module stays importable; every entry point says what is missing
    cp = None

__all__ = ["forward", "backward", "sparse_backward", "ns_loss", "sample", "SOURCE"]

SOURCE = r"""
typedef long long i64;
typedef unsigned long long u64;

template <typename T> struct Acc { typedef float type; };
template <> struct Acc<double> { typedef double type; };

__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ double load(const double* p) { return *p; }
__device__ __forceinline__ float load(const unsigned short* p) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(*p));
    return f;
}
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }
__device__ __forceinline__ void store(unsigned short* p, float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    *p = h;
}

__device__ __forceinline__ float softplus(float z) {
    return fmaxf(z, 0.0f) + log1pf(expf(-fabsf(z)));
}
__device__ __forceinline__ double softplus(double z) {
    return fmax(z, 0.0) + log1p(exp(-fabs(z)));
}
__device__ __forceinline__ float sigmoid(float z) {
    float e = expf(-fabsf(z));
    float r = 1.0f / (1.0f + e);
    return z >= 0.0f ? r : e * r;
}
__device__ __forceinline__ double sigmoid(double z) {
    double e = exp(-fabs(z));
    double r = 1.0 / (1.0 + e);
    return z >= 0.0 ? r : e * r;
}

template <typename A> __device__ __forceinline__ A warp_sum(A v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;  // every lane holds the total
}

// Signed score of sample j of `row`: z = -x.W[t] for the positive, x.W[n] for negatives.
template <typename T, typename A>
__device__ __forceinline__ A score(const T* xr, const T* W, i64 id, i64 D, int j, int lane) {
    const T* wr = W + id * D;
    A acc = 0;
    for (i64 c = lane; c < D; c += 32) acc += (A)load(xr + c) * (A)load(wr + c);
    acc = warp_sum(acc);
    return j == 0 ? -acc : acc;
}

// One warp per row; blockDim.x is a multiple of 32, so a warp never straddles two rows.
template <typename T>
__global__ void ns_forward(const T* x, const T* W, const i64* samples, T* loss,
                           i64 B, i64 D, int K) {
    typedef typename Acc<T>::type A;
    i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= B) return;
    const i64* s = samples + row * K;
    A total = 0;
    if (s[0] >= 0) {
        const T* xr = x + row * D;
        for (int j = 0; j < K; ++j) total += softplus(score<T, A>(xr, W, s[j], D, j, lane));
    }
    if (lane == 0) store(loss + row, total);
}

// gx[row] = sum_j c_j W[n_j],  gW[slot_j] += c_j x[row],  c_j = gy * sign_j * sigmoid(z_j).
// slot_j is n_j for a dense gW, else the sample's index among the unique ids (slots != 0).
// The K coefficients of a row go through shared memory (K per warp).
template <typename T>
__global__ void ns_backward(const T* gy, i64 gy_stride, const T* x, const T* W,
                            const i64* samples, const i64* slots, T* gx,
                            typename Acc<T>::type* gW, i64 B, i64 D, int K) {
    typedef typename Acc<T>::type A;
    extern __shared__ __align__(16) unsigned char smem[];
    A* coef = reinterpret_cast<A*>(smem) + (threadIdx.x >> 5) * K;
    i64 row = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= B) return;
    const i64* s = samples + row * K;
    const i64* dst = (slots ? slots : samples) + row * K;
    const T* xr = x + row * D;
    T* gxr = gx + row * D;
    if (s[0] < 0) {
        for (i64 c = lane; c < D; c += 32) store(gxr + c, (A)0);
        return;
    }
    A g = (A)load(gy + row * gy_stride);
    for (int j = 0; j < K; ++j) {
        A z = score<T, A>(xr, W, s[j], D, j, lane);
        A sig = sigmoid(z);
        if (lane == 0) coef[j] = g * (j == 0 ? -sig : sig);
    }
    __syncwarp();
    for (i64 c = lane; c < D; c += 32) {
        A xc = (A)load(xr + c);
        A acc = 0;
        for (int j = 0; j < K; ++j) {
            acc += coef[j] * (A)load(W + s[j] * D + c);
            atomicAdd(gW + dst[j] * D + c, coef[j] * xc);
        }
        store(gxr + c, acc);
    }
}

// SplitMix64 finaliser: a counter-based generator, so draws need no state on the device.
__device__ __forceinline__ u64 mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Draw i uses counters 2(offset + i) and 2(offset + i) + 1 under key mix64(seed): the bucket
// from 64 bits by multiply-high (bias <= V / 2^64), the coin as a 53-bit float64 uniform.
extern "C" __global__ void alias_sample(const double* prob, const i64* alias, i64* out,
                                        i64 n, u64 V, u64 seed, u64 offset) {
    const u64 gamma = 0x9E3779B97F4A7C15ull;
    u64 key = mix64(seed);
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (i64)gridDim.x * blockDim.x) {
        u64 c = 2 * (offset + (u64)i);
        u64 col = __umul64hi(mix64(key + (c + 1) * gamma), V);
        double coin = (double)(mix64(key + (c + 2) * gamma) >> 11) * 1.1102230246251565e-16;
        out[i] = coin < prob[col] ? (i64)col : alias[col];
    }
}
"""

_CTYPES = {np.dtype(np.float16): "unsigned short", np.dtype(np.float32): "float",
           np.dtype(np.float64): "double"}  # fmt: skip
_WARPS = 4  # rows per block
_TORCH_DTYPES = ("torch.float16", "torch.float32", "torch.float64")


def _empty(shape, dtype):
    """Outputs the kernels write in full; tests swap this for a poisoned fill."""
    return cp.empty(shape, dtype=dtype)


def _require_cupy():
    if cp is None:
        raise ImportError("ns_plugins.kernels.loss_cupy needs cupy (pip install cupy-cuda12x)")


@functools.cache
def _module():
    names = [f"ns_{kind}<{t}>" for kind in ("forward", "backward") for t in _CTYPES.values()]
    names.append("alias_sample")
    return cp.RawModule(code=SOURCE, options=("-std=c++14",), name_expressions=names)


def _kernel(kind: str, dtype) -> object:
    return _module().get_function(f"ns_{kind}<{_CTYPES[np.dtype(dtype)]}>")


def _check(x, W, samples, validate: bool):
    _require_cupy()
    for name, a in (("x", x), ("W", W), ("samples", samples)):
        if not isinstance(a, cp.ndarray):
            raise TypeError(f"{name} must be a cupy array, got {type(a).__name__}")
    check_loss_shapes(x.shape, W.shape, samples.shape)
    if x.shape[1] == 0:
        raise ValueError("x and W need at least one column")
    if x.dtype not in _CTYPES:
        raise TypeError(f"x must be float16, float32 or float64, got {x.dtype}")
    if W.dtype != x.dtype:
        raise TypeError(f"W must have the dtype of x ({x.dtype}), got {W.dtype}")
    if samples.dtype.kind not in "iu":
        raise TypeError(f"samples must hold integer ids, got {samples.dtype}")
    samples = cp.ascontiguousarray(samples, dtype=cp.int64)
    if validate and samples.size:
        V = W.shape[0]
        ok = ((samples >= 0) & (samples < V)).all(axis=1) | (samples[:, 0] < 0)
        if not bool(ok.all()):  # one sync: a bad id would otherwise read outside W
            raise ValueError(f"samples hold ids outside [0, {V}) in rows that are not ignored")
    return cp.ascontiguousarray(x), cp.ascontiguousarray(W), samples


def _grid(B: int) -> tuple[tuple[int], tuple[int]]:
    return ((B + _WARPS - 1) // _WARPS,), (32 * _WARPS,)


def forward(x, W, samples, *, validate: bool = True):
    """Per-row loss ``(B,)`` in ``x.dtype``."""
    x, W, samples = _check(x, W, samples, validate)
    B, D = x.shape
    loss = _empty(B, x.dtype)
    if B:
        grid, block = _grid(B)
        args = (x, W, samples, loss, np.int64(B), np.int64(D), np.int32(samples.shape[1]))
        _kernel("forward", x.dtype)(grid, block, args)
    return loss


def _launch_backward(gy, x, W, samples, slots, n_rows):
    """gx and the float32/float64 gradient buffer of ``n_rows`` rows (slots None: row = id)."""
    B, D = x.shape
    K = samples.shape[1]
    gy = cp.asarray(gy, dtype=x.dtype)
    if gy.shape not in ((), (B,)):
        raise ValueError(f"gy must be a scalar or have shape ({B},), got {gy.shape}")
    if gy.ndim:  # (numpy's ascontiguousarray would turn a 0-d gy into shape (1,))
        gy = cp.ascontiguousarray(gy)
    acc = np.float64 if x.dtype == np.float64 else np.float32
    shared = _WARPS * K * np.dtype(acc).itemsize
    if shared > 48 * 1024:  # the default dynamic shared-memory limit of a block
        raise ValueError(f"at most {48 * 1024 // (_WARPS * np.dtype(acc).itemsize)} "
                         f"samples per row, got {K}")  # fmt: skip
    gx = _empty(x.shape, x.dtype)
    gW = cp.zeros((n_rows, D), dtype=acc)
    if B:
        grid, block = _grid(B)
        # gy_stride 0 broadcasts a scalar gy (the backward of reduce='sum'); a null slots
        # pointer makes the kernel write gW rows by id.
        args = (gy, np.int64(gy.ndim), x, W, samples, slots if slots is not None else np.intp(0),
                gx, gW, np.int64(B), np.int64(D), np.int32(K))  # fmt: skip
        _kernel("backward", x.dtype)(grid, block, args, shared_mem=shared)
    return gx, gW


def backward(gy, x, W, samples, *, validate: bool = True):
    """``(gx (B, d), gW (V, d))`` in the input dtype for upstream ``gy`` (scalar or (B,))."""
    x, W, samples = _check(x, W, samples, validate)
    gx, gW = _launch_backward(gy, x, W, samples, None, W.shape[0])
    return gx, gW.astype(W.dtype, copy=False)


def sparse_backward(gy, x, W, samples, *, validate: bool = True):
    """``(gx, rows, gW_rows)``: the gradient only for the sorted unique ids ``rows`` that rows
    not ignored touch; no ``V x d`` buffer."""
    x, W, samples = _check(x, W, samples, validate)
    live = samples[:, :1] >= 0
    ids = cp.where(live, samples, -1)
    rows, slots = cp.unique(ids, return_inverse=True)
    slots = cp.ascontiguousarray(slots.reshape(samples.shape), dtype=cp.int64)
    skip = int(rows.size > 0 and int(rows[0]) < 0)  # ignored rows put -1 first
    gx, gW = _launch_backward(gy, x, W, samples, slots, rows.size)
    return gx, rows[skip:], gW[skip:].astype(W.dtype, copy=False)


def sample(prob, alias, shape, seed: int, offset: int = 0):
    """Draw int64 ids of ``shape`` from an alias table on the device, no host sync.

    Draw ``i`` depends only on ``(seed, offset + i)``: successive calls with one seed should
    advance ``offset`` by the number of ids drawn.
    """
    _require_cupy()
    if prob.ndim != 1 or prob.size == 0 or alias.shape != prob.shape:
        raise ValueError(f"prob and alias must be one non-empty 1-D shape, got {prob.shape}, "
                         f"{alias.shape}")  # fmt: skip
    if prob.dtype != cp.float64 or alias.dtype != cp.int64:
        raise TypeError(f"tables must be float64 / int64, got {prob.dtype} / {alias.dtype}")
    if not 0 <= int(seed) < 2**64 or int(offset) < 0:
        raise ValueError(f"seed must be in [0, 2**64) and offset >= 0, got {seed}, {offset}")
    prob, alias = cp.ascontiguousarray(prob), cp.ascontiguousarray(alias)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    out = _empty(shape, cp.int64)
    n = out.size
    if n:
        blocks = min((n + 255) // 256, 65536)
        args = (prob, alias, out, np.int64(n), np.uint64(prob.size), np.uint64(seed),
                np.uint64(offset))  # fmt: skip
        _module().get_function("alias_sample")((blocks,), (256,), args)
    return out


# ----------------------------------------------------------------------------- torch bridge


def _torch_stream():
    """Run cupy work on torch's current stream, so the two never race."""
    import torch

    return cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)


def _loss_function():
    import torch

    class CupyLoss(torch.autograd.Function):
        """Per-row loss of CUDA tensors through the CuPy kernels (zero-copy via DLPack)."""

        @staticmethod
        def forward(ctx, x, W, samples, sparse_grad):
            ctx.save_for_backward(x, W, samples)
            ctx.sparse_grad = sparse_grad
            with _torch_stream():
                loss = forward(*(cp.from_dlpack(t.detach()) for t in (x, W, samples)))
            return torch.from_dlpack(loss)

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, gy):
            x, W, samples = (cp.from_dlpack(t.detach()) for t in ctx.saved_tensors)
            with _torch_stream():
                gy = cp.from_dlpack(gy.contiguous())
                if not ctx.sparse_grad:
                    gx, gW = backward(gy, x, W, samples, validate=False)
                    return torch.from_dlpack(gx), torch.from_dlpack(gW), None, None
                gx, rows, gW_rows = sparse_backward(gy, x, W, samples, validate=False)
            gW = torch.sparse_coo_tensor(
                torch.from_dlpack(rows).unsqueeze(0),
                torch.from_dlpack(gW_rows),
                tuple(W.shape),
                is_coalesced=True,
            )
            return torch.from_dlpack(gx), gW, None, None

    return CupyLoss


_LOSS = []


def ns_loss(x, W, samples, sparse_grad: bool = False):
    """Per-row loss ``(B,)`` of torch CUDA tensors, computed by these kernels, with autograd for
    x and W (W's gradient sparse over the touched rows when ``sparse_grad``)."""
    _require_cupy()
    if not (x.is_cuda and W.is_cuda and samples.is_cuda):
        raise ValueError("the cupy backend needs x, W and samples on a CUDA device")
    if str(x.dtype) not in _TORCH_DTYPES:
        raise TypeError(f"the cupy backend takes float16, float32 or float64, got {x.dtype}")
    if not _LOSS:
        _LOSS.append(_loss_function())
    return _LOSS[0].apply(x, W, samples, sparse_grad)
