"""Vocabulary: words by descending count (ties by word), saved as a plain TSV (word, count)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from ns_plugins.errors import UsageError

from .reader import NEWLINE, Tokenizer, token_blocks
from .textfiles import CorpusStats, corpus_files

__all__ = ["Vocab", "prune_counts"]

log = logging.getLogger(__name__)


def _is_path(source) -> bool:
    return isinstance(source, (str, os.PathLike))


def prune_counts(counter: dict, threshold: int, keep=None) -> int:
    """Drop the words counted at most ``threshold`` times (except ``keep``); their total count."""
    drop = [w for w, c in counter.items() if c <= threshold and w != keep]
    return sum(counter.pop(w) for w in drop)


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
    def from_counter(
        cls,
        counter,
        min_count: int = 5,
        max_final_vocab: int | None = None,
        *,
        raw_words: int | None = None,
        source=None,
    ) -> Vocab:
        """Keep words seen at least ``min_count`` times, then the ``max_final_vocab`` most frequent;
        ids follow descending count, ties broken by the word itself so that builds are stable.

        ``raw_words``: words read, when ``counter`` no longer holds them all (pruned while
        counting); ``source`` names the corpus in error messages."""
        counts = np.fromiter(counter.values(), dtype=np.int64, count=len(counter))
        return cls.from_counts(
            list(counter), counts, min_count, max_final_vocab, raw_words=raw_words, source=source
        )

    @classmethod
    def from_counts(
        cls,
        words: Sequence[str],
        counts,
        min_count: int = 5,
        max_final_vocab: int | None = None,
        *,
        raw_words: int | None = None,
        source=None,
    ) -> Vocab:
        """``from_counter`` for distinct ``words`` and their ``counts`` (an array): the same
        vocabulary, sorted with numpy instead of a list of pairs (less memory, faster)."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if max_final_vocab is not None and max_final_vocab < 1:
            raise ValueError(f"max_final_vocab must be >= 1 or None, got {max_final_vocab}")
        counts = np.asarray(counts, dtype=np.int64)
        total = int(counts.sum()) if raw_words is None else raw_words
        where = "" if source is None else f" {os.fspath(source)!r}"
        if total == 0:
            raise UsageError(f"corpus{where} is empty: no words to build a vocabulary from")
        kept = np.flatnonzero(counts >= min_count)
        if not kept.size and not counts.size:
            raise UsageError(
                f"vocabulary of corpus{where} is empty: no word occurs min_count={min_count} "
                f"times in {total} words; lower min_count"
            )
        if not kept.size:
            top = int(counts.max())
            top_word = max(w for w, c in zip(words, counts.tolist()) if c == top)
            raise UsageError(
                f"vocabulary of corpus{where} is empty: no word occurs min_count={min_count} "
                f"times (the most frequent, {top_word!r}, occurs {top} times in {total} words); "
                "lower min_count"
            )
        # descending count, ties by the word: the words' ranks in sorted order break the ties
        kept_words = [words[i] for i in kept.tolist()]
        by_word = np.array(kept_words, dtype=object).argsort(kind="stable")
        rank = np.empty(len(kept_words), dtype=np.int64)
        rank[by_word] = np.arange(len(kept_words))
        del by_word
        order = np.lexsort((rank, -counts[kept]))
        if max_final_vocab is not None:
            order = order[:max_final_vocab]
        vocab = cls([kept_words[i] for i in order.tolist()], counts[kept][order])
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
        *,
        max_final_vocab: int | None = None,
    ) -> Vocab:
        """Count words in a corpus path (file or directory, read as ``read_sentences`` would) or in
        an iterable of token lists.

        ``max_vocab_size`` caps memory while counting, as gensim's: whenever more distinct words
        than that are held (checked after each block of text, or each sentence), words seen at most
        ``t`` times are dropped, ``t`` starting at 1 and rising by one per prune, so rare words
        may be lost or undercounted. ``max_final_vocab`` keeps the most frequent words after
        counting (ties broken by the word)."""
        if max_vocab_size is not None and max_vocab_size < 1:
            raise ValueError(f"max_vocab_size must be >= 1 or None, got {max_vocab_size}")
        counter: Counter = Counter()
        stats = CorpusStats()
        cap = max_vocab_size if max_vocab_size is not None else -1
        threshold, pruned = 1, 0
        if _is_path(source):
            from .parallel import Progress

            cap += cap >= 0  # the line marker is counted too
            size = sum(f.stat().st_size for f in corpus_files(source))
            progress, words = Progress(f"counting {os.fspath(source)}", size), 0
            try:
                for toks in token_blocks(source, tokenizer, lowercase, stats):
                    counter.update(toks)
                    if len(counter) > cap >= 0:
                        pruned += prune_counts(counter, threshold, keep=NEWLINE)
                        threshold += 1
                    words += len(toks) - toks.count(NEWLINE)
                    progress.set(0, stats.bytes_read, words)
                    progress.maybe_log()
            finally:
                progress.close()
            counter.pop(NEWLINE, None)
        else:
            if isinstance(source, (str, bytes)):
                raise TypeError("pass a path or an iterable of token lists, not a string of text")
            for sentence in source:
                if isinstance(sentence, str):
                    raise TypeError("sentences must be lists of tokens, got a str; split it first")
                counter.update(sentence)
                if len(counter) > cap >= 0:
                    pruned += prune_counts(counter, threshold)
                    threshold += 1
        if pruned:
            log.info("%s: words seen at most %d times pruned while counting", source, threshold - 1)
        name = source if _is_path(source) else None
        total = sum(counter.values()) + pruned
        vocab = cls.from_counter(counter, min_count, max_final_vocab, raw_words=total, source=name)
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
        """Read ``word<TAB>count`` lines (a run's vocab.tsv)."""
        words, counts = [], []
        try:
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    line = line.rstrip("\n").rstrip("\r")
                    if not line:
                        continue
                    parts = line.split("\t")
                    if len(parts) != 2 or not parts[1].strip().isdigit():
                        raise UsageError(
                            f"{os.fspath(path)}:{n}: expected 'word<TAB>count', got {line!r}"
                        )
                    words.append(parts[0])
                    counts.append(int(parts[1]))
        except UnicodeDecodeError as err:
            raise UsageError(
                f"vocabulary file {os.fspath(path)!r} is not UTF-8 text ({err.reason} at byte "
                f"{err.start})"
            ) from None
        if not words:
            raise UsageError(f"vocabulary file {os.fspath(path)!r} is empty")
        try:
            return cls(words, counts)
        except ValueError as err:
            raise UsageError(f"vocabulary file {os.fspath(path)!r}: {err}") from None

    def lookup(self, words: Iterable[str]) -> np.ndarray:
        """Ids of ``words``; unknown words give -1."""
        get = self.index.get
        return np.fromiter((get(w, -1) for w in words), dtype=np.int64)
