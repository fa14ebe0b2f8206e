"""Word2Vec with gensim 4's interface: a tutorial-style script on the synthetic corpus (the same
function runs with gensim's class where gensim is installed), the corpus and argument checks, the
vocabulary rules and the run config it composes."""

import logging
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
        Word2Vec(corpus_arg, min_count=1, work_dir=tmp_path)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="hierarchical softmax"):
        Word2Vec(hs=1)
    with pytest.raises(ValueError, match="negative >= 1"):
        Word2Vec(negative=0)
    with pytest.raises(ValueError, match="device='tpu'"):
        Word2Vec(device="tpu")
    model = Word2Vec(work_dir=tmp_path)
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
    model = Word2Vec(min_count=2, vector_size=8, work_dir=tmp_path)
    model.build_vocab(sentences)
    # case is kept (str.split, as gensim reads), by descending count
    assert model.wv.index_to_key == ["the", "cat"]
    assert model.corpus_count == 4 and model.corpus_total_words == 10
    assert model.wv.vectors.shape == (2, 8) and model.syn1neg.shape == (2, 8)
    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text("".join(" ".join(s) + "\n" for s in sentences))
    capped = Word2Vec(min_count=1, max_final_vocab=3, vector_size=8, work_dir=tmp_path / "c")
    capped.build_vocab(corpus_file=corpus_file)
    assert capped.wv.index_to_key == ["the", "cat", "Cat"]  # ties by the word itself
    model.build_vocab([["dog", "dog", "cat"], ["emu"]], update=True)
    assert model.wv.index_to_key == ["the", "cat", "dog"]  # emu is below min_count
    assert [model.wv.get_vecattr(w, "count") for w in ("the", "cat", "dog")] == [3, 3, 2]
    assert model.wv.vectors.shape == (3, 8) and not model.syn1neg[2].any()


def test_config_composed_from_the_app(tmp_path):
    model = Word2Vec(sg=0, cbow_mean=1, sample=1e-5, window=3, epochs=7, workers=1, seed=5,
                     devices=2, overrides=["trainer.log_every_n_steps=5"])  # fmt: skip
    cfg = model.config(tmp_path / "it's.txt", tmp_path / "v.tsv", tmp_path / "w.npz", epochs=2)
    assert cfg.data.path == str(tmp_path / "it's.txt")
    assert cfg.data.vocab_file == str(tmp_path / "v.tsv")
    assert cfg.init_vectors == str(tmp_path / "w.npz")
    assert cfg.data.tokenizer.value == "split" and cfg.model.arch.value == "cbow"
    assert (cfg.sample, cfg.window, cfg.epochs, cfg.workers, cfg.seed) == (1e-5, 3, 2, 1, 5)
    assert cfg.device.accelerator == "cpu" and cfg.device.strategy == "ddp" and cfg.devices == 2
    assert cfg.trainer.log_every_n_steps == 5
    gpu = Word2Vec(sg=1, device="gpu").config("c.txt", "v.tsv")
    assert gpu.device.accelerator == "gpu" and gpu.model.arch.value == "skipgram"
    assert gpu.init_vectors is None and gpu.model.init_scale == 1.0
    ddp = Word2Vec(device="gpu", devices=4).config("c.txt", "v.tsv")
    assert ddp.device.strategy == "ddp" and ddp.device.accelerator == "gpu" and ddp.devices == 4
    # inside another Hydra app: composed from our configs, and the app's state is given back
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    (tmp_path / "app.yaml").write_text("name: app\n")
    with initialize_config_dir(str(tmp_path), version_base=None):
        assert Word2Vec(window=9).config("c.txt", "v.tsv").window == 9
        assert compose("app").name == "app"
    assert not GlobalHydra.instance().is_initialized()


def test_tokenizer_names():
    from ns_plugins.data.reader import tokenizer_named

    assert tokenizer_named("words") == (None, True)
    assert tokenizer_named("split") == (str.split, False)
    with pytest.raises(ValueError, match="unknown tokenizer 'x'"):
        tokenizer_named("x")


def test_save_and_load_keep_everything(tmp_path):
    model = Word2Vec(min_count=1, vector_size=6, window=2, sg=1, seed=3, work_dir=tmp_path / "w")
    model.build_vocab([["a", "b", "c"], ["a", "b"]])
    model.syn1neg[:] = np.arange(18, dtype=np.float32).reshape(3, 6)
    model.save(tmp_path / "model")
    back = Word2Vec.load(tmp_path / "model", work_dir=tmp_path / "w2")
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
    model = Word2Vec(corpus_file=path, vector_size=16, min_count=5, sg=1, epochs=1,
                     work_dir=tmp_path / "w")  # fmt: skip
    assert model.wv.get_vecattr("Zebra,", "count") == 1000
    assert model.wv.get_vecattr("zebra", "count") == 1000
    assert model.metrics["epochs_completed"] == 1 and model.run_dir.is_dir()
    assert not np.allclose(model.wv["Zebra,"], model.wv["zebra"])


def test_cbow_is_the_default(corpus, tmp_path):
    """gensim's default architecture, CBOW with averaged contexts, learns the planted clusters."""
    model = Word2Vec(corpus.sentences, vector_size=32, min_count=2, epochs=3, work_dir=tmp_path)
    assert model.metrics["config"]["model"]["arch"] == "cbow"
    assert model.metrics["config"]["model"]["cbow_mean"] is True
    assert corpus.neighbour_purity(model.wv.vectors, model.wv.index_to_key) >= 0.8
