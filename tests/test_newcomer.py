"""What a newcomer meets in a first hour with the app: settings refused at start with one line,
a quiet console, the training curves logged at every run size, one words/s figure, a closing
summary, a progress bar on a terminal, ``--help`` and the install hints."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ns_plugins.config import config_dir
from ns_plugins.runs import ConfigError, check_config

ROOT = Path(__file__).resolve().parents[1]


def _cfg(*overrides):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=["+experiment=sgns", *overrides])


def _train_py(*args, timeout=240, env=None):
    env = dict(os.environ, PYTHONPATH="", SETUPTOOLS_USE_DISTUTILS="stdlib", **(env or {}))
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ----------------------------------------------------------------- settings refused at start
def test_early_stopping_without_its_evaluation_file_is_refused_at_start():
    with pytest.raises(ConfigError, match=r"eval/wordsim353.*eval\.wordsim="):
        check_config(_cfg("callbacks=early_stopping"))


def test_early_stopping_with_its_evaluation_file_is_accepted(tmp_path):
    sim = tmp_path / "sim.tsv"
    sim.write_text("the\tof\t8.0\n")
    check_config(_cfg("callbacks=early_stopping", f"eval.wordsim={sim}"))


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["+callbacks.best._target_=x", "+callbacks.best.monitor=eval/simlex999"], "eval.simlex="),
        (["+callbacks.best._target_=x", "+callbacks.best.monitor=eval/nope"], "no evaluation"),
        (["data=text", "data.path=/", "+callbacks.x.monitor=eval/planted_purity"], "synthetic"),
    ],
)
def test_other_monitored_scores_are_checked(overrides, match):
    with pytest.raises(ConfigError, match=match):
        check_config(_cfg(*overrides))


@pytest.mark.parametrize(
    "override,named,meant",
    [
        ("+trainer.max_epochs=1", "trainer.max_epochs", "use epochs"),
        ("+vectorsize=10", "vectorsize", "use vector_size"),
        ("+eval.wordsim353=x.tsv", "eval.wordsim353", "use eval.wordsim"),
        ("+report.colour=red", "report.colour", None),
    ],
)
def test_unknown_keys_added_with_plus_are_refused(override, named, meant):
    with pytest.raises(ConfigError) as err:
        check_config(_cfg(override))
    msg = str(err.value)
    assert named in msg and "\n" not in msg
    if meant:
        assert meant in msg


def test_logger_and_callback_entries_stay_open():
    check_config(
        _cfg("+logger.more._target_=x.Y", "+logger.more.flag=1", "+callbacks.z._target_=y")
    )


def test_train_py_refuses_an_unknown_key_in_one_line(tmp_path):
    proc = _train_py("+experiment=sgns", "+trainer.max_epochs=1", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "trainer.max_epochs (use epochs)" in lines[0], proc.stderr
    assert not (tmp_path / "checkpoints").exists()
