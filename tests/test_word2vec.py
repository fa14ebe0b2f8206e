"""Word2Vec with gensim 4's interface: a tutorial-style script on the synthetic corpus (the same
function runs with gensim's class where gensim is installed), the corpus and argument checks, the
vocabulary rules, and what a library object must not do (import torch, write files)."""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from ns_plugins.data import synthetic_corpus
from ns_plugins.word2vec import CallbackAny2Vec, Word2Vec

SETTINGS = dict(vector_size=32, window=5, min_count=2, sg=1, negative=5, epochs=3, workers=2)


@pytest.fixture(scope="module")
def corpus():
    return synthetic_corpus(0, n_sentences=6000)


class EpochCounter(CallbackAny2Vec):
    def __init__(self):
        self.events = []

    def on_train_begin(self, model):
        self.events.append("begin")

    def on_epoch_end(self, model):
        # the model's vectors are the current ones while training runs
        self.events.append(float(np.abs(model.wv.vectors).sum()))

    def on_train_end(self, model):
        self.events.append("end")


def tutorial(Word2Vec, corpus, tmp_path, callbacks=()):  # noqa: N803 - a class, as in gensim
    """What gensim's tutorial does: train, query, save and load, continue on new sentences,
    evaluate. Only the class differs between the two libraries."""
    sentences = corpus.sentences
    model = Word2Vec(sentences=sentences, callbacks=list(callbacks), **SETTINGS)
    lemma = corpus.analogies[0][0]
    similar = model.wv.most_similar(positive=[lemma], topn=5)
    pair = model.wv.similarity(corpus.analogies[0][0], corpus.analogies[0][1])
    model.save(str(tmp_path / "model"))
    model = Word2Vec.load(str(tmp_path / "model"))
    before = model.wv[lemma].copy()
    more = [["newword", "another", *s[:4]] for s in sentences[:300]]
    model.build_vocab(more, update=True)
    model.train(more, total_examples=len(more), epochs=model.epochs)
    questions = tmp_path / "questions.txt"
    questions.write_text(
        ": planted\n" + "".join(" ".join(q) + "\n" for q in corpus.analogies[:400])
    )
    score, sections = model.wv.evaluate_word_analogies(str(questions))
    return {
        "model": model,
        "similar": similar,
        "pair": pair,
        "moved": float(np.abs(model.wv[lemma] - before).max()),
        "analogy": score,
        "sections": sections,
    }


def test_tutorial_on_synthetic_corpus(corpus, tmp_path, caplog):
    counter = EpochCounter()
    with caplog.at_level(logging.INFO, logger="ns_plugins.word2vec"):
        got = tutorial(Word2Vec, corpus, tmp_path, [counter])
    model = got["model"]
    # events from the first training: begin, one per epoch with changing weights, end
    assert counter.events[0] == "begin" and counter.events[-1] == "end"
    sums = counter.events[1:-1]
    assert len(sums) == SETTINGS["epochs"] and len(set(sums)) == len(sums)
    epochs_logged = [r for r in caplog.records if r.getMessage().startswith("EPOCH ")]
    assert len(epochs_logged) == 2 * SETTINGS["epochs"]  # two training calls
    assert "words/s" in epochs_logged[0].getMessage()
    assert len(got["similar"]) == 5 and all(-1 <= s <= 1 for _, s in got["similar"])
    assert "newword" in model.wv and model.wv.get_vecattr("newword", "count") == 300
    assert 0 < got["moved"] < 1  # continued from the saved weights, not from scratch
    assert corpus.neighbour_purity(model.wv.vectors, model.wv.index_to_key) >= 0.8
    assert got["analogy"] >= 0.15 and got["sections"][-1]["section"] == "Total accuracy"
    with pytest.raises(KeyError, match="'notaword'"):
        model.wv["notaword"]
    with pytest.raises(KeyError, match="'notaword'"):
        model.wv.most_similar("notaword")
    cluster = [w for w, c in corpus.clusters.items() if c == 0 and w in model.wv][:4]
    odd = next(w for w, c in corpus.clusters.items() if c == 1 and w in model.wv)
    assert model.wv.doesnt_match([*cluster, odd]) == odd

    gensim_models = pytest.importorskip("gensim.models")
    theirs = tutorial(gensim_models.Word2Vec, corpus, tmp_path)
    purity = corpus.neighbour_purity(theirs["model"].wv.vectors, theirs["model"].wv.index_to_key)
    assert purity >= 0.8 and abs(got["analogy"] - theirs["analogy"]) < 0.25


def test_import_is_light():
    code = (
        "import sys, ns_plugins\nfrom ns_plugins import Word2Vec\n"
        "print(sorted(m for m in ('torch', 'hydra', 'pytorch_lightning') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


class _Exhausted:
    """An iterable over an iterator used up earlier: every pass is empty."""

    def __init__(self):
        self.it = iter([["a", "b"]])
        list(self.it)

    def __iter__(self):
        return iter(list(self.it))


@pytest.mark.parametrize(
    ("corpus_arg", "error", "message"),
    [
        ((s for s in [["a", "b"]]), TypeError, "restartable"),
        (iter([["a", "b"]]), TypeError, "restartable"),
        ([], ValueError, "restartable"),
        (_Exhausted(), ValueError, "restartable"),
        ("a b c", TypeError, "not a string"),
        ([["a b", "c"]], ValueError, "'a b' is empty or holds whitespace"),
        ([["a", "", "c"]], ValueError, "'' is empty or holds whitespace"),
        (["a b c"], TypeError, "got a str"),
    ],
)
def test_bad_corpus(tmp_path, corpus_arg, error, message):
    with pytest.raises(error, match=message):
        Word2Vec(corpus_arg, min_count=1)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="hierarchical softmax"):
        Word2Vec(hs=1)
    with pytest.raises(ValueError, match="negative >= 1"):
        Word2Vec(negative=0)
    with pytest.raises(ValueError, match="device='tpu'"):
        Word2Vec(device="tpu")
    model = Word2Vec()
    with pytest.raises(RuntimeError, match="build vocabulary"):
        model.train([["a"]], total_examples=1, epochs=1)
    with pytest.raises(RuntimeError, match="online vocabulary-update"):
        model.build_vocab([["a"]], update=True)
    model.build_vocab([["a", "b"]] * 5)
    with pytest.raises(ValueError, match="total_examples or total_words"):
        model.train([["a"]], epochs=1)
    with pytest.raises(ValueError, match="explicit epochs"):
        model.train([["a"]], total_examples=1)
    with pytest.raises(TypeError, match="Both corpus_file and corpus_iterable"):
        model.build_vocab([["a"]], corpus_file="x")


def test_vocabulary_rules(tmp_path):
    sentences = [["the", "cat", "sat"], ["the", "Cat", "ran"], ["the", "cat"], ["a", "dog"]]
    model = Word2Vec(min_count=2, vector_size=8)
    model.build_vocab(sentences)
    # case is kept (str.split, as gensim reads), by descending count
    assert model.wv.index_to_key == ["the", "cat"]
    assert model.corpus_count == 4 and model.corpus_total_words == 10
    assert model.wv.vectors.shape == (2, 8) and model.syn1neg.shape == (2, 8)
    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text("".join(" ".join(s) + "\n" for s in sentences))
    capped = Word2Vec(min_count=1, max_final_vocab=3, vector_size=8)
    capped.build_vocab(corpus_file=corpus_file)
    assert capped.wv.index_to_key == ["the", "cat", "Cat"]  # ties by the word itself
    model.build_vocab([["dog", "dog", "cat"], ["emu"]], update=True)
    assert model.wv.index_to_key == ["the", "cat", "dog"]  # emu is below min_count
    assert [model.wv.get_vecattr(w, "count") for w in ("the", "cat", "dog")] == [3, 3, 2]
    assert model.wv.vectors.shape == (3, 8) and not model.syn1neg[2].any()


def test_tokenizer_names():
    from ns_plugins.data.reader import tokenizer_named

    assert tokenizer_named("words") == (None, True)
    assert tokenizer_named("split") == (str.split, False)
    with pytest.raises(ValueError, match="unknown tokenizer 'x'"):
        tokenizer_named("x")


def test_save_and_load_keep_everything(tmp_path):
    model = Word2Vec(min_count=1, vector_size=6, window=2, sg=1, seed=3)
    model.build_vocab([["a", "b", "c"], ["a", "b"]])
    model.syn1neg[:] = np.arange(18, dtype=np.float32).reshape(3, 6)
    model.save(tmp_path / "model")
    back = Word2Vec.load(tmp_path / "model")
    assert back.wv.index_to_key == ["a", "b", "c"]
    np.testing.assert_array_equal(back.wv.vectors, model.wv.vectors)
    np.testing.assert_array_equal(back.syn1neg, model.syn1neg)
    np.testing.assert_array_equal(back.wv.counts, [2, 2, 1])
    assert (back.window, back.sg, back.seed, back.corpus_count) == (2, 1, 3, 2)
    np.savez(tmp_path / "other.npz", words=np.array(["a"]))
    with pytest.raises(ValueError, match="not a model saved by Word2Vec.save"):
        Word2Vec.load(tmp_path / "other.npz")


def test_corpus_file_keeps_case(corpus, tmp_path):
    """A corpus file is read as gensim reads it: split on whitespace, case kept."""
    import gzip

    path = tmp_path / "corpus.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i, s in enumerate(corpus.sentences[:2000]):
            f.write(" ".join(s) + (" Zebra," if i % 2 else " zebra") + "\n")
    model = Word2Vec(corpus_file=path, vector_size=16, min_count=5, sg=1, epochs=1)
    assert model.wv.get_vecattr("Zebra,", "count") == 1000
    assert model.wv.get_vecattr("zebra", "count") == 1000
    assert not np.allclose(model.wv["Zebra,"], model.wv["zebra"])


def test_corpus_file_trains_what_its_sentences_train(tmp_path):
    """A corpus file is counted and looked up by the compiled word table (ASCII blocks) and by
    Python (other blocks): words met both ways, long lines and an update give what the same
    sentences in memory give, down to the trained weights of one worker."""
    from ns_plugins.data import sentences as sentences_mod
    from ns_plugins.data.sentences import SentenceCorpus
    from ns_plugins.data.vocab import Vocab
    from ns_plugins.engines.chunk import chunk_bounds

    rng = np.random.default_rng(7)
    words = [f"w{i}" for i in range(60)]
    lines = []
    for i in range(900):
        n = int(rng.integers(1, 30)) if i != 5 else 25_000  # one line cut into three sentences
        lines.append([words[j] for j in rng.zipf(1.3, n) % len(words)])
        if i == 5:  # words seen once, dropped after the cut: its sentences are shorter
            lines[-1][::7] = [f"once{k}" for k in range(0, n, 7)]
        if i % 150 == 149:  # a few blocks that are not ASCII; the others go to the table
            lines[-1] += ["café", "naïve", "Ünï", "w1"] * 2
    path = tmp_path / "corpus.txt"
    path.write_text("".join(" ".join(s) + "\n" for s in lines), encoding="utf-8")
    # steps of 700 words: a streamed file is cut across its blocks and inside the long line
    settings = dict(vector_size=8, window=3, min_count=3, sg=1, epochs=1, workers=1, seed=5,
                    chunk_words=700)  # fmt: skip
    from_file, in_memory = Word2Vec(**settings), Word2Vec(**settings)
    old = sentences_mod.BLOCK_BYTES
    sentences_mod.BLOCK_BYTES = 4096  # many blocks, some ASCII only, some not
    try:
        from_file.build_vocab(corpus_file=path)
        in_memory.build_vocab(lines)
        assert from_file.wv.index_to_key == in_memory.wv.index_to_key
        assert "café" in from_file.wv and "w0" in from_file.wv
        np.testing.assert_array_equal(from_file.wv.counts, in_memory.wv.counts)
        assert (from_file.corpus_count, from_file.corpus_total_words) == (
            in_memory.corpus_count,
            in_memory.corpus_total_words,
        )
        # the ids trained: lines cut at 10,000 words, then unknown words dropped (gensim's rule)
        index = from_file.wv.key_to_index
        want = [[index[w] for w in line[i : i + 10_000] if w in index]
                for line in lines for i in range(0, len(line), 10_000)]  # fmt: skip
        want = [s for s in want if s]
        corpus = SentenceCorpus(None, path, 1)
        vocab = Vocab(from_file.wv.index_to_key, from_file.wv.counts)
        ids, offsets, raw = corpus.encode(vocab)
        assert raw == sum(map(len, lines)) and len(offsets) == len(want) + 1
        assert [ids[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])] == want
        # streamed, the file gives the steps that cutting the whole encoded corpus gives
        bounds = chunk_bounds(offsets, 700)
        steps = [(i.copy(), o.copy(), at) for i, o, at in corpus.chunks(vocab, 700)]
        assert len(steps) == len(bounds) - 1 > 20 and corpus.words_read == raw
        for (step_ids, step_offsets, at), a, b in zip(steps, bounds[:-1], bounds[1:]):
            assert at == offsets[a]
            np.testing.assert_array_equal(step_offsets + at, offsets[a : b + 1])
            np.testing.assert_array_equal(step_ids, ids[at : offsets[b]])
        from_file.train(corpus_file=path, total_words=from_file.corpus_total_words, epochs=1)
        in_memory.train(lines, total_examples=len(lines), epochs=1)
        np.testing.assert_array_equal(from_file.wv.vectors, in_memory.wv.vectors)
        more = tmp_path / "more.txt"
        more.write_text("zz zz zz w1 Ünï\n", encoding="utf-8")
        from_file.build_vocab(corpus_file=more, update=True)
        in_memory.build_vocab([["zz", "zz", "zz", "w1", "Ünï"]], update=True)
        assert from_file.wv.index_to_key == in_memory.wv.index_to_key
        assert from_file.wv.index_to_key[-1] == "zz"
        np.testing.assert_array_equal(from_file.wv.counts, in_memory.wv.counts)
    finally:
        sentences_mod.BLOCK_BYTES = old


def test_a_corpus_file_that_changes_while_training_is_refused(tmp_path):
    """A corpus file is read again every epoch; one that grows between epochs would leave the
    learning rate's schedule, so the epoch is refused in a line that says why."""
    path = tmp_path / "corpus.txt"
    path.write_text("a b c d e f\n" * 2000)

    class Grow(CallbackAny2Vec):
        def on_epoch_end(self, model):
            with open(path, "a") as f:
                f.write("a b c d e f\n" * 2000)

    model = Word2Vec(vector_size=8, min_count=1, epochs=2, chunk_words=1000, callbacks=[Grow()])
    model.build_vocab(corpus_file=path)
    with pytest.raises(RuntimeError, match="the corpus changed during training: epoch 1"):
        model.train(corpus_file=path, total_examples=model.corpus_count, epochs=2)


def test_cbow_is_the_default(corpus, tmp_path):
    """gensim's default architecture, CBOW with averaged contexts, learns the planted clusters."""
    model = Word2Vec(corpus.sentences, vector_size=32, min_count=2, epochs=3)
    assert (model.sg, model.cbow_mean) == (0, 1)
    assert corpus.neighbour_purity(model.wv.vectors, model.wv.index_to_key) >= 0.8


LIBRARY_RUN = """
import logging, os, sys
from ns_plugins import Word2Vec
sentences = [[f"w{(i * 7 + j) % 50}" for j in range(12)] for i in range(3000)]
model = Word2Vec(sentences, vector_size=16, min_count=1, sg=1, epochs=2, workers=2)
model.train(sentences, total_examples=len(sentences), epochs=1)
print(len(model.wv), sorted(m for m in ("torch", "pytorch_lightning", "hydra") if m in sys.modules))
"""


def test_a_cpu_model_is_a_quiet_library_object(tmp_path):
    """Training on the CPU imports no torch, Lightning or Hydra, prints nothing and writes no
    file (the working directory and the temporary directory stay as they were)."""
    work, scratch = tmp_path / "cwd", tmp_path / "tmp"
    work.mkdir()
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    proc = subprocess.run([sys.executable, "-c", LIBRARY_RUN], capture_output=True, text=True,
                          cwd=work, env=env, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "50 []"
    assert proc.stderr == ""
    assert list(work.iterdir()) == [] and list(scratch.iterdir()) == []


def test_progress_goes_to_the_logger_as_gensim_logs_it(caplog):
    sentences = [[f"w{(i * 3 + j) % 40}" for j in range(10)] for i in range(2000)]
    with caplog.at_level(logging.INFO, logger="ns_plugins.word2vec"):
        model = Word2Vec(sentences, vector_size=8, min_count=1, sg=1, epochs=2, chunk_words=500)
        trained, raw = model.train(sentences, total_examples=len(sentences), epochs=2,
                                   report_delay=0.0)  # fmt: skip
    lines = [r.getMessage() for r in caplog.records]
    # gensim numbers epochs from 0 and reports raw and effective (subsampled) words
    assert any(m.startswith("EPOCH 0 - PROGRESS: at ") for m in lines)
    ends = [m for m in lines if m.startswith("EPOCH 1: training on 20000 raw words")]
    assert len(ends) == 2 and all("effective words/s" in m for m in ends)
    assert raw == 2 * 20000 and 0 < trained <= raw


def test_the_step_is_the_chunk_engines():
    """One worker: the model's weights are those of ChunkTrainer stepping the same encoded corpus
    with the same schedule, bit for bit (one implementation of the step)."""
    from ns_plugins.data.encoded import EncodedCorpus
    from ns_plugins.data.vocab import Vocab
    from ns_plugins.engines.chunk import ChunkSettings, ChunkTrainer, chunk_bounds

    rng = np.random.default_rng(4)
    sentences = [[f"w{int(v)}" for v in rng.zipf(1.5, 15) % 60] for _ in range(800)]
    model = Word2Vec(vector_size=12, min_count=1, sg=1, workers=1, epochs=2, chunk_words=700)
    model.build_vocab(sentences)
    start = model.wv.vectors.copy()
    model.train(sentences, total_examples=len(sentences), epochs=2)

    vocab = Vocab(model.wv.index_to_key, model.wv.counts)
    corpus = EncodedCorpus.from_sentences(sentences, vocab)
    settings = ChunkSettings(vector_size=12, cbow=False, workers=1, seed=1, alpha=0.025,
                             min_alpha=0.0001)  # fmt: skip
    engine = ChunkTrainer(vocab.counts, settings, (start, np.zeros_like(start)))
    bounds = chunk_bounds(corpus.offsets, 700)
    n = len(bounds) - 1
    for epoch in range(2):
        for c in range(n):
            part = corpus.offsets[bounds[c] : bounds[c + 1] + 1]
            engine.step(corpus.ids, part, epoch * n + c, 2 * n)
    np.testing.assert_array_equal(engine.W_in, model.wv.vectors)
    np.testing.assert_array_equal(engine.W_out, model.syn1neg)


def test_divergence_is_one_error_naming_alpha():
    from ns_plugins.engines.base import TrainingDiverged

    sentences = [[f"w{(i + j) % 30}" for j in range(10)] for i in range(3000)]
    with pytest.raises(TrainingDiverged, match=r"alpha=50\.0 is too large"):
        Word2Vec(sentences, vector_size=16, min_count=1, sg=1, alpha=50.0, epochs=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(vector_size=0), "vector_size must be >= 1"),
        (dict(seed=-1), r"seed must be in \[0, 2\*\*32\)"),
        (dict(window=0), "window must be >= 1"),
        (dict(workers=0), "workers must be >= 1"),
        (dict(alpha=float("nan")), "alpha must be a finite number"),
        (dict(sg=0, cbow_mean=0), "cbow_mean=0"),
        (dict(devices=2), "devices=2: Word2Vec trains in this process"),
        (dict(max_final_vocab=0), "max_final_vocab must be >= 1"),
    ],
)
def test_bad_settings_are_one_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Word2Vec(**kwargs)


def test_load_refuses_what_save_did_not_write(tmp_path):
    model = Word2Vec(min_count=1, vector_size=4)
    model.build_vocab([["a", "b"], ["a"]])
    model.save(tmp_path / "m.npz")
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    for bad in ("cut.npz", "missing.npz"):
        with pytest.raises(ValueError, match="not a model saved by Word2Vec.save"):
            Word2Vec.load(tmp_path / bad)


@pytest.mark.slow
def test_the_kernel_compiles_once_and_says_so(tmp_path):
    """The first run with an empty numba cache compiles the kernel and logs it once; the next run
    loads it from that cache (here a cache directory outside the package, as numba uses when the
    package directory is not writable)."""
    code = (
        "import logging; logging.basicConfig(level=logging.INFO)\n"
        "from ns_plugins import Word2Vec\n"
        "s = [['a', 'b', 'c', 'd']] * 200\n"
        "Word2Vec(s, min_count=1, vector_size=4, epochs=2, workers=1)\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    runs = [
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
        )  # fmt: skip
        for _ in range(2)
    ]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr
    assert runs[0].stderr.count("compiled the training kernel") == 1
    assert "compiled the training kernel" not in runs[1].stderr
    assert any((tmp_path / "numba").rglob("*.nbi"))
