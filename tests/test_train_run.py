"""End-to-end training runs: in-process from composed configs, and `python train.py` itself."""

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from ns_plugins.app.checks import ConfigError
from ns_plugins.app.config import config_dir
from ns_plugins.app.launch import train
from ns_plugins.app.recipe import CorpusRecipe, cache_dir_of
from ns_plugins.embeddings import load_word2vec

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.synthetic_sentences=600",
    "vector_size=16",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
    "eval.queries=[the,of]",
    "eval.k=3",
]
CHUNK = ["engine=chunk", "model.chunk_words=1500"]
PAIRS = ["engine=batched", "batch_size=256"]
ENGINES = {"chunk": CHUNK, "batched": PAIRS}


def _cfg(*overrides):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=[*TINY, *overrides])


@pytest.fixture(scope="module")
def text_corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    rng = np.random.default_rng(0)
    groups = [[f"a{i}" for i in range(10)], [f"b{i}" for i in range(10)]]
    with open(path, "w") as f:
        for _ in range(400):
            g = groups[rng.integers(2)]
            f.write(" ".join(rng.choice(g, 8)) + "\n")
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("engine", ["chunk", "batched"])
@pytest.mark.parametrize("experiment", ["sgns", "cbow", "sgns_text"])
def test_fast_dev_run_per_experiment(experiment, engine, tmp_path, text_corpus, cache):
    cfg = _cfg(
        f"+experiment={experiment}",
        *ENGINES[engine],
        "trainer.fast_dev_run=true",
        "min_count=1",
        f"data.path={text_corpus}",
        f"data.cache_dir={cache / experiment}",
    )
    metrics = train(cfg, tmp_path)
    assert metrics["global_step"] == 1 and metrics["engine"] == engine
    words, vectors = load_word2vec(tmp_path / "vectors.txt")
    assert vectors.shape == (len(words), 16) and np.isfinite(vectors).all()


def test_configured_evaluation_files_are_scored(tmp_path, cache):
    sim = tmp_path / "sim.tsv"
    sim.write_text("the\tof\t8.0\nthe\tand\t6.5\nof\tto\t3.0\nand\tto\t1.0\n")
    questions = tmp_path / "questions.txt"
    questions.write_text(": fillers\nthe of and to\nof the to and\n")
    cfg = _cfg(
        "+experiment=sgns",
        "trainer.fast_dev_run=true",
        f"data.cache_dir={cache / 'sgns'}",
        f"eval.wordsim={sim}",
        f"eval.simlex={sim}",
        f"eval.analogies={questions}",
    )
    scores = train(cfg, tmp_path / "run")["eval"]
    assert scores["wordsim353_pairs"] == scores["simlex999_pairs"] == 4
    assert scores["analogy_answered"] == 2
    assert "planted_purity" in scores


def test_gensim_bundled_evaluation_sets():
    pytest.importorskip("gensim")
    from omegaconf import OmegaConf

    from ns_plugins.app.evaluation import eval_inputs

    cfg = OmegaConf.create(
        {"wordsim": None, "simlex": "/mine.txt", "analogies": None, "use_gensim_data": True}
    )
    paths = eval_inputs(cfg)
    assert paths["simlex"] == "/mine.txt"  # a configured path wins
    assert Path(paths["wordsim"]).name == "wordsim353.tsv" and Path(paths["wordsim"]).is_file()
    assert Path(paths["analogies"]).name == "questions-words.txt"


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, cache):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = _cfg("+experiment=sgns", *PAIRS, "epochs=2", f"data.cache_dir={cache / 'sgns'}")
    metrics = train(cfg, run_dir)
    return cfg, run_dir, metrics


def test_run_directory_layout(full_run):
    _, run_dir, metrics = full_run
    for name in ("vectors.txt", "vectors.bin", "vocab.tsv", "metrics.json", "ground_truth.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["global_step"] == metrics["global_step"] > 0
    assert on_disk["epochs_completed"] == 2 and not on_disk["interrupted"]
    assert "planted_purity" in on_disk["eval"] and "planted_learned" in on_disk
    assert set(on_disk["neighbours"]) == {"the", "of"}
    with open(run_dir / "csv" / "metrics.csv") as f:
        columns = set(next(csv.reader(f)))
    assert {"train/loss", "train/lr", "train/words_per_sec", "eval/planted_purity"} <= columns
    assert not (run_dir / "tensorboard").exists()  # the default logger group is CSV alone


def test_loggers_and_callbacks_come_from_config_groups(tmp_path, cache):
    if not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        pytest.skip("needs tensorboard or tensorboardX")
    sim = tmp_path / "sim.tsv"
    sim.write_text("the\tof\t8.0\nthe\tand\t6.5\nof\tto\t3.0\nand\tto\t1.0\n")
    cfg = _cfg(
        "+experiment=sgns",
        *CHUNK,
        "epochs=6",
        "logger=many",
        "callbacks=early_stopping",
        "callbacks.early_stopping.patience=0",
        "+callbacks.early_stopping.min_delta=10",  # no score can improve by 10: stop after epoch 2
        f"eval.wordsim={sim}",
        f"data.cache_dir={cache / 'sgns'}",
    )
    metrics = train(cfg, tmp_path / "run")
    assert metrics["epochs_completed"] == 2  # EarlyStopping saw eval/wordsim through self.log
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 100
    with open(tmp_path / "run" / "csv" / "metrics.csv") as f:
        assert "eval/wordsim353" in next(csv.reader(f))


def test_exported_vectors_reload_and_match_the_weights(full_run):
    cfg, run_dir, _ = full_run
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    weights = ckpt["state_dict"]["in_embed.weight"].numpy()
    vocab = [line.split("\t")[0] for line in (run_dir / "vocab.tsv").read_text().splitlines()]
    for name in ("vectors.txt", "vectors.bin"):
        words, vectors = load_word2vec(run_dir / name)
        assert words == vocab
        np.testing.assert_array_equal(vectors, weights.astype(np.float32))
    gensim_models = pytest.importorskip("gensim.models")
    kv = gensim_models.KeyedVectors.load_word2vec_format(str(run_dir / "vectors.bin"), binary=True)
    np.testing.assert_array_equal(kv[vocab[3]], weights[3])


class _SignalAt(pl.Callback):
    """Sends this process a real SIGTERM after step ``at``."""

    def __init__(self, at):
        self.at = at

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.at:
            signal.raise_signal(signal.SIGTERM)


@pytest.mark.slow
def test_interrupt_then_resume_matches_an_uninterrupted_run(full_run, tmp_path, cache):
    cfg, full_dir, full = full_run
    steps_per_epoch = full["global_step"] // 2
    stop_at = steps_per_epoch + 3  # mid-way through the second epoch
    part = train(cfg, tmp_path / "part", extra_callbacks=[_SignalAt(stop_at)])
    assert part["interrupted"] and part["interrupt_signal"] == signal.SIGTERM
    assert part["global_step"] == stop_at
    ckpt = Path(part["interrupt_checkpoint"])
    assert ckpt.is_file()
    assert signal.getsignal(signal.SIGTERM) is not None  # handlers were put back

    args = ["+experiment=sgns", *PAIRS, "epochs=2", f"data.cache_dir={cache / 'sgns'}"]
    resumed = train(_cfg(*args, f"ckpt_path={ckpt}"), tmp_path / "resumed")
    assert resumed["global_step"] == full["global_step"]
    w_full, v_full = load_word2vec(full_dir / "vectors.bin")
    w_res, v_res = load_word2vec(tmp_path / "resumed" / "vectors.bin")
    assert w_full == w_res
    np.testing.assert_array_equal(v_full, v_res)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["+experiment=sgns_text", "data.path=/no/such/corpus.txt"], "data.path"),
        (["+experiment=sgns_text"], "data.path"),
        (["+experiment=sgns", "ckpt_path=/no/such.ckpt"], "ckpt_path"),
        (["+experiment=sgns", "eval.wordsim=/no/such.tsv"], "eval.wordsim"),
        (["+experiment=sgns", *PAIRS, "backend=cupy"], "CUDA"),
        (["+experiment=sgns", "device=gpu"], "CUDA"),
        (
            ["+experiment=sgns", *PAIRS, "model.optimizer=sparse_adam", "device.grad_sync=dense"],
            "sparse",
        ),  # fmt: skip
        (["+experiment=sgns", "min_alpha=1.0"], "min_alpha"),
        (["+experiment=sgns", f"ckpt_path={__file__}"], "not a readable checkpoint"),
    ],
)
def test_bad_settings_fail_before_training(overrides, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        train(_cfg(*overrides), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def _train_py(*args, timeout=240):
    env = dict(os.environ, PYTHONPATH="", SETUPTOOLS_USE_DISTUTILS="stdlib")
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_train_py_subprocess(tmp_path):
    proc = _train_py("+experiment=sgns", *TINY, "epochs=1", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / ".hydra" / "config.yaml").is_file()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 1
    words, _ = load_word2vec(tmp_path / "vectors.bin")
    assert len(words) == len((tmp_path / "vocab.tsv").read_text().splitlines())


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["chunk", "batched"])
def test_sigint_saves_a_checkpoint_and_exits_130(engine, tmp_path):
    env = dict(os.environ, PYTHONPATH="", SETUPTOOLS_USE_DISTUTILS="stdlib")
    suffix = ".ckpt"
    args = [*TINY, *ENGINES[engine], "epochs=200", "trainer.checkpoint_every_n_steps=2",
            f"hydra.run.dir={tmp_path}"]  # fmt: skip
    if engine == "chunk":
        args.append("model.chunk_words=500")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "+experiment=sgns", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "checkpoints" / f"last{suffix}").exists():  # training is under way
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, err[-3000:]
    interrupted = tmp_path / "checkpoints" / f"interrupted{suffix}"
    assert interrupted.is_file()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["interrupted"] and metrics["global_step"] > 0
    assert metrics["epochs_completed"] < 200
    step = torch.load(interrupted, weights_only=True)["global_step"]
    assert step == metrics["global_step"]
    assert (tmp_path / "report.html").is_file() and (tmp_path / "vectors.txt").is_file()


def test_train_py_rejects_a_bad_override_before_training(tmp_path):
    proc = _train_py("+experiment=sgns", "backend=foo", f"hydra.run.dir={tmp_path}", timeout=120)
    assert proc.returncode != 0
    assert "backend/foo" in proc.stderr and "reference" in proc.stderr
    assert not (tmp_path / "checkpoints").exists()
    missing = tmp_path / "missing.txt"
    proc = _train_py("+experiment=sgns_text", f"data.path={missing}", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    assert f"corpus not found: data.path={missing}" in proc.stderr


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize(
    "engine, grad_sync", [("chunk", "local_sgd"), ("batched", "sparse"), ("batched", "local_sgd")]
)
def test_ddp_cpu_two_processes(tmp_path, engine, grad_sync):
    proc = _train_py(
        "+experiment=sgns",
        *TINY,
        *ENGINES[engine],
        "epochs=1",
        "device=ddp_cpu",
        "devices=2",
        f"device.grad_sync={grad_sync}",
        "device.average_every=3",
        f"hydra.run.dir={tmp_path}",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # Same number of steps, identical final weights, disjoint shards covering the corpus.
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == ranks[0]["steps_per_epoch"] > 0
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    (a0, a1), (b0, b1) = ranks[0]["shard"]["sentences"], ranks[1]["shard"]["sentences"]
    assert a0 == 0 and a1 == b0 and b1 == 600 and a0 < a1 < b1
    assert (tmp_path / "vectors.bin").is_file()


def _train_py_patched(patch: str, args: list, timeout=240):
    """``python train.py *args`` after ``patch`` ran in the same process (before any import of
    torch, so that the ranks are forked as in a plain run)."""
    code = f"""
import os, sys
{patch}
sys.argv = ["train.py", *{args!r}]
from ns_plugins.app.cli import main
main()
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT), SETUPTOOLS_USE_DISTUTILS="stdlib")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


_FAIL_ON_RANK = """
import ns_plugins.app.recipe as runs
real = runs.{where}
def failing(*args, **kwargs):
    if os.environ.get("LOCAL_RANK") == "{rank}":
        raise RuntimeError("rank {rank} fails in {where}")
    return real(*args, **kwargs)
runs.{where} = failing
"""


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize(
    "where, rank",
    [
        ("open_run_data", 0),  # in setup: the other rank meets a closed connection
        ("open_run_data", 1),
        ("cache_dir_of", 1),  # before the process group: rank 0 would wait for it forever
    ],
)
def test_a_failed_rank_stops_the_whole_run(tmp_path, where, rank):
    """The ranks of ``devices=2`` are forked before torch is imported. When one fails the run
    ends, with a status that is not 0 and the failing rank's own error: no rank is left waiting
    for it (a rank left running would hold the output pipe past the timeout)."""
    args = ["+experiment=sgns", *TINY, *CHUNK, "epochs=1", "device=ddp_cpu", "devices=2",
            f"hydra.run.dir={tmp_path}"]  # fmt: skip
    proc = _train_py_patched(_FAIL_ON_RANK.format(where=where, rank=rank), args, timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"RuntimeError: rank {rank} fails in {where}" in proc.stderr
    if where == "cache_dir_of":
        assert "ns-train: rank 1 stopped (exit status 1); stopping the run" in proc.stderr
    assert not (tmp_path / "vectors.bin").exists()


def _two_nodes(tmp_path, args, timeout=300) -> list[dict]:
    """``python train.py *args`` as a cluster starts a num_nodes=2 run: one process per node, told
    its NODE_RANK and the master's address, writing into ``tmp_path/0`` and ``tmp_path/1``; here
    both nodes are on this machine. Returns the ranks' ``ranks/rank{r}.json``."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = []
    for node in (0, 1):
        env = dict(
            os.environ,
            PYTHONPATH="",
            SETUPTOOLS_USE_DISTUTILS="stdlib",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            NODE_RANK=str(node),
        )
        run_dir = f"hydra.run.dir={tmp_path / str(node)}"
        cmd = [sys.executable, str(ROOT / "train.py"), *args, "device=ddp_cpu", "devices=1",
               "num_nodes=2", run_dir]  # fmt: skip
        procs.append(
            subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
        )
    try:
        errs = [p.communicate(timeout=timeout)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], errs[0][-2000:] + errs[1][-2000:]
    return [json.loads((tmp_path / f"{r}/ranks/rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.distributed
@pytest.mark.slow
def test_two_nodes_over_gloo(tmp_path):
    """num_nodes=2, the nodes sharing the corpus cache (a synthetic corpus: each node prepares
    all of it, as it is generated, not read)."""
    args = ["+experiment=sgns", *TINY, *CHUNK, "epochs=1", f"data.cache_dir={tmp_path / 'cache'}"]
    ranks = _two_nodes(tmp_path, args)
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] > 0
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    (a0, a1), (b0, b1) = ranks[0]["shard"]["sentences"], ranks[1]["shard"]["sentences"]
    assert a0 == 0 and a1 == b0 and b1 == 600 and a0 < a1 < b1
    assert (tmp_path / "0" / "vectors.bin").is_file()


@pytest.mark.distributed
@pytest.mark.slow
def test_two_nodes_encode_and_train_their_own_shards_of_a_text_corpus(tmp_path):
    """A text corpus on two nodes: each reads and encodes only its half, both build the vocabulary
    one process builds, and each trains its shard. The corpus is two files of the same lines in
    another order, so the byte cut between them is where the tokens balance: the ranks train
    what they train on one node, chunk for chunk, with the same draws (the kernel is given each
    shard's first corpus position), so the weights are a one-node two-rank run's. Then the run
    resumes from its checkpoint on the same shards."""
    from ns_plugins.app.datamodule import _Chunks
    from ns_plugins.data import Vocab, prepare_corpus

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)] + ["much-longer-word"]
    lines = [" ".join(rng.choice(words, int(rng.integers(2, 14)))) for _ in range(300)]
    (corpus / "a.txt").write_text("\n".join(lines) + "\n")
    (corpus / "b.txt").write_text("\n".join(rng.permutation(lines)) + "\n")
    cache = tmp_path / "cache"
    args = ["+experiment=sgns_text", *TINY, *CHUNK, "model.chunk_words=600", "workers=1",
            f"data.path={corpus}", f"data.cache_dir={cache}"]  # fmt: skip
    ranks = _two_nodes(tmp_path, [*args, "epochs=1"])

    whole = prepare_corpus(corpus, tmp_path / "one", min_count=5, workers=1)
    assert Vocab.load(tmp_path / "0" / "vocab.tsv") == whole.vocab
    size = sum(f.stat().st_size for f in corpus.iterdir())
    shards = sorted((d for d in cache.iterdir() if d.is_dir()), key=lambda d: d.name)
    recipes = [json.loads((d / "recipe.json").read_text()) for d in shards]
    assert sorted(r["shard"] for r in recipes) == [[0, 2], [1, 2]]  # no whole-corpus encoding
    for d in shards:
        meta = json.loads((d / "meta.json").read_text())
        assert meta["shard_bytes"] == size // 2 and meta["n_tokens"] < whole.n_tokens
        assert Vocab.load(d / "vocab.tsv") == whole.vocab
    # the one-node layout: sentences and chunks per rank
    offsets = np.asarray(whole.offsets)
    one_node = [_Chunks(offsets, 600, r, 2) for r in (0, 1)]
    for r, rank in enumerate(ranks):
        assert rank["world_size"] == 2
        assert rank["shard"]["sentences"] == one_node[r].edges[r : r + 2].tolist()
        assert rank["steps_per_epoch"] == len(one_node[r]) == rank["global_step"] > 1
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    # one node, two ranks, the whole corpus encoded once: the same weights
    proc = _train_py(*args, "epochs=1", "device=ddp_cpu", "devices=2",
                     f"data.cache_dir={tmp_path / 'one_cache'}",
                     f"hydra.run.dir={tmp_path / 'one'}", timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "ranks" / "rank0.json").read_text())
    assert one["shard"] == ranks[0]["shard"] and one["global_step"] == ranks[0]["global_step"]
    assert one["weights_sha256"] == ranks[0]["weights_sha256"]

    # resumed for a second epoch: the same shards (not encoded again), the same layout
    stamps = [(d / "ids.int32").stat().st_mtime_ns for d in shards]
    ckpt = tmp_path / "0" / "checkpoints" / "last.ckpt"
    resumed = _two_nodes(tmp_path, [*args, "epochs=2", f"ckpt_path={ckpt}"])
    assert [(d / "ids.int32").stat().st_mtime_ns for d in shards] == stamps
    for before, after in zip(ranks, resumed):
        assert after["shard"] == before["shard"]
        assert after["global_step"] == 2 * before["steps_per_epoch"]
    assert resumed[0]["weights_sha256"] == resumed[1]["weights_sha256"]
    with open(
        tmp_path / "0" / "csv" / "metrics.csv"
    ) as f:  # the second run went on from the checkpoint
        logged = [int(row["step"]) for row in csv.DictReader(f)]
    assert logged == list(range(2 * ranks[0]["steps_per_epoch"]))


def test_shared_negatives_needs_the_chunk_engine(tmp_path):
    cfg = _cfg("+experiment=sgns", "engine=batched", "model.shared_negatives=true")
    with pytest.raises(ConfigError, match="shared_negatives"):
        train(cfg, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("batch_size, sentences", [(65536, 6000), (1048576, 20000)])
def test_large_batches_stay_finite(batch_size, sentences, tmp_path, cache):
    """A frequent word's summed gradient over a huge batch overshoots; the row-step cap
    (model.max_row_step) keeps the weights finite and the planted clusters learned."""
    args = ["+experiment=sgns", "engine=batched", f"batch_size={batch_size}", "epochs=3",
            f"data.synthetic_sentences={sentences}",
            f"data.cache_dir={cache / str(sentences)}"]  # fmt: skip
    capped = train(_cfg(*args), tmp_path / "capped")
    assert np.isfinite(capped["final_loss"]) and capped["final_loss"] < 5
    _, vectors = load_word2vec(tmp_path / "capped" / "vectors.bin")
    assert np.isfinite(vectors).all()
    assert capped["eval"]["planted_purity"] > 0.8
    if batch_size == 65536:  # without the cap the same run blows up
        uncapped = train(_cfg(*args, "model.max_row_step=null"), tmp_path / "uncapped")
        assert not uncapped["final_loss"] < 100


@pytest.mark.slow
def test_multirun_finishes_every_job_and_shares_the_corpus(tmp_path):
    """Two good jobs and a bad one: the bad one is logged, the sweep goes on, and the jobs share
    one encoded corpus in the sweep directory."""
    proc = _train_py(
        "-m",
        "+experiment=sgns",
        *TINY,
        *CHUNK,
        "epochs=1",
        "seed=1,2,-1",
        "optimized_metric=eval/planted_purity",
        f"hydra.sweep.dir={tmp_path}",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in (0, 1):
        metrics = json.loads((tmp_path / str(job) / "metrics.json").read_text())
        assert metrics["config"]["seed"] == job + 1
        assert not (tmp_path / str(job) / "data").exists()
    assert (tmp_path / "data").is_dir()  # the shared cache
    assert not (tmp_path / "2" / "metrics.json").exists()
    assert "seed must be >= 0" in (tmp_path / "2" / "ns-train.log").read_text()


def test_optimized_metric_is_read_from_the_metrics():
    from ns_plugins.app.cli import _metric

    metrics = {"eval": {"wordsim353": 0.5}, "final_loss": 2.0}
    assert _metric(metrics, "eval/wordsim353") == 0.5
    assert _metric(metrics, "final_loss") == 2.0
    assert np.isnan(_metric(metrics, "eval/simlex999"))
    assert _metric(metrics, None) is None


@pytest.mark.slow
def test_progress_lines_in_the_log_file_when_not_a_terminal(tmp_path):
    proc = _train_py("+experiment=sgns", *TINY, *CHUNK, "epochs=2",
                     "trainer.enable_progress_bar=true", "trainer.progress_seconds=0",
                     f"hydra.run.dir={tmp_path}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "ns-train.log").read_text()
    assert "\r" not in text and "\r" not in proc.stderr  # no bar redraws in logs
    for epoch in (1, 2):
        assert f"EPOCH {epoch} - PROGRESS:" in text and f"EPOCH {epoch} - DONE: 100.0%" in text
    line = next(ln for ln in text.splitlines() if "EPOCH 2 - DONE" in ln)
    assert "words/s" in line and "loss" in line and "lr" in line


def test_load_from_checkpoint_rebuilds_the_batched_module(full_run):
    from ns_plugins.app.engines.batched import BatchedModule

    _, run_dir, _ = full_run
    module = BatchedModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    _, vectors = load_word2vec(run_dir / "vectors.bin")
    np.testing.assert_array_equal(module.vectors(), vectors)
    assert module.noise is not None and len(module.counts) == len(vectors)


def test_a_checkpoint_of_the_other_engine_is_refused(full_run, tmp_path, cache):
    from ns_plugins.errors import UsageError

    _, run_dir, _ = full_run  # a batched run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    with pytest.raises(UsageError, match="not written by the chunk engine"):
        train(_cfg("+experiment=sgns", *CHUNK, f"ckpt_path={ckpt}"), tmp_path / "a")
    args = ["+experiment=sgns", *PAIRS, "epochs=2", f"data.cache_dir={cache / 'sgns'}"]
    with pytest.raises(UsageError, match="negative=5 there, 3 here"):
        train(_cfg(*args, "negative=3", f"ckpt_path={ckpt}"), tmp_path / "b")


def test_unwritable_run_directory_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the run directory should go")
    proc = _train_py("+experiment=sgns", *TINY, f"hydra.run.dir={blocker / 'run'}", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"ns-train: error: cannot write the run directory {blocker / 'run'}: Not a directory"
    ]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_while_checkpointing_is_one_line(tmp_path):
    """A write into /dev/full fails with ENOSPC as on a full disk: the checkpoint's .part file
    linked there makes the real torch.save fail (torch's own file writer raised a RuntimeError,
    "unexpected pos", with a traceback)."""
    part = tmp_path / "checkpoints" / "last.ckpt.part"
    part.parent.mkdir()
    part.symlink_to("/dev/full")
    proc = _train_py("+experiment=sgns", *TINY, *CHUNK, "epochs=1", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"ns-train: error: {tmp_path / 'checkpoints' / 'last.ckpt'}: No space left on device"
    )
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("checkpoints/*"))


def test_a_malformed_evaluation_file_fails_before_training(tmp_path):
    from ns_plugins.errors import UsageError

    bad = tmp_path / "sim.tsv"
    bad.write_text("the of not-a-number\nand to 3.0 extra words\n")
    with pytest.raises(UsageError, match="sim.tsv"):
        train(_cfg("+experiment=sgns", *CHUNK, f"eval.wordsim={bad}"), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_an_optuna_sweep_optimises_the_returned_metric(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import yaml

    proc = _train_py("-m", "+experiment=sgns", "+hparams_search=optuna", *TINY, *CHUNK,
                     "hydra.sweeper.n_trials=2", "optimized_metric=eval/planted_purity",
                     "epochs=1", f"hydra.sweep.dir={tmp_path}", timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = [
        json.loads((tmp_path / str(j) / "metrics.json").read_text())["eval"]["planted_purity"]
        for j in (0, 1)
    ]
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())["best_value"]
    assert best == pytest.approx(max(scores))


@pytest.mark.parametrize("each_epoch", [False, True])
def test_analogies_are_scored_at_the_last_epoch_unless_asked(each_epoch, tmp_path, cache):
    questions = tmp_path / "questions.txt"
    questions.write_text(": fillers\nthe of and to\nof the to and\n")
    sim = tmp_path / "sim.tsv"
    sim.write_text("the\tof\t8.0\nthe\tand\t6.5\nof\tto\t3.0\nand\tto\t1.0\n")
    cfg = _cfg("+experiment=sgns", *CHUNK, "epochs=3", f"eval.analogies={questions}",
               f"eval.wordsim={sim}", f"eval.analogies_each_epoch={each_epoch}",
               f"data.cache_dir={cache / 'sgns'}")  # fmt: skip
    metrics = train(cfg, tmp_path / "run")
    assert metrics["eval"]["analogy_answered"] == 2
    with open(tmp_path / "run" / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    epochs_with = [r["epoch"] for r in rows if r.get("eval/analogy")]
    epochs_sim = [r["epoch"] for r in rows if r.get("eval/wordsim353")]
    assert epochs_sim == ["0", "1", "2"]
    assert epochs_with == (["0", "1", "2"] if each_epoch else ["2"])


def test_the_corpus_is_encoded_while_torch_is_imported(tmp_path, text_corpus):
    """Before torch is imported, ``train`` forks a child that fills the corpus cache; the run then
    reuses that directory. A child that meets a bad corpus exits quietly and leaves nothing."""
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00 not gzip")
    code = f"""
import sys
from pathlib import Path
from hydra import compose, initialize_config_dir
from ns_plugins.app.config import config_dir
from ns_plugins.app.launch import _encode_in_background
from ns_plugins.app.recipe import CorpusRecipe, cache_dir_of
assert "torch" not in sys.modules
for corpus, run in (({str(text_corpus)!r}, "good"), ({str(bad)!r}, "bad")):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides={[*TINY]!r} + ["+experiment=sgns_text", "min_count=1",
                      "data.path=" + corpus])
    run_dir = Path({str(tmp_path)!r}) / run
    child = _encode_in_background(CorpusRecipe.from_config(cfg), cache_dir_of(cfg, run_dir))
    child.join()
    print(run, child.exitcode)
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT), SETUPTOOLS_USE_DISTUTILS="stdlib")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["good", "0", "bad", "0"]
    (encoded,) = [p for p in (tmp_path / "good" / "data").iterdir() if p.is_dir()]
    assert (encoded / "recipe.json").is_file()
    assert not [p for p in (tmp_path / "bad" / "data").iterdir() if p.is_dir()]
    # the run's own preparation reuses the child's directory
    cfg = _cfg("+experiment=sgns_text", "min_count=1", f"data.path={text_corpus}")
    before = (encoded / "ids.int32").stat().st_mtime_ns
    assert CorpusRecipe.from_config(cfg).prepare(cache_dir_of(cfg, tmp_path / "good")) == encoded
    assert (encoded / "ids.int32").stat().st_mtime_ns == before
