"""Local SGD inside one process: the merge of copies trained apart (``kernels.merge``), the chunk
kernel training per-thread copies, and ``ChunkTrainer`` choosing copies or shared tables."""

import logging

import numpy as np
import pytest

from ns_plugins.engines.chunk import ChunkSettings, ChunkTrainer
from ns_plugins.kernels.merge import merge_deltas


def test_merge_adds_every_delta(rng):
    anchor = rng.standard_normal((7, 3))
    d1, d2, d3 = (rng.standard_normal((7, 3)) for _ in range(3))
    start = anchor.copy()
    copies = [start + d1, start + d2, start + d3]
    merge_deltas(copies, anchor)
    expected = start + d1 + d2 + d3
    for array in (anchor, *copies):
        np.testing.assert_allclose(array, expected, rtol=1e-12)


def test_merge_with_other_processes_and_on_torch(rng):
    torch = pytest.importorskip("torch")
    start = torch.from_numpy(rng.standard_normal((5, 4)))
    d = torch.from_numpy(rng.standard_normal((5, 4)))
    anchor, copy = start.clone(), start + d

    def two_ranks(delta):  # another rank trained the same delta
        delta.mul_(2)

    merge_deltas([copy], anchor, all_reduce=two_ranks)
    torch.testing.assert_close(anchor, start + 2 * d)
    torch.testing.assert_close(copy, anchor)


def _corpus(rng, V=60, n=4000, length=20):
    ids = (rng.zipf(1.3, n * length) % V).astype(np.int32)
    offsets = np.arange(0, n * length + 1, length, dtype=np.int64)
    counts = np.bincount(ids, minlength=V).astype(np.int64) + 1
    return ids, offsets, counts


def test_threads_train_their_copies_and_sync_merges_them(rng, caplog):
    ids, offsets, counts = _corpus(rng)
    settings = ChunkSettings(vector_size=8, workers=2, merge_every=1000, sample=0.0, copies_mib=64)
    engine = ChunkTrainer(counts, settings)
    start = engine.W_in.copy()
    with caplog.at_level(logging.INFO, logger="ns_plugins.engines.chunk"):
        engine.step(ids, offsets, 0, 1)
    assert "2 threads train their own copies" in caplog.text
    (anchor_in, _), [(replica_in, _)] = engine._copies
    np.testing.assert_array_equal(anchor_in, start)  # no merge yet
    master_delta = engine.W_in - start
    replica_delta = replica_in - start
    assert np.abs(master_delta).sum() + np.abs(replica_delta).sum() > 0
    vectors = engine.vectors()  # a reader merges first
    np.testing.assert_allclose(vectors, start + master_delta + replica_delta, atol=1e-6)
    np.testing.assert_array_equal(replica_in, engine.W_in)
    engine.release_copies()
    assert engine._copies is None


def test_copies_over_the_budget_share_the_tables(rng, caplog):
    ids, offsets, counts = _corpus(rng)
    settings = ChunkSettings(vector_size=8, workers=2, copies_mib=0.001)
    engine = ChunkTrainer(counts, settings)
    with caplog.at_level(logging.INFO, logger="ns_plugins.engines.chunk"):
        engine.step(ids, offsets, 0, 2)
        engine.step(ids, offsets, 1, 2)
    assert caplog.text.count("share the tables without locks") == 1
    assert not engine._copies


def test_one_worker_makes_no_copies_and_repeats_bit_for_bit(rng):
    ids, offsets, counts = _corpus(rng)
    runs = []
    for _ in range(2):
        engine = ChunkTrainer(counts, ChunkSettings(vector_size=8, workers=1))
        for step in range(3):
            engine.step(ids, offsets, step, 3)
        assert engine._copies is None
        runs.append(engine.vectors().copy())
    np.testing.assert_array_equal(runs[0], runs[1])


def test_replicas_must_fit(rng):
    from ns_plugins.kernels.chunk_numba import train_chunk

    ids, offsets, counts = _corpus(rng)
    engine = ChunkTrainer(counts, ChunkSettings(vector_size=8))
    keep, noise = engine.tables()
    args = (ids, offsets, engine.W_in, engine.W_out, keep, noise.prob, noise.alias, 5, 5, 0.025,
            0.0001, 1)  # fmt: skip
    with pytest.raises(ValueError, match=r"replicas\[0\] W_in must be a writeable"):
        train_chunk(*args, replicas=[(engine.W_in[:3].copy(), engine.W_out.copy())])
    with pytest.raises(ValueError, match="0 replicas for 2 threads"):
        train_chunk(*args, workers=2, replicas=[])
