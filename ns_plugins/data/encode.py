"""Encode a text corpus once into int32 ids on disk; epochs then memory-map ids instead of text.

``encode_corpus`` writes an encoded directory (``ids.int32``, ``offsets.npy``, ``vocab.tsv``,
``meta.json``: the format is ``encoded.EncodedCorpus``'s, which opens and checks it) and reads the
text once, on ``workers`` processes, in flat memory:

1. The corpus is cut into one part per worker (``split.split_corpus``: byte ranges of about
   equal size at line ends; compressed files whole). Each worker (forked) tokenizes its part and
   writes, as it reads, one int32 code per token and per line end to a scratch file: ASCII text
   goes through a compiled word table (``wordtable.WordTable``: tokens cut and looked up in one
   pass), other text through the reader's tokenizer and a dict; a new word gets the next
   provisional id of the worker and every word is counted. With a fixed vocabulary the code is
   the word's final id (-1: unknown).
2. The workers' counts are merged (``wordtable.merge_counts``) into the vocabulary
   (``Vocab.from_counts``: the same words, counts and order for any number of workers), and each
   worker's provisional ids get a lookup table to final ids (-1: not in the vocabulary).
3. Each part's codes are renumbered in chunks (a thread per part: ``wordtable.cut_sentences``,
   compiled: lines cut into sentences of ``max_sentence_length`` raw words, then unknown words
   dropped, as ``Word2Vec`` cuts its corpus in memory) and written straight to their
   place in ``ids.int32`` (how many ids each part keeps is known from its counts); the sentence
   starts are streamed into ``offsets.npy``.

Memory holds the word tables (they grow with the vocabulary, not the corpus) and a block or a
chunk at a time; the scratch files take 4 bytes per token and line on the cache's disk while
encoding. The files written are byte for byte the same whatever the number of workers: a part's
lines are numbered from the lines before it, and a part that starts inside a line (a cut at a
space in a line longer than ``split.SPLIT_SEARCH_BYTES``) continues that line's count.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ns_plugins.errors import UsageError

from .encoded import FORMAT, EncodedCorpus, load_offsets
from .parallel import Progress, can_fork, fork_map, usable_cpus
from .reader import MAX_SENTENCE_LENGTH, Tokenizer, token_blocks
from .split import split_corpus
from .textfiles import CorpusStats, Piece, corpus_files
from .token_codes import DICT_BASE, NEWLINE_ID, TokenCoder
from .vocab import Vocab

__all__ = ["encode_corpus"]

log = logging.getLogger(__name__)

# A worker per this many bytes of text at most (a second or so of work): below it, forking and
# merging cost more than they save.
MIN_PART_BYTES = 32 << 20
CHUNK_CODES = 1 << 18  # codes renumbered at a time (a few MB of temporaries)
# sentence starts of a corpus up to this many are written by np.save from memory; more are
# streamed into offsets.npy
OFFSETS_IN_MEMORY = 1 << 16


# ---------------------------------------------------------------------------- encoding in parts
@dataclass
class _Part:
    """What reading one part of the corpus gave (step 1)."""

    counted: object = None  # provisional id -> word and count (a ``wordtable.WordCounts``)
    kept: int = 0  # ids kept (a fixed vocabulary)
    stats: CorpusStats = field(default_factory=CorpusStats)
    codes: int = 0  # codes written: words and line markers
    table_words: int = 0  # words of the compiled table (the dict's ids follow theirs)
    trailing: int = 0  # words after the part's last line marker (all of them when it has none)


@dataclass
class _Cut:
    """What renumbering and cutting one part gave (step 3)."""

    starts: int = 0
    first_key: int = -1
    last_key: int = -1


class _Run:
    """One encoding: its settings, work directory and, once counted, the tables the parts need.
    Forked workers see it as it stood when they were forked."""

    def __init__(self, path, vocab, work: Path, tokenizer, lowercase, max_len, blocks, progress):
        self.path, self.vocab, self.work = path, vocab, work
        self.tokenizer, self.lowercase, self.max_len = tokenizer, lowercase, max_len
        self.blocks, self.progress = blocks, progress
        self.log_inline = True  # progress logged by the reading loop (else by the waiting parent)
        # a fixed vocabulary's coder, built once and shared by the forked workers
        self.coder = None if vocab is None else TokenCoder(tokenizer, vocab)
        self.luts: list = []  # per part: provisional id + 2 -> final id (-2, -1 first)
        self.lines: list = []  # per part: line markers before it
        self.in_line: list = []  # per part: words of its first line before it
        self.bases: list = []  # per part: ids kept before it
        self.table_words: list = []  # per part: words its compiled table held
        self.ids_path: Path | None = None

    def codes_path(self, i: int) -> Path:
        return self.work / f"codes-{i}.int32"

    def starts_path(self, i: int) -> Path:
        return self.work / f"starts-{i}.int64"

    # step 1 -------------------------------------------------------------------------------------
    def read(self, task) -> _Part:
        i, part = task
        out = _Part()
        stats = out.stats
        counting = self.vocab is None
        coder = TokenCoder(self.tokenizer) if counting else self.coder
        words = 0
        with open(self.codes_path(i), "wb") as f:
            blocks = self.blocks(
                part, self.tokenizer, self.lowercase, stats, ascii_bytes=coder.ascii_bytes
            )
            for block in blocks:
                codes = coder.codes(block)
                codes.tofile(f)
                out.codes += codes.size
                nl = np.flatnonzero(codes == NEWLINE_ID)
                words += codes.size - nl.size
                stats.lines += nl.size
                if nl.size:
                    out.trailing = codes.size - 1 - int(nl[-1])
                else:
                    out.trailing += codes.size
                if not counting:
                    out.kept += int(np.count_nonzero(codes >= 0))
                if self.progress is not None:
                    self.progress.set(i, stats.bytes_read, words)
                    if self.log_inline:
                        self.progress.maybe_log()
        stats.words = words
        if counting:  # the table's words by id, then the dict's
            out.counted = coder.counted()
            out.table_words = out.counted.counts.size
        return out

    # step 3 -------------------------------------------------------------------------------------
    def cut(self, i: int) -> _Cut:
        from .wordtable import cut_sentences

        # lines before, words of the first line before, ids before, last key, first key
        state = np.array([self.lines[i], self.in_line[i], self.bases[i], -1, -1], np.int64)
        lut = self.luts[i] if self.luts else np.zeros(0, np.int32)
        ids = np.empty(CHUNK_CODES, dtype="<i4")
        starts = np.empty(CHUNK_CODES, dtype="<i8")
        out = _Cut()
        fd = os.open(self.ids_path, os.O_WRONLY)
        try:
            with open(self.codes_path(i), "rb") as f, open(self.starts_path(i), "wb") as s:
                while True:
                    codes = np.fromfile(f, dtype="<i4", count=CHUNK_CODES)
                    if not codes.size:
                        break
                    if lut.size:  # the dict's provisional ids follow the table's in ``lut``
                        big = codes >= DICT_BASE
                        codes[big] -= DICT_BASE - self.table_words[i]
                    at = int(state[2])
                    n_ids, n_starts = cut_sentences(codes, lut, self.max_len, state, ids, starts)
                    _pwrite_all(fd, ids[:n_ids], 4 * at)
                    starts[:n_starts].tofile(s)
                    out.starts += n_starts
        finally:
            os.close(fd)
        self.codes_path(i).unlink()
        out.first_key, out.last_key = int(state[4]), int(state[3])
        return out


@dataclass
class _Failed:
    """What a process that failed reading its part sends the others instead of its counts."""

    rank: int
    message: str


def _pwrite_all(fd: int, array: np.ndarray, at: int) -> None:
    view = memoryview(array).cast("B")
    while view.nbytes:
        n = os.pwrite(fd, view, at)
        view, at = view[n:], at + n


def _parts(path, workers: int | None) -> list[list[Piece]]:
    """The corpus in one part per worker (``workers`` None: one per usable CPU, and at most one
    per ``MIN_PART_BYTES`` of text); one part when this process cannot fork."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1 or None, got {workers}")
    if workers is None:
        size = sum(f.stat().st_size for f in corpus_files(path))
        workers = min(usable_cpus(), max(1, size // MIN_PART_BYTES))
    if workers == 1 or not can_fork():
        return [[Piece(str(f)) for f in corpus_files(path)]]
    return split_corpus(path, workers)


def _write_offsets(path: Path, run: _Run, cuts: list[_Cut], total: int) -> int:
    """offsets.npy from the parts' sentence starts (a part's first start dropped when its first
    word continues the sentence the part before it ended in) and the end; the sentence count."""
    drop, last = [], -1
    for cut in cuts:
        drop.append(cut.starts > 0 and cut.first_key >= 0 and cut.first_key == last)
        if cut.last_key >= 0:
            last = cut.last_key
    n = sum(cut.starts - d for cut, d in zip(cuts, drop)) + 1

    def pieces():
        for i, d in enumerate(drop):
            with open(run.starts_path(i), "rb") as f:
                first = True
                while True:
                    starts = np.fromfile(f, dtype="<i8", count=CHUNK_CODES)
                    if not starts.size:
                        break
                    yield starts[1:] if first and d else starts
                    first = False
        yield np.array([total], dtype=np.int64)

    if n <= OFFSETS_IN_MEMORY:
        np.save(path, np.concatenate(list(pieces())).astype(np.int64))
        return n - 1
    with open(path, "wb") as f:  # streamed: the .npy header, then the starts as they come
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<i8", "fortran_order": False, "shape": (n,)}
        )
        for starts in pieces():
            starts.astype("<i8", copy=False).tofile(f)
    return n - 1


def encode_corpus(
    path,
    vocab: Vocab | None,
    out_dir,
    tokenizer: Tokenizer | None = None,
    lowercase: bool = True,
    max_sentence_length: int = MAX_SENTENCE_LENGTH,
    extra_meta: dict | None = None,
    *,
    min_count: int = 5,
    max_final_vocab: int | None = None,
    workers: int | None = None,
    parts: list[list[Piece]] | None = None,
    gather: Callable[[object], list] | None = None,
    rank: int = 0,
) -> EncodedCorpus:
    """Tokenize ``path`` as ``read_sentences`` does, keep words of ``vocab`` (unknown words are
    dropped, as gensim does, after lines are cut at ``max_sentence_length`` raw words) and write the
    ids to ``out_dir``. Returns the memory-mapped result.

    ``vocab`` None counts the vocabulary in the same pass (``Vocab.from_counter`` with
    ``min_count`` and ``max_final_vocab``). ``workers`` processes read the text (None: one per
    CPU, fewer for a small corpus); the files written are the same for any number. ``parts``
    (lists of ``Piece``) replaces the corpus with those parts of it; ``gather`` then merges the
    counts with the processes that read the other parts: given this process's (counts, totals),
    it returns every process's, in corpus order, this one's at ``rank`` (see
    ``cache.prepare_corpus_shard``). The files describe the parts read here; the vocabulary is
    the whole corpus's."""
    if vocab is not None and len(vocab) == 0:
        raise ValueError("vocabulary is empty")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if parts is None:
        parts = _parts(path, workers)
    work = out / ".encoding.tmp"
    ids_path = out / "ids.int32"
    tmp_ids = out / "ids.int32.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    total_bytes = sum(
        (os.stat(p.file).st_size if p.end is None else p.end) - p.start for ps in parts for p in ps
    )
    progress = Progress(f"reading {os.fspath(path)}", total_bytes, len(parts))
    try:
        run = _Run(
            path, vocab, work, tokenizer, lowercase, max_sentence_length, token_blocks, progress
        )
        tasks = list(enumerate(parts))
        run.log_inline = len(tasks) == 1
        if tokenizer is None or tokenizer is str.split:  # the compiled table, loaded once here:
            from .wordtable import WordTable  # forked workers share its code pages

            WordTable(0).encode(b"a\n")
        try:
            read = fork_map(run.read, tasks, work, progress.maybe_log)
            stats = CorpusStats()
            for part in read:
                for name in ("files", "lines", "words", "replaced_bytes", "bytes_read"):
                    setattr(stats, name, getattr(stats, name) + getattr(part.stats, name))
            local = (stats.words, stats.lines, stats.replaced_bytes, stats.files)
            read_lines = [(part.stats.lines, part.trailing) for part in read]
            counted = None
            if vocab is None and len(read) == 1 and not read[0].counted.extra_words:
                counted = read[0].counted  # one table: its words are distinct already
                maps = [np.arange(len(counted))]
            elif vocab is None:
                from .wordtable import merge_counts

                counted, maps = merge_counts([part.counted for part in read])
        except Exception as err:
            if gather is None:
                raise
            gather(_Failed(rank, f"{type(err).__name__}: {err}"))  # the others stop too
            raise
        if gather is not None:  # the other processes' parts: totals, and counts to merge
            everyone = list(gather((counted, local, read_lines)))
            failed = [e for e in everyone if isinstance(e, _Failed)]
            if failed:
                raise UsageError(f"corpus shard {failed[0].rank} failed: {failed[0].message}")
            if vocab is None:
                from .wordtable import merge_counts

                counted, ranks = merge_counts([e[0] for e in everyone])
                maps = [ranks[rank][m] for m in maps]  # part -> this rank's words -> all words
            everyone = [e[1:] for e in everyone]
        else:
            everyone, rank = [(local, read_lines)], 0
        total_words = sum(e[0][0] for e in everyone)
        before = everyone[:rank]
        if vocab is None:
            words = counted.words()
            vocab = Vocab.from_counts(
                words,
                counted.all_counts(),
                min_count,
                max_final_vocab,
                raw_words=total_words,
                source=path,
            )
            final_of = np.fromiter(
                (vocab.index.get(w, -1) for w in words), dtype=np.int32, count=len(words)
            )
            del words, counted
            for part, where in zip(read, maps):
                lut = final_of[where]
                part.kept = int(part.counted.all_counts()[lut >= 0].sum())
                run.luts.append(np.concatenate(([NEWLINE_ID, -1], lut)).astype(np.int32))
                run.table_words.append(part.table_words)
                part.counted = None
        if total_words == 0:
            raise UsageError(f"corpus {os.fspath(path)!r} is empty: no words found")
        # where each part starts: lines before it, words of its first line, ids before it
        lines = in_line = 0
        for n, trailing in (r for e in before for r in e[1]):
            lines += n
            in_line = trailing + (in_line if n == 0 else 0)
        written = 0
        for part in read:
            run.lines.append(lines)
            run.in_line.append(in_line)
            run.bases.append(written)
            lines += part.stats.lines
            in_line = part.trailing + (in_line if part.stats.lines == 0 else 0)
            written += part.kept
        if written == 0:
            raise UsageError(
                f"no word of corpus {os.fspath(path)!r} is in the vocabulary "
                f"({stats.words} words read, {len(vocab)} in the vocabulary)"
            )
        if stats.replaced_bytes:
            log.warning(
                "%s: %d undecodable bytes replaced by U+FFFD", os.fspath(path), stats.replaced_bytes
            )
        with open(tmp_ids, "wb") as f:
            f.truncate(4 * written)
        run.ids_path = tmp_ids
        # the cut is compiled code and file I/O, both without the GIL: threads, no forks
        with ThreadPoolExecutor(len(read)) as pool:
            cuts = list(pool.map(run.cut, range(len(read))))
        n_sentences = _write_offsets(out / "offsets.npy", run, cuts, written)
        os.replace(tmp_ids, ids_path)
    except BaseException:
        tmp_ids.unlink(missing_ok=True)  # no partial file left behind (full disk, bad input)
        (out / "offsets.npy").unlink(missing_ok=True)
        raise
    finally:
        progress.close()
        shutil.rmtree(work, ignore_errors=True)
    vocab.save(out / "vocab.tsv")
    meta = {
        "format": FORMAT,
        "source": os.fspath(path),
        "n_tokens": int(written),
        "n_sentences": int(n_sentences),
        "vocab_size": len(vocab),
        "raw_words": int(stats.words),
        "lines": int(stats.lines),
        "replaced_bytes": int(stats.replaced_bytes),
        "max_sentence_length": int(max_sentence_length),
        "lowercase": bool(lowercase),
        "tokenizer": None if tokenizer is None else getattr(tokenizer, "__name__", repr(tokenizer)),
    }
    if gather is not None:  # a part of a corpus: the words of all of it
        meta["corpus_raw_words"] = int(total_words)
    meta.update(extra_meta or {})
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    ids = np.memmap(ids_path, dtype="<i4", mode="r", shape=(written,))
    corpus = EncodedCorpus(
        ids, load_offsets(out / "offsets.npy"), vocab, stats.words, path=out, validate=False
    )
    corpus.replaced_bytes = int(stats.replaced_bytes)
    return corpus
