import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from ns_plugins.core.alias import AliasSampler


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        st.integers(1, 300),
        elements=st.one_of(st.just(0.0), st.floats(1e-12, 1e6)),
    )
)
def test_table_implements_the_distribution(w):
    if w.sum() == 0:
        w[0] = 1.0
    s = AliasSampler(w)
    assert np.all((s.prob >= 0) & (s.prob <= 1))
    assert np.all((s.alias >= 0) & (s.alias < w.size))
    np.testing.assert_allclose(s.table_probabilities(), w / w.sum(), rtol=1e-9, atol=1e-15)
    # zero-weight ids can never be drawn: their own threshold is 0 and nobody aliases to them
    zero = w == 0
    assert np.all(s.prob[zero] == 0)
    assert not np.isin(np.flatnonzero(zero), s.alias[s.prob < 1]).any()


def test_from_counts_power():
    counts = np.array([100, 10, 1, 0])
    s = AliasSampler.from_counts(counts, power=0.75)
    p = counts**0.75 / (counts**0.75).sum()
    np.testing.assert_allclose(s.probabilities(), p)
    np.testing.assert_allclose(s.table_probabilities(), p, atol=1e-15)


def _chi2_pvalue(ids, p, groups):
    observed = np.bincount(groups[ids], minlength=groups.max() + 1)
    expected = np.bincount(groups, weights=p, minlength=groups.max() + 1) * ids.size
    return stats.chisquare(observed, expected).pvalue


def test_small_vocabulary_chi_square_numpy_and_torch():
    rng = np.random.default_rng()
    w = rng.random(50) ** 2
    s = AliasSampler(w)
    groups = np.arange(50)
    assert _chi2_pvalue(s.sample(400_000, rng), s.probabilities(), groups) > 1e-4
    ids = s.sample_torch(
        (200_000, 2), generator=torch.Generator().manual_seed(int(rng.integers(1e9)))
    )
    assert ids.dtype == torch.int64 and ids.shape == (200_000, 2)
    assert _chi2_pvalue(ids.numpy().ravel(), s.probabilities(), groups) > 1e-4


def _float32_split_sampler(s, rng, n):
    """Chainer 7's WalkerAlias draw: one uniform in [0, V), the coin is its float32 fraction."""
    V = len(s)
    pb = rng.uniform(0, V, n)
    index = pb.astype(np.int32)
    coin = pb.astype(np.float32) - index.astype(np.float32)
    return np.where(s.prob[index].astype(np.float32) < coin, s.alias[index], index)


def test_large_vocabulary_is_exact_where_a_float32_coin_is_not():
    V = 1_000_000
    w = np.where(np.arange(V) % 2 == 0, 1.0, 0.01)  # odd ids: thresholds ~0.02, below a coin ulp
    s = AliasSampler(w)
    p = s.probabilities()
    groups = (np.arange(V) % 2) * 100 + np.arange(V) * 100 // V
    rng = np.random.default_rng()
    assert _chi2_pvalue(s.sample(4_000_000, rng), p, groups) > 1e-4
    ids = s.sample_torch(4_000_000, generator=torch.Generator().manual_seed(int(rng.integers(1e9))))
    assert _chi2_pvalue(ids.numpy(), p, groups) > 1e-4
    # the same test has the power to reject the quantised coin
    assert _chi2_pvalue(_float32_split_sampler(s, rng, 4_000_000), p, groups) < 1e-12


def test_same_seed_same_draws():
    s = AliasSampler(np.arange(1, 101))
    np.testing.assert_array_equal(s.sample((3, 7), 5), s.sample((3, 7), 5))
    a = s.sample_torch((3, 7), generator=torch.Generator().manual_seed(5))
    b = s.sample_torch((3, 7), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    f = s.sampler(np.random.default_rng(1))
    assert f((2, 3)).shape == (2, 3)


@pytest.mark.parametrize(
    "weights, message",
    [
        ([1.0, -1.0], "non-negative"),
        ([1.0, np.nan], "NaN"),
        ([1.0, np.inf], "inf"),
        ([0.0, 0.0], "all zero"),
        ([], "empty"),
        ([[1.0, 2.0]], "1-D"),
        (["a", "b"], "numeric"),
    ],
)
def test_bad_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        AliasSampler(weights)
    with pytest.raises(ValueError, match=message):
        AliasSampler.from_counts(weights)


@pytest.mark.gpu
def test_cuda_draws_stay_on_device():
    s = AliasSampler(np.arange(1, 1001))
    g = torch.Generator(device="cuda").manual_seed(0)
    ids = s.sample_torch(1_000_000, generator=g)
    assert ids.is_cuda
    groups = np.arange(1000)
    assert _chi2_pvalue(ids.cpu().numpy(), s.probabilities(), groups) > 1e-4
