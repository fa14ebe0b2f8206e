"""Compiled steps of the corpus encoder (numba): a word table, and the cut into sentences.

A word table turns ASCII text into word ids, tokenized and looked up in one pass.

``WordTable.encode(block)`` reads a block of ASCII bytes (already lowercased when the reading
lowercases), cuts it into tokens as the reader's tokenizers do on ASCII text, and returns one
int32 code per token and per line end (``LINE``): the word's id in the table, a new word getting
the next id (``frozen``: -1 instead, the table left as it is). It counts every word it sees.

The two tokenizations, equal to the reader's on ASCII text:

- ``SPLIT`` (``str.split``): runs of bytes other than ASCII whitespace and \\x1c-\\x1f;
- ``WORDS`` (``simple_tokenize``: ``[^\\W_]+(?:['’][^\\W_]+)*``): runs of letters and digits,
  joined by single apostrophes ("don't", "rock'n'roll").

The table is open addressing (FNV-1a hashes, linear probing, at most half full), the words' bytes
back to back in one array; it grows as needed, so memory follows the vocabulary (under 100 bytes
a word). Looking tokens up in a Python dict cost about 190 ns a token on gcide x20 (cache misses
on a table of 217k words, and an object per token); this cuts and looks up for about 70 ns.

``cut_sentences`` turns codes into sentences of ids, the corpus's one cutting rule (the parallel
encoder's and ``Word2Vec``'s).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

__all__ = ["LINE", "SPLIT", "WORDS", "WordCounts", "WordTable", "cut_sentences", "merge_counts"]

SPLIT, WORDS = 0, 1
LINE = -2  # the code of a line end


@numba.njit(cache=True, inline="always")
def _is_space(c):
    return c == 32 or 9 <= c <= 13 or 28 <= c <= 31


@numba.njit(cache=True, inline="always")
def _is_alnum(c):
    return 48 <= c <= 57 or 97 <= c <= 122 or 65 <= c <= 90


@numba.njit(cache=True, nogil=True)
def _encode(data, mode, frozen, pos, slots, hashes, starts, arena, sizes, counts, out, n_out):
    """Codes of the tokens of ``data`` from byte ``pos`` on into ``out[n_out:]``; returns
    (n_out, pos, full): ``full`` when a new word did not fit (grow, then call again from ``pos``).
    ``sizes`` = [words, arena bytes used]."""
    n = data.size
    mask = slots.size - 1
    while pos < n:
        c = data[pos]
        if c == 10:
            out[n_out] = -2
            n_out += 1
            pos += 1
            continue
        if mode == 0:
            if _is_space(c):
                pos += 1
                continue
            end = pos + 1
            while end < n and not _is_space(data[end]):
                end += 1
        else:
            if not _is_alnum(c):
                pos += 1
                continue
            end = pos + 1
            while True:
                while end < n and _is_alnum(data[end]):
                    end += 1
                if end + 1 < n and data[end] == 39 and _is_alnum(data[end + 1]):
                    end += 1
                    continue
                break
        h = np.uint64(14695981039346656037)
        for j in range(pos, end):
            h = (h ^ np.uint64(data[j])) * np.uint64(1099511628211)
        slot = np.int64(h & np.uint64(mask))
        length = end - pos
        found = -1
        while slots[slot] != 0:
            word = slots[slot] - 1
            if hashes[word] == h and starts[word + 1] - starts[word] == length:
                same = True
                s = starts[word]
                for j in range(length):
                    if arena[s + j] != data[pos + j]:
                        same = False
                        break
                if same:
                    found = word
                    break
            slot = (slot + 1) & mask
        if found < 0 and not frozen:
            words, used = sizes[0], sizes[1]
            if 2 * (words + 1) > slots.size or words + 2 > starts.size:
                return n_out, pos, True
            if used + length > arena.size or words + 1 > counts.size or words + 1 > hashes.size:
                return n_out, pos, True
            arena[used : used + length] = data[pos:end]
            hashes[words] = h
            starts[words + 1] = used + length
            slots[slot] = words + 1
            sizes[0] = words + 1
            sizes[1] = used + length
            found = words
        if found >= 0:
            counts[found] += 1
        out[n_out] = found
        n_out += 1
        pos = end
    return n_out, pos, False


@numba.njit(cache=True, nogil=True)
def _rehash(slots, hashes, n_words):
    mask = slots.size - 1
    for word in range(n_words):
        slot = np.int64(hashes[word] & np.uint64(mask))
        while slots[slot] != 0:
            slot = (slot + 1) & mask
        slots[slot] = word + 1


class WordTable:
    """Word -> id for ASCII words, filled as blocks are encoded (or fixed: ``frozen``)."""

    def __init__(self, mode: int, frozen: bool = False):
        if mode not in (SPLIT, WORDS):
            raise ValueError(f"unknown tokenization {mode!r}")
        self.mode, self.frozen = mode, frozen
        self.slots = np.zeros(1 << 12, dtype=np.int32)
        self.hashes = np.zeros(1 << 11, dtype=np.uint64)
        self.starts = np.zeros((1 << 11) + 1, dtype=np.int64)
        self.arena = np.zeros(1 << 16, dtype=np.uint8)
        self.counts = np.zeros(1 << 11, dtype=np.int64)
        self.sizes = np.zeros(2, dtype=np.int64)  # words, arena bytes used

    @classmethod
    def of_words(cls, mode: int, words) -> tuple[WordTable, np.ndarray]:
        """A frozen table of a fixed vocabulary's words, and for each of its ids the word's index
        in ``words`` (words it cannot hold, not ASCII or with whitespace, are left out: the
        reader gives their blocks to Python)."""
        plain = [i for i, w in enumerate(words) if _plain_ascii(w)]
        table = cls(SPLIT)
        if plain:
            table.encode("\n".join(words[i] for i in plain).encode("ascii") + b"\n")
        table.mode, table.frozen = mode, True
        table.counts[:] = 0
        return table, np.asarray(plain, dtype=np.int32)

    def __len__(self) -> int:
        return int(self.sizes[0])

    def _grow(self, words: int, nbytes: int) -> None:
        """Room for ``words`` words of ``nbytes`` bytes in all."""
        if 2 * (words + 1) > self.slots.size:
            size = self.slots.size
            while 2 * (words + 1) > size:
                size *= 2
            self.slots = np.zeros(size, dtype=np.int32)
            _rehash(self.slots, self.hashes, len(self))
        for name in ("hashes", "counts"):
            if words + 1 > getattr(self, name).size:
                setattr(self, name, _resized(getattr(self, name), 2 * (words + 1)))
        if words + 2 > self.starts.size:
            self.starts = _resized(self.starts, 2 * (words + 2))
        if nbytes > self.arena.size:
            self.arena = _resized(self.arena, max(2 * self.arena.size, nbytes))

    def encode(self, block) -> np.ndarray:
        """The codes of an ASCII block (bytes)."""
        data = np.frombuffer(block, dtype=np.uint8)
        out = np.empty(data.size + 1, dtype=np.int32)
        n_out, pos = 0, 0
        while True:
            n_out, pos, full = _encode(
                data, self.mode, self.frozen, pos, self.slots, self.hashes, self.starts,
                self.arena, self.sizes, self.counts, out, n_out,
            )  # fmt: skip
            if not full:
                return out[:n_out]
            self._grow(len(self) + 1, int(self.sizes[1]) + data.size)

    def words(self) -> list[str]:
        """The words by id."""
        arena = self.arena[: int(self.sizes[1])].tobytes()
        bounds = self.starts[: len(self) + 1].tolist()
        return [arena[a:b].decode("ascii") for a, b in zip(bounds[:-1], bounds[1:])]

    def word_counts(self) -> np.ndarray:
        return self.counts[: len(self)]

    def counted(self, extra_words=(), extra_counts=None) -> WordCounts:
        """Its words and counts, compact (plus words counted elsewhere, not in the table)."""
        n = len(self)
        return WordCounts(
            self.arena[: int(self.sizes[1])].tobytes(),
            self.starts[: n + 1].copy(),
            self.counts[:n].copy(),
            list(extra_words),
            np.zeros(0, np.int64) if extra_counts is None else np.asarray(extra_counts, np.int64),
        )


@dataclass
class WordCounts:
    """Distinct words and their counts: ASCII words back to back in ``arena`` (word ``i`` is
    ``arena[starts[i]:starts[i + 1]]``, count ``counts[i]``), then other words as ``str``
    (``extra_words``, ``extra_counts``). Compact to keep and to send between processes."""

    arena: bytes
    starts: np.ndarray
    counts: np.ndarray
    extra_words: list = field(default_factory=list)
    extra_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return self.counts.size + len(self.extra_words)

    def words(self) -> list[str]:
        bounds = self.starts.tolist()
        arena = self.arena
        table = [arena[a:b].decode("ascii") for a, b in zip(bounds[:-1], bounds[1:])]
        return table + self.extra_words

    def words_at(self, indices) -> list[str]:
        """The words at ``indices`` (into ``words()``), decoded without the others."""
        n = self.counts.size
        bounds = self.starts
        out = []
        for i in np.asarray(indices, dtype=np.int64).tolist():
            if i < n:
                out.append(self.arena[bounds[i] : bounds[i + 1]].decode("ascii"))
            else:
                out.append(self.extra_words[i - n])
        return out

    def all_counts(self) -> np.ndarray:
        return np.concatenate((self.counts, self.extra_counts))

    @classmethod
    def empty(cls) -> WordCounts:
        return cls(b"", np.zeros(1, np.int64), np.zeros(0, np.int64))


def _joined(arena: bytes, starts: np.ndarray) -> bytes:
    """The words of an arena, one per line."""
    n = starts.size - 1
    if n <= 0:
        return b""
    data = np.frombuffer(arena, dtype=np.uint8)
    out = np.full(len(arena) + n, 10, dtype=np.uint8)  # newlines between, words moved right
    shift = np.repeat(np.arange(n), np.diff(starts))
    out[np.arange(len(arena)) + shift] = data
    return out.tobytes()


def _plain_ascii(word: str) -> bool:
    """A word the table can hold: ASCII, not empty, no whitespace (str.split's)."""
    return word.isascii() and len(word.split()) == 1 and word.split()[0] == word


def merge_counts(parts: list[WordCounts]) -> tuple[WordCounts, list[np.ndarray]]:
    """The words of all ``parts`` once, counts summed (in one table: no ``str`` per word), and
    per part where each of its words went (an index into the merged words)."""
    table = WordTable(SPLIT)
    maps = []
    for part in parts:
        codes = table.encode(_joined(part.arena, part.starts))
        maps.append(codes[codes != LINE].astype(np.int64))
    extra: dict = {}
    for k, part in enumerate(parts):  # words counted by Python: ASCII ones into the table too
        plain = [w for w in part.extra_words if _plain_ascii(w)]
        codes = table.encode("\n".join(plain).encode("ascii") + b"\n") if plain else []
        codes = iter(np.asarray(codes)[np.asarray(codes) != LINE].tolist())
        where = [next(codes) if _plain_ascii(w) else -1 for w in part.extra_words]
        maps[k] = (maps[k], where)
    n_table = len(table)
    for k, part in enumerate(parts):
        table_map, where = maps[k]
        for j, w in enumerate(part.extra_words):
            if where[j] < 0:
                where[j] = n_table + extra.setdefault(w, len(extra))
        maps[k] = np.concatenate((table_map, np.asarray(where, dtype=np.int64)))
    counts = np.zeros(n_table + len(extra), dtype=np.int64)
    for part, where in zip(parts, maps):
        np.add.at(counts, where, part.all_counts())
    merged = table.counted()
    merged.counts = counts[:n_table]
    merged.extra_words = list(extra)
    merged.extra_counts = counts[n_table:]
    return merged, maps


@numba.njit(cache=True, nogil=True)
def cut_sentences(codes, lut, max_len, state, ids_out, starts_out):
    """Sentences of ids from a chunk of codes (a stream of chunks, ``state`` carried between
    them): a line marker (-2) ends a line,
    a word's id is ``lut[code + 2]`` (``lut`` empty: the code itself), -1 an unknown word. Lines
    are cut into sentences of ``max_len`` words, then unknown words dropped. ``state`` =
    [lines, words in the current line, ids written, key of the last id kept, key of the first],
    updated; the kept ids go to ``ids_out``, the positions where sentences start to
    ``starts_out``. Returns (ids kept, starts)."""
    line, pos, written, last, first = state[0], state[1], state[2], state[3], state[4]
    mapped = lut.size > 0
    n_ids = 0
    n_starts = 0
    for k in range(codes.size):
        code = codes[k]
        if code == -2:
            line += 1
            pos = 0
            continue
        word = lut[code + 2] if mapped else code
        chunk = pos // max_len
        pos += 1
        if word < 0:
            continue
        key = line * 2147483648 + chunk
        if key != last:
            starts_out[n_starts] = written + n_ids
            n_starts += 1
            last = key
            if first < 0:
                first = key
        ids_out[n_ids] = word
        n_ids += 1
    state[0], state[1], state[2], state[3], state[4] = line, pos, written + n_ids, last, first
    return n_ids, n_starts


def _resized(a: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=a.dtype)
    out[: a.size] = a
    return out
