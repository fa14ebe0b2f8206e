"""Cut a corpus into contiguous byte ranges of about equal size (``split_corpus``), so that
several processes can each read one part; read one after the other, the parts are the corpus.

Cuts fall at line ends (at a space when a line runs on for more than ``SPLIT_SEARCH_BYTES``, as
in text8), never inside a compressed file or one with a UTF-16/32 byte-order mark (those go whole
to one part). Separate from the reader: a cut looks at a few bytes near it and reads no tokens;
the parallel encoder (``encode``) and the sharded corpus of a distributed run (``cache``) cut with
it, and ``reader.token_blocks`` reads the parts.
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path

import numpy as np

from .textfiles import BOMS, COMPRESSED, WHITESPACE, Piece, pieces_of

__all__ = ["split_corpus"]

SPLIT_SEARCH_BYTES = 1 << 20  # how far past an even cut a line end (then a space) is looked for


def _splittable(file: str) -> bool:
    """A plain file that can be read from the middle: not compressed, no UTF-16/32 mark."""
    if Path(file).suffix.lower() in COMPRESSED:
        return False
    with open(file, "rb") as f:
        head = f.read(4)
    return not any(head.startswith(bom) for bom, enc in BOMS if enc != "utf-8")


def _cut_near(file: str, at: int, size: int) -> int | None:
    """A cut at or after byte ``at`` of a plain file: just after the first newline within
    ``SPLIT_SEARCH_BYTES``, else just after the first space or tab there; None when neither."""
    with open(file, "rb") as f:
        f.seek(at)
        window = f.read(SPLIT_SEARCH_BYTES)
    i = window.find(b"\n")
    if i < 0:
        spaces = [j for j in (window.find(bytes([c])) for c in WHITESPACE) if j >= 0]
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
    pieces = pieces_of(path)
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
