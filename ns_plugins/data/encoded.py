"""An encoded corpus: the directory ``encode.encode_corpus`` writes, and the reader that maps it.

Layout of an encoded directory: ``ids.int32`` (raw little-endian ids of known words, sentences
back to back), ``offsets.npy`` (int64 sentence starts plus the end), ``vocab.tsv`` and
``meta.json`` (sizes and how many words were read, for words/s figures).
``EncodedCorpus.open(directory, check=True)`` verifies such a directory cheaply before it is used:
the files' sizes and shapes against ``meta.json`` and every id within the vocabulary.

Separate from the encoder: everything that trains or batches reads a corpus through this format
alone, and opening one needs neither the reader nor the compiled encoding steps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .vocab import Vocab

__all__ = ["EncodedCorpus"]

FORMAT = "ns_plugins.encoded_corpus/1"


class EncodedCorpus:
    """Sentences of word ids: sentence ``i`` is ``ids[offsets[i]:offsets[i + 1]]``."""

    def __init__(
        self,
        ids,
        offsets,
        vocab: Vocab,
        raw_words: int | None = None,
        path=None,
        *,
        validate: bool = True,
    ):
        if not isinstance(offsets, np.memmap):
            offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0:
            raise ValueError("offsets must be a 1-D array starting at 0")
        # validate=False (files the encoder wrote, or checked in chunks): the ends only, so that
        # opening a large corpus does not page in every offset
        if offsets[-1] != len(ids) or (validate and (np.diff(offsets) < 0).any()):
            raise ValueError(
                f"offsets must be non-decreasing and end at len(ids)={len(ids)}, "
                f"got last offset {int(offsets[-1])}"
            )
        self.ids = ids
        self.offsets = offsets
        self.vocab = vocab
        self.raw_words = int(raw_words if raw_words is not None else len(ids))
        self.replaced_bytes = 0
        self.path = None if path is None else Path(path)

    def __reduce__(self):
        # A corpus on disk travels (to DataLoader workers, other processes) as its path, so the
        # receiver maps the same file instead of unpickling a copy of every id.
        if self.path is not None and isinstance(self.ids, np.memmap):
            return (EncodedCorpus.open, (str(self.path),))
        return super().__reduce__()

    @classmethod
    def from_sentences(cls, sentences, vocab: Vocab) -> EncodedCorpus:
        """In-memory corpus from token lists (unknown words dropped, empty sentences skipped)."""
        parts, raw = [], 0
        for s in sentences:
            raw += len(s)
            ids = vocab.lookup(s)
            ids = ids[ids >= 0]
            if ids.size:
                parts.append(ids.astype(np.int32))
        if not parts:
            raise ValueError("no word of the corpus is in the vocabulary")
        lengths = np.array([p.size for p in parts], dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        return cls(np.concatenate(parts), offsets, vocab, raw_words=raw)

    @property
    def counts(self) -> np.ndarray:
        return self.vocab.counts

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    @property
    def n_sentences(self) -> int:
        return self.offsets.size - 1

    def __len__(self) -> int:
        return self.n_sentences

    def sentence(self, i: int) -> np.ndarray:
        return np.asarray(self.ids[self.offsets[i] : self.offsets[i + 1]])

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return (
            f"EncodedCorpus({self.n_tokens} tokens, {self.n_sentences} sentences, "
            f"{len(self.vocab)} words{where})"
        )

    @classmethod
    def open(cls, out_dir, check: bool = False) -> EncodedCorpus:
        """Memory-map an encoded directory (ids read-only, offsets copy-on-write): memory holds
        only the pages read. ``check`` verifies it first, cheaply: files present, the size of
        ``ids.int32`` and the shapes of ``offsets.npy`` and ``vocab.tsv`` as ``meta.json`` gives
        them, every id in ``[0, len(vocab))`` and the offsets non-decreasing (one pass over each
        file, read in chunks, not mapped). A damaged directory raises ``ValueError`` (or
        ``OSError``) saying what is wrong."""
        d = Path(out_dir)
        meta_path = d / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"no encoded corpus in {str(d)!r} (meta.json missing)")
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{str(meta_path)!r} is not an encoded corpus of format {FORMAT}")
        n = int(meta["n_tokens"])
        ids_path = d / "ids.int32"
        if check and ids_path.stat().st_size != 4 * n:
            raise ValueError(
                f"ids.int32 holds {ids_path.stat().st_size} bytes, meta.json says {n} ids "
                f"({4 * n} bytes)"
            )
        ids = np.memmap(ids_path, dtype="<i4", mode="r", shape=(n,))
        offsets = load_offsets(d / "offsets.npy")
        vocab = Vocab.load(d / "vocab.tsv")
        if check:
            _check(meta, ids, offsets, vocab)
        corpus = cls(ids, offsets, vocab, meta["raw_words"], path=d, validate=False)
        corpus.replaced_bytes = int(meta.get("replaced_bytes", 0))
        return corpus


def load_offsets(path: Path) -> np.ndarray:
    try:
        offsets = np.load(path, mmap_mode="c")
    except (EOFError, SyntaxError, ValueError) as err:  # truncated, or a garbled header
        raise ValueError(f"offsets.npy cannot be read ({err})") from None
    if offsets.dtype != np.int64 or offsets.ndim != 1:
        raise ValueError(f"offsets.npy holds {offsets.dtype} of shape {offsets.shape}")
    return offsets


def _file_chunks(array: np.ndarray, chunk: int = 1 << 20):
    """The values of a memory-mapped 1-D array, read from its file in chunks (so its pages are
    not mapped into this process); an in-memory array in slices."""
    if not isinstance(array, np.memmap) or array.filename is None:
        for at in range(0, array.size, chunk):
            yield np.asarray(array[at : at + chunk])
        return
    with open(array.filename, "rb") as f:
        f.seek(array.offset)
        for at in range(0, array.size, chunk):
            values = np.fromfile(f, dtype=array.dtype, count=min(chunk, array.size - at))
            if values.size == 0:
                raise ValueError(f"{os.path.basename(array.filename)} ends early")
            yield values


def _check(meta: dict, ids, offsets, vocab: Vocab) -> None:
    """Raise ``ValueError`` naming what does not fit in an encoded directory's files."""
    sentences = meta.get("n_sentences")
    if offsets.ndim != 1 or (sentences is not None and offsets.shape != (int(sentences) + 1,)):
        raise ValueError(
            f"offsets.npy has shape {offsets.shape}, meta.json says {sentences} sentences"
        )
    size = meta.get("vocab_size")  # absent in directories encoded before it was recorded
    if size is not None and len(vocab) != int(size):
        raise ValueError(f"vocab.tsv has {len(vocab)} words, meta.json says {size}")
    last = 0
    for chunk in _file_chunks(offsets):
        if chunk[0] < last or (np.diff(chunk) < 0).any():
            raise ValueError("offsets.npy is not non-decreasing")
        last = int(chunk[-1])
    if offsets.size and (int(offsets[0]) != 0 or last != len(ids)):
        raise ValueError(f"offsets.npy runs from {int(offsets[0])} to {last}, not 0 to {len(ids)}")
    if len(ids):
        low, high = len(vocab), -1
        for chunk in _file_chunks(ids):
            low, high = min(low, int(chunk.min())), max(high, int(chunk.max()))
        if low < 0 or high >= len(vocab):
            raise ValueError(
                f"ids.int32 holds ids from {low} to {high}, outside the vocabulary of "
                f"{len(vocab)} words"
            )
