"""Streaming text corpus reader: plain, gzip, dictzip (.dz), bzip2 and xz files, or a directory.

Text is read in blocks of bytes, never whole files, so a text8-style corpus (one line of 100 MB)
costs no more memory than a block. Each block becomes a flat token list in which the marker
``NEWLINE`` ends a line; every consumer (sentence lists, vocabulary counts, the id encoder) uses
that one representation, so all of them tokenize identically.

Text is UTF-8; an occasional undecodable byte is replaced by U+FFFD and counted. A file starting
with a UTF-16 or UTF-32 byte-order mark is decoded as such (a UTF-8 one is dropped). A file whose
first block looks like something else is refused with one line naming it and the likely encoding:
more than ``NUL_SHARE`` of NUL bytes (UTF-16/32 without a byte-order mark, or binary data), or more
than ``REPLACED_SHARE`` of bytes that are not UTF-8 (a legacy encoding, compressed or binary data).
Only regular files are read: a FIFO, socket or device (which could block forever) is refused before
it is opened, as is a missing path (``CorpusNotFoundError``).

A corpus can be read in parts, one per process: ``split_corpus`` cuts it into contiguous byte
ranges (``Piece``) of about equal size, at line ends (at a space when a line runs on for more than
``SPLIT_SEARCH_BYTES``, as in text8), never inside a compressed file or one with a UTF-16/32
byte-order mark (those go whole to one part). ``token_blocks`` of the parts, one after the other,
yield the tokens of the whole corpus.
"""

from __future__ import annotations

import bisect
import bz2
import codecs
import errno
import gzip
import lzma
import os
import re
import stat
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ns_plugins.errors import UsageError

__all__ = [
    "CorpusNotFoundError",
    "CorpusStats",
    "Piece",
    "corpus_files",
    "open_binary",
    "read_sentences",
    "simple_tokenize",
    "split_corpus",
    "token_blocks",
    "tokenizer_named",
]

NEWLINE = "\n"  # line marker inside token blocks; no tokenizer ever yields it as a word
# Bytes read, decoded and tokenized at a time: a 1 MB block is about 150k token strings
# (10 MB of Python objects); larger blocks only raise the peak memory, not the speed.
BLOCK_BYTES = 1 << 20
MAX_SENTENCE_LENGTH = 10000  # gensim's limit; longer lines are cut into chunks of this many words
# A file's first block is refused as text above these shares of NUL bytes or of bytes that are not
# UTF-8 (and at least _MIN_SUSPECT such bytes, so that a tiny file with one bad byte still reads).
NUL_SHARE = 0.1
REPLACED_SHARE = 0.2
_MIN_SUSPECT = 4
# byte-order marks, longest first (the UTF-32LE mark starts with the UTF-16LE one)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF8, "utf-8"),
)
# what a plain file holds when it starts with these bytes
_MAGIC = (
    (b"\x1f\x8b", "gzip-compressed data: name it .gz"),
    (b"BZh", "bzip2-compressed data: name it .bz2"),
    (b"\xfd7zXZ\x00", "xz-compressed data: name it .xz"),
    (b"PK\x03\x04", "a zip archive: unpack it"),
)

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
    bytes_read: int = 0  # bytes read from the files (compressed bytes for a compressed file)


# Undecodable bytes are replaced, never fatal; the handler counts them per thread so that a pass
# can report how many it met.
_replaced = threading.local()


def _count_and_replace(err: UnicodeDecodeError):
    _replaced.n = getattr(_replaced, "n", 0) + (err.end - err.start)
    return "\ufffd", err.end


codecs.register_error("ns_plugins.count_replace", _count_and_replace)


class CorpusNotFoundError(UsageError, FileNotFoundError):
    """A corpus path that does not exist: a ``UsageError`` (one line, naming it) that callers may
    also catch as the ``FileNotFoundError`` it is."""

    def __init__(self, path, cause: str = "corpus not found"):
        FileNotFoundError.__init__(self, errno.ENOENT, cause, os.fspath(path))

    def __str__(self) -> str:
        return f"{self.strerror}: {self.filename!r}"

    def __reduce__(self):
        return type(self), (self.filename, self.strerror)


def _decode(data: bytes, stats: CorpusStats) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        _replaced.n = 0
        text = data.decode("utf-8", "ns_plugins.count_replace")
        stats.replaced_bytes += _replaced.n
        return text


def _kind(mode: int) -> str:
    for is_kind, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if is_kind(mode):
            return name
    return "a special file"


def _mode(path: Path) -> int:
    """``st_mode`` of ``path`` (links followed); a missing or unreadable entry is one line."""
    try:
        return path.stat().st_mode
    except OSError as err:
        if path.is_symlink():
            raise UsageError(f"corpus file {str(path)!r} is a broken symbolic link") from None
        raise UsageError(f"cannot read corpus file {str(path)!r}: {_cause(err)}") from None


def _regular(path: Path, mode: int) -> Path:
    if not stat.S_ISREG(mode):  # reading a FIFO or a device could block forever
        raise UsageError(
            f"corpus file {str(path)!r} is {_kind(mode)}, not a regular file; give a file or a "
            "directory of files"
        )
    return path


def corpus_files(path) -> list[Path]:
    """The files a corpus path stands for: the file itself, or a directory's files (recursive,
    sorted, hidden names skipped). Every one is a regular file, checked before anything opens it."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise CorpusNotFoundError(p)
    mode = _mode(p)
    if not stat.S_ISDIR(mode):
        return [_regular(p, mode)]
    files = []
    for f in sorted(p.rglob("*")):
        if any(part.startswith(".") for part in f.relative_to(p).parts):
            continue
        mode = _mode(f)
        if not stat.S_ISDIR(mode):
            files.append(_regular(f, mode))
    if not files:
        raise UsageError(f"corpus directory {str(p)!r} contains no files")
    return files


def _cause(err: BaseException) -> str:
    if isinstance(err, EOFError):
        return f"truncated ({err})"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


_COMPRESSED = {".gz": "gzip", ".dz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".xz": "xz"}
_COMPRESSED[".lzma"] = "xz"


def open_binary(path, raw=None):
    """Open a corpus file for reading bytes, decompressing by suffix (.gz and dictzip .dz share
    the gzip format; .bz2; .xz/.lzma). ``raw``: the open file object to decompress (left open)."""
    p = Path(path)
    kind = _COMPRESSED.get(p.suffix.lower())
    source = p if raw is None else raw
    if kind == "gzip":
        return gzip.open(source, "rb")
    if kind == "bz2":
        return bz2.open(source, "rb")
    if kind == "xz":
        return lzma.open(source, "rb")
    return open(p, "rb") if raw is None else raw


def _share(data: bytes) -> float:
    return data.count(0) / max(1, len(data))


def _wide_encoding(head: bytes) -> str | None:
    """UTF-16 or UTF-32 (and which byte order) when the NUL bytes of ``head`` fall where that
    encoding puts them for mostly ASCII text; None when they do not."""
    q = [_share(head[i::4]) for i in range(4)]
    if min(q[1], q[2], q[3]) > 0.9:
        return "UTF-32LE"
    if min(q[0], q[1], q[2]) > 0.9:
        return "UTF-32BE"
    even, odd = _share(head[0::2]), _share(head[1::2])
    if odd > 0.3 and odd > 3 * even:
        return "UTF-16LE"
    if even > 0.3 and even > 3 * odd:
        return "UTF-16BE"
    return None


def _not_utf8(head: bytes) -> int:
    """Bytes of ``head`` that are not UTF-8 (a character cut at the block's end is not counted)."""
    try:
        head.decode("utf-8")
        return 0
    except UnicodeDecodeError:
        pass
    _replaced.n = 0
    codecs.getincrementaldecoder("utf-8")("ns_plugins.count_replace").decode(head, final=False)
    return _replaced.n


def _check_text(path, head: bytes) -> None:
    """Refuse a file whose first block is not UTF-8 text, naming the likely encoding."""
    n = len(head)
    nul = head.count(0)
    bad = nul if nul >= _MIN_SUSPECT and nul > NUL_SHARE * n else 0
    what = "NUL"
    if not bad:
        replaced = _not_utf8(head)
        if replaced < _MIN_SUSPECT or replaced <= REPLACED_SHARE * n:
            return
        bad, what = replaced, "not valid UTF-8"
    likely = next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)
    if likely is not None:
        likely = f"it looks like {likely}"
    elif what == "NUL":
        wide = _wide_encoding(head)
        likely = (
            f"it looks like {wide} text without a byte-order mark; convert it to UTF-8 "
            f"(iconv -f {wide} -t UTF-8)"
            if wide
            else "it looks like binary data, not text"
        )
    else:
        likely = (
            "it is likely in a legacy encoding (Latin-1, cp1252, GBK, Shift-JIS, ...) or binary "
            "data; convert it to UTF-8 (iconv -f ENCODING -t UTF-8)"
        )
    raise UsageError(
        f"corpus file {os.fspath(path)!r} is not UTF-8 text: {bad / n:.0%} of its first {n} bytes "
        f"are {what}; {likely}"
    )


class _Prefixed:
    """A binary stream whose first block was read already: that block first, then the rest."""

    def __init__(self, head: bytes, f):
        self._head, self._f = head, f

    def read(self, n: int) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            return data
        return self._f.read(n)


class _Transcoded:
    """A binary stream of UTF-16 or UTF-32 text (byte-order mark removed), read as UTF-8 bytes;
    undecodable units are replaced by U+FFFD and counted in ``stats``."""

    def __init__(self, head: bytes, f, encoding: str, stats: CorpusStats):
        self._head, self._f, self._stats = head, f, stats
        self._decoder = codecs.getincrementaldecoder(encoding)("ns_plugins.count_replace")
        self._done = False

    def read(self, n: int) -> bytes:
        while not self._done:
            raw, self._head = self._head or self._f.read(n), b""
            _replaced.n = 0
            text = self._decoder.decode(raw, final=not raw)
            self._stats.replaced_bytes += _replaced.n
            self._done = not raw
            if text:
                return text.encode("utf-8")
        return b""


def _utf8_stream(f, path, block_bytes: int, stats: CorpusStats):
    """``f`` as a stream of UTF-8 bytes: decoded from UTF-16/32 after a byte-order mark, or checked
    on its first block (see ``_check_text``)."""
    head = f.read(block_bytes)
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            head = head[len(bom) :]
            if encoding != "utf-8":
                return _Transcoded(head, f, encoding, stats)
            break
    _check_text(path, head)
    return _Prefixed(head, f)


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


@dataclass(frozen=True)
class Piece:
    """Bytes ``start`` to ``end`` of a corpus file (``end`` None: to its end). A piece other than
    a file's first starts after a newline or a space, and one that stops inside a file stops
    after one: no word is cut."""

    file: str
    start: int = 0
    end: int | None = None


class _Counted:
    """A binary file read at most ``limit`` bytes (None: all) from where it stands, counting
    them into ``stats.bytes_read``."""

    def __init__(self, f, limit: int | None, stats: CorpusStats):
        self._f, self._left, self._stats = f, limit, stats

    def read(self, n: int = -1) -> bytes:
        if self._left is not None:
            n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._f.read(n)
        if self._left is not None:
            self._left -= len(data)
        self._stats.bytes_read += len(data)
        return data

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # for BufferedReader-style callers (bz2, lzma)
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        pass

    @property
    def closed(self) -> bool:
        return False


def _pieces_of(source) -> list[Piece]:
    if isinstance(source, Piece):
        return [source]
    if isinstance(source, (list, tuple)) and all(isinstance(p, Piece) for p in source):
        return list(source)
    return [Piece(str(f)) for f in corpus_files(source)]


def _piece_stream(piece: Piece, raw, stats: CorpusStats, block_bytes: int):
    """The UTF-8 bytes of ``piece`` from the open file ``raw``."""
    if piece.start:
        raw.seek(piece.start)
    limit = None if piece.end is None else piece.end - piece.start
    counted = _Counted(raw, limit, stats)
    if piece.start:  # inside a plain UTF-8 file: checked with the file's first piece
        return counted
    return _utf8_stream(open_binary(piece.file, counted), piece.file, block_bytes, stats)


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
    for piece in _pieces_of(path):
        file = piece.file
        stats.files += piece.start == 0
        try:
            with open(file, "rb") as raw:
                size = os.fstat(raw.fileno()).st_size
                eof = piece.end is None or piece.end >= size
                text = _piece_stream(piece, raw, stats, block_bytes)
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
            raise UsageError(f"cannot read corpus file {str(file)!r}: {_cause(e)}") from None


SPLIT_SEARCH_BYTES = 1 << 20  # how far past an even cut a line end (then a space) is looked for


def _splittable(file: str) -> bool:
    """A plain file that can be read from the middle: not compressed, no UTF-16/32 mark."""
    if Path(file).suffix.lower() in _COMPRESSED:
        return False
    with open(file, "rb") as f:
        head = f.read(4)
    return not any(head.startswith(bom) for bom, enc in _BOMS if enc != "utf-8")


def _cut_near(file: str, at: int, size: int) -> int | None:
    """A cut at or after byte ``at`` of a plain file: just after the first newline within
    ``SPLIT_SEARCH_BYTES``, else just after the first space or tab there; None when neither."""
    with open(file, "rb") as f:
        f.seek(at)
        window = f.read(SPLIT_SEARCH_BYTES)
    i = window.find(b"\n")
    if i < 0:
        spaces = [j for j in (window.find(bytes([c])) for c in _WHITESPACE) if j >= 0]
        if not spaces:
            return None
        i = min(spaces)
    cut = at + i + 1
    return cut if cut < size else None


def split_corpus(path, parts: int) -> list[list[Piece]]:
    """The corpus ``path`` (or a list of ``Piece``, a part of one) in at most ``parts``
    contiguous parts of about equal bytes, each a list of ``Piece``; read one after the other
    they are the corpus. Compressed files and files with a UTF-16/32 byte-order mark are never
    cut (the cut moves to the nearer end of the file), so fewer parts than asked may come back."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    pieces = _pieces_of(path)
    ends = [os.stat(p.file).st_size if p.end is None else p.end for p in pieces]
    sizes = [max(end - p.start, 0) for p, end in zip(pieces, ends)]
    starts = np.concatenate(([0], np.cumsum(sizes))).tolist()
    total = starts[-1]
    cuts: list[int] = []
    for i in range(1, parts):
        at = i * total // parts
        k = bisect.bisect_right(starts, at) - 1  # the piece holding byte ``at``
        if k >= len(pieces) or at == starts[k]:
            cut = at
        elif _splittable(pieces[k].file):
            inside = _cut_near(pieces[k].file, pieces[k].start + at - starts[k], ends[k])
            cut = starts[k + 1] if inside is None else starts[k] + inside - pieces[k].start
        else:
            cut = starts[k] if at - starts[k] < starts[k + 1] - at else starts[k + 1]
        if 0 < cut < total and (not cuts or cut > cuts[-1]):
            cuts.append(cut)
    edges = [0, *cuts, total]
    out = []
    for j in range(len(edges) - 1):
        lo, hi, last = edges[j], edges[j + 1], j == len(edges) - 2
        part = []
        for piece, size, start in zip(pieces, sizes, starts):
            if size == 0:  # an empty file: in the part where it stands
                if lo <= start < hi or (last and start == hi):
                    part.append(piece)
            elif start < hi and start + size > lo:
                begin = piece.start + max(lo - start, 0)
                end = piece.end if hi >= start + size else piece.start + hi - start
                part.append(Piece(piece.file, begin, end))
        out.append(part)
    return out


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
