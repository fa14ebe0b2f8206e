"""The drop-ins reach the loss, its nodes and the sampler through Chainer's modules at call time,
as Chainer 7.8.1's own code does, so the patching patterns of Chainer's tests see every call."""

from unittest import mock

import chainer_setup  # noqa: F401  (skips without Chainer, applies the import fixes)
import numpy as np
import pytest

# isort: split

import chainer
import chainer.functions as F
import chainer.links as L
from chainer.functions.loss import negative_sampling as fns
from chainer.utils import walker_alias

import ns_plugins.chainer as nsc
from ns_plugins.chainer import installer

pytestmark = pytest.mark.chainer

LOSS = "chainer.functions.loss.negative_sampling"


@pytest.fixture(params=["installed", "direct"])
def link_class(request):
    """Chainer's name for the link with the drop-ins installed, or the drop-in used directly."""
    if request.param == "direct":
        yield nsc.NegativeSampling
        return
    nsc.install()
    try:
        yield L.NegativeSampling
    finally:
        nsc.uninstall()


def _inputs(rng, t):
    x = rng.uniform(-1, 1, (len(t), 3)).astype(np.float32)
    return chainer.Variable(x), chainer.Variable(np.array(t, np.int32))


def _make_link(link_class, rng):
    link = link_class(3, [10, 5, 2, 5, 2], 2)
    link.cleargrads()
    link.W.array[:] = rng.uniform(-1, 1, link.W.shape)
    return link


@pytest.mark.parametrize("t", [[0, 2], [-1, 1, 2]])
@pytest.mark.parametrize("reduce", ["sum", "no"])
def test_link_calls_the_loss_through_chainers_module(link_class, t, reduce):
    """Chainer's own link test: replay the returned samples by wrapping the module's function."""
    rng = np.random.default_rng()
    link = _make_link(link_class, rng)
    assert isinstance(link, nsc.NegativeSampling)
    x, t = _inputs(rng, t)
    y, samples = link(x, t, reduce=reduce, return_samples=True)
    assert samples.dtype == np.int32 and samples.shape == (len(t), 3)

    # Chainer's name for the loss once installed; used directly, the drop-in link computes with
    # the drop-in function (Chainer's own one sits in the module)
    orig = chainer.functions.negative_sampling if link_class is L.NegativeSampling else None
    orig = orig or nsc.negative_sampling

    def replay(*args, **kwargs):
        args = args[:3] + (lambda shape: samples.copy(),) + args[4:]
        return orig(*args, **kwargs)

    with mock.patch(f"{LOSS}.negative_sampling", wraps=replay) as m:  # as testing.patch does
        y_ = link(x, t, reduce=reduce)
        assert m.call_count == 1
    np.testing.assert_array_equal(y.array, y_.array)


def test_function_builds_its_nodes_through_chainers_module():
    rng = np.random.default_rng()
    x = chainer.Variable(rng.standard_normal((4, 3)).astype(np.float32))
    W = chainer.Variable(rng.standard_normal((6, 3)).astype(np.float32))
    t = np.array([0, 1, -1, 5], np.int32)
    nsc.install()
    try:
        with (
            mock.patch(f"{LOSS}.NegativeSamplingFunction", wraps=fns.NegativeSamplingFunction) as f,
            mock.patch(
                f"{LOSS}.NegativeSamplingFunctionGrad", wraps=fns.NegativeSamplingFunctionGrad
            ) as g,
        ):
            y = F.negative_sampling(x, t, W, lambda s: rng.integers(0, 6, s).astype("i"), 2)
            assert f.call_count == 1 and g.call_count == 0
            y.backward()
            assert g.call_count == 1
        assert isinstance(y.creator, nsc.NegativeSamplingFunction)
        assert x.grad is not None and W.grad is not None
    finally:
        nsc.uninstall()


def test_link_builds_its_sampler_through_chainers_module(link_class):
    with mock.patch("chainer.utils.walker_alias.WalkerAlias", wraps=nsc.WalkerAlias) as m:
        link = link_class(3, [10, 5, 2], 2)
    assert m.call_count == 1
    np.testing.assert_allclose(m.call_args[0][0], np.power([10.0, 5.0, 2.0], 0.75))
    assert isinstance(link.sampler, nsc.WalkerAlias)


def test_sampler_draws_through_its_methods():
    sampler = nsc.WalkerAlias([5, 3, 4, 1, 2])
    with mock.patch.object(nsc.WalkerAlias, "sample_xp", autospec=True) as m:
        m.return_value = np.zeros((4, 3), np.int32)
        assert sampler.sample((4, 3)) is m.return_value
    m.assert_called_once_with(sampler, np, (4, 3))


@pytest.mark.gpu
def test_sampler_draws_through_sample_gpu_on_the_gpu():
    pytest.importorskip("cupy")
    sampler = nsc.WalkerAlias([5, 3, 4, 1, 2])
    sampler.to_gpu()
    with mock.patch.object(
        nsc.WalkerAlias, "sample_gpu", autospec=True, side_effect=nsc.WalkerAlias.sample_gpu
    ) as m:
        ids = sampler.sample((4, 3))
    m.assert_called_once_with(sampler, (4, 3))
    assert ids.shape == (4, 3) and ids.dtype == np.int32 and int(ids.max()) < 5


def test_parts_left_out_stay_chainers():
    """install(['loss', 'link']): the drop-in link keeps Chainer's sampler, so a seeded run
    draws exactly Chainer's samples."""
    counts = [10, 5, 2, 5, 2, 7, 1]
    x, t = np.ones((6, 3), np.float32), np.arange(6, dtype=np.int32)
    np.random.seed(3)
    _, expected = L.NegativeSampling(3, counts, 4)(x, t, return_samples=True)
    try:
        nsc.install(["loss", "link"])
        np.random.seed(3)
        link = L.NegativeSampling(3, counts, 4)
        assert isinstance(link, nsc.NegativeSampling)
        assert type(link.sampler) is walker_alias.WalkerAlias  # Chainer's
        y, samples = link(x, t, return_samples=True)
        assert isinstance(y.creator, nsc.NegativeSamplingFunction)
    finally:
        nsc.uninstall()
    np.testing.assert_array_equal(samples, expected)


def test_lookup_rules():
    own = installer._CHAINER[(LOSS, "negative_sampling")]
    assert fns.negative_sampling is own
    assert (
        installer.lookup(fns, "negative_sampling", nsc.negative_sampling) is nsc.negative_sampling
    )
    with mock.patch(f"{LOSS}.negative_sampling") as patched:
        assert installer.lookup(fns, "negative_sampling", nsc.negative_sampling) is patched
    try:
        nsc.install(["sampler"])  # the loss left out on purpose: Chainer's own is kept
        assert installer.lookup(fns, "negative_sampling", nsc.negative_sampling) is own
    finally:
        nsc.uninstall()
