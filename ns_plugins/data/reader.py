"""Streaming text corpus reader: a corpus (a path, or ``Piece`` byte ranges of one) as flat token
blocks, with the tokenizers.

Text is read in blocks of bytes, never whole files, so a text8-style corpus (one line of 100 MB)
costs no more memory than a block. Each block becomes a flat token list in which the marker
``NEWLINE`` ends a line; every consumer (sentence lists, vocabulary counts, the id encoders) uses
that one representation, so all of them tokenize identically. Lines are cut into sentences of at
most ``MAX_SENTENCE_LENGTH`` words by the consumers.

The files and their bytes (which files a path stands for, decompression, UTF-8 checks) come from
``textfiles``; ``split.split_corpus`` cuts a corpus into parts, one per process, and
``token_blocks`` of the parts, one after the other, yield the tokens of the whole corpus;
``sentences.read_sentences`` turns the blocks into lists of tokens, one per line.
"""

from __future__ import annotations

import lzma
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator

from ns_plugins.errors import UsageError

from .textfiles import (
    WHITESPACE,
    CorpusNotFoundError,
    CorpusStats,
    decode_utf8,
    error_cause,
    piece_stream,
    pieces_of,
)

__all__ = ["simple_tokenize", "token_blocks", "tokenizer_named"]

NEWLINE = "\n"  # line marker inside token blocks; no tokenizer ever yields it as a word
# Bytes read, decoded and tokenized at a time: a 1 MB block is about 150k token strings
# (10 MB of Python objects); larger blocks only raise the peak memory, not the speed.
BLOCK_BYTES = 1 << 20
MAX_SENTENCE_LENGTH = 10000  # gensim's limit; longer lines are cut into chunks of this many words
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_TOKEN_OR_NEWLINE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*|\n")
_PLAIN = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\n" + WHITESPACE

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


def _byte_pieces(f, block_bytes: int, eof: bool = True) -> Iterator[tuple[bytes, bool]]:
    """Yield (bytes, ends_line). A piece ends at a newline when one is in reach; a line longer than
    a block is cut at whitespace (which never splits a UTF-8 character) and continues. ``eof``:
    the stream ends where the file does (its last line ends there, newline or not); otherwise it
    stops inside the file and the bytes after its last newline continue a line."""
    rest = b""
    while True:
        data = f.read(block_bytes)
        if not data:
            if rest:
                yield rest, eof
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
        cut = max(buf.rfind(bytes([c])) for c in WHITESPACE)
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
    text = decode_utf8(data, stats)
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
    ascii_bytes: bool = False,
) -> Iterator[list[str]]:
    """Yield flat token lists; ``NEWLINE`` closes every line, including the last line of each file.

    A line cut across two blocks has no marker at the cut, so consumers simply carry on counting.
    ``path`` is a corpus path, or a ``Piece`` or a list of them (one part of ``split_corpus``):
    a piece that stops inside a file ends its last line only where the file has a newline.
    ``ascii_bytes`` (with the default tokenizer or ``str.split``): a block of ASCII text comes
    as its ``bytes`` instead, lowercased if asked and ending in a newline where a line ends, for
    ``wordtable.WordTable`` to cut into the same tokens.
    """
    if tokenizer is not None and not callable(tokenizer):
        raise TypeError(f"tokenizer must be a callable str -> list of str, got {tokenizer!r}")
    stats = stats if stats is not None else CorpusStats()
    block_bytes = BLOCK_BYTES if block_bytes is None else int(block_bytes)
    as_bytes = ascii_bytes and (tokenizer is None or tokenizer is str.split)
    for piece in pieces_of(path):
        file = piece.file
        stats.files += piece.start == 0
        try:
            with open(file, "rb") as raw:
                size = os.fstat(raw.fileno()).st_size
                eof = piece.end is None or piece.end >= size
                text = piece_stream(piece, raw, stats, block_bytes)
                for data, ends_line in _byte_pieces(text, block_bytes, eof):
                    if as_bytes and data.isascii():
                        data = data.lower() if lowercase else data
                        yield data + b"\n" if ends_line and not data.endswith(b"\n") else data
                        continue
                    toks = _tokens(data, stats, tokenizer, lowercase)
                    if not ends_line and toks and toks[-1] == NEWLINE:
                        toks.pop()
                    if ends_line and (not toks or toks[-1] != NEWLINE):
                        toks.append(NEWLINE)
                    yield toks
        except FileNotFoundError:
            raise CorpusNotFoundError(file) from None
        except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
            # corrupt or truncated compressed data (or a read error): one line, naming the file
            raise UsageError(f"cannot read corpus file {str(file)!r}: {error_cause(e)}") from None
