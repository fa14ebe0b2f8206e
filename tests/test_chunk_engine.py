"""The chunk engine under Lightning: a step trains a chunk of the corpus in place with the hogwild
kernel. Outputs, equality with the kernel, resume, refused checkpoints and options."""

import json
import logging
import signal

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from ns_plugins.app.checks import ConfigError
from ns_plugins.app.config import config_dir
from ns_plugins.app.launch import train
from ns_plugins.app.recipe import open_run_data
from ns_plugins.embeddings import load_word2vec
from ns_plugins.engines.base import initial_weights, linear_decay
from ns_plugins.errors import UsageError
from ns_plugins.kernels import chunk_numba

TINY = [
    "data.synthetic_sentences=600",
    "vector_size=16",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "eval.queries=[the,of]",
    "eval.k=3",
    "model.chunk_words=1500",
]


def _cfg(*overrides):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=[*TINY, *overrides])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("experiment, shared", [("sgns", False), ("sgns", True), ("cbow", False)])
def test_run_directory(experiment, shared, tmp_path, cache):
    cfg = _cfg(
        f"+experiment={experiment}",
        f"model.shared_negatives={shared}",
        "epochs=2",
        f"data.cache_dir={cache / experiment}",
    )
    metrics = train(cfg, tmp_path)
    n_words = 600 * 11  # about 11 words a sentence
    assert 2 * n_words / 1500 * 0.7 < metrics["global_step"] < 2 * n_words / 1500 * 1.4
    assert metrics["engine"] == "chunk" and metrics["epochs_completed"] == 2
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == metrics["global_step"]
    weights = state["state_dict"]["in_embed.weight"].numpy()
    assert torch.count_nonzero(state["state_dict"]["out_embed.weight"]) > 0  # trained in place
    words, vectors = load_word2vec(tmp_path / "vectors.bin")
    np.testing.assert_array_equal(vectors, weights)
    assert metrics["final_loss"] is not None and np.isfinite(metrics["final_loss"])
    assert metrics["words_per_sec"] > 0 and 0 < metrics["eval"]["planted_purity"] <= 1
    assert set(metrics["neighbours"]) == {"the", "of"}
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["global_step"] == metrics["global_step"]
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"step", "train/loss", "train/words_per_sec", "train/lr"} <= set(header)
    assert "eval/planted_purity" in header
    assert (tmp_path / "report.html").is_file() and (tmp_path / "vocab.tsv").is_file()
    assert len(words) == len((tmp_path / "vocab.tsv").read_text().splitlines())


def test_threads_on_their_own_copies_merge_before_every_reader(tmp_path, cache, caplog):
    """model.copies_mib: two threads train their own copies (chunks of several kernel jobs),
    merged every model.merge_every steps and before the checkpoint and the export read the
    weights; the run says which mode ran, trains other weights than shared tables and still
    learns the planted groups."""
    base = ["+experiment=sgns", "workers=2", "epochs=2", "data.synthetic_sentences=4000",
            "model.chunk_words=10000", f"data.cache_dir={cache / 'copies'}"]  # fmt: skip
    with caplog.at_level(logging.INFO, logger="ns_plugins"):
        metrics = train(_cfg(*base, "model.copies_mib=64", "model.merge_every=3"), tmp_path / "a")
    assert any("threads train their own copies" in r.getMessage() for r in caplog.records)
    assert metrics["global_step"] > 3 and metrics["eval"]["planted_purity"] > 0.4
    state = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)
    _, vectors = load_word2vec(tmp_path / "a" / "vectors.bin")
    np.testing.assert_array_equal(vectors, state["state_dict"]["in_embed.weight"].numpy())
    train(_cfg(*base), tmp_path / "b")
    _, shared = load_word2vec(tmp_path / "b" / "vectors.bin")
    assert not np.array_equal(vectors, shared)


@pytest.mark.parametrize("arch", ["sgns", "cbow"])
def test_a_step_is_the_hogwild_kernel_on_its_chunk(arch, tmp_path, cache):
    """One step through Lightning equals the kernel called by hand on the same chunk with the
    same seed, rate and start (one thread): the same bits."""
    from ns_plugins.app.datamodule import _Chunks
    from ns_plugins.app.engines.chunk import chunk_seed
    from ns_plugins.data import keep_probability, negative_sampler

    cfg = _cfg(
        f"+experiment={arch}", "workers=1", "trainer.max_steps=1", f"data.cache_dir={cache / arch}"
    )
    train(cfg, tmp_path)
    corpus, _ = open_run_data(cache / arch)
    V, d = len(corpus.vocab), cfg.vector_size
    W_in, W_out = initial_weights(V, d, cfg.seed, cfg.model.init_scale)
    s0, s1 = _Chunks(np.asarray(corpus.offsets), cfg.model.chunk_words, 0, 1).chunks[0]
    noise = negative_sampler(corpus.counts, cfg.ns_exponent)
    chunk_numba.train_chunk(
        corpus.ids,
        np.ascontiguousarray(corpus.offsets[s0 : s1 + 1], dtype=np.int64),
        W_in,
        W_out,
        keep_probability(corpus.counts, cfg.sample).astype(np.float32),
        noise.prob,
        noise.alias,
        cfg.window,
        cfg.negative,
        linear_decay(0, 1, cfg.alpha, cfg.min_alpha),
        linear_decay(1, 1, cfg.alpha, cfg.min_alpha),
        seed=chunk_seed(cfg.seed, 0, 0),
        cbow=arch == "cbow",
        workers=1,
    )
    _, vectors = load_word2vec(tmp_path / "vectors.bin")
    assert not np.array_equal(W_in, initial_weights(V, d, cfg.seed, cfg.model.init_scale)[0])
    np.testing.assert_array_equal(vectors, W_in)


def test_chunks_cover_each_shard_once_with_equal_counts():
    from ns_plugins.app.datamodule import _Chunks

    rng = np.random.default_rng(0)
    offsets = np.concatenate(([0], np.cumsum(rng.integers(1, 40, size=500)))).astype(np.int64)
    for world in (1, 2, 3):
        parts = [_Chunks(offsets, 700, r, world) for r in range(world)]
        assert len({len(p) for p in parts}) == 1  # every rank runs the same steps
        covered = [s for p in parts for a, b in p.chunks for s in range(a, b)]
        assert covered == list(range(500))  # disjoint, in order, nothing left out
        sizes = [offsets[b] - offsets[a] for p in parts for a, b in p.chunks]
        assert max(sizes) < 700 * 1.3


def _signal_at(monkeypatch, call: int):
    """Raise SIGTERM inside the ``call``-th training step (1-based), as a user would."""
    real, calls = chunk_numba.train_chunk, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            signal.raise_signal(signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(chunk_numba, "train_chunk", step)


def test_interrupt_then_resume_matches_an_uninterrupted_run(tmp_path, cache, monkeypatch):
    # One worker: the engine is then deterministic, so resuming must give the same bits.
    args = ["+experiment=sgns", "epochs=2", "workers=1", f"data.cache_dir={cache / 'resume'}"]
    full = train(_cfg(*args), tmp_path / "full")
    stop_at = full["global_step"] // 2 + 1  # mid-way through the second epoch
    with monkeypatch.context() as m:
        _signal_at(m, stop_at)
        part = train(_cfg(*args), tmp_path / "part")
    assert part["interrupted"] and part["interrupt_signal"] == signal.SIGTERM
    assert part["global_step"] == stop_at
    ckpt = part["interrupt_checkpoint"]
    assert ckpt.endswith("interrupted.ckpt")
    # the scores written are those of the weights exported at the stop, not of epoch 1's
    _, v_part = load_word2vec(tmp_path / "part" / "vectors.bin")
    from ns_plugins.app.evaluation import RunEvaluator

    truth = json.loads((tmp_path / "part" / "ground_truth.json").read_text())
    words = [ln.split("\t")[0] for ln in (tmp_path / "part" / "vocab.tsv").read_text().splitlines()]
    rescored = RunEvaluator({}).evaluate(words, v_part, truth)
    assert part["eval"]["planted_purity"] == pytest.approx(rescored["planted_purity"])
    resumed = train(_cfg(*args, f"ckpt_path={ckpt}"), tmp_path / "resumed")
    assert resumed["global_step"] == full["global_step"] and not resumed["interrupted"]
    w_full, v_full = load_word2vec(tmp_path / "full" / "vectors.bin")
    w_res, v_res = load_word2vec(tmp_path / "resumed" / "vectors.bin")
    assert w_full == w_res
    np.testing.assert_array_equal(v_full, v_res)


def test_checkpoints_of_another_run_are_refused(tmp_path, cache, text_corpus):
    args = ["+experiment=sgns", "trainer.max_steps=1", f"data.cache_dir={cache / 'other'}"]
    train(_cfg(*args), tmp_path / "small")
    ckpt = tmp_path / "small" / "checkpoints" / "last.ckpt"
    with pytest.raises(UsageError, match=r"window=5 there, 3 here"):
        train(_cfg(*args, "window=3", f"ckpt_path={ckpt}"), tmp_path / "b")
    # same shape (vector_size and a corpus with as many words), another vocabulary
    other = [
        "+experiment=sgns_text",
        f"data.path={text_corpus}",
        "min_count=1",
        "vector_size=16",
        "model.init_scale=0.5",
        f"data.cache_dir={cache / 'text'}",
        f"ckpt_path={ckpt}",
    ]
    with pytest.raises(UsageError, match="another vocabulary"):
        train(_cfg(*other), tmp_path / "c")
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"PK not a zip")
    with pytest.raises(UsageError, match="garbage.ckpt"):
        train(_cfg(*args, f"ckpt_path={garbage}"), tmp_path / "d")


@pytest.fixture(scope="module")
def text_corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        for _ in range(300):
            f.write(" ".join(f"w{i}" for i in rng.integers(0, 40, 10)) + "\n")
    return path


def test_load_from_checkpoint(tmp_path, cache):
    from ns_plugins.app.engines.chunk import ChunkModule

    train(_cfg("+experiment=sgns", "trainer.max_steps=2", f"data.cache_dir={cache / 'load'}"),
          tmp_path)  # fmt: skip
    module = ChunkModule.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    _, vectors = load_word2vec(tmp_path / "vectors.bin")
    np.testing.assert_array_equal(module.vectors(), vectors)
    assert module.hparams.vector_size == 16 and len(module.counts) == len(vectors)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["batch_size=64"], "batch_size=64 is not read by the chunk engine"),
        (["backend=reference"], "backend.name=reference is not read by the chunk engine"),
        (["reduce=mean"], "reduce.mode=mean is not read"),
        (["model.optimizer=sparse_adam"], "model.optimizer=sparse_adam is not read"),
        (["data.num_workers=2"], "data.num_workers=2 is not read"),
        (["engine=batched", "workers=4"], "workers=4 is not read by the batched engine"),
        (["engine=batched", "model.chunk_words=10"], "model.chunk_words=10 is not read"),
        (["device.grad_sync=sparse"], "the chunk engine has no gradients"),
        (["model.copies_mib=64", "device=ddp_cpu", "devices=2"], "for one CPU process"),
        (["model.merge_every=0"], "model.merge_every >= 1"),
        (["workers=0"], "workers must be >= 1"),
        (["negative=0"], "negative must be >= 1"),
        (["seed=-1"], "seed must be >= 0"),
        (["ns_exponent=nan"], "ns_exponent must be a finite number"),
        (["data.max_vocab_size=0"], "data.max_vocab_size must be >= 2"),
        (["eval.k=0"], "eval.k must be >= 1"),
        (["device.average_every=0"], "average_every must be >= 1"),
        (["model.arch=cbow", "model.cbow_mean=false"], "averages CBOW contexts"),
    ],
)
def test_settings_that_cannot_train_fail_at_start(overrides, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        train(_cfg("+experiment=sgns", *overrides), tmp_path)
    assert not (tmp_path / "data").exists()  # nothing was prepared


def test_init_vectors_start_the_shared_words(tmp_path, cache):
    words = ["the", "of", "not-in-the-corpus"]
    rng = np.random.default_rng(3)
    saved_in = rng.standard_normal((3, 16)).astype(np.float32)
    saved_out = rng.standard_normal((3, 16)).astype(np.float32)
    init = tmp_path / "init.npz"
    np.savez(init, words=np.array(words), in_embed=saved_in, out_embed=saved_out)
    cfg = _cfg("+experiment=sgns", "trainer.max_steps=0", f"init_vectors={init}",
               f"data.cache_dir={cache / 'warm'}")  # fmt: skip
    train(cfg, tmp_path / "run")
    got_words, vectors = load_word2vec(tmp_path / "run" / "vectors.bin")
    for i, w in enumerate(words[:2]):
        np.testing.assert_array_equal(vectors[got_words.index(w)], saved_in[i])
    assert np.abs(vectors[[i for i, w in enumerate(got_words) if w not in words]]).max() < 0.5 / 16
    bad = tmp_path / "bad.npz"
    np.savez(bad, words=np.array(words), in_embed=saved_in[:, :4], out_embed=saved_out[:, :4])
    with pytest.raises(ConfigError, match="vector_size 16"):
        train(_cfg("+experiment=sgns", f"init_vectors={bad}"), tmp_path / "bad")


def test_a_failed_checkpoint_write_leaves_nothing_behind(tmp_path, monkeypatch):
    from ns_plugins.app.skeleton import StreamingCheckpointIO

    def full_disk(obj, f, *args, **kwargs):
        if hasattr(f, "write"):  # the writer hands torch a file it opened
            f.write(b"partial")
        else:
            with open(f, "wb") as out:
                out.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        StreamingCheckpointIO().save_checkpoint({"a": 1}, tmp_path / "ckpt" / "last.ckpt")
    assert list((tmp_path / "ckpt").iterdir()) == []


def test_training_without_lightning_names_the_extra(tmp_path, monkeypatch):
    import sys

    lightning_side = tuple(f"ns_plugins.app.{m}" for m in ("skeleton", "engines", "datamodule",
                                                          "callbacks"))  # fmt: skip
    for name in [m for m in sys.modules if m.startswith(lightning_side)]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)  # import raises ModuleNotFoundError
    with pytest.raises(UsageError, match=r"\.\[lightning\]"):
        train(_cfg("+experiment=sgns"), tmp_path)


def test_a_diverging_run_stops_at_once_naming_alpha(tmp_path, cache):
    """alpha far too large: the first step whose weights are no longer finite stops the run with
    one line naming alpha (a ZeroDivisionError inside the kernel before), and no vectors of NaN
    are exported."""
    from ns_plugins.engines.base import TrainingDiverged

    cfg = _cfg("+experiment=sgns", "alpha=50.0", "min_alpha=0.0", f"data.cache_dir={cache}")
    with pytest.raises(TrainingDiverged, match=r"alpha=50\.0 is too large") as err:
        train(cfg, tmp_path / "run")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "vectors.bin").exists()
