"""Training runs on the hogwild engine (no torch, no Lightning): outputs, resume, bad input."""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from ns_plugins.config import config_dir
from ns_plugins.export import load_word2vec
from ns_plugins.kernels import hogwild
from ns_plugins.runs import ConfigError, train

TINY = [
    "data.synthetic_sentences=600",
    "vector_size=16",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "eval.queries=[the,of]",
    "eval.k=3",
    "model.engine=hogwild",
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
    assert metrics["engine"] == "hogwild" and metrics["epochs_completed"] == 2
    with np.load(tmp_path / "checkpoints" / "last.npz") as ckpt:
        assert int(ckpt["global_step"]) == metrics["global_step"]
        assert np.count_nonzero(ckpt["out_embed"]) > 0  # trained in place, checkpoint saw it
        words, vectors = load_word2vec(tmp_path / "vectors.bin")
        np.testing.assert_array_equal(vectors, ckpt["in_embed"])
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


def _signal_at(monkeypatch, call: int, before=lambda: None):
    """Raise SIGTERM inside the ``call``-th training step (1-based), as a user would, after
    calling ``before``."""
    real, calls = hogwild.train_chunk, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            before()
            signal.raise_signal(signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(hogwild, "train_chunk", step)


def test_interrupt_then_resume_matches_an_uninterrupted_run(tmp_path, cache, monkeypatch):
    # One worker: the engine is then deterministic, so resuming must give the same bits.
    args = ["+experiment=sgns", "epochs=2", "workers=1", f"data.cache_dir={cache / 'resume'}"]
    full = train(_cfg(*args), tmp_path / "full")
    stop_at = full["global_step"] // 2 + 1  # mid-way through the second epoch
    last_steps = []

    def read_last():  # the checkpoint written at the end of the first epoch
        with np.load(tmp_path / "part" / "checkpoints" / "last.npz") as last:
            last_steps.append(int(last["global_step"]))

    with monkeypatch.context() as m:
        _signal_at(m, stop_at, before=read_last)
        part = train(_cfg(*args), tmp_path / "part")
    assert last_steps == [full["global_step"] // 2]
    assert part["interrupted"] and part["interrupt_signal"] == signal.SIGTERM
    assert part["global_step"] == stop_at
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers were put back
    ckpt = part["interrupt_checkpoint"]
    assert ckpt.endswith("interrupted.npz")
    resumed = train(_cfg(*args, f"ckpt_path={ckpt}"), tmp_path / "resumed")
    assert resumed["global_step"] == full["global_step"] and not resumed["interrupted"]
    w_full, v_full = load_word2vec(tmp_path / "full" / "vectors.bin")
    w_res, v_res = load_word2vec(tmp_path / "resumed" / "vectors.bin")
    assert w_full == w_res
    np.testing.assert_array_equal(v_full, v_res)
    # the resumed run's curves continue the interrupted one's
    steps = [
        int(line.split(",")[1])
        for line in (tmp_path / "resumed" / "csv" / "metrics.csv").read_text().splitlines()[1:]
    ]
    assert steps[0] == 1 and steps[-1] == full["global_step"]


def test_checkpoints_from_elsewhere_are_refused(tmp_path, cache):
    lightning_ckpt = tmp_path / "last.ckpt"
    lightning_ckpt.write_bytes(b"not ours")
    with pytest.raises(ConfigError, match="own checkpoints"):
        train(_cfg("+experiment=sgns", f"ckpt_path={lightning_ckpt}"), tmp_path / "a")
    args = ["+experiment=sgns", "trainer.max_steps=1", f"data.cache_dir={cache / 'other'}"]
    train(_cfg(*args), tmp_path / "small")
    ckpt = tmp_path / "small" / "checkpoints" / "last.npz"
    with pytest.raises(ConfigError, match="vector_size 24"):
        train(_cfg(*args, "vector_size=24", f"ckpt_path={ckpt}"), tmp_path / "b")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK not a zip")
    with pytest.raises(ConfigError, match="not a hogwild checkpoint"):
        train(_cfg(*args, f"ckpt_path={garbage}"), tmp_path / "c")


def test_a_hogwild_run_never_imports_torch(tmp_path):
    code = f"""
import sys
from hydra import compose, initialize_config_dir
from ns_plugins.config import config_dir
from ns_plugins.runs import train
with initialize_config_dir(str(config_dir()), version_base="1.3"):
    cfg = compose("train", overrides={[*TINY, "+experiment=sgns", "trainer.max_steps=2"]!r})
metrics = train(cfg, {str(tmp_path)!r})
assert metrics["global_step"] == 2, metrics
heavy = sorted(m for m in ("torch", "pytorch_lightning", "lightning") if m in sys.modules)
assert not heavy, heavy
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "vectors.txt").is_file()


@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_initial_vectors_follow_init_scale(scale, tmp_path, cache):
    cfg = _cfg("+experiment=sgns", "trainer.max_steps=0", f"model.init_scale={scale}",
               f"data.cache_dir={cache / 'init'}")  # fmt: skip
    assert train(cfg, tmp_path)["global_step"] == 0
    _, vectors = load_word2vec(tmp_path / "vectors.bin")
    bound = scale / 16
    assert np.abs(vectors).max() < bound and np.abs(vectors).max() > 0.95 * bound
    assert abs(vectors.mean()) < 0.05 * bound  # centred


def test_report_reads_a_hogwild_checkpoint(tmp_path, cache):
    from ns_plugins.report import load_run

    cfg = _cfg("+experiment=sgns", "trainer.max_steps=2", f"data.cache_dir={cache / 'report'}")
    train(cfg, tmp_path)
    ckpt = tmp_path / "checkpoints" / "last.npz"
    run = load_run(ckpt)
    assert run.vectors_from == ckpt
    with np.load(ckpt) as saved:
        np.testing.assert_array_equal(run.vectors, saved["in_embed"])
    words, _ = load_word2vec(tmp_path / "vectors.txt")
    assert run.words == words and "train/loss" in run.curves
