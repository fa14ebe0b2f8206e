"""Chainer 7.8.1's own negative sampling against the ns_plugins.chainer drop-ins, in one run, CPU.

    python benchmarks/bench_chainer.py [--quick] [--repeat N] [--corpus PATH] [--corpus-words N]

1. The loss, forward + backward through Chainer's graph (``F.negative_sampling`` vs
   ``ns_plugins.chainer.negative_sampling``), float32, median of N, at the shapes of the core
   issue (B, d, V, k); both sides get the same x, W, labels and samples.
2. ``WalkerAlias`` construction at V = 1,000,000 (Chainer's vs the drop-in's).
3. The legacy program ``compat/train_word2vec.py`` (skip-gram), one epoch on the first N words
   of the text corpus ``--corpus`` (plain or .gz), run unchanged on plain Chainer and under
   ``python -m ns_plugins.chainer``: the trainer's elapsed time (start-up excluded).
No torch is needed (nor imported) on either side.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numba
import numpy as np

from ns_plugins.chainer import import_fixes

import_fixes.apply()

import chainer  # noqa: E402
import chainer.functions as F  # noqa: E402
from chainer.utils import walker_alias as chainer_walker_alias  # noqa: E402

import ns_plugins.chainer as nsc  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import commit, median_time  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHAPES = [(10000, 100, 10000, 5), (4096, 300, 100000, 5), (65536, 128, 1000000, 5)]
QUICK_SHAPES = [(2000, 100, 10000, 5), (1024, 300, 100000, 5)]


def loss_step(fn, x, t, W, samples, k):
    xv, Wv = chainer.Variable(x), chainer.Variable(W)
    y = fn(xv, t, Wv, lambda shape: samples.copy(), k)
    y.backward()
    return xv.grad, Wv.grad


def bench_loss(B, d, V, k, repeat):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, d), dtype=np.float32)
    W = rng.standard_normal((V, d), dtype=np.float32) * 0.1
    t = rng.integers(0, V, B).astype(np.int32)
    samples = rng.integers(0, V, (B, k + 1)).astype(np.int32)
    ours_gx, ours_gW = loss_step(nsc.negative_sampling, x, t, W, samples, k)
    ref_gx, ref_gW = loss_step(F.negative_sampling, x, t, W, samples, k)
    err = max(
        np.linalg.norm(ours_gx - ref_gx) / np.linalg.norm(ref_gx),
        np.linalg.norm(ours_gW - ref_gW) / np.linalg.norm(ref_gW),
    )
    # A training loop drops each step's gradients (cleargrads) before the next backward; holding
    # them here would keep the drop-in from reusing its gradient array.
    del ours_gx, ours_gW, ref_gx, ref_gW
    theirs = median_time(
        lambda: loss_step(F.negative_sampling, x, t, W, samples, k), repeat, warmup=3
    )
    ours = median_time(
        lambda: loss_step(nsc.negative_sampling, x, t, W, samples, k), repeat, warmup=3
    )
    return theirs, ours, err


def bench_walker(V, repeat):
    probs = np.random.default_rng(0).zipf(1.5, V).astype(np.float64) ** 0.75
    theirs = median_time(lambda: chainer_walker_alias.WalkerAlias(probs), repeat, warmup=1)
    ours = median_time(lambda: nsc.WalkerAlias(probs), repeat, warmup=1)
    return theirs, ours


def bench_program(source, words, tmp):
    corpus = Path(tmp) / "corpus.txt"
    with (gzip.open if source.suffix == ".gz" else open)(source, "rt") as f:
        corpus.write_text(" ".join(f.read(words * 12).split()[:words]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NS_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONWARNINGS"] = "ignore"
    args = [str(ROOT / "compat" / "train_word2vec.py"), "--corpus", str(corpus), "--epoch", "1"]
    args += ["--val-fraction", "0", "--quiet"]
    times = {}
    # plain Chainer gets only the import fixes it needs on numpy 2 / new setuptools
    plain = (
        "import runpy, sys; from ns_plugins.chainer import import_fixes; import_fixes.apply(); "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    for name, prefix, extra in [
        ("chainer", ["-c", plain], {"SETUPTOOLS_USE_DISTUTILS": "stdlib"}),
        ("drop-in", ["-m", "ns_plugins.chainer"], {}),
    ]:
        out = Path(tmp) / name
        subprocess.run(
            [sys.executable, *prefix, *args, "--out", str(out)],
            env={**env, **extra},
            check=True,
            capture_output=True,
        )
        times[name] = json.loads((out / "log").read_text())[-1]["elapsed_time"]
    return times["chainer"], times["drop-in"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, small corpus")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--corpus", type=Path, help="text corpus for the legacy program")
    parser.add_argument("--corpus-words", type=int, default=200_000)
    parser.add_argument("--skip-program", action="store_true")
    args = parser.parse_args()
    shapes = QUICK_SHAPES if args.quick else SHAPES
    words = 20_000 if args.quick else args.corpus_words

    print(f"# bench_chainer  {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(
        f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}, numba {numba.__version__} "
        f"({numba.get_num_threads()} threads), chainer {chainer.__version__}, "
        f"numpy {np.__version__}, torch loaded: {'torch' in sys.modules}, commit {commit()}"
    )
    print()
    print(f"{'case':<42}{'chainer s':>12}{'drop-in s':>12}{'speed-up':>10}{'rel err':>10}")
    for B, d, V, k in shapes:
        theirs, ours, err = bench_loss(B, d, V, k, args.repeat)
        case = f"loss fwd+bwd B={B} d={d} V={V} k={k}"
        print(f"{case:<42}{theirs:>12.4f}{ours:>12.4f}{theirs / ours:>9.1f}x{err:>10.1e}")
    V = 100_000 if args.quick else 1_000_000
    theirs, ours = bench_walker(V, args.repeat)
    case = f"WalkerAlias build V={V}"
    print(f"{case:<42}{theirs:>12.4f}{ours:>12.4f}{theirs / ours:>9.1f}x{'':>10}")
    if not args.skip_program:
        if args.corpus is None or not args.corpus.exists():
            print(f"# corpus {args.corpus} not found: legacy program skipped (--corpus PATH)")
            return
        with tempfile.TemporaryDirectory() as tmp:
            theirs, ours = bench_program(args.corpus, words, tmp)
        case = f"compat word2vec, 1 epoch, {words} words"
        print(f"{case:<42}{theirs:>12.2f}{ours:>12.2f}{theirs / ours:>9.1f}x{'':>10}")


if __name__ == "__main__":
    main()
