"""Encode a text corpus once into int32 ids on disk; epochs then memory-map ids instead of text.

Layout of an encoded directory: ``ids.int32`` (raw little-endian ids of known words, sentences
back to back), ``offsets.npy`` (int64 sentence starts plus the end), ``vocab.tsv`` and
``meta.json`` (sizes and how many words were read, for words/s figures).
``EncodedCorpus.open(directory, check=True)`` verifies such a directory cheaply before it is used:
the files' sizes and shapes against ``meta.json`` and every id within the vocabulary.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from ns_plugins.errors import UsageError

from .reader import (
    MAX_SENTENCE_LENGTH,
    NEWLINE,
    CorpusStats,
    Tokenizer,
    token_blocks,
)
from .vocab import Vocab

__all__ = ["BlockEncoder", "EncodedCorpus", "encode_corpus"]

log = logging.getLogger(__name__)

FORMAT = "ns_plugins.encoded_corpus/1"
_NEWLINE_ID = -2


class _Lookup(dict):
    """word -> id with unknown words as -1 and the line marker as -2, for ``map``."""

    def __missing__(self, key):
        return -1


class EncodedCorpus:
    """Sentences of word ids: sentence ``i`` is ``ids[offsets[i]:offsets[i + 1]]``."""

    def __init__(self, ids, offsets, vocab: Vocab, raw_words: int | None = None, path=None):
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0:
            raise ValueError("offsets must be a 1-D array starting at 0")
        if offsets[-1] != len(ids) or (np.diff(offsets) < 0).any():
            raise ValueError(
                f"offsets must be non-decreasing and end at len(ids)={len(ids)}, "
                f"got last offset {int(offsets[-1])}"
            )
        self.ids = ids
        self.offsets = offsets
        self.vocab = vocab
        self.raw_words = int(raw_words if raw_words is not None else len(ids))
        self.replaced_bytes = 0
        self.path = None if path is None else Path(path)

    def __reduce__(self):
        # A corpus on disk travels (to DataLoader workers, other processes) as its path, so the
        # receiver maps the same file instead of unpickling a copy of every id.
        if self.path is not None and isinstance(self.ids, np.memmap):
            return (EncodedCorpus.open, (str(self.path),))
        return super().__reduce__()

    @classmethod
    def from_sentences(cls, sentences, vocab: Vocab) -> EncodedCorpus:
        """In-memory corpus from token lists (unknown words dropped, empty sentences skipped)."""
        parts, raw = [], 0
        for s in sentences:
            raw += len(s)
            ids = vocab.lookup(s)
            ids = ids[ids >= 0]
            if ids.size:
                parts.append(ids.astype(np.int32))
        if not parts:
            raise ValueError("no word of the corpus is in the vocabulary")
        lengths = np.array([p.size for p in parts], dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        return cls(np.concatenate(parts), offsets, vocab, raw_words=raw)

    @property
    def counts(self) -> np.ndarray:
        return self.vocab.counts

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    @property
    def n_sentences(self) -> int:
        return self.offsets.size - 1

    def __len__(self) -> int:
        return self.n_sentences

    def sentence(self, i: int) -> np.ndarray:
        return np.asarray(self.ids[self.offsets[i] : self.offsets[i + 1]])

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return (
            f"EncodedCorpus({self.n_tokens} tokens, {self.n_sentences} sentences, "
            f"{len(self.vocab)} words{where})"
        )

    @classmethod
    def open(cls, out_dir, check: bool = False) -> EncodedCorpus:
        """Memory-map an encoded directory. ``check`` verifies it first, cheaply: files present,
        the size of ``ids.int32`` and the shapes of ``offsets.npy`` and ``vocab.tsv`` as
        ``meta.json`` gives them, and every id in ``[0, len(vocab))`` (one min/max pass over the
        mapped ids). A damaged directory raises ``ValueError`` (or ``OSError``) saying what is
        wrong."""
        d = Path(out_dir)
        meta_path = d / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"no encoded corpus in {str(d)!r} (meta.json missing)")
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{str(meta_path)!r} is not an encoded corpus of format {FORMAT}")
        n = int(meta["n_tokens"])
        ids_path = d / "ids.int32"
        if check and ids_path.stat().st_size != 4 * n:
            raise ValueError(
                f"ids.int32 holds {ids_path.stat().st_size} bytes, meta.json says {n} ids "
                f"({4 * n} bytes)"
            )
        ids = np.memmap(ids_path, dtype="<i4", mode="r", shape=(n,))
        try:
            offsets = np.load(d / "offsets.npy")
        except (EOFError, SyntaxError) as err:  # a truncated or garbled header
            raise ValueError(f"offsets.npy cannot be read ({err})") from None
        vocab = Vocab.load(d / "vocab.tsv")
        if check:
            _check(meta, ids, offsets, vocab)
        corpus = cls(ids, offsets, vocab, meta["raw_words"], path=d)
        corpus.replaced_bytes = int(meta.get("replaced_bytes", 0))
        return corpus


def _check(meta: dict, ids, offsets, vocab: Vocab) -> None:
    """Raise ``ValueError`` naming what does not fit in an encoded directory's files."""
    sentences = meta.get("n_sentences")
    if offsets.ndim != 1 or (sentences is not None and offsets.shape != (int(sentences) + 1,)):
        raise ValueError(
            f"offsets.npy has shape {offsets.shape}, meta.json says {sentences} sentences"
        )
    size = meta.get("vocab_size")  # absent in directories encoded before it was recorded
    if size is not None and len(vocab) != int(size):
        raise ValueError(f"vocab.tsv has {len(vocab)} words, meta.json says {size}")
    if len(ids):
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= len(vocab):
            raise ValueError(
                f"ids.int32 holds ids from {low} to {high}, outside the vocabulary of "
                f"{len(vocab)} words"
            )


class BlockEncoder:
    """Token blocks (words with ``NEWLINE`` markers between lines, a line may span blocks) to
    vocabulary ids, one block at a time: unknown words are dropped after lines are cut into
    sentences of at most ``max_sentence_length`` raw words, as gensim reads a corpus. ``feed``
    returns the block's kept ids and the positions (in the whole output) where sentences start."""

    def __init__(self, vocab: Vocab, max_sentence_length: int = MAX_SENTENCE_LENGTH):
        if max_sentence_length < 1:
            raise ValueError(f"max_sentence_length must be >= 1, got {max_sentence_length}")
        self.lookup = _Lookup(vocab.index)
        self.lookup[NEWLINE] = _NEWLINE_ID
        self.max_sentence_length = max_sentence_length
        self.written = 0  # ids kept so far
        self.words = 0  # raw words read so far
        self.lines = 0  # line markers read so far
        self._in_line = 0  # raw words already read on the current line (it may span blocks)
        self._last_key = -1  # sentence key of the last word kept

    def feed(self, toks) -> tuple[np.ndarray, np.ndarray]:
        raw = np.fromiter(map(self.lookup.__getitem__, toks), dtype=np.int32, count=len(toks))
        is_nl = raw == _NEWLINE_ID
        line = self.lines
        # line number and position in the line of every entry, markers included
        line_of = line + np.cumsum(is_nl) - is_nl
        nl_pos = np.flatnonzero(is_nl)
        line_start = np.concatenate(([0], nl_pos + 1))  # entry where each line begins here
        # a word's position in its line; the first line may continue the previous block
        pos = np.arange(raw.size) - line_start[line_of - line]
        pos[line_of == line] += self._in_line
        word = ~is_nl
        key = line_of.astype(np.int64) * (1 << 31) + pos // self.max_sentence_length
        keep = word & (raw >= 0)
        kept = raw[keep]
        kkey = key[keep]
        new = np.empty(kept.size, dtype=bool)
        if kept.size:
            new[0] = kkey[0] != self._last_key
            new[1:] = kkey[1:] != kkey[:-1]
            self._last_key = int(kkey[-1])
        starts = self.written + np.flatnonzero(new)
        self.written += kept.size
        n_lines = int(nl_pos.size)
        self.words += int(word.sum())
        self._in_line = (raw.size - line_start[-1]) + (self._in_line if n_lines == 0 else 0)
        self.lines += n_lines
        return kept, starts


def encode_corpus(
    path,
    vocab: Vocab,
    out_dir,
    tokenizer: Tokenizer | None = None,
    lowercase: bool = True,
    max_sentence_length: int = MAX_SENTENCE_LENGTH,
    extra_meta: dict | None = None,
) -> EncodedCorpus:
    """Tokenize ``path`` as ``read_sentences`` does, keep words of ``vocab`` (unknown words are
    dropped, as gensim does, after lines are cut at ``max_sentence_length`` raw words) and write the
    ids to ``out_dir``. Returns the memory-mapped result."""
    if len(vocab) == 0:
        raise ValueError("vocabulary is empty")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats = CorpusStats()
    encoder = BlockEncoder(vocab, max_sentence_length)
    starts: list[np.ndarray] = []
    ids_path = out / "ids.int32"
    tmp_path = out / "ids.int32.tmp"
    try:
        with open(tmp_path, "wb") as f:
            for toks in token_blocks(path, tokenizer, lowercase, stats):
                kept, block_starts = encoder.feed(toks)
                starts.append(block_starts)
                kept.astype("<i4").tofile(f)
        stats.lines, stats.words = encoder.lines, encoder.words
        written = encoder.written
    except BaseException:
        tmp_path.unlink(missing_ok=True)  # no partial file left behind (full disk, bad input)
        raise
    if stats.words == 0:
        tmp_path.unlink()
        raise UsageError(f"corpus {os.fspath(path)!r} is empty: no words found")
    if written == 0:
        tmp_path.unlink()
        raise UsageError(
            f"no word of corpus {os.fspath(path)!r} is in the vocabulary "
            f"({stats.words} words read, {len(vocab)} in the vocabulary)"
        )
    if stats.replaced_bytes:
        log.warning(
            "%s: %d undecodable bytes replaced by U+FFFD", os.fspath(path), stats.replaced_bytes
        )
    os.replace(tmp_path, ids_path)
    offsets = np.concatenate([*starts, [written]]).astype(np.int64)
    np.save(out / "offsets.npy", offsets)
    vocab.save(out / "vocab.tsv")
    meta = {
        "format": FORMAT,
        "source": os.fspath(path),
        "n_tokens": int(written),
        "n_sentences": int(offsets.size - 1),
        "vocab_size": len(vocab),
        "raw_words": int(stats.words),
        "lines": int(stats.lines),
        "replaced_bytes": int(stats.replaced_bytes),
        "max_sentence_length": int(max_sentence_length),
        "lowercase": bool(lowercase),
        "tokenizer": None if tokenizer is None else getattr(tokenizer, "__name__", repr(tokenizer)),
    }
    meta.update(extra_meta or {})
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return EncodedCorpus.open(out)
