"""A corpus path's files, opened as checked UTF-8 byte streams: which files a path stands for,
decompression, and the encoding checks, before any text is cut into tokens.

Only regular files are read: a FIFO, socket or device (which could block forever) is refused before
it is opened, as is a missing path (``CorpusNotFoundError``). Files are decompressed by suffix
(gzip, dictzip .dz, bzip2, xz).

Text is UTF-8; an occasional undecodable byte is replaced by U+FFFD and counted. A file starting
with a UTF-16 or UTF-32 byte-order mark is decoded as such (a UTF-8 one is dropped). A file whose
first block looks like something else is refused with one line naming it and the likely encoding:
more than ``NUL_SHARE`` of NUL bytes (UTF-16/32 without a byte-order mark, or binary data), or more
than ``REPLACED_SHARE`` of bytes that are not UTF-8 (a legacy encoding, compressed or binary data).

A ``Piece`` is a byte range of one file (``split.split_corpus`` cuts a corpus into them);
``piece_stream`` gives its bytes, checked as its file's are. Separate from the tokenizing reader
(``reader``) and the cutting (``split``), which both build on these files and streams.
"""

from __future__ import annotations

import bz2
import codecs
import errno
import gzip
import lzma
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from ns_plugins.errors import UsageError

__all__ = ["CorpusNotFoundError", "CorpusStats", "Piece", "corpus_files", "open_binary"]

# A file's first block is refused as text above these shares of NUL bytes or of bytes that are not
# UTF-8 (and at least _MIN_SUSPECT such bytes, so that a tiny file with one bad byte still reads).
NUL_SHARE = 0.1
REPLACED_SHARE = 0.2
_MIN_SUSPECT = 4
# byte-order marks, longest first (the UTF-32LE mark starts with the UTF-16LE one)
BOMS = (
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

# ASCII whitespace other than the newline: where a line too long for a block (or a cut between
# parts) may be cut without splitting a word or a UTF-8 character
WHITESPACE = b" \t\r\x0b\x0c"


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


def decode_utf8(data: bytes, stats: CorpusStats) -> str:
    """``data`` as text; undecodable bytes are replaced by U+FFFD and counted in ``stats``."""
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
        raise UsageError(f"cannot read corpus file {str(path)!r}: {error_cause(err)}") from None


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


def error_cause(err: BaseException) -> str:
    """What went wrong reading a file, in a few words (for a one-line error naming it)."""
    if isinstance(err, EOFError):
        return f"truncated ({err})"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


COMPRESSED = {".gz": "gzip", ".dz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".xz": "xz"}
COMPRESSED[".lzma"] = "xz"


def open_binary(path, raw=None):
    """Open a corpus file for reading bytes, decompressing by suffix (.gz and dictzip .dz share
    the gzip format; .bz2; .xz/.lzma). ``raw``: the open file object to decompress (left open)."""
    p = Path(path)
    kind = COMPRESSED.get(p.suffix.lower())
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
    for bom, encoding in BOMS:
        if head.startswith(bom):
            head = head[len(bom) :]
            if encoding != "utf-8":
                return _Transcoded(head, f, encoding, stats)
            break
    _check_text(path, head)
    return _Prefixed(head, f)


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


def pieces_of(source) -> list[Piece]:
    """A corpus path (one whole piece per file), a ``Piece`` or a list of them, as pieces."""
    if isinstance(source, Piece):
        return [source]
    if isinstance(source, (list, tuple)) and all(isinstance(p, Piece) for p in source):
        return list(source)
    return [Piece(str(f)) for f in corpus_files(source)]


def piece_stream(piece: Piece, raw, stats: CorpusStats, block_bytes: int):
    """The UTF-8 bytes of ``piece`` from the open file ``raw``."""
    if piece.start:
        raw.seek(piece.start)
    limit = None if piece.end is None else piece.end - piece.start
    counted = _Counted(raw, limit, stats)
    if piece.start:  # inside a plain UTF-8 file: checked with the file's first piece
        return counted
    return _utf8_stream(open_binary(piece.file, counted), piece.file, block_bytes, stats)
