"""``chainer.functions.negative_sampling`` computed by the shared kernels, without torch.

Three nodes, each the derivative of the previous one, so Chainer's double backprop works:
the loss, its gradient (x, W, gy) -> (gx, gW), and that gradient's vector-Jacobian product.
numpy inputs run the fused numba kernels on the arrays' own memory; cupy inputs the CuPy kernels.
The second-order node evaluates the float64 reference (rarely used, never on the training path).
Type checks, errors, outputs and returned samples are those of Chainer 7.8.1, and the nodes are
reached through ``chainer.functions.loss.negative_sampling`` as in Chainer, so code that patches
that module's attributes sees every call.
"""

from __future__ import annotations

import os
import sys

from ns_plugins.chainer import _fixed  # noqa: F401  (Chainer imports on new stacks after it)

# isort: split
import chainer
import numpy
from chainer import backend, function_node
from chainer.backends import cuda
from chainer.functions.loss import negative_sampling as chainer_loss
from chainer.utils import argument, type_check

from ns_plugins.chainer import installer
from ns_plugins.core import reference
from ns_plugins.kernels import loss_cupy, loss_numba

# numba's OpenMP workers sleep while they wait instead of spinning: on a busy machine spinning
# workers take the cores from the ones with work (RESULTS.md: the legacy word2vec epoch on a
# loaded machine). Read when the workers start, at the first kernel; a set value is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


_KERNEL_DTYPES = {
    numpy.dtype(numpy.float16): numpy.dtype(numpy.float32),
    numpy.dtype(numpy.float32): numpy.dtype(numpy.float32),
    numpy.dtype(numpy.float64): numpy.dtype(numpy.float64),
}


def _kernel_dtype(dtype):
    """The dtype a float array is computed in: float16 in float32 (Chainer keeps reductions out
    of float16); float types the kernels are not compiled for (long double, a non-native byte
    order), which Chainer's type check accepts, in the native float32 or float64 of their size."""
    found = _KERNEL_DTYPES.get(dtype)
    if found is None:
        found = numpy.dtype(numpy.float32 if dtype.itemsize <= 4 else numpy.float64)
    return found


def _widen(a):
    dtype = _kernel_dtype(a.dtype)
    return a if a.dtype == dtype else a.astype(dtype)


def _check_arrays(x, W):
    """What the kernels assume of x and W, checked in O(1) before any of them runs.

    Chainer's type check leaves the widths alone (its einsum raises ValueError on a mismatch), and
    it may be switched off (``chainer.config.type_check``); the kernels read ``x.shape[1]`` values
    from every row of W they gather, so a mismatch would read or write outside the arrays. Shapes
    raise ValueError as Chainer's einsum does; dtypes the kernels cannot take together raise
    TypeError (Chainer's type check rejects them before this runs)."""
    if x.ndim != 2 or W.ndim != 2:
        raise ValueError(
            f"negative_sampling: x and W must be 2-D, got x of shape {x.shape} and W of shape "
            f"{W.shape}"
        )
    if x.shape[1] != W.shape[1]:
        raise ValueError(
            f"negative_sampling: x has {x.shape[1]} columns but W has {W.shape[1]} (x {x.shape}, "
            f"W {W.shape}); the rows of x and of W must have the same width"
        )
    if x.dtype.kind != "f" or W.dtype != x.dtype:
        raise TypeError(
            f"negative_sampling: x and W must be floating point arrays of one dtype, got x "
            f"{x.dtype} and W {W.dtype}"
        )


def _check_gy(gy, reduce, batch):
    """The upstream gradient of the loss: 0-d for reduce='sum', one value per row for 'no'.
    Chainer's own backward indexes ``gy[i]`` (IndexError on a 0-d gy) or broadcasts it."""
    want = () if reduce == "sum" else (batch,)
    if gy.shape != want:
        error = IndexError if gy.ndim == 0 else ValueError
        raise error(
            f"negative_sampling: the gradient of the loss must have shape {want} "
            f"(reduce={reduce!r}, {batch} rows), got {gy.shape}"
        )


def _check_ids(samples, n_rows, batch):
    """The ids the kernels read: int64 in [0, n_rows), ``batch`` rows of at least one column,
    column 0 keeping the ignore label -1.

    Chainer indexes ``W[samples]`` with numpy, so an id in [-V, -1] (a label of -5 too; only -1
    is ignored) counts from the end of W and anything else raises IndexError; the same happens
    here, from one min/max pass, on both devices (Chainer's GPU kernels read outside W instead).
    """
    xp = backend.get_array_module(samples)
    if samples.dtype.kind not in "iu":
        raise IndexError(
            "arrays used as indices must be of integer (or boolean) type: the sampler returned "
            f"{samples.dtype} samples, not integer ids"
        )
    if samples.ndim != 2:
        raise IndexError(f"the sampler must return a 2-D array of ids, got shape {samples.shape}")
    if samples.shape[0] != batch:  # Chainer: W[samples][mask] with a mask of another length
        raise IndexError(
            f"the ids have {samples.shape[0]} rows (shape {samples.shape}) but x has {batch}: x, "
            "t and the sampler's ids need one row per example"
        )
    if samples.shape[1] == 0:
        raise IndexError(f"the ids have no column for the positive id (shape {samples.shape})")
    ids = samples.astype(numpy.int64, copy=False)
    if ids.size == 0:
        return ids
    lo, hi = (int(v) for v in cuda.to_cpu(xp.stack([ids.min(), ids.max()])))  # one sync on GPU
    if hi >= n_rows or lo < -n_rows:
        bad = hi if hi >= n_rows else lo
        raise IndexError(
            f"index {bad} is out of bounds for axis 0 with size {n_rows}: the labels t and the "
            f"sampler's ids must lie in [-{n_rows}, {n_rows}) (W has {n_rows} rows)"
        )
    if lo < 0:
        wrap = ids < 0
        wrap[:, 0] &= ids[:, 0] != NegativeSamplingFunction.ignore_label
        if wrap.any():
            ids = ids + wrap * n_rows
    return ids


def _loss_rows(x, W, ids):
    """Per-row loss in float32/float64 (float16 inputs widened)."""
    x, W = _widen(x), _widen(W)
    if isinstance(x, cuda.ndarray):
        return loss_cupy.forward(x, W, ids, validate=False)
    return loss_numba.loss_rows(x, W, ids)


def _pair_grads(gy, x, W, ids, with_loss):
    """CPU: (loss rows, gx, g) for sum_b gy_b loss_b, g[b, k] the gradient of each pair's score;
    ``gy`` a scalar or (B,); float16 computed in float32."""
    x, W = _widen(x), _widen(W)
    gy_rows = numpy.broadcast_to(numpy.asarray(gy, x.dtype), (x.shape[0],))
    g, gx, loss = loss_numba.pair_grads(gy_rows, x, W, ids, with_loss)
    return loss, gx, g


def _loss_grad(gy, x, W, ids):
    """(gx, gW) of sum_b gy_b loss_b, in the dtypes of x and W; ``gy`` scalar or (B,)."""
    if isinstance(x, cuda.ndarray):
        gx, gW = loss_cupy.backward(gy, _widen(x), _widen(W), ids, validate=False)
        return gx.astype(x.dtype, copy=False), gW.astype(W.dtype, copy=False)
    _, gx, g = _pair_grads(gy, x, W, ids, with_loss=False)
    return _dense_grads(x, W, ids, gx, g)


class _GradientPool:
    """Dense V x d gradient arrays for Chainer, reused between steps.

    A fresh ``numpy.zeros`` costs a page fault for every page the touched rows land on, which at
    V = 100k and above is most of a step. An array is handed out again only when nothing else
    references it (Chainer's ``cleargrads`` releases it); ``scatter_dense`` then rewrites it in
    one pass, also clearing whatever else wrote to it in between (an optimizer hook such as
    WeightDecay adds to the gradient in place).
    """

    def __init__(self):
        self._arrays: dict = {}  # (shape, dtype) -> array

    def take(self, shape, dtype):
        key = (shape, numpy.dtype(dtype).str)
        array = self._arrays.get(key)
        # references: the dict, the local name, getrefcount's argument
        if array is None or sys.getrefcount(array) != 3:
            array = numpy.empty(shape, dtype)
            array.fill(0)  # resident now: later passes read memory instead of faulting pages in
            self._arrays[key] = array
        return array


_POOL = _GradientPool()


def _dense_grads(x, W, ids, gx, g):
    """(gx, gW) in the dtypes of x and W, gW dense as Chainer wants it, built in a pooled array."""
    gW = _POOL.take(W.shape, _kernel_dtype(W.dtype))
    loss_numba.scatter_dense(g, _widen(x), ids, gW)
    return gx.astype(x.dtype, copy=False), gW.astype(W.dtype, copy=False)


class NegativeSamplingFunction(function_node.FunctionNode):
    ignore_label = -1
    samples = None

    def __init__(self, sampler, sample_size, reduce="sum"):
        if reduce not in ("sum", "no"):
            raise ValueError(f"only 'sum' and 'no' are valid for 'reduce', but '{reduce}' is given")
        self.sampler = sampler
        self.sample_size = sample_size
        self.reduce = reduce
        self.wx = None
        # With reduce='sum' the gradient is the gy = 1 gradient times the scalar gy, so the
        # training path computes it with the loss in one pass over the gathered rows
        # (negative_sampling turns this on when a gradient will be asked for).
        self.fuse_grad = False
        self.grads = None

    def _make_samples(self, t):
        size = int(t.shape[0])
        # first one is the positive, and others are sampled negatives (Chainer's exact steps)
        samples = self.sampler((size, self.sample_size + 1))
        samples = backend.from_chx(samples)
        samples[:, 0] = t
        return samples

    def check_type_forward(self, in_types):
        type_check._argname(in_types, ("x", "t", "W"))
        x_type, t_type, w_type = in_types

        type_check.expect(
            x_type.dtype.kind == "f",
            x_type.ndim == 2,
            t_type.dtype == numpy.int32,
            t_type.ndim == 1,
            x_type.shape[0] == t_type.shape[0],
            w_type.dtype == x_type.dtype,
            w_type.ndim == 2,
        )

    def forward(self, inputs):
        self.retain_inputs((0, 1, 2))
        x, t, W = inputs
        _check_arrays(x, W)
        self.ignore_mask = t != self.ignore_label
        samples = self._make_samples(t)
        self.ids = _check_ids(samples, W.shape[0], x.shape[0])
        if self.fuse_grad and self.reduce == "sum" and not isinstance(x, cuda.ndarray):
            loss, *self.grads = _pair_grads(1.0, x, W, self.ids, with_loss=True)
        else:
            loss = _loss_rows(x, W, self.ids)
        if self.reduce == "sum":
            loss = loss.sum()
        self.samples = samples
        xp = backend.get_array_module(x)
        return (xp.asarray(loss, dtype=x.dtype),)

    def backward(self, indexes, grad_outputs):
        x, t, W = self.get_retained_inputs()
        (gy,) = grad_outputs
        # looked up at call time in Chainer's module, as Chainer's own backward does
        grad_class = installer.lookup(
            chainer_loss, "NegativeSamplingFunctionGrad", NegativeSamplingFunctionGrad
        )
        grad = grad_class(self.reduce, self.ignore_mask, self.sample_size, self.ids, self.wx)
        if isinstance(grad, NegativeSamplingFunctionGrad):
            grad.grads = self.grads
            grad.checked_ids = self.ids
        outputs = grad.apply((x, W, gy))
        return outputs[0], None, outputs[-1]  # Chainer's node returns (gx, None, gW)


class NegativeSamplingFunctionGrad(function_node.FunctionNode):
    """(x, W, gy) -> (gx, gW): the gradient of sum_b gy_b * loss_b, with dense gW.

    Constructed as Chainer's is. ``samples`` (column 0 the labels) are checked as the loss checks
    them (``_check_ids``) before a kernel runs, unless the drop-in loss built this node: it hands
    over the ids it checked as ``checked_ids``."""

    def __init__(self, reduce, ignore_mask, sample_size, samples, wx):
        self.reduce = reduce
        self.ignore_mask = ignore_mask
        self.sample_size = sample_size
        self.samples = samples
        self.wx = wx
        self.grads = None  # (gx, g) for gy = 1 from the fused forward, if any
        self.checked_ids = None  # ids already checked against these x and W

    def forward(self, inputs):
        self.retain_inputs((0, 1, 2))
        x, W, gy = inputs
        _check_arrays(x, W)
        _check_gy(gy, self.reduce, x.shape[0])
        ids = self.checked_ids
        if ids is None:
            ids = self.checked_ids = _check_ids(self.samples, W.shape[0], x.shape[0])
        if self.grads is None:
            return _loss_grad(gy, x, W, ids)
        gx, g = self.grads
        scale = gx.dtype.type(gy)
        if scale != 1:  # loss.backward() sends 1
            gx, g = gx * scale, g * scale
        return _dense_grads(x, W, ids, gx, g)

    def backward(self, indexes, grad_outputs):
        x, W, gy = self.get_retained_inputs()
        ggx, ggW = grad_outputs
        node = NegativeSamplingFunctionGradGrad(self.checked_ids, ggx is None, ggW is None)
        inputs = [x, W, gy] + [g for g in (ggx, ggW) if g is not None]
        grads = node.apply(inputs)
        return tuple(grads[i] for i in indexes)


class NegativeSamplingFunctionGradGrad(function_node.FunctionNode):
    """(x, W, gy, ggx, ggW) -> (d/dx, d/dW, d/dgy) of <ggx, gx> + <ggW, gW>, from the float64
    reference (on the host for cupy arrays)."""

    def __init__(self, samples, no_ggx, no_ggW):
        self.samples = samples
        self.no_ggx = no_ggx
        self.no_ggW = no_ggW

    def forward(self, inputs):
        x, W, gy, *rest = (cuda.to_cpu(a) for a in inputs)
        ggx = numpy.zeros_like(x) if self.no_ggx else rest.pop(0)
        ggW = numpy.zeros_like(W) if self.no_ggW else rest.pop(0)
        gy_rows = numpy.broadcast_to(gy.astype(numpy.float64), (x.shape[0],))
        g_gy, g_x, g_W = reference.ns_loss_double_grad(
            gy_rows, x, W, cuda.to_cpu(self.samples), ggx, ggW
        )
        if gy.ndim == 0:
            g_gy = g_gy.sum()
        xp = backend.get_array_module(inputs[0])
        return tuple(xp.asarray(g.astype(a.dtype)) for g, a in zip((g_x, g_W, g_gy), (x, W, gy)))

    def backward(self, indexes, grad_outputs):
        raise NotImplementedError(
            "negative_sampling supports gradients up to second order; a third-order gradient "
            "was requested"
        )


def negative_sampling(x, t, W, sampler, sample_size, reduce="sum", **kwargs):
    """negative_sampling(x, t, W, sampler, sample_size, reduce='sum', *, return_samples=False)

    Negative sampling loss, a drop-in for :func:`chainer.functions.negative_sampling`.

    Per row: ``softplus(-x.W[t]) + sum_k softplus(x.W[n_k])`` with ``n`` drawn by
    ``sampler((batch_size, sample_size + 1))`` (column 0 is then overwritten with ``t``).
    Rows with ``t == -1`` give 0. ``reduce='sum'`` returns the 0-d sum, ``'no'`` the per-row
    losses; ``return_samples=True`` also returns the sample array (the sampler's dtype).
    float16 inputs are computed in float32 and cast back (long double and byte-swapped floats in
    the native float64 / float32). Before any kernel runs, x and W of different widths raise
    ValueError and ids that do not fit x (rows) or W (outside ``[-V, V)``) raise IndexError, as
    in Chainer, also with Chainer's type check switched off; negative ids other than the ignore
    label count from the end of W, as numpy indexing does in Chainer.
    """
    return_samples = False
    if kwargs:
        (return_samples,) = argument.parse_kwargs(kwargs, ("return_samples", return_samples))

    # looked up at call time in Chainer's module, as Chainer's own function does
    func_class = installer.lookup(
        chainer_loss, "NegativeSamplingFunction", NegativeSamplingFunction
    )
    func = func_class(sampler, sample_size, reduce)
    if isinstance(func, NegativeSamplingFunction):
        func.fuse_grad = chainer.config.enable_backprop and any(
            isinstance(v, chainer.Variable) and v.requires_grad for v in (x, W)
        )
    out = func.apply((x, t, W))[0]

    if return_samples:
        return out, func.samples
    return out
