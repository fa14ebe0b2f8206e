"""What a newcomer meets in a first hour with the app: settings refused at start with one line,
a quiet console, the training curves logged at every run size, one words/s figure, a closing
summary, a progress bar on a terminal, ``--help`` and the install hints."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from ns_plugins.app.checks import ConfigError, check_config
from ns_plugins.app.config import config_dir

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
        ("+engine.batch_size=64", "engine.batch_size", None),  # not the chunk engine's
        ("+engines.chunk.window=3", "engines", "use engine"),
    ],
)
def test_unknown_keys_added_with_plus_are_refused(override, named, meant):
    with pytest.raises(ConfigError) as err:
        check_config(_cfg(override))
    msg = str(err.value)
    assert named in msg and "\n" not in msg
    if meant:
        assert meant in msg


def test_the_old_engine_switch_names_the_group():
    with pytest.raises(ConfigError, match=r"model.engine=batched: .* use engine=batched$"):
        check_config(_cfg("model.engine=batched"))


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


# ----------------------------------------------------------------- the default run, as typed
@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """``python train.py +experiment=sgns``, as the README's first run types it (not a
    terminal: the progress goes to log lines)."""
    run_dir = tmp_path_factory.mktemp("default") / "run"
    proc = _train_py("+experiment=sgns", f"hydra.run.dir={run_dir}", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


NOISE = (
    "GPU available",
    "TPU available",
    "Tip:",
    "litlogger",
    "LeafSpec",
    "log_every_n_steps",
    "Sparse invariant",
    "`Trainer.fit` stopped",
)


def test_the_console_has_no_lightning_noise(default_run):
    _, proc = default_run
    for text in (proc.stdout, proc.stderr):
        for noise in NOISE:
            assert noise not in text, f"{noise!r} in:\n{text[-3000:]}"
    assert "Traceback" not in proc.stderr


def test_quieting_lightning_keeps_real_warnings(recwarn, caplog):
    import logging
    import warnings

    from ns_plugins.app.skeleton import quiet_lightning

    quiet_lightning()
    warnings.warn("a real problem", UserWarning, stacklevel=1)
    warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1)
    warnings.warn("The dirpath has changed from '/a' to '/b', therefore ...", stacklevel=1)
    assert [str(w.message) for w in recwarn] == ["a real problem"]
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with caplog.at_level(logging.INFO):
        rank_zero.info("GPU available: False, used: False")
        rank_zero.warning("a real warning")
    assert [r.getMessage() for r in caplog.records] == ["a real warning"]


def _csv_columns(path):
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: sum(1 for r in rows if r.get(k) not in (None, "")) for k in rows[0]}


def test_the_default_run_logs_every_curve_the_report_draws(default_run):
    run_dir, _ = default_run
    counts = _csv_columns(run_dir / "csv" / "metrics.csv")
    for column in ("train/loss", "train/lr", "train/words_per_sec", "eval/planted_purity"):
        assert counts.get(column, 0) >= 2, (column, counts)


@pytest.mark.parametrize(
    "total,every", [(1, 1), (9, 1), (99, 1), (100, 2), (1000, 20), (2500, 50), (10**6, 50)]
)
def test_log_interval_gives_enough_points(total, every):
    from ns_plugins.app.progress import log_interval

    assert log_interval(total) == every
    assert total // every >= min(total, 50)


def _log_rates(log_text):
    import re

    return [
        float(m.group(1).replace(",", ""))
        for m in re.finditer(r"EPOCH \d+ - DONE: .*?, ([\d,]+) words/s", log_text)
    ]


def test_words_per_sec_is_one_figure(default_run):
    """metrics.json's words/s is the log lines' (not 1/10 of it, as when the first step's kernel
    compilation was counted); wall_seconds counts everything separately."""
    import json
    import statistics

    run_dir, _ = default_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rates = _log_rates((run_dir / "ns-train.log").read_text())
    assert len(rates) == 3, rates
    logged = statistics.median(rates)
    assert logged / 2 < metrics["words_per_sec"] < logged * 2, (metrics["words_per_sec"], rates)
    assert metrics["wall_seconds"] >= metrics["train_seconds"] >= metrics["warmup_seconds"] > 0


def test_throughput_leaves_the_first_step_out():
    """A slow first step (compiling the kernels) does not drag the figure down."""
    import time
    from types import SimpleNamespace

    from ns_plugins.app.progress import Throughput

    logged = {}
    module = SimpleNamespace(log=lambda k, v, **_: logged.__setitem__(k, v))
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(words_per_step=1000),
        optimizers=[SimpleNamespace(param_groups=[{"lr": 0.025}])],
        is_last_batch=False,
    )
    tp = Throughput(window=0.0)
    for step in range(5):
        tp.on_train_batch_start(trainer, module, None, step)
        time.sleep(0.5 if step == 0 else 0.01)
        trainer.is_last_batch = step == 4
        tp.on_train_batch_end(trainer, module, None, None, step)
    summary = tp.summary()
    assert summary["words"] == 5000 and summary["warmup_seconds"] >= 0.5
    assert summary["words_per_sec"] > 4000 / 0.25  # 4 steps of ~10 ms, not 5000 words in 0.54 s
    assert logged["train/words_per_sec"] > 1000 / 0.25


def test_the_run_ends_with_a_summary(default_run):
    run_dir, proc = default_run
    done = [ln for ln in proc.stdout.splitlines() if ln.startswith("ns-train: done in")]
    assert len(done) == 1, proc.stdout[-3000:]
    assert "3 epochs (9 steps)" in done[0] and "words/s" in done[0]
    assert "planted purity 1.000 (learned)" in done[0] or "planted purity" in done[0]
    assert f"ns-train: report: {run_dir / 'report.html'}" in proc.stdout
    assert "metrics.json" in proc.stdout and "vectors.bin" in proc.stdout
    log_text = (run_dir / "ns-train.log").read_text()
    assert done[0] in log_text and "report.html" in log_text


def test_the_summary_names_scores_and_interruptions(tmp_path):
    from ns_plugins.app.cli import summary

    (tmp_path / "report.html").write_text("")
    metrics = {"epochs_completed": 1, "global_step": 10, "words_per_sec": 1.5e6,
               "eval": {"wordsim353": 0.62, "simlex999": 0.31, "analogy": 0.451}}  # fmt: skip
    lines = summary(metrics, tmp_path, 61.2)
    assert lines[0] == (
        "ns-train: done in 61 s, 1 epoch (10 steps), 1.50M words/s; "
        "WordSim-353 0.620, SimLex-999 0.310, analogies 45.1%"
    )
    assert lines[1] == f"ns-train: report: {tmp_path / 'report.html'} (beside it: nothing else)"
    metrics.update(interrupted=True, interrupt_signal=2, interrupt_checkpoint="/x/i.ckpt", eval={})
    lines = summary(metrics, tmp_path, 5)
    assert (
        lines[0].startswith("ns-train: stopped by signal 2 after 5 s") and "no scores" in lines[0]
    )
    assert lines[1] == "ns-train: resume with ckpt_path=/x/i.ckpt"


# ----------------------------------------------------------------- progress bar on a terminal
def _run_in_a_terminal(args, timeout=300):
    """Run ``args`` with stdin, stdout and stderr on a new pseudo-terminal (no window size set,
    as under some terminal multiplexers and CI wrappers); returns (status, everything printed)."""
    import pty
    import select

    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONPATH="", SETUPTOOLS_USE_DISTUTILS="stdlib", TERM="xterm")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                out += data
            elif proc.poll() is not None:
                break
        proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return proc.returncode, out.decode("utf-8", "replace")


@pytest.mark.slow
def test_a_terminal_gets_a_progress_bar_and_the_log_file_the_lines(tmp_path):
    status, out = _run_in_a_terminal(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "+experiment=sgns",
            "epochs=2",
            "trainer.progress_seconds=0",
            f"hydra.run.dir={tmp_path}",
        ]  # fmt: skip
    )
    assert status == 0, out[-3000:]
    assert "it/s" in out and "%|" in out, out[-3000:]  # TQDM's bar
    assert "Epoch 2/2" in out and "loss=" in out and "words/s=" in out
    assert "EPOCH 1 - DONE" not in out  # the lines would break the bar
    log_text = (tmp_path / "ns-train.log").read_text()
    assert "EPOCH 1 - DONE" in log_text and "EPOCH 2 - DONE" in log_text
    assert "\r" not in log_text
    assert "ns-train: done in" in out


# ----------------------------------------------------------------- installs and extras
def test_a_logger_without_its_package_is_refused_at_start(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    hidden = ("tensorboard", "tensorboardX")
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r'logger\.tensorboard .*pip install "\.\[tensorboard\]"'):
        check_config(_cfg("logger=tensorboard"))
    check_config(_cfg("logger=csv"))


def test_the_tensorboard_extra_brings_tensorboard():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = project["optional-dependencies"]["tensorboard"]
    assert any(req.startswith("tensorboard") for req in extra), extra


def test_optuna_without_the_sweep_extra_is_one_line(tmp_path):
    code = (
        "import sys\n"
        "sys.modules['hydra_plugins.hydra_optuna_sweeper'] = None  # as if not installed\n"
        f"sys.argv = ['train.py', '-m', '+experiment=sgns', '+hparams_search=optuna',"
        f" 'hydra.sweep.dir={tmp_path}']\n"
        "from ns_plugins.app.cli import main\n"
        "main()\n"
    )
    env = dict(os.environ, PYTHONPATH="")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install ".[sweep]"' in lines[0], proc.stderr


def _readme_section(title):
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_the_readme_installs_from_the_clone_or_a_wheel():
    text = (ROOT / "README.md").read_text()
    assert not re.search(r"pip install [\"']?ns_plugins\[", text)  # not on a registry
    install = _readme_section("Install")
    assert 'pip install ".[lightning]"' in install
    assert "pip wheel --no-deps . -w dist" in install
    assert 'pip install "dist/ns_plugins-0.1.0-py3-none-any.whl[lightning]"' in install
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in install
    assert "`tensorboard`" in install and "`sweep`" in install
    chainer = _readme_section("Legacy Chainer code")
    assert 'pip install ".[chainer]"' in chainer
    recipe = next(ln for ln in chainer.splitlines() if "PIP_CONSTRAINT=" in ln)
    assert "build.txt" not in recipe and 'rm -f "$c"' in recipe  # leaves no file behind


def test_the_readme_explains_its_words_and_evaluation_files():
    glossary = _readme_section("Glossary")
    for term in ("gcide", "hogwild", "local SGD", "3CosAdd", "HogBatch", "words/s"):
        assert f"**{term}" in glossary or f"{term}**" in glossary, term
    files = _readme_section("Evaluation files")
    for name in ("wordsim353.tsv", "simlex999.txt", "questions-words.txt"):
        assert name in files
    for source in ("Finkelstein et al. 2002", "Hill, Reichart and Korhonen 2015",
                   "Mikolov et al. 2013"):  # fmt: skip
        assert source in files
