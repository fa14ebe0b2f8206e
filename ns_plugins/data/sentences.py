"""A corpus as lists of tokens, one per line.

``read_sentences`` (gensim's ``LineSentence``) is a thin, restartable view over
``reader.token_blocks`` for user code that iterates sentences. ``SentenceCorpus`` goes the other
way for ``Word2Vec``: in-memory sentences or a ``corpus_file``, checked once, read as flat token
blocks (lines closed by the reader's marker), counted (``count``) and encoded into ids, in memory
(``encode``) or streamed as training steps (``chunks``), through ``token_codes`` as the parallel
encoder encodes a corpus on disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .reader import MAX_SENTENCE_LENGTH, NEWLINE, Tokenizer, token_blocks
from .textfiles import CorpusStats, corpus_files

__all__ = [
    "SentenceCorpus",
    "check_restartable",
    "empty_corpus_error",
    "read_sentences",
    "sentence_blocks",
]

# Corpus read in blocks of 256 KB of text or 64k in-memory tokens: a block's token strings and the
# encoder's per-token arrays are the transient memory of counting and encoding (larger blocks
# raise the peak; RESULTS.md), and per-block overhead is still negligible.
BLOCK_BYTES = 1 << 18
BLOCK_TOKENS = 1 << 16


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


def check_restartable(corpus, passes: int) -> None:
    """Refuse a generator or iterator: gensim reads the corpus once per epoch plus once for the
    vocabulary, so scripts written for it pass restartable iterables; we keep that contract."""
    if isinstance(corpus, (str, bytes)):
        raise TypeError("sentences must be an iterable of token lists, not a string")
    if not isinstance(corpus, Iterable):
        raise TypeError(
            f"The corpus_iterable must be an iterable of lists of strings, got {corpus!r} instead"
        )
    if isinstance(corpus, Iterator):
        raise TypeError(
            f"Using a generator as corpus_iterable can't support {passes} passes: the corpus "
            "must be restartable. Try a re-iterable sequence (a list, or an object whose "
            "__iter__ starts a new pass)."
        )


def empty_corpus_error() -> ValueError:
    return ValueError(
        "the corpus is empty (if not intended, be sure to provide a corpus that offers "
        "restartable iteration = an iterable)"
    )


def sentence_blocks(sentences) -> Iterator[list]:
    """Token blocks of in-memory sentences: the words of several sentences, each sentence closed
    by the reader's line marker, as ``token_blocks`` yields a file's."""
    block: list = []
    for sentence in sentences:
        if isinstance(sentence, str):
            raise TypeError("sentences must be lists of tokens, got a str; split it first")
        block.extend(sentence)
        block.append(NEWLINE)
        if len(block) >= BLOCK_TOKENS:
            yield block
            block = []
    if block:
        yield block


class SentenceCorpus:
    """One training corpus: in-memory sentences or a file, read as token blocks."""

    def __init__(self, corpus_iterable, corpus_file, passes: int):
        if (corpus_iterable is None) == (corpus_file is None):
            raise TypeError(
                "Either one of corpus_file or corpus_iterable value must be provided"
                if corpus_iterable is None
                else "Both corpus_file and corpus_iterable must not be provided at the same time"
            )
        if corpus_file is not None:
            corpus_files(corpus_file)  # a missing path or a FIFO fails here, naming it
        else:
            check_restartable(corpus_iterable, passes)
        self.iterable, self.file = corpus_iterable, corpus_file
        self.words_read = 0  # by the last complete pass of ``encode`` or ``chunks``

    def blocks(self, ascii_bytes: bool = False) -> Iterator[list | bytes]:
        """Token blocks; ``ascii_bytes``: a file's ASCII blocks as bytes (``token_codes``)."""
        if self.file is None:
            return sentence_blocks(self.iterable)
        return token_blocks(
            self.file, str.split, False, block_bytes=BLOCK_BYTES, ascii_bytes=ascii_bytes
        )

    def count(self, min_count: int = 1) -> tuple[list, np.ndarray, int, int]:
        """(words seen at least ``min_count`` times, their counts, all words, lines). A file is
        counted by the compiled word table (``token_codes``): no ``str`` is made for a word that
        does not reach ``min_count``. In-memory tokens must be strings without whitespace."""
        from collections import Counter

        from .token_codes import NEWLINE_ID, TokenCoder
        from .wordtable import merge_counts

        if self.file is not None:
            coder, lines = TokenCoder(str.split), 0
            for block in self.blocks(ascii_bytes=True):
                lines += int(np.count_nonzero(coder.codes(block) == NEWLINE_ID))
            counted = coder.counted()
            if counted.extra_words:  # words met in ASCII blocks and in others: merged by word
                counted, _ = merge_counts([counted])
            counts = counted.all_counts()
            total = int(counts.sum())
            if total == 0:
                raise ValueError(f"corpus_file {str(self.file)!r} holds no words")
            frequent = np.flatnonzero(counts >= min_count)
            return counted.words_at(frequent), counts[frequent], total, lines
        counter: Counter = Counter()
        for block in self.blocks():
            counter.update(block)
        lines = counter.pop(NEWLINE, 0)
        total = sum(counter.values())
        if total == 0:
            raise empty_corpus_error()
        # a word file cannot carry such a token, and a corpus file cannot hold one
        bad = next((w for w in counter if not isinstance(w, str) or w.split() != [w]), None)
        if bad is not None:
            raise ValueError(f"token {bad!r} is empty or holds whitespace; split it first")
        words = [w for w, c in counter.items() if c >= min_count]
        counts = np.fromiter((counter[w] for w in words), dtype=np.int64, count=len(words))
        return words, counts, total, lines

    def _encoded_blocks(self, vocab) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """Per token block: (ids kept, corpus positions where sentences start, words read): lines
        cut into sentences of ``MAX_SENTENCE_LENGTH`` words, then unknown words dropped
        (``wordtable.cut_sentences``). The arrays are reused by the next block."""
        from .token_codes import NEWLINE_ID, TokenCoder
        from .wordtable import cut_sentences

        coder = TokenCoder(str.split, vocab)
        state = np.array([0, 0, 0, -1, -1], np.int64)  # cut_sentences' running state
        no_lut = np.zeros(0, np.int32)  # the codes are the ids already
        ids = np.empty(0, np.int32)
        starts = np.empty(0, np.int64)
        read = 0
        for block in self.blocks(ascii_bytes=coder.ascii_bytes):
            codes = coder.codes(block)
            block_words = codes.size - int(np.count_nonzero(codes == NEWLINE_ID))
            read += block_words
            if ids.size < block_words:  # at most one id and one start per word
                ids, starts = np.empty(block_words, np.int32), np.empty(block_words, np.int64)
            n_ids, n = cut_sentences(codes, no_lut, MAX_SENTENCE_LENGTH, state, ids, starts)
            yield ids[:n_ids], starts[:n], block_words
        if read == 0:
            raise empty_corpus_error()
        self.words_read = read

    def encode(
        self, vocab, words_hint: int = 0, sentences_hint: int = 0
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """(ids, sentence offsets, words read) of the whole corpus under ``vocab`` (``.words``,
        ``.index``). The arrays are filled in place, sized by the hints (the corpus's words and
        lines as last counted; grown if it changed since): no pieces to join, so the peak is the
        result."""
        ids = np.empty(max(words_hint, 1), dtype=np.int32)
        offsets = np.empty(max(sentences_hint, 1) + 1, dtype=np.int64)
        written = sentences = read = 0
        for block_ids, starts, block_words in self._encoded_blocks(vocab):
            read += block_words
            n_ids, n = block_ids.size, starts.size
            if written + n_ids > ids.size:
                ids = np.resize(ids, max(written + n_ids, 2 * ids.size))
            ids[written : written + n_ids] = block_ids
            written += n_ids
            if sentences + n + 1 > offsets.size:
                offsets = np.resize(offsets, max(sentences + n + 1, 2 * offsets.size))
            offsets[sentences : sentences + n] = starts
            sentences += n
        offsets[sentences] = written
        return ids[:written], offsets[: sentences + 1], read

    def chunks(self, vocab, chunk_words: int) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
        """The encoded corpus as training steps, streamed: (ids, sentence offsets into them, the
        corpus position of ``ids[0]``), cut where ``job_bounds(offsets, chunk_words)`` cuts the
        whole of ``encode``'s result, so the steps are the same; only a step's words (and a block
        being encoded) are held. The arrays are reused by the next step."""
        buf = np.empty(2 * chunk_words, np.int32)  # ids from ``base`` on
        pending = np.empty(0, np.int64)  # starts of the sentences not yet trained
        base = held = 0
        target = chunk_words  # the next cut: the first sentence starting at or after it
        for block_ids, starts, _ in self._encoded_blocks(vocab):
            if held + block_ids.size > buf.size:
                buf = np.resize(buf, max(held + block_ids.size, 2 * buf.size))
            buf[held : held + block_ids.size] = block_ids
            held += block_ids.size
            pending = np.concatenate([pending, starts])
            while pending.size > 1:
                j = 1 + int(np.searchsorted(pending[1:], target))
                if j == pending.size:
                    break
                cut = int(pending[j])
                yield buf[: cut - base], pending[: j + 1] - base, base
                buf[: base + held - cut] = buf[cut - base : held]
                held -= cut - base
                base, pending = cut, pending[j:]
                target += chunk_words * ((cut - target) // chunk_words + 1)  # past ``cut``
        if pending.size:
            yield buf[:held], np.append(pending, base + held) - base, base

    def same_as(self, other: SentenceCorpus | None) -> bool:
        if other is None:
            return False
        if self.file is not None:
            return other.file is not None and Path(self.file) == Path(other.file)
        return self.iterable is other.iterable
