from collections import Counter

import numpy as np
import pytest
from scipy import stats

from ns_plugins.data import make_sampling_table, skipgrams


def test_make_sampling_table_values():
    # values printed by keras_preprocessing.sequence.make_sampling_table
    np.testing.assert_allclose(
        make_sampling_table(10),
        [0.00315225, 0.00315225, 0.00547597, 0.00741556, 0.00912817,
         0.01068435, 0.01212381, 0.01347162, 0.01474487, 0.0159558],
        rtol=1e-6,
    )  # fmt: skip
    np.testing.assert_allclose(
        make_sampling_table(100000, 1e-4)[[1, 10, 100, 1000, 99999]],
        [0.00996828, 0.05411794, 0.22775342, 0.86517369, 1.0],
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="size"):
        make_sampling_table(0)


def test_positive_pairs_in_keras_order():
    couples, labels = skipgrams([0, 1, 2, 0, 3, 4], 5, window_size=2, negative_samples=0,
                                shuffle=False)  # fmt: skip
    assert couples == [[1, 2], [2, 1], [2, 3], [3, 2], [3, 4], [4, 3]]
    assert labels == [1] * 6
    assert type(couples) is list and type(couples[0]) is list and type(couples[0][0]) is int


def test_window_both_directions_exact_set():
    rng = np.random.default_rng(0)
    seq = rng.integers(0, 6, size=40)
    couples, _ = skipgrams(seq, 6, window_size=3, negative_samples=0, shuffle=False)
    expected = [
        [int(seq[i]), int(seq[j])]
        for i in range(len(seq))
        if seq[i]
        for j in range(max(0, i - 3), min(len(seq), i + 4))
        if j != i and seq[j]
    ]
    assert couples == expected


def test_negatives_and_labels():
    rng = np.random.default_rng(1)
    seq = rng.integers(1, 50, size=500)
    couples, labels = skipgrams(seq, 50, window_size=4, negative_samples=1.5, seed=3)
    c = np.array(couples)
    lab = np.array(labels)
    n_pos = int((lab == 1).sum())
    assert (lab == 0).sum() == int(n_pos * 1.5)
    pos, neg = c[lab == 1], c[lab == 0]
    # negative words are the positive centers, shuffled and reused in turn
    reps = Counter(neg[:, 0].tolist())
    base = Counter(pos[:, 0].tolist())
    assert all(reps[w] >= base[w] for w in base) and set(reps) == set(base)
    # negative contexts are uniform on [1, V-1]
    assert neg[:, 1].min() >= 1 and neg[:, 1].max() <= 49
    counts = np.bincount(neg[:, 1], minlength=50)[1:]
    assert stats.chisquare(counts).pvalue > 1e-4
    # shuffled: labels interleave
    assert 0 < lab[: lab.size // 2].mean() < 1


def test_categorical_labels():
    couples, labels = skipgrams([1, 2, 3], 4, window_size=1, negative_samples=1.0, seed=0,
                                categorical=True)  # fmt: skip
    assert len(couples) == len(labels) == 8
    assert sorted(map(tuple, labels)) == [(0, 1)] * 4 + [(1, 0)] * 4


def test_seed_reproducible_and_none_works():
    seq = list(range(1, 30)) * 3
    a = skipgrams(seq, 30, seed=42)
    assert a == skipgrams(seq, 30, seed=42)
    assert a != skipgrams(seq, 30, seed=43)
    couples, labels = skipgrams(seq, 30, seed=None)
    assert len(couples) == len(labels) == len(a[0])


def test_sampling_table_semantics():
    seq = np.tile(np.arange(1, 5), 2000)
    table = np.array([0.0, 1.0, 0.5, 0.0, 1.0])
    couples, _ = skipgrams(seq, 5, window_size=1, negative_samples=0, sampling_table=table,
                           seed=0)  # fmt: skip
    centers = Counter(c[0] for c in couples)
    assert 3 not in centers  # probability 0 never kept as a center ...
    assert any(c[1] == 3 for c in couples)  # ... but still a context, as in Keras
    # word 1 has one neighbour per side, word 2 too: kept share of 2 is about a half
    ratio = centers[2] / centers[1]
    assert abs(ratio - 0.5) < 0.05


@pytest.mark.parametrize(
    "table",
    [
        [float("nan")] * 10,
        [0.0, float("nan"), 2.0, -1.0, float("inf"), float("-inf"), 1.0, 0.0, -0.5, float("nan")],
    ],
)
def test_sampling_table_values_outside_zero_one_as_keras(table):
    # Keras drops a center when table[w] < random(): NaN and values >= 1 always keep it, values
    # below 0 always drop it. These tables leave nothing to chance, so the outputs must be equal.
    keras_sequence = pytest.importorskip("keras_preprocessing.sequence")
    seq = np.random.default_rng(2).integers(0, 10, size=300).tolist()
    ours = skipgrams(seq, 10, window_size=2, negative_samples=0, shuffle=False,
                     sampling_table=table, seed=0)  # fmt: skip
    theirs = keras_sequence.skipgrams(seq, 10, window_size=2, negative_samples=0, shuffle=False,
                                      sampling_table=table)  # fmt: skip
    assert ours[0] and ours == (theirs[0], theirs[1])
    couples, _ = skipgrams(np.array(seq), 10, window_size=2, negative_samples=0, shuffle=False,
                           sampling_table=np.asarray(table), return_arrays=True)  # fmt: skip
    assert couples.tolist() == ours[0]


def test_unigram_negatives_and_arrays():
    rng = np.random.default_rng(2)
    p = 1 / np.arange(1, 21)
    seq = rng.choice(20, size=3000, p=p / p.sum())
    couples, labels = skipgrams(seq, 20, negative_samples=2.0, seed=1, negatives="unigram",
                                return_arrays=True)  # fmt: skip
    assert isinstance(couples, np.ndarray) and couples.shape == (labels.size, 2)
    neg = couples[labels == 0, 1]
    assert neg.min() >= 1
    counts = np.bincount(seq, minlength=20).astype(float)
    counts[0] = 0
    q = counts**0.75 / (counts**0.75).sum()
    observed = np.bincount(neg, minlength=20)[1:]
    assert stats.chisquare(observed, q[1:] * neg.size).pvalue > 1e-4
    given = np.ones(20)
    couples, labels = skipgrams(seq, 20, seed=1, negatives="unigram", counts=given,
                                return_arrays=True)  # fmt: skip
    assert stats.chisquare(np.bincount(couples[labels == 0, 1], minlength=20)[1:]).pvalue > 1e-4


def test_empty_and_bad_input():
    assert skipgrams([0, 0, 0], 3) == ([], [])
    assert skipgrams([], 3) == ([], [])
    with pytest.raises(ValueError, match="vocabulary_size=3"):
        skipgrams([1, 5], 3)
    with pytest.raises(ValueError, match="1-D"):
        skipgrams([[1, 2]], 3)
    with pytest.raises(ValueError, match="negatives"):
        skipgrams([1, 2], 3, negatives="zipf")
    with pytest.raises(ValueError, match="sampling_table has 2"):
        skipgrams([1, 2], 3, sampling_table=[1.0, 1.0])
    with pytest.raises(ValueError, match="integer"):
        skipgrams([1.5, 2.0], 3)


def test_shuffle_keeps_rows_and_labels_together():
    seq = np.random.default_rng(3).integers(1, 3000, size=2000)
    plain, _ = skipgrams(seq, 3000, negative_samples=0, shuffle=False)
    couples, labels = skipgrams(seq, 3000, negative_samples=2.0, seed=5)
    positives = sorted(tuple(c) for c, y in zip(couples, labels) if y == 1)
    assert positives == sorted(map(tuple, plain))
    assert couples[: len(plain)] != plain  # but in another order


@pytest.mark.parametrize("bucket", [2, 3, 8192])
def test_bucketed_shuffle_is_uniform(monkeypatch, bucket):
    # Every order of 5 couples (2 positives, 3 negatives) must be equally likely, also when the
    # couples are spread over several buckets before each bucket is shuffled.
    from ns_plugins.kernels import pairs_numba

    monkeypatch.setattr(pairs_numba, "_BUCKET", bucket)
    rng = np.random.default_rng(11)
    words, contexts = np.array([1, 2]), np.array([10, 20])
    rest, neg = np.array([2]), np.array([30, 40, 50])
    seen = Counter()
    for _ in range(24_000):
        couples, labels = pairs_numba.shuffled_couples(words, contexts, 1, rest, neg, rng)
        assert sorted(map(tuple, couples.tolist())) == [(1, 10), (1, 30), (2, 20), (2, 40), (2, 50)]
        assert (labels == np.isin(couples[:, 1], contexts)).all()
        seen[tuple(couples[:, 1])] += 1
    assert len(seen) == 120
    assert stats.chisquare(list(seen.values())).pvalue > 1e-4
