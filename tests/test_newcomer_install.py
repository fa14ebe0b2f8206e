"""The README followed as a newcomer would, end to end, in a new virtual environment."""

import importlib.util
import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WHEEL = "ns_plugins-0.1.0-py3-none-any.whl"  # the name the README's install commands use
SMALL = ["data.synthetic_sentences=4000"]


def _run(args, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def _summary(proc) -> str:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("ns-train: done in")]
    assert lines, proc.stdout[-3000:]
    return lines[-1]


@pytest.mark.slow
def test_the_readme_followed_in_a_new_environment(tmp_path):
    """What it does, in order (about a minute on 2 cores):

    1. Builds the wheel as the README's Install says (``pip wheel --no-deps . -w dist``; pip
       fetches the build backend, hatchling, unless it is cached) and checks its file name is the
       one the README installs.
    2. Makes a new virtual environment (``python -m venv --without-pip``) whose dependencies are
       this test environment's, through a ``.pth`` file (a fresh install of torch, Lightning and
       Hydra would take minutes and gigabytes), and installs the wheel into it (``pip install
       --no-deps --no-index --ignore-installed``, which leaves the test environment's own copy
       alone); the package then comes from the new environment, not from the clone.
    3. From an empty directory: ``ns-train --help``; ``ns-train +experiment=sgns epochs=1``
       with ``logger=many`` when TensorBoard (or tensorboardX) is installed, or the CSV logger,
       ending with the summary line and leaving report.html where it says.
    4. A resumed run: ``ckpt_path=<first run>/checkpoints/last.ckpt epochs=2`` continues to
       the second epoch.
    5. A short sweep, ``ns-train -m ... seed=1,2``: both jobs finish, each with its summary.
    """
    if importlib.util.find_spec("pytorch_lightning") is None:
        pytest.skip("needs the lightning extra in the test environment")
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(dist)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if build.returncode != 0:
        pytest.skip(f"cannot build the wheel here (no build backend?): {build.stderr[-500:]}")
    assert (dist / WHEEL).is_file(), sorted(p.name for p in dist.iterdir())

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    python = venv / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path
    ).stdout.strip()
    # this environment's packages after the new one's own: its ns_plugins shadows any other
    here = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib) / "test_environment.pth").write_text("\n".join(here) + "\n")
    _run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
         f"{dist / WHEEL}[lightning]"],
        tmp_path,
    )  # fmt: skip
    where = _run([str(python), "-c", "import ns_plugins; print(ns_plugins.__file__)"], tmp_path)
    assert where.stdout.strip().startswith(str(venv)), where.stdout

    work = tmp_path / "work"  # a newcomer's own directory: not the clone
    work.mkdir()
    ns_train = str(venv / "bin" / "ns-train")
    helped = _run([ns_train, "--help"], work)
    assert "vector_size : int" in helped.stdout and "eval.wordsim" in helped.stdout

    tensorboard = any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX"))
    first = work / "first"
    proc = _run(
        [ns_train, "+experiment=sgns", *SMALL, "epochs=1", f"hydra.run.dir={first}",
         "logger=many" if tensorboard else "logger=csv"],
        work,
    )  # fmt: skip
    assert "1 epoch" in _summary(proc)
    assert f"ns-train: report: {first / 'report.html'}" in proc.stdout
    assert (first / "report.html").is_file() and (first / "vectors.bin").is_file()
    if tensorboard:
        assert list((first / "tensorboard").glob("events.out.tfevents.*"))
    steps = json.loads((first / "metrics.json").read_text())["global_step"]

    resumed = work / "resumed"
    ckpt = first / "checkpoints" / "last.ckpt"
    proc = _run(
        [ns_train, "+experiment=sgns", *SMALL, "epochs=2", f"ckpt_path={ckpt}",
         f"hydra.run.dir={resumed}"],
        work,
    )  # fmt: skip
    assert "2 epochs" in _summary(proc)
    assert json.loads((resumed / "metrics.json").read_text())["global_step"] == 2 * steps

    sweep = work / "sweep"
    proc = _run(
        [ns_train, "-m", "+experiment=sgns", *SMALL, "epochs=1", "seed=1,2",
         f"hydra.sweep.dir={sweep}"],
        work,
    )  # fmt: skip
    done = [ln for ln in proc.stdout.splitlines() if ln.startswith("ns-train: done in")]
    assert len(done) == 2, proc.stdout[-3000:]
    for job in (0, 1):
        assert (sweep / str(job) / "report.html").is_file()
    assert not list(work.glob("*.txt"))  # nothing left in the newcomer's directory but runs
