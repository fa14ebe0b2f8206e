"""Data pipeline benchmark, side by side with the peers on this machine.

    python benchmarks/bench_data.py [--tokens 200000] [--repeat 5] [--corpus PATH] [--quick]

1. Keras-compatible ``skipgrams`` against keras-preprocessing's on the first ``--tokens`` tokens of
   the corpus (ids by frequency rank, window 4, one negative per positive, shuffled), with and
   without a sampling table, returning lists (Keras's types) or arrays; checks that both give the
   same positive pairs.
2. Reading the corpus: vocabulary counting against gensim's ``build_vocab`` on ``LineSentence``,
   and encoding to ids on disk.
3. Skip-gram pairs per second from ``SkipGramBatches`` over the encoded corpus (window 5,
   sample 1e-3, shrinking windows).

Every figure is a median over repeats, in wall-clock and in process CPU seconds: all the code timed
is single-threaded, so on a shared machine the CPU seconds are the steadier comparison.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ns_plugins.data import (
    SkipGramBatches,
    Vocab,
    encode_corpus,
    make_sampling_table,
    read_sentences,
    skipgrams,
)

ROOT = Path(__file__).resolve().parents[1]
# $NS_PLUGINS_DATA: a folder with gcide.txt.gz (the benchmarks' real corpus)
_DATA = os.environ.get("NS_PLUGINS_DATA")
DEFAULT_CORPUS = Path(_DATA) / "gcide.txt.gz" if _DATA else None


class Timing:
    def __init__(self, wall, cpu):
        self.wall, self.cpu = wall, cpu


def timed(fn, repeat, warmup=0):
    """(Timing of medians, last result)."""
    for _ in range(warmup):
        fn()
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        # Drop the previous result first: Python's cyclic GC walks every live object while
        # millions of lists are built, so a result kept alive would slow the next call.
        out = None
        gc.collect()
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        cpus.append(time.process_time() - c)
        walls.append(time.perf_counter() - w)
    return Timing(statistics.median(walls), statistics.median(cpus)), out


def header():
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# bench_data  {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC  commit {commit or '?'}")
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}, "
        f"Python {platform.python_version()}, numpy {np.__version__}"
    )


def token_ids(corpus: Path, n: int) -> tuple[np.ndarray, int]:
    """The first ``n`` words of the corpus as ids by frequency rank (1 = most frequent, 0 unused,
    as Keras's Tokenizer numbers words)."""
    words: list[str] = []
    for s in read_sentences(corpus):
        words.extend(s)
        if len(words) >= n:
            break
    words = words[:n]
    index = {w: i + 1 for i, (w, _) in enumerate(Counter(words).most_common())}
    return np.array([index[w] for w in words], dtype=np.int64), len(index) + 1


def bench_skipgrams(corpus: Path, n_tokens: int, repeat: int) -> None:
    from keras_preprocessing.sequence import skipgrams as keras_skipgrams

    seq, vocab_size = token_ids(corpus, n_tokens)
    seq_list = seq.tolist()
    print(
        f"\n## skipgrams: {seq.size:,} tokens of {corpus.name}, vocabulary {vocab_size:,}, "
        "window 4, negative_samples 1.0, shuffle; both get the same Python list of ids"
    )
    cols = ("case", "pairs", "keras s", "ours s", "keras cpu", "ours cpu", "x wall", "x cpu")
    print(f"{cols[0]:<30}" + "".join(f"{c:>11}" for c in cols[1:]))
    table = make_sampling_table(vocab_size)
    for label, kw in [("no table", {}), ("sampling table 1e-5", {"sampling_table": table})]:
        tk, (kc, kl) = timed(
            lambda kw=kw: keras_skipgrams(seq_list, vocab_size, seed=0, **kw), min(3, repeat)
        )
        for variant, extra in [("lists", {}), ("arrays", {"return_arrays": True})]:
            to, (oc, ol) = timed(
                lambda kw=kw, extra=extra: skipgrams(seq_list, vocab_size, seed=0, **kw, **extra),
                repeat,
                warmup=1,
            )
            print(
                f"{label + ', ' + variant:<30}{len(ol):>11,}{tk.wall:>11.3f}{to.wall:>11.3f}"
                f"{tk.cpu:>11.3f}{to.cpu:>11.3f}{tk.wall / to.wall:>10.0f}x"
                f"{tk.cpu / to.cpu:>10.0f}x"
            )
        ol = np.asarray(ol)
        if not kw:  # without a sampling table the positive pairs are fixed: compare them
            same = Counter(tuple(c) for c, y in zip(kc, kl) if y == 1) == Counter(
                tuple(c) for c, y in zip(np.asarray(oc).tolist(), ol.tolist()) if y == 1
            )
            print(
                f"  same positive pairs as Keras: {same}; negatives: keras "
                f"{kl.count(0):,}, ours {int((ol == 0).sum()):,}"
            )
        else:
            print(f"  positives kept by the table: keras {sum(kl):,}, ours {int(ol.sum()):,}")
    print(f"  keras pairs/s (wall): {len(kl) / tk.wall / 1e6:.2f} M")


def bench_corpus(corpus: Path, repeat: int) -> None:
    from gensim.models import Word2Vec
    from gensim.models.word2vec import LineSentence

    def gensim_vocab():
        m = Word2Vec(min_count=5, workers=1)
        m.build_vocab(LineSentence(str(corpus)))
        return m

    print(f"\n## reading {corpus.name}")
    t_gensim, m = timed(gensim_vocab, repeat)
    t_vocab, vocab = timed(lambda: Vocab.build(corpus, min_count=5), repeat)
    with tempfile.TemporaryDirectory() as d:
        t_enc, enc = timed(lambda: encode_corpus(corpus, vocab, Path(d) / "enc"), repeat)
        raw = enc.raw_words
        print(f"{'step':<36}{'wall s':>9}{'cpu s':>9}{'M words/s':>11}")
        for name, t in [
            ("gensim build_vocab(LineSentence)", t_gensim),
            ("ours Vocab.build", t_vocab),
            ("ours encode_corpus (ids to disk)", t_enc),
        ]:
            print(f"{name:<36}{t.wall:>9.2f}{t.cpu:>9.2f}{raw / t.wall / 1e6:>11.2f}")
        print(
            f"  vocabulary: ours {len(vocab):,} words, gensim {len(m.wv):,}; {raw:,} words read, "
            f"{enc.n_tokens:,} ids in {enc.n_sentences:,} sentences"
        )

        sg = SkipGramBatches(enc, window=5, sample=1e-3, batch_size=1 << 16)
        t_len, n_batches = timed(lambda: len(sg), 1)
        t_pairs, n_pairs = timed(lambda: sum(c.size for c, _ in sg), repeat)
        print("\n## SkipGramBatches over the encoded corpus (window 5, sample 1e-3, 1 process)")
        print(
            f"  {n_pairs:,} pairs in {n_batches} batches: {t_pairs.wall:.2f} s wall "
            f"({t_pairs.cpu:.2f} s cpu), {n_pairs / t_pairs.wall / 1e6:.1f} M pairs/s, "
            f"{raw / t_pairs.wall / 1e6:.2f} M words/s; counting the shards for len(): "
            f"{t_len.wall:.2f} s per epoch"
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--quick", action="store_true", help="one repeat, skip the corpus part")
    args = ap.parse_args()
    if args.corpus is None:
        raise SystemExit("give --corpus, or set NS_PLUGINS_DATA to a folder with gcide.txt.gz")
    if not args.corpus.exists():
        raise SystemExit(f"corpus not found: {args.corpus} (pass --corpus)")
    header()
    repeat = 1 if args.quick else args.repeat
    bench_skipgrams(args.corpus, args.tokens, repeat)
    if not args.quick:
        bench_corpus(args.corpus, max(1, repeat // 2))


if __name__ == "__main__":
    main()
