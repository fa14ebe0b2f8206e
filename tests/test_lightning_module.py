"""BatchedModule against the float64 reference, and CorpusDataModule's sharding."""

import functools

import numpy as np
import pytest
import torch

from ns_plugins.app.config import Arch
from ns_plugins.app.datamodule import CorpusDataModule, _Shard, as_batch
from ns_plugins.app.engines.batched import BatchedModule
from ns_plugins.core import reference
from ns_plugins.data import EncodedCorpus, Vocab
from ns_plugins.engines.base import linear_decay

V, D, K = 40, 8, 4


def _module(arch="skipgram", backend="fused", seed=0, **kw):
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 100, V)
    m = BatchedModule(counts, vector_size=D, negative=K, arch=arch, backend=backend, **kw)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # word2vec starts the output side at zero; make the loss non-trivial
        m.out_embed.weight.normal_(0, 0.3, generator=gen)
        m.in_embed.weight.normal_(0, 0.3, generator=gen)
    return m


def _fixed_samples(m, samples):
    m._draw = lambda shape: samples.clone()


def _dense(grad):
    return grad.to_dense() if grad.is_sparse else grad


def test_word2vec_initialisation():
    m = BatchedModule(np.arange(1, V + 1), vector_size=D)
    w_in, w_out = m.in_embed.weight, m.out_embed.weight
    assert w_in.abs().max() <= 0.5 / D and w_in.std() > 0.1 / D
    assert torch.count_nonzero(w_out) == 0
    assert m.in_embed.sparse and m.out_embed.sparse
    dense = BatchedModule(np.arange(1, V + 1), vector_size=D, sparse=False)
    assert not dense.in_embed.sparse
    wide = BatchedModule(np.arange(1, V + 1), vector_size=D, init_scale=1.0).in_embed.weight
    assert 0.5 / D < wide.abs().max() <= 1.0 / D


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_skipgram_loss_and_grads_match_float64_reference(backend):
    torch.manual_seed(1)
    m = _module(backend=backend)
    B = 64
    center = torch.randint(0, V, (B,))
    context = torch.randint(0, V, (B,))
    context[:3] = -1  # padding rows contribute nothing
    center[5:9] = center[4]  # duplicate targets accumulate
    samples = torch.randint(0, V, (B, K + 1))
    _fixed_samples(m, samples)
    rows = m.row_losses({"center": center, "context": context})
    rows.sum().backward()

    x = m.in_embed.weight.detach().double().numpy()[context.clamp_min(0).numpy()]
    W = m.out_embed.weight.detach().double().numpy()
    s = samples.numpy().copy()
    s[:, 0] = np.where(context.numpy() < 0, -1, center.numpy())
    ref = reference.ns_loss_rows(x, W, s)
    np.testing.assert_allclose(rows.detach().double().numpy(), ref, rtol=1e-5, atol=1e-6)
    assert np.all(rows.detach().numpy()[:3] == 0)

    gx, gW = reference.ns_loss_grad(np.ones(B), x, W, s)
    g_in = np.zeros((V, D))
    np.add.at(g_in, context.clamp_min(0).numpy(), gx)
    got_in = _dense(m.in_embed.weight.grad).double().numpy()
    got_out = _dense(m.out_embed.weight.grad).double().numpy()
    assert m.in_embed.weight.grad.is_sparse and m.out_embed.weight.grad.is_sparse
    np.testing.assert_allclose(got_in, g_in, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_out, gW, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cbow_mean", [True, False])
def test_cbow_hidden_is_mean_or_sum_of_context(cbow_mean):
    torch.manual_seed(2)
    m = _module(arch="cbow", cbow_mean=cbow_mean)
    B, C = 32, 6
    context = torch.randint(0, V, (B, C))
    context[:, 4:] = -1
    context[0] = -1  # no context at all: the row is ignored
    center = torch.randint(0, V, (B,))
    samples = torch.randint(0, V, (B, K + 1))
    _fixed_samples(m, samples)
    rows = m.row_losses({"center": center, "context": context})

    W_in = m.in_embed.weight.detach().double().numpy()
    ctx = context.numpy()
    mask = ctx >= 0
    x = (W_in[np.maximum(ctx, 0)] * mask[..., None]).sum(1)
    if cbow_mean:
        x = x / np.maximum(mask.sum(1, keepdims=True), 1)
    s = samples.numpy().copy()
    s[:, 0] = np.where(mask.any(1), center.numpy(), -1)
    ref = reference.ns_loss_rows(x, m.out_embed.weight.detach().double().numpy(), s)
    np.testing.assert_allclose(rows.detach().double().numpy(), ref, rtol=1e-5, atol=1e-6)
    assert rows[0] == 0


def test_backends_agree_on_a_step():
    torch.manual_seed(3)
    batch = {"center": torch.randint(0, V, (50,)), "context": torch.randint(0, V, (50,))}
    samples = torch.randint(0, V, (50, K + 1))
    weights = []
    for backend in ("reference", "fused"):
        m = _module(backend=backend, seed=4)
        _fixed_samples(m, samples)
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        m.reduce_loss(m.row_losses(batch)).backward()
        opt.step()
        weights.append(torch.cat([m.in_embed.weight, m.out_embed.weight]).detach())
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-5, atol=1e-6)


def test_reduce_modes():
    rows = torch.tensor([1.0, 2.0, 3.0])
    assert _module(reduce="sum").reduce_loss(rows) == 6
    assert _module(reduce="mean").reduce_loss(rows) == 2
    assert _module(reduce="no").reduce_loss(rows) == 6  # backprop of the rows' sum
    with pytest.raises(ValueError):
        _module(reduce="max")


def test_noise_draws_follow_the_unigram_power_and_repeat_per_step():
    counts = np.array([1000, 100, 10, 1, 0, 500])
    m = BatchedModule(counts, vector_size=4, negative=5, ns_exponent=0.75, seed=5)
    ids = m._draw((200_000,)).numpy()
    p = counts**0.75 / (counts**0.75).sum()
    freq = np.bincount(ids, minlength=counts.size) / ids.size
    np.testing.assert_allclose(freq, p, atol=4e-3)
    assert freq[4] == 0
    # No trainer: the stream is keyed by (seed, rank 0, step 0), so it repeats exactly.
    assert torch.equal(m._draw((100,)), m._draw((100,)))


def test_linear_decay():
    assert linear_decay(0, 100, 0.025, 0.0001) == 0.025
    assert linear_decay(100, 100, 0.025, 0.0001) == pytest.approx(0.0001)
    assert linear_decay(50, 100, 0.025, 0.0001) == pytest.approx((0.025 + 0.0001) / 2)
    assert linear_decay(500, 100, 0.025, 0.0001) == pytest.approx(0.0001)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="sparse_adam"):
        BatchedModule(np.ones(5), optimizer="sparse_adam", sparse=False)
    with pytest.raises(ValueError, match="counts"):
        BatchedModule(np.ones((2, 2)))
    with pytest.raises(ValueError, match="foo"):
        BatchedModule(np.ones(5), backend="foo")


def _tiny_corpus(tmp_path, n_sent=60):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(30)]
    sents = [[words[j] for j in rng.integers(0, 30, rng.integers(3, 12))] for _ in range(n_sent)]
    vocab = Vocab.build(sents, min_count=1)
    return EncodedCorpus.from_sentences(sents, vocab)


@pytest.mark.parametrize("arch", [Arch.skipgram, Arch.cbow])
def test_datamodule_shards_are_disjoint_and_equal_length(tmp_path, arch):
    corpus = _tiny_corpus(tmp_path)
    shards, lengths = [], []
    for rank in range(2):
        dm = CorpusDataModule(arch=arch, window=2, sample=0, batch_size=16, seed=3)
        dm.corpus, dm.vocab = corpus, corpus.vocab
        shard = dm._batches(rank, 2, 0, 1)
        summary_index, n = shard.shard()
        lengths.append(len(shard))
        edges = shard._shard_sentences(n)
        shards.append(set(range(edges[summary_index], edges[summary_index + 1])))
    assert shards[0] and shards[1] and not shards[0] & shards[1]
    assert shards[0] | shards[1] == set(range(corpus.n_sentences))
    assert lengths[0] == lengths[1] > 0


def test_shard_resume_skips_exactly_the_batches_done(tmp_path):
    corpus = _tiny_corpus(tmp_path, n_sent=200)
    dm = CorpusDataModule(window=2, sample=0, batch_size=8, seed=3)
    dm.corpus, dm.vocab = corpus, corpus.vocab
    steps = len(dm._batches(0, 1, 0, 1))
    convert = functools.partial(as_batch, arch=Arch.skipgram)
    shard = _Shard(lambda w, n: dm._batches(0, 1, w, n), steps, convert)
    shard.epoch = 1
    full = [b["center"] for b in shard]
    assert len(full) == steps
    shard.skip = 5
    rest = [b["center"] for b in shard]
    assert len(rest) == steps - 5
    for a, b in zip(full[5:], rest):
        assert torch.equal(a, b)
