"""Token blocks to int32 codes, counting the words or with a fixed vocabulary (``TokenCoder``).

The one place where the blocks of ``reader.token_blocks(..., ascii_bytes=coder.ascii_bytes)``
become numbers: ASCII blocks (``bytes``) are cut and looked up by the compiled
``wordtable.WordTable``, other blocks (lists of ``str``: text that is not ASCII, or a custom
tokenizer) by a Python dict. A line end is ``NEWLINE_ID`` (-2).

- Counting (no vocabulary): a word's code is provisional, the table's id, or ``DICT_BASE`` + its
  order of first sight in the dict; ``counted()`` gives every distinct word with its count, and a
  word met both ways is merged by ``wordtable.merge_counts``. Python strings are made only for
  the dict's words, so counting a large ASCII corpus holds bytes, not an object per word.
- Fixed: a word's code is its vocabulary id, -1 for a word outside the vocabulary.

Codes become sentences of ids by ``wordtable.cut_sentences``, the rule by which a corpus becomes
sentences: lines cut into sentences of ``max_sentence_length`` raw words, then unknown words
dropped, as gensim reads a corpus. The parallel encoder (``encode``) writes a whole corpus to disk
so; ``Word2Vec`` encodes its sentences or its ``corpus_file`` so in memory.
"""

from __future__ import annotations

import numpy as np

from .reader import NEWLINE, Tokenizer

__all__ = ["DICT_BASE", "NEWLINE_ID", "Lookup", "TokenCoder"]

NEWLINE_ID = -2  # the code of the line marker


class Lookup(dict):
    """word -> id with unknown words as -1, for ``map``."""

    def __missing__(self, key):
        return -1


# Provisional ids of the words read by Python start here, after those of the compiled table.
DICT_BASE = 1 << 30


class _Provisional(dict):
    """word -> id in order of first sight from DICT_BASE on (the line marker, put in first, is
    -2), for ``map``."""

    def __missing__(self, key):
        value = self[key] = DICT_BASE + len(self) - 1
        return value


class TokenCoder:
    """Codes of one stream of token blocks. ``tokenizer``: None (``simple_tokenize``, which the
    compiled table knows as ``WORDS``), ``str.split`` (``SPLIT``) or another callable (every block
    then comes as ``str``). ``vocab`` (``.words`` and ``.index``): fixed; None: counting."""

    def __init__(self, tokenizer: Tokenizer | None, vocab=None):
        from .wordtable import SPLIT, WORDS, WordTable  # numba: imported when coding

        mode = WORDS if tokenizer is None else SPLIT if tokenizer is str.split else None
        self.counting = vocab is None
        self.table = self.table_ids = None
        if self.counting:
            self.lookup = _Provisional({NEWLINE: NEWLINE_ID})
            self._dict_counts = np.zeros(0, dtype=np.int64)
            if mode is not None:
                self.table = WordTable(mode)
        else:
            self.lookup = None  # a copy of the index, made for the first block of ``str``
            self._index = vocab.index
            if mode is not None:
                self.table, self.table_ids = WordTable.of_words(mode, vocab.words)

    @property
    def ascii_bytes(self) -> bool:
        """Whether ``token_blocks`` should hand ASCII blocks over as bytes."""
        return self.table is not None

    def codes(self, block) -> np.ndarray:
        """The int32 codes of one block, line ends included."""
        if isinstance(block, bytes):
            codes = self.table.encode(block)
            if not self.counting:  # the table's ids to the vocabulary's
                known = codes >= 0
                codes[known] = self.table_ids[codes[known]]
            return codes
        if self.lookup is None:
            self.lookup = Lookup(self._index)
            self.lookup[NEWLINE] = NEWLINE_ID
        codes = np.fromiter(map(self.lookup.__getitem__, block), dtype=np.int32, count=len(block))
        if self.counting:
            seen = np.bincount(codes[codes >= DICT_BASE] - DICT_BASE)
            if seen.size > self._dict_counts.size:
                grown = np.zeros(seen.size, np.int64)
                grown[: self._dict_counts.size] = self._dict_counts
                self._dict_counts = grown
            self._dict_counts[: seen.size] += seen
        return codes

    def counted(self):
        """Every distinct word seen and its count (a ``wordtable.WordCounts``): the table's words
        by id, then the dict's in order of first sight (the provisional codes' order)."""
        from .wordtable import WordCounts

        if not self.counting:
            raise RuntimeError("a coder with a fixed vocabulary does not count")
        dict_words = list(self.lookup)[1:]  # without the line marker
        dict_counts = np.zeros(len(dict_words), np.int64)
        n = min(self._dict_counts.size, len(dict_words))
        dict_counts[:n] = self._dict_counts[:n]
        if self.table is None:
            out = WordCounts.empty()
            out.extra_words, out.extra_counts = dict_words, dict_counts
            return out
        return self.table.counted(dict_words, dict_counts)
