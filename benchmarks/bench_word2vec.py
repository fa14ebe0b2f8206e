"""A gensim tutorial, run twice: with gensim's Word2Vec and with ours, only the import changed.

    python benchmarks/bench_word2vec.py --corpus gcide.txt.gz --wordsim wordsim353.tsv \\
        --simlex simlex999.txt --analogies questions-words.txt

The tutorial (``tutorial`` below) streams the corpus through a restartable iterable, trains at
construction, asks most_similar and similarity, saves and loads the model, continues training on
new sentences (every 20th line, held out of the first training) with ``build_vocab(update=True)``
and ``train``, and scores the vectors with ``wv.evaluate_word_pairs`` and
``wv.evaluate_word_analogies``. Each library runs it in its own subprocess with the same settings;
the table shows wall times and scores side by side.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import commit  # noqa: E402

SETTINGS = dict(vector_size=100, window=5, min_count=5, sample=1e-3, negative=5, sg=1, seed=1,
                alpha=0.025, min_alpha=0.0001)  # fmt: skip
HELD_OUT = 20  # every 20th line is a "new" sentence for the continued training


class Corpus:
    """Sentences of a (gzipped) text file, one per line, split on whitespace; every pass re-reads
    the file, as gensim's tutorials stream a corpus. ``new=True`` gives the held-out lines."""

    def __init__(self, path, new: bool = False):
        self.path, self.new = path, new

    def __iter__(self):
        opener = gzip.open if str(self.path).endswith(".gz") else open
        with opener(self.path, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                if (i % HELD_OUT == 0) == self.new:
                    words = line.split()
                    if words:
                        yield words


def tutorial(Word2Vec, args) -> dict:  # noqa: N803 - the class under test
    times = {}
    t0 = time.perf_counter()
    model = Word2Vec(
        sentences=Corpus(args.corpus), epochs=args.epochs, workers=args.workers, **SETTINGS
    )
    times["train"] = time.perf_counter() - t0
    query = "king" if "king" in model.wv else model.wv.index_to_key[0]
    neighbours = model.wv.most_similar(query, topn=5)
    pair = model.wv.similarity("king", "queen") if "queen" in model.wv else float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model.save(os.path.join(tmp, "w2v.model"))
        model = Word2Vec.load(os.path.join(tmp, "w2v.model"))
        times["save_load"] = time.perf_counter() - t0
    new = Corpus(args.corpus, new=True)
    t0 = time.perf_counter()
    model.build_vocab(new, update=True)
    model.train(new, total_examples=model.corpus_count, epochs=model.epochs)
    times["continue"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    wordsim = model.wv.evaluate_word_pairs(args.wordsim)[1][0]
    simlex = model.wv.evaluate_word_pairs(args.simlex)[1][0]
    analogy = model.wv.evaluate_word_analogies(args.analogies)[0]
    times["evaluate"] = time.perf_counter() - t0
    return {
        "times": times,
        "vocab": len(model.wv),
        "query": query,
        "neighbours": [w for w, _ in neighbours],
        "king_queen": float(pair),
        "wordsim": float(wordsim),
        "simlex": float(simlex),
        "analogy": float(analogy),
    }


def _child(args) -> None:
    if args.library == "gensim":
        from gensim.models import Word2Vec
    else:
        from ns_plugins import Word2Vec
    print(json.dumps(tutorial(Word2Vec, args)))


def _run(library: str, args) -> dict:
    cmd = [sys.executable, __file__, "--library", library]
    for key in ("corpus", "wordsim", "simlex", "analogies", "epochs", "workers"):
        cmd += [f"--{key}", str(getattr(args, key))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{library} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--corpus", type=Path, required=True, help="text corpus, .gz allowed")
    p.add_argument("--wordsim", type=Path, required=True, help="wordsim353.tsv")
    p.add_argument("--simlex", type=Path, required=True, help="simlex999.txt")
    p.add_argument("--analogies", type=Path, required=True, help="questions-words.txt")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--library", choices=["gensim", "ns_plugins"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.library:
        _child(args)
        return
    print(
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC | commit {commit()} | "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs | "
        f"load {os.getloadavg()[0]:.2f} | corpus {args.corpus.name} | epochs {args.epochs}, "
        f"workers {args.workers}, {SETTINGS}"
    )
    results = {lib: _run(lib, args) for lib in ("gensim", "ns_plugins")}
    g, o = results["gensim"], results["ns_plugins"]
    rows = [
        ("build + train at construction, s", "train", ".1f"),
        ("save + load, s", "save_load", ".2f"),
        ("build_vocab(update) + train, s", "continue", ".1f"),
        ("evaluate, s", "evaluate", ".2f"),
    ]
    print("\n| | gensim 4.3.3 | ns_plugins | ours / gensim |\n|---|---|---|---|")
    for name, key, fmt in rows:
        a, b = g["times"][key], o["times"][key]
        print(f"| {name} | {a:{fmt}} | {b:{fmt}} | {b / a:.2f}x |")
    total_g, total_o = sum(g["times"].values()), sum(o["times"].values())
    print(f"| whole tutorial, s | {total_g:.1f} | {total_o:.1f} | {total_o / total_g:.2f}x |")
    for name, key in (("WordSim-353", "wordsim"), ("SimLex-999", "simlex"), ("analogy", "analogy")):
        print(f"| {name} | {g[key]:.3f} | {o[key]:.3f} | {o[key] - g[key]:+.3f} |")
    print(f"| vocabulary | {g['vocab']:,} | {o['vocab']:,} | |")
    print(f"\nmost_similar({g['query']!r}): gensim {g['neighbours']}")
    print(f"most_similar({o['query']!r}): ours   {o['neighbours']}")


if __name__ == "__main__":
    main()
