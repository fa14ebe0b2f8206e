"""A run's directory, resume, start checks and failures: what a run does when something goes wrong.

Small runs on the synthetic corpus (600 sentences, a few steps an epoch), in this process where
that is enough and as ``python train.py`` where the exit status and the console matter.
"""

import csv
import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from ns_plugins.app.checks import ConfigError
from ns_plugins.app.config import config_dir
from ns_plugins.app.launch import train

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
CHUNK = ["engine=chunk", "model.chunk_words=1500", "workers=1"]
PAIRS = ["engine=batched", "batch_size=256"]
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
from ns_plugins.app.rundir import claim_run_dir
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


# ------------------------------------------------------------------------ checks at start
@pytest.mark.parametrize(
    "overrides, match",
    [
        ([*CHUNK, "window=1000", "negative=300"], r"window \* negative must be below 262144"),
        ([*CHUNK, "seed=4294967296"], r"seed must be <= 4294967295 \(2\*\*32 - 1\)"),
        ([*PAIRS, "device.precision=17"], "device.precision=17 is not a precision Lightning"),
        ([*CHUNK, "device.precision=half"], "device.precision=half is not a precision Lightning"),
    ],
)
def test_settings_that_failed_in_training_fail_at_start(overrides, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        train(_cfg(*overrides), tmp_path)
    assert not (tmp_path / "data").exists()  # nothing was prepared


def test_the_cuda_chunk_kernel_bounds_are_checked_at_start(tmp_path, monkeypatch):
    import importlib.util

    from ns_plugins.app import checks as runs

    cfg = _cfg(*CHUNK, "device=gpu", "window=40")
    monkeypatch.setattr(runs, "_cuda_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    with pytest.raises(ConfigError, match="window must be <= 32 for the chunk engine on CUDA"):
        runs.check_config(cfg)


def test_the_start_checks_know_the_kernels_and_lightnings_limits():
    import typing

    from lightning_fabric.plugins.precision.precision import _PRECISION_INPUT

    from ns_plugins.app import checks as runs
    from ns_plugins.kernels import chunk_numba

    assert (runs._SLOT_BITS, runs._SLOT_DRAWS) == (chunk_numba.SLOT_BITS, chunk_numba.SLOT_DRAWS)
    accepted = {str(v) for arg in typing.get_args(_PRECISION_INPUT) for v in typing.get_args(arg)}
    assert set(runs.PRECISIONS) == accepted
    triton_kernel = None
    for name in ("chunk_triton", "triton_chunk"):
        try:
            triton_kernel = importlib.import_module(f"ns_plugins.kernels.{name}")
            break
        except ImportError:
            continue
    if triton_kernel is not None:
        assert runs._CUDA_MAX_WINDOW == triton_kernel._MAX_WINDOW
        assert runs._CUDA_MAX_K == triton_kernel._MAX_K


def _npz(path, rows=40, d=16, bad=None, value=np.nan, compressed=False):
    rng = np.random.default_rng(0)
    words = np.array([f"w{i}" for i in range(rows)])
    W_in = rng.standard_normal((rows, d)).astype(np.float32)
    W_out = rng.standard_normal((rows, d)).astype(np.float32)
    if bad is not None:
        W_out[bad, 3] = value
    (np.savez_compressed if compressed else np.savez)(path, words=words, in_embed=W_in,
                                                      out_embed=W_out)  # fmt: skip
    return path


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_init_vectors_with_nonfinite_rows_fail_at_start(value, tmp_path):
    init = _npz(tmp_path / "init.npz", bad=7, value=value)
    with pytest.raises(
        ConfigError, match=r"out_embed hold NaN or inf \(the first: row 7, word 'w7'"
    ):
        train(_cfg(*CHUNK, f"init_vectors={init}"), tmp_path / "run")
    assert not (tmp_path / "run" / "data").exists()
    wrong = _npz(tmp_path / "wrong.npz", d=8)
    with pytest.raises(ConfigError, match="this run has vector_size 16"):
        train(_cfg(*CHUNK, f"init_vectors={wrong}"), tmp_path / "run")
    assert not (tmp_path / "run" / "data").exists()


def test_init_vectors_are_checked_a_block_of_rows_at_a_time(tmp_path):
    import zipfile

    from ns_plugins.app.checks import _nonfinite_rows

    for compressed in (False, True):
        path = _npz(tmp_path / f"big{compressed}.npz", rows=5000, d=8, bad=[1234, 4999],
                    compressed=compressed)  # fmt: skip
        with zipfile.ZipFile(path) as z:
            shape, bad = _nonfinite_rows(z, "out_embed", block_bytes=1000)
            assert shape == (5000, 8) and bad.tolist() == [1234, 4999]
            shape, bad = _nonfinite_rows(z, "in_embed", block_bytes=1000)
            assert shape == (5000, 8) and bad.size == 0


# ------------------------------------------------------------------------ damaged checkpoints
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, cache):
    run_dir = tmp_path_factory.mktemp("finished")
    train(_cfg(*CHUNK, "epochs=1", f"data.cache_dir={cache}"), run_dir)
    return run_dir / "checkpoints" / "last.ckpt"


def _rewrite(src: Path, dst: Path, change) -> Path:
    """``src``'s zip records into ``dst``, each through ``change(name, bytes)`` (valid CRCs)."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, change(info.filename, zin.read(info.filename)))
    return dst


@pytest.mark.parametrize("record", ["data.pkl", "data/1"])
def test_a_checkpoint_with_a_flipped_byte_is_refused(record, checkpoint, tmp_path, cache):
    import zipfile

    with zipfile.ZipFile(checkpoint) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(record))
    raw = bytearray(checkpoint.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.file_size // 2] ^= 0x10
    bad = tmp_path / "flipped.ckpt"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match=f"ckpt_path={bad}: the file is damaged .*CRC-32"):
        train(_cfg(*CHUNK, "epochs=2", f"data.cache_dir={cache}", f"ckpt_path={bad}"), tmp_path)


def test_a_checkpoint_with_a_tampered_shape_is_one_line(checkpoint, tmp_path, cache):
    from ns_plugins.errors import UsageError

    state = torch.load(checkpoint, weights_only=True)
    state["state_dict"]["in_embed.weight"] = state["state_dict"]["in_embed.weight"][:, :8].clone()
    bad = tmp_path / "shape.ckpt"
    torch.save(state, bad)
    args = [*CHUNK, "epochs=2", f"data.cache_dir={cache}", f"ckpt_path={bad}"]
    with pytest.raises(UsageError, match=f"ckpt_path={bad}: its weights do not fit this run "
                       r"\(size mismatch for in_embed.weight"):  # fmt: skip
        train(_cfg(*args), tmp_path / "a")

    # a record cut short, with a CRC that fits: the tensor does not fit its storage
    def halve(name, data):
        return data[: len(data) // 2] if name.endswith("data/1") else data

    short = _rewrite(checkpoint, tmp_path / "short.ckpt", halve)
    args[-1] = f"ckpt_path={short}"
    with pytest.raises(UsageError, match=f"ckpt_path={short}: not a readable checkpoint"):
        train(_cfg(*args), tmp_path / "b")


# ------------------------------------------------------------------------ a full disk
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize(
    "name, link",
    [
        ("checkpoints/last.ckpt", "checkpoints/last.ckpt.part"),
        ("vectors.txt", "vectors.txt.part"),
        ("vocab.tsv", "vocab.tsv.part"),
        ("metrics.json", "metrics.json.part"),
        ("csv/metrics.csv", "csv/metrics.csv"),
    ],
)
def test_a_full_disk_names_the_file_and_leaves_no_part_file(name, link, tmp_path, cache):
    """Every write into /dev/full fails with ENOSPC, as on a full disk: a link to it where the run
    writes ``name`` (its ``.part`` file, or the file itself) makes that write fail for real."""
    import errno

    run_dir = tmp_path / "run"
    (run_dir / link).parent.mkdir(parents=True)
    (run_dir / link).symlink_to("/dev/full")
    with pytest.raises(OSError) as failed:
        train(_cfg(*CHUNK, "epochs=1", f"data.cache_dir={cache}"), run_dir)
    assert failed.value.errno == errno.ENOSPC
    assert failed.value.filename == str(run_dir / name)
    assert not list(run_dir.rglob("*.part"))


# ------------------------------------------------------------------------ loader workers
@pytest.mark.parametrize("num_workers", [0, 2, 3])
def test_every_batch_of_every_loader_worker_is_trained(num_workers, tmp_path, cache):
    """With n DataLoader workers each worker yields the batches of its own shard; an epoch is all
    of them (the count of one worker was taken as the epoch's, and the last worker's last batch
    dropped or the epoch cut short)."""
    from ns_plugins.app.datamodule import CorpusDataModule
    from ns_plugins.app.recipe import CorpusRecipe

    recipe = CorpusRecipe(synthetic_sentences=600, min_count=1)
    dm = CorpusDataModule(recipe, cache_dir=cache / "workers", batch_size=333,
                          num_workers=num_workers, seed=1)  # fmt: skip
    dm.setup("fit")
    n = max(num_workers, 1)
    shards = [dm._batches(0, 1, w, n) for w in range(n)]
    expected = sum(len(b) for b in shards)
    examples = n * shards[0].examples_per_shard()
    got = [batch["center"].shape[0] for batch in dm.train_dataloader()]
    assert dm.steps_per_epoch == len(got) == expected
    assert sum(got) == examples  # every example of every worker's shard, none twice
    if num_workers == 2:
        metrics = train(_cfg(*PAIRS, "batch_size=333", "data.num_workers=2", "epochs=1",
                             f"data.cache_dir={cache / 'workers'}"), tmp_path)  # fmt: skip
        assert metrics["global_step"] == expected


# ------------------------------------------------------------------------ resume from anywhere
def _vectors(run_dir: Path) -> np.ndarray:
    from ns_plugins.embeddings import load_word2vec

    return load_word2vec(run_dir / "vectors.bin")[1]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache):
    """A chunk run of 2 epochs on one thread (bit-for-bit repeatable), never stopped."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    metrics = train(_cfg(*CHUNK, "epochs=2", f"data.cache_dir={cache}"), run_dir)
    return metrics, _vectors(run_dir)


@pytest.mark.parametrize("where", ["mid-epoch", "last batch of an epoch", "first batch"])
@pytest.mark.parametrize("resume_from", ["last.ckpt", "interrupted.ckpt"])
def test_resuming_after_an_interrupt_ends_where_an_uninterrupted_run_ends(
    where, resume_from, uninterrupted, tmp_path, cache
):
    full, full_vectors = uninterrupted
    per_epoch = full["global_step"] // 2
    at = {"mid-epoch": per_epoch + 2, "last batch of an epoch": per_epoch, "first batch": 1}[where]
    args = [*CHUNK, "epochs=2", f"data.cache_dir={cache}"]
    part = train(_cfg(*args), tmp_path / "part", extra_callbacks=[_SignalAt(at, signal.SIGINT)])
    assert part["interrupted"] and part["global_step"] == at
    assert part["epochs_completed"] == at // per_epoch  # not the epoch cut short
    ckpt = tmp_path / "part" / "checkpoints" / resume_from
    assert torch.load(ckpt, weights_only=True)["global_step"] == at
    resumed = train(_cfg(*args, f"ckpt_path={ckpt}"), tmp_path / "resumed")
    assert not resumed["interrupted"]
    assert resumed["global_step"] == full["global_step"]
    assert resumed["epochs_completed"] == 2
    np.testing.assert_array_equal(_vectors(tmp_path / "resumed"), full_vectors)


def test_a_run_stopped_by_max_steps_resumes_to_the_end(uninterrupted, tmp_path, cache):
    """(Its learning rate decayed over max_steps: the weights are not the uninterrupted run's.)"""
    full, _ = uninterrupted
    args = [*CHUNK, "epochs=2", f"data.cache_dir={cache}"]
    stop = full["global_step"] // 2 + 1
    part = train(_cfg(*args, f"trainer.max_steps={stop}"), tmp_path / "part")
    assert part["global_step"] == stop
    ckpt = tmp_path / "part" / "checkpoints" / "last.ckpt"
    resumed = train(_cfg(*args, f"ckpt_path={ckpt}"), tmp_path / "resumed")
    assert resumed["global_step"] == full["global_step"]
    assert resumed["epochs_completed"] == 2


def test_the_batched_engine_resumes_from_last_ckpt_after_an_interrupt(tmp_path, cache):
    args = [*PAIRS, "batch_size=1024", "epochs=2", f"data.cache_dir={cache}"]
    full = train(_cfg(*args), tmp_path / "full")
    at = full["global_step"] // 2 + 3
    train(_cfg(*args), tmp_path / "part", extra_callbacks=[_SignalAt(at)])
    ckpt = tmp_path / "part" / "checkpoints" / "last.ckpt"
    resumed = train(_cfg(*args, f"ckpt_path={ckpt}"), tmp_path / "resumed")
    assert resumed["global_step"] == full["global_step"]
    np.testing.assert_array_equal(_vectors(tmp_path / "resumed"), _vectors(tmp_path / "full"))


def test_a_checkpoint_that_claims_an_unfinished_epoch_done_is_refused(tmp_path, cache):
    """As last.ckpt was saved when a run stopped inside an epoch: the epoch counted done."""
    from ns_plugins.errors import UsageError

    args = [*CHUNK, "epochs=2", f"data.cache_dir={cache}"]
    part = train(_cfg(*args), tmp_path / "part", extra_callbacks=[_SignalAt(2)])
    state = torch.load(part["interrupt_checkpoint"], weights_only=True)
    for progress in state["loops"]["fit_loop"]["epoch_progress"].values():
        progress.update(ready=1, started=1, processed=1, completed=1)
    stale = tmp_path / "stale.ckpt"
    torch.save(state, stale)
    with pytest.raises(UsageError, match="it says 1 epochs are done at step 2 .*skip the rest"):
        train(_cfg(*args, f"ckpt_path={stale}"), tmp_path / "resumed")


def test_resuming_with_loader_workers_keeps_the_batch_order(tmp_path, cache):
    """DataLoader workers take turns from worker 0 again after a resume; the shards rotate so the
    batch after the checkpoint's step still comes first (the order of SGD steps is the result)."""
    args = [*PAIRS, "batch_size=1024", "data.num_workers=2", "epochs=2", f"data.cache_dir={cache}"]
    full = train(_cfg(*args), tmp_path / "full")
    at = full["global_step"] // 2 + 3  # odd within the epoch: worker 1's batch comes next
    train(_cfg(*args), tmp_path / "part", extra_callbacks=[_SignalAt(at)])
    ckpt = tmp_path / "part" / "checkpoints" / "last.ckpt"
    resumed = train(_cfg(*args, f"ckpt_path={ckpt}"), tmp_path / "resumed")
    assert resumed["global_step"] == full["global_step"]
    np.testing.assert_array_equal(_vectors(tmp_path / "resumed"), _vectors(tmp_path / "full"))


# ------------------------------------------------------------------------ signals while preparing
@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory):
    """35 MB of text, 5M words: encoding it takes seconds."""
    rng = np.random.default_rng(0)
    vocab = 20000
    table = np.frombuffer("".join(f"w{i:05d} " for i in range(vocab)).encode(), np.uint8)
    tokens = table.reshape(vocab, 7)[rng.zipf(1.2, size=5_000_000) % vocab]
    tokens[9::10, 6] = ord("\n")  # ten words a line
    path = tmp_path_factory.mktemp("big") / "corpus.txt"
    path.write_bytes(tokens.tobytes())
    return path


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


_IMPORT_TORCH_FIRST = """
import sys
import torch  # imported already: no encoder is forked, the data module encodes in this process
sys.argv = ["train.py", *sys.argv[1:]]
from ns_plugins.app.cli import main
main()
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.parametrize(
    "sig, encoder",
    [
        (signal.SIGTERM, "forked"),
        (signal.SIGINT, "in the run's process"),
        (signal.SIGKILL, "forked"),
    ],
)
def test_a_signal_while_the_corpus_is_prepared_ends_the_run_at_once(
    sig, encoder, big_corpus, tmp_path
):
    import time

    args = ["+experiment=sgns_text", f"data.path={big_corpus}", f"hydra.run.dir={tmp_path}"]
    if encoder == "forked":
        cmd = [sys.executable, str(ROOT / "train.py"), *args]
    else:
        cmd = [sys.executable, "-c", _IMPORT_TORCH_FIRST, *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (_children(proc.pid) if encoder == "forked" else (tmp_path / "data").exists()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        time.sleep(0.5)  # encoding under way
        children = _children(proc.pid)
        assert encoder != "forked" or any(_running(c) for c in children)
        proc.send_signal(sig)
        sent = time.monotonic()
        proc.wait(timeout=60)  # not for its pipes: an orphan holding them would keep them open
        waited = time.monotonic() - sent
        time.sleep(0.5)
        orphans = [c for c in children if _running(c)]
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not orphans  # no encoder left running
    assert waited < 10
    if sig == signal.SIGKILL:  # no handler runs: the kernel ends the encoder with its parent
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 128 + sig, err[-3000:]
        assert err.strip().splitlines() == [
            f"ns-train: interrupted (signal {int(sig)}) while preparing the corpus"
        ]


class _CheckpointsSeen(pl.Callback):
    def __init__(self, path):
        self.path, self.seen = path, []

    def on_train_epoch_start(self, trainer, *args):
        if self.path.is_file():
            self.seen.append(torch.load(self.path, weights_only=True)["global_step"])


def test_last_ckpt_is_saved_at_each_epoch_end(tmp_path, cache):
    """(Lightning saves last.ckpt at an epoch end only beside a top-k checkpoint, and the app
    keeps none: it came when training ended, and a run killed on the way had none.)"""
    seen = _CheckpointsSeen(tmp_path / "checkpoints" / "last.ckpt")
    metrics = train(_cfg(*CHUNK, "epochs=3", f"data.cache_dir={cache}"), tmp_path, [seen])
    per_epoch = metrics["global_step"] // 3
    assert seen.seen == [per_epoch, 2 * per_epoch]


# ------------------------------------------------------------------------ a rank killed
@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="forked ranks, /proc")
def test_a_killed_rank_leaves_rank_0_a_checkpoint_to_resume_from(tmp_path):
    import time

    args = [*TINY, "model.chunk_words=500", "workers=1", "device=ddp_cpu", "devices=2",
            "device.average_every=1", f"hydra.run.dir={tmp_path}"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args, "epochs=500"],
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "checkpoints" / "last.ckpt").exists():  # training is under way
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.1)
        (rank1,) = [c for c in _children(proc.pid) if _running(c)]
        os.kill(rank1, signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    ckpt = tmp_path / "checkpoints" / "interrupted.ckpt"
    assert proc.returncode == 128 + signal.SIGKILL, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        f"ns-train: error: rank 1 was killed by signal 9; rank 0 saved {ckpt}: "
        f"resume with ckpt_path={ckpt}"
    )
    assert "Traceback" not in err
    step = torch.load(ckpt, weights_only=True)["global_step"]
    assert step > 0
    more = _train_py(*args, "epochs=500", f"trainer.max_steps={step + 5}", f"ckpt_path={ckpt}",
                     timeout=300)  # fmt: skip
    assert more.returncode == 0, more.stderr[-3000:]
    ranks = [json.loads((tmp_path / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == step + 5
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]


_SIGNAL_TURNED_INTO_ANOTHER_ERROR = """
import os, signal, sys, time
import torch  # imported already: the data module prepares the corpus in this process
from ns_plugins.app import recipe

def prepare(self, cache_dir):
    # what numba did when SIGINT landed while it compiled a kernel: its own error replaced ours
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    except BaseException:
        raise RuntimeError("no compiled object yet") from None

recipe.CorpusRecipe.prepare = prepare
sys.argv = ["train.py", *sys.argv[1:]]
from ns_plugins.app.cli import main
main()
"""


def test_a_signal_whose_exception_the_code_replaces_still_ends_in_one_line(tmp_path):
    """A signal while the corpus is prepared ends the run with the interrupted line and 128+N
    even when the code it lands in raises an error of its own instead (numba compiling a kernel
    on a fresh install did: exit 1 and its traceback)."""
    args = ["+experiment=sgns", f"hydra.run.dir={tmp_path}"]
    code = _SIGNAL_TURNED_INTO_ANOTHER_ERROR
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"ns-train: interrupted (signal {int(signal.SIGTERM)}) while preparing the corpus"
    )
    assert "Traceback" not in proc.stderr
