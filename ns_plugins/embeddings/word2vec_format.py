"""Read and write embeddings in the word2vec C tool's text and binary formats (the files
gensim's ``save_word2vec_format`` and ``load_word2vec_format`` exchange).

Both formats start with a header line ``"<count> <dim>\\n"``. In the text format each following
line is a word and ``dim`` decimal numbers separated by single spaces. In the binary format each
record is the word, one space and ``dim`` little-endian float32 values; the C tool ends each record
with a newline, which readers (gensim's included) strip from the next word. Files ending in ``.gz``
are compressed transparently.

The text form writes each float32 value as gensim's ``save_word2vec_format`` does (``repr`` of a
numpy float32: the shortest digits that read back as the same float32, positional from 1e-4 to
1e16 and scientific outside, ``1.0``, ``-0.0``, ``1e-08``, ``1e+20``), so both write the same bytes.
Large arrays are formatted by compiled kernels (numba, in blocks, on a thread per CPU, each
thread writing its block in turn): the digits are decided in integer arithmetic (the Schubfach
algorithm), exactly for every float32. See ``benchmarks/RESULTS.md`` for the speed against gensim.
"""

from __future__ import annotations

import gzip
import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral
from pathlib import Path

import numpy as np

__all__ = ["save_word2vec", "load_word2vec"]

_F32 = np.dtype("<f4")
_SPACE = re.compile(r"\s")  # the characters str.isspace() accepts


def _open(path: Path, mode: str, gz: bool | None = None):
    if path.suffix == ".gz" if gz is None else gz:
        return gzip.open(path, mode)
    return open(path, mode)


def _check_words(words: Sequence[str], n_rows: int) -> list[str]:
    words = [str(w) for w in words]
    if len(words) != n_rows:
        raise ValueError(f"got {len(words)} words for {n_rows} vectors")
    # one pass in C over all the words for whitespace (str.isspace's characters); word by word
    # only to name the culprit
    if _SPACE.search("".join(words)) or not all(words):
        w = next(w for w in words if not w or _SPACE.search(w))
        raise ValueError(f"word {w!r} is empty or holds whitespace; the format cannot store it")
    if len(set(words)) != len(words):
        seen = set()
        w = next(w for w in words if w in seen or seen.add(w))
        raise ValueError(f"duplicate word {w!r}")
    return words


# Text of float32 values: compiled kernels in ``_float_text`` (numba, loaded on first use)
def _render():
    from . import _float_text

    return _float_text.render


_BLOCK_VALUES = 1 << 20  # values formatted at a time
# the longest text of one float32 value: "-1.2345678e-38" or "-9999999400000000.0"
_VALUE_BYTES = 20


_NUMPY1 = int(np.__version__.split(".")[0]) < 2


def _numpy1_text(x) -> str:
    """numpy 1's ``repr`` of a float32 (gensim 4.3.3's text), under numpy 1 and 2 alike (numpy 2
    changed a scalar's ``repr`` and where ``str`` turns scientific)."""
    if np.isnan(x):
        return "nan"
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    a = abs(float(x))
    if a == 0 or 1e-4 <= a < 1e16:
        return np.format_float_positional(x, unique=True, trim="0")
    return np.format_float_scientific(x, unique=True, trim="-", exp_digits=2)


def _word_bytes(words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The words' UTF-8 bytes back to back, and where each ends."""
    encoded = [w.encode("utf-8") for w in words]
    joined = np.frombuffer(b"".join(encoded) or b" ", dtype=np.uint8)
    return joined, np.cumsum(np.array([len(w) for w in encoded], dtype=np.int64))


class _TextRows:
    """Text lines of blocks of rows, as gensim writes them, in a buffer kept from block to block
    (a fresh one would cost a page fault every 4 KiB); one per formatting thread."""

    def __init__(self, words: np.ndarray, word_ends: np.ndarray, dim: int, rows: int):
        self.words, self.word_ends = words, word_ends
        # room for the longest words, every value at its longest, the spaces and the newlines
        longest = int(np.diff(word_ends, prepend=0).max(initial=0))
        self.out = np.empty(rows * (longest + dim * (_VALUE_BYTES + 1) + 2) + 32, dtype=np.uint8)

    @classmethod
    def of(cls, words: Sequence[str], dim: int, rows: int) -> _TextRows:
        return cls(*_word_bytes(words), dim, rows)

    def __call__(self, values: np.ndarray, row0: int) -> memoryview:
        """The lines of ``values`` (rows ``row0`` on), in this object's buffer."""
        values = np.ascontiguousarray(values, dtype=_F32)
        size = _render()(values, self.words, self.word_ends, row0, self.out)
        return self.out[:size].data


def float32_text(values) -> list[str]:
    """numpy's ``repr`` of each float32 in ``values`` (``str`` under numpy 2), as gensim writes
    them in a text vectors file: ``0.1``, ``-0.0``, ``1e-08``, ``1e+20``, ``nan``, ``-inf``."""
    values = np.asarray(values, dtype=_F32).reshape(1, -1)
    text = bytes(_TextRows.of(["x"], values.shape[1], 1)(values, 0)).decode("ascii")
    return text[2:-1].split(" ") if values.size else []


# Below this many values, numpy formats them (about 1.5 us each) rather than the kernel, whose
# first use in a fresh installation compiles it (10-20 s; cached on disk after).
COMPILED_FROM_VALUES = 500_000


def _write_text_rows(
    f, words: list[str], vectors: np.ndarray, compiled: bool | None = None
) -> None:
    if not (vectors.size >= COMPILED_FROM_VALUES if compiled is None else compiled):
        text = str if _NUMPY1 else _numpy1_text  # str: the same text, 6x faster
        for word, row in zip(words, vectors):
            f.write(f"{word} {' '.join(map(text, row))}\n".encode())
        return
    step = max(1, _BLOCK_VALUES // max(1, vectors.shape[1]))
    word_bytes, word_ends = _word_bytes(words)
    step = max(1, min(step, vectors.shape[0]))
    mine = threading.local()
    turn = [0]  # the block whose text goes to the file next
    failed: list = []
    ordered = threading.Condition()

    def block(k: int) -> None:
        """Format block ``k`` into this thread's buffer, then write it when its turn comes."""
        try:
            rows = getattr(mine, "rows", None)
            if rows is None:  # this thread's buffers; the words are shared
                rows = mine.rows = _TextRows(word_bytes, word_ends, vectors.shape[1], step)
            text = rows(vectors[k * step : (k + 1) * step], k * step)
            with ordered:
                ordered.wait_for(lambda: turn[0] == k)
            if not failed:
                f.write(text)
        except BaseException as err:
            failed.append(err)
            raise
        finally:
            with ordered:
                turn[0] = max(turn[0], k + 1)
                ordered.notify_all()

    # the kernels and the writes release the GIL: a thread per CPU formats a block, then writes
    # it in its turn while the others format theirs; no copy of a block's text
    threads = max(1, min(usable_threads(), 4))
    n_blocks = -(-vectors.shape[0] // step)
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(block, k) for k in range(n_blocks)]:
            future.exception()  # wait for all
    if failed:
        raise failed[0]


def usable_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def save_word2vec(
    path, words: Sequence[str], vectors, binary: bool = False, *, compiled: bool | None = None
) -> Path:
    """Write ``vectors`` (``len(words)`` x dim) as a word2vec text (default) or binary file.

    Values are written as float32. The text form is byte for byte what gensim's
    ``save_word2vec_format`` writes for the same words and vectors (see the module's docstring):
    the shortest decimal that reads back as the same float32. NaN and infinity are refused.
    ``compiled`` forces (True) or avoids (False) the compiled text kernel; by default it formats
    arrays of ``COMPILED_FROM_VALUES`` values or more.
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
    try:
        with _open(tmp, "wb", gz=path.suffix == ".gz") as f:
            f.write(f"{vectors.shape[0]} {vectors.shape[1]}\n".encode())
            if binary:
                for word, row in zip(words, vectors):
                    f.write(word.encode("utf-8") + b" " + row.tobytes() + b"\n")
            else:
                _write_text_rows(f, words, vectors, compiled)
        os.replace(tmp, path)  # a reader never sees half a file
    except BaseException:
        tmp.unlink(missing_ok=True)  # nor a half-written one left behind (a full disk)
        raise
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
