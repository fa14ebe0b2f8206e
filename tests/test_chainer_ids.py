"""Ids the kernels would read outside W never reach them: the drop-in does what Chainer 7.8.1 does
with each (IndexError, or numpy's counting from the end of W), from one min/max pass."""

import chainer_setup  # noqa: F401  (skips without Chainer, applies the import fixes)
import numpy as np
import pytest

# isort: split

import chainer
import chainer.functions as F

import ns_plugins.chainer as nsc
from ns_plugins.chainer import functions as drop_in

pytestmark = pytest.mark.chainer

V, B, K = 6, 5, 3


def _data(rng, dtype=np.float32):
    x = rng.standard_normal((B, 4)).astype(dtype)
    W = rng.standard_normal((V, 4)).astype(dtype)
    t = rng.integers(0, V, B).astype(np.int32)
    drawn = rng.integers(0, V, (B, K + 1)).astype(np.int32)
    return x, t, W, drawn


def _fixed(samples):
    return lambda shape: samples.copy()


@pytest.fixture
def kernels_untouched(monkeypatch):
    """Fails the test if a CPU kernel runs."""

    def refuse(*args, **kwargs):
        raise AssertionError("a kernel ran on unchecked ids")

    for name in ("loss_rows", "pair_grads", "scatter_dense"):
        monkeypatch.setattr(drop_in.loss_numba, name, refuse)


def _label(t, value, row=2):
    t = t.copy()
    t[row] = value
    return t


def _sample(drawn, value, row=1, col=2, dtype=None):
    drawn = drawn.copy() if dtype is None else drawn.astype(dtype)
    drawn[row, col] = value
    return drawn


# (name, inputs -> (t, samples)) for the cases where Chainer's W[samples] raises IndexError
RAISES = {
    "label equal to V": lambda t, d: (_label(t, V), d),
    "label below -V": lambda t, d: (_label(t, -V - 1), d),
    "sampled id equal to V": lambda t, d: (t, _sample(d, V)),
    "sampled id far above V": lambda t, d: (t, _sample(d, 2**40, dtype=np.int64)),
    "sampled id below -V": lambda t, d: (t, _sample(d, -V - 3)),
    "bad id in an ignored row": lambda t, d: (_label(t, -1, row=1), _sample(d, V, row=1)),
    "float samples": lambda t, d: (t, d.astype(np.float32)),
    "1-D samples": lambda t, d: (t, d[:, 0].copy()),
}


@pytest.mark.parametrize("case", list(RAISES))
@pytest.mark.parametrize("requires_grad", [True, False])
def test_index_errors_where_chainer_raises_them(case, requires_grad, kernels_untouched):
    x, t, W, drawn = _data(np.random.default_rng(0))
    t, samples = RAISES[case](t, drawn)
    W = chainer.Variable(W, requires_grad=requires_grad)
    with pytest.raises(IndexError):
        F.negative_sampling(x, t, W, _fixed(samples), K)  # Chainer's own
    with pytest.raises(IndexError) as info:
        nsc.negative_sampling(x, t, W, _fixed(samples), K)
    message = str(info.value)
    assert "\n" not in message
    if "samples" not in case:
        assert f"size {V}" in message and "out of bounds" in message


def test_through_the_link(kernels_untouched):
    link = nsc.NegativeSampling(4, [3, 1, 2], 2)
    with pytest.raises(IndexError, match="index 3 is out of bounds for axis 0 with size 3"):
        link(np.ones((2, 4), np.float32), np.array([0, 3], np.int32))


@pytest.mark.parametrize("reduce", ["sum", "no"])
@pytest.mark.parametrize(
    "case",
    ["label -5", "label -V", "negative sampled ids", "int64 samples"],
)
def test_negative_ids_count_from_the_end_as_in_chainer(case, reduce):
    """Only -1 is ignored; other ids in [-V, -1] index W from its end, as numpy does."""
    rng = np.random.default_rng()
    x, t, W, drawn = _data(rng, np.float64)
    if case == "label -5":
        t[[0, 3]] = -5
        t[4] = -1
    elif case == "label -V":
        t[1] = -V
    elif case == "negative sampled ids":
        drawn[:, 1:] -= V  # every negative in [-V, -1]
    else:
        drawn = drawn.astype(np.int64) - V
    results = []
    for f in (F.negative_sampling, nsc.negative_sampling):
        xv, Wv = chainer.Variable(x.copy()), chainer.Variable(W.copy())
        y, samples = f(xv, t, Wv, _fixed(drawn), K, reduce=reduce, return_samples=True)
        F.sum(y).backward()
        results.append((y.array, samples, xv.grad, Wv.grad))
    (y0, s0, gx0, gW0), (y1, s1, gx1, gW1) = results
    np.testing.assert_array_equal(s1, s0)  # returned as drawn, negative ids included
    assert s1.dtype == s0.dtype
    np.testing.assert_allclose(y1, y0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gx1, gx0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gW1, gW0, rtol=1e-10, atol=1e-12)


def test_wrong_sample_shape_raises_like_chainer():
    x, t, W, drawn = _data(np.random.default_rng(1))
    for samples in (drawn[:-1], drawn[:, :, None].repeat(2, axis=2)):
        errors = []
        for f in (F.negative_sampling, nsc.negative_sampling):
            with pytest.raises((ValueError, IndexError)) as info:
                f(x, t, W, _fixed(samples), K)
            errors.append((info.type, str(info.value)))
        assert errors[1] == errors[0]


@pytest.mark.gpu
@pytest.mark.parametrize("case", list(RAISES))
def test_index_errors_on_gpu(case):
    """Chainer's GPU kernels read outside W here; the drop-in raises as on the CPU."""
    cupy = pytest.importorskip("cupy")
    x, t, W, drawn = _data(np.random.default_rng(0))
    t, samples = RAISES[case](t, drawn)
    with pytest.raises(IndexError):
        nsc.negative_sampling(
            cupy.asarray(x), cupy.asarray(t), cupy.asarray(W), _fixed(cupy.asarray(samples)), K
        )
