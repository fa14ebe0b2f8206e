"""Vocabulary: words by descending count (ties by word), saved as a plain TSV (word, count)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from .reader import NEWLINE, CorpusStats, Tokenizer, token_blocks

__all__ = ["Vocab"]

log = logging.getLogger(__name__)


def _is_path(source) -> bool:
    return isinstance(source, (str, os.PathLike))


class Vocab:
    """``words[i]`` has id ``i`` and ``counts[i]`` occurrences; ``index`` maps word -> id."""

    def __init__(self, words: Sequence[str], counts):
        words = list(words)
        counts = np.asarray(counts, dtype=np.int64)
        if counts.shape != (len(words),):
            raise ValueError(f"{len(words)} words but counts of shape {counts.shape}")
        if (counts < 0).any():
            raise ValueError("word counts must be non-negative")
        self.words = words
        self.counts = counts
        self.index = {w: i for i, w in enumerate(words)}
        if len(self.index) != len(words):
            dup = next(w for w in words if words.count(w) > 1)
            raise ValueError(f"duplicate word in vocabulary: {dup!r}")
        self.raw_words = int(counts.sum())  # words read when the vocabulary was counted
        self.replaced_bytes = 0

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word) -> bool:
        return word in self.index

    def __repr__(self) -> str:
        head = ", ".join(f"{w!r}: {c}" for w, c in zip(self.words[:3], self.counts[:3].tolist()))
        more = ", ..." if len(self) > 3 else ""
        return f"Vocab({len(self)} words, {int(self.counts.sum())} tokens; {head}{more})"

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Vocab)
            and self.words == other.words
            and np.array_equal(self.counts, other.counts)
        )

    # building ------------------------------------------------------------------------------------
    @classmethod
    def from_counter(cls, counter, min_count: int = 5, max_vocab_size: int | None = None) -> Vocab:
        """Keep words seen at least ``min_count`` times, then the ``max_vocab_size`` most frequent;
        ids follow descending count, ties broken by the word itself so that builds are stable."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if max_vocab_size is not None and max_vocab_size < 1:
            raise ValueError(f"max_vocab_size must be >= 1 or None, got {max_vocab_size}")
        total = sum(counter.values())
        if total == 0:
            raise ValueError("corpus is empty: no words to build a vocabulary from")
        kept = [(w, c) for w, c in counter.items() if c >= min_count]
        if not kept:
            top_word, top = max(counter.items(), key=lambda wc: (wc[1], wc[0]))
            raise ValueError(
                f"vocabulary is empty: no word occurs min_count={min_count} times "
                f"(the most frequent, {top_word!r}, occurs {top} times in {total} words)"
            )
        kept.sort(key=lambda wc: (-wc[1], wc[0]))
        if max_vocab_size is not None:
            kept = kept[:max_vocab_size]
        vocab = cls([w for w, _ in kept], [c for _, c in kept])
        vocab.raw_words = int(total)
        return vocab

    @classmethod
    def build(
        cls,
        source,
        min_count: int = 5,
        max_vocab_size: int | None = None,
        tokenizer: Tokenizer | None = None,
        lowercase: bool = True,
    ) -> Vocab:
        """Count words in a corpus path (file or directory, read as ``read_sentences`` would) or in
        an iterable of token lists."""
        counter: Counter = Counter()
        stats = CorpusStats()
        if _is_path(source):
            for toks in token_blocks(source, tokenizer, lowercase, stats):
                counter.update(toks)
            counter.pop(NEWLINE, None)
        else:
            if isinstance(source, (str, bytes)):
                raise TypeError("pass a path or an iterable of token lists, not a string of text")
            for sentence in source:
                if isinstance(sentence, str):
                    raise TypeError("sentences must be lists of tokens, got a str; split it first")
                counter.update(sentence)
        vocab = cls.from_counter(counter, min_count, max_vocab_size)
        vocab.replaced_bytes = stats.replaced_bytes
        if stats.replaced_bytes:
            log.warning("%s: %d undecodable bytes replaced by U+FFFD", source, stats.replaced_bytes)
        return vocab

    # files ---------------------------------------------------------------------------------------
    def save(self, path) -> None:
        bad = [w for w in self.words if not w or "\t" in w or "\n" in w or "\r" in w]
        if bad:
            raise ValueError(
                f"cannot save word {bad[0]!r} in a TSV vocabulary (empty, tab or newline)"
            )
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for w, c in zip(self.words, self.counts.tolist()):
                f.write(f"{w}\t{c}\n")

    @classmethod
    def load(cls, path) -> Vocab:
        words, counts = [], []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\n").rstrip("\r")
                if not line:
                    continue
                parts = line.split("\t")
                if len(parts) != 2 or not parts[1].strip().isdigit():
                    raise ValueError(
                        f"{os.fspath(path)}:{n}: expected 'word<TAB>count', got {line!r}"
                    )
                words.append(parts[0])
                counts.append(int(parts[1]))
        if not words:
            raise ValueError(f"vocabulary file {os.fspath(path)!r} is empty")
        return cls(words, counts)

    def lookup(self, words: Iterable[str]) -> np.ndarray:
        """Ids of ``words``; unknown words give -1."""
        get = self.index.get
        return np.fromiter((get(w, -1) for w in words), dtype=np.int64)
