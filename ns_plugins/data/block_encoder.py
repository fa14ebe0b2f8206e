"""Token blocks to vocabulary ids in memory, one block at a time (``BlockEncoder``).

The rule by which a corpus becomes sentences of ids: lines cut into sentences of
``max_sentence_length`` raw words, then unknown words dropped, as gensim reads a corpus.
``Word2Vec`` encodes the corpus it is given with it; ``encode.encode_corpus`` applies the same
rule to a whole corpus on disk, compiled (``wordtable.cut_sentences`` is ``feed_ids`` as a loop),
and shares its word lookup (``Lookup``, the line marker as ``NEWLINE_ID``). Separate from that
parallel run: this needs neither files, processes nor numba.
"""

from __future__ import annotations

import numpy as np

from .reader import MAX_SENTENCE_LENGTH, NEWLINE
from .vocab import Vocab

__all__ = ["BlockEncoder"]

NEWLINE_ID = -2  # the id of the line marker in a looked-up block


class Lookup(dict):
    """word -> id with unknown words as -1 and the line marker as -2, for ``map``."""

    def __missing__(self, key):
        return -1


class BlockEncoder:
    """Token blocks (words with ``NEWLINE`` markers between lines, a line may span blocks) to
    vocabulary ids, one block at a time: unknown words are dropped after lines are cut into
    sentences of at most ``max_sentence_length`` raw words, as gensim reads a corpus. ``feed``
    returns the block's kept ids and the positions (in the whole output) where sentences start.

    ``feed_ids`` takes a block already looked up (ids, -1 for an unknown word, -2 for the line
    marker); ``vocab`` may then be None. A stream that starts inside a corpus passes where it
    stands: ``lines`` (line markers before it), ``in_line`` (words of its first line before it)
    and ``written`` (ids kept before it); ``first_key`` and ``last_key`` then tell whether its
    first kept word continues the sentence of the last one kept before it (equal keys)."""

    def __init__(
        self,
        vocab: Vocab | None,
        max_sentence_length: int = MAX_SENTENCE_LENGTH,
        *,
        lines: int = 0,
        in_line: int = 0,
        written: int = 0,
    ):
        if max_sentence_length < 1:
            raise ValueError(f"max_sentence_length must be >= 1, got {max_sentence_length}")
        self.lookup = None
        if vocab is not None:
            self.lookup = Lookup(vocab.index)
            self.lookup[NEWLINE] = NEWLINE_ID
        self.max_sentence_length = max_sentence_length
        self.written = written  # ids kept so far
        self.words = 0  # raw words read so far
        self.lines = lines  # line markers read so far
        self._in_line = in_line  # raw words already read on the current line (it may span blocks)
        self._last_key = -1  # sentence key of the last word kept
        self.first_key = -1  # sentence key of the first word kept

    @property
    def last_key(self) -> int:
        return self._last_key

    def feed(self, toks) -> tuple[np.ndarray, np.ndarray]:
        raw = np.fromiter(map(self.lookup.__getitem__, toks), dtype=np.int32, count=len(toks))
        return self.feed_ids(raw)

    def feed_ids(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        is_nl = raw == NEWLINE_ID
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
            if self.first_key < 0:
                self.first_key = int(kkey[0])
            self._last_key = int(kkey[-1])
        starts = self.written + np.flatnonzero(new)
        self.written += kept.size
        n_lines = int(nl_pos.size)
        self.words += int(word.sum())
        self._in_line = (raw.size - line_start[-1]) + (self._in_line if n_lines == 0 else 0)
        self.lines += n_lines
        return kept, starts
