"""NegativeSampling link and WalkerAlias drop-ins against Chainer 7.8.1."""

import io

import chainer_setup  # noqa: F401  (skips without Chainer, applies the import fixes)
import numpy as np
import pytest

# isort: split

import chainer
import chainer.functions as F
import chainer.links as L
from chainer import serializers
from chainer.utils import walker_alias as chainer_walker_alias
from scipy import stats

from ns_plugins.chainer import NegativeSampling, WalkerAlias

pytestmark = pytest.mark.chainer


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)


# WalkerAlias ------------------------------------------------------------------------------------
def _table_distribution(w):
    """What threshold/values encode, read the way Chainer's sampler reads them."""
    n = len(w.threshold)
    p = np.zeros(n)
    np.add.at(p, w.values[0::2], w.threshold)
    np.add.at(p, w.values[1::2], 1.0 - w.threshold)
    return p / n


def test_walker_alias_table_is_exact():
    rng = np.random.default_rng()
    probs = rng.random(1000) ** 4
    probs[[3, 17]] = 0
    w = WalkerAlias(probs)
    assert w.threshold.shape == (1000,) and w.values.shape == (2000,)
    assert w.values.dtype == np.int32
    np.testing.assert_allclose(_table_distribution(w), probs / probs.sum(), rtol=1e-9, atol=1e-15)


def test_walker_alias_samples_follow_probs():
    rng = np.random.default_rng()
    probs = rng.integers(1, 50, 30).astype(np.float64)
    w = WalkerAlias(probs)
    s = w.sample((400, 500))
    assert s.shape == (400, 500) and s.dtype == np.int32
    observed = np.bincount(s.ravel(), minlength=30)
    expected = probs / probs.sum() * s.size
    assert stats.chisquare(observed, expected).pvalue > 1e-4


def test_walker_alias_seeded_by_numpy_like_chainer():
    w = WalkerAlias([1.0, 2.0, 3.0, 4.0])
    np.random.seed(3)
    a = w.sample((5, 6))
    np.random.seed(3)
    b = w.sample((5, 6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, w.sample((5, 6)))


def test_walker_alias_same_interface_as_chainer():
    ours, theirs = WalkerAlias([1, 2, 3]), chainer_walker_alias.WalkerAlias([1, 2, 3])
    for obj in (ours, theirs):
        assert isinstance(obj, chainer.DeviceResident)
        assert obj.use_gpu is False
        obj.to_cpu()
        obj.to_device("@numpy")
        assert obj.device == chainer.get_device("@numpy")
        assert obj.sample(4).shape == (4,)
        assert obj.sample((2, 3)).dtype == np.int32


def test_walker_alias_bad_input():
    with pytest.raises(ValueError, match="non-negative"):
        WalkerAlias([1.0, -1.0])
    with pytest.raises(ValueError, match="1-D"):
        WalkerAlias([[1.0, 2.0]])


@pytest.mark.gpu
def test_walker_alias_on_gpu():
    pytest.importorskip("cupy")
    w = WalkerAlias([1.0, 2.0, 3.0])
    w.to_gpu()
    s = w.sample((100,))
    assert type(s).__module__.startswith("cupy") and s.dtype == np.int32
    assert int(s.max()) < 3


# NegativeSampling link --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [None, np.float16, np.float64])
def test_link_construction_matches_chainer(dtype):
    counts = [5, 1, 0, 7, 3]
    ours = NegativeSampling(4, counts, 3, power=0.5, dtype=dtype)
    theirs = L.NegativeSampling(4, counts, 3, power=0.5, dtype=dtype)
    assert ours.W.shape == theirs.W.shape == (5, 4)
    assert ours.W.dtype == theirs.W.dtype
    assert (ours.W.array == 0).all()
    assert ours.sample_size == theirs.sample_size == 3
    assert sorted(n for n, _ in ours.namedparams()) == sorted(n for n, _ in theirs.namedparams())
    p = np.power(np.array(counts, np.float64), 0.5)
    np.testing.assert_allclose(ours.sampler.sampler.probabilities(), p / p.sum(), rtol=1e-12)


@pytest.mark.parametrize("reduce", ["sum", "no"])
def test_link_forward_backward_match_chainer(reduce):
    rng = np.random.default_rng()
    counts = rng.integers(1, 100, 20)
    ours = NegativeSampling(8, counts, 4)
    theirs = L.NegativeSampling(8, counts, 4)
    W = rng.standard_normal((20, 8)).astype(np.float32)
    ours.W.array[...] = W
    theirs.W.array[...] = W
    ours.cleargrads()
    theirs.cleargrads()
    x = rng.standard_normal((10, 8)).astype(np.float32)
    t = rng.integers(0, 20, 10).astype(np.int32)
    t[4] = -1
    y, samples = ours(x, t, reduce=reduce, return_samples=True)
    assert samples.shape == (10, 5) and samples.dtype == np.int32
    assert samples[:, 1:].max() < 20
    # Chainer's link with the samples ours drew
    theirs.sampler = type("Fixed", (), {"sample": staticmethod(lambda shape: samples.copy())})()
    y_ref = theirs(x, t, reduce=reduce)
    assert _rel(y.array, y_ref.array) < 1e-5
    F.sum(y).backward()
    F.sum(y_ref).backward()
    assert _rel(ours.W.grad, theirs.W.grad) < 1e-5


def test_link_errors_match_chainer():
    ours, theirs = NegativeSampling(3, [1, 2], 1), L.NegativeSampling(3, [1, 2], 1)
    x, t = np.zeros((2, 3), np.float32), np.zeros(2, np.int32)
    for kwargs in ({"reduce": "mean"}, {"return_sample": True}):
        errors = []
        for link in (ours, theirs):
            with pytest.raises((ValueError, TypeError)) as info:
                link(x, t, **kwargs)
            errors.append((info.type, str(info.value)))
        assert errors[0] == errors[1]


def test_link_moves_with_its_sampler():
    link = NegativeSampling(3, [1, 2, 3], 2)
    link.to_device("@numpy")
    assert link.sampler.device == link.device == chainer.get_device("@numpy")
    link.to_cpu()
    assert isinstance(link.sampler.threshold, np.ndarray)
    assert link(np.ones((2, 3), np.float32), np.array([0, 2], np.int32)).shape == ()


@pytest.mark.gpu
def test_link_on_gpu_matches_cpu():
    cupy = pytest.importorskip("cupy")
    rng = np.random.default_rng()
    link = NegativeSampling(8, rng.integers(1, 9, 30), 5)
    link.W.array[...] = rng.standard_normal((30, 8)).astype(np.float32)
    x = rng.standard_normal((16, 8)).astype(np.float32)
    t = rng.integers(0, 30, 16).astype(np.int32)
    link.to_gpu()
    assert isinstance(link.sampler.threshold, cupy.ndarray)
    y, samples = link(cupy.asarray(x), cupy.asarray(t), return_samples=True)
    expected = F.negative_sampling(x, t, cupy.asnumpy(link.W.array), lambda s: samples.get(), 5)
    assert _rel(float(y.array), expected.array) < 1e-5


def test_link_serializes_like_chainer():
    ours, theirs = NegativeSampling(3, [1, 2, 3], 2), L.NegativeSampling(3, [1, 2, 3], 2)
    ours.W.array[...] = np.arange(9, dtype=np.float32).reshape(3, 3)
    buf = io.BytesIO()
    serializers.save_npz(buf, ours)
    buf.seek(0)
    serializers.load_npz(buf, theirs)
    np.testing.assert_array_equal(theirs.W.array, ours.W.array)
