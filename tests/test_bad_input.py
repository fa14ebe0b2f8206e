"""Bad input, face by face: each case raises the error its face promises, with a message of one
line that names the problem (what the faces' own test files check in depth; this table keeps the
promise visible in one place)."""

import os

import numpy as np
import pytest


def _app_config(*overrides):
    from hydra import compose, initialize_config_dir

    from ns_plugins.app.config import config_dir

    with initialize_config_dir(str(config_dir()), version_base=None):
        return compose("train", overrides=["+experiment=sgns", *overrides])


def app_seed():
    from ns_plugins.app.checks import check_config

    check_config(_app_config("seed=-1"))


def app_unknown_key():
    from ns_plugins.app.checks import check_config

    check_config(_app_config("+trainer.max_epochs=1"))


def app_alpha_nan():
    from ns_plugins.app.checks import check_config

    check_config(_app_config("alpha=nan"))


def word2vec_size():
    from ns_plugins import Word2Vec

    Word2Vec(vector_size=0)


def word2vec_load(tmp_path):
    from ns_plugins import Word2Vec

    (tmp_path / "model").write_bytes(b"\x80\x04not a model")
    Word2Vec.load(tmp_path / "model")


def word2vec_diverges():
    from ns_plugins import Word2Vec

    Word2Vec([[f"w{(i + j) % 30}" for j in range(10)] for i in range(3000)], min_count=1,
             vector_size=16, sg=1, alpha=50.0, epochs=1)  # fmt: skip


def torch_face_label():
    torch = pytest.importorskip("torch")
    from ns_plugins.nn import negative_sampling

    negative_sampling(torch.randn(4, 3), torch.tensor([0, 1, 10, 2]), torch.randn(10, 3),
                      lambda s: torch.randint(0, 10, s), 2)  # fmt: skip


def torch_op_widths():
    torch = pytest.importorskip("torch")
    from ns_plugins.core.ops import ns_loss

    ns_loss(torch.randn(4, 3), torch.randn(10, 5), torch.zeros(4, 2, dtype=torch.long))


def chainer_widths():
    pytest.importorskip("ns_plugins.chainer", exc_type=ImportError)
    from ns_plugins.chainer import import_fixes

    import_fixes.apply()  # Chainer 7.8.1 on new setuptools and numpy
    from ns_plugins.chainer.functions import negative_sampling

    x = np.ones((6, 4), np.float32)
    W = np.ones((20, 8), np.float32)
    negative_sampling(x, np.zeros(6, np.int32), W, lambda s: np.zeros(s, np.int32), 2)


def keras_window():
    from ns_plugins.data.keras import skipgrams

    skipgrams([1, 2, 3], vocabulary_size=5, window_size=-1)


def word2vec_text_truncated(tmp_path):
    from ns_plugins.embeddings import load_word2vec

    (tmp_path / "v.txt").write_text("3 2\na 1 2\nb 3 4\n")
    load_word2vec(tmp_path / "v.txt")


def corpus_fifo(tmp_path):
    from ns_plugins.data.textfiles import corpus_files

    os.mkfifo(tmp_path / "fifo")
    corpus_files(tmp_path / "fifo")


def report_nothing(tmp_path, capsys):
    from ns_plugins.report.__main__ import main

    code = main([str(tmp_path)])
    err = capsys.readouterr().err.strip()
    if code:
        raise ValueError(err)


CASES = [
    ("app", app_seed, ValueError, r"seed must be >= 0"),
    ("app", app_unknown_key, ValueError, r"trainer\.max_epochs \(use epochs\)"),
    ("app", app_alpha_nan, ValueError, r"alpha must be a finite number"),
    ("Word2Vec", word2vec_size, ValueError, r"vector_size must be >= 1, got 0"),
    ("Word2Vec", word2vec_load, ValueError, r"not a model saved by Word2Vec\.save"),
    ("Word2Vec", word2vec_diverges, ValueError, r"diverged .* alpha=50\.0 is too large"),
    ("torch face", torch_face_label, IndexError, r"label 10, out of range \[-1, 10\)"),
    ("torch op", torch_op_widths, ValueError, r"x has 3 features but W has 5 columns"),
    ("Chainer face", chainer_widths, ValueError, r"x has 4 columns but W has 8"),
    ("Keras skipgrams", keras_window, ValueError, r"window_size must be >= 0, got -1"),
    ("word2vec files", word2vec_text_truncated, ValueError, r"header says 3 vectors"),
    ("corpus", corpus_fifo, ValueError, r"fifo"),
    ("report", report_nothing, ValueError, r"nothing to report in"),
]


@pytest.mark.parametrize(("face", "case", "error", "message"), CASES,
                         ids=[f"{c[0]}: {c[1].__name__}" for c in CASES])  # fmt: skip
def test_bad_input_is_one_line_naming_the_problem(face, case, error, message, request):
    needs = case.__code__.co_varnames[: case.__code__.co_argcount]
    args = [request.getfixturevalue(name) for name in needs]
    with pytest.raises(error, match=message) as info:
        case(*args)
    text = str(info.value).strip()
    assert text and "\n" not in text, f"{face}: not one line: {text!r}"
