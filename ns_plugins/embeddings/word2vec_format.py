"""Read and write embeddings in the word2vec C tool's text and binary formats (the files
gensim's ``save_word2vec_format`` and ``load_word2vec_format`` exchange).

Both formats start with a header line ``"<count> <dim>\\n"``. In the text format each following
line is a word and ``dim`` decimal numbers separated by single spaces. In the binary format each
record is the word, one space and ``dim`` little-endian float32 values; the C tool ends each record
with a newline, which readers (gensim's included) strip from the next word. Files ending in ``.gz``
are compressed transparently.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path

import numpy as np

__all__ = ["save_word2vec", "load_word2vec"]

_F32 = np.dtype("<f4")


def _open(path: Path, mode: str, gz: bool | None = None):
    if path.suffix == ".gz" if gz is None else gz:
        return gzip.open(path, mode)
    return open(path, mode)


def _check_words(words: Sequence[str], n_rows: int) -> list[str]:
    words = [str(w) for w in words]
    if len(words) != n_rows:
        raise ValueError(f"got {len(words)} words for {n_rows} vectors")
    seen = set()
    for w in words:
        if not w or any(c.isspace() for c in w):
            raise ValueError(f"word {w!r} is empty or holds whitespace; the format cannot store it")
        if w in seen:
            raise ValueError(f"duplicate word {w!r}")
        seen.add(w)
    return words


def save_word2vec(path, words: Sequence[str], vectors, binary: bool = False) -> Path:
    """Write ``vectors`` (``len(words)`` x dim) as a word2vec text (default) or binary file.

    Values are written as float32; the text form uses 9 significant digits so that reading it back
    gives the same float32 numbers.
    """
    path = Path(path)
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D (words x dim), got shape {vectors.shape}")
    if not np.issubdtype(vectors.dtype, np.number):
        raise ValueError(f"vectors must be numeric, got dtype {vectors.dtype}")
    vectors = vectors.astype(_F32, copy=False)
    # a row's float64 sum is finite exactly when the row is: no V x d boolean temporary
    if not np.isfinite(vectors.sum(axis=1, dtype=np.float64)).all():
        raise ValueError("vectors contain NaN or infinity")
    words = _check_words(words, vectors.shape[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with _open(tmp, "wb", gz=path.suffix == ".gz") as f:
        f.write(f"{vectors.shape[0]} {vectors.shape[1]}\n".encode())
        if binary:
            for word, row in zip(words, vectors):
                f.write(word.encode("utf-8") + b" " + row.tobytes() + b"\n")
        else:
            # one %-format call per row formats its floats in C: about 5x faster than a
            # per-value f-string at 300 dimensions, with the same text
            row_format = " ".join(["%.9g"] * vectors.shape[1])
            for word, row in zip(words, vectors):
                f.write((word + " " + row_format % tuple(row.tolist()) + "\n").encode())
    os.replace(tmp, path)  # a reader never sees half a file
    return path


_HEADER_BYTES = 256  # "<count> <dim>\n" is far shorter; a file without one is not read whole


def _read_header(f, path: Path) -> tuple[int, int]:
    line = f.readline(_HEADER_BYTES)
    try:
        count, dim = (int(x) for x in line.decode("utf-8").split())
    except (UnicodeDecodeError, ValueError):
        raise ValueError(
            f"{path}: not a word2vec file: first line must be '<count> <dim>', got {line[:60]!r}"
        ) from None
    if count < 0 or dim <= 0:
        raise ValueError(
            f"{path}: bad header: count {count}, dimension {dim} (need count >= 0, dimension >= 1)"
        )
    return count, dim


def _check_limit(limit) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, Integral) or limit < 0:
        raise ValueError(
            f"limit must be >= 0 (the number of leading words to read; 0 or None reads all), "
            f"got {limit!r}"
        )
    return int(limit) or None


def _truncated(path: Path, count: int, dim: int, found: int) -> ValueError:
    return ValueError(
        f"{path}: truncated: header says {count} vectors of {dim} dimensions, the file holds "
        f"{found}"
    )


def _looks_binary(path: Path, dim: int) -> bool:
    """Guess the format from the first record: text if it parses as a word and ``dim`` numbers."""
    if path.name.endswith((".bin", ".bin.gz")):
        return True
    if path.name.endswith((".txt", ".txt.gz", ".vec", ".vec.gz")):
        return False
    with _open(path, "rb") as f:
        f.readline(_HEADER_BYTES)
        first = f.readline(64 * (dim + 8))
    try:
        parts = first.decode("utf-8").rstrip().split(" ")
        [float(x) for x in parts[1:]]
    except (UnicodeDecodeError, ValueError):
        return True
    return len(parts) != dim + 1


def _grow(vectors: np.ndarray, n: int, cap: int) -> np.ndarray:
    """Room for at least ``n + 1`` rows, never more than ``cap``: rows are allocated as the file
    shows them (doubling), not as its header promises them."""
    bigger = np.empty((min(cap, max(1024, 2 * n)), vectors.shape[1]), dtype=np.float32)
    bigger[:n] = vectors[:n]
    return bigger


def _read_text(f, path: Path, count: int, dim: int, n_read: int):
    words = []
    vectors = np.empty((0, dim), dtype=np.float32)
    for i in range(n_read):
        line = f.readline()
        if not line:
            raise _truncated(path, count, dim, i)
        parts = line.decode("utf-8").rstrip().split(" ")
        if len(parts) != dim + 1:
            raise ValueError(f"{path}: line {i + 2} has {len(parts) - 1} values, header says {dim}")
        if i == len(vectors):  # only now: the line has proved that dim values fit in the file
            vectors = _grow(vectors, i, n_read)
        try:
            vectors[i] = np.array(parts[1:], dtype=np.float32)
        except ValueError:
            raise ValueError(f"{path}: line {i + 2} holds a value that is not a number") from None
        words.append(parts[0])
    return words, vectors[:n_read]


def _read_binary(f, path: Path, count: int, dim: int, n_read: int):
    data = f.read()
    words = []
    nbytes = dim * _F32.itemsize
    # a record is at least one separator byte and dim floats: no more rows than that can fit
    vectors = np.empty((min(n_read, len(data) // (nbytes + 1)), dim), dtype=np.float32)
    pos = 0
    for i in range(n_read):
        space = data.find(b" ", pos)
        if space < 0 or len(data) - (space + 1) < nbytes:
            raise _truncated(path, count, dim, i)
        try:
            word = data[pos:space].decode("utf-8").lstrip("\n")
        except UnicodeDecodeError:
            raise ValueError(f"{path}: record {i + 1}: word is not valid UTF-8") from None
        words.append(word)
        vectors[i] = np.frombuffer(data, dtype=_F32, count=dim, offset=space + 1)
        pos = space + 1 + nbytes
    return words, vectors


def load_word2vec(path, binary: bool | None = None, limit: int | None = None):
    """Read a word2vec text or binary file; returns ``(words, vectors)`` with float32 vectors.

    ``binary=None`` picks the format from the file name (``.bin`` / ``.txt``) or its contents.
    ``limit`` reads only the first ``limit`` words (0 or None: all, as gensim); a negative one
    raises ``ValueError`` (gensim 4.3.3 fails there too, with numpy's "negative dimensions").
    Memory is taken for the rows the file holds, whatever its header claims: a file that ends
    before the header's count raises a one-line ``ValueError`` naming it, the count and the
    number of vectors found.
    """
    limit = _check_limit(limit)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no word2vec file at {path}")
    with _open(path, "rb") as f:
        count, dim = _read_header(f, path)
    if binary is None:
        binary = _looks_binary(path, dim)
    n_read = min(count, limit) if limit else count
    with _open(path, "rb") as f:
        f.readline(_HEADER_BYTES)
        words, vectors = (_read_binary if binary else _read_text)(f, path, count, dim, n_read)
    seen = set()
    for w in words:
        if w in seen:
            raise ValueError(f"{path}: duplicate word {w!r}")
        seen.add(w)
    return words, vectors
