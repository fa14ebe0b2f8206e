import numpy as np
import pytest
import torch

from ns_plugins.data import (
    EncodedCorpus,
    SkipGramBatches,
    analogy_accuracy,
    negative_sampler,
    neighbour_purity,
    read_sentences,
    synthetic_corpus,
)


@pytest.fixture(scope="module")
def small():
    return synthetic_corpus(seed=0, n_sentences=6000)


def test_deterministic():
    a = synthetic_corpus(seed=3, n_sentences=500)
    b = synthetic_corpus(seed=3, n_sentences=500)
    assert a.sentences == b.sentences and a.clusters == b.clusters and a.analogies == b.analogies
    assert synthetic_corpus(seed=4, n_sentences=500).sentences != a.sentences


def test_ground_truth_is_consistent(small):
    words = {w for s in small.sentences for w in s}
    assert set(small.clusters) <= words  # every clustered word occurs
    assert small.n_clusters == 8
    assert small.analogies and all(w in small.clusters for q in small.analogies for w in q)
    for name, pairs in small.relations.items():
        suffix = {"base-plural": "s", "base-past": "ed"}[name]
        assert all(b == a + suffix and small.clusters[a] == small.clusters[b] for a, b in pairs)
    for a, b, c, d in small.analogies[:200]:
        assert a != c and (b[len(a) :], d[len(c) :]) in {("s", "s"), ("ed", "ed")}


def test_zipf_like_frequencies(small):
    counts = np.sort(small.vocab().counts)[::-1].astype(float)
    rank = np.arange(1, counts.size + 1)
    slope = np.polyfit(np.log(rank[:200]), np.log(counts[:200]), 1)[0]
    assert -2.5 < slope < -0.5
    assert counts[0] > 50 * counts[-1]


def test_written_file_reads_back(small, tmp_path):
    p = small.write(tmp_path / "syn.txt.gz")
    assert list(read_sentences(p)) == small.sentences


def test_scores_on_hand_made_vectors():
    words = ["a", "b", "c", "d", "x"]
    clusters = {"a": 0, "b": 0, "c": 1, "d": 1}
    v = np.array([[1, 0.1], [1, 0.2], [0.1, 1], [0.2, 1], [1, 1]])
    assert neighbour_purity(v, words, clusters, k=1) == 1.0
    v_bad = np.array([[1, 0], [0, 1], [1, 0.1], [0.1, 1], [1, 1]])
    assert neighbour_purity(v_bad, words, clusters, k=1) == 0.0
    # man : king :: woman : queen with king = man + royal, queen = woman + royal
    words = ["man", "king", "woman", "queen", "apple"]
    v = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 0], [0, 1, 1], [1, 1, -1]], dtype=float)
    quads = [("man", "king", "woman", "queen"), ("king", "man", "queen", "apple")]
    assert analogy_accuracy(torch.tensor(v), words, quads) == 0.5
    with pytest.raises(ValueError, match="4 vectors for a vocabulary of 5"):
        analogy_accuracy(v[:4], words, quads)
    with pytest.raises(ValueError, match="no analogy"):
        analogy_accuracy(v, words, [("p", "q", "r", "s")])


def test_random_vectors_score_at_chance(small):
    vocab = small.vocab()
    r = np.random.default_rng(0).normal(size=(len(vocab), 32))
    assert abs(small.neighbour_purity(r, vocab) - 1 / small.n_clusters) < 0.05
    assert small.analogy_accuracy(r, vocab) < 0.05


def _sgns(corpus, dim=32, epochs=2, lr=0.05, neg=5, seed=0):
    """Minimal minibatch SGNS in numpy, fed by the pipeline's pairs and negatives."""
    rng = np.random.default_rng(seed)
    n = len(corpus.vocab)
    w_in = (rng.random((n, dim)) - 0.5) / dim
    w_out = np.zeros((n, dim))
    sampler = negative_sampler(corpus)
    for epoch in range(epochs):
        for c, x in SkipGramBatches(corpus, window=5, batch_size=256, epoch=epoch):
            t = np.concatenate([x[:, None], sampler.sample((c.size, neg), rng)], 1)
            h, o = w_in[c], w_out[t]
            g = 1 / (1 + np.exp(-np.einsum("bd,bkd->bk", h, o)))
            g[:, 0] -= 1  # d loss / d score: sigmoid(s) - label
            g *= lr
            np.add.at(w_out, t.ravel(), -(g[:, :, None] * h[:, None, :]).reshape(-1, dim))
            np.add.at(w_in, c, -np.einsum("bk,bkd->bd", g, o))
    return w_in


def test_structure_is_learnable(small):
    corpus = EncodedCorpus.from_sentences(small.sentences, small.vocab())
    vectors = _sgns(corpus)
    assert small.neighbour_purity(vectors, corpus.vocab) > 0.8  # chance: 1/8
    assert small.analogy_accuracy(vectors, corpus.vocab) > 0.15  # chance: ~1/400


def test_bad_arguments():
    with pytest.raises(ValueError, match="noise"):
        synthetic_corpus(noise=2.0)
    with pytest.raises(ValueError, match="n_clusters"):
        synthetic_corpus(n_clusters=1)
    with pytest.raises(ValueError, match="fillers_per_sentence"):
        synthetic_corpus(fillers_per_sentence=(3, 1))
