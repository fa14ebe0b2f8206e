"""negative_sampling drop-in: parity with Chainer 7.8.1 and with the float64 reference."""

import chainer_setup  # noqa: F401  (skips without Chainer, applies the import fixes)
import numpy as np
import pytest

# isort: split

import chainer
import chainer.functions as F
from chainer import gradient_check
from chainer.utils import type_check

from ns_plugins.chainer import negative_sampling
from ns_plugins.core import reference

pytestmark = pytest.mark.chainer

DTYPES = [np.float16, np.float32, np.float64]
TOL = {np.float16: 5e-3, np.float32: 1e-5, np.float64: 1e-12}


def _data(rng, dtype, B=9, d=6, V=7, k=4):
    """Small V so that negatives repeat (gradients must accumulate); two ignored rows."""
    x = rng.standard_normal((B, d)).astype(dtype)
    W = rng.standard_normal((V, d)).astype(dtype)
    t = rng.integers(0, V, B).astype(np.int32)
    t[[1, 5]] = -1
    drawn = rng.integers(0, V, (B, k + 1)).astype(np.int32)
    return x, t, W, drawn, k


def _fixed_sampler(drawn, calls=None):
    def sampler(shape):
        if calls is not None:
            calls.append(shape)
        assert shape == drawn.shape
        return drawn.copy()

    return sampler


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduce", ["sum", "no"])
def test_forward_backward_match_chainer(dtype, reduce):
    rng = np.random.default_rng()
    x, t, W, drawn, k = _data(rng, dtype)
    calls = []
    ours_x, ours_W = chainer.Variable(x.copy()), chainer.Variable(W.copy())
    y, samples = negative_sampling(
        ours_x, t, ours_W, _fixed_sampler(drawn, calls), k, reduce, return_samples=True
    )
    ref_x, ref_W = chainer.Variable(x.copy()), chainer.Variable(W.copy())
    y_ref, samples_ref = F.negative_sampling(
        ref_x, t, ref_W, _fixed_sampler(drawn), k, reduce, return_samples=True
    )
    assert calls == [(len(t), k + 1)]  # Chainer's exact sampler call
    assert samples.dtype == samples_ref.dtype == np.int32
    np.testing.assert_array_equal(samples, samples_ref)
    np.testing.assert_array_equal(samples[:, 0], t)
    assert y.dtype == y_ref.dtype == dtype
    assert y.shape == y_ref.shape == (() if reduce == "sum" else (len(t),))
    assert _rel(y.array, y_ref.array) < TOL[dtype]
    if reduce == "no":
        assert (y.array[t == -1] == 0).all()

    gy = rng.standard_normal(y.shape).astype(dtype)
    y.grad, y_ref.grad = gy.copy(), gy.copy()
    y.backward()
    y_ref.backward()
    assert ours_x.grad.dtype == dtype and ours_W.grad.dtype == dtype
    # Chainer computes float16 gradients in float16; ours in float32, so compare loosely there.
    tol = 2e-2 if dtype == np.float16 else TOL[dtype]
    assert _rel(ours_x.grad, ref_x.grad) < tol
    assert _rel(ours_W.grad, ref_W.grad) < tol
    assert (ours_x.grad[t == -1] == 0).all()


@pytest.mark.parametrize("reduce", ["sum", "no"])
def test_matches_float64_reference(reduce):
    rng = np.random.default_rng()
    x, t, W, drawn, k = _data(rng, np.float32, B=64, d=16, V=40, k=5)
    xv, Wv = chainer.Variable(x), chainer.Variable(W)
    y, samples = negative_sampling(xv, t, Wv, _fixed_sampler(drawn), k, reduce, return_samples=True)
    expected = reference.negative_sampling(x, t, W, drawn, reduce=reduce)
    assert _rel(y.array, expected) < 1e-5
    gy = rng.standard_normal(y.shape).astype(np.float32)
    y.grad = gy
    y.backward()
    gx, gW = reference.ns_loss_grad(np.broadcast_to(gy, (len(t),)), x, W, samples)
    assert _rel(xv.grad, gx) < 1e-5
    assert _rel(Wv.grad, gW) < 1e-5


@pytest.mark.parametrize("reduce", ["sum", "no"])
def test_gradient_checks(reduce):
    rng = np.random.default_rng()
    x, t, W, drawn, k = _data(rng, np.float64)
    gy = rng.standard_normal(() if reduce == "sum" else (len(t),))
    ggx, ggW = rng.standard_normal(x.shape), rng.standard_normal(W.shape)

    def f(x, W):
        return negative_sampling(x, t, W, _fixed_sampler(drawn), k, reduce)

    gradient_check.check_backward(f, (x, W), gy, atol=1e-6, rtol=1e-6)
    gradient_check.check_double_backward(f, (x, W), gy, (ggx, ggW), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("reduce", ["sum", "no"])
def test_double_backward_matches_chainer(reduce):
    rng = np.random.default_rng()
    x, t, W, drawn, k = _data(rng, np.float64)
    ggx, ggW = rng.standard_normal(x.shape), rng.standard_normal(W.shape)
    results = []
    for fn in (negative_sampling, F.negative_sampling):
        xv, Wv = chainer.Variable(x.copy()), chainer.Variable(W.copy())
        y = fn(xv, t, Wv, _fixed_sampler(drawn), k, reduce)
        loss = F.sum(y) if reduce == "no" else y
        gx, gW = chainer.grad([loss], [xv, Wv], enable_double_backprop=True)
        z = F.sum(gx * ggx) + F.sum(gW * ggW)
        results.append(chainer.grad([z], [xv, Wv]))
    for ours, theirs in zip(*results):
        assert _rel(ours.array, theirs.array) < 1e-10


def test_float16_computes_like_chainer():
    """Large logits overflow float16 arithmetic; the loss must still be the float32 result."""
    x = np.full((2, 4), 8.0, np.float16)
    W = np.full((3, 4), 8.0, np.float16)
    t = np.array([0, 1], np.int32)
    drawn = np.array([[0, 1, 2], [1, 2, 0]], np.int32)
    y = negative_sampling(x, t, W, _fixed_sampler(drawn), 2, "no")
    y_ref = F.negative_sampling(x, t, W, _fixed_sampler(drawn), 2, "no")
    assert y.dtype == np.float16 and np.isfinite(y.array).all()
    np.testing.assert_array_equal(y.array, y_ref.array)


def test_no_backprop_mode_and_plain_arrays():
    rng = np.random.default_rng()
    x, t, W, drawn, k = _data(rng, np.float32)
    with chainer.no_backprop_mode():
        y = negative_sampling(x, t, W, _fixed_sampler(drawn), k)
    assert y.creator is None
    assert _rel(y.array, reference.negative_sampling(x, t, W, drawn)) < 1e-5


def _error(fn, *args, **kwargs):
    with pytest.raises(Exception) as info:
        fn(*args, **kwargs)
    return info.type, str(info.value)


def _bad_inputs():
    rng = np.random.default_rng(0)
    x, t, W, drawn, k = _data(rng, np.float32)
    sampler = _fixed_sampler(drawn)
    return [
        ((x, t.astype(np.int64), W, sampler, k), {}),  # t not int32
        ((x, t, W.astype(np.float64), sampler, k), {}),  # dtypes differ
        ((x.astype(np.int32), t, W.astype(np.int32), sampler, k), {}),  # not float
        ((x[0], t, W, sampler, k), {}),  # x not 2-D
        ((x, t[:, None], W, sampler, k), {}),  # t not 1-D
        ((x[:3], t, W, sampler, k), {}),  # batch sizes differ
        ((x, t, W[0], sampler, k), {}),  # W not 2-D
        ((x, t, W, sampler, k, "mean"), {}),  # bad reduce
        ((x, t, W, sampler, k), {"return_sample": True}),  # unknown keyword
        ((x, t, W, sampler, k), {"foo": 1, "bar": 2}),
    ]


@pytest.mark.parametrize("case", range(len(_bad_inputs())))
def test_bad_input_raises_like_chainer(case):
    args, kwargs = _bad_inputs()[case]
    ours = _error(negative_sampling, *args, **dict(kwargs))
    theirs = _error(F.negative_sampling, *args, **dict(kwargs))
    assert ours == theirs
    assert ours[0] in (type_check.InvalidType, ValueError, TypeError)


def test_pooled_dense_gradient_is_exact_across_steps():
    """The dense W gradient array is reused between steps: it must come back all-zero but for the
    rows of the new batch, also after a hook wrote into it and while an old one is still held."""
    rng = np.random.default_rng()
    B, d, V, k = 40, 8, 60, 5
    x = chainer.Variable(rng.standard_normal((B, d)).astype(np.float32))
    W = chainer.Variable(rng.standard_normal((V, d)).astype(np.float32))
    t = rng.integers(0, V, B).astype(np.int32)

    def step():
        x.cleargrad()
        W.cleargrad()
        loss, samples = negative_sampling(
            x, t, W, lambda s: rng.integers(0, V, s).astype(np.int32), k, return_samples=True
        )
        loss.backward()
        _, gW = reference.ns_loss_grad(np.ones(B), x.array, W.array, samples)
        np.testing.assert_allclose(W.grad, gW, rtol=1e-5, atol=1e-5)
        return W.grad

    step()
    step()  # reused: only the previous rows were dirty
    held = step()
    kept = held.copy()
    other = step()  # `held` is still referenced: a different array, `held` untouched
    assert other is not held
    np.testing.assert_array_equal(held, kept)
    del held, other
    W.grad += 1.0  # an optimizer hook such as WeightDecay writes into the gradient in place
    W.cleargrad()
    step()
    step()
