"""Streaming text corpus reader: plain, gzip, dictzip (.dz), bzip2 and xz files, or a directory.

Text is read in blocks of bytes, never whole files, so a text8-style corpus (one line of 100 MB)
costs no more memory than a block. Each block becomes a flat token list in which the marker
``NEWLINE`` ends a line; every consumer (sentence lists, vocabulary counts, the id encoder) uses
that one representation, so all of them tokenize identically.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import lzma
import os
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ns_plugins.errors import UsageError

__all__ = [
    "CorpusStats",
    "corpus_files",
    "open_binary",
    "read_sentences",
    "simple_tokenize",
    "token_blocks",
    "tokenizer_named",
]

NEWLINE = "\n"  # line marker inside token blocks; no tokenizer ever yields it as a word
# Bytes read, decoded and tokenized at a time: a 1 MB block is about 150k token strings
# (10 MB of Python objects); larger blocks only raise the peak memory, not the speed.
BLOCK_BYTES = 1 << 20
MAX_SENTENCE_LENGTH = 10000  # gensim's limit; longer lines are cut into chunks of this many words

_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_TOKEN_OR_NEWLINE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*|\n")
_WHITESPACE = b" \t\r\x0b\x0c"
_PLAIN = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\n" + _WHITESPACE

Tokenizer = Callable[[str], Iterable[str]]


def simple_tokenize(line: str) -> list[str]:
    """Runs of letters and digits, keeping inner apostrophes ("don't"); punctuation is dropped."""
    return _TOKEN.findall(line)


def tokenizer_named(name) -> tuple[Tokenizer | None, bool]:
    """``(tokenizer, lowercase)`` for a configured name: ``words`` (the default reading) or
    ``split`` (``str.split``, case kept, as gensim reads a corpus file)."""
    name = getattr(name, "value", name)
    if name == "words":
        return None, True
    if name == "split":
        return str.split, False
    raise ValueError(f"unknown tokenizer {name!r}; choose 'words' or 'split'")


@dataclass
class CorpusStats:
    """What one pass over a corpus saw."""

    files: int = 0
    lines: int = 0
    words: int = 0
    replaced_bytes: int = 0  # undecodable bytes, each replaced by U+FFFD


# Undecodable bytes are replaced, never fatal; the handler counts them per thread so that a pass
# can report how many it met.
_replaced = threading.local()


def _count_and_replace(err: UnicodeDecodeError):
    _replaced.n = getattr(_replaced, "n", 0) + (err.end - err.start)
    return "\ufffd", err.end


codecs.register_error("ns_plugins.count_replace", _count_and_replace)


def _decode(data: bytes, stats: CorpusStats) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        _replaced.n = 0
        text = data.decode("utf-8", "ns_plugins.count_replace")
        stats.replaced_bytes += _replaced.n
        return text


def corpus_files(path) -> list[Path]:
    """The files a corpus path stands for: the file itself, or a directory's files (recursive,
    sorted, hidden names skipped)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"corpus not found: {str(p)!r}")
    if p.is_dir():
        files = sorted(
            f
            for f in p.rglob("*")
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
        )
        if not files:
            raise UsageError(f"corpus directory {str(p)!r} contains no files")
        return files
    return [p]


def _cause(err: BaseException) -> str:
    if isinstance(err, EOFError):
        return f"truncated ({err})"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


def open_binary(path):
    """Open a corpus file for reading bytes, decompressing by suffix (.gz and dictzip .dz share
    the gzip format; .bz2; .xz/.lzma)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".gz", ".dz", ".gzip"):
        return gzip.open(p, "rb")
    if suffix == ".bz2":
        return bz2.open(p, "rb")
    if suffix in (".xz", ".lzma"):
        return lzma.open(p, "rb")
    return open(p, "rb")


def _byte_pieces(f, block_bytes: int) -> Iterator[tuple[bytes, bool]]:
    """Yield (bytes, ends_line). A piece ends at a newline when one is in reach; a line longer than
    a block is cut at whitespace (which never splits a UTF-8 character) and continues."""
    rest = b""
    while True:
        data = f.read(block_bytes)
        if not data:
            if rest:
                yield rest, True
            return
        buf = rest + data
        cut = buf.rfind(b"\n")
        if cut >= 0:
            yield buf[: cut + 1], True
            rest = buf[cut + 1 :]
            continue
        if len(buf) < block_bytes:
            rest = buf
            continue
        cut = max(buf.rfind(bytes([c])) for c in _WHITESPACE)
        if cut < 0:  # a single "word" longer than a block: cut it anyway
            cut = len(buf) - 1
        yield buf[: cut + 1], False
        rest = buf[cut + 1 :]


def _split_lines(text: str, split) -> list[str]:
    out: list[str] = []
    lines = text.split("\n")
    for line in lines:
        out.extend(split(line))
        out.append(NEWLINE)
    out.pop()  # a marker only between lines; the caller knows whether the last one ended
    return out


def _tokens(data: bytes, stats: CorpusStats, tokenizer: Tokenizer | None, lowercase: bool):
    text = _decode(data, stats)
    if lowercase:
        text = text.lower()
    if tokenizer is not None:
        return _split_lines(text, tokenizer)
    if not data.translate(None, _PLAIN):
        # only ASCII letters, digits and whitespace: the default tokenizer is a whitespace split,
        # which str.split does twice as fast as the regular expression
        return _split_lines(text, str.split)
    return _TOKEN_OR_NEWLINE.findall(text)


def token_blocks(
    path,
    tokenizer: Tokenizer | None = None,
    lowercase: bool = True,
    stats: CorpusStats | None = None,
    block_bytes: int | None = None,
) -> Iterator[list[str]]:
    """Yield flat token lists; ``NEWLINE`` closes every line, including the last line of each file.

    A line cut across two blocks has no marker at the cut, so consumers simply carry on counting.
    """
    if tokenizer is not None and not callable(tokenizer):
        raise TypeError(f"tokenizer must be a callable str -> list of str, got {tokenizer!r}")
    stats = stats if stats is not None else CorpusStats()
    block_bytes = BLOCK_BYTES if block_bytes is None else int(block_bytes)
    for file in corpus_files(path):
        stats.files += 1
        try:
            with open_binary(file) as f:
                for data, ends_line in _byte_pieces(f, block_bytes):
                    toks = _tokens(data, stats, tokenizer, lowercase)
                    if not ends_line and toks and toks[-1] == NEWLINE:
                        toks.pop()
                    if ends_line and (not toks or toks[-1] != NEWLINE):
                        toks.append(NEWLINE)
                    yield toks
        except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
            # corrupt or truncated compressed data (or a read error): one line, naming the file
            raise UsageError(f"cannot read corpus file {str(file)!r}: {_cause(e)}") from None


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
