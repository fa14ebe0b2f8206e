"""Skip-gram on a real corpus: gensim's Word2Vec against ours, same hyperparameters, same machine.

    python benchmarks/bench_vs_gensim.py                      # 5 epochs on gcide, ~4 minutes
    python benchmarks/bench_vs_gensim.py --epochs 1 --repeat 3
    python benchmarks/bench_vs_gensim.py --limit-words 500000 --epochs 1   # a quick look

Each trainer runs in its own subprocess; its peak RSS counts the processes it starts (a corpus
encoder, other ranks) with it. Raw words/s is what a user times: corpus words x epochs over the
command's time. For ours (``--ours app``, the default) that is the whole ``python train.py
+experiment=sgns_text ...`` process from start to exit, through Lightning: imports, vocabulary,
encoding, training, evaluation on the three sets after every epoch, export and report. For gensim it
is its script from the start of the process to the end of ``Word2Vec(...)`` (imports, vocabulary,
training; its evaluation is left out). ``--ours word2vec`` times ``ns_plugins.Word2Vec`` as gensim's
script is timed. Both sets of vectors are then scored by the same code
(``ns_plugins.app.evaluation``) on WordSim-353, SimLex-999 and the Google analogies.
``--variants`` adds shared negatives (``shared``) and two gloo processes on the same cores
(``ddp2``: ``device=ddp_cpu devices=2 workers=1``, weights averaged every
``device.average_every`` steps), and threads that train their own copies of the tables
(``copiesN``: ``model.copies_mib=4096 model.merge_every=N``, N = 4 for ``copies``). Trainers
alternate within each repeat so that load from other processes hits all of them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, ROOT, commit, spread  # noqa: E402

HYPER = dict(vector_size=100, window=5, negative=5, min_count=5, sample=1e-3, alpha=0.025,
             min_alpha=0.0001, ns_exponent=0.75)  # fmt: skip


# ---------------------------------------------------------------------------- trainers (children)


def _run_gensim(args) -> dict:
    from gensim.models import Word2Vec
    from gensim.models.word2vec import LineSentence

    t0 = time.perf_counter()
    sentences = LineSentence(args.corpus)
    # what Word2Vec(sentences, ...) does, in two timed halves
    model = Word2Vec(sg=1, hs=0, epochs=args.epochs, workers=args.workers, seed=args.seed, **HYPER)
    model.build_vocab(sentences)
    t1 = time.perf_counter()
    model.train(sentences, total_examples=model.corpus_count, epochs=args.epochs)
    seconds = time.perf_counter() - t0
    end = time.time()  # the end of Word2Vec(...): the parent counts from the process start
    np.save(Path(args.out) / "vectors.npy", model.wv.vectors)
    (Path(args.out) / "words.txt").write_text("\n".join(model.wv.index_to_key))
    return {"seconds": seconds, "train_seconds": seconds - (t1 - t0), "end": end,
            "raw_words": model.corpus_total_words, "vocab": len(model.wv)}  # fmt: skip


def _run_word2vec(args) -> dict:
    """``ns_plugins.Word2Vec(corpus_file=...)``: the chunk engine's step in this process, no
    Lightning or torch; timed as gensim's script is."""
    from ns_plugins import Word2Vec

    t0 = time.perf_counter()
    model = Word2Vec(sg=1, epochs=args.epochs, workers=args.workers, seed=args.seed, **HYPER)
    model.build_vocab(corpus_file=str(args.corpus))
    t1 = time.perf_counter()
    model.train(corpus_file=str(args.corpus), total_examples=model.corpus_count,
                epochs=args.epochs)  # fmt: skip
    seconds = time.perf_counter() - t0
    end = time.time()
    np.save(Path(args.out) / "vectors.npy", model.wv.vectors)
    (Path(args.out) / "words.txt").write_text("\n".join(model.wv.index_to_key))
    return {"seconds": seconds, "train_seconds": seconds - (t1 - t0), "end": end,
            "raw_words": model.corpus_total_words, "vocab": len(model.wv)}  # fmt: skip


def _child(args) -> None:
    result = _run_gensim(args) if args.trainer == "gensim" else _run_word2vec(args)
    result["peak_rss_mib"] = _peak_rss_mib(os.getpid())
    (Path(args.out) / "result.json").write_text(json.dumps(result))


# ---------------------------------------------------------------------------- the parent


def _status_mib(pid: int, field: str) -> float:
    """A memory field of /proc/<pid>/status in MiB (NaN once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return math.nan


def _peak_rss_mib(pid: int) -> float:
    """Peak resident set of a running process (VmHWM: the high-water mark of its own address space;
    unlike wait4's ru_maxrss it does not include what the parent held before fork and exec)."""
    return _status_mib(pid, "VmHWM")


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _tree_rss_mib(pid: int) -> float:
    """What a process and all its children hold now: a run's helper processes (a corpus encoder,
    other ranks) count towards its peak."""
    rss = [_status_mib(p, "VmRSS") for p in [pid, *_descendants(pid)]]
    return sum(r for r in rss if not math.isnan(r)) if rss and not math.isnan(rss[0]) else math.nan


def _wait(cmd, log_path) -> tuple[float, float, int, float]:
    """Run ``cmd``; (wall seconds, peak RSS MiB, exit status, start time.time()). The peak, the
    process's own high-water mark or the sum over its process tree, whichever is larger, is
    sampled every 0.1 s until exit."""
    start = time.time()
    t0 = time.perf_counter()
    peak = math.nan
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        while True:
            for rss in (_peak_rss_mib(proc.pid), _tree_rss_mib(proc.pid)):
                if not math.isnan(rss):
                    peak = rss if math.isnan(peak) else max(peak, rss)
            try:
                proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                continue
    return time.perf_counter() - t0, peak, proc.returncode, start


def _app_command(args, variant, out, seed) -> list[str]:
    over = [
        "+experiment=sgns_text",
        f"data.path={args.corpus}",
        f"epochs={args.epochs}",
        f"seed={seed}",
        f"eval.wordsim={args.data / 'wordsim353.tsv'}",
        f"eval.simlex={args.data / 'simlex999.txt'}",
        f"eval.analogies={args.data / 'questions-words.txt'}",
        f"hydra.run.dir={out}",
    ]
    if variant == "shared":
        over.append("model.shared_negatives=true")
    if variant.startswith("copies"):  # copies, copies2, copies8: merged every 4, 2, 8 steps
        over += ["model.copies_mib=4096", f"model.merge_every={_merge_every(variant)}"]
    batched = "engine=batched" in args.app_args  # the pairs engine has no threads
    if variant == "ddp2":
        over += ["device=ddp_cpu", "devices=2"] + ([] if batched else ["workers=1"])
    elif not batched:
        over.append(f"workers={args.workers}")
    return [sys.executable, "train.py", *over, *args.app_args]


def _merge_every(variant: str) -> str:
    return variant.removeprefix("copies") or "4"


def _variant_label(variant: str) -> str:
    if variant.startswith("copies"):
        return f" (copies, merged every {_merge_every(variant)})"
    return {"sg": "", "shared": " (shared negatives)", "ddp2": " (two gloo processes)"}[variant]


def _run_one(args, trainer, variant, rep, work) -> dict:
    out = Path(work) / f"{trainer}-{variant}-{rep}"
    out.mkdir(parents=True)
    seed = args.seed + rep
    if trainer == "app":
        cmd = _app_command(args, variant, out, seed)
    else:
        cmd = [sys.executable, __file__, "--child", trainer, "--variant", variant,
               "--out", str(out), "--corpus", str(args.corpus), "--epochs", str(args.epochs),
               "--workers", str(args.workers), "--seed", str(seed)]  # fmt: skip
    wall, rss, code, start = _wait(cmd, out / "log.txt")
    if code != 0:
        tail = (out / "log.txt").read_text()[-3000:]
        raise SystemExit(f"{trainer}/{variant} failed with status {code}:\n{tail}")
    if trainer == "app":
        from ns_plugins.embeddings import load_word2vec

        words, vectors = load_word2vec(out / "vectors.txt")
        # the app times vocabulary, encoding and training, as the children do
        res = json.loads((out / "metrics.json").read_text())
        seconds, train_seconds, raw = wall, res["train_seconds"], args.raw_words
    else:
        res = json.loads((out / "result.json").read_text())
        words = (out / "words.txt").read_text().split("\n")
        vectors = np.load(out / "vectors.npy")
        seconds, train_seconds, raw = res["seconds"], res["train_seconds"], res["raw_words"]
        seconds = res["end"] - start  # process start to the end of Word2Vec(...)
        rss = max(rss, res["peak_rss_mib"])
    scores = _evaluate(args, words, vectors)
    rate = raw * args.epochs / seconds
    train_rate = raw * args.epochs / train_seconds
    row = dict(trainer=trainer, variant=variant, rep=rep, seconds=seconds, wall=wall, rss=rss,
               words_per_s=rate, train_words_per_s=train_rate, vocab=len(words),
               **scores)  # fmt: skip
    print(f"  {trainer:6s} {variant:6s} rep {rep}: {rate / 1e3:7.0f}k words/s  "
          f"(training alone {train_rate / 1e3:.0f}k)  "
          f"{seconds:6.1f} s (process {wall:.1f} s)  {rss:6.0f} MiB  "
          f"ws {scores['wordsim353']:.3f} sl {scores['simlex999']:.3f} "
          f"an {scores['analogy']:.3f}", flush=True)  # fmt: skip
    return row


def _evaluate(args, words, vectors) -> dict:
    from ns_plugins.app.evaluation import evaluate_all

    res = evaluate_all(words, vectors, wordsim=args.data / "wordsim353.tsv",
                       simlex=args.data / "simlex999.txt",
                       analogies=args.data / "questions-words.txt")  # fmt: skip
    return {k: res[k] for k in ("wordsim353", "simlex999", "analogy")}


def _limit(corpus: Path, n_words: int, work: str) -> Path:
    """The first lines of ``corpus`` holding about ``n_words`` words, as plain text."""
    out = Path(work) / "corpus.txt"
    opener = gzip.open if corpus.suffix == ".gz" else open
    seen = 0
    with opener(corpus, "rt", encoding="utf-8", errors="replace") as src, open(out, "w") as dst:
        for line in src:
            if seen >= n_words:
                break
            dst.write(line)
            seen += len(line.split())
    return out


def _count_words(corpus: Path) -> int:
    opener = gzip.open if corpus.suffix == ".gz" else open
    with opener(corpus, "rt", encoding="utf-8", errors="replace") as f:
        return sum(len(line.split()) for line in f)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _table(rows, args) -> None:
    keys = ("words_per_s", "train_words_per_s", "seconds", "wall", "rss", "wordsim353",
            "simlex999", "analogy")  # fmt: skip
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["trainer"], r["variant"]), []).append(r)
    med = {g: {k: statistics.median(r[k] for r in rs) for k in keys} for g, rs in groups.items()}
    base = med[("gensim", "sg")]
    print()
    print(f"machine: {_cpu()}, {os.cpu_count()} CPUs | date: "
          f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC | commit: {commit()}")  # fmt: skip
    print(
        f"corpus: {args.corpus} ({args.raw_words:,} words) | skip-gram, {HYPER} | "
        f"epochs {args.epochs}, workers {args.workers}, medians of {args.repeat}"
    )
    head = (f"| {'trainer':40s} | {'raw words/s':>11s} | {'training only':>13s} | {'time s':>7s} "
            f"| {'process s':>9s} | {'peak RSS MiB':>12s} "
            f"| {'WS353':>6s} | {'SimLex':>6s} | {'analogy':>7s} |")  # fmt: skip
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    names = {"gensim": "gensim 4.3.3", "word2vec": "ours, Word2Vec", "app": "ours, train.py"}
    for (trainer, variant), m in med.items():
        name = names[trainer] + _variant_label(variant)
        print(f"| {name:40s} | {m['words_per_s'] / 1e3:10.0f}k "
              f"| {m['train_words_per_s'] / 1e3:12.0f}k | {m['seconds']:7.1f} | {m['wall']:9.1f} "
              f"| {m['rss']:12.0f} | {m['wordsim353']:6.3f} | {m['simlex999']:6.3f} "
              f"| {m['analogy']:7.3f} |")  # fmt: skip
    for (trainer, variant), m in med.items():
        if trainer == "gensim":
            continue
        name = "ratio " + names[trainer].split(", ")[1] + ("" if variant == "sg" else f" {variant}")
        print(f"| {name + ' / gensim':40s} | {m['words_per_s'] / base['words_per_s']:10.2f}x "
              f"| {m['train_words_per_s'] / base['train_words_per_s']:12.2f}x "
              f"| {m['seconds'] / base['seconds']:6.2f}x | {m['wall'] / base['wall']:8.2f}x "
              f"| {m['rss'] / base['rss']:11.2f}x "
              f"| {m['wordsim353'] - base['wordsim353']:+6.3f} "
              f"| {m['simlex999'] - base['simlex999']:+6.3f} "
              f"| {m['analogy'] - base['analogy']:+7.3f} |")  # fmt: skip
    print("\nraw words/s over the runs, median (min-max):")
    for (trainer, variant), rs in groups.items():
        print(f"  {trainer} {variant}: {spread([r['words_per_s'] / 1e3 for r in rs])}k")
    gensim_of = {r["rep"]: r["words_per_s"] for r in rows if r["trainer"] == "gensim"}
    if gensim_of:
        print("ours / gensim of the same repeat, median (min-max):")
        for (trainer, variant), rs in groups.items():
            ratios = [r["words_per_s"] / gensim_of[r["rep"]] for r in rs if r["rep"] in gensim_of]
            if trainer != "gensim" and ratios:
                print(f"  {trainer} {variant}: {spread(ratios)}x")
    print(
        "(time s, what raw words/s divides by: ours, the whole train.py process; gensim, its "
        "process start to the end of Word2Vec(...); process s: the whole subprocess; score "
        "columns of the ratio rows: difference ours - gensim)"
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--corpus", type=Path, default=DATA and DATA / "gcide.txt.gz",
                   help="default: $NS_PLUGINS_DATA/gcide.txt.gz")  # fmt: skip
    p.add_argument("--data", type=Path, default=DATA,
                   help="folder with the evaluation files (default: $NS_PLUGINS_DATA)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--limit-words", type=int, default=None, help="train on the first N words")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ours", choices=["app", "word2vec"], default="app",
                   help="word2vec: ns_plugins.Word2Vec(corpus_file=...), timed as gensim's; "
                   "app: train.py +experiment=sgns_text (chunk engine, Lightning)")  # fmt: skip
    p.add_argument("--variants", default="sg",
                   help="comma list of sg, shared, ddp2, copiesN (threads on their own copies of "
                   "the tables merged every N steps; copies: N=4)")  # fmt: skip
    p.add_argument("--no-gensim", action="store_true")
    p.add_argument("--app-args", nargs="*", default=[], help="extra overrides for train.py")
    p.add_argument("--child", choices=["gensim", "word2vec"], help=argparse.SUPPRESS)
    p.add_argument("--variant", default="sg", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.trainer = args.child
        return _child(args)
    for v in args.variants.split(","):
        copies = v.startswith("copies") and (v == "copies" or v[6:].isdigit())
        if v not in ("sg", "shared", "ddp2") and not copies:
            p.error(f"unknown variant {v!r}; choose from sg, shared, ddp2, copiesN")
        if v != "sg" and args.ours != "app":
            p.error(f"the {v} variant runs through train.py (--ours app)")
    if args.corpus is None or args.data is None:
        p.error("give --corpus and --data, or set NS_PLUGINS_DATA to the folder that holds them")
    if not args.corpus.exists():
        p.error(f"corpus not found: {args.corpus}")
    if args.epochs < 1 or args.repeat < 1 or args.workers < 1:
        p.error("--epochs, --repeat and --workers must be >= 1")
    try:
        import gensim  # noqa: F401
    except ImportError:
        print("gensim is not installed: timing ours only")
        args.no_gensim = True
    with tempfile.TemporaryDirectory(prefix="bench_gensim_") as work:
        if args.limit_words:
            args.corpus = _limit(args.corpus, args.limit_words, work)
        args.corpus = args.corpus.resolve()
        args.raw_words = _count_words(args.corpus)
        plan = [] if args.no_gensim else [("gensim", "sg")]
        plan += [(args.ours, v) for v in args.variants.split(",")]
        rows = []
        for rep in range(args.repeat):
            for trainer, variant in plan if rep % 2 == 0 else plan[::-1]:
                rows.append(_run_one(args, trainer, variant, rep, work))
        if args.no_gensim:
            for r in rows:
                print(r)
            return
        _table(rows, args)


if __name__ == "__main__":
    main()
