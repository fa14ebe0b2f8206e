"""A corpus as lists of tokens, one per line (``read_sentences``, gensim's ``LineSentence``).

A thin, restartable view over ``reader.token_blocks`` for user code that iterates sentences;
separate from the reader, which yields flat token blocks to every consumer (vocabulary counts,
the encoders) and leaves cutting lines into sentences to them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from .reader import MAX_SENTENCE_LENGTH, NEWLINE, Tokenizer, token_blocks
from .textfiles import CorpusStats, corpus_files

__all__ = ["read_sentences"]


class read_sentences:  # noqa: N801 - reads like the function it replaces in user code
    """Stream a corpus as lists of tokens, one per line, lines longer than ``max_sentence_length``
    cut into chunks of that many tokens (as gensim does). Iterating again re-reads the files.

    ``stats`` describes the most recent complete pass (lines, words, replaced bytes).
    """

    def __init__(
        self,
        path,
        tokenizer: Tokenizer | None = None,
        lowercase: bool = True,
        max_sentence_length: int = MAX_SENTENCE_LENGTH,
    ):
        if max_sentence_length < 1:
            raise ValueError(f"max_sentence_length must be >= 1, got {max_sentence_length}")
        corpus_files(path)  # fail early on a missing path
        self.path = os.fspath(path)
        self.tokenizer = tokenizer
        self.lowercase = lowercase
        self.max_sentence_length = int(max_sentence_length)
        self.stats = CorpusStats()
        self._it: Iterator[list[str]] | None = None

    def __iter__(self) -> Iterator[list[str]]:
        stats = CorpusStats()
        limit = self.max_sentence_length
        sentence: list[str] = []
        for toks in token_blocks(self.path, self.tokenizer, self.lowercase, stats):
            for tok in toks:
                if tok == NEWLINE:
                    stats.lines += 1
                    if sentence:
                        yield sentence
                    sentence = []
                    continue
                stats.words += 1
                sentence.append(tok)
                if len(sentence) == limit:
                    yield sentence
                    sentence = []
        self.stats = stats

    def __next__(self) -> list[str]:
        if self._it is None:
            self._it = iter(self)
        return next(self._it)
