"""A run's directory, resume, start checks and failures: what a run does when something goes wrong.

Small runs on the synthetic corpus (600 sentences, a few steps an epoch), in this process where
that is enough and as ``python train.py`` where the exit status and the console matter.
"""

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from ns_plugins.config import config_dir
from ns_plugins.runs import ConfigError, train

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "+experiment=sgns",
    "data.synthetic_sentences=600",
    "vector_size=16",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "eval.queries=[the,of]",
    "eval.k=3",
]
CHUNK = ["model.engine=chunk", "model.chunk_words=1500", "workers=1"]
PAIRS = ["model.engine=batched", "batch_size=256"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), SETUPTOOLS_USE_DISTUTILS="stdlib")


def _cfg(*overrides):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=[*TINY, *overrides])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _train_py(*args, timeout=240):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def _csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


class _SignalAt(pl.Callback):
    """Sends this process a real signal after step ``at``."""

    def __init__(self, at, sig=signal.SIGTERM):
        self.at, self.sig = at, sig

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.at:
            signal.raise_signal(self.sig)


# ------------------------------------------------------------------------ one run per directory
_HOLD = """
import sys
from ns_plugins.runs import claim_run_dir
claim_run_dir(sys.argv[1])
print("held", flush=True)
sys.stdin.read()
"""


def test_a_run_directory_in_use_is_refused_naming_the_other_run(tmp_path, cache):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run_dir)], env=ENV,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            ConfigError, match=f"{run_dir} is in use by another run \\(pid {holder.pid}\\)"
        ):
            train(_cfg(*CHUNK, f"data.cache_dir={cache}"), run_dir)
        proc = _train_py(*TINY, f"hydra.run.dir={run_dir}", timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines() == [
            f"ns-train: error: the run directory {run_dir} is in use by another run "
            f"(pid {holder.pid}); choose another hydra.run.dir"
        ]
        assert not (run_dir / ".hydra").exists()  # refused before Hydra wrote into it
    finally:
        holder.communicate("", timeout=30)
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "data").exists()


def test_a_finished_run_directory_takes_only_its_own_resume(tmp_path, cache):
    """A second run into a finished run's directory is refused; resuming from a checkpoint inside
    it continues there: one last.ckpt, overwritten, and the curves of both parts in metrics.csv."""
    run_dir = tmp_path / "run"
    args = [*CHUNK, f"data.cache_dir={cache}"]
    first = train(_cfg(*args, "epochs=1"), run_dir)
    with pytest.raises(ConfigError, match=f"{run_dir} holds a finished run; choose another"):
        train(_cfg(*args, "epochs=1"), run_dir)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    more = train(_cfg(*args, "epochs=2", f"ckpt_path={ckpt}"), run_dir)
    assert more["global_step"] == 2 * first["global_step"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    assert torch.load(ckpt, weights_only=True)["global_step"] == more["global_step"]
    steps = [int(r["step"]) for r in _csv_rows(run_dir) if r["train/loss"]]
    assert steps == list(range(more["global_step"]))


def test_resuming_an_interrupted_run_in_its_directory_continues_its_files(tmp_path, cache):
    run_dir = tmp_path / "run"
    args = [*PAIRS, "epochs=2", f"data.cache_dir={cache}"]
    part = train(_cfg(*args), run_dir, extra_callbacks=[_SignalAt(3)])
    assert part["interrupted"] and part["global_step"] == 3
    with pytest.raises(
        ConfigError, match="holds an interrupted run; .*ckpt_path=.*interrupted.ckpt"
    ):
        train(_cfg(*args), run_dir)
    resumed = train(_cfg(*args, f"ckpt_path={part['interrupt_checkpoint']}"), run_dir)
    assert not resumed["interrupted"]
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["interrupted.ckpt", "last.ckpt"]  # no last-v1.ckpt beside a stale last.ckpt
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == resumed["global_step"]
    steps = [int(r["step"]) for r in _csv_rows(run_dir) if r["train/loss"]]
    assert steps == list(range(resumed["global_step"]))  # the earlier rows kept, none twice


def test_a_run_directory_with_checkpoints_of_an_unfinished_run_is_refused(tmp_path, cache):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"a run killed before it finished")
    with pytest.raises(ConfigError, match="did not finish; .*ckpt_path=.*last.ckpt"):
        train(_cfg(*CHUNK, f"data.cache_dir={cache}"), run_dir)
