"""A corpus prepared across ranks: every rank the one vocabulary, each its own part of the text,
the shards together the one-node encoding."""

import gzip
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from ns_plugins.data import EncodedCorpus, prepare_corpus, prepare_corpus_shard
from ns_plugins.data import reader as reader_mod
from ns_plugins.errors import UsageError


def _corpus(tmp_path, n_lines=4000, seed=3):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(500)] + ["naïve", "don't"]
    p = 1.0 / np.arange(1, len(words) + 1)
    lines = [
        " ".join(rng.choice(words, size=int(rng.integers(1, 25)), p=p / p.sum()))
        for _ in range(n_lines)
    ]
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "a.txt").write_text("\n".join(lines[: n_lines // 2]) + "\n")
    (d / "b.txt").write_text("\n".join(lines[n_lines // 2 :]))
    return d


class _World:
    """all_gather_object among threads, one per rank (torch.distributed's signature)."""

    def __init__(self, n):
        self.n, self.slots, self.barrier = n, [None] * n, threading.Barrier(n, timeout=60)

    def all_gather(self, rank):
        def gather(out, obj):
            self.slots[rank] = obj
            self.barrier.wait()
            out[:] = list(self.slots)
            self.barrier.wait()

        return gather


def _run_ranks(n, fn):
    world, results, errors = _World(n), [None] * n, [None] * n

    def run(rank):
        try:
            results[rank] = fn(rank, world.all_gather(rank))
        except BaseException as err:  # noqa: BLE001 - reported by the test
            errors[rank] = err

    threads = [threading.Thread(target=run, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results, errors


def _union_equals(shards, whole):
    ids = np.concatenate([np.asarray(s.ids) for s in shards])
    np.testing.assert_array_equal(ids, np.asarray(whole.ids))
    offsets, base = [0], 0
    for s in shards:
        offsets.extend((np.asarray(s.offsets[1:]) + base).tolist())
        base += s.n_tokens
    np.testing.assert_array_equal(offsets, np.asarray(whole.offsets))


@pytest.mark.parametrize("n", [2, 3])
def test_shards_share_the_vocabulary_and_make_up_the_corpus(tmp_path, n):
    corpus = _corpus(tmp_path)
    whole = prepare_corpus(corpus, tmp_path / "one", min_count=3, workers=1)
    shards, errors = _run_ranks(
        n,
        lambda rank, gather: prepare_corpus_shard(
            corpus, tmp_path / "cache", rank, n, gather, min_count=3, workers=1
        ),
    )
    assert errors == [None] * n, errors
    for shard in shards:
        assert shard.vocab == whole.vocab
    _union_equals(shards, whole)
    size = sum(f.stat().st_size for f in corpus.iterdir())
    metas = [json.loads((s.path / "meta.json").read_text()) for s in shards]
    assert [m["shard"] for m in metas] == list(range(n)) and {m["shards"] for m in metas} == {n}
    assert sum(m["shard_bytes"] for m in metas) == size
    for m in metas:  # about an equal share each
        assert abs(m["shard_bytes"] - size / n) < 0.05 * size
        assert m["corpus_raw_words"] == whole.raw_words
    assert sum(s.raw_words for s in shards) == whole.raw_words
    # again: every rank has its shard, so all reuse it
    again, errors = _run_ranks(
        n,
        lambda rank, gather: prepare_corpus_shard(
            corpus, tmp_path / "cache", rank, n, gather, min_count=3, workers=2
        ),
    )
    assert errors == [None] * n and [s.path for s in again] == [s.path for s in shards]


def test_max_vocab_size_and_workers_in_shards(tmp_path, monkeypatch):
    corpus = _corpus(tmp_path, n_lines=3000)
    monkeypatch.setattr(reader_mod, "BLOCK_BYTES", 4096)
    whole = prepare_corpus(corpus, tmp_path / "one", min_count=2, max_vocab_size=200, workers=1)
    shards, errors = _run_ranks(
        2,
        lambda rank, gather: prepare_corpus_shard(
            corpus, tmp_path / "cache", rank, 2, gather, 2, 200, workers=1
        ),
    )
    assert errors == [None, None], errors
    assert shards[0].vocab == shards[1].vocab == whole.vocab
    _union_equals(shards, whole)


def test_a_rank_that_fails_stops_the_others(tmp_path):
    corpus = _corpus(tmp_path)
    (corpus / "c.txt.gz").write_bytes(b"\x1f\x8b\x08\x00broken")  # in the last rank's part

    results, errors = _run_ranks(
        2,
        lambda rank, gather: prepare_corpus_shard(
            corpus, tmp_path / "cache", rank, 2, gather, min_count=1, workers=1
        ),
    )
    assert results == [None, None]
    assert isinstance(errors[1], UsageError) and "c.txt.gz" in str(errors[1])
    assert isinstance(errors[0], UsageError) and "corpus shard 1 failed" in str(errors[0])
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]


def test_too_many_ranks_for_the_cuts(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "one.txt.gz").write_bytes(gzip.compress(b"a b c\n" * 100))  # never cut
    results, errors = _run_ranks(
        2,
        lambda rank, gather: prepare_corpus_shard(d, tmp_path / "cache", rank, 2, gather, 1),
    )
    assert all(isinstance(e, UsageError) and "2 shards" in str(e) for e in errors)


# ------------------------------------------------------------- two processes over torch (gloo)
def _rank_main(rank, world, init, corpus, cache, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        shard = prepare_corpus_shard(
            corpus, cache, rank, world, dist.all_gather_object, min_count=3, workers=2
        )
        Path(out, f"rank{rank}").write_text(str(shard.path))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.timeout(300)
def test_two_processes_over_gloo(tmp_path):
    torch_mp = pytest.importorskip("torch.multiprocessing")
    corpus = _corpus(tmp_path, n_lines=20000)
    init = f"file://{tmp_path / 'rendezvous'}"
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ)
    try:
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
        )
        torch_mp.spawn(
            _rank_main, args=(2, init, str(corpus), str(tmp_path / "cache"), str(out)), nprocs=2
        )
    finally:
        os.environ.clear()
        os.environ.update(env)
    shards = [EncodedCorpus.open((out / f"rank{r}").read_text(), check=True) for r in (0, 1)]
    whole = prepare_corpus(corpus, tmp_path / "one", min_count=3, workers=1)
    assert shards[0].vocab == shards[1].vocab == whole.vocab
    _union_equals(shards, whole)
    metas = [json.loads((s.path / "meta.json").read_text()) for s in shards]
    size = sum(f.stat().st_size for f in corpus.iterdir())
    for m in metas:  # each read about half of the bytes
        assert abs(m["shard_bytes"] - size / 2) < 0.05 * size
