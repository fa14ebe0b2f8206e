"""CorpusDataModule across nodes: each rank encodes and trains its own shard of a text corpus.

The ranks are threads here, with torch.distributed's two calls the data module makes replaced by
a gather among the threads; tests/test_train_run.py runs two nodes as real processes."""

import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ns_plugins.app.datamodule import CorpusDataModule, _Chunks, balanced_cuts
from ns_plugins.app.recipe import CorpusRecipe
from ns_plugins.data import EncodedCorpus, prepare_corpus


def _lines(n, seed):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(300)] + ["naïve", "a-much-longer-word"]
    p = 1.0 / np.arange(1, len(words) + 1)
    return [
        " ".join(rng.choice(words, size=int(rng.integers(1, 20)), p=p / p.sum())) for _ in range(n)
    ]


def _corpus(tmp_path, balanced: bool):
    """A directory of two files. ``balanced``: the second holds the first's lines in another
    order, so the byte cut between the files is also where the tokens balance."""
    d = tmp_path / "corpus"
    d.mkdir()
    first = _lines(1500, seed=1)
    second = list(np.random.default_rng(2).permutation(first)) if balanced else _lines(1500, 2)
    (d / "a.txt").write_text("\n".join(first) + "\n")
    (d / "b.txt").write_text("\n".join(second) + "\n")
    return d


class _World:
    """Ranks as threads: all_gather_object and the strategy's min-reduce among them."""

    def __init__(self, n):
        self.n, self.slots = n, [None] * n
        self.barrier = threading.Barrier(n, timeout=120)
        self.rank_of: dict[int, int] = {}

    def all_gather_object(self, out, obj, group=None):
        self.slots[self.rank_of[threading.get_ident()]] = obj
        self.barrier.wait()
        out[:] = list(self.slots)
        self.barrier.wait()

    def reduce(self, t, reduce_op):
        everyone = [None] * self.n
        self.all_gather_object(everyone, int(t))
        return torch.tensor(min(everyone))

    def trainer(self, rank, nodes):
        strategy = SimpleNamespace(root_device=torch.device("cpu"), reduce=self.reduce)
        return SimpleNamespace(
            global_rank=rank, world_size=self.n, num_nodes=nodes, num_devices=self.n // nodes,
            strategy=strategy, global_step=0,
        )  # fmt: skip


def _setup_ranks(monkeypatch, world, nodes, make_dm):
    """Data modules of ``world`` ranks on ``nodes`` nodes, each set up in its own thread."""
    import torch.distributed as dist

    w = _World(world)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "gloo")
    monkeypatch.setattr(dist, "all_gather_object", w.all_gather_object)
    dms, errors = [make_dm() for _ in range(world)], [None] * world

    def run(rank):
        w.rank_of[threading.get_ident()] = rank
        try:
            dms[rank].trainer = w.trainer(rank, nodes)
            dms[rank].prepare_data()
            dms[rank].setup("fit")
        except BaseException as err:  # noqa: BLE001 - reported by the test
            errors[rank] = err
            w.barrier.abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert errors == [None] * world, errors
    return dms


def _cache_dirs(cache):
    return [p for p in cache.iterdir() if p.is_dir()]


@pytest.mark.parametrize("balanced", [False, True])
def test_two_nodes_train_their_shards_with_the_one_node_vocabulary(tmp_path, monkeypatch, balanced):
    corpus = _corpus(tmp_path, balanced)
    whole = prepare_corpus(corpus, tmp_path / "one", min_count=2, workers=1)
    recipe = CorpusRecipe(source="text", path=str(corpus), min_count=2)
    cache = tmp_path / "cache"
    dms = _setup_ranks(
        monkeypatch, 2, 2, lambda: CorpusDataModule(recipe, cache, chunk_words=500, seed=3)
    )
    size = sum(f.stat().st_size for f in corpus.iterdir())
    n_sent, offsets = whole.n_sentences, np.asarray(whole.offsets)
    one_node = balanced_cuts(offsets, 0, n_sent, 2)
    edges = [0]
    for rank, dm in enumerate(dms):
        assert dm.vocab == whole.vocab  # the vocabulary one process builds
        meta = json.loads((dm.corpus.path / "meta.json").read_text())
        assert meta["shard"] == rank and meta["shards"] == 2
        assert abs(meta["shard_bytes"] - size / 2) < 0.02 * size  # about half of the bytes
        # the rank trains its shard: sentences [S[r], S[r + 1]) of the one-node encoding
        s0, s1 = dm.shard_summary()["sentences"]
        assert s0 == edges[-1] and s1 - s0 == dm.corpus.n_sentences
        edges.append(s1)
        a, b = int(offsets[s0]), int(offsets[s1])
        np.testing.assert_array_equal(np.asarray(dm.corpus.ids), np.asarray(whole.ids[a:b]))
        np.testing.assert_array_equal(np.asarray(dm.corpus.offsets), offsets[s0 : s1 + 1] - a)
        # as many chunks as on one node, each a run of the shard's sentences
        assert dm.steps_per_epoch == len(_Chunks(offsets, 500, rank, 2)) > 1
        assert dm.words_per_step == whole.raw_words / dm.steps_per_epoch
    assert edges[-1] == n_sent
    if balanced:  # the cuts coincide: the one-node layout, chunk for chunk
        assert edges == one_node.tolist()
        for rank, dm in enumerate(dms):
            shifted = [(a + edges[rank], b + edges[rank]) for a, b in dm._batches(rank, 2, 0, 1)]
            assert shifted == list(_Chunks(offsets, 500, rank, 2))
    else:  # by bytes, not tokens: the cut lies a few sentences from the one-node one
        assert 0 < abs(edges[1] - int(one_node[1])) < 0.02 * n_sent
    # no whole-corpus encoding anywhere in the cache: the two shards only
    recipes = [json.loads((d / "recipe.json").read_text()) for d in _cache_dirs(cache)]
    assert sorted(r["shard"] for r in recipes) == [[0, 2], [1, 2]]


def test_batched_engine_on_two_nodes_of_two_ranks(tmp_path, monkeypatch):
    corpus = _corpus(tmp_path, balanced=False)
    whole = prepare_corpus(corpus, tmp_path / "one", min_count=2, workers=1)
    recipe = CorpusRecipe(source="text", path=str(corpus), min_count=2)
    dms = _setup_ranks(
        monkeypatch,
        4,
        2,
        lambda: CorpusDataModule(recipe, tmp_path / "cache", batch_size=64, sample=1e-2, seed=3),
    )
    summaries = [dm.shard_summary() for dm in dms]
    assert [s["index"] for s in summaries] == [0, 1, 2, 3]
    assert [s["sentences"][0] for s in summaries[1:]] == [s["sentences"][1] for s in summaries[:-1]]
    assert summaries[0]["sentences"][0] == 0 and summaries[-1]["sentences"][1] == whole.n_sentences
    steps = {dm.steps_per_epoch for dm in dms}
    assert len(steps) == 1 and steps.pop() > 0  # the shortest shard sets every rank's steps
    for dm in dms:
        assert dm.vocab == whole.vocab
        batch = next(iter(dm.train_dataloader()))  # from the rank's own shard
        assert set(batch["center"].tolist()) <= set(np.asarray(dm.corpus.ids).tolist())


@pytest.mark.parametrize("setting", ["max_vocab_size", "vocab_file"])
def test_shards_keep_the_vocabulary_settings(tmp_path, monkeypatch, setting):
    corpus = _corpus(tmp_path, balanced=False)
    if setting == "max_vocab_size":
        recipe = CorpusRecipe(source="text", path=str(corpus), min_count=2, max_vocab_size=120)
    else:
        fixed = tmp_path / "fixed.tsv"
        fixed.write_text("".join(f"w{i}\t{1000 - i}\n" for i in range(0, 300, 3)))
        recipe = CorpusRecipe(source="text", path=str(corpus), min_count=2, vocab_file=str(fixed))
    expected = EncodedCorpus.open(recipe.prepare(tmp_path / "one"))
    dms = _setup_ranks(monkeypatch, 2, 2, lambda: CorpusDataModule(recipe, tmp_path / "cache"))
    for dm in dms:
        assert dm.vocab == expected.vocab
    ids = np.concatenate([np.asarray(dm.corpus.ids) for dm in dms])
    np.testing.assert_array_equal(ids, np.asarray(expected.ids))


def test_one_node_keeps_the_whole_corpus_encoding(tmp_path, monkeypatch):
    corpus = _corpus(tmp_path, balanced=False)
    recipe = CorpusRecipe(source="text", path=str(corpus), min_count=2)
    assert recipe.sharded(2) and not recipe.sharded(1)
    assert not CorpusRecipe(source="synthetic").sharded(2)
    dms = _setup_ranks(
        monkeypatch, 2, 1, lambda: CorpusDataModule(recipe, tmp_path / "cache", chunk_words=500)
    )
    (directory,) = _cache_dirs(tmp_path / "cache")
    assert "shard" not in json.loads((directory / "recipe.json").read_text())
    assert dms[0].corpus.path == dms[1].corpus.path == directory
