import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy import stats

from ns_plugins.data import (
    CBOWBatches,
    EncodedCorpus,
    SkipGramBatches,
    Vocab,
    keep_probability,
    negative_sampler,
)


def _corpus(sentences, counts=None):
    """EncodedCorpus from lists of ids; counts default to the ids' own counts."""
    ids = np.concatenate([np.asarray(s, dtype=np.int32) for s in sentences])
    offsets = np.concatenate(([0], np.cumsum([len(s) for s in sentences])))
    v = int(ids.max()) + 1
    counts = np.bincount(ids, minlength=v) if counts is None else counts
    return EncodedCorpus(ids, offsets, Vocab([f"w{i}" for i in range(v)], counts))


def _unique_corpus(lengths):
    """Every position holds its own word, so (center, context) pins down two positions."""
    starts = np.concatenate(([0], np.cumsum(lengths)))
    return _corpus([np.arange(a, b) for a, b in zip(starts[:-1], starts[1:])])


def _pairs(batches):
    out = [np.stack(b, axis=1) for b in batches]
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def test_keep_probability_formula():
    counts = np.array([1000, 100, 10, 0])
    p = keep_probability(counts, sample=1e-3)
    t = 1e-3 * 1110
    expected = [min(1.0, (math.sqrt(c / t) + 1) * t / c) if c else 1.0 for c in counts]
    np.testing.assert_allclose(p, expected, rtol=1e-15)
    assert p[0] < p[1] < 1.0 and p[3] == 1.0
    # sample >= 1 is an absolute count threshold, as in gensim
    np.testing.assert_allclose(keep_probability(counts, 50)[0], (math.sqrt(20) + 1) * 0.05)
    assert (keep_probability(counts, 0) == 1).all() and (keep_probability(counts, None) == 1).all()
    with pytest.raises(ValueError, match="sample"):
        keep_probability(counts, -1)
    with pytest.raises(ValueError, match="non-negative"):
        keep_probability([-1, 2])


def test_keep_probability_matches_gensim():
    gensim = pytest.importorskip("gensim")
    rng = np.random.default_rng(0)
    words = rng.choice(200, size=20000, p=1 / np.arange(1, 201) / (1 / np.arange(1, 201)).sum())
    sents = [[f"w{i}" for i in words[k : k + 20]] for k in range(0, words.size, 20)]
    model = gensim.models.Word2Vec(min_count=1, sample=1e-3)
    model.build_vocab(sents)
    names = model.wv.index_to_key
    counts = np.array([model.wv.get_vecattr(w, "count") for w in names])
    theirs = np.array([model.wv.get_vecattr(w, "sample_int") for w in names])
    ours = keep_probability(counts, 1e-3) * 2**32
    assert (theirs < 2**32).sum() > 10  # a fair number of words is subsampled
    np.testing.assert_allclose(ours, theirs, rtol=1e-8)  # equal up to gensim's rounding


def test_skipgram_exact_pairs():
    corpus = _corpus([[0, 1, 2, 3], [4, 5], [6]])
    sg = SkipGramBatches(corpus, window=2, sample=0, shrink_windows=False, batch_size=3)
    got = _pairs(sg)
    expected = {
        (0, 1), (0, 2), (1, 0), (1, 2), (1, 3), (2, 0), (2, 1), (2, 3), (3, 1), (3, 2),
        (4, 5), (5, 4),
    }  # fmt: skip
    assert sorted(map(tuple, got.tolist())) == sorted(expected)  # each pair exactly once
    assert len(sg) == 4 and [b[0].size for b in sg] == [3, 3, 3, 3]
    assert all(b[0].dtype == np.int64 and b[1].dtype == np.int64 for b in sg)


def test_cbow_exact_bags():
    corpus = _corpus([[0, 1, 2, 3], [4, 5], [6]])
    cb = CBOWBatches(corpus, window=2, sample=0, shrink_windows=False, batch_size=4)
    rows = {}
    for ctx, center in cb:
        assert ctx.shape == (center.size, 4)
        for c, row in zip(center.tolist(), ctx.tolist()):
            rows[c] = row
    assert rows == {
        0: [1, 2, -1, -1],
        1: [0, 2, 3, -1],
        2: [0, 1, 3, -1],
        3: [1, 2, -1, -1],
        4: [5, -1, -1, -1],
        5: [4, -1, -1, -1],
    }  # the one-word sentence [6] has no context, so no example


def test_dynamic_windows_uniform_and_symmetric():
    n, window = 20000, 5
    corpus = _unique_corpus([n])
    got = _pairs(SkipGramBatches(corpus, window=window, sample=0, batch_size=1 << 14, seed=3))
    dist = got[:, 1] - got[:, 0]
    interior = (got[:, 0] >= window) & (got[:, 0] < n - window)
    order = np.argsort(got[interior, 0], kind="stable")
    centers, d = got[interior, 0][order], dist[interior][order]
    first = np.flatnonzero(np.diff(np.concatenate(([-1], centers))))
    n_ctx = np.diff(np.concatenate((first, [centers.size])))
    left = np.bincount(np.repeat(np.arange(first.size), n_ctx)[d < 0], minlength=first.size)
    assert (n_ctx == 2 * left).all()  # as many contexts on each side of every center
    b = left
    assert b.min() >= 1 and b.max() <= window
    # each center's window: all of 1..b on both sides
    assert np.array_equal(np.maximum.reduceat(np.abs(d), first), b)
    observed = np.bincount(b, minlength=window + 1)[1:]
    assert stats.chisquare(observed).pvalue > 1e-4  # uniform on 1..window
    fixed = _pairs(SkipGramBatches(corpus, window=window, sample=0, shrink_windows=False))
    assert fixed.shape[0] == 2 * sum(n - d for d in range(1, window + 1))


def test_subsampling_keeps_words_at_their_probability():
    rng = np.random.default_rng(5)
    v = 30
    p = 1 / np.arange(1, v + 1) ** 1.2
    ids = rng.choice(v, size=60000, p=p / p.sum())
    corpus = _corpus([ids])
    keep = keep_probability(corpus.counts, 1e-2)
    centers = np.concatenate([c for _, c in CBOWBatches(corpus, window=1, sample=1e-2, seed=1)])
    kept = np.bincount(centers, minlength=v)
    n = corpus.counts
    assert keep[0] < 0.3 and keep[-1] == 1.0
    sd = np.sqrt(n * keep * (1 - keep))
    assert (np.abs(kept - n * keep) <= 5 * sd + 1).all()


def test_reproducible_and_epochs():
    rng = np.random.default_rng(2)
    corpus = _corpus([rng.integers(0, 50, size=int(k)) for k in rng.integers(1, 40, size=300)])

    def run(**kw):
        return _pairs(SkipGramBatches(corpus, batch_size=100, **kw))

    a = run(seed=1)
    np.testing.assert_array_equal(a, run(seed=1))
    assert not np.array_equal(a, run(seed=2))
    sg = SkipGramBatches(corpus, batch_size=100, seed=1)
    sg.set_epoch(1)
    e1 = _pairs(sg)
    assert not np.array_equal(a, e1)
    sg.set_epoch(0)
    np.testing.assert_array_equal(_pairs(sg), a)
    np.testing.assert_array_equal(e1, run(seed=1, epoch=1))


@pytest.mark.parametrize("cls", [SkipGramBatches, CBOWBatches])
def test_sharding_disjoint_equal_and_consistent(cls):
    rng = np.random.default_rng(4)
    lengths = rng.integers(1, 60, size=400)
    corpus = _unique_corpus(lengths)

    def key(batch):  # one row per example, as a hashable tuple
        rows = np.column_stack([np.asarray(a).reshape(len(a), -1) for a in batch])
        return list(map(tuple, rows.tolist()))

    full = {k for b in cls(corpus, batch_size=64, seed=7) for k in key(b)}
    seen: set = set()
    lens = []
    for rank in range(2):
        for worker in range(3):
            ds = cls(corpus, batch_size=64, seed=7, rank=rank, world_size=2,
                     worker=worker, num_workers=3)  # fmt: skip
            batches = list(ds)
            lens.append((len(ds), len(batches)))
            mine = {k for b in batches for k in key(b)}
            assert len(mine) == ds.examples_per_shard()
            assert not (mine & seen)
            seen |= mine
    assert len({n for pair in lens for n in pair}) == 1  # same len() and count everywhere
    assert seen <= full  # the same examples as one process, minus the few dropped
    assert len(seen) > 0.9 * len(full)


def test_sharding_with_subsampling_uses_position_randomness():
    rng = np.random.default_rng(6)
    corpus = _corpus([rng.integers(0, 20, size=int(k)) for k in rng.integers(5, 50, size=200)])
    full = Counter(map(tuple, _pairs(SkipGramBatches(corpus, sample=1e-2, seed=9)).tolist()))
    parts = Counter()
    for r in range(4):
        ds = SkipGramBatches(corpus, sample=1e-2, seed=9, rank=r, world_size=4)
        parts += Counter(map(tuple, _pairs(ds).tolist()))
    assert not (parts - full)  # every shard example is an example of the unsharded epoch


def test_dataloader_workers_are_detected():
    corpus = _unique_corpus(np.full(200, 20))
    ds = SkipGramBatches(corpus, batch_size=50, seed=0, window=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    got = [tuple(p) for c, x in loader for p in torch.stack((c, x), 1).tolist()]
    assert len(got) == len(set(got))
    single = {tuple(p) for p in _pairs(ds).tolist()}
    assert set(got) <= single and len(got) > 0.9 * len(single)


def test_negative_sampler_uses_unigram_power():
    corpus = _corpus([[0, 0, 0, 0, 1, 1, 2]])
    s = negative_sampler(corpus, ns_exponent=0.75)
    p = np.array([4, 2, 1]) ** 0.75
    np.testing.assert_allclose(s.probabilities(), p / p.sum())


def test_bad_arguments():
    corpus = _corpus([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="window"):
        SkipGramBatches(corpus, window=0)
    with pytest.raises(ValueError, match="batch_size"):
        CBOWBatches(corpus, batch_size=0)
    with pytest.raises(TypeError, match="ids"):
        SkipGramBatches([[0, 1]])
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 2\)"):
        SkipGramBatches(corpus, counts=[1, 1])
    with pytest.raises(ValueError, match="rank 2 out of range"):
        len(SkipGramBatches(corpus, rank=2, world_size=2))
    with pytest.raises(ValueError, match="fewer than the 3 shards"):
        len(SkipGramBatches(corpus, world_size=3))
