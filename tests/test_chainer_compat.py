"""The legacy word2vec program in compat/, end to end, on plain Chainer and under the runner."""

import json
import os
import subprocess
import sys
from pathlib import Path

import chainer_setup  # noqa: F401  (skips without Chainer, applies the import fixes)
import numpy as np
import pytest

# isort: split
import chainer  # noqa: F401  (loaded here, so the chainer marker finds it working)

pytestmark = [pytest.mark.chainer, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = ROOT / "compat" / "train_word2vec.py"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Zipf-distributed words with some co-occurrence structure."""
    rng = np.random.default_rng(0)
    vocab = np.array([f"w{i}" for i in range(120)])
    p = 1.0 / np.arange(1, 121)
    ids = rng.choice(120, 6000, p=p / p.sum())
    ids[1::2] = (ids[::2] + 1) % 120  # each word tends to be followed by its successor
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(" ".join(vocab[ids]))
    return path


# Plain Chainer: Chainer's own objects, with only the import fixes it needs on numpy 2.
PLAIN = (
    "import runpy, sys; from ns_plugins.chainer import import_fixes; import_fixes.apply(); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def _train(corpus, out, runner_args=None, model="skipgram", extra=()):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NS_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONWARNINGS"] = "ignore"
    env["OMP_NUM_THREADS"] = "1"  # tiny problems; spare a shared CI box thread contention
    if runner_args is None:
        env["SETUPTOOLS_USE_DISTUTILS"] = "stdlib"  # what plain Chainer needs here
        cmd = [sys.executable, "-c", PLAIN, str(PROGRAM)]
    else:
        env.pop("SETUPTOOLS_USE_DISTUTILS", None)  # the runner must not need it
        cmd = [sys.executable, "-m", "ns_plugins.chainer", *runner_args, str(PROGRAM)]
    args = ["--corpus", str(corpus), "--out", str(out), "--model", model, "--unit", "16"]
    args += ["--batchsize", "100", "--epoch", "1", "--log-interval", "5", "--min-count", "1"]
    args += [*extra, "--quiet"]
    proc = subprocess.run(cmd + args, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = json.loads((out / "log").read_text())
    return np.array([e["main/loss"] for e in log]), _read_vectors(out / "word2vec.model")


def _read_vectors(path):
    lines = path.read_text().splitlines()
    n, d = map(int, lines[0].split())
    assert len(lines) == n + 1
    words = [line.split()[0] for line in lines[1:]]
    vectors = np.array([[float(v) for v in line.split()[1:]] for line in lines[1:]])
    assert vectors.shape == (n, d) and len(set(words)) == n
    return dict(zip(words, vectors))


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.fixture(scope="module")
def plain_skipgram(corpus, tmp_path_factory):
    return _train(corpus, tmp_path_factory.mktemp("plain"))


@pytest.mark.parametrize("model", ["skipgram", "cbow"])
def test_same_losses_and_vectors_with_chainers_sampler(corpus, tmp_path, model, plain_skipgram):
    """Same seed, same sampler (Chainer's): only the loss kernel differs."""
    if model == "skipgram":
        plain_loss, plain_vec = plain_skipgram
    else:
        plain_loss, plain_vec = _train(corpus, tmp_path / "plain", model=model)
    ours_loss, ours_vec = _train(corpus, tmp_path / "ours", ["--parts", "loss"], model=model)
    assert len(plain_loss) >= 10
    assert _rel(ours_loss, plain_loss) < 1e-5
    assert plain_vec.keys() == ours_vec.keys()
    for word in plain_vec:
        np.testing.assert_allclose(ours_vec[word], plain_vec[word], atol=1e-4)


def test_full_install_trains_like_chainer(corpus, tmp_path, plain_skipgram):
    """All drop-ins, our sampler too: other negatives than plain Chainer's, so the losses agree
    up to sampling noise."""
    losses, vectors = _train(corpus, tmp_path / "ours", [])
    plain_loss, plain_vec = plain_skipgram
    assert np.isfinite(losses).all() and len(losses) == len(plain_loss)
    assert abs(losses.mean() / plain_loss.mean() - 1) < 0.15
    assert vectors.keys() == plain_vec.keys()
    assert all(np.isfinite(v).all() for v in vectors.values())


def test_plain_snapshot_resumes_under_the_runner(corpus, tmp_path):
    """A Trainer snapshot (model, Adam state, iterator, log) written on plain Chainer resumes
    under the runner; with Chainer's sampler kept, the resumed epoch is a plain resume's."""
    first_loss, _ = _train(corpus, tmp_path / "first", extra=["--snapshot"])
    (snapshot,) = (tmp_path / "first").glob("snapshot_iter_*")
    resume = ["--epoch", "2", "--resume", str(snapshot)]
    plain_loss, plain_vec = _train(corpus, tmp_path / "plain", extra=resume)
    ours_loss, ours_vec = _train(corpus, tmp_path / "ours", ["--parts", "loss"], extra=resume)
    full_loss, full_vec = _train(corpus, tmp_path / "full", [], extra=resume)
    n = len(first_loss)
    assert len(plain_loss) > n and len(ours_loss) == len(full_loss) == len(plain_loss)
    for losses in (plain_loss, ours_loss, full_loss):
        np.testing.assert_array_equal(losses[:n], first_loss)  # the log came from the snapshot
    assert _rel(ours_loss[n:], plain_loss[n:]) < 1e-5
    for word in plain_vec:
        np.testing.assert_allclose(ours_vec[word], plain_vec[word], atol=1e-4)
    assert np.isfinite(full_loss).all()
    assert abs(full_loss[n:].mean() / plain_loss[n:].mean() - 1) < 0.15


@pytest.mark.gpu
def test_legacy_program_on_the_gpu(corpus, tmp_path, plain_skipgram):
    """The unchanged program with --gpu 0 under the runner (CuPy 13/14): EmbedID, the loss,
    Adam, the Trainer and to_gpu on the device; the losses agree with a CPU run up to sampling."""
    losses, vectors = _train(corpus, tmp_path / "gpu", [], extra=["--gpu", "0"])
    plain_loss, plain_vec = plain_skipgram
    assert np.isfinite(losses).all() and len(losses) == len(plain_loss)
    assert abs(losses.mean() / plain_loss.mean() - 1) < 0.15
    assert vectors.keys() == plain_vec.keys()
    assert all(np.isfinite(v).all() for v in vectors.values())
