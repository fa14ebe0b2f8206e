"""``chainer.functions.negative_sampling`` computed by the shared kernels.

Three nodes, each the derivative of the previous one, so Chainer's double backprop works:
the loss, its gradient (x, W, gy) -> (gx, gW), and that gradient's vector-Jacobian product.
numpy inputs run the core's fused CPU kernels on shared memory; cupy inputs the CuPy kernels.
The second-order node goes through the core torch op on either device.
Type checks, errors, outputs and returned samples are those of Chainer 7.8.1.
"""

from __future__ import annotations

import sys
import warnings

import chainer
import numpy
import torch
from chainer import backend, function_node
from chainer.backends import cuda
from chainer.utils import argument, type_check

from ns_plugins.core.ops import ns_loss_bwd, ns_loss_fwd
from ns_plugins.kernels import cupy_ns, numba_cpu


def _as_torch(a):
    """numpy -> CPU tensor and cupy -> CUDA tensor, sharing memory; float16 widened to float32
    (Chainer keeps reductions out of float16)."""
    if isinstance(a, cuda.ndarray):
        t = torch.from_dlpack(a)
    else:
        a = numpy.asarray(a)
        if any(s < 0 for s in a.strides):  # torch cannot view negative strides
            a = a.copy()
        with warnings.catch_warnings():
            # read-only inputs (broadcast gradients) are only read here
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            t = torch.from_numpy(a)
    return t.float() if t.dtype == torch.float16 else t


def _samples_torch(samples):
    return _as_torch(samples).long()


def _from_torch(t, like):
    """Back to ``like``'s array module and dtype."""
    if isinstance(like, cuda.ndarray):
        out = cuda.cupy.from_dlpack(t.detach().contiguous())
    else:
        out = t.detach().cpu().numpy()
    return out.astype(like.dtype, copy=False)


def _rows_grad(gy, batch_size):
    """Upstream gradient per row: ``reduce='sum'`` sends a scalar to every row."""
    return gy.expand(batch_size) if gy.ndim == 0 else gy


def _widen(a):
    return a.astype(numpy.float32) if a.dtype == numpy.float16 else a


# The loss and its gradient: cupy arrays run the CuPy kernels (no torch on the GPU path), numpy
# arrays the core's CPU kernels on views of the same memory.
def _loss_rows(x, W, samples):
    """Per-row loss in float32/float64 (float16 inputs are widened first, as Chainer does)."""
    x, W = _widen(x), _widen(W)
    if isinstance(x, cuda.ndarray):
        return cupy_ns.forward(x, W, samples)
    with torch.no_grad():
        return ns_loss_fwd(_as_torch(x), _as_torch(W), _samples_torch(samples)).numpy()


def _loss_grad(gy, x, W, samples):
    """(gx, gW) of sum_b gy_b loss_b, in the dtypes of x and W; ``gy`` scalar or (B,)."""
    if isinstance(x, cuda.ndarray):
        gx, gW = cupy_ns.backward(gy, _widen(x), _widen(W), samples, validate=False)
        return gx.astype(x.dtype, copy=False), gW.astype(W.dtype, copy=False)
    _, gx, g = _pair_grads(gy, x, W, samples, with_loss=False)
    return _dense_grads(x, W, samples, gx, g)


def _pair_grads(gy, x, W, samples, with_loss):
    """CPU: (loss rows, gx, g) for sum_b gy_b loss_b, g[b, k] the gradient of each pair's score;
    float16 inputs computed in float32."""
    with torch.no_grad():
        xt, Wt = _as_torch(_widen(x)), _as_torch(_widen(W))
        gyt = _rows_grad(_as_torch(numpy.asarray(gy)).to(xt.dtype), x.shape[0])
        g, gx, loss = numba_cpu.rows_grad(gyt, xt, Wt, _samples_torch(samples), with_loss)
    return loss.numpy(), gx.numpy(), g


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


def _dense_grads(x, W, samples, gx, g):
    """(gx, gW) in the dtypes of x and W, gW dense as Chainer wants it, built in a pooled array."""
    gW = _POOL.take(W.shape, _widen(W).dtype)
    with torch.no_grad():
        numba_cpu.scatter_dense(g, _as_torch(_widen(x)), _samples_torch(samples), gW)
    return gx.astype(x.dtype, copy=False), gW.astype(W.dtype, copy=False)


class NegativeSamplingFunction(function_node.FunctionNode):
    ignore_label = -1
    samples = None

    def __init__(self, sampler, sample_size, reduce="sum", fuse_grad=False):
        if reduce not in ("sum", "no"):
            raise ValueError(f"only 'sum' and 'no' are valid for 'reduce', but '{reduce}' is given")
        self.sampler = sampler
        self.sample_size = sample_size
        self.reduce = reduce
        # With reduce='sum' the gradient is the gy = 1 gradient times the scalar gy, so the
        # training path computes it with the loss in one pass over the gathered rows.
        self.fuse_grad = fuse_grad and reduce == "sum"
        self.grads = None

    def _make_samples(self, t):
        size = int(t.shape[0])
        # first one is the positive, and others are sampled negatives (Chainer's exact call)
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
        self.ignore_mask = t != self.ignore_label
        samples = self._make_samples(t)
        if self.fuse_grad and not isinstance(x, cuda.ndarray):
            loss, *self.grads = _pair_grads(1.0, x, W, samples, with_loss=True)
        else:
            loss = _loss_rows(x, W, samples)
        if self.reduce == "sum":
            loss = loss.sum()
        self.samples = samples
        xp = backend.get_array_module(x)
        return (xp.asarray(loss, dtype=x.dtype),)

    def backward(self, indexes, grad_outputs):
        x, t, W = self.get_retained_inputs()
        (gy,) = grad_outputs
        grad = NegativeSamplingFunctionGrad(self.reduce, self.samples, self.grads)
        gx, gW = grad.apply((x, W, gy))
        return gx, None, gW


class NegativeSamplingFunctionGrad(function_node.FunctionNode):
    """(x, W, gy) -> (gx, gW): the gradient of sum_b gy_b * loss_b, with dense gW."""

    def __init__(self, reduce, samples, grads=None):
        self.reduce = reduce
        self.samples = samples
        self.grads = grads  # (gx, g) for gy = 1 from the fused forward, if any

    def forward(self, inputs):
        self.retain_inputs((0, 1, 2))
        x, W, gy = inputs
        if self.grads is None:
            return _loss_grad(gy, x, W, self.samples)
        gx, g = self.grads
        scale = gx.dtype.type(gy)
        if scale != 1:  # loss.backward() sends 1
            gx, g = gx * scale, g * scale
        return _dense_grads(x, W, self.samples, gx, g)

    def backward(self, indexes, grad_outputs):
        x, W, gy = self.get_retained_inputs()
        ggx, ggW = grad_outputs
        node = NegativeSamplingFunctionGradGrad(self.reduce, self.samples, ggx is None, ggW is None)
        inputs = [x, W, gy] + [g for g in (ggx, ggW) if g is not None]
        grads = node.apply(inputs)
        return tuple(grads[i] for i in indexes)


class NegativeSamplingFunctionGradGrad(function_node.FunctionNode):
    """(x, W, gy, ggx, ggW) -> (d/dx, d/dW, d/dgy) of <ggx, gx> + <ggW, gW>."""

    def __init__(self, reduce, samples, no_ggx, no_ggW):
        self.reduce = reduce
        self.samples = samples
        self.no_ggx = no_ggx
        self.no_ggW = no_ggW

    def forward(self, inputs):
        x, W, gy, *rest = inputs
        ggx = None if self.no_ggx else rest.pop(0)
        ggW = None if self.no_ggW else rest.pop(0)
        with torch.enable_grad():
            xt = _as_torch(x).detach().requires_grad_()
            Wt = _as_torch(W).detach().requires_grad_()
            gyt = _as_torch(gy).to(xt.dtype).detach().requires_grad_()
            gx, gW = ns_loss_bwd(_rows_grad(gyt, x.shape[0]), xt, Wt, _samples_torch(self.samples))
            outs, cots = [], []
            for out, cot in ((gx, ggx), (gW, ggW)):
                if cot is not None:
                    outs.append(out)
                    cots.append(_as_torch(cot).to(out.dtype))
            grads = torch.autograd.grad(outs, (xt, Wt, gyt), cots, allow_unused=True)
        grads = [torch.zeros_like(v) if g is None else g for g, v in zip(grads, (xt, Wt, gyt))]
        return tuple(_from_torch(g, a) for g, a in zip(grads, (x, W, gy)))

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
    float16 inputs are computed in float32 and cast back.
    """
    return_samples = False
    if kwargs:
        (return_samples,) = argument.parse_kwargs(kwargs, ("return_samples", return_samples))

    fuse_grad = chainer.config.enable_backprop and any(
        isinstance(v, chainer.Variable) and v.requires_grad for v in (x, W)
    )
    func = NegativeSamplingFunction(sampler, sample_size, reduce, fuse_grad)
    out = func.apply((x, t, W))[0]

    if return_samples:
        return out, func.samples
    return out
