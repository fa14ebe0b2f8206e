"""One ``Word2Vec(corpus_file=...)`` call, gensim's and ours, timed from the import to the end of
the constructor, with peak memory and scores; each run in a fresh process, alternating.

    python benchmarks/bench_word2vec_call.py --mb 12 --epochs 3        # the small corpus
    python benchmarks/bench_word2vec_call.py --mb 0 --epochs 5 --sg 0  # all of gcide, defaults

The corpus is the first ``--mb`` MB of gcide's text (cut at a line; 0: all of it), written once
to a plain file. Both libraries get the same arguments. The vectors of every run are scored by one
evaluator (``ns_plugins.embeddings``) on WordSim-353, SimLex-999 and the analogy set.

``--gensim-input lines`` gives gensim the file as ``LineSentence`` instead of ``corpus_file=``.
gensim's ``corpus_file`` mode decays the learning rate by each thread's share of the corpus against
the whole corpus, so with 2 workers the rate falls only half as far in an epoch as it should
(``word2vec_corpusfile.pyx``, ``get_next_alpha``): a higher rate throughout, which scores higher
on a small corpus. Its ``LineSentence`` path, like ours, decays to ``min_alpha`` over all epochs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, machine_line, peak_rss_mib  # noqa: E402

LIBRARIES = ("gensim", "ns_plugins")


def _child(args) -> None:
    t0 = time.perf_counter()
    if args.library == "gensim":
        from gensim.models import Word2Vec
    else:
        from ns_plugins import Word2Vec
    source = {"corpus_file": str(args.file)}
    if args.library == "gensim" and args.gensim_input == "lines":
        from gensim.models.word2vec import LineSentence

        source = {"sentences": LineSentence(str(args.file))}
    model = Word2Vec(**source, vector_size=args.vector_size, window=5, min_count=5, sg=args.sg,
                     negative=5, epochs=args.epochs, workers=args.workers)  # fmt: skip
    seconds = time.perf_counter() - t0
    model.wv.save_word2vec_format(str(args.out), binary=True)
    print(json.dumps({"seconds": seconds, "rss_mib": peak_rss_mib(), "vocab": len(model.wv)}))


def _run(library: str, args, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--library", library, "--file", str(args.file),
           "--out", str(out), "--epochs", str(args.epochs), "--sg", str(args.sg),
           "--workers", str(args.workers), "--vector-size", str(args.vector_size),
           "--gensim-input", args.gensim_input]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{library} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _scores(path: Path, data: Path) -> dict:
    from ns_plugins.embeddings import KeyedVectors

    kv = KeyedVectors.load_word2vec_format(path, binary=True)
    return {
        "wordsim": kv.evaluate_word_pairs(data / "wordsim353.tsv")[1][0],
        "simlex": kv.evaluate_word_pairs(data / "simlex999.txt")[1][0],
        "analogy": kv.evaluate_word_analogies(data / "questions-words.txt")[0],
    }


def _prefix(corpus: Path, mb: float, out: Path) -> int:
    """The first ``mb`` MB of the corpus's text (all of it for 0) as a plain file; its words."""
    limit = int(mb * 1e6) if mb > 0 else None
    written = words = 0
    with gzip.open(corpus, "rt", encoding="utf-8") as f, open(out, "w", encoding="utf-8") as g:
        for line in f:
            if limit is not None and written + len(line) > limit:
                break
            g.write(line)
            written += len(line)
            words += len(line.split())
    return words


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--corpus", type=Path, help="default: $NS_PLUGINS_DATA/gcide.txt.gz")
    p.add_argument("--data", type=Path, help="folder of the evaluation files ($NS_PLUGINS_DATA)")
    p.add_argument("--mb", type=float, default=12.0, help="MB of text to use; 0 for all")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--sg", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--vector-size", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--gensim-input", choices=["file", "lines"], default="file",
                   help="gensim reads corpus_file= (file) or LineSentence (lines); ours always "
                   "corpus_file=")  # fmt: skip
    p.add_argument("--library", choices=LIBRARIES, help=argparse.SUPPRESS)
    p.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.library:
        _child(args)
        return
    data = args.data or DATA
    corpus = args.corpus or (data / "gcide.txt.gz" if data else None)
    if corpus is None or data is None:
        p.error("give --corpus and --data, or set NS_PLUGINS_DATA to the folder that holds them")
    with tempfile.TemporaryDirectory() as tmp:
        args.file = Path(tmp) / "corpus.txt"
        n_words = _prefix(corpus, args.mb, args.file)
        print(machine_line(corpus=f"{corpus.name} first {args.mb:g} MB ({n_words:,} words)",
                           epochs=args.epochs, sg=args.sg, workers=args.workers,
                           vector_size=args.vector_size, repeat=args.repeat))  # fmt: skip
        runs = {lib: [] for lib in LIBRARIES}
        for i in range(args.repeat):
            for lib in LIBRARIES if i % 2 == 0 else LIBRARIES[::-1]:
                out = Path(tmp) / f"{lib}{i}.bin"
                result = _run(lib, args, out)
                result.update(_scores(out, data))
                runs[lib].append(result)
                print(f"  run {i + 1} {lib}: {result['seconds']:.2f} s, "
                      f"{result['rss_mib']:.0f} MiB", file=sys.stderr)  # fmt: skip
    med = {lib: {k: statistics.median(r[k] for r in runs[lib]) for k in runs[lib][0]}
           for lib in LIBRARIES}  # fmt: skip
    g, o = med["gensim"], med["ns_plugins"]
    print("\n| median of runs | gensim 4.3.3 | ns_plugins | ours vs gensim |\n|---|---|---|---|")
    print(f"| import + Word2Vec(...), s | {g['seconds']:.2f} | {o['seconds']:.2f} | "
          f"{g['seconds'] / o['seconds']:.2f}x faster |")  # fmt: skip
    print(f"| peak RSS, MiB | {g['rss_mib']:.0f} | {o['rss_mib']:.0f} | "
          f"{o['rss_mib'] / g['rss_mib']:.2f}x |")  # fmt: skip
    for name, key in (("WordSim-353", "wordsim"), ("SimLex-999", "simlex"), ("analogy", "analogy")):
        print(f"| {name} | {g[key]:.3f} | {o[key]:.3f} | {o[key] - g[key]:+.3f} |")
    print(f"| vocabulary | {g['vocab']:,.0f} | {o['vocab']:,.0f} | |")
    for lib in LIBRARIES:
        times = sorted(r["seconds"] for r in runs[lib])
        print(f"{lib}: seconds {', '.join(f'{t:.2f}' for t in times)}")


if __name__ == "__main__":
    main()
