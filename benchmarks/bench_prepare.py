"""Corpus preparation at scale against gensim's build_vocab, and the text vectors export.

    python benchmarks/bench_prepare.py [--corpus gcide.txt.gz] [--sizes 1,5,20] [--repeat 1]
        [--workdir DIR] [--export-rows 1000000] [--export-repeat 1]
        [--export-writers ours,previous,gensim] [--skip-prepare] [--skip-export]

1. Preparation. The corpus is written ``x`` times back to back into one plain text file per size
   (gcide x1, x5, x20: 5.1M, 27M, 108M tokens). Each preparation runs in a fresh process, one at a
   time, side by side in the same run:

   - ours: ``prepare_corpus(path, cache, min_count=5, tokenizer="split", workers=n)`` into an
     empty cache (vocabulary, ids and offsets on disk), with one worker per CPU and with one (the
     default, ``workers=None``, takes one per CPU but at most one per 32 MiB of text);
   - gensim 4.3.3: ``Word2Vec(min_count=5).build_vocab(LineSentence(path))`` (vocabulary only).

   ``tokenizer="split"`` is gensim's LineSentence tokenization, so both count the same words;
   the run checks that the two vocabularies hold the same words with the same counts. Times are
   wall seconds from the child's first line (imports included; gensim's copy of its vocabulary
   for the check is made after). Memory is the peak of the process
   tree sampled every 20 ms: PSS summed over the processes (shared pages counted once: the honest
   total for forked workers) and the largest single process's RSS.

2. Export. ``--export-rows`` random float32 vectors of 300 dimensions (normal, scale 0.1, as
   trained vectors) written as a text vectors file by ``save_word2vec``, by the previous writer
   (one "%.9g" format per row) and by gensim's ``save_word2vec_format``; ours and gensim's files
   are compared byte for byte. ``--export-repeat`` runs each writer that many times (in turn, a
   fresh process each, after a ``sync``: no writeback of the run before) and reports the medians;
   ``--export-writers`` picks some of them. A file is deleted after its run, but the last of ours
   and of gensim's, which are compared.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from common import DATA, ROOT, machine_line

PYTHON = sys.executable


# --------------------------------------------------------------------------- process-tree memory
def _tree(pid: int) -> list[int]:
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in children:
        out += _tree(int(child))
    return out


def _memory(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process, KiB."""
    pss = rss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


def run_sampled(code: str, env: dict | None = None) -> tuple[float, float, float, str]:
    """Run ``code`` in a fresh Python; (wall s, peak tree PSS MiB, peak process RSS MiB, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [PYTHON, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    peak_pss = peak_rss = 0
    while proc.poll() is None:
        mem = [_memory(p) for p in _tree(proc.pid)]
        peak_pss = max(peak_pss, sum(m[0] for m in mem))
        peak_rss = max([peak_rss] + [m[1] for m in mem])
        time.sleep(0.02)
    wall = time.perf_counter() - start
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"benchmark child failed ({proc.returncode}):\n{err[-3000:]}")
    return wall, peak_pss / 1024, peak_rss / 1024, out


# Each child times itself from before its imports to the end of the preparation, and prints it.
OURS = """
import time
start = time.perf_counter()
import sys
sys.path.insert(0, {root!r})
from ns_plugins.data import prepare_corpus
corpus = prepare_corpus({path!r}, {cache!r}, min_count=5, tokenizer="split", workers={workers})
print(time.perf_counter() - start)
print(corpus.path)
"""

GENSIM = """
import time
start = time.perf_counter()
import json
from gensim.models import Word2Vec
from gensim.models.word2vec import LineSentence
model = Word2Vec(vector_size=100, min_count=5, workers=1)
model.build_vocab(LineSentence({path!r}))
print(time.perf_counter() - start)
with open({out!r}, "w") as f:  # after the timing: the check's copy of the vocabulary
    counts = {{w: int(model.wv.get_vecattr(w, "count")) for w in model.wv.index_to_key}}
    json.dump(counts, f)
"""


def build_files(corpus: Path, sizes: list[int], workdir: Path) -> dict[int, Path]:
    opener = gzip.open if corpus.suffix == ".gz" else open
    with opener(corpus, "rb") as f:
        text = f.read()
    if not text.endswith(b"\n"):
        text += b"\n"
    files = {}
    for x in sizes:
        path = workdir / f"corpus-x{x}.txt"
        if not path.exists() or path.stat().st_size != x * len(text):
            with open(path, "wb") as f:
                for _ in range(x):
                    f.write(text)
        files[x] = path
    return files


def bench_prepare(corpus: Path, sizes: list[int], repeat: int, workdir: Path) -> None:
    files = build_files(corpus, sizes, workdir)
    cpus = os.cpu_count()
    print(f"\n## Preparation: {corpus.name} repeated x{', x'.join(map(str, sizes))}, min_count=5")
    print(f"# {machine_line(repeat=repeat)}")
    cols = ["size", "who", "wall s", "tree PSS MiB", "max RSS MiB", "x gensim", "same vocabulary"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for x, path in files.items():
        rows = {}
        vocab_out = workdir / "gensim-vocab.json"
        runs = [("gensim build_vocab", None)]
        runs += [(f"ours, {cpus} workers", cpus), ("ours, 1 worker", 1)] if cpus > 1 else []
        runs += [] if cpus > 1 else [("ours, 1 worker", 1)]
        for who, workers in runs:
            walls, psss, rsss = [], [], []
            for _ in range(repeat):
                cache = workdir / "cache"
                shutil.rmtree(cache, ignore_errors=True)
                if who.startswith("gensim"):
                    code = GENSIM.format(path=str(path), out=str(vocab_out))
                else:
                    code = OURS.format(root=str(ROOT), path=str(path), cache=str(cache),
                                       workers=workers)  # fmt: skip
                _, pss, rss, out = run_sampled(textwrap.dedent(code))
                walls.append(float(out.split()[0]))
                psss.append(pss)
                rsss.append(rss)
            same = ""
            if not who.startswith("gensim"):
                theirs = json.loads(vocab_out.read_text())
                ours = {}
                for line in (Path(out.split()[1]) / "vocab.tsv").read_text().splitlines():
                    word, count = line.split("\t")
                    ours[word] = int(count)
                same = "yes" if ours == theirs else f"NO ({len(ours)} vs {len(theirs)} words)"
                same += f", {len(ours):,} words"
            rows[who] = (statistics.median(walls), statistics.median(psss), max(rsss), same)
        base = rows["gensim build_vocab"][0]
        for who, (wall, pss, rss, same) in rows.items():
            ratio = "" if who.startswith("gensim") else f"{base / wall:.2f}x"
            print(f"| x{x} | {who} | {wall:.2f} | {pss:.0f} | {rss:.0f} | {ratio} | {same} |")
        sys.stdout.flush()
    shutil.rmtree(workdir / "cache", ignore_errors=True)


EXPORT = """
import sys, time
sys.path.insert(0, {root!r})
import numpy as np
rows, dim = {rows}, 300
rng = np.random.default_rng(0)
vectors = (rng.standard_normal((rows, dim), dtype=np.float32) * np.float32(0.1))
words = [f"w{{i}}" for i in range(rows)]
who = {who!r}
if who == "ours":
    from ns_plugins.embeddings import save_word2vec
    save_word2vec({warm!r}, words[:2000], vectors[:2000], compiled=True)  # kernels loaded
    start = time.perf_counter()
    save_word2vec({out!r}, words, vectors)
elif who == "previous":
    start = time.perf_counter()
    row_format = " ".join(["%.9g"] * dim)
    with open({out!r}, "wb") as f:
        f.write(f"{{rows}} {{dim}}\\n".encode())
        for word, row in zip(words, vectors):
            f.write((word + " " + row_format % tuple(row.tolist()) + "\\n").encode())
else:
    from gensim.models import KeyedVectors
    kv = KeyedVectors(dim)
    kv.add_vectors(words, vectors)
    start = time.perf_counter()
    kv.save_word2vec_format({out!r})
print(time.perf_counter() - start)
"""


EXPORT_WRITERS = ("ours", "previous", "gensim")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def bench_export(rows: int, workdir: Path, repeat: int = 1, writers=EXPORT_WRITERS) -> None:
    print(f"\n## Export: {rows:,} x 300 random float32 vectors as a text vectors file")
    print(f"# {machine_line(repeat=repeat)}")
    times: dict[str, list[float]] = {who: [] for who in writers}
    sizes: dict[str, int] = {}
    outs = {who: workdir / f"vectors-{who}.txt" for who in writers}
    for r in range(repeat):  # the writers in turn, each run in a fresh process
        for who in writers:
            # no dirty pages of the run before: its writeback would slow this one down
            os.sync()
            code = EXPORT.format(root=str(ROOT), rows=rows, who=who, out=str(outs[who]),
                                 warm=str(workdir / "warm.txt"))  # fmt: skip
            _, _, _, printed = run_sampled(textwrap.dedent(code))
            times[who].append(float(printed.strip().splitlines()[-1]))
            sizes[who] = outs[who].stat().st_size
            if who not in ("ours", "gensim") or r < repeat - 1:  # the last two are compared
                outs[who].unlink()
            print(f"# {who}: {times[who][-1]:.1f} s (load {os.getloadavg()[0]:.2f})")
            sys.stdout.flush()
    median = {who: statistics.median(t) for who, t in times.items()}
    print("| writer | seconds (median) | runs | x previous | x gensim | file MB |")
    print("|---|---|---|---|---|---|")
    for who, label in (("ours", "save_word2vec"), ("previous", "previous writer (%.9g per row)"),
                       ("gensim", "gensim save_word2vec_format")):  # fmt: skip
        if who not in median:
            continue
        t = median[who]
        ratios = [
            f"{median[base] / t:.1f}x" if base in median else "" for base in EXPORT_WRITERS[1:]
        ]
        runs = ", ".join(f"{x:.1f}" for x in times[who])
        print(
            f"| {label} | {t:.1f} | {runs} | {ratios[0]} | {ratios[1]} | {sizes[who] / 1e6:.0f} |"
        )
    if "ours" in outs and "gensim" in outs:
        same = _sha256(outs["ours"]) == _sha256(outs["gensim"])
        size = outs["ours"].stat().st_size / 1e6
        print(f"ours and gensim's files byte for byte the same: {same} ({size:.0f} MB)")
    for out in outs.values():
        out.unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    default = DATA / "gcide.txt.gz" if DATA else None
    ap.add_argument("--corpus", type=Path, default=default, help="gcide.txt.gz or any text")
    ap.add_argument("--sizes", default="1,5,20", help="repetitions of the corpus, comma separated")
    ap.add_argument("--repeat", type=int, default=1, help="preparations per size and runner")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: temp)")
    ap.add_argument("--export-rows", type=int, default=1_000_000)
    ap.add_argument("--export-repeat", type=int, default=1, help="runs of each writer (median)")
    ap.add_argument(
        "--export-writers", default=",".join(EXPORT_WRITERS), help="of ours,previous,gensim"
    )
    ap.add_argument("--skip-prepare", action="store_true")
    ap.add_argument("--skip-export", action="store_true")
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_prepare."))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"# bench_prepare: {machine_line()}")
    try:
        if not args.skip_prepare:
            if args.corpus is None:
                ap.error("give --corpus or set NS_PLUGINS_DATA")
            sizes = [int(x) for x in args.sizes.split(",")]
            bench_prepare(args.corpus, sizes, args.repeat, workdir)
        if not args.skip_export:
            writers = [w for w in EXPORT_WRITERS if w in args.export_writers.split(",")]
            bench_export(args.export_rows, workdir, args.export_repeat, writers)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
