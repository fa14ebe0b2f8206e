"""Peak memory at a large vocabulary: gensim's Word2Vec against ``train.py``, same corpus.

    python benchmarks/bench_memory.py                    # V = 1,000,000, vector_size 300
    python benchmarks/bench_memory.py --vocab 200000 --dim 100

A synthetic corpus where every one of ``--vocab`` words occurs (each once, plus Zipf-distributed
draws), one epoch of skip-gram with ``min_count=1``. Each trainer runs in its own subprocess and
its peak resident set (VmHWM) is sampled until it exits; both hold two V x d float32 tables, so
the ratio shows what each adds on top. Ours runs as users run it: ``train.py
+experiment=sgns_text`` through Lightning (chunk engine), export and report included.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_gensim import ROOT, _cpu, _wait  # noqa: E402
from common import commit  # noqa: E402

GENSIM = """
import sys
from gensim.models import Word2Vec
from gensim.models.word2vec import LineSentence
corpus, dim = sys.argv[1], int(sys.argv[2])
Word2Vec(LineSentence(corpus), vector_size=dim, min_count=1, sg=1, epochs=1, workers=2, seed=1)
"""


def _corpus(path: Path, vocab: int, extra: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    ids = np.concatenate([np.arange(vocab), np.minimum(rng.zipf(1.3, extra) - 1, vocab - 1)])
    rng.shuffle(ids)
    with open(path, "w") as f:
        for start in range(0, ids.size, 20):
            f.write(" ".join(f"w{i}" for i in ids[start : start + 20]) + "\n")
    return ids.size


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--vocab", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=300)
    p.add_argument("--extra", type=int, default=2_000_000, help="Zipf draws beyond one of each")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as work:
        work = Path(work)
        corpus = work / "corpus.txt"
        n = _corpus(corpus, args.vocab, args.extra, seed=0)
        runs = {
            "gensim 4.3.3": [sys.executable, "-c", GENSIM, str(corpus), str(args.dim)],
            "ours, train.py": [
                sys.executable,
                "train.py",
                "+experiment=sgns_text",
                f"data.path={corpus}",
                f"vector_size={args.dim}",
                "min_count=1",
                "epochs=1",
                f"hydra.run.dir={work / 'run'}",
            ],
        }
        rows = {}
        for name, cmd in runs.items():
            wall, rss, code, _ = _wait(cmd, work / f"{name.split()[0]}.log")
            if code != 0:
                tail = (work / f"{name.split()[0]}.log").read_text()[-3000:]
                raise SystemExit(f"{name} failed with status {code}:\n{tail}")
            rows[name] = (wall, rss)
            print(f"  {name}: {rss:,.0f} MiB peak, {wall:.1f} s", flush=True)
    tables = 2 * args.vocab * args.dim * 4 / 2**20
    print()
    print(f"machine: {_cpu()}, {os.cpu_count()} CPUs | date: "
          f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC | commit: {commit()}")  # fmt: skip
    print(f"corpus: {n:,} tokens, V = {args.vocab:,}, vector_size {args.dim}, 1 epoch, "
          f"two tables = {tables:,.0f} MiB")  # fmt: skip
    print("| trainer | peak RSS MiB | over the two tables MiB | process s |")
    print("|---|---|---|---|")
    for name, (wall, rss) in rows.items():
        print(f"| {name} | {rss:,.0f} | {rss - tables:,.0f} | {wall:.1f} |")
    base = rows["gensim 4.3.3"][1]
    print(f"| ratio ours / gensim | {rows['ours, train.py'][1] / base:.2f}x | | |")


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
