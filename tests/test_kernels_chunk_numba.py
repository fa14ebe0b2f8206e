"""The hogwild SGNS/CBOW engine against float64 references, its generator and its training loop."""

import math

import numba as nb
import numpy as np
import pytest

from ns_plugins.core import reference
from ns_plugins.core.alias import AliasSampler
from ns_plugins.kernels import chunk_numba as hw


def _weights(rng, V, d, dtype=np.float64):
    return (rng.standard_normal((V, d)) * 0.3).astype(dtype), (
        rng.standard_normal((V, d)) * 0.3
    ).astype(dtype)


def _distinct_targets(rng, V, k):
    return rng.choice(V, size=k + 1, replace=False).astype(np.int64)


# ---------------------------------------------------------------- single updates vs the oracle


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_sg_update_is_one_sgd_step_on_the_reference_loss(dtype, tol):
    rng = np.random.default_rng()
    V, d, k, alpha = 40, 24, 6, 0.3
    W_in, W_out = _weights(rng, V, d, dtype)
    inp = int(rng.integers(V))
    targets = _distinct_targets(rng, V, k)
    x64, W64 = W_in[inp].astype(np.float64), W_out.astype(np.float64)
    ref_loss = reference.ns_loss_rows(x64[None], W64, targets[None]).sum()
    gx, gW = reference.ns_loss_grad(np.ones(1), x64[None], W64, targets[None])

    loss = hw.sg_update(W_in, W_out, inp, targets, alpha, np.empty(d, dtype), True)

    assert loss == pytest.approx(ref_loss, rel=max(tol, 1e-10))
    np.testing.assert_allclose(W_in[inp], x64 - alpha * gx[0], rtol=tol, atol=tol)
    np.testing.assert_allclose(W_out, W64 - alpha * gW, rtol=tol, atol=tol)


def _sg_sequential(W_in, W_out, inp, targets, alpha):
    """word2vec.c's rule written plainly: output rows updated one after another."""
    neu1e = np.zeros(W_in.shape[1])
    loss = 0.0
    for k, t in enumerate(targets):
        if t < 0:
            continue
        f = W_in[inp] @ W_out[t]
        label = 1.0 if k == 0 else 0.0
        g = (label - 1.0 / (1.0 + math.exp(-f))) * alpha
        loss += math.log1p(math.exp(-f if k == 0 else f))
        neu1e += g * W_out[t]
        W_out[t] += g * W_in[inp]
    W_in[inp] += neu1e
    return loss


def test_sg_update_repeated_and_skipped_targets_follow_word2vec():
    rng = np.random.default_rng()
    V, d = 12, 16
    W_in, W_out = _weights(rng, V, d)
    E_in, E_out = W_in.copy(), W_out.copy()
    targets = np.array([3, 5, -1, 5, 3, 7], dtype=np.int64)  # a repeat, a skip, the positive again
    loss = hw.sg_update(W_in, W_out, 2, targets, 0.2, np.empty(d), True)
    ref = _sg_sequential(E_in, E_out, 2, targets, 0.2)
    assert loss == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(W_in, E_in, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(W_out, E_out, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_block_update_is_one_minibatch_step_on_the_reference_loss(dtype, tol):
    rng = np.random.default_rng()
    V, d, k, alpha = 30, 20, 5, 0.25
    W_in, W_out = _weights(rng, V, d, dtype)
    inputs = np.array([4, 9, 4, 17, 2, 0, 0, 0], dtype=np.int64)  # duplicates + unused tail
    n = 5
    targets = _distinct_targets(rng, V, k)
    X = W_in[inputs[:n]].astype(np.float64)
    W64 = W_out.astype(np.float64)
    samples = np.tile(targets, (n, 1))
    ref_loss = reference.ns_loss_rows(X, W64, samples).sum()
    gx, gW = reference.ns_loss_grad(np.ones(n), X, W64, samples)
    E_in = W_in.astype(np.float64)
    np.add.at(E_in, inputs[:n], -alpha * gx)

    dX = np.empty((8, d), dtype)
    dY = np.empty((k + 1, d), dtype)
    loss = hw.sg_block_update(W_in, W_out, inputs, n, targets, alpha, dX, dY, True)

    assert loss == pytest.approx(ref_loss, rel=max(tol, 1e-10))
    np.testing.assert_allclose(W_in, E_in, rtol=tol, atol=tol)
    np.testing.assert_allclose(W_out, W64 - alpha * gW, rtol=tol, atol=tol)


def test_block_update_skips_marked_targets():
    rng = np.random.default_rng()
    V, d = 10, 8
    W_in, W_out = _weights(rng, V, d)
    inputs = np.array([1, 2, 3], dtype=np.int64)
    full = np.array([6, -1, 7], dtype=np.int64)
    kept = np.array([6, 7], dtype=np.int64)
    A_in, A_out = W_in.copy(), W_out.copy()
    la = hw.sg_block_update(
        A_in, A_out, inputs, 3, full, 0.1, np.empty((3, d)), np.empty((3, d)), 1
    )
    lb = hw.sg_block_update(
        W_in, W_out, inputs, 3, kept, 0.1, np.empty((3, d)), np.empty((2, d)), 1
    )
    # dropping a negative changes nothing else; column 0 stays the positive
    assert la == pytest.approx(lb, rel=1e-12)
    np.testing.assert_allclose(A_in, W_in, rtol=1e-12)
    np.testing.assert_allclose(A_out, W_out, rtol=1e-12)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_cbow_update_uses_the_context_mean(dtype, tol):
    rng = np.random.default_rng()
    V, d, k, alpha = 25, 12, 4, 0.2
    W_in, W_out = _weights(rng, V, d, dtype)
    inputs = np.array([3, 8, 3, 11], dtype=np.int64)
    targets = _distinct_targets(rng, V, k)
    h = W_in[inputs].astype(np.float64).mean(axis=0)
    W64 = W_out.astype(np.float64)
    ref_loss = reference.ns_loss_rows(h[None], W64, targets[None]).sum()
    gh, gW = reference.ns_loss_grad(np.ones(1), h[None], W64, targets[None])
    E_in = W_in.astype(np.float64)
    np.add.at(E_in, inputs, -alpha * gh)  # gensim cbow_mean=1: full hidden gradient to each row

    loss = hw.cbow_update(W_in, W_out, inputs, 4, targets, alpha, np.empty(d, dtype),
                          np.empty(d, dtype), True)  # fmt: skip

    assert loss == pytest.approx(ref_loss, rel=max(tol, 1e-10))
    np.testing.assert_allclose(W_in, E_in, rtol=tol, atol=tol)
    np.testing.assert_allclose(W_out, W64 - alpha * gW, rtol=tol, atol=tol)


# ---------------------------------------------------------------- generator


@nb.njit
def _alias_draws(seed, prob, alias, n):
    key = hw.stream_key(seed)
    out = np.empty(n, dtype=np.int64)
    for i in range(n):  # one draw per position, as the kernel keys them
        out[i] = hw.draw_alias(key, i, hw.SLOT_DRAWS, prob, alias)
    return out


@nb.njit
def _below_draws(seed, bound, n):
    key = hw.stream_key(seed)
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        out[i] = hw.to_below(hw.keyed_u64(key, i, hw.SLOT_REACH), bound)
    return out


def _chi2_pvalue(observed, expected):
    from scipy import stats

    return stats.chisquare(observed, expected).pvalue


def test_alias_draws_follow_the_exact_distribution():
    rng = np.random.default_rng()
    counts = rng.integers(1, 1000, size=300) ** 2
    s = AliasSampler.from_counts(counts, 0.75)
    n = 400_000
    draws = _alias_draws(np.uint64(rng.integers(2**63)), s.prob, s.alias, n)
    assert draws.min() >= 0 and draws.max() < len(counts)
    observed = np.bincount(draws, minlength=len(counts))
    assert _chi2_pvalue(observed, s.probabilities() * n) > 1e-4


def test_bounded_integers_are_uniform_for_awkward_bounds():
    for bound in (1, 3, 7, 1000):
        draws = _below_draws(np.uint64(12345), bound, 70_000)
        assert draws.min() >= 0 and draws.max() < bound
        if bound > 1:
            observed = np.bincount(draws, minlength=bound)
            assert _chi2_pvalue(observed, np.full(bound, 70_000 / bound)) > 1e-4


def test_streams_differ_by_seed_position_and_slot():
    key = np.uint64(hw.stream_key(np.uint64(1)))
    a = hw.keyed_u64(key, 5, 3)
    assert a != hw.keyed_u64(np.uint64(hw.stream_key(np.uint64(2))), 5, 3)
    assert a != hw.keyed_u64(key, 6, 3)
    assert a != hw.keyed_u64(key, 5, 4)
    assert a == hw.keyed_u64(np.uint64(hw.stream_key(np.uint64(1))), 5, 3)
    # the slots of one position never reach the next position's
    assert hw.keyed_u64(key, 5, 1 << hw.SLOT_BITS) == hw.keyed_u64(key, 6, 0)


def test_bounded_integers_are_the_high_bits_of_the_product():
    rng = np.random.default_rng()
    for u in rng.integers(0, 2**63, size=200, dtype=np.uint64) * np.uint64(2) + np.uint64(1):
        for n in (1, 7, 1000, 2**32 - 1):
            want = (int(u) * n) >> 64
            assert hw.to_below(u, n) in (want, want - 1)  # the low product's carry is dropped


# ---------------------------------------------------------------- the whole loop, replayed


def _replay(ids, offsets, W_in, W_out, keep, s, window, negative, a0, a1, seed, shrink, mode):
    """The training loop re-done in plain Python/numpy float64, drawing from the engine's own
    generator (keyed by corpus position), one worker."""
    first, span = offsets[0], max(offsets[-1] - offsets[0], 1)
    targets = np.empty(negative + 1, dtype=np.int64)
    loss, pairs, words = 0.0, 0, 0
    key = np.uint64(hw.stream_key(np.uint64(seed)))

    def bits(p, slot):  # numba hands uint64 back as a Python int
        return np.uint64(hw.keyed_u64(key, p, slot))

    def uniform(p, slot):
        return hw.to_uniform(bits(p, slot))

    for si in range(len(offsets) - 1):
        a, b = offsets[si], offsets[si + 1]
        alpha = a0 + (a1 - a0) * ((a - first) / span)
        kept = [
            p for p in range(a, b) if not (keep[ids[p]] < 1.0 and keep[ids[p]] <= uniform(p, 0))
        ]
        sent = [ids[p] for p in kept]
        words += len(sent)
        n = len(sent)
        for i in range(n):
            u = bits(kept[i], hw.SLOT_REACH)
            reach = window - hw.to_below(u, window) if shrink else window
            ctx = [sent[j] for j in range(max(0, i - reach), min(n, i + reach + 1)) if j != i]
            if mode == "sg":
                for ci, c in enumerate(ctx):
                    hw.draw_targets(key, kept[i], ci, sent[i], negative, s.prob, s.alias, targets)
                    loss += _sg_sequential(W_in, W_out, c, targets, alpha)
                    pairs += 1
                continue
            if not ctx:
                continue
            hw.draw_targets(key, kept[i], 0, sent[i], negative, s.prob, s.alias, targets)
            keep_t = targets[targets >= 0]
            if mode == "shared":
                X = W_in[ctx]
                smp = np.tile(keep_t, (len(ctx), 1))
                loss += reference.ns_loss_rows(X, W_out, smp).sum()
                gx, gW = reference.ns_loss_grad(np.ones(len(ctx)), X, W_out, smp)
                np.add.at(W_in, ctx, -alpha * gx)
                W_out -= alpha * gW
                pairs += len(ctx)
            else:  # cbow: the sequential rule on the mean, as repeated negatives may occur
                H = np.vstack([W_in[ctx].mean(axis=0), np.zeros(W_in.shape[1])])
                before = H[0].copy()
                loss += _sg_sequential(H, W_out, 0, targets, alpha)
                np.add.at(W_in, ctx, H[0] - before)
                pairs += 1
    return loss, pairs, words


@pytest.mark.parametrize("mode", ["sg", "shared", "cbow"])
@pytest.mark.parametrize("shrink", [True, False])
def test_train_chunk_matches_a_float64_replay(mode, shrink):
    rng = np.random.default_rng()
    V, d, window, negative = 15, 10, 3, 4
    counts = rng.integers(1, 60, size=V).astype(np.float64)
    counts[0] = 400  # frequent enough to be subsampled
    s = AliasSampler.from_counts(counts, 0.75)
    lengths = rng.integers(0, 9, size=14)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = rng.choice(V, size=offsets[-1], p=counts / counts.sum()).astype(np.int32)
    keep = np.minimum(1.0, np.sqrt(20.0 / counts)).astype(np.float32)
    W_in, W_out = _weights(rng, V, d)
    E_in, E_out = W_in.copy(), W_out.copy()
    seed = int(rng.integers(2**32))
    args = (window, negative, 0.1, 0.01, seed, shrink)

    stats = hw.train_chunk(ids, offsets, W_in, W_out, keep, s.prob, s.alias, *args,
                           cbow=mode == "cbow", shared_negatives=mode == "shared", workers=1,
                           job_words=20)  # fmt: skip
    loss, pairs, words = _replay(ids, offsets, E_in, E_out, keep, s, *args, mode)

    assert (stats.n_pairs, stats.n_words) == (pairs, words)
    assert words < offsets[-1]  # subsampling dropped something
    assert stats.loss_sum == pytest.approx(loss, rel=1e-9)
    np.testing.assert_allclose(W_in, E_in, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(W_out, E_out, rtol=1e-9, atol=1e-12)


def test_offsets_may_start_inside_ids():
    rng = np.random.default_rng(3)
    V, d = 20, 8
    ids = rng.integers(0, V, size=200).astype(np.int32)
    full = np.arange(0, 201, 10, dtype=np.int64)
    s = AliasSampler(np.ones(V))
    keep = np.ones(V, np.float32)
    A = _weights(np.random.default_rng(1), V, d)
    B = (A[0].copy(), A[1].copy())
    # draws are keyed by corpus position, so both chunks sit at 50; junk before it is never read
    ids1 = np.concatenate([np.zeros(50, np.int32), ids])
    ids2 = np.concatenate([np.full(50, -7, np.int32), ids])
    r1 = hw.train_chunk(ids1, full + 50, *A, keep, s.prob, s.alias, 2, 3, 0.05, 0.05, 9, workers=1)
    r2 = hw.train_chunk(ids2, full + 50, *B, keep, s.prob, s.alias, 2, 3, 0.05, 0.05, 9, workers=1)
    assert r1 == r2 and r1.n_words == 200
    np.testing.assert_array_equal(A[0], B[0])


def test_position_key_shifts_every_position():
    rng = np.random.default_rng()
    seed, base = int(rng.integers(2**63)), int(rng.integers(1, 2**30))
    key = np.uint64(hw.stream_key(np.uint64(seed)))
    shifted = np.uint64(hw.position_key(seed, base))
    for p, slot in zip(rng.integers(0, 2**20, 50), rng.integers(0, 1 << hw.SLOT_BITS, 50)):
        assert hw.keyed_u64(shifted, int(p), int(slot)) == hw.keyed_u64(
            key, base + int(p), int(slot)
        )
    assert hw.position_key(seed) == int(key)


@pytest.mark.parametrize("kw", [{}, {"shared_negatives": True}, {"cbow": True}])
def test_a_shard_given_its_first_position_trains_what_the_whole_corpus_trains(kw):
    rng = np.random.default_rng()
    V, d, n_sent = 30, 8, 60
    lengths = rng.integers(0, 15, n_sent)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    counts = rng.integers(1, 50, V).astype(np.float64)
    ids = rng.choice(V, size=offsets[-1], p=counts / counts.sum()).astype(np.int32)
    s = AliasSampler.from_counts(counts, 0.75)
    keep = np.minimum(1.0, np.sqrt(30.0 / counts)).astype(np.float32)  # subsampling on
    cut = int(rng.integers(5, n_sent - 5))  # the shard: sentences cut.. of the corpus
    base, seed = int(offsets[cut]), int(rng.integers(2**63))
    whole, shard, other = (_weights(np.random.default_rng(2), V, d) for _ in range(3))
    args = (keep, s.prob, s.alias, 3, 4, 0.05, 0.01, seed)
    a = hw.train_chunk(ids, offsets[cut:], *whole, *args, workers=1, **kw)
    b = hw.train_chunk(ids[base:], offsets[cut:] - base, *shard, *args, workers=1,
                       first_position=base, **kw)  # fmt: skip
    hw.train_chunk(ids[base:], offsets[cut:] - base, *other, *args, workers=1, **kw)
    assert a == b and a.n_pairs > 0
    np.testing.assert_array_equal(whole[0], shard[0])
    np.testing.assert_array_equal(whole[1], shard[1])
    assert not np.array_equal(whole[0], other[0])  # without it the shard draws other numbers
    with pytest.raises(ValueError, match="first_position"):
        hw.train_chunk(ids, offsets, *other, *args, first_position=-1)


# ---------------------------------------------------------------- reproducibility and learning


def _planted(rng, n_sent=3000, groups=4, per_group=10, length=10):
    """Sentences drawn from one group each: words of a group co-occur, other groups never."""
    V = groups * per_group
    g = rng.integers(groups, size=n_sent)
    ids = (g[:, None] * per_group + rng.integers(per_group, size=(n_sent, length))).ravel()
    offsets = np.arange(0, n_sent * length + 1, length, dtype=np.int64)
    return ids.astype(np.int32), offsets, V, per_group


def _train_planted(seed, workers, **kw):
    rng = np.random.default_rng(0)
    ids, offsets, V, per = _planted(rng)
    d = 16
    W_in = ((rng.random((V, d)) - 0.5) / d).astype(np.float32)
    W_out = np.zeros((V, d), np.float32)
    s = AliasSampler.from_counts(np.bincount(ids, minlength=V), 0.75)
    keep = np.ones(V, np.float32)
    stats = None
    for epoch in range(3):
        a0, a1 = 0.025 * (1 - epoch / 3), 0.025 * (1 - (epoch + 1) / 3) + 1e-4
        stats = hw.train_chunk(ids, offsets, W_in, W_out, keep, s.prob, s.alias, 3, 5, a0, a1,
                               seed + epoch, workers=workers, job_words=2000, **kw)  # fmt: skip
    return W_in, stats, per


@pytest.mark.parametrize("kw", [{}, {"shared_negatives": True}, {"cbow": True}])
def test_one_worker_is_reproducible(kw):
    a, sa, _ = _train_planted(5, 1, **kw)
    b, sb, _ = _train_planted(5, 1, **kw)
    c, _, _ = _train_planted(6, 1, **kw)
    np.testing.assert_array_equal(a, b)
    assert sa == sb
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kw", [{}, {"shared_negatives": True}, {"cbow": True}])
def test_learns_planted_groups_with_two_workers(kw):
    W, stats, per = _train_planted(11, 2, **kw)
    assert np.isfinite(W).all()
    U = W / np.linalg.norm(W, axis=1, keepdims=True)
    sim = U @ U.T
    group = np.arange(len(W)) // per
    same = group[:, None] == group[None, :]
    np.fill_diagonal(same, False)
    other = group[:, None] != group[None, :]
    # every word's nearest neighbour is in its own group, and groups separate clearly
    nn = np.where(np.eye(len(W), dtype=bool), -np.inf, sim).argmax(axis=1)
    assert (group[nn] == group).all()
    assert sim[same].mean() > sim[other].mean() + 0.5
    assert stats.loss_sum / stats.n_pairs < 3.0  # untrained: 6 * log 2 = 4.16 per pair


def test_loss_can_be_skipped():
    _, stats, _ = _train_planted(1, 2, compute_loss=False)
    assert stats.loss_sum == 0.0 and stats.n_pairs > 0


# ---------------------------------------------------------------- bad input


def _valid_args():
    V, d = 6, 4
    return dict(
        ids=np.array([0, 1, 2, 3], np.int32),
        offsets=np.array([0, 4], np.int64),
        W_in=np.zeros((V, d), np.float32),
        W_out=np.zeros((V, d), np.float32),
        keep_prob=np.ones(V, np.float32),
        alias_prob=np.ones(V),
        alias_idx=np.arange(V),
        window=2,
        negative=2,
        alpha_start=0.025,
        alpha_end=0.0001,
        seed=0,
    )


@pytest.mark.parametrize(
    "change,error,match",
    [
        ({"ids": np.array([0, 1, 6, 3], np.int32)}, ValueError, "ids must lie in"),
        ({"ids": np.array([0.0, 1.0])}, TypeError, "ids must have dtype"),
        ({"offsets": np.array([0, 5], np.int64)}, ValueError, "within ids"),
        ({"offsets": np.array([3, 1], np.int64)}, ValueError, "non-decreasing"),
        ({"W_out": np.zeros((5, 4), np.float32)}, ValueError, "W_out shape"),
        ({"W_out": np.zeros((6, 4), np.float64)}, TypeError, "W_out must have dtype"),
        ({"W_in": np.zeros((4, 6), np.float32).T}, ValueError, "C-contiguous"),
        ({"keep_prob": np.ones(5, np.float32)}, ValueError, "keep_prob has 5 entries"),
        ({"alias_idx": np.arange(6, dtype=np.int32)}, TypeError, "alias_idx must have dtype"),
        ({"window": 0}, ValueError, "window must be >= 1"),
        ({"negative": -1}, ValueError, "negative must be >= 0"),
        ({"alpha_start": float("nan")}, ValueError, "finite"),
        ({"cbow": True, "shared_negatives": True}, ValueError, "skip-gram option"),
        ({"workers": 0}, ValueError, "workers must be >= 1"),
        ({"ids": [0, 1]}, TypeError, "numpy array"),
    ],
)
def test_bad_input_is_named(change, error, match):
    kw = _valid_args()
    kw.update(change)
    with pytest.raises(error, match=match):
        hw.train_chunk(**kw)


def test_read_only_weights_are_refused():
    kw = _valid_args()
    kw["W_in"].flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        hw.train_chunk(**kw)


def test_empty_chunk_trains_nothing():
    kw = _valid_args()
    kw["offsets"] = np.array([2, 2], np.int64)
    assert hw.train_chunk(**kw) == (0.0, 0, 0)
